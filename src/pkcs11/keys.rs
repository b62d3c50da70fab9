//! Finding, listing, signing with and deleting EC P-256 keys on a token.

use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use p256::ecdsa::signature::Verifier;
use p256::ecdsa::Signature;
use p256::PublicKey;
use serde::Serialize;
use sha2::{Digest, Sha256};

use std::sync::RwLock;

use super::claim::is_pending;
use super::context::ck;
use super::ec::{decode_ec_point, P256_PARAMS};
use super::session::OpError;
use super::token::{private_key, Token};
use crate::{fingerprint, Error, Es256Signer, KeyId};

/// CKA_APPLICATION of the data objects that hold key metadata.
const METADATA_APPLICATION: &[u8] = b"p8hsm";

/// A P-256 private key on the token, found by its Apple key ID. Signs through the
/// token: the private key never leaves it.
///
/// If a signature fails because the session, the key handle or the device went away,
/// it is retried once on a fresh session with the key found again.
///
/// It owns a clone of its [`Token`]: no lifetime, `Send + Sync`, shareable as
/// `Arc<dyn Es256Signer>`.
#[derive(Debug)]
pub struct HsmKey {
    token: Token,
    /// Read by every signature, written only when the key is found again.
    handle: RwLock<ObjectHandle>,
    key_id: KeyId,
}

impl Es256Signer for HsmKey {
    fn key_id(&self) -> &KeyId {
        &self.key_id
    }

    fn sign_es256(&self, message: &[u8]) -> Result<Signature, Error> {
        let digest = Sha256::digest(message);
        let raw = self.token.with_recovery(|session, retry| {
            let handle = if retry {
                let handle = private_key(session, &self.key_id)?;
                *self.handle.write().unwrap_or_else(|p| p.into_inner()) = handle;
                handle
            } else {
                *self.handle.read().unwrap_or_else(|p| p.into_inner())
            };
            session
                .sign(&Mechanism::Ecdsa, handle, &digest)
                .map_err(|e| OpError::Call("C_Sign", e))
        })?;
        Signature::from_slice(&raw).map_err(|_| Error::BadSignature { len: raw.len() })
    }
}

/// What `keys` reports about one EC P-256 key on the token.
#[derive(Debug, Clone, Serialize)]
pub struct KeyInfo {
    /// CKA_ID as text (the Apple key ID for keys p8hsm imported), or hex when not
    /// printable.
    pub id: String,
    /// CKA_LABEL.
    pub label: String,
    /// SHA-256 fingerprint of the public key's SPKI DER, when the public half exists.
    pub fingerprint: Option<String>,
    /// CKA_SENSITIVE.
    pub sensitive: bool,
    /// CKA_EXTRACTABLE.
    pub extractable: bool,
    /// Whether a public key object with the same CKA_ID exists.
    pub has_public_key: bool,
    /// A PKCS#11 URI naming the private key (never with a PIN).
    pub uri: String,
    /// Whether it was left by an import that did not finish (its CKA_ID is a pending
    /// name): it is never used to sign. In JSON only when true.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub unfinished: bool,
    /// The metadata recorded beside the key, if any.
    #[serde(skip)]
    pub metadata: Option<Vec<u8>>,
    #[serde(skip)]
    handle: ObjectHandle,
    #[serde(skip)]
    public: Option<PublicKey>,
}

impl Token {
    /// The private key with CKA_ID `key_id`, ready to sign.
    pub fn key(&self, key_id: &KeyId) -> Result<HsmKey, Error> {
        Ok(HsmKey {
            token: self.clone(),
            handle: RwLock::new(self.private_key(key_id)?),
            key_id: key_id.clone(),
        })
    }

    /// The EC P-256 private keys on the token.
    pub fn keys(&self) -> Result<Vec<KeyInfo>, Error> {
        let handles = self.find_objects(&[
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::KeyType(KeyType::EC),
        ])?;
        let mut keys = Vec::new();
        for handle in handles {
            let attributes = self
                .session()?
                .get_attributes(
                    handle,
                    &[
                        AttributeType::Id,
                        AttributeType::Label,
                        AttributeType::EcParams,
                        AttributeType::Sensitive,
                        AttributeType::Extractable,
                    ],
                )
                .map_err(ck("C_GetAttributeValue"))?;
            let (mut id, mut label, mut p256, mut sensitive, mut extractable) =
                (Vec::new(), String::new(), false, false, true);
            for attribute in attributes {
                match attribute {
                    Attribute::Id(v) => id = v,
                    Attribute::Label(v) => label = String::from_utf8_lossy(&v).into_owned(),
                    Attribute::EcParams(v) => p256 = v == P256_PARAMS,
                    Attribute::Sensitive(v) => sensitive = v,
                    Attribute::Extractable(v) => extractable = v,
                    _ => {}
                }
            }
            if !p256 {
                continue;
            }
            let public = self.public_key_by_id(&id)?;
            // Metadata is kept under the Apple key ID: the CKA_ID of keys p8hsm imported,
            // or the label where the token's CKA_ID cannot hold it (YubiHSM 2).
            let key_id = [id.as_slice(), label.as_bytes()].into_iter().find(|bytes| {
                std::str::from_utf8(bytes).is_ok_and(|text| text.parse::<KeyId>().is_ok())
            });
            let metadata = match key_id {
                Some(key_id) => self.metadata_by_id(key_id)?,
                None => None,
            };
            keys.push(KeyInfo {
                uri: self.object_uri(&id, &label, super::uri::ObjectType::Private),
                unfinished: is_pending(&id),
                id: id_text(&id),
                label,
                fingerprint: public.as_ref().map(fingerprint),
                sensitive,
                extractable,
                has_public_key: public.is_some(),
                metadata,
                handle,
                public,
            });
        }
        keys.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(keys)
    }

    /// Whether a random probe signed with the listed key verifies with its public key
    /// object: proof that the pair matches and the key signs. `None` without a public key.
    pub fn probe(&self, key: &KeyInfo) -> Result<Option<bool>, Error> {
        let Some(public) = &key.public else {
            return Ok(None);
        };
        let mut probe = [0u8; 32];
        p256::elliptic_curve::rand_core::RngCore::fill_bytes(
            &mut p256::elliptic_curve::rand_core::OsRng,
            &mut probe,
        );
        let signature = self.sign_digest(key.handle, &Sha256::digest(probe))?;
        Ok(Some(
            p256::ecdsa::VerifyingKey::from(public)
                .verify(&probe, &signature)
                .is_ok(),
        ))
    }

    /// Whether the token signs with CKM_ECDSA.
    pub fn supports_ecdsa(&self) -> Result<bool, Error> {
        match self
            .pkcs11()
            .get_mechanism_info(self.slot(), cryptoki::mechanism::MechanismType::ECDSA)
        {
            Ok(info) => Ok(info.sign()),
            Err(cryptoki::error::Error::Pkcs11(cryptoki::error::RvError::MechanismInvalid, _)) => {
                Ok(false)
            }
            Err(e) => Err(ck("C_GetMechanismInfo")(e)),
        }
    }

    /// The public key of `key_id`, read from its public key object.
    pub fn public_key(&self, key_id: &KeyId) -> Result<PublicKey, Error> {
        self.private_key(key_id)?;
        self.public_key_by_id(key_id.as_str().as_bytes())?
            .ok_or_else(|| Error::PublicKeyMissing {
                key_id: key_id.to_string(),
            })
    }

    /// Destroys the private and public key objects of `key_id` and its metadata.
    pub fn delete(&self, key_id: &KeyId) -> Result<(), Error> {
        let private = self.private_key(key_id)?;
        let id = key_id.as_str().as_bytes();
        for object in self
            .public_objects(id)?
            .into_iter()
            .chain(self.metadata_objects(id)?)
        {
            self.destroy(object)?;
        }
        self.destroy(private)
    }

    /// Destroys every private and public key object whose CKA_ID (or CKA_LABEL) is the
    /// key ID, and its metadata: the way out when the key ID is on the token more than
    /// once. Returns how many objects went; none is an error ([`Error::KeyNotFound`]).
    pub fn delete_all(&self, key_id: &KeyId) -> Result<usize, Error> {
        let id = key_id.as_str().as_bytes().to_vec();
        let mut objects = Vec::new();
        for class in [ObjectClass::PRIVATE_KEY, ObjectClass::PUBLIC_KEY] {
            for by in [Attribute::Id(id.clone()), Attribute::Label(id.clone())] {
                for handle in self.find_objects(&[Attribute::Class(class), by])? {
                    if !objects.contains(&handle) {
                        objects.push(handle);
                    }
                }
            }
        }
        if objects.is_empty() {
            return Err(Error::KeyNotFound {
                key_id: key_id.to_string(),
            });
        }
        objects.extend(self.metadata_objects(&id)?);
        for object in &objects {
            self.destroy_gone_ok(*object)?;
        }
        Ok(objects.len())
    }

    /// The metadata recorded beside `key_id` at import, if any: opaque bytes in a data
    /// object (CKA_APPLICATION `p8hsm`, CKA_LABEL the key ID).
    pub fn key_metadata(&self, key_id: &KeyId) -> Result<Option<Vec<u8>>, Error> {
        self.metadata_by_id(key_id.as_str().as_bytes())
    }

    /// Records metadata in a data object labelled `label` (the key ID, or an import's
    /// pending name until it wins), read back after creation.
    pub(super) fn create_metadata(&self, label: &str, bytes: &[u8]) -> Result<ObjectHandle, Error> {
        self.create_checked(
            &[
                Attribute::Class(ObjectClass::DATA),
                Attribute::Token(true),
                Attribute::Private(true),
                Attribute::Application(METADATA_APPLICATION.to_vec()),
                Attribute::Label(label.as_bytes().to_vec()),
                Attribute::Value(bytes.to_vec()),
            ],
            "the key's metadata",
        )
    }

    fn metadata_objects(&self, id: &[u8]) -> Result<Vec<ObjectHandle>, Error> {
        self.find_objects(&[
            Attribute::Class(ObjectClass::DATA),
            Attribute::Application(METADATA_APPLICATION.to_vec()),
            Attribute::Label(id.to_vec()),
        ])
    }

    fn metadata_by_id(&self, id: &[u8]) -> Result<Option<Vec<u8>>, Error> {
        for handle in self.metadata_objects(id)? {
            if let Some(Attribute::Value(bytes)) = self.attribute(handle, AttributeType::Value)? {
                return Ok(Some(bytes));
            }
        }
        Ok(None)
    }

    pub(super) fn destroy(&self, object: ObjectHandle) -> Result<(), Error> {
        self.settled(|| {
            self.session()?
                .destroy_object(object)
                .map_err(ck("C_DestroyObject"))
        })
    }

    /// ECDSA over a 32-byte digest with CKM_ECDSA; the token returns R||S.
    pub(super) fn sign_digest(&self, key: ObjectHandle, digest: &[u8]) -> Result<Signature, Error> {
        let raw = self.settled(|| {
            self.session()?
                .sign(&Mechanism::Ecdsa, key, digest)
                .map_err(ck("C_Sign"))
        })?;
        Signature::from_slice(&raw).map_err(|_| Error::BadSignature { len: raw.len() })
    }

    fn public_key_by_id(&self, id: &[u8]) -> Result<Option<PublicKey>, Error> {
        for handle in self.public_objects(id)? {
            if let Some(Attribute::EcPoint(point)) =
                self.attribute(handle, AttributeType::EcPoint)?
            {
                if let Some(key) = decode_ec_point(&point) {
                    return Ok(Some(key));
                }
            }
        }
        Ok(None)
    }
}

fn id_text(id: &[u8]) -> String {
    match std::str::from_utf8(id) {
        Ok(text) if text.chars().all(|c| c.is_ascii_graphic()) => text.to_owned(),
        _ => id.iter().map(|b| format!("{b:02x}")).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_print_as_text_or_hex() {
        assert_eq!(id_text(b"2X9R4HXF34"), "2X9R4HXF34");
        assert_eq!(id_text(&[0, 1]), "0001");
    }
}
