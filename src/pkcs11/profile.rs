//! Vendor profiles: the import templates and habits each kind of token wants.
//!
//! The standard profile is tested on SoftHSM (in-process and through p11-kit's client);
//! the YubiHSM 2, AWS CloudHSM and Google Cloud KMS profiles follow the vendors'
//! documentation (see the README's compatibility table).

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass};
use sha2::{Digest, Sha256};

use p256::PublicKey;

use super::ec::{encode_ec_point, P256_PARAMS};
use crate::ids::printable;
use crate::{Error, KeyId};

/// How p8hsm treats a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    /// PKCS#11 as written: SoftHSM, Kryoptic, p11-kit's client, Luna, most tokens.
    Standard,
    /// YubiHSM 2: a minimal private-key template, a 2-byte CKA_ID (the label keeps the
    /// Apple key ID), no public key object (its public keys are virtual), no data objects.
    YubiHsm,
    /// AWS CloudHSM: CKA_PRIVATE on every object; private keys go in by unwrapping.
    CloudHsm,
    /// Google Cloud KMS through kmsp11: signs, but cannot import keys at all.
    Kmsp11,
    /// NSS softoken (`libsoftokn3.so`): refuses token data objects (so no claims and no
    /// metadata), and unwraps a private key only when told its public point
    /// (`CKA_NSS_DB`).
    Nss,
    /// A TPM 2.0 through tpm2-pkcs11: generates keys (`keygen`) but takes no private key
    /// in through PKCS#11, and derives each key's usage from the TPM object (a template
    /// that says otherwise is refused).
    Tpm2,
    /// GNOME Keyring (`gnome-keyring-pkcs11.so`): wants the public point in a private
    /// key's template, sets CKA_ID itself (keys are found by their label, the key ID), and
    /// takes no data objects (so no claims and no metadata).
    GnomeKeyring,
}

const NAMES: [(Profile, &str); 7] = [
    (Profile::Standard, "standard"),
    (Profile::YubiHsm, "yubihsm"),
    (Profile::CloudHsm, "cloudhsm"),
    (Profile::Kmsp11, "kmsp11"),
    (Profile::Nss, "nss"),
    (Profile::Tpm2, "tpm2"),
    (Profile::GnomeKeyring, "gnome-keyring"),
];

/// NSS's vendor attribute CKA_NSS_DB: the public point, which its softoken wants when
/// it unwraps a private key.
const CKA_NSS_DB: u64 = 0xD5A0_DB00;

impl Profile {
    /// The name used by `--profile`.
    pub fn name(self) -> &'static str {
        NAMES
            .iter()
            .find(|(p, _)| *p == self)
            .map_or("", |(_, n)| n)
    }

    /// The profile a token calls for, from its module's file name and the token's
    /// manufacturer and model.
    pub fn detect(module: &Path, manufacturer: &str, model: &str) -> Profile {
        let file = module
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("")
            .to_ascii_lowercase();
        let manufacturer = manufacturer.to_ascii_lowercase();
        if file.contains("yubihsm")
            || manufacturer.starts_with("yubico") && model.contains("YubiHSM")
        {
            Profile::YubiHsm
        } else if file.contains("cloudhsm") {
            Profile::CloudHsm
        } else if file.contains("kmsp11") || manufacturer.starts_with("google") {
            Profile::Kmsp11
        } else if file.contains("softokn") || manufacturer.starts_with("mozilla") {
            Profile::Nss
        } else if file.contains("tpm2") {
            Profile::Tpm2
        } else if file.contains("gnome-keyring") || manufacturer.starts_with("gnome keyring") {
            Profile::GnomeKeyring
        } else {
            Profile::Standard
        }
    }

    /// Refuses tokens that cannot import a private key at all.
    pub(crate) fn check_import(self) -> Result<(), Error> {
        match self {
            Profile::Kmsp11 => Err(Error::ImportUnsupported {
                token: "Google Cloud KMS (kmsp11)",
                reason: "its PKCS#11 library cannot import keys; import the .p8 with Cloud KMS \
                         import jobs, then sign with p8hsm",
            }),
            Profile::Tpm2 => Err(Error::ImportUnsupported {
                token: "a TPM through tpm2-pkcs11",
                reason: "tpm2-pkcs11 takes no private key in through PKCS#11 (C_CreateObject \
                         makes only RSA public keys and data objects, and no mechanism \
                         unwraps): generate the key in the TPM instead, or import the .p8 \
                         with tpm2-pkcs11's own tool (tpm2_ptool import)",
            }),
            _ => Ok(()),
        }
    }

    /// Whether an import can record a claim (a data object) and rename its objects
    /// after it won (C_SetAttributeValue of CKA_ID and CKA_LABEL): every profile but
    /// YubiHSM 2's, whose objects keep the ID and label they were made with, and NSS
    /// softoken's, which refuses data objects.
    pub(crate) fn renames(self) -> bool {
        !matches!(
            self,
            Profile::YubiHsm | Profile::Nss | Profile::GnomeKeyring
        )
    }

    /// Whether the token keeps the CKA_ID p8hsm gives a key: not GNOME Keyring, which
    /// sets its own (and refuses one on a public key); its keys are found by their
    /// label, which must then be the key ID.
    pub(crate) fn keeps_ids(self) -> bool {
        self != Profile::GnomeKeyring
    }

    /// What finds an object p8hsm made under `id` and `label`: the CKA_ID, or the label
    /// where the token sets the CKA_ID itself.
    pub(crate) fn found_by(self, id: &[u8], label: &str) -> Attribute {
        if self.keeps_ids() {
            Attribute::Id(id.to_vec())
        } else {
            Attribute::Label(label.as_bytes().to_vec())
        }
    }

    /// Why key metadata cannot be kept in a data object beside the key, if it cannot.
    pub(crate) fn no_metadata(self) -> Option<&'static str> {
        match self {
            Profile::YubiHsm => Some(
                "YubiHSM 2 keeps no data objects, where p8hsm records a key's kind: import \
                 without recording one and give the kind's identities when signing",
            ),
            Profile::GnomeKeyring => Some(
                "GNOME Keyring refuses the data object p8hsm records a key's kind in: import \
                 without recording one and give the kind's identities when signing",
            ),
            Profile::Nss => Some(
                "NSS softoken refuses the data object p8hsm records a key's kind in: import \
                 without recording one and give the kind's identities when signing",
            ),
            _ => None,
        }
    }

    /// The CKA_ID of an imported key: the Apple key ID's bytes, or for YubiHSM 2 a
    /// 16-bit object ID derived from it (never 0, which the device reserves).
    pub(crate) fn object_id(self, key_id: &KeyId) -> Vec<u8> {
        match self {
            Profile::YubiHsm => {
                let digest = Sha256::digest(key_id.as_str().as_bytes());
                let id = u16::from_be_bytes([digest[0], digest[1]]).max(1);
                id.to_be_bytes().to_vec()
            }
            _ => key_id.as_str().as_bytes().to_vec(),
        }
    }

    /// The private key template, without the key material (CKA_VALUE for C_CreateObject;
    /// nothing more for C_UnwrapKey, whose PKCS#8 carries the curve). The public key of
    /// a key put in: GNOME Keyring wants its point in a created key's template, NSS
    /// softoken in an unwrapped one's.
    pub(crate) fn private_template(
        self,
        id: &[u8],
        label: &str,
        create: bool,
        public: Option<&PublicKey>,
    ) -> Vec<Attribute> {
        let mut template = vec![
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::KeyType(KeyType::EC),
        ];
        if create {
            template.push(Attribute::EcParams(P256_PARAMS.to_vec()));
        }
        match (self, create, public) {
            (Profile::GnomeKeyring, true, Some(public)) => {
                template.push(Attribute::EcPoint(encode_ec_point(public)))
            }
            (Profile::Nss, false, Some(public)) => template.push(Attribute::VendorDefined((
                AttributeType::VendorDefined(CKA_NSS_DB as _),
                public.to_sec1_bytes().to_vec(),
            ))),
            _ => {}
        }
        template.extend([
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Sign(true),
            Attribute::Label(label.as_bytes().to_vec()),
        ]);
        if self.keeps_ids() {
            template.push(Attribute::Id(id.to_vec()));
        }
        // YubiHSM 2 refuses any attribute beyond its short list (CKA_EXTRACTABLE included);
        // its keys are not exportable unless given the export-under-wrap capability.
        // tpm2-pkcs11 sets the usage attributes from the TPM object and refuses others.
        match self {
            Profile::YubiHsm => {}
            Profile::Tpm2 => template.push(Attribute::Extractable(false)),
            _ => template.extend([
                Attribute::Extractable(false),
                Attribute::Decrypt(false),
                Attribute::Derive(false),
                Attribute::Unwrap(false),
            ]),
        }
        template
    }

    /// The public key template, or `None` where the token keeps no public objects.
    pub(crate) fn public_template(
        self,
        id: &[u8],
        label: &str,
        ec_point: Vec<u8>,
    ) -> Option<Vec<Attribute>> {
        if self == Profile::YubiHsm {
            return None;
        }
        let mut template = vec![
            Attribute::Class(ObjectClass::PUBLIC_KEY),
            Attribute::KeyType(KeyType::EC),
            Attribute::EcParams(P256_PARAMS.to_vec()),
            Attribute::EcPoint(ec_point),
            Attribute::Token(true),
            // CloudHSM wants CKA_PRIVATE on every object; elsewhere the public half is public.
            Attribute::Private(self == Profile::CloudHsm),
            Attribute::Verify(true),
            Attribute::Label(label.as_bytes().to_vec()),
        ];
        if self.keeps_ids() {
            template.push(Attribute::Id(id.to_vec()));
        }
        // tpm2-pkcs11 sets the usage attributes from the TPM object and refuses others.
        if self != Profile::Tpm2 {
            template.extend([
                Attribute::Encrypt(false),
                Attribute::Wrap(false),
                Attribute::Derive(false),
            ]);
        }
        Some(template)
    }

    /// What to tell a user whose PIN was refused, about this token's PIN format.
    pub fn pin_format(self) -> Option<&'static str> {
        match self {
            Profile::YubiHsm => Some(
                "a YubiHSM 2 PIN is the 4 hex digits of the authentication key ID followed by \
                 its password, e.g. 0001password",
            ),
            Profile::CloudHsm => {
                Some("a CloudHSM PIN is the crypto user's name and password, user:password")
            }
            _ => None,
        }
    }
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Profile {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        NAMES
            .iter()
            .find(|(_, n)| *n == s)
            .map(|(p, _)| *p)
            .ok_or_else(|| Error::InvalidId {
                what: "profile",
                value: printable(s),
                rule: "use standard, yubihsm, cloudhsm, kmsp11, nss, tpm2 or gnome-keyring",
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cryptoki::object::AttributeType;

    fn types(template: &[Attribute]) -> Vec<AttributeType> {
        template.iter().map(Attribute::attribute_type).collect()
    }

    fn key_id() -> KeyId {
        "2X9R4HXF34".parse().unwrap()
    }

    #[test]
    fn profiles_are_detected_from_module_and_manufacturer() {
        let detect = |module: &str, manufacturer: &str, model: &str| {
            Profile::detect(Path::new(module), manufacturer, model)
        };
        assert_eq!(
            detect(
                "/usr/lib/softhsm/libsofthsm2.so",
                "SoftHSM project",
                "SoftHSM v2"
            ),
            Profile::Standard
        );
        assert_eq!(
            detect(
                "/usr/lib/x86_64-linux-gnu/pkcs11/yubihsm_pkcs11.so",
                "Yubico",
                "YubiHSM"
            ),
            Profile::YubiHsm
        );
        assert_eq!(
            detect(
                "/opt/x/p11-kit-client.so",
                "Yubico (www.yubico.com)",
                "YubiHSM"
            ),
            Profile::YubiHsm
        );
        assert_eq!(
            detect("/opt/cloudhsm/lib/libcloudhsm_pkcs11.so", "Marvell", "LS2"),
            Profile::CloudHsm
        );
        assert_eq!(
            detect("/opt/kms/libkmsp11.so", "Google", "Cloud KMS"),
            Profile::Kmsp11
        );
        assert_eq!(
            detect(
                "/usr/lib/x86_64-linux-gnu/libsoftokn3.so",
                "Mozilla Foundation",
                "NSS 3"
            ),
            Profile::Nss
        );
        assert_eq!(
            detect(
                "/usr/lib/x86_64-linux-gnu/pkcs11/libtpm2_pkcs11.so",
                "IBM",
                "SW   TPM"
            ),
            Profile::Tpm2
        );
        assert_eq!(
            detect(
                "/usr/lib/x86_64-linux-gnu/pkcs11/gnome-keyring-pkcs11.so",
                "Gnome Keyring",
                "1.0"
            ),
            Profile::GnomeKeyring
        );
        assert_eq!("yubihsm".parse::<Profile>().unwrap(), Profile::YubiHsm);
        for profile in NAMES.map(|(p, _)| p) {
            assert_eq!(profile.name().parse::<Profile>().unwrap(), profile);
        }
        assert!("luna".parse::<Profile>().is_err());
    }

    #[test]
    fn the_standard_template_is_sensitive_non_extractable_and_sign_only() {
        let template = Profile::Standard.private_template(b"2X9R4HXF34", "2X9R4HXF34", true, None);
        for expected in [
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Sign(true),
            Attribute::Decrypt(false),
            Attribute::Derive(false),
            Attribute::Unwrap(false),
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::EcParams(P256_PARAMS.to_vec()),
            Attribute::Id(b"2X9R4HXF34".to_vec()),
        ] {
            assert!(template.contains(&expected), "{expected:?}");
        }
        let unwrap = Profile::Standard.private_template(b"2X9R4HXF34", "2X9R4HXF34", false, None);
        assert!(
            !types(&unwrap).contains(&AttributeType::EcParams),
            "the PKCS#8 names the curve"
        );
        let public = Profile::Standard
            .public_template(b"id", "l", vec![4])
            .unwrap();
        assert!(
            public.contains(&Attribute::Private(false))
                && public.contains(&Attribute::Verify(true))
        );
    }

    #[test]
    fn the_yubihsm_template_has_only_what_it_accepts_and_a_two_byte_id() {
        let id = Profile::YubiHsm.object_id(&key_id());
        assert_eq!(id.len(), 2);
        assert_ne!(id, [0, 0]);
        let template = Profile::YubiHsm.private_template(&id, "2X9R4HXF34", true, None);
        let allowed = [
            AttributeType::Class,
            AttributeType::KeyType,
            AttributeType::EcParams,
            AttributeType::Token,
            AttributeType::Private,
            AttributeType::Sensitive,
            AttributeType::Sign,
            AttributeType::Id,
            AttributeType::Label,
        ];
        for t in types(&template) {
            assert!(allowed.contains(&t), "YubiHSM 2 refuses {t:?}");
        }
        assert!(
            template.contains(&Attribute::Label(b"2X9R4HXF34".to_vec())),
            "the label keeps the key ID"
        );
        assert!(Profile::YubiHsm
            .public_template(&id, "l", vec![4])
            .is_none());
        assert!(Profile::YubiHsm.no_metadata().is_some());
        assert!(Profile::YubiHsm
            .pin_format()
            .unwrap()
            .contains("0001password"));
    }

    #[test]
    fn cloudhsm_marks_every_object_private_and_kmsp11_cannot_import() {
        let public = Profile::CloudHsm
            .public_template(b"id", "l", vec![4])
            .unwrap();
        assert!(public.contains(&Attribute::Private(true)));
        let private = Profile::CloudHsm.private_template(b"id", "l", true, None);
        assert!(private.contains(&Attribute::Private(true)));
        assert!(Profile::CloudHsm.check_import().is_ok());
        let err = Profile::Kmsp11.check_import().unwrap_err().to_string();
        assert!(err.contains("cannot import"), "{err}");
    }

    #[test]
    fn nss_tpm2_and_gnome_keyring_templates_say_what_each_wants() {
        let public =
            p256::SecretKey::random(&mut p256::elliptic_curve::rand_core::OsRng).public_key();
        // NSS: the public point as CKA_NSS_DB in an unwrapped key's template only.
        let nss_db = AttributeType::VendorDefined(CKA_NSS_DB as _);
        let unwrap = Profile::Nss.private_template(b"id", "l", false, Some(&public));
        assert!(unwrap.contains(&Attribute::VendorDefined((
            nss_db,
            public.to_sec1_bytes().to_vec()
        ))));
        let create = Profile::Nss.private_template(b"id", "l", true, Some(&public));
        assert!(!types(&create).contains(&nss_db));
        // TPM: no usage attribute beyond CKA_SIGN and CKA_VERIFY, which it derives.
        let private = types(&Profile::Tpm2.private_template(b"id", "l", false, None));
        let public_t = types(&Profile::Tpm2.public_template(b"id", "l", vec![4]).unwrap());
        for usage in [
            AttributeType::Decrypt,
            AttributeType::Derive,
            AttributeType::Unwrap,
            AttributeType::Encrypt,
            AttributeType::Wrap,
        ] {
            assert!(
                !private.contains(&usage) && !public_t.contains(&usage),
                "{usage}"
            );
        }
        assert!(private.contains(&AttributeType::Extractable));
        // GNOME Keyring: the point in a created private key's template, no CKA_ID.
        let create = Profile::GnomeKeyring.private_template(b"id", "l", true, Some(&public));
        assert!(
            create.contains(&Attribute::EcPoint(super::super::ec::encode_ec_point(
                &public
            )))
        );
        assert!(!types(&create).contains(&AttributeType::Id));
        let public_t = Profile::GnomeKeyring
            .public_template(b"id", "l", vec![4])
            .unwrap();
        assert!(!types(&public_t).contains(&AttributeType::Id));
        assert_eq!(
            Profile::GnomeKeyring.found_by(b"id", "l"),
            Attribute::Label(b"l".to_vec())
        );
        for profile in [Profile::Nss, Profile::GnomeKeyring, Profile::YubiHsm] {
            assert!(!profile.renames() && profile.no_metadata().is_some());
        }
        let err = Profile::Tpm2.check_import().unwrap_err().to_string();
        assert!(err.contains("tpm2_ptool import"), "{err}");
    }
}
