//! A token's logged-in sessions: a bounded pool that threads borrow from, the PIN kept
//! for logging in again, and recovery — a call that failed because its session, its
//! object handle or the device went away runs once more on a fresh session.

use std::ops::Deref;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};

use cryptoki::error::{Error as CkError, RvError};
use cryptoki::session::{Session, SessionState, UserType};
use cryptoki::slot::Slot;
use secrecy::SecretString;

use super::context::{ck, reinitialize, settle, transient, Module, SETTLE_ATTEMPTS};
use super::profile::Profile;
use super::slot::{find_slot, find_slot_settled, TokenSelector};
use crate::{lock, Error};

/// The pool of logged-in sessions on one token, the PIN kept to log in again, and the
/// slot (found again by label after the device came back).
pub(super) struct Sessions {
    pkcs11: Module,
    selector: TokenSelector,
    profile: Profile,
    slot: Mutex<Slot>,
    pin: Mutex<KeptPin>,
    pool: Mutex<Pool>,
    /// Signalled when a session goes back to the pool or is closed.
    returned: Condvar,
    max: AtomicUsize,
    /// The token's own maximum session count.
    limit: usize,
    /// [`Module::generation`] when the pool's sessions were opened and logged in: when
    /// the module has been initialized again since, they are gone.
    generation: AtomicU64,
    /// Successful C_Login calls.
    logins: AtomicU64,
}

/// The PIN kept for logging in again after the token forgot the login, until the token
/// refuses it: then it is dropped (and wiped), so it is never tried a second time.
enum KeptPin {
    Pin(SecretString),
    Refused { locked: bool },
}

/// The sessions: idle ones, and how many exist (idle or lent).
struct Pool {
    idle: Vec<Session>,
    open: usize,
    /// Threads waiting for a session: only then is the condition variable signalled,
    /// which costs a system call.
    waiting: usize,
}

/// A session borrowed from the pool; it goes back when dropped.
pub(crate) struct Lease<'s> {
    sessions: &'s Sessions,
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
        let mut pool = lock(&self.sessions.pool);
        match self.session.take() {
            Some(session) => pool.idle.push(session),
            None => pool.open -= 1,
        }
        if pool.waiting > 0 {
            self.sessions.returned.notify_one();
        }
    }
}

impl Lease<'_> {
    /// Closes the session instead of returning it to the pool.
    fn discard(mut self) {
        if let Some(session) = self.session.take() {
            self.sessions.close(session);
        }
    }
}

/// A failure inside an operation that [`Sessions::with_recovery`] runs.
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
    pub(crate) fn into_error(self) -> Error {
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

impl Drop for Sessions {
    fn drop(&mut self) {
        // Sessions of an old generation are forgotten, not closed (see `close`).
        self.drain();
    }
}

/// Sessions a token opens at most unless told otherwise.
const DEFAULT_MAX_SESSIONS: usize = 16;

impl Sessions {
    /// Opens the first session on `slot` and logs in with `pin`: exactly one C_Login
    /// attempt, never retried, since hardware tokens lock after repeated failures.
    pub(super) fn login(
        pkcs11: Module,
        selector: TokenSelector,
        profile: Profile,
        slot: Slot,
        limit: usize,
        pin: SecretString,
    ) -> Result<Sessions, Error> {
        let generation = AtomicU64::new(pkcs11.generation());
        let session = pkcs11.open_rw_session(slot).map_err(ck("C_OpenSession"))?;
        login(&session, &pin, profile)?;
        Ok(Sessions {
            pkcs11,
            selector,
            profile,
            slot: Mutex::new(slot),
            pin: Mutex::new(KeptPin::Pin(pin)),
            pool: Mutex::new(Pool {
                idle: vec![session],
                open: 1,
                waiting: 0,
            }),
            returned: Condvar::new(),
            max: AtomicUsize::new(limit.min(DEFAULT_MAX_SESSIONS)),
            limit,
            generation,
            logins: AtomicU64::new(1),
        })
    }

    pub(super) fn pkcs11(&self) -> &Module {
        &self.pkcs11
    }

    /// Successful C_Login calls so far.
    pub(super) fn logins(&self) -> u64 {
        self.logins.load(Ordering::Relaxed)
    }

    pub(super) fn slot(&self) -> Slot {
        *lock(&self.slot)
    }

    /// At most `cap` sessions at once, never more than the token allows.
    pub(super) fn set_max(&self, cap: usize) {
        self.max
            .store(cap.max(1).min(self.limit), Ordering::Relaxed);
    }

    pub(super) fn max(&self) -> usize {
        self.max.load(Ordering::Relaxed)
    }

    /// An idle session from the pool, a new one while fewer than the maximum exist, or
    /// else the next one another thread gives back.
    pub(crate) fn lease(&self) -> Result<Lease<'_>, Error> {
        if self.generation.load(Ordering::SeqCst) != self.pkcs11.generation() {
            // Another token on the module initialized it again: the sessions are gone
            // and the token logged out.
            self.drain();
            return self.reopen();
        }
        let mut pool = lock(&self.pool);
        loop {
            if let Some(session) = pool.idle.pop() {
                return Ok(self.lent(session));
            }
            if pool.open < self.max() {
                pool.open += 1;
                drop(pool);
                return match self.pkcs11.open_rw_session(self.slot()) {
                    Ok(session) => Ok(self.lent(session)),
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

    fn lent(&self, session: Session) -> Lease<'_> {
        Lease {
            sessions: self,
            session: Some(session),
        }
    }

    /// Closes every idle session: after a failure they are likely dead too.
    fn drain(&self) {
        let mut pool = lock(&self.pool);
        let idle = std::mem::take(&mut pool.idle);
        pool.open -= idle.len();
        drop(pool);
        for session in idle {
            self.close(session);
        }
        self.returned.notify_all();
    }

    /// Closes a session — unless the module was initialized again since the pool's
    /// sessions were opened: then its handle is gone, and may since have been given to
    /// a session of another token on the module, which C_CloseSession would close. It
    /// is forgotten instead.
    fn close(&self, session: Session) {
        if self.generation.load(Ordering::SeqCst) == self.pkcs11.generation() {
            drop(session);
        } else {
            std::mem::forget(session);
        }
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
        if let Ok(lease) = self.lease() {
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

    /// See [`Token::refresh`](super::token::Token::refresh).
    pub(super) fn refresh(&self) -> Result<(), Error> {
        let mut attempt = 0;
        loop {
            self.drain();
            reinitialize(&self.pkcs11).map_err(ck("C_Initialize"))?;
            let (slot, _) = find_slot_settled(&self.pkcs11, &self.selector)?;
            *lock(&self.slot) = slot;
            match self.reopen() {
                Ok(lease) => {
                    drop(lease);
                    return Ok(());
                }
                // Read half written: read the store anew and try again.
                Err(e) if transient(&e) && attempt < SETTLE_ATTEMPTS => {
                    attempt += 1;
                    settle(attempt);
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// A fresh, logged-in session after a failure: on the same slot; else on the slot
    /// found again by label; else, when the module itself lost its device (p11-kit's
    /// client after its server restarted), after finalizing and initializing the
    /// module again. Logs in again with the kept PIN when the token forgot the login —
    /// unless the token has refused it once already.
    fn reopen(&self) -> Result<Lease<'_>, Error> {
        let session = match self.pkcs11.open_rw_session(self.slot()).ok() {
            Some(session) => session,
            None => {
                let (slot, _) = match find_slot(&self.pkcs11, &self.selector) {
                    Ok(found) => found,
                    Err(_) => {
                        reinitialize(&self.pkcs11)
                            .map_err(ck("C_Initialize after the device went away"))?;
                        find_slot(&self.pkcs11, &self.selector)?
                    }
                };
                *lock(&self.slot) = slot;
                self.pkcs11
                    .open_rw_session(slot)
                    .map_err(ck("C_OpenSession"))?
            }
        };
        // Read once the session exists: a session opened after the module was last
        // initialized belongs to this generation.
        let generation = self.pkcs11.generation();
        let logged_in = session.get_session_info().is_ok_and(|info| {
            matches!(
                info.session_state(),
                SessionState::RwUser | SessionState::RoUser
            )
        });
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
                Ok(()) => {
                    self.logins.fetch_add(1, Ordering::Relaxed);
                }
                Err(Error::PinLocked) => *kept = KeptPin::Refused { locked: true },
                Err(Error::PinIncorrect { .. }) => *kept = KeptPin::Refused { locked: false },
                _ => {}
            }
            result?;
        }
        lock(&self.pool).open += 1;
        self.generation.store(generation, Ordering::SeqCst);
        Ok(self.lent(session))
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
