//! One initialized PKCS#11 context per module per process, and how cryptoki's errors
//! are named.

use std::collections::HashMap;
use std::ffi::CString;
use std::fmt;
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use zeroize::Zeroizing;

use crate::error::{CallFailed, Cause};
use crate::{lock, Error};

/// What a module is given at `C_Initialize` in `pReserved`: NSS softoken's
/// `configdir='sql:DIR' …`, p11-kit's `x-init-reserved`. It may hold a secret, so it is
/// wiped when dropped and never shown.
#[derive(Clone, PartialEq, Eq)]
pub struct ModuleArgs(Zeroizing<String>);

impl ModuleArgs {
    /// The arguments, refused if they hold a NUL byte (they travel as a C string).
    pub fn new(text: &str) -> Result<ModuleArgs, Error> {
        if text.contains('\0') {
            return Err(Error::NotApplicable {
                field: "module_args",
                reason: "the module arguments hold a NUL byte".to_owned(),
            });
        }
        Ok(ModuleArgs(Zeroizing::new(text.to_owned())))
    }

    fn c_string(&self) -> CString {
        // new() refused NUL bytes.
        CString::new(self.0.as_bytes()).unwrap_or_default()
    }
}

impl fmt::Debug for ModuleArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ModuleArgs(…)")
    }
}

impl serde::Serialize for ModuleArgs {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for ModuleArgs {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = Zeroizing::new(String::deserialize(d)?);
        ModuleArgs::new(&text).map_err(serde::de::Error::custom)
    }
}

/// A loaded, initialized module, with the arguments it is initialized with (kept alive
/// for as long as the module, which may keep the pointer, and for re-initializing it).
#[derive(Clone)]
pub(super) struct Module {
    pkcs11: Pkcs11,
    args: Option<Arc<CString>>,
    /// How many times this process finalized and initialized this module again:
    /// sessions opened on it before the last time are gone, and their tokens logged out.
    /// Another module's re-initialization leaves it as it is.
    generation: Arc<AtomicU64>,
}

impl Deref for Module {
    type Target = Pkcs11;
    fn deref(&self) -> &Pkcs11 {
        &self.pkcs11
    }
}

/// The initialized context of `module`, loading it the first time (C_Initialize once,
/// with `args` if given; never finalized, so several [`Token`](super::Token)s on one
/// module can coexist). A module already loaded keeps the arguments it was loaded with.
pub(super) fn context(module: &Path, args: Option<&ModuleArgs>) -> Result<Module, Error> {
    static CONTEXTS: OnceLock<Mutex<HashMap<PathBuf, Module>>> = OnceLock::new();
    let key = std::fs::canonicalize(module).unwrap_or_else(|_| module.to_path_buf());
    let mut contexts = lock(CONTEXTS.get_or_init(Default::default));
    if let Some(loaded) = contexts.get(&key) {
        return Ok(loaded.clone());
    }
    let load_error = |source: CkError| Error::ModuleLoad {
        path: module.to_path_buf(),
        with_args: args.is_some(),
        failed: failed("C_Initialize", &source),
    };
    let loaded = Module {
        pkcs11: Pkcs11::new(module).map_err(load_error)?,
        args: args.map(|a| Arc::new(a.c_string())),
        generation: Arc::default(),
    };
    // A software token whose store another process holds may fail to initialize
    // (tpm2-pkcs11's SQLite database is locked: CKR_GENERAL_ERROR): try again briefly —
    // a few times only, as a module that cannot reach its device answers the same.
    let mut attempt = 0;
    loop {
        match initialize(&loaded) {
            Err(e) if busy(&e) && attempt < INITIALIZE_ATTEMPTS => {
                attempt += 1;
                settle(attempt);
            }
            done => break done.map_err(load_error)?,
        }
    }
    contexts.insert(key, loaded.clone());
    Ok(loaded)
}

/// C_Initialize, tolerating a module another part of the process initialized.
// The one unsafe block of the crate: cryptoki offers no safe way to pass pReserved.
#[allow(unsafe_code)]
fn initialize(module: &Module) -> Result<(), CkError> {
    let flags = CInitializeFlags::OS_LOCKING_OK;
    let args = match &module.args {
        // SAFETY: pReserved points at a NUL-terminated string that lives as long as the
        // module (the Arc is kept beside it), which is what NSS and p11-kit expect there.
        Some(text) => unsafe {
            CInitializeArgs::new_with_reserved(
                flags,
                NonNull::new_unchecked(text.as_ptr() as *mut _),
            )
        },
        None => CInitializeArgs::new(flags),
    };
    match module.pkcs11.initialize(args) {
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => Ok(()),
        Err(e) => Err(e),
    }
}

impl Module {
    /// How many times this process initialized this module again (see
    /// [`reinitialize`]).
    pub(super) fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }
}

/// Finalizes and initializes the module again, so that it reads its token store anew.
/// Every session of every token on it closes: their pools notice
/// ([`Module::generation`]); pools on other modules are not touched.
pub(super) fn reinitialize(module: &Module) -> Result<(), CkError> {
    module.generation.fetch_add(1, Ordering::SeqCst);
    // Nothing useful can be done if finalizing fails: initializing says what is wrong.
    let _ = module.pkcs11.clone().finalize();
    initialize(module)
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
    matches!(e, Error::Pkcs11(failed) if failed.cause() == Cause::StoreBusy)
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

/// How often loading a module tries `C_Initialize` again after an answer that may mean
/// a busy store (about 0.2 s in all).
const INITIALIZE_ATTEMPTS: u32 = 3;

/// Maps a cryptoki error to [`Error::Pkcs11`], naming what p8hsm was doing.
pub(super) fn ck(operation: &'static str) -> impl Fn(CkError) -> Error {
    move |source| Error::Pkcs11(failed(operation, &source))
}

/// A failed call as the crate's error carries it: the call, the return value by its
/// `CKR_` name, and what this layer makes of it.
pub(super) fn failed(operation: &'static str, e: &CkError) -> CallFailed {
    let cause = match e {
        CkError::Pkcs11(RvError::ArgumentsBad, _) => Cause::NeedsArguments,
        e if busy(e) => Cause::StoreBusy,
        e if gone(e) => Cause::DeviceGone,
        CkError::Pkcs11(RvError::ObjectHandleInvalid | RvError::KeyHandleInvalid, _) => {
            Cause::NoSuchObject
        }
        CkError::Pkcs11(rv, _) if refusal(*rv) || *rv == RvError::KeyFunctionNotPermitted => {
            Cause::Refused
        }
        _ => Cause::Other,
    };
    CallFailed::new(operation, rv_name(e), cause, gone(e))
}

/// Return values by which a token refuses the mechanism, the template or the operation
/// (an import tries its next way in after one of these).
pub(super) fn refusal(rv: RvError) -> bool {
    matches!(
        rv,
        RvError::MechanismInvalid
            | RvError::MechanismParamInvalid
            | RvError::ArgumentsBad
            | RvError::KeyTypeInconsistent
            | RvError::UnwrappingKeyTypeInconsistent
            | RvError::TemplateInconsistent
            | RvError::TemplateIncomplete
            | RvError::AttributeValueInvalid
            | RvError::AttributeTypeInvalid
            | RvError::AttributeReadOnly
            | RvError::FunctionNotSupported
            | RvError::FunctionRejected
            | RvError::ActionProhibited
    )
}

/// Whether a call's failure means the token (or the module, or its server) went away.
fn gone(e: &CkError) -> bool {
    match e {
        CkError::Pkcs11(rv, _) => matches!(
            rv,
            RvError::DeviceRemoved
                | RvError::DeviceError
                | RvError::DeviceMemory
                | RvError::TokenNotPresent
                | RvError::TokenNotRecognized
                | RvError::SessionHandleInvalid
                | RvError::SessionClosed
                | RvError::SessionCount
                | RvError::CryptokiNotInitialized
                | RvError::GeneralError
                | RvError::FunctionFailed
                | RvError::SlotIdInvalid
        ),
        // The module could not be called at all.
        _ => true,
    }
}

impl Error {
    /// Whether the error means the token (or the module, or its server) went away — not
    /// that one request was wrong (a missing key, a key that may not sign, a bad
    /// signature, a refused PIN). A long-lived service leaves a token that went away
    /// alone for a while; an error of one request must not delay every other.
    pub fn means_token_gone(&self) -> bool {
        match self {
            // The token's slot is gone (a device unplugged, a store removed).
            Error::TokenUnavailable | Error::TokenNotFound { .. } => true,
            Error::Pkcs11(failed) => failed.token_gone(),
            _ => false,
        }
    }
}

/// `CKR_DEVICE_ERROR` rather than cryptoki's paragraph of specification prose.
pub(super) fn rv_name(e: &CkError) -> String {
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

    #[test]
    fn only_failures_of_the_token_mean_it_went_away() {
        let call = |rv| ck("C_Sign")(CkError::Pkcs11(rv, Function::Sign));
        for rv in [
            RvError::DeviceRemoved,
            RvError::DeviceError,
            RvError::SessionHandleInvalid,
        ] {
            assert!(call(rv).means_token_gone(), "{rv:?}");
        }
        for rv in [
            RvError::KeyFunctionNotPermitted,
            RvError::MechanismInvalid,
            RvError::ObjectHandleInvalid,
            RvError::KeyHandleInvalid,
        ] {
            assert!(!call(rv).means_token_gone(), "{rv:?}");
        }
        let missing = Error::KeyNotFound {
            key_id: "2X9R4HXF34".to_owned(),
        };
        assert!(!missing.means_token_gone());
        assert!(!Error::PinLocked.means_token_gone());
    }
}
