//! One initialized PKCS#11 context per module per process, and how cryptoki's errors
//! are named.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
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
