//! One initialized PKCS#11 context per module per process, and how cryptoki's errors
//! are named.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};

use crate::{lock, Error};

/// The initialized context of `module`, loading it the first time (C_Initialize once;
/// never finalized, so several [`Token`](super::Token)s on one module can coexist).
pub(super) fn context(module: &Path) -> Result<Pkcs11, Error> {
    static CONTEXTS: OnceLock<Mutex<HashMap<PathBuf, Pkcs11>>> = OnceLock::new();
    let key = std::fs::canonicalize(module).unwrap_or_else(|_| module.to_path_buf());
    let mut contexts = lock(CONTEXTS.get_or_init(Default::default));
    if let Some(pkcs11) = contexts.get(&key) {
        return Ok(pkcs11.clone());
    }
    let load_error = |source: CkError| Error::ModuleLoad {
        path: module.to_path_buf(),
        source,
    };
    let pkcs11 = Pkcs11::new(module).map_err(load_error)?;
    initialize(&pkcs11).map_err(load_error)?;
    contexts.insert(key, pkcs11.clone());
    Ok(pkcs11)
}

/// C_Initialize, tolerating a module another part of the process initialized.
pub(super) fn initialize(pkcs11: &Pkcs11) -> Result<(), CkError> {
    match pkcs11.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => Ok(()),
        Err(e) => Err(e),
    }
}

/// How many times this process finalized and initialized a module again: sessions
/// opened before the last time are gone, and their tokens logged out.
static REINITIALIZED: AtomicU64 = AtomicU64::new(0);

/// See [`REINITIALIZED`].
pub(super) fn reinitializations() -> u64 {
    REINITIALIZED.load(Ordering::SeqCst)
}

/// Finalizes and initializes the module again, so that it reads its token store anew.
/// Every session of every token on it closes: their pools notice ([`reinitializations`]).
pub(super) fn reinitialize(pkcs11: &Pkcs11) -> Result<(), CkError> {
    REINITIALIZED.fetch_add(1, Ordering::SeqCst);
    // Nothing useful can be done if finalizing fails: initializing says what is wrong.
    let _ = pkcs11.clone().finalize();
    initialize(pkcs11)
}

/// Whether an error can come from another process rewriting a software token's store
/// while this one reads it (SoftHSM rewrites `token.object` at every login, and a
/// process reading it meanwhile finds it half written): the token seems missing or
/// uninitialized, or a call fails with `CKR_GENERAL_ERROR`.
pub(super) fn transient(e: &Error) -> bool {
    matches!(e, Error::TokenNotFound { .. }) || busy_store(e)
}

/// Whether a call failed as calls on a software token fail while another process
/// writes its store: SoftHSM answers `CKR_GENERAL_ERROR`, or finds the user PIN "not
/// initialized" in a half-written `token.object`; Kryoptic answers `CKR_DEVICE_MEMORY`
/// while its SQLite database is locked.
pub(super) fn busy_store(e: &Error) -> bool {
    matches!(e, Error::Pkcs11 { source, .. } if busy(source))
}

/// [`busy_store`], for cryptoki's error.
pub(super) fn busy(e: &CkError) -> bool {
    matches!(
        e,
        CkError::Pkcs11(
            RvError::GeneralError | RvError::UserPinNotInitialized | RvError::DeviceMemory,
            _
        )
    )
}

/// Waits a little, more at each attempt, with jitter so that processes that collided
/// do not collide again.
pub(super) fn settle(attempt: u32) {
    use p256::elliptic_curve::rand_core::{OsRng, RngCore};
    let jitter = u64::from(OsRng.next_u32() % 40);
    std::thread::sleep(std::time::Duration::from_millis(
        10 + 20 * u64::from(attempt) + jitter,
    ));
}

/// How often a one-shot process tries again to find and log in to a token whose store
/// another process is rewriting (about 2.5 s in all).
pub(super) const SETTLE_ATTEMPTS: u32 = 12;

/// Maps a cryptoki error to [`Error::Pkcs11`], naming what p8hsm was doing.
pub(super) fn ck(operation: &'static str) -> impl Fn(CkError) -> Error {
    move |source| Error::Pkcs11 { operation, source }
}

/// `CKR_DEVICE_ERROR` rather than cryptoki's paragraph of specification prose.
pub(crate) fn rv_name(e: &CkError) -> String {
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
        let shown = ck("C_Sign")(e).to_string();
        assert_eq!(shown, "C_Sign failed: CKR_SESSION_HANDLE_INVALID");
    }
}
