//! Importing a `.p8` key: put the private key into the token — by C_CreateObject, or by
//! C_UnwrapKey where tokens refuse plaintext private keys — add its public key object,
//! then prove the import. Any failure after the first object exists destroys what was
//! created.

use std::fmt;
use std::str::FromStr;

use aes_kw::KekAes256;
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use p256::ecdsa::signature::Verifier;
use p256::ecdsa::VerifyingKey;
use p256::elliptic_curve::rand_core::{OsRng, RngCore};
use p256::pkcs8::EncodePrivateKey;
use serde::Serialize;
use sha2::{Digest, Sha256};
use zeroize::{Zeroize, Zeroizing};

use super::keys::encode_ec_point;
use super::{ck, lock, Token};
use crate::ids::printable;
use crate::{fingerprint, Error, KeyId, P8Key};

/// How the private key goes into the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ImportMethod {
    /// C_CreateObject with the private value in the template.
    Create,
    /// C_UnwrapKey of the PKCS#8 under a temporary AES key that lives only for the
    /// import: AES key wrap with padding where the token unwraps with it (SoftHSM), else
    /// AES-CBC-PAD after an in-token C_Encrypt (Luna-style tokens).
    Unwrap,
    /// Create, falling back to unwrap when the token refuses the template.
    #[default]
    Auto,
}

impl FromStr for ImportMethod {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        match s {
            "create" => Ok(ImportMethod::Create),
            "unwrap" => Ok(ImportMethod::Unwrap),
            "auto" => Ok(ImportMethod::Auto),
            _ => Err(Error::InvalidId {
                what: "import method",
                value: printable(s),
                rule: "use create, unwrap or auto",
            }),
        }
    }
}

impl fmt::Display for ImportMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ImportMethod::Create => "create",
            ImportMethod::Unwrap => "unwrap",
            ImportMethod::Auto => "auto",
        })
    }
}

/// How to import.
#[derive(Debug, Clone, Copy, Default)]
pub struct ImportOptions<'a> {
    /// CKA_LABEL; the key ID when `None`.
    pub label: Option<&'a str>,
    /// Bytes recorded beside the key (see [`Token::key_metadata`]).
    pub metadata: Option<&'a [u8]>,
    /// How the private key goes in.
    pub method: ImportMethod,
}

/// What an import created.
#[derive(Debug, Clone, Serialize)]
pub struct Imported {
    /// The Apple key ID.
    pub key_id: KeyId,
    /// CKA_LABEL.
    pub label: String,
    /// SHA-256 fingerprint of the public key's SPKI DER.
    pub fingerprint: String,
    /// `create` or `unwrap`: how the private key went in.
    pub method: String,
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

/// A temporary key, destroyed when dropped whatever happened.
struct TemporaryKey<'s> {
    session: &'s Session,
    handle: ObjectHandle,
}

impl Drop for TemporaryKey<'_> {
    fn drop(&mut self) {
        // A session object: closing the session would destroy it too.
        let _ = self.session.destroy_object(self.handle);
    }
}

impl Token {
    /// Imports `key` as a sensitive, non-extractable, sign-only token object with the
    /// key ID as CKA_ID (per the token's [`Profile`](super::Profile)) and a label (the
    /// key ID by default), plus its public key object where the token keeps one. Refuses,
    /// writing nothing, if any object already has that ID or label. Then proves the
    /// import: the private value is not readable, the key is sensitive and not
    /// extractable, and a random probe signed by the token verifies with the `.p8`'s
    /// public key. On any failure the created objects are destroyed.
    pub fn import(
        &self,
        key: &P8Key,
        key_id: &KeyId,
        options: &ImportOptions<'_>,
    ) -> Result<Imported, Error> {
        let profile = self.profile();
        profile.check_import()?;
        if options.metadata.is_some() && !profile.stores_metadata() {
            return Err(Error::ImportUnsupported {
                token: "this token",
                reason: "it cannot keep key metadata (--kind) beside the key",
            });
        }
        let label = options.label.unwrap_or(key_id.as_str());
        if label.is_empty() || label.len() > 64 || label.chars().any(char::is_control) {
            return Err(Error::InvalidLabel {
                value: printable(label),
            });
        }
        let id = profile.object_id(key_id);
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
        let mut method = ImportMethod::Create;
        let result = self
            .put_private_key(key, &id, label, options.method, &mut created)
            .and_then(|used| {
                method = used;
                self.finish(key, key_id, &id, label, options.metadata, &mut created)
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
            method: method.to_string(),
        })
    }

    /// Puts the private key in with `method`, returning the method that worked.
    fn put_private_key(
        &self,
        key: &P8Key,
        id: &[u8],
        label: &str,
        method: ImportMethod,
        created: &mut Vec<ObjectHandle>,
    ) -> Result<ImportMethod, Error> {
        let session = self.session()?;
        let (handle, used) = match method {
            ImportMethod::Create => (
                self.create_private(&session, key, id, label)
                    .map_err(create_error)?,
                method,
            ),
            ImportMethod::Unwrap => (self.unwrap_private(&session, key, id, label)?, method),
            ImportMethod::Auto => match self.create_private(&session, key, id, label) {
                Ok(handle) => (handle, ImportMethod::Create),
                Err(e) if refuses_template(&e) => (
                    self.unwrap_private(&session, key, id, label)?,
                    ImportMethod::Unwrap,
                ),
                Err(e) => return Err(create_error(e)),
            },
        };
        created.push(handle);
        fault("private-key")?;
        Ok(used)
    }

    fn create_private(
        &self,
        session: &Session,
        key: &P8Key,
        id: &[u8],
        label: &str,
    ) -> Result<ObjectHandle, CkError> {
        refuse_create()?;
        let mut template = WipedTemplate(self.profile().private_template(id, label, true));
        template
            .0
            .push(Attribute::Value(key.scalar_bytes().to_vec()));
        let created = session.create_object(&template.0);
        drop(template);
        crate::p8::scrub_stack();
        created
    }

    fn unwrap_private(
        &self,
        session: &Session,
        key: &P8Key,
        id: &[u8],
        label: &str,
    ) -> Result<ObjectHandle, Error> {
        let pkcs8 = key.pkcs8_der()?;
        let template = self.profile().private_template(id, label, false);
        let supports =
            |mechanism: MechanismType, needs: fn(&cryptoki::mechanism::MechanismInfo) -> bool| {
                self.pkcs11
                    .get_mechanism_info(*lock(&self.slot), mechanism)
                    .is_ok_and(|info| needs(&info))
            };
        let unwrap_error = ck("unwrapping the private key (C_UnwrapKey)");
        if supports(MechanismType::AES_KEY_WRAP_PAD, |i| i.unwrap()) {
            // Wrap on the host (tokens such as SoftHSM cannot C_Encrypt with key wrap),
            // under a random key handed to the token as a session object.
            let mut kek = Zeroizing::new([0u8; 32]);
            OsRng.fill_bytes(kek.as_mut());
            let wrapped = KekAes256::from(*kek)
                .wrap_with_padding_vec(&pkcs8)
                .map_err(Error::internal)?;
            let mut aes = WipedTemplate(vec![
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::KeyType(KeyType::AES),
                Attribute::Token(false),
                Attribute::Sensitive(true),
                Attribute::Extractable(false),
                Attribute::Unwrap(true),
                Attribute::Value(kek.to_vec()),
            ]);
            let kek = TemporaryKey {
                session,
                handle: session
                    .create_object(&aes.0)
                    .map_err(ck("creating the temporary AES key (C_CreateObject)"))?,
            };
            aes.0.clear();
            session
                .unwrap_key(&Mechanism::AesKeyWrapPad, kek.handle, &wrapped, &template)
                .map_err(unwrap_error)
        } else if supports(MechanismType::AES_CBC_PAD, |i| i.encrypt() && i.unwrap()) {
            // Encrypt inside the token under a key generated there.
            let kek = TemporaryKey {
                session,
                handle: session
                    .generate_key(
                        &Mechanism::AesKeyGen,
                        &[
                            Attribute::Class(ObjectClass::SECRET_KEY),
                            Attribute::KeyType(KeyType::AES),
                            Attribute::ValueLen(32.into()),
                            Attribute::Token(false),
                            Attribute::Sensitive(true),
                            Attribute::Extractable(false),
                            Attribute::Encrypt(true),
                            Attribute::Unwrap(true),
                        ],
                    )
                    .map_err(ck("generating the temporary AES key (C_GenerateKey)"))?,
            };
            let mut iv = [0u8; 16];
            OsRng.fill_bytes(&mut iv);
            let encrypted = session
                .encrypt(&Mechanism::AesCbcPad(iv), kek.handle, &pkcs8)
                .map_err(ck("encrypting the PKCS#8 in the token (C_Encrypt)"))?;
            session
                .unwrap_key(&Mechanism::AesCbcPad(iv), kek.handle, &encrypted, &template)
                .map_err(unwrap_error)
        } else {
            Err(Error::ImportUnsupported {
                token: "this token",
                reason: "it offers neither CKM_AES_KEY_WRAP_PAD nor CKM_AES_CBC_PAD to unwrap with",
            })
        }
    }

    /// Adds the public key object and the metadata, then proves the import.
    fn finish(
        &self,
        key: &P8Key,
        key_id: &KeyId,
        id: &[u8],
        label: &str,
        metadata: Option<&[u8]>,
        created: &mut Vec<ObjectHandle>,
    ) -> Result<(), Error> {
        let private_key = created[0];
        if let Some(template) =
            self.profile()
                .public_template(id, label, encode_ec_point(key.public_key()))
        {
            let public_key = self
                .session()?
                .create_object(&template)
                .map_err(ck("creating the public key (C_CreateObject)"))?;
            created.push(public_key);
        }
        fault("public-key")?;
        if let Some(bytes) = metadata {
            created.push(self.create_metadata(key_id, bytes)?);
        }
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

impl P8Key {
    /// The key as PKCS#8 DER, for C_UnwrapKey, in a buffer wiped on drop.
    fn pkcs8_der(&self) -> Result<Zeroizing<Vec<u8>>, Error> {
        let document = self.secret_key().to_pkcs8_der().map_err(Error::internal)?;
        Ok(Zeroizing::new(document.as_bytes().to_vec()))
    }
}

/// Return values by which a token says it will not take a plaintext private key.
fn refuses_template(e: &CkError) -> bool {
    matches!(
        e,
        CkError::Pkcs11(
            RvError::TemplateInconsistent
                | RvError::TemplateIncomplete
                | RvError::AttributeValueInvalid
                | RvError::AttributeTypeInvalid
                | RvError::AttributeReadOnly
                | RvError::FunctionNotSupported
                | RvError::FunctionRejected
                | RvError::ActionProhibited,
            _
        )
    )
}

fn create_error(e: CkError) -> Error {
    ck("creating the private key (C_CreateObject)")(e)
}

/// Fault injection for the tests of the cleanup and fallback paths: with the
/// `fault-injection` feature (never in release builds), `P8HSM_FAULT_AFTER=<step>` fails
/// the import right after that step, and `P8HSM_FAULT_REFUSE_CREATE=1` makes the token
/// seem to refuse a plaintext private key.
#[cfg(feature = "fault-injection")]
fn fault(step: &str) -> Result<(), Error> {
    match std::env::var("P8HSM_FAULT_AFTER") {
        Ok(at) if at == step => Err(Error::Internal(format!("fault injected after {step}"))),
        _ => Ok(()),
    }
}

#[cfg(feature = "fault-injection")]
fn refuse_create() -> Result<(), CkError> {
    match std::env::var_os("P8HSM_FAULT_REFUSE_CREATE") {
        Some(_) => Err(CkError::Pkcs11(
            RvError::TemplateInconsistent,
            cryptoki::context::Function::CreateObject,
        )),
        None => Ok(()),
    }
}

#[cfg(not(feature = "fault-injection"))]
fn fault(_: &str) -> Result<(), Error> {
    Ok(())
}

#[cfg(not(feature = "fault-injection"))]
fn refuse_create() -> Result<(), CkError> {
    Ok(())
}
