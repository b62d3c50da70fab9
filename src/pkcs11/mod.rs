//! PKCS#11: loading a module, selecting a token by label, logging in once, and the
//! key operations p8hsm needs. Knows nothing about Apple's token kinds.

mod import;
mod keys;

use std::fmt;
use std::path::{Path, PathBuf};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::object::{Attribute, AttributeType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};

pub use import::Imported;
pub use keys::{HsmKey, KeyInfo};

use crate::{Error, KeyId, PinSource};

/// Where SoftHSM's module is installed by Debian, Ubuntu, Fedora and source builds.
pub const SOFTHSM_PATHS: &[&str] = &[
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib64/pkcs11/libsofthsm2.so",
    "/usr/local/lib/softhsm/libsofthsm2.so",
];

/// Chooses the PKCS#11 module: `explicit` (the `--module` option or `P8HSM_MODULE`),
/// then `PKCS11_MODULE_PATH`, then SoftHSM's standard install paths.
pub fn locate_module(explicit: Option<&Path>) -> Result<PathBuf, Error> {
    let named = explicit.map(Path::to_path_buf).or_else(|| {
        std::env::var_os("PKCS11_MODULE_PATH")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    });
    if let Some(path) = named {
        return if path.is_file() {
            Ok(path)
        } else {
            Err(Error::ModuleNotFound { path })
        };
    }
    SOFTHSM_PATHS
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .ok_or_else(|| Error::NoModule {
            searched: SOFTHSM_PATHS.iter().map(|s| s.to_string()).collect(),
        })
}

/// A logged-in session on one token. Dropping it closes the session and finalizes
/// the module.
pub struct Token {
    session: Session,
    label: String,
    // Declared after `session`, so it finalizes only once the session has closed.
    _context: Context,
}

struct Context {
    pkcs11: Pkcs11,
    owned: bool,
}

impl Drop for Context {
    fn drop(&mut self) {
        if self.owned {
            // Nothing useful can be done with a failure while dropping.
            let _ = self.pkcs11.clone().finalize();
        }
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token").field("label", &self.label).finish()
    }
}

impl Token {
    /// Loads `module`, finds the token labelled `label`, opens a read-write session
    /// and logs in as the user with the PIN from `pin`: exactly one C_Login attempt,
    /// never retried, since hardware tokens lock after repeated failures.
    pub fn open(module: &Path, label: &str, pin: &PinSource) -> Result<Token, Error> {
        let load_error = |reason: String| Error::ModuleLoad {
            path: module.to_path_buf(),
            reason,
        };
        let pkcs11 = Pkcs11::new(module).map_err(|e| load_error(e.to_string()))?;
        let owned = match pkcs11.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
            Ok(()) => true,
            Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => false,
            Err(e) => return Err(load_error(rv_name(&e))),
        };
        let context = Context { pkcs11, owned };
        let ctx = &context.pkcs11;

        let mut available = Vec::new();
        let mut matching = Vec::new();
        for slot in ctx
            .get_slots_with_initialized_token()
            .map_err(ck("C_GetSlotList"))?
        {
            let info = ctx.get_token_info(slot).map_err(ck("C_GetTokenInfo"))?;
            let slot_label = info.label().trim_end().to_owned();
            if slot_label == label {
                matching.push(slot);
            }
            available.push(slot_label);
        }
        let slot = match matching.as_slice() {
            [slot] => *slot,
            [] => {
                return Err(Error::TokenNotFound {
                    label: label.to_owned(),
                    available,
                })
            }
            many => {
                return Err(Error::TokenAmbiguous {
                    label: label.to_owned(),
                    count: many.len(),
                })
            }
        };
        let pin = pin.read(label)?;
        let session = ctx.open_rw_session(slot).map_err(ck("C_OpenSession"))?;
        match session.login(UserType::User, Some(&pin)) {
            Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
            Err(CkError::Pkcs11(RvError::PinIncorrect | RvError::PinLenRange, _)) => {
                return Err(Error::PinIncorrect)
            }
            Err(CkError::Pkcs11(RvError::PinLocked, _)) => return Err(Error::PinLocked),
            Err(e) => return Err(ck("C_Login")(e)),
        }
        Ok(Token {
            session,
            label: label.to_owned(),
            _context: context,
        })
    }

    /// The token's label.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// Object handles matching `template`.
    fn find(&self, template: &[Attribute]) -> Result<Vec<ObjectHandle>, Error> {
        self.session
            .find_objects(template)
            .map_err(ck("C_FindObjects"))
    }

    /// The one private key whose CKA_ID is the key ID.
    fn private_key(&self, key_id: &KeyId) -> Result<ObjectHandle, Error> {
        let found = self.find(&[
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::Id(key_id.as_str().as_bytes().to_vec()),
        ])?;
        match found.as_slice() {
            [handle] => Ok(*handle),
            [] => Err(Error::KeyNotFound {
                key_id: key_id.to_string(),
            }),
            many => Err(Error::KeyAmbiguous {
                key_id: key_id.to_string(),
                count: many.len(),
            }),
        }
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
            .session
            .get_attributes(object, &[kind])
            .map_err(ck("C_GetAttributeValue"))?
            .into_iter()
            .next())
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

    #[test]
    fn a_named_module_that_does_not_exist_is_reported_as_such() {
        let err = locate_module(Some(Path::new("/nonexistent/module.so"))).unwrap_err();
        assert!(matches!(err, Error::ModuleNotFound { .. }), "{err}");
    }
}
