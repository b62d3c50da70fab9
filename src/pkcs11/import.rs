//! Importing a `.p8` key: create the private and public objects, then prove the import.
//! Any failure after the first object exists destroys what was created.

use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use p256::ecdsa::signature::Verifier;
use p256::ecdsa::VerifyingKey;
use p256::elliptic_curve::rand_core::{OsRng, RngCore};
use serde::Serialize;
use sha2::{Digest, Sha256};
use zeroize::Zeroize;

use super::keys::{encode_ec_point, P256_PARAMS};
use super::{ck, Token};
use crate::{fingerprint, Error, KeyId, P8Key};

/// What an import created.
#[derive(Debug, Clone, Serialize)]
pub struct Imported {
    /// The Apple key ID (CKA_ID).
    pub key_id: KeyId,
    /// CKA_LABEL.
    pub label: String,
    /// SHA-256 fingerprint of the public key's SPKI DER.
    pub fingerprint: String,
}

/// A template whose secret values are wiped when it is dropped, whatever happened.
struct WipedTemplate(Vec<Attribute>);

impl Drop for WipedTemplate {
    fn drop(&mut self) {
        for attribute in &mut self.0 {
            if let Attribute::Value(bytes) = attribute {
                bytes.zeroize();
            }
        }
    }
}

impl Token {
    /// Imports `key` as a sensitive, non-extractable, sign-only token object with
    /// CKA_ID = `key_id` and CKA_LABEL = `label` (default: the key ID), plus its public
    /// key object. Refuses, writing nothing, if any object already has that ID or
    /// label. Then proves the import: the private value is not readable, the key is
    /// sensitive and not extractable, and a random probe signed by the token verifies
    /// with the `.p8`'s public key. On any failure the created objects are destroyed.
    ///
    /// `metadata`, when given, is recorded beside the key (see [`Token::key_metadata`]).
    pub fn import(
        &self,
        key: &P8Key,
        key_id: &KeyId,
        label: Option<&str>,
        metadata: Option<&[u8]>,
    ) -> Result<Imported, Error> {
        let label = label.unwrap_or(key_id.as_str());
        if label.is_empty() || label.len() > 64 || label.chars().any(char::is_control) {
            return Err(Error::InvalidLabel {
                value: crate::ids::printable(label),
            });
        }
        let id = key_id.as_str().as_bytes().to_vec();
        if !self.find(&[Attribute::Id(id.clone())])?.is_empty() {
            return Err(Error::DuplicateKey {
                what: format!("an object with key ID {key_id}"),
            });
        }
        if !self
            .find(&[Attribute::Label(label.as_bytes().to_vec())])?
            .is_empty()
        {
            return Err(Error::DuplicateKey {
                what: format!("an object labelled \"{label}\""),
            });
        }

        let mut created = Vec::new();
        let result = self
            .create_and_prove(key, &id, label, &mut created)
            .and_then(|()| match metadata {
                Some(bytes) => self
                    .create_metadata(key_id, bytes)
                    .map(|object| created.push(object)),
                None => Ok(()),
            });
        if let Err(error) = result {
            let leftovers: Vec<_> = created
                .into_iter()
                .filter_map(|object| self.destroy(object).err())
                .collect();
            return Err(match leftovers.first() {
                None => error,
                Some(cleanup) => Error::ImportLeftObjects {
                    key_id: key_id.to_string(),
                    reason: format!("{error}; then removing the created objects failed: {cleanup}"),
                },
            });
        }
        Ok(Imported {
            key_id: key_id.clone(),
            label: label.to_owned(),
            fingerprint: fingerprint(key.public_key()),
        })
    }

    fn create_and_prove(
        &self,
        key: &P8Key,
        id: &[u8],
        label: &str,
        created: &mut Vec<ObjectHandle>,
    ) -> Result<(), Error> {
        let common = [
            Attribute::KeyType(KeyType::EC),
            Attribute::EcParams(P256_PARAMS.to_vec()),
            Attribute::Token(true),
            Attribute::Id(id.to_vec()),
            Attribute::Label(label.as_bytes().to_vec()),
        ];
        let mut private = WipedTemplate(vec![
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Sign(true),
            Attribute::Decrypt(false),
            Attribute::Derive(false),
            Attribute::Unwrap(false),
        ]);
        private.0.extend(common.iter().cloned());
        private
            .0
            .push(Attribute::Value(key.scalar_bytes().to_vec()));
        let private_key = self
            .session()?
            .create_object(&private.0)
            .map_err(ck("creating the private key (C_CreateObject)"))?;
        drop(private);
        created.push(private_key);
        fault("private-key")?;

        let mut public = vec![
            Attribute::Class(ObjectClass::PUBLIC_KEY),
            Attribute::Verify(true),
            Attribute::Encrypt(false),
            Attribute::Wrap(false),
            Attribute::Derive(false),
            Attribute::EcPoint(encode_ec_point(key.public_key())),
        ];
        public.extend(common);
        let public_key = self
            .session()?
            .create_object(&public)
            .map_err(ck("creating the public key (C_CreateObject)"))?;
        created.push(public_key);
        fault("public-key")?;

        self.prove(private_key, key)
    }

    fn prove(&self, private_key: ObjectHandle, key: &P8Key) -> Result<(), Error> {
        let check = |ok: bool, reason: &str| {
            if ok {
                Ok(())
            } else {
                Err(Error::ImportCheck {
                    reason: reason.to_owned(),
                })
            }
        };
        let attributes = self
            .session()?
            .get_attributes(
                private_key,
                &[
                    AttributeType::Sensitive,
                    AttributeType::Extractable,
                    AttributeType::Value,
                ],
            )
            .map_err(ck("reading the key's attributes (C_GetAttributeValue)"))?;
        check(
            attributes.contains(&Attribute::Sensitive(true)),
            "the token does not report the key as sensitive",
        )?;
        check(
            attributes.contains(&Attribute::Extractable(false)),
            "the token reports the key as extractable",
        )?;
        check(
            !attributes.iter().any(|a| matches!(a, Attribute::Value(_))),
            "the token reveals the private value",
        )?;

        let mut probe = [0u8; 32];
        OsRng.fill_bytes(&mut probe);
        let signature = self.sign_digest(private_key, &Sha256::digest(probe))?;
        check(
            VerifyingKey::from(key.public_key())
                .verify(&probe, &signature)
                .is_ok(),
            "a probe signed by the token does not verify with the .p8's public key",
        )
    }
}

/// Fault injection for the tests of the cleanup path: with the `fault-injection`
/// feature (never in release builds), `P8HSM_FAULT_AFTER=<step>` fails the import
/// right after that step.
#[cfg(feature = "fault-injection")]
fn fault(step: &str) -> Result<(), Error> {
    match std::env::var("P8HSM_FAULT_AFTER") {
        Ok(at) if at == step => Err(Error::Internal(format!("fault injected after {step}"))),
        _ => Ok(()),
    }
}

#[cfg(not(feature = "fault-injection"))]
fn fault(_: &str) -> Result<(), Error> {
    Ok(())
}
