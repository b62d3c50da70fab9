//! What the token holds after `p8hsm import` (by create and by unwrap), read with raw cryptoki (not p8hsm's own
//! PKCS#11 code). One test only: C_Initialize reads SOFTHSM2_CONF once per process.

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::object::{Attribute, AttributeType, ObjectClass};
use cryptoki::session::UserType;
use secrecy::SecretString;

use crate::common::Hsm;

#[test]
fn imported_key_is_sensitive_non_extractable_sign_only_with_a_der_public_point() {
    let hsm = Hsm::new();
    let (path, created) = hsm.write_key("AuthKey_2X9R4HXF34.p8");
    hsm.run(&["import", path.to_str().unwrap(), "--method", "create"])
        .ok();
    let (path, unwrapped) = hsm.write_key("AuthKey_UNWRAP0001.p8");
    hsm.run(&["import", path.to_str().unwrap(), "--method", "unwrap"])
        .ok();

    for (name, value) in &hsm.env {
        std::env::set_var(name, value); // SOFTHSM2_CONF or KRYOPTIC_CONF, read by C_Initialize
    }
    let pkcs11 = Pkcs11::new(hsm.var("P8HSM_MODULE")).unwrap();
    pkcs11
        .initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .unwrap();
    let slot = pkcs11
        .get_slots_with_initialized_token()
        .unwrap()
        .into_iter()
        .find(|s| pkcs11.get_token_info(*s).unwrap().label() == "p8hsm")
        .unwrap();
    let session = pkcs11.open_ro_session(slot).unwrap();
    session
        .login(UserType::User, Some(&SecretString::from(hsm.pin())))
        .unwrap();
    for (key_id, key) in [("2X9R4HXF34", &created), ("UNWRAP0001", &unwrapped)] {
        let id = Attribute::Id(key_id.as_bytes().to_vec());

        let private = session
            .find_objects(&[Attribute::Class(ObjectClass::PRIVATE_KEY), id.clone()])
            .unwrap();
        assert_eq!(private.len(), 1);
        let attributes = session
            .get_attributes(
                private[0],
                &[
                    AttributeType::Value,
                    AttributeType::Sensitive,
                    AttributeType::Extractable,
                    AttributeType::Token,
                    AttributeType::Private,
                    AttributeType::Sign,
                    AttributeType::Decrypt,
                    AttributeType::Derive,
                    AttributeType::Unwrap,
                    AttributeType::Label,
                ],
            )
            .unwrap();
        assert!(
            !attributes.iter().any(|a| matches!(a, Attribute::Value(_))),
            "CKA_VALUE must not be readable"
        );
        for expected in [
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sign(true),
            Attribute::Decrypt(false),
            Attribute::Derive(false),
            Attribute::Unwrap(false),
            Attribute::Label(key_id.as_bytes().to_vec()),
        ] {
            assert!(
                attributes.contains(&expected),
                "{expected:?} in {attributes:?}"
            );
        }

        let public = session
            .find_objects(&[Attribute::Class(ObjectClass::PUBLIC_KEY), id])
            .unwrap();
        assert_eq!(public.len(), 1);
        let attributes = session
            .get_attributes(
                public[0],
                &[
                    AttributeType::EcPoint,
                    AttributeType::Verify,
                    AttributeType::Encrypt,
                    AttributeType::Wrap,
                ],
            )
            .unwrap();
        let mut point = vec![0x04, 0x41];
        point.extend_from_slice(&key.public_key().to_sec1_bytes());
        for expected in [
            Attribute::EcPoint(point),
            Attribute::Verify(true),
            Attribute::Encrypt(false),
            Attribute::Wrap(false),
        ] {
            assert!(
                attributes.contains(&expected),
                "{expected:?} in {attributes:?}"
            );
        }
    }
    drop(session);
    pkcs11.finalize().unwrap();
}
