//! Importing a `.p8` key: put the private key into the token — by C_UnwrapKey of a
//! ciphertext where the token can, else by C_CreateObject — add its public key object,
//! then prove the import. Any failure after the first object exists destroys what was
//! created.

use std::fmt;
use std::str::FromStr;

use cryptoki::error::Error as CkError;
use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsOaepParams, PkcsOaepSource};
use cryptoki::mechanism::{Mechanism, MechanismInfo, MechanismType};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use p256::ecdsa::signature::Verifier;
use p256::ecdsa::VerifyingKey;
use p256::elliptic_curve::rand_core::{OsRng, RngCore};
use rsa::{BigUint, Oaep, RsaPublicKey};
use serde::Serialize;
use sha1::Sha1;
use sha2::{Digest, Sha256};
use zeroize::Zeroize;

use super::claim::Claim;
use super::context::{busy, ck, refusal, settle, SETTLE_ATTEMPTS};
use super::ec::encode_ec_point;
use super::token::Token;
use crate::ids::printable;
use crate::{fingerprint, Error, KeyId, P8Key};

/// How the private key goes into the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ImportMethod {
    /// C_CreateObject with the private value in the template.
    Create,
    /// C_UnwrapKey of the PKCS#8 under a temporary key that lives only for the import:
    /// RSA-OAEP under a key pair the token generates (only ciphertext crosses the PKCS#11
    /// interface), else AES-CBC-PAD after an in-token C_Encrypt (Luna-style tokens).
    Unwrap,
    /// The RSA-OAEP unwrap where the token offers it, else create, else the AES-CBC-PAD
    /// unwrap: a failed RSA-OAEP unwrap, or a way the token refuses, moves on to the next.
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
    /// How the private key went in: [`ImportMethod::Create`] or [`ImportMethod::Unwrap`].
    pub method: ImportMethod,
}

/// An import into one token, prepared by [`Token::prepare_import`]: it contends for the
/// key ID, then takes it with [`PreparedImport::finish`] — or removes what it made with
/// [`PreparedImport::abandon`].
pub struct PreparedImport<'t, 'k> {
    token: &'t Token,
    key: &'k P8Key,
    key_id: KeyId,
    id: Vec<u8>,
    options: ImportOptions<'k>,
    /// The claim whose pending names the proven objects carry; `None` on a token that
    /// cannot rename, where nothing is written yet.
    claim: Option<Claim>,
    method: ImportMethod,
}

impl<'t> PreparedImport<'t, '_> {
    /// The token it imports into.
    pub fn token(&self) -> &'t Token {
        self.token
    }

    /// Waits until the key ID is this import's to take: no finished key has it, and no
    /// other import's claim stands (see the `claim` module). Gives up, without removing
    /// anything, when another import finished first or holds on too long.
    pub fn contend(&self) -> Result<(), Error> {
        if let Some(claim) = &self.claim {
            self.token.contend(claim, &self.id)?;
            fault("contended")?;
        }
        Ok(())
    }

    /// Takes the key ID: renames the proven objects to it and its label (on a token that
    /// cannot rename, puts the key in under them and proves it), then removes the claim.
    /// What it made is removed when it fails.
    pub fn finish(self) -> Result<Imported, Error> {
        let label = self.options.label.unwrap_or(self.key_id.as_str());
        let imported = |method| Imported {
            key_id: self.key_id.clone(),
            label: label.to_owned(),
            fingerprint: fingerprint(self.key.public_key()),
            method,
        };
        let Some(claim) = &self.claim else {
            let method = self
                .token
                .put_direct(self.key, &self.key_id, &self.id, &self.options)?;
            return Ok(imported(method));
        };
        let committed = self
            .token
            .commit(claim, &self.key_id, &self.id, label)
            .and_then(|()| fault("finished"));
        if let Err(error) = committed {
            let key_id = self.key_id.clone();
            return Err(match self.abandon() {
                Ok(()) => error,
                Err(cleanup) => left(&key_id, error, cleanup),
            });
        }
        let method = self.method;
        let done = imported(method);
        if let Some(claim) = self.claim {
            // A claim that cannot be removed is left for `p8hsm doctor` to name, and does
            // not undo a finished import.
            let _ = self.token.release(claim);
        }
        Ok(done)
    }

    /// Removes what it made (its pending objects) and its claim.
    pub fn abandon(self) -> Result<(), Error> {
        let Some(claim) = self.claim else {
            return Ok(());
        };
        let cleaned = self.token.remove_pending(&claim);
        let _ = self.token.release(claim);
        cleaned
    }
}

/// The error of an import that failed and could not remove all it created.
fn left(key_id: &KeyId, cause: Error, cleanup: Error) -> Error {
    Error::ImportLeftObjects {
        key_id: key_id.to_string(),
        cause: Box::new(cause),
        cleanup: Box::new(cleanup),
    }
}

/// What an import created so far.
#[derive(Default)]
struct Created {
    private: Option<ObjectHandle>,
    public: Option<ObjectHandle>,
    metadata: Option<ObjectHandle>,
}

impl Created {
    fn all(&self) -> impl Iterator<Item = ObjectHandle> {
        [self.metadata, self.public, self.private]
            .into_iter()
            .flatten()
    }
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

/// One way of putting the private key into the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Way {
    /// C_CreateObject with the private value in the template: the scalar crosses the
    /// PKCS#11 interface in plaintext.
    Create,
    /// See [`Token::unwrap_rsa_oaep`]: only ciphertext crosses the interface.
    RsaOaep,
    /// See [`Token::unwrap_aes_cbc_pad`].
    AesCbcPad,
}

impl Way {
    /// The operation that puts the key in, as errors name it.
    fn operation(self) -> &'static str {
        match self {
            Way::Create => "creating the private key (C_CreateObject)",
            Way::RsaOaep => "unwrapping the private key (C_UnwrapKey with CKM_RSA_PKCS_OAEP)",
            Way::AesCbcPad => "unwrapping the private key (C_UnwrapKey with CKM_AES_CBC_PAD)",
        }
    }
}

/// Why one way failed: the token's answer to an operation (a refusal lets the next way
/// be tried), or anything else.
enum WayFailed {
    Token(&'static str, CkError),
    Other(Error),
}

impl From<Error> for WayFailed {
    fn from(e: Error) -> Self {
        WayFailed::Other(e)
    }
}

/// Names the operation a token's error answered.
fn at(operation: &'static str) -> impl Fn(CkError) -> WayFailed {
    move |e| WayFailed::Token(operation, e)
}

/// The temporary RSA wrapping key's size: 3072 bits, as strong as P-256.
const WRAPPING_RSA_BITS: u64 = 3072;

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
    /// key ID as CKA_ID (per the token's [`Profile`](super::profile::Profile)) and a label (the
    /// key ID by default), plus its public key object where the token keeps one. Refuses,
    /// writing nothing, if any object already has that ID or label. Then proves the
    /// import: the private value is not readable, the key is sensitive and not
    /// extractable, and a random probe signed by the token verifies with the `.p8`'s
    /// public key. On any failure the created objects are destroyed.
    ///
    /// The stack frames the import used are wiped before it returns (moves and curve
    /// arithmetic leave copies of key material in frames that return without wiping).
    pub fn import(
        &self,
        key: &P8Key,
        key_id: &KeyId,
        options: &ImportOptions<'_>,
    ) -> Result<Imported, Error> {
        let result = self.import_inner(key, key_id, options);
        crate::p8::scrub_stack();
        result
    }

    /// Refuses, before anything is written, an import this token would refuse: one it
    /// cannot make (or keep metadata for), an invalid label, a key ID or label already
    /// there. [`Token::import`] checks this itself; a caller importing into several
    /// tokens checks them all first.
    pub fn check_import(&self, key_id: &KeyId, options: &ImportOptions<'_>) -> Result<(), Error> {
        let profile = self.profile();
        profile.check_import()?;
        if !self.offers(MechanismType::ECDSA, MechanismInfo::sign) {
            return Err(Error::ImportUnsupported {
                token: "this token",
                reason: "it does not offer CKM_ECDSA for signing, so a key in it could sign \
                         nothing: choose a token that signs with P-256 ECDSA",
            });
        }
        if let (Some(_), Some(reason)) = (options.metadata, profile.no_metadata()) {
            return Err(Error::ImportUnsupported {
                token: "this token",
                reason,
            });
        }
        let label = options.label.unwrap_or(key_id.as_str());
        check_label(label)?;
        if label != key_id.as_str() && label.parse::<KeyId>().is_ok() {
            return Err(Error::InvalidId {
                what: "label",
                value: printable(label),
                rule: "a label that looks like another key ID would be taken for that key",
            });
        }
        if !profile.keeps_ids() && label != key_id.as_str() {
            return Err(Error::NotApplicable {
                field: "label",
                reason: "this token sets each key's CKA_ID itself, so p8hsm finds its keys by \
                         label, which must be the key ID: another label does not apply"
                    .to_owned(),
            });
        }
        let id = profile.object_id(key_id);
        if !self.find_objects(&[Attribute::Id(id)])?.is_empty() {
            return Err(Error::DuplicateKey {
                what: format!("an object with key ID {key_id}"),
            });
        }
        self.check_label_free(label)
    }

    /// Refuses a label an object (other than an import's claim) already has.
    pub(super) fn check_label_free(&self, label: &str) -> Result<(), Error> {
        if self
            .find_objects(&[Attribute::Label(label.as_bytes().to_vec())])?
            .into_iter()
            .any(|object| !self.is_claim(object))
        {
            return Err(Error::DuplicateKey {
                what: format!("an object labelled {}", printable(label)),
            });
        }
        Ok(())
    }

    fn import_inner(
        &self,
        key: &P8Key,
        key_id: &KeyId,
        options: &ImportOptions<'_>,
    ) -> Result<Imported, Error> {
        let prepared = self.prepare_import(key, key_id, options)?;
        if let Err(e) = prepared.contend() {
            return Err(match prepared.abandon() {
                Ok(()) => e,
                Err(cleanup) => left(key_id, e, cleanup),
            });
        }
        prepared.finish()
    }

    /// The first half of [`Token::import`]: the key put in and proven, on a token that
    /// can rename under a claim's pending names, which no look-up by key ID finds; on
    /// one that cannot, nothing is written until [`PreparedImport::finish`]. An import
    /// into several tokens prepares every one before it finishes any, so that a run cut
    /// short leaves only pending objects — recognisable, never signing, named by
    /// `doctor` — and a run again of the same import clears them (see
    /// [`Token::clear_leftovers`]).
    pub fn prepare_import<'t, 'k>(
        &'t self,
        key: &'k P8Key,
        key_id: &KeyId,
        options: &ImportOptions<'k>,
    ) -> Result<PreparedImport<'t, 'k>, Error> {
        self.check_import(key_id, options)?;
        let profile = self.profile();
        let mut prepared = PreparedImport {
            token: self,
            key,
            key_id: key_id.clone(),
            id: profile.object_id(key_id),
            options: *options,
            claim: None,
            method: options.method,
        };
        if !profile.renames() {
            // No claim, no pending names: this token cannot rename (see Profile::renames).
            return Ok(prepared);
        }
        self.clear_leftovers(key_id, key.public_key())?;
        let claim = self.claim(key_id)?;
        match self.put_pending(key, options, &claim) {
            Ok(method) => {
                prepared.method = method;
                prepared.claim = Some(claim);
                fault("proved")?;
                Ok(prepared)
            }
            Err(error) => {
                let cleaned = self.remove_pending(&claim);
                // Whether it won or not, the claim goes; a claim that cannot be removed is
                // left for `p8hsm doctor` to name.
                let _ = self.release(claim);
                Err(match cleaned {
                    Ok(()) => error,
                    Err(cleanup) => left(key_id, error, cleanup),
                })
            }
        }
    }

    /// Puts the key in under the claim's pending names and proves it, or destroys
    /// whatever it created.
    fn put_pending(
        &self,
        key: &P8Key,
        options: &ImportOptions<'_>,
        claim: &Claim,
    ) -> Result<ImportMethod, Error> {
        // Metadata is found by the key ID: under the pending name until the import won.
        let pending = claim.pending.as_str();
        let metadata = options.metadata.map(|bytes| (bytes, pending));
        let mut created = Created::default();
        self.put_private_key(
            key,
            pending.as_bytes(),
            pending,
            options.method,
            &mut created,
        )
        .and_then(|method| {
            self.finish(key, pending.as_bytes(), pending, metadata, &mut created)?;
            Ok(method)
        })
    }

    /// Puts the key in under its key ID and label and proves it — on a token that
    /// cannot rename — or destroys whatever it created.
    fn put_direct(
        &self,
        key: &P8Key,
        key_id: &KeyId,
        id: &[u8],
        options: &ImportOptions<'_>,
    ) -> Result<ImportMethod, Error> {
        let label = options.label.unwrap_or(key_id.as_str());
        let metadata = options.metadata.map(|bytes| (bytes, key_id.as_str()));
        let mut created = Created::default();
        let result = self
            .put_private_key(key, id, label, options.method, &mut created)
            .and_then(|method| {
                self.finish(key, id, label, metadata, &mut created)?;
                Ok(method)
            });
        let Err(error) = result else {
            return result;
        };
        match created
            .all()
            .try_for_each(|object| self.destroy_gone_ok(object))
        {
            Ok(()) => Err(error),
            Err(cleanup) => Err(left(key_id, error, cleanup)),
        }
    }

    /// Clears what an earlier import of this same key left when it was cut short: a
    /// claim on `key_id` whose pending private key signs for `public` (a probe shows it),
    /// with the pending objects named after it; or, once this key holds the key ID, a
    /// claim with no objects. Anything else is left as it is: a claim whose key is
    /// another, or that has no key yet, may be an import under way.
    pub fn clear_leftovers(
        &self,
        key_id: &KeyId,
        public: &p256::PublicKey,
    ) -> Result<usize, Error> {
        let mut cleared = 0;
        let mut held = None;
        for claim in self.claims_on(key_id)? {
            let objects = self.pending_objects(&claim)?;
            let ours = if objects.is_empty() {
                // An import of this key that took the key ID and was cut short before it
                // removed its claim.
                *held.get_or_insert(self.holds(key_id, public)?)
            } else {
                objects
                    .iter()
                    .filter(|(_, class)| *class == ObjectClass::PRIVATE_KEY)
                    .any(|(handle, _)| self.signs_for(*handle, public))
            };
            if !ours {
                continue;
            }
            for (handle, _) in objects {
                self.destroy_gone_ok(handle)?;
            }
            cleared += 1;
            self.release(claim)?;
        }
        if cleared > 0 {
            self.refresh()?;
        }
        Ok(cleared)
    }

    /// Whether the key with `key_id` is the key whose public key is `public`: a random
    /// probe it signs verifies. `false` when there is no such key.
    pub fn holds(&self, key_id: &KeyId, public: &p256::PublicKey) -> Result<bool, Error> {
        let key = match self.key(key_id) {
            Ok(key) => key,
            Err(Error::KeyNotFound { .. }) => return Ok(false),
            Err(e) => return Err(e),
        };
        let mut probe = [0u8; 32];
        OsRng.fill_bytes(&mut probe);
        let signature = crate::Es256Signer::sign_es256(&key, &probe)?;
        Ok(VerifyingKey::from(public)
            .verify(&probe, &signature)
            .is_ok())
    }

    /// Whether the private key `handle` signs for `public`: a random probe it signs
    /// verifies.
    fn signs_for(&self, handle: ObjectHandle, public: &p256::PublicKey) -> bool {
        let mut probe = [0u8; 32];
        OsRng.fill_bytes(&mut probe);
        self.sign_digest(handle, &Sha256::digest(probe))
            .is_ok_and(|signature| {
                VerifyingKey::from(public)
                    .verify(&probe, &signature)
                    .is_ok()
            })
    }

    /// Destroys what the import made under its pending name, then looks again with the
    /// token read anew, and again while anything is left: a token whose store another
    /// process was writing may show an object later than it made it.
    fn remove_pending(&self, claim: &Claim) -> Result<(), Error> {
        for pass in 0..3 {
            let left = self.pending_objects(claim)?;
            if left.is_empty() && pass > 0 {
                return Ok(());
            }
            for (object, _) in left {
                self.destroy_gone_ok(object)?;
            }
            self.refresh()?;
        }
        match self.pending_objects(claim)?.len() {
            0 => Ok(()),
            n => Err(Error::ImportCheck {
                reason: format!("{n} objects named {} stay on the token", claim.pending),
            }),
        }
    }

    /// Gives the won import's objects — found by their pending name — their own names:
    /// the key ID and the label.
    fn commit(&self, claim: &Claim, key_id: &KeyId, id: &[u8], label: &str) -> Result<(), Error> {
        for (handle, class) in self.pending_objects(claim)? {
            match class {
                ObjectClass::DATA => {
                    self.rename(handle, class, None, key_id.as_str(), "the key's metadata")?
                }
                ObjectClass::PUBLIC_KEY => {
                    self.rename(handle, class, Some(id), label, "the public key")?
                }
                _ => self.rename(handle, class, Some(id), label, "the private key")?,
            }
        }
        Ok(())
    }

    /// Puts the private key in with `method`, returning the method that worked.
    fn put_private_key(
        &self,
        key: &P8Key,
        id: &[u8],
        label: &str,
        method: ImportMethod,
        created: &mut Created,
    ) -> Result<ImportMethod, Error> {
        let offers = |mechanism, needs| self.offers(mechanism, needs);
        // Asked only when an unwrap may be tried: `create` makes no extra call.
        let rsa = || {
            (offers(MechanismType::RSA_PKCS_KEY_PAIR_GEN, |i| {
                i.generate_key_pair()
            }) && offers(MechanismType::RSA_PKCS_OAEP, |i| i.unwrap()))
            .then_some(Way::RsaOaep)
        };
        let cbc = || {
            (offers(MechanismType::AES_KEY_GEN, |i| i.generate())
                && offers(MechanismType::AES_CBC_PAD, |i| i.encrypt() && i.unwrap()))
            .then_some(Way::AesCbcPad)
        };
        let ways: Vec<Way> = match method {
            ImportMethod::Create => vec![Way::Create],
            ImportMethod::Unwrap => [rsa(), cbc()].into_iter().flatten().collect(),
            ImportMethod::Auto => [rsa(), Some(Way::Create), cbc()]
                .into_iter()
                .flatten()
                .collect(),
        };
        if ways.is_empty() {
            return Err(Error::ImportUnsupported {
                token: "this token",
                reason: "it offers neither CKM_RSA_PKCS_OAEP with CKM_RSA_PKCS_KEY_PAIR_GEN nor CKM_AES_CBC_PAD to unwrap with",
            });
        }
        let session = self.session()?;
        let mut refusals = Vec::new();
        for way in ways {
            let mut attempt = 0;
            let result = loop {
                let result = refused(way)
                    .map_err(at(way.operation()))
                    .and_then(|()| match way {
                        Way::Create => self.create_private(&session, key, id, label),
                        Way::RsaOaep => self.unwrap_rsa_oaep(&session, key, id, label),
                        Way::AesCbcPad => self.unwrap_aes_cbc_pad(&session, key, id, label),
                    });
                // A store another process is writing: the same way again, once what a
                // failed attempt may have left is gone.
                match result {
                    Err(WayFailed::Token(_, e)) if busy(&e) && attempt < SETTLE_ATTEMPTS => {
                        attempt += 1;
                        settle(attempt);
                        self.destroy_private(id, label)?;
                    }
                    other => break other,
                }
            };
            match result {
                Ok(handle) => {
                    created.private = Some(handle);
                    self.check_kept(
                        handle,
                        &[
                            Attribute::Class(ObjectClass::PRIVATE_KEY),
                            self.profile().found_by(id, label),
                        ],
                        "the private key",
                    )?;
                    fault("private-key")?;
                    return Ok(match way {
                        Way::Create => ImportMethod::Create,
                        Way::RsaOaep | Way::AesCbcPad => ImportMethod::Unwrap,
                    });
                }
                // The RSA-OAEP unwrap is tried first only where a token offers it, and
                // tokens differ in how they fail it: any answer moves on (to the ways
                // p8hsm used before it); the others move on only when refused.
                Err(WayFailed::Token(operation, e)) if refuses(&e) || way == Way::RsaOaep => {
                    refusals.push(ck(operation)(e).to_string());
                    // A way that failed may have left a key all the same (a token whose
                    // store was busy): none of the next way's may stand beside it.
                    self.destroy_private(id, label)?;
                }
                Err(WayFailed::Token(operation, e)) => return Err(ck(operation)(e)),
                Err(WayFailed::Other(e)) => return Err(e),
            }
        }
        Err(Error::ImportRefused { tried: refusals })
    }

    /// Destroys what a failed attempt may have left under the import's CKA_ID (or label).
    fn destroy_private(&self, id: &[u8], label: &str) -> Result<(), Error> {
        for left in self.find_objects(&[
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            self.profile().found_by(id, label),
        ])? {
            self.destroy_gone_ok(left)?;
        }
        Ok(())
    }

    fn create_private(
        &self,
        session: &Session,
        key: &P8Key,
        id: &[u8],
        label: &str,
    ) -> Result<ObjectHandle, WayFailed> {
        let mut template =
            WipedTemplate(
                self.profile()
                    .private_template(id, label, true, Some(key.public_key())),
            );
        template
            .0
            .push(Attribute::Value(key.scalar_bytes().to_vec()));
        let created = session.create_object(&template.0);
        drop(template);
        crate::p8::scrub_stack();
        created.map_err(at(Way::Create.operation()))
    }

    /// C_UnwrapKey of the PKCS#8, encrypted on the host with RSA-OAEP (SHA-1 and MGF1-SHA-1,
    /// the parameters every token takes, SoftHSM only these) under the public half of an
    /// RSA key pair the token generates for this import and destroys after it. Only
    /// ciphertext crosses the PKCS#11 interface, so no module buffer (such as p11-kit's
    /// client's) keeps the key.
    fn unwrap_rsa_oaep(
        &self,
        session: &Session,
        key: &P8Key,
        id: &[u8],
        label: &str,
    ) -> Result<ObjectHandle, WayFailed> {
        let (public, private) = session
            .generate_key_pair(
                &Mechanism::RsaPkcsKeyPairGen,
                &[
                    Attribute::Token(false),
                    Attribute::ModulusBits(WRAPPING_RSA_BITS.into()),
                    Attribute::PublicExponent(vec![1, 0, 1]),
                    Attribute::Encrypt(true),
                ],
                &[
                    Attribute::Token(false),
                    Attribute::Private(true),
                    Attribute::Sensitive(true),
                    Attribute::Extractable(false),
                    Attribute::Unwrap(true),
                ],
            )
            .map_err(at(
                "generating the temporary RSA key pair (C_GenerateKeyPair)",
            ))?;
        let public = TemporaryKey {
            session,
            handle: public,
        };
        let private = TemporaryKey {
            session,
            handle: private,
        };
        let attributes = session
            .get_attributes(
                public.handle,
                &[AttributeType::Modulus, AttributeType::PublicExponent],
            )
            .map_err(at(
                "reading the temporary RSA public key (C_GetAttributeValue)",
            ))?;
        let (mut modulus, mut exponent) = (None, None);
        for attribute in attributes {
            match attribute {
                Attribute::Modulus(bytes) => modulus = Some(BigUint::from_bytes_be(&bytes)),
                Attribute::PublicExponent(bytes) => exponent = Some(BigUint::from_bytes_be(&bytes)),
                _ => {}
            }
        }
        let (Some(modulus), Some(exponent)) = (modulus, exponent) else {
            return Err(WayFailed::Other(Error::ImportCheck {
                reason: "the token did not return the temporary RSA public key".to_owned(),
            }));
        };
        let pkcs8 = key.pkcs8_der().map_err(Error::from)?;
        let wrapped = RsaPublicKey::new(modulus, exponent)
            .and_then(|rsa| rsa.encrypt(&mut OsRng, Oaep::new::<Sha1>(), &pkcs8))
            .map_err(Error::internal)?;
        drop(pkcs8);
        let params = PkcsOaepParams::new(
            MechanismType::SHA1,
            PkcsMgfType::MGF1_SHA1,
            PkcsOaepSource::empty(),
        );
        let template = self
            .profile()
            .private_template(id, label, false, Some(key.public_key()));
        session
            .unwrap_key(
                &Mechanism::RsaPkcsOaep(params),
                private.handle,
                &wrapped,
                &template,
            )
            .map_err(at(Way::RsaOaep.operation()))
    }

    /// C_UnwrapKey with CKM_AES_CBC_PAD after encrypting the PKCS#8 inside the token under
    /// an AES key generated there, as Luna-style tokens want: the PKCS#8 crosses the
    /// PKCS#11 interface into C_Encrypt.
    fn unwrap_aes_cbc_pad(
        &self,
        session: &Session,
        key: &P8Key,
        id: &[u8],
        label: &str,
    ) -> Result<ObjectHandle, WayFailed> {
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
                .map_err(at("generating the temporary AES key (C_GenerateKey)"))?,
        };
        let mut iv = [0u8; 16];
        OsRng.fill_bytes(&mut iv);
        let encrypted = session
            .encrypt(
                &Mechanism::AesCbcPad(iv),
                kek.handle,
                &key.pkcs8_der().map_err(Error::from)?,
            )
            .map_err(at("encrypting the PKCS#8 in the token (C_Encrypt)"))?;
        let template = self
            .profile()
            .private_template(id, label, false, Some(key.public_key()));
        session
            .unwrap_key(&Mechanism::AesCbcPad(iv), kek.handle, &encrypted, &template)
            .map_err(at(Way::AesCbcPad.operation()))
    }

    /// Adds the public key object and the metadata, then proves the import.
    fn finish(
        &self,
        key: &P8Key,
        id: &[u8],
        label: &str,
        metadata: Option<(&[u8], &str)>,
        created: &mut Created,
    ) -> Result<(), Error> {
        let private_key = created
            .private
            .ok_or_else(|| Error::internal("no private key to finish"))?;
        if let Some(template) =
            self.profile()
                .public_template(id, label, encode_ec_point(key.public_key()))
        {
            created.public = Some(self.create_checked(&template, "the public key")?);
        }
        fault("public-key")?;
        if let Some((bytes, recorded_as)) = metadata {
            created.metadata = Some(self.create_metadata(recorded_as, bytes)?);
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
        // A token that took the key but cannot sign with it failed the check, as one whose
        // signature does not verify did.
        let signature = refused_sign()
            .and_then(|()| self.sign_digest(private_key, &Sha256::digest(probe)))
            .map_err(|e| match e {
                Error::Pkcs11(_) => Error::ImportCheck {
                    reason: format!("the token cannot sign with the key it took ({e})"),
                },
                other => other,
            })?;
        check(
            VerifyingKey::from(key.public_key())
                .verify(&probe, &signature)
                .is_ok(),
            "a probe signed by the token does not verify with the .p8's public key",
        )
    }
}

/// Refuses a label that is empty, over 64 bytes, or hides characters.
pub(super) fn check_label(label: &str) -> Result<(), Error> {
    if label.is_empty() || label.len() > 64 || label.chars().any(crate::ids::hidden) {
        return Err(Error::InvalidLabel {
            value: printable(label),
        });
    }
    // p8hsm names its own unfinished work so: a key labelled so would be taken for it.
    if label.starts_with(super::claim::PENDING) {
        return Err(Error::ReservedLabel {
            value: printable(label),
        });
    }
    Ok(())
}

/// Return values by which a token says it will not take the key this way (a plaintext
/// private key, or this unwrapping); the next way is tried.
fn refuses(e: &CkError) -> bool {
    matches!(e, CkError::Pkcs11(rv, _) if refusal(*rv))
}

/// Fault injection for the tests of the cleanup and fallback paths: with the
/// `fault-injection` feature (never in release builds), `P8HSM_FAULT_AFTER=<step>` fails
/// the import right after that step, and `P8HSM_FAULT_REFUSE=create,rsa-oaep,aes-cbc-pad`
/// (any of them) makes the token seem to refuse those ways of putting the key in (and
/// `sign`, to sign with it: see [`refused_sign`]).
#[cfg(feature = "fault-injection")]
fn fault(step: &str) -> Result<(), Error> {
    // P8HSM_FAULT_KILL=<step> ends the process there, as a SIGKILL would: no clean-up.
    if std::env::var("P8HSM_FAULT_KILL").is_ok_and(|at| at == step) {
        std::process::abort();
    }
    match std::env::var("P8HSM_FAULT_AFTER") {
        Ok(at) if at == step => Err(Error::Internal(format!("fault injected after {step}"))),
        _ => Ok(()),
    }
}

#[cfg(feature = "fault-injection")]
fn refused(way: Way) -> Result<(), CkError> {
    let name = match way {
        Way::Create => "create",
        Way::RsaOaep => "rsa-oaep",
        Way::AesCbcPad => "aes-cbc-pad",
    };
    let refuse = std::env::var("P8HSM_FAULT_REFUSE").unwrap_or_default();
    if refuse.split(',').any(|w| w == name) {
        use cryptoki::context::Function;
        // The RSA-OAEP unwrap fails with an error that is not a refusal: auto moves on
        // from it whatever the token answers.
        return Err(match way {
            Way::Create => CkError::Pkcs11(
                cryptoki::error::RvError::TemplateInconsistent,
                Function::CreateObject,
            ),
            Way::RsaOaep => CkError::Pkcs11(
                cryptoki::error::RvError::FunctionFailed,
                Function::UnwrapKey,
            ),
            Way::AesCbcPad => CkError::Pkcs11(
                cryptoki::error::RvError::TemplateInconsistent,
                Function::UnwrapKey,
            ),
        });
    }
    Ok(())
}

/// `P8HSM_FAULT_REFUSE=sign` makes the token seem to take the key but refuse to sign
/// with it.
#[cfg(feature = "fault-injection")]
fn refused_sign() -> Result<(), Error> {
    let refuse = std::env::var("P8HSM_FAULT_REFUSE").unwrap_or_default();
    if refuse.split(',').any(|w| w == "sign") {
        use cryptoki::context::Function;
        return Err(ck("C_Sign")(CkError::Pkcs11(
            cryptoki::error::RvError::KeyFunctionNotPermitted,
            Function::Sign,
        )));
    }
    Ok(())
}

#[cfg(not(feature = "fault-injection"))]
fn refused_sign() -> Result<(), Error> {
    Ok(())
}

#[cfg(not(feature = "fault-injection"))]
fn fault(_: &str) -> Result<(), Error> {
    Ok(())
}

#[cfg(not(feature = "fault-injection"))]
fn refused(_: Way) -> Result<(), CkError> {
    Ok(())
}
