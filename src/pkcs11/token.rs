//! A logged-in token: found by [`TokenLocation`], opened with the user PIN, cheap to clone
//! and shared between threads.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use cryptoki::object::{Attribute, AttributeType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, SessionState};
use cryptoki::slot::{Limit, Slot};
use secrecy::SecretString;

use super::context::{
    busy_store, ck, context, reinitialize, settle, transient, Module, SETTLE_ATTEMPTS,
};
use super::profile::Profile;
use super::session::{Lease, OpError, Sessions};
use super::slot::{find_slot_settled, unpadded, TokenLocation, TokenSelector};
use super::uri;
use crate::{Error, KeyId};

/// A logged-in token: a pool of sessions on the slot whose token the selector matched,
/// and the PIN, kept in a secret type, to log in again after the device comes back.
///
/// `Token` is cheap to clone (the clones share one pool) and `Send + Sync`: threads
/// share it and sign in parallel.
#[derive(Clone)]
pub struct Token(Arc<Inner>);

struct Inner {
    sessions: Sessions,
    module: PathBuf,
    /// The token's own label, manufacturer, model and serial, for URIs.
    identity: TokenSelector,
    label: String,
    profile: Profile,
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token")
            .field("label", &self.0.label)
            .finish()
    }
}

/// A token found, not yet logged in to: its label is known, so a PIN prompt can name it.
pub struct FoundToken {
    pkcs11: Module,
    spec: TokenLocation,
    slot: Slot,
    identity: TokenSelector,
    label: String,
    profile: Profile,
    limit: usize,
}

impl FoundToken {
    /// The token's label.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// Logs in as the user with `pin`: exactly one C_Login attempt, never retried,
    /// since hardware tokens lock after repeated failures.
    pub fn login(self, pin: SecretString) -> Result<Token, Error> {
        // A software token read while another process rewrote its store can seem to
        // have no user PIN, or fail with CKR_GENERAL_ERROR: read it anew and try again.
        // A refused PIN is never tried again.
        let mut slot = self.slot;
        let mut attempt = 0;
        let sessions = loop {
            match Sessions::login(
                self.pkcs11.clone(),
                self.spec.selector.clone(),
                self.profile,
                slot,
                self.limit,
                pin.clone(),
            ) {
                Ok(sessions) => break sessions,
                Err(e) if transient(&e) && attempt < SETTLE_ATTEMPTS => {
                    attempt += 1;
                    settle(attempt);
                    reinitialize(&self.pkcs11).map_err(ck("C_Initialize"))?;
                    slot = find_slot_settled(&self.pkcs11, &self.spec.selector)?.0;
                }
                Err(e) => return Err(e),
            }
        };
        Ok(Token(Arc::new(Inner {
            sessions,
            module: self.spec.module,
            identity: self.identity,
            label: self.label,
            profile: self.profile,
        })))
    }
}

impl Token {
    /// Loads the module and finds the one token the spec's selector matches, without
    /// logging in. The vendor [`Profile`] is the spec's, or detected from the module
    /// and the token.
    pub fn find(spec: &TokenLocation) -> Result<FoundToken, Error> {
        let pkcs11 = context(&spec.module, spec.module_args.as_ref())?;
        let (slot, info) = find_slot_settled(&pkcs11, &spec.selector)?;
        let label = unpadded(info.label()).to_owned();
        let identity = TokenSelector {
            label: Some(label.clone()),
            manufacturer: Some(unpadded(info.manufacturer_id()).to_owned()),
            model: Some(unpadded(info.model()).to_owned()),
            serial: Some(unpadded(info.serial_number()).to_owned()),
            slot_id: None,
        };
        let limit = match info.max_session_count() {
            Limit::Max(n) if n > 0 => usize::try_from(n).unwrap_or(usize::MAX),
            _ => usize::MAX,
        };
        let profile = spec.profile.unwrap_or_else(|| {
            Profile::detect(
                &spec.module,
                unpadded(info.manufacturer_id()),
                unpadded(info.model()),
            )
        });
        Ok(FoundToken {
            pkcs11,
            spec: spec.clone(),
            slot,
            identity,
            label,
            profile,
            limit,
        })
    }

    /// [`Token::find`], then [`FoundToken::login`].
    pub fn open(spec: &TokenLocation, pin: SecretString) -> Result<Token, Error> {
        Token::find(spec)?.login(pin)
    }

    /// The token's label.
    pub fn label(&self) -> &str {
        &self.0.label
    }

    /// The vendor profile in use.
    pub fn profile(&self) -> Profile {
        self.0.profile
    }

    /// The module the token was opened through.
    pub fn module(&self) -> &Path {
        &self.0.module
    }

    /// At most `cap` sessions at once (never more than the token allows): how many
    /// threads can sign in parallel. The default is 16.
    pub fn with_max_sessions(self, cap: usize) -> Self {
        self.0.sessions.set_max(cap);
        self
    }

    /// How many sessions the pool may hold.
    pub fn max_sessions(&self) -> usize {
        self.0.sessions.max()
    }

    /// How many times it has logged in (C_Login that succeeded), the first time included.
    pub fn logins(&self) -> u64 {
        self.0.sessions.logins()
    }

    /// Whether the token answers with a logged-in session — after logging in again if
    /// it forgot the login or went away and came back: a readiness probe.
    pub fn ready(&self) -> bool {
        self.with_recovery(|session, _| {
            let info = session
                .get_session_info()
                .map_err(|e| OpError::Call("C_GetSessionInfo", e))?;
            match info.session_state() {
                SessionState::RwUser | SessionState::RoUser => Ok(()),
                _ => Err(OpError::Call(
                    "C_GetSessionInfo",
                    cryptoki::error::Error::Pkcs11(
                        cryptoki::error::RvError::UserNotLoggedIn,
                        cryptoki::context::Function::GetSessionInfo,
                    ),
                )),
            }
        })
        .is_ok()
    }

    pub(super) fn pkcs11(&self) -> &Module {
        self.0.sessions.pkcs11()
    }

    pub(super) fn slot(&self) -> Slot {
        self.0.sessions.slot()
    }

    /// Whether the token says it offers `mechanism` for what `needs` asks of it.
    pub(super) fn offers(
        &self,
        mechanism: cryptoki::mechanism::MechanismType,
        needs: fn(&cryptoki::mechanism::MechanismInfo) -> bool,
    ) -> bool {
        self.pkcs11()
            .get_mechanism_info(self.slot(), mechanism)
            .is_ok_and(|info| needs(&info))
    }

    /// Reads the token anew, so that a software token (SoftHSM) sees what other
    /// processes wrote to its store since it last looked: the pool's sessions close, the
    /// module is finalized and initialized again, and the kept PIN logs in again. Every
    /// object handle held before is invalid after it.
    pub(super) fn refresh(&self) -> Result<(), Error> {
        self.0.sessions.refresh()
    }

    /// A session from the pool.
    pub(super) fn session(&self) -> Result<Lease<'_>, Error> {
        self.0.sessions.lease()
    }

    /// Runs `op` on a pooled session, once more on a fresh one if a fresh one can cure
    /// its failure (see [`Sessions::with_recovery`]).
    pub(super) fn with_recovery<T>(
        &self,
        op: impl FnMut(&Session, bool) -> Result<T, OpError>,
    ) -> Result<T, Error> {
        self.0.sessions.with_recovery(op)
    }

    /// A URI naming an object on this token, with the module's path and no PIN.
    pub(super) fn object_uri(
        &self,
        id: &[u8],
        label: &str,
        object_type: uri::ObjectType,
    ) -> String {
        let identity = &self.0.identity;
        uri::Pkcs11Uri {
            token: identity.label.clone(),
            manufacturer: identity.manufacturer.clone(),
            model: identity.model.clone(),
            serial: identity.serial.clone(),
            object: Some(label.to_owned()),
            id: Some(id.to_vec()),
            object_type: Some(object_type),
            module_path: Some(self.0.module.clone()),
            ..uri::Pkcs11Uri::default()
        }
        .to_string()
    }

    /// Object handles matching `template`.
    pub(super) fn find_objects(&self, template: &[Attribute]) -> Result<Vec<ObjectHandle>, Error> {
        self.settled(|| find(&*self.session()?, template).map_err(OpError::into_error))
    }

    /// Runs `op`, and again after a pause while it fails as calls on a software token
    /// fail while another process rewrites its store (see [`busy_store`]).
    pub(super) fn settled<T>(&self, mut op: impl FnMut() -> Result<T, Error>) -> Result<T, Error> {
        let mut attempt = 0;
        loop {
            match op() {
                Err(e) if busy_store(&e) && attempt < SETTLE_ATTEMPTS => {
                    attempt += 1;
                    settle(attempt);
                }
                other => return other,
            }
        }
    }

    /// The one private key whose CKA_ID is the key ID.
    pub(super) fn private_key(&self, key_id: &KeyId) -> Result<ObjectHandle, Error> {
        private_key(&*self.session()?, key_id).map_err(OpError::into_error)
    }

    /// The public key objects whose CKA_ID is `id` or, as [`private_key`] finds private
    /// keys, whose label is when none has it as CKA_ID.
    pub(super) fn public_objects(&self, id: &[u8]) -> Result<Vec<ObjectHandle>, Error> {
        let by =
            |attribute| self.find_objects(&[Attribute::Class(ObjectClass::PUBLIC_KEY), attribute]);
        let found = by(Attribute::Id(id.to_vec()))?;
        // A label is text: some tokens (Kryoptic) refuse to search for other bytes.
        if !found.is_empty() || std::str::from_utf8(id).is_err() {
            return Ok(found);
        }
        by(Attribute::Label(id.to_vec()))
    }

    /// One attribute of an object, `None` where the token does not reveal it.
    pub(super) fn attribute(
        &self,
        object: ObjectHandle,
        kind: AttributeType,
    ) -> Result<Option<Attribute>, Error> {
        self.settled(|| {
            Ok(self
                .session()?
                .get_attributes(object, &[kind])
                .map_err(ck("C_GetAttributeValue"))?
                .into_iter()
                .next())
        })
    }
}

pub(super) fn find(
    session: &Session,
    template: &[Attribute],
) -> Result<Vec<ObjectHandle>, OpError> {
    session
        .find_objects(template)
        .map_err(|e| OpError::Call("C_FindObjects", e))
}

/// The one private key whose CKA_ID is the key ID or, on tokens whose CKA_ID cannot
/// hold it (YubiHSM 2's are 2 bytes), whose CKA_LABEL is.
pub(super) fn private_key(session: &Session, key_id: &KeyId) -> Result<ObjectHandle, OpError> {
    let by = |attribute: Attribute| {
        find(
            session,
            &[Attribute::Class(ObjectClass::PRIVATE_KEY), attribute],
        )
    };
    let bytes = key_id.as_str().as_bytes().to_vec();
    let mut found = by(Attribute::Id(bytes.clone()))?;
    if found.is_empty() {
        found = by(Attribute::Label(bytes))?;
    }
    match found.as_slice() {
        [handle] => Ok(*handle),
        [] => Err(Error::KeyNotFound {
            key_id: key_id.to_string(),
        }
        .into()),
        many => Err(Error::KeyAmbiguous {
            key_id: key_id.to_string(),
            count: many.len(),
        }
        .into()),
    }
}
