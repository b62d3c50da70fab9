//! Imports that race, and imports that are cut short.
//!
//! PKCS#11 has no "create unless it exists", and SoftHSM does not keep CKA_IDs unique,
//! so two imports of one key ID (on one host or two: the token is all they share) would
//! both succeed. An import therefore:
//!
//! 1. records a *claim* on the key ID — a data object (CKA_APPLICATION `p8hsm-import`,
//!    CKA_LABEL the key ID, CKA_VALUE a random nonce);
//! 2. creates its objects under a *pending* CKA_ID and CKA_LABEL (`p8hsm-pending-<nonce>`),
//!    which no look-up by key ID ever finds, so an import killed halfway leaves objects
//!    that are recognisably unfinished and never sign;
//! 3. proves them, then *contends*: it wins only when no finished key has the key ID and
//!    its claim is the only one, twice in a row [`SETTLE`] apart; while other claims are
//!    there, the claim with the smallest nonce waits and the others give up;
//! 4. the winner renames its objects to the key ID and its label, reads them back, and
//!    removes its claim; a loser destroys its objects and its claim.
//!
//! Any two imports see each other's claims before either renames (each makes its claim
//! before it contends), so exactly one of them wins; the one claim that a crashed import
//! leaves makes later imports of that key ID give up after [`CONTEND_FOR`], naming it.
//! `p8hsm doctor` lists unfinished objects and claims; `p8hsm delete --unfinished`
//! removes them.

use std::time::{Duration, Instant};

use cryptoki::object::{Attribute, AttributeType, ObjectClass, ObjectHandle};
use p256::elliptic_curve::rand_core::{OsRng, RngCore};

use super::context::{busy_store, ck, settle, SETTLE_ATTEMPTS};
use super::token::Token;
use crate::error::Cause;
use crate::{Error, KeyId};

/// CKA_ID and CKA_LABEL of the objects of an import that has not finished.
pub(crate) const PENDING: &str = "p8hsm-pending-";
/// CKA_APPLICATION of the claims.
const CLAIM_APPLICATION: &[u8] = b"p8hsm-import";
/// How long apart the checks of a contending import are.
const SETTLE: Duration = Duration::from_millis(100);
/// How long an import waits for other claims on its key ID to go.
const CONTEND_FOR: Duration = Duration::from_secs(10);

/// One import's claim on a key ID, and the pending names of its objects. Found again by
/// its nonce: [`Token::refresh`] invalidates object handles.
pub(super) struct Claim {
    nonce: [u8; 16],
    key_id: KeyId,
    /// CKA_ID and CKA_LABEL of the import's objects until it wins.
    pub(super) pending: String,
}

/// An object an import left unfinished, or a claim no import holds any more.
#[derive(Debug, Clone)]
pub struct Unfinished {
    /// What it is: `a private key`, `a public key`, `key metadata`, `a claim on key ID …`.
    pub what: String,
    /// Its CKA_LABEL.
    pub label: String,
    handle: ObjectHandle,
}

/// The error for an object the token said it made but does not show.
fn lost(what: &str) -> Error {
    Error::ImportCheck {
        reason: format!("the token did not keep {what} it said it created (is its storage full?)"),
    }
}

/// What finds the object `template` describes: its class, and its CKA_ID or (for data
/// objects) its CKA_LABEL.
fn identity(template: &[Attribute]) -> Vec<Attribute> {
    let name = template
        .iter()
        .find(|a| matches!(a, Attribute::Id(_)))
        .or_else(|| template.iter().find(|a| matches!(a, Attribute::Label(_))));
    let class = template.iter().find(|a| matches!(a, Attribute::Class(_)));
    class.into_iter().chain(name).cloned().collect()
}

/// Whether `name` (a CKA_ID or CKA_LABEL) is that of an unfinished import: the pending
/// prefix and the 32 hex digits of a claim's nonce, exactly as an import names its objects.
pub(crate) fn is_pending(name: &[u8]) -> bool {
    name.strip_prefix(PENDING.as_bytes()).is_some_and(|nonce| {
        nonce.len() == 32 && nonce.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    })
}

impl Token {
    /// Records a claim on `key_id` and reads it back.
    pub(super) fn claim(&self, key_id: &KeyId) -> Result<Claim, Error> {
        let mut nonce = [0u8; 16];
        OsRng.fill_bytes(&mut nonce);
        let pending = format!("{PENDING}{}", base16ct::lower::encode_string(&nonce));
        let template = [
            Attribute::Class(ObjectClass::DATA),
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Application(CLAIM_APPLICATION.to_vec()),
            Attribute::Label(key_id.as_str().as_bytes().to_vec()),
            Attribute::Value(nonce.to_vec()),
        ];
        // Found again by its nonce: other imports' claims carry the same label.
        let identity = [
            Attribute::Class(ObjectClass::DATA),
            Attribute::Application(CLAIM_APPLICATION.to_vec()),
            Attribute::Value(nonce.to_vec()),
        ];
        self.create_identified(&template, &identity, "the claim on the key ID")?;
        Ok(Claim {
            nonce,
            key_id: key_id.clone(),
            pending,
        })
    }

    /// Waits until this import may finish: no finished key with CKA_ID `id`, and no
    /// other claim on the key ID, twice in a row. Gives up — the caller rolls back —
    /// when another import finished first, or holds a smaller claim for too long.
    ///
    /// Each look but the first reads the token anew ([`Token::refresh`]): SoftHSM's processes can miss
    /// each other's new objects (two that add one at once may leave its store's
    /// generation counter as if only one had), and a stale view would let both win.
    pub(super) fn contend(&self, claim: &Claim, id: &[u8]) -> Result<(), Error> {
        let deadline = Instant::now() + CONTEND_FOR;
        let mut alone = 0;
        let mut first = true;
        loop {
            // Every look after the first reads the token anew: the look that decides, and
            // the looks waiting for another claim to go (tpm2-pkcs11 reads its store only
            // when initialized, so a claim removed since stays in its view until then).
            if !first {
                self.refresh()?;
            }
            first = false;
            if !self
                .find_objects(&[
                    Attribute::Class(ObjectClass::PRIVATE_KEY),
                    Attribute::Id(id.to_vec()),
                ])?
                .is_empty()
            {
                return Err(Error::ImportContended {
                    key_id: claim.key_id.to_string(),
                    reason: format!("another import of key ID {} finished first", claim.key_id),
                });
            }
            let others = self
                .claims(Some(&claim.key_id))?
                .into_iter()
                .map(|(_, nonce)| nonce)
                .filter(|nonce| nonce[..] != claim.nonce[..])
                .collect::<Vec<_>>();
            if others.is_empty() {
                alone += 1;
                if alone == 2 {
                    return Ok(());
                }
            } else {
                alone = 0;
                if others
                    .iter()
                    .any(|other| other.as_slice() < &claim.nonce[..])
                {
                    return Err(Error::ImportContended {
                        key_id: claim.key_id.to_string(),
                        reason: format!(
                            "another import of key ID {} is under way (or was interrupted)",
                            claim.key_id
                        ),
                    });
                }
            }
            if Instant::now() >= deadline {
                return Err(Error::ImportContended {
                    key_id: claim.key_id.to_string(),
                    reason: format!(
                        "another import's claim on key ID {} stayed for {} s",
                        claim.key_id,
                        CONTEND_FOR.as_secs()
                    ),
                });
            }
            std::thread::sleep(SETTLE);
        }
    }

    /// Whether `object` is a claim (which an import's duplicate check passes over: the
    /// contention decides about claims).
    pub(super) fn is_claim(&self, object: ObjectHandle) -> bool {
        matches!(
            self.attribute(object, AttributeType::Application),
            Ok(Some(Attribute::Application(app))) if app == CLAIM_APPLICATION
        )
    }

    /// Removes the claim (after the import won, or gave up).
    pub(super) fn release(&self, claim: Claim) -> Result<(), Error> {
        let mine = || -> Result<Vec<ObjectHandle>, Error> {
            Ok(self
                .claims(Some(&claim.key_id))?
                .into_iter()
                .filter(|(_, nonce)| nonce[..] == claim.nonce[..])
                .map(|(handle, _)| handle)
                .collect())
        };
        // Looked for again with the token read anew: a store another process was
        // writing may show the claim late.
        for handle in mine()? {
            self.destroy_gone_ok(handle)?;
        }
        self.refresh()?;
        for handle in mine()? {
            self.destroy_gone_ok(handle)?;
        }
        Ok(())
    }

    /// The objects an import made under its claim's pending name, by class.
    pub(super) fn pending_objects(
        &self,
        claim: &Claim,
    ) -> Result<Vec<(ObjectHandle, ObjectClass)>, Error> {
        let mut found = Vec::new();
        for class in [
            ObjectClass::PRIVATE_KEY,
            ObjectClass::PUBLIC_KEY,
            ObjectClass::DATA,
        ] {
            for handle in self.find_objects(&[
                Attribute::Class(class),
                Attribute::Label(claim.pending.as_bytes().to_vec()),
            ])? {
                found.push((handle, class));
            }
        }
        Ok(found)
    }

    /// The claims on `key_id`, as [`Claim`]s whose pending objects can be found.
    pub(super) fn claims_on(&self, key_id: &KeyId) -> Result<Vec<Claim>, Error> {
        Ok(self
            .claims(Some(key_id))?
            .into_iter()
            .filter_map(|(_, nonce)| {
                let nonce: [u8; 16] = nonce.try_into().ok()?;
                Some(Claim {
                    pending: format!("{PENDING}{}", base16ct::lower::encode_string(&nonce)),
                    nonce,
                    key_id: key_id.clone(),
                })
            })
            .collect())
    }

    /// The claims on `key_id` (or on any key ID): their handles and nonces.
    fn claims(&self, key_id: Option<&KeyId>) -> Result<Vec<(ObjectHandle, Vec<u8>)>, Error> {
        let mut template = vec![
            Attribute::Class(ObjectClass::DATA),
            Attribute::Application(CLAIM_APPLICATION.to_vec()),
        ];
        if let Some(key_id) = key_id {
            template.push(Attribute::Label(key_id.as_str().as_bytes().to_vec()));
        }
        let mut claims = Vec::new();
        for handle in self.find_objects(&template)? {
            // A claim destroyed between the search and the read is gone: skip it.
            if let Ok(Some(Attribute::Value(nonce))) = self.attribute(handle, AttributeType::Value)
            {
                claims.push((handle, nonce));
            }
        }
        Ok(claims)
    }

    /// Creates an object and reads it back — by its handle and by a search for its
    /// CKA_ID or CKA_LABEL — so that a token that fails a write without saying so (SoftHSM
    /// on a full disk) is caught: success is never reported for an object that is not there.
    pub(super) fn create_checked(
        &self,
        template: &[Attribute],
        what: &'static str,
    ) -> Result<ObjectHandle, Error> {
        self.create_identified(template, &identity(template), what)
    }

    /// [`Token::create_checked`], with what finds the object when the token may have made
    /// it without saying so.
    fn create_identified(
        &self,
        template: &[Attribute],
        search: &[Attribute],
        what: &'static str,
    ) -> Result<ObjectHandle, Error> {
        let mut attempt = 0;
        let handle = loop {
            match self.session()?.create_object(template).map_err(ck(what)) {
                Ok(handle) => break handle,
                Err(e) if busy_store(&e) && attempt < SETTLE_ATTEMPTS => {
                    attempt += 1;
                    settle(attempt);
                    // The store was busy: the object may have been made all the same.
                    if let Some(handle) = self.find_objects(search)?.into_iter().next() {
                        break handle;
                    }
                }
                Err(e) => return Err(e),
            }
        };
        self.found_again(handle, search, what)?;
        Ok(handle)
    }

    /// Reads back the object `handle`, which `template` describes: its class and its
    /// CKA_ID (or CKA_LABEL) must be there, and a search for them must find it.
    pub(super) fn check_kept(
        &self,
        handle: ObjectHandle,
        template: &[Attribute],
        what: &'static str,
    ) -> Result<(), Error> {
        self.found_again(handle, &identity(template), what)
    }

    /// The object `handle` can be read, and `search` finds it.
    fn found_again(
        &self,
        handle: ObjectHandle,
        search: &[Attribute],
        what: &'static str,
    ) -> Result<(), Error> {
        let read = self
            .settled(|| {
                self.session()?
                    .get_attributes(handle, &[AttributeType::Class])
                    .map_err(ck("C_GetAttributeValue"))
            })
            .map_err(|_| lost(what))?;
        if read.is_empty() || !self.find_objects(search)?.contains(&handle) {
            return Err(lost(what));
        }
        Ok(())
    }

    /// Renames an import's object from its pending names to `id` and `label`, and reads
    /// it back under them.
    pub(super) fn rename(
        &self,
        handle: ObjectHandle,
        class: ObjectClass,
        id: Option<&[u8]>,
        label: &str,
        what: &'static str,
    ) -> Result<(), Error> {
        let mut template = vec![Attribute::Label(label.as_bytes().to_vec())];
        if let Some(id) = id {
            template.push(Attribute::Id(id.to_vec()));
        }
        self.settled(|| {
            self.session()?
                .update_attributes(handle, &template)
                .map_err(ck(what))
        })?;
        template.push(Attribute::Class(class));
        self.check_kept(handle, &template, what)
    }

    /// Destroys an object; one already gone (or never kept) is not an error.
    pub(super) fn destroy_gone_ok(&self, handle: ObjectHandle) -> Result<(), Error> {
        match self.destroy(handle) {
            Err(Error::Pkcs11(failed)) if failed.cause() == Cause::NoSuchObject => Ok(()),
            other => other,
        }
    }

    /// What unfinished imports left on the token: objects under pending names, and
    /// claims. (A claim of an import under way is listed too: run this when none is.)
    pub fn unfinished(&self) -> Result<Vec<Unfinished>, Error> {
        let mut found = Vec::new();
        for (class, what) in [
            (ObjectClass::PRIVATE_KEY, "a private key"),
            (ObjectClass::PUBLIC_KEY, "a public key"),
            (ObjectClass::DATA, "key metadata"),
        ] {
            for handle in self.find_objects(&[Attribute::Class(class)])? {
                let Ok(Some(Attribute::Label(label))) =
                    self.attribute(handle, AttributeType::Label)
                else {
                    continue;
                };
                // An import names a key's CKA_ID and CKA_LABEL alike: a key whose ID is
                // anything else (a key ID) is no import's unfinished work, whatever its
                // label says.
                let id_too = class == ObjectClass::DATA
                    || matches!(
                        self.attribute(handle, AttributeType::Id),
                        Ok(Some(Attribute::Id(id))) if id == label
                    );
                if is_pending(&label) && id_too {
                    found.push(Unfinished {
                        what: what.to_owned(),
                        label: String::from_utf8_lossy(&label).into_owned(),
                        handle,
                    });
                }
            }
        }
        for (handle, _) in self.claims(None)? {
            let label = match self.attribute(handle, AttributeType::Label)? {
                Some(Attribute::Label(label)) => String::from_utf8_lossy(&label).into_owned(),
                _ => String::new(),
            };
            found.push(Unfinished {
                what: format!("a claim on key ID {label}"),
                label,
                handle,
            });
        }
        Ok(found)
    }

    /// Destroys what [`Token::unfinished`] lists; returns how many objects went.
    pub fn delete_unfinished(&self) -> Result<usize, Error> {
        let unfinished = self.unfinished()?;
        for object in &unfinished {
            self.destroy_gone_ok(object.handle)?;
        }
        Ok(unfinished.len())
    }
}
