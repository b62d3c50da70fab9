//! Keys born in the token: `C_GenerateKeyPair` makes a P-256 pair whose private half
//! never exists outside the token, under a label and an *unassigned* CKA_ID that no
//! look-up by key ID finds; once Apple has shown the key ID for the uploaded public
//! key, [`Token::assign`] gives the pair that ID (and its metadata).

use cryptoki::mechanism::{Mechanism, MechanismInfo, MechanismType};
use cryptoki::object::{Attribute, AttributeType, ObjectClass, ObjectHandle};
use p256::ecdsa::signature::Verifier;
use p256::ecdsa::VerifyingKey;
use p256::elliptic_curve::rand_core::{OsRng, RngCore};
use p256::PublicKey;
use sha2::{Digest, Sha256};

use super::context::ck;
use super::ec::decode_ec_point;
use super::import::check_label;
use super::token::Token;
use crate::ids::printable;
use crate::{fingerprint, Error, KeyId};

/// The CKA_ID prefix of generated keys that await their key ID.
pub(crate) const UNASSIGNED: &str = "p8hsm-unassigned-";

/// Whether `id` (a CKA_ID) is that of a generated key awaiting its key ID.
pub(crate) fn is_unassigned(id: &[u8]) -> bool {
    id.starts_with(UNASSIGNED.as_bytes())
}

/// A key pair generated in the token.
#[derive(Debug, Clone)]
pub struct Generated {
    /// CKA_LABEL.
    pub label: String,
    /// The public key, to give Apple.
    pub public_key: PublicKey,
    /// SHA-256 fingerprint of the public key's SPKI DER.
    pub fingerprint: String,
}

impl Token {
    /// Generates a P-256 key pair in the token: the private key a sensitive,
    /// never-extractable, sign-only token object, the public key beside it, both labelled
    /// `label` and awaiting their key ID ([`Token::assign`]). Refuses, generating nothing,
    /// a label an object already has. Proves the pair — the token reports the private key
    /// as generated there (CKA_LOCAL), always sensitive and never extractable, and a
    /// probe it signs verifies with the public key — or destroys it.
    pub fn generate(&self, label: &str) -> Result<Generated, Error> {
        let profile = self.profile();
        if !profile.renames() {
            return Err(Error::KeygenUnsupported {
                token: "this token",
                reason: "its objects keep the ID they are made with, and Apple shows the key ID \
                         only after the public key is uploaded: generate the key with the \
                         vendor's tool under the key ID, then sign with p8hsm",
            });
        }
        if !self.offers(
            MechanismType::ECC_KEY_PAIR_GEN,
            MechanismInfo::generate_key_pair,
        ) || !self.offers(MechanismType::ECDSA, MechanismInfo::sign)
        {
            return Err(Error::KeygenUnsupported {
                token: "this token",
                reason: "it does not offer both CKM_EC_KEY_PAIR_GEN and CKM_ECDSA for \
                         signing: choose a token that makes and signs with P-256 keys",
            });
        }
        check_label(label)?;
        if label.parse::<KeyId>().is_ok() {
            return Err(Error::InvalidId {
                what: "label",
                value: printable(label),
                rule: "a generated key's label must not look like a key ID, which p8hsm would \
                       take it for",
            });
        }
        self.check_label_free(label)?;
        let mut nonce = [0u8; 16];
        OsRng.fill_bytes(&mut nonce);
        let id = format!("{UNASSIGNED}{}", base16ct::lower::encode_string(&nonce));
        let private_template = profile.private_template(id.as_bytes(), label, false, None);
        let public_template: Vec<Attribute> = profile
            .public_template(id.as_bytes(), label, Vec::new())
            .unwrap_or_default()
            .into_iter()
            .filter(|a| !matches!(a, Attribute::EcPoint(_)))
            .collect();
        let (public, private) = self.settled(|| {
            self.session()?
                .generate_key_pair(
                    &Mechanism::EccKeyPairGen,
                    &public_template,
                    &private_template,
                )
                .map_err(ck("generating the key pair (C_GenerateKeyPair)"))
        })?;
        match self.prove_generated(private, public, &id, label) {
            Ok(public_key) => Ok(Generated {
                label: label.to_owned(),
                fingerprint: fingerprint(&public_key),
                public_key,
            }),
            Err(e) => {
                // Found by their unassigned ID: handles may not outlive a read anew.
                for class in [ObjectClass::PUBLIC_KEY, ObjectClass::PRIVATE_KEY] {
                    for object in self
                        .find_objects(&[
                            Attribute::Class(class),
                            Attribute::Id(id.clone().into_bytes()),
                        ])
                        .unwrap_or_default()
                    {
                        let _ = self.destroy_gone_ok(object);
                    }
                }
                Err(e)
            }
        }
    }

    fn prove_generated(
        &self,
        private: ObjectHandle,
        public: ObjectHandle,
        id: &str,
        label: &str,
    ) -> Result<PublicKey, Error> {
        let fail = |reason: &str| Error::KeygenCheck {
            reason: reason.to_owned(),
        };
        for (handle, class, what) in [
            (private, ObjectClass::PRIVATE_KEY, "the private key"),
            (public, ObjectClass::PUBLIC_KEY, "the public key"),
        ] {
            self.check_kept(
                handle,
                &[
                    Attribute::Class(class),
                    Attribute::Id(id.as_bytes().to_vec()),
                ],
                what,
            )?;
        }
        let mut asked = vec![
            AttributeType::Sensitive,
            AttributeType::Extractable,
            AttributeType::Local,
            AttributeType::AlwaysSensitive,
            AttributeType::NeverExtractable,
        ];
        // tpm2-pkcs11 keeps a private key only as a blob the TPM wrapped, and asked for
        // its value prints a warning on stderr: there is no value to reveal.
        if self.profile() != super::profile::Profile::Tpm2 {
            asked.push(AttributeType::Value);
        }
        let attributes = self
            .session()?
            .get_attributes(private, &asked)
            .map_err(ck("reading the key's attributes (C_GetAttributeValue)"))?;
        for (wanted, reason) in [
            (
                Attribute::Sensitive(true),
                "the token does not report the key as sensitive",
            ),
            (
                Attribute::Extractable(false),
                "the token reports the key as extractable",
            ),
            (
                Attribute::Local(true),
                "the token does not report the key as generated in it (CKA_LOCAL)",
            ),
            (
                Attribute::AlwaysSensitive(true),
                "the token does not report the key as always sensitive",
            ),
            (
                Attribute::NeverExtractable(true),
                "the token does not report the key as never extractable",
            ),
        ] {
            if !attributes.contains(&wanted) {
                return Err(fail(reason));
            }
        }
        if attributes.iter().any(|a| matches!(a, Attribute::Value(_))) {
            return Err(fail("the token reveals the private value"));
        }
        let public_key = match self.attribute(public, AttributeType::EcPoint)? {
            Some(Attribute::EcPoint(point)) => decode_ec_point(&point),
            _ => None,
        }
        .ok_or_else(|| fail("the token's public key is not a P-256 point"))?;
        let mut probe = [0u8; 32];
        OsRng.fill_bytes(&mut probe);
        let signature = self.sign_digest(private, &Sha256::digest(probe))?;
        if VerifyingKey::from(&public_key)
            .verify(&probe, &signature)
            .is_err()
        {
            return Err(fail(
                "a probe signed by the token does not verify with its public key",
            ));
        }
        // Two key generations under one label at once: both give up, so that a label
        // names one key. (Read anew: object handles are not valid after this.)
        self.refresh()?;
        let same_label = self.find_objects(&[
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::Label(label.as_bytes().to_vec()),
        ])?;
        if same_label.len() > 1 {
            return Err(Error::DuplicateKey {
                what: format!(
                    "another key labelled {} made at the same time",
                    printable(label)
                ),
            });
        }
        Ok(public_key)
    }

    /// Gives the generated key pair labelled `label` its key ID (and records `metadata`
    /// beside it), after which every command finds it by that ID. Refuses, changing
    /// nothing, a key ID already on the token; two assignments of one key ID at once
    /// contend as imports do, and one wins.
    pub fn assign(
        &self,
        label: &str,
        key_id: &KeyId,
        metadata: Option<&[u8]>,
    ) -> Result<PublicKey, Error> {
        let private = self.generated(label)?;
        let Some(Attribute::Id(pending)) = self.attribute(private, AttributeType::Id)? else {
            return Err(Error::internal("the generated key has no CKA_ID"));
        };
        let id = self.profile().object_id(key_id);
        if !self.find_objects(&[Attribute::Id(id.clone())])?.is_empty() {
            return Err(Error::DuplicateKey {
                what: format!("an object with key ID {key_id}"),
            });
        }
        let claim = self.claim(key_id)?;
        let result = self.assign_claimed(&claim, &pending, &id, key_id, label, metadata);
        let _ = self.release(claim);
        result
    }

    fn assign_claimed(
        &self,
        claim: &super::claim::Claim,
        pending: &[u8],
        id: &[u8],
        key_id: &KeyId,
        label: &str,
        metadata: Option<&[u8]>,
    ) -> Result<PublicKey, Error> {
        self.contend(claim, id)?;
        let recorded = match metadata {
            Some(bytes) => Some(self.create_metadata(key_id.as_str(), bytes)?),
            None => None,
        };
        let renamed = self.rename_pair(pending, id, label);
        match renamed {
            Ok(()) => self.public_key(key_id),
            Err(e) => {
                if let Some(object) = recorded {
                    let _ = self.destroy_gone_ok(object);
                }
                // What was renamed goes back to awaiting its key ID.
                let _ = self.rename_pair(id, pending, label);
                Err(e)
            }
        }
    }

    /// Gives the public, then the private key whose CKA_ID is `from` the CKA_ID `to`
    /// (the label stays), read back under it.
    fn rename_pair(&self, from: &[u8], to: &[u8], label: &str) -> Result<(), Error> {
        for (class, what) in [
            (ObjectClass::PUBLIC_KEY, "the public key"),
            (ObjectClass::PRIVATE_KEY, "the private key"),
        ] {
            for handle in
                self.find_objects(&[Attribute::Class(class), Attribute::Id(from.to_vec())])?
            {
                self.rename(handle, class, Some(to), label, what)?;
            }
        }
        Ok(())
    }

    /// The one generated private key labelled `label` that awaits its key ID.
    fn generated(&self, label: &str) -> Result<ObjectHandle, Error> {
        let labelled = self.find_objects(&[
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::Label(label.as_bytes().to_vec()),
        ])?;
        let mut waiting = Vec::new();
        let mut assigned = None;
        for handle in labelled {
            match self.attribute(handle, AttributeType::Id)? {
                Some(Attribute::Id(id)) if is_unassigned(&id) => waiting.push(handle),
                Some(Attribute::Id(id)) => assigned = Some(String::from_utf8_lossy(&id).into()),
                _ => {}
            }
        }
        match (waiting.as_slice(), assigned) {
            ([one], _) => Ok(*one),
            ([], Some(key_id)) => Err(Error::AlreadyAssigned {
                label: printable(label),
                key_id,
            }),
            ([], None) => Err(Error::NotGenerated {
                label: printable(label),
            }),
            (many, _) => Err(Error::DuplicateKey {
                what: format!(
                    "{} generated keys labelled {}",
                    many.len(),
                    printable(label)
                ),
            }),
        }
    }
}
