//! PKCS#11: loading a module, selecting a token by label, logging in once, and the
//! key operations p8hsm needs. Knows nothing about Apple's token kinds.
//!
//! One PKCS#11 context per module per process (C_Initialize once; never finalized, so
//! several [`Token`]s on one module can coexist). A [`Token`] keeps a pool of logged-in
//! sessions and the PIN it logged in with, so that a signature failing because the
//! session or the device went away is retried once on a fresh session.

mod import;
mod keys;
pub mod modules;
mod profile;
pub mod uri;

use std::collections::HashMap;
use std::fmt;
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::object::{Attribute, AttributeType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, SessionState, UserType};
use cryptoki::slot::{Limit, Slot, TokenInfo};
use secrecy::SecretString;

pub use import::{ImportMethod, ImportOptions, Imported};
pub use keys::{HsmKey, KeyInfo};
pub use modules::locate_module;
pub use profile::Profile;

use crate::{Error, KeyId, PinSource};

/// Sessions a [`Token`] opens at most unless told otherwise.
const DEFAULT_MAX_SESSIONS: usize = 16;

/// The initialized PKCS#11 context of each module loaded in this process.
fn context(module: &Path) -> Result<Pkcs11, Error> {
    static CONTEXTS: OnceLock<Mutex<HashMap<PathBuf, Pkcs11>>> = OnceLock::new();
    let key = std::fs::canonicalize(module).unwrap_or_else(|_| module.to_path_buf());
    let mut contexts = lock(CONTEXTS.get_or_init(Default::default));
    if let Some(pkcs11) = contexts.get(&key) {
        return Ok(pkcs11.clone());
    }
    let load_error = |reason: String| Error::ModuleLoad {
        path: module.to_path_buf(),
        reason,
    };
    let pkcs11 = Pkcs11::new(module).map_err(|e| load_error(e.to_string()))?;
    initialize(&pkcs11).map_err(|e| load_error(rv_name(&e)))?;
    contexts.insert(key, pkcs11.clone());
    Ok(pkcs11)
}

/// C_Initialize, tolerating a module another part of the process initialized.
fn initialize(pkcs11: &Pkcs11) -> Result<(), CkError> {
    match pkcs11.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => Ok(()),
        Err(e) => Err(e),
    }
}

/// A mutex guard, whether or not another thread panicked while holding it: the data
/// guarded here (idle sessions, a slot, a handle) stays consistent either way.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Which token to use: its label and, from a PKCS#11 URI, any of its manufacturer,
/// model, serial number and slot ID. Every field given must match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TokenSelector {
    /// CKA label of the token.
    pub label: Option<String>,
    /// Manufacturer ID.
    pub manufacturer: Option<String>,
    /// Model.
    pub model: Option<String>,
    /// Serial number.
    pub serial: Option<String>,
    /// Slot ID.
    pub slot_id: Option<u64>,
}

impl TokenSelector {
    /// The token labelled `label`.
    pub fn label(label: &str) -> Self {
        TokenSelector {
            label: Some(label.to_owned()),
            ..TokenSelector::default()
        }
    }

    fn matches(&self, slot: Slot, info: &cryptoki::slot::TokenInfo) -> bool {
        let same = |wanted: &Option<String>, actual: &str| {
            wanted.as_deref().is_none_or(|w| w == actual.trim_end())
        };
        same(&self.label, info.label())
            && same(&self.manufacturer, info.manufacturer_id())
            && same(&self.model, info.model())
            && same(&self.serial, info.serial_number())
            && self.slot_id.is_none_or(|id| id == slot.id())
    }
}

impl fmt::Display for TokenSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if let Some(v) = &self.label {
            parts.push(format!("labelled \"{v}\""));
        }
        for (name, value) in [
            ("manufacturer", &self.manufacturer),
            ("model", &self.model),
            ("serial", &self.serial),
        ] {
            if let Some(v) = value {
                parts.push(format!("with {name} \"{v}\""));
            }
        }
        if let Some(id) = self.slot_id {
            parts.push(format!("in slot {id}"));
        }
        if parts.is_empty() {
            parts.push("at all".to_owned());
        }
        f.write_str(&parts.join(", "))
    }
}

/// A logged-in token: a pool of sessions on the slot whose token has the label, and
/// the PIN, kept in a secret type, to log in again after the device comes back.
pub struct Token {
    pkcs11: Pkcs11,
    module: PathBuf,
    selector: TokenSelector,
    /// The token's own label, manufacturer, model and serial, for URIs.
    identity: TokenSelector,
    label: String,
    profile: Profile,
    slot: Mutex<Slot>,
    pin: Mutex<KeptPin>,
    pool: Mutex<Pool>,
    /// Signalled when a session goes back to the pool or is closed.
    returned: Condvar,
    max_sessions: usize,
    /// The token's own maximum session count.
    token_limit: usize,
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token").field("label", &self.label).finish()
    }
}

/// The PIN kept for logging in again after the token forgot the login, until the token
/// refuses it: then it is dropped (and wiped), so it is never tried a second time.
enum KeptPin {
    Pin(SecretString),
    Refused { locked: bool },
}

/// The token's sessions: idle ones, and how many exist (idle or lent).
struct Pool {
    idle: Vec<Session>,
    open: usize,
    /// Threads waiting for a session: only then is the condition variable signalled,
    /// which costs a system call.
    waiting: usize,
}

/// A session borrowed from the pool; it goes back when dropped.
pub(crate) struct Lease<'t> {
    token: &'t Token,
    session: Option<Session>,
}

impl Deref for Lease<'_> {
    type Target = Session;

    fn deref(&self) -> &Session {
        // Only `discard` takes the session out, and it consumes the lease.
        self.session
            .as_ref()
            .expect("a lease holds its session until dropped")
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        let mut pool = lock(&self.token.pool);
        match self.session.take() {
            Some(session) => pool.idle.push(session),
            None => pool.open -= 1,
        }
        if pool.waiting > 0 {
            self.token.returned.notify_one();
        }
    }
}

impl Lease<'_> {
    /// Closes the session instead of returning it to the pool.
    fn discard(mut self) {
        drop(self.session.take());
    }
}

/// A failure inside an operation that [`Token::with_recovery`] runs.
pub(crate) enum OpError {
    /// A PKCS#11 call failed; recoverable ones are retried on a fresh session.
    Call(&'static str, CkError),
    /// Anything else; never retried.
    Other(Error),
}

impl From<Error> for OpError {
    fn from(e: Error) -> Self {
        OpError::Other(e)
    }
}

impl OpError {
    fn into_error(self) -> Error {
        match self {
            OpError::Call(operation, e) => ck(operation)(e),
            OpError::Other(e) => e,
        }
    }

    /// Failures a fresh session (and a fresh look-up of the key) can cure.
    fn recoverable(&self) -> bool {
        matches!(
            self,
            OpError::Call(
                _,
                CkError::Pkcs11(
                    RvError::SessionHandleInvalid
                        | RvError::SessionClosed
                        | RvError::DeviceRemoved
                        | RvError::DeviceError
                        | RvError::TokenNotPresent
                        | RvError::OperationActive
                        | RvError::ObjectHandleInvalid
                        | RvError::KeyHandleInvalid
                        | RvError::UserNotLoggedIn,
                    _,
                )
            )
        )
    }
}

impl Token {
    /// Loads `module`, finds the one token `selector` matches, opens a read-write
    /// session and logs in as the user with the PIN from `pin`: exactly one C_Login
    /// attempt, never retried, since hardware tokens lock after repeated failures.
    /// The vendor [`Profile`] is detected from the module and the token.
    pub fn open(module: &Path, selector: &TokenSelector, pin: &PinSource) -> Result<Token, Error> {
        Token::open_as(module, selector, pin, None)
    }

    /// [`Token::open`] with the vendor profile given rather than detected.
    pub fn open_as(
        module: &Path,
        selector: &TokenSelector,
        pin: &PinSource,
        profile: Option<Profile>,
    ) -> Result<Token, Error> {
        let pkcs11 = context(module)?;
        let (slot, info) = find_slot(&pkcs11, selector)?;
        let label = info.label().trim_end().to_owned();
        let identity = TokenSelector {
            label: Some(label.clone()),
            manufacturer: Some(info.manufacturer_id().trim_end().to_owned()),
            model: Some(info.model().trim_end().to_owned()),
            serial: Some(info.serial_number().trim_end().to_owned()),
            slot_id: None,
        };
        let token_limit = match info.max_session_count() {
            Limit::Max(n) if n > 0 => usize::try_from(n).unwrap_or(usize::MAX),
            _ => usize::MAX,
        };
        let max_sessions = token_limit.min(DEFAULT_MAX_SESSIONS);
        let profile = profile.unwrap_or_else(|| {
            Profile::detect(
                module,
                info.manufacturer_id().trim_end(),
                info.model().trim_end(),
            )
        });
        let pin = pin.read(&label)?;
        let session = pkcs11.open_rw_session(slot).map_err(ck("C_OpenSession"))?;
        login(&session, &pin, profile)?;
        Ok(Token {
            pkcs11,
            module: module.to_path_buf(),
            selector: selector.clone(),
            identity,
            label,
            profile,
            slot: Mutex::new(slot),
            pin: Mutex::new(KeptPin::Pin(pin)),
            pool: Mutex::new(Pool {
                idle: vec![session],
                open: 1,
                waiting: 0,
            }),
            returned: Condvar::new(),
            max_sessions,
            token_limit,
        })
    }

    /// The token's label.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The vendor profile in use.
    pub fn profile(&self) -> Profile {
        self.profile
    }

    /// A URI naming an object on this token, with the module's path and no PIN.
    pub(crate) fn object_uri(
        &self,
        id: &[u8],
        label: &str,
        object_type: uri::ObjectType,
    ) -> String {
        uri::Pkcs11Uri {
            token: self.identity.label.clone(),
            manufacturer: self.identity.manufacturer.clone(),
            model: self.identity.model.clone(),
            serial: self.identity.serial.clone(),
            object: Some(label.to_owned()),
            id: Some(id.to_vec()),
            object_type: Some(object_type),
            module_path: Some(self.module.clone()),
            ..uri::Pkcs11Uri::default()
        }
        .to_string()
    }

    /// At most `cap` sessions at once (never more than the token allows): how many
    /// threads can sign in parallel. The default is 16.
    pub fn with_max_sessions(mut self, cap: usize) -> Self {
        self.max_sessions = cap.max(1).min(self.token_limit);
        self
    }

    /// How many sessions the pool may hold.
    pub fn max_sessions(&self) -> usize {
        self.max_sessions
    }

    /// An idle session from the pool, a new one while fewer than the maximum exist, or
    /// else the next one another thread gives back.
    pub(crate) fn session(&self) -> Result<Lease<'_>, Error> {
        let mut pool = lock(&self.pool);
        loop {
            if let Some(session) = pool.idle.pop() {
                return Ok(self.lease(session));
            }
            if pool.open < self.max_sessions {
                pool.open += 1;
                drop(pool);
                return match self.pkcs11.open_rw_session(*lock(&self.slot)) {
                    Ok(session) => Ok(self.lease(session)),
                    Err(e) => {
                        let mut pool = lock(&self.pool);
                        pool.open -= 1;
                        if pool.waiting > 0 {
                            self.returned.notify_one();
                        }
                        Err(ck("C_OpenSession")(e))
                    }
                };
            }
            pool.waiting += 1;
            pool = self
                .returned
                .wait(pool)
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            pool.waiting -= 1;
        }
    }

    fn lease(&self, session: Session) -> Lease<'_> {
        Lease {
            token: self,
            session: Some(session),
        }
    }

    /// Closes every idle session: after a failure they are likely dead too.
    fn drain(&self) {
        let mut pool = lock(&self.pool);
        let closed = pool.idle.len();
        pool.idle.clear();
        pool.open -= closed;
        self.returned.notify_all();
    }

    /// Runs `op` on a pooled session. If it fails in a way a fresh session can cure
    /// (session or object handle invalid, device removed, not logged in…), the pool is
    /// emptied, a new session is opened — on the slot found again by label, logged in
    /// again with the kept PIN if the token forgot the login — and `op` runs once more
    /// with `retry` set, so it can find its objects again. A wrong PIN is never retried.
    pub(crate) fn with_recovery<T>(
        &self,
        mut op: impl FnMut(&Session, bool) -> Result<T, OpError>,
    ) -> Result<T, Error> {
        // An empty pool whose new session fails to open is treated like a failed call:
        // the device may have gone away.
        if let Ok(lease) = self.session() {
            match op(&lease, false) {
                Ok(value) => return Ok(value),
                Err(e) if !e.recoverable() => return Err(e.into_error()),
                Err(_) => lease.discard(),
            }
        }
        self.drain();
        let lease = self.reopen()?;
        op(&lease, true).map_err(OpError::into_error)
    }

    /// A fresh, logged-in session after a failure: on the same slot; else on the slot
    /// found again by label; else, when the module itself lost its device (p11-kit's
    /// client after its server restarted), after finalizing and initializing the
    /// module again. Logs in again with the kept PIN when the token forgot the login —
    /// unless the token has refused it once already.
    fn reopen(&self) -> Result<Lease<'_>, Error> {
        let current = *lock(&self.slot);
        let session = match self.pkcs11.open_rw_session(current).ok() {
            Some(session) => session,
            None => {
                let (slot, _) = match find_slot(&self.pkcs11, &self.selector) {
                    Ok(found) => found,
                    Err(_) => {
                        // Nothing useful can be done if finalizing a lost module fails.
                        let _ = self.pkcs11.clone().finalize();
                        initialize(&self.pkcs11)
                            .map_err(|e| ck("C_Initialize after the device went away")(e))?;
                        find_slot(&self.pkcs11, &self.selector)?
                    }
                };
                *lock(&self.slot) = slot;
                self.pkcs11
                    .open_rw_session(slot)
                    .map_err(ck("C_OpenSession"))?
            }
        };
        let logged_in = session
            .get_session_info()
            .map(|info| {
                matches!(
                    info.session_state(),
                    SessionState::RwUser | SessionState::RoUser
                )
            })
            .unwrap_or(false);
        if !logged_in {
            // Held through C_Login: threads reopening at once log in one after the other,
            // so a refused PIN is tried by one of them only.
            let mut kept = lock(&self.pin);
            let result = match &*kept {
                KeptPin::Pin(pin) => login(&session, pin, self.profile),
                KeptPin::Refused { locked: true } => Err(Error::PinLocked),
                KeptPin::Refused { locked: false } => Err(Error::PinIncorrect {
                    pin_format: self.profile.pin_format(),
                }),
            };
            match result {
                Err(Error::PinLocked) => *kept = KeptPin::Refused { locked: true },
                Err(Error::PinIncorrect { .. }) => *kept = KeptPin::Refused { locked: false },
                _ => {}
            }
            result?;
        }
        lock(&self.pool).open += 1;
        Ok(self.lease(session))
    }

    /// Object handles matching `template`.
    fn find(&self, template: &[Attribute]) -> Result<Vec<ObjectHandle>, Error> {
        find(&*self.session()?, template).map_err(OpError::into_error)
    }

    /// The one private key whose CKA_ID is the key ID.
    fn private_key(&self, key_id: &KeyId) -> Result<ObjectHandle, Error> {
        private_key(&*self.session()?, key_id).map_err(OpError::into_error)
    }

    /// The public key objects whose CKA_ID is `id`.
    fn public_objects(&self, id: &[u8]) -> Result<Vec<ObjectHandle>, Error> {
        self.find(&[
            Attribute::Class(ObjectClass::PUBLIC_KEY),
            Attribute::Id(id.to_vec()),
        ])
    }

    /// One attribute of an object, `None` where the token does not reveal it.
    fn attribute(
        &self,
        object: ObjectHandle,
        kind: AttributeType,
    ) -> Result<Option<Attribute>, Error> {
        Ok(self
            .session()?
            .get_attributes(object, &[kind])
            .map_err(ck("C_GetAttributeValue"))?
            .into_iter()
            .next())
    }
}

fn find(session: &Session, template: &[Attribute]) -> Result<Vec<ObjectHandle>, OpError> {
    session
        .find_objects(template)
        .map_err(|e| OpError::Call("C_FindObjects", e))
}

/// The one private key whose CKA_ID is the key ID or, on tokens whose CKA_ID cannot
/// hold it (YubiHSM 2's are 2 bytes), whose CKA_LABEL is.
fn private_key(session: &Session, key_id: &KeyId) -> Result<ObjectHandle, OpError> {
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

/// The one slot whose token `selector` matches, and the token's information.
fn find_slot(pkcs11: &Pkcs11, selector: &TokenSelector) -> Result<(Slot, TokenInfo), Error> {
    let mut available = Vec::new();
    let mut matching = Vec::new();
    for slot in pkcs11
        .get_slots_with_initialized_token()
        .map_err(ck("C_GetSlotList"))?
    {
        let info = pkcs11.get_token_info(slot).map_err(ck("C_GetTokenInfo"))?;
        available.push(info.label().trim_end().to_owned());
        if selector.matches(slot, &info) {
            matching.push((slot, info));
        }
    }
    if matching.len() == 1 {
        return Ok(matching.remove(0));
    }
    match matching.as_slice() {
        [] => Err(Error::TokenNotFound {
            wanted: selector.to_string(),
            available,
        }),
        many => Err(Error::TokenAmbiguous {
            wanted: selector.to_string(),
            count: many.len(),
        }),
    }
}

/// One C_Login as the user.
fn login(session: &Session, pin: &SecretString, profile: Profile) -> Result<(), Error> {
    match session.login(UserType::User, Some(pin)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(()),
        Err(CkError::Pkcs11(RvError::PinIncorrect | RvError::PinLenRange, _)) => {
            Err(Error::PinIncorrect {
                pin_format: profile.pin_format(),
            })
        }
        Err(CkError::Pkcs11(RvError::PinLocked, _)) => Err(Error::PinLocked),
        Err(e) => Err(ck("C_Login")(e)),
    }
}

/// Maps a cryptoki error to [`Error::Pkcs11`], naming what p8hsm was doing.
fn ck(operation: &'static str) -> impl Fn(CkError) -> Error {
    move |e| Error::Pkcs11 {
        operation,
        rv: rv_name(&e),
    }
}

/// `CKR_DEVICE_ERROR` rather than cryptoki's paragraph of specification prose.
fn rv_name(e: &CkError) -> String {
    match e {
        CkError::Pkcs11(rv, _) => {
            let camel = format!("{rv:?}");
            let mut name = String::from("CKR");
            for c in camel.chars() {
                if c.is_ascii_uppercase() {
                    name.push('_');
                }
                name.push(c.to_ascii_uppercase());
            }
            name
        }
        CkError::LibraryLoading(e) => e.to_string(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cryptoki::context::Function;

    #[test]
    fn return_values_are_named_not_explained() {
        let e = CkError::Pkcs11(RvError::SessionHandleInvalid, Function::Sign);
        assert_eq!(rv_name(&e), "CKR_SESSION_HANDLE_INVALID");
    }
}
