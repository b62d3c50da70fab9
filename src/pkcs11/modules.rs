//! Finding PKCS#11 modules: the one named, then the modules registered with p11-kit
//! (through its proxy module), then SoftHSM.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::context::{ck, context};
use super::uri::Pkcs11Uri;
use crate::Error;

/// Where SoftHSM's module is installed by Debian, Ubuntu, Fedora and source builds.
pub const SOFTHSM_PATHS: &[&str] = &[
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib64/pkcs11/libsofthsm2.so",
    "/usr/local/lib/softhsm/libsofthsm2.so",
];

/// p11-kit's proxy module, which offers the tokens of every module registered with p11-kit.
pub const P11_KIT_PROXY_PATHS: &[&str] = &[
    "/usr/lib/x86_64-linux-gnu/p11-kit-proxy.so",
    "/usr/lib/aarch64-linux-gnu/p11-kit-proxy.so",
    "/usr/lib64/p11-kit-proxy.so",
    "/usr/lib/p11-kit-proxy.so",
];

/// Where p11-kit keeps modules given by a bare file name.
const MODULE_DIRS: &[&str] = &[
    "/usr/lib/x86_64-linux-gnu/pkcs11",
    "/usr/lib/aarch64-linux-gnu/pkcs11",
    "/usr/lib64/pkcs11",
    "/usr/lib/pkcs11",
];

/// Where p11-kit's module registrations (`NAME.module`) live: the system's first.
const REGISTRATION_DIRS: &[&str] = &["/etc/pkcs11/modules", "/usr/share/p11-kit/modules"];

/// A module p8hsm could use, and why.
#[derive(Debug, Clone, Serialize)]
pub struct Candidate {
    /// The module file.
    pub path: PathBuf,
    /// Where it came from: `--module`, `PKCS11_MODULE_PATH`, `URI module-path`,
    /// `p11-kit: NAME`, `p11-kit proxy`, `SoftHSM`.
    pub source: String,
}

/// The modules registered with p11-kit, by name.
pub fn registered() -> Vec<(String, PathBuf)> {
    let mut found: Vec<(String, PathBuf)> = Vec::new();
    for dir in REGISTRATION_DIRS {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        let mut entries: Vec<_> = entries.flatten().map(|e| e.path()).collect();
        entries.sort();
        for file in entries {
            let Some(name) = file
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".module"))
            else {
                continue;
            };
            if found.iter().any(|(n, _)| n == name) {
                continue; // a registration in /etc overrides the packaged one
            }
            let Ok(config) = std::fs::read_to_string(&file) else {
                continue;
            };
            let module = config.lines().find_map(|line| {
                line.trim()
                    .strip_prefix("module:")
                    .map(|m| m.trim().to_owned())
            });
            if let Some(module) = module.and_then(|m| resolve_file(&m)) {
                found.push((name.to_owned(), module));
            }
        }
    }
    found
}

/// A module given as a path, or as a file name in p11-kit's module directories.
fn resolve_file(module: &str) -> Option<PathBuf> {
    let path = Path::new(module);
    if path.is_absolute() {
        return path.is_file().then(|| path.to_path_buf());
    }
    MODULE_DIRS
        .iter()
        .map(|dir| Path::new(dir).join(module))
        .find(|p| p.is_file())
}

/// Every module p8hsm would consider, in the order it considers them: `explicit`
/// (`--module` or `P8HSM_MODULE`), `PKCS11_MODULE_PATH`, the URI's module-path or
/// module-name, p11-kit's proxy when modules are registered with p11-kit, SoftHSM.
/// Candidates that were named but do not exist are kept, so the caller can say so.
pub fn candidates(
    explicit: Option<&Path>,
    uri: Option<&Pkcs11Uri>,
) -> Result<Vec<Candidate>, Error> {
    let mut out = Vec::new();
    let mut push = |path: PathBuf, source: &str| {
        out.push(Candidate {
            path,
            source: source.to_owned(),
        })
    };
    if let Some(path) = explicit {
        push(path.to_path_buf(), "--module");
    }
    if let Some(path) = std::env::var_os("PKCS11_MODULE_PATH").filter(|v| !v.is_empty()) {
        push(PathBuf::from(path), "PKCS11_MODULE_PATH");
    }
    if let Some(path) = uri.and_then(|u| u.module_path.clone()) {
        push(path, "URI module-path");
    }
    if let Some(name) = uri.and_then(|u| u.module_name.as_deref()) {
        let path = registered()
            .into_iter()
            .find(|(n, _)| n == name)
            .map(|(_, p)| p)
            .or_else(|| resolve_file(&format!("{name}.so")))
            .or_else(|| resolve_file(&format!("lib{name}.so")))
            .ok_or_else(|| Error::ModuleNotFound {
                path: PathBuf::from(format!("module-name={name}")),
            })?;
        push(path, "URI module-name");
    }
    let registered = registered();
    if !registered.is_empty() {
        if let Some(proxy) = P11_KIT_PROXY_PATHS
            .iter()
            .map(PathBuf::from)
            .find(|p| p.is_file())
        {
            push(proxy, "p11-kit proxy");
        }
    }
    for (name, path) in registered {
        push(path, &format!("p11-kit: {name}"));
    }
    for path in SOFTHSM_PATHS
        .iter()
        .map(PathBuf::from)
        .filter(|p| p.is_file())
    {
        push(path, "SoftHSM");
    }
    Ok(out)
}

/// Chooses the PKCS#11 module: the first of [`candidates`]. A module that was named
/// (option, environment, URI) must exist.
pub fn locate_module(explicit: Option<&Path>, uri: Option<&Pkcs11Uri>) -> Result<PathBuf, Error> {
    if let Some(path) = explicit {
        // The common case costs no look-up of other candidates.
        return if path.is_file() {
            Ok(path.to_path_buf())
        } else {
            Err(Error::ModuleNotFound {
                path: path.to_path_buf(),
            })
        };
    }
    let first = candidates(explicit, uri)?
        .into_iter()
        .next()
        .ok_or_else(|| Error::NoModule {
            searched: P11_KIT_PROXY_PATHS
                .iter()
                .chain(SOFTHSM_PATHS)
                .map(|s| s.to_string())
                .collect(),
        })?;
    if first.path.is_file() {
        Ok(first.path)
    } else {
        Err(Error::ModuleNotFound { path: first.path })
    }
}

/// A token a module offers.
#[derive(Debug, Clone, Serialize)]
pub struct TokenSummary {
    /// CKA label of the token.
    pub label: String,
    /// Manufacturer ID.
    pub manufacturer: String,
    /// Model.
    pub model: String,
    /// Serial number.
    pub serial: String,
    /// Slot ID (may change when tokens are added: choose tokens by label or serial).
    pub slot_id: u64,
    /// A URI naming it.
    pub uri: String,
}

/// The initialized tokens `module` offers.
pub fn tokens(module: &Path) -> Result<Vec<TokenSummary>, Error> {
    let pkcs11 = context(module)?;
    let mut out = Vec::new();
    for slot in pkcs11
        .get_slots_with_initialized_token()
        .map_err(ck("C_GetSlotList"))?
    {
        let info = pkcs11.get_token_info(slot).map_err(ck("C_GetTokenInfo"))?;
        let uri = Pkcs11Uri {
            token: Some(info.label().trim_end().to_owned()),
            manufacturer: Some(info.manufacturer_id().trim_end().to_owned()),
            serial: Some(info.serial_number().trim_end().to_owned()),
            model: Some(info.model().trim_end().to_owned()),
            module_path: Some(module.to_path_buf()),
            ..Pkcs11Uri::default()
        };
        out.push(TokenSummary {
            label: info.label().trim_end().to_owned(),
            manufacturer: info.manufacturer_id().trim_end().to_owned(),
            model: info.model().trim_end().to_owned(),
            serial: info.serial_number().trim_end().to_owned(),
            slot_id: slot.id(),
            uri: uri.to_string(),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_named_module_that_does_not_exist_is_reported_as_such() {
        let err = locate_module(Some(Path::new("/nonexistent/module.so")), None).unwrap_err();
        assert!(matches!(err, Error::ModuleNotFound { .. }), "{err}");
        let uri: Pkcs11Uri = "pkcs11:?module-path=/nonexistent/uri.so".parse().unwrap();
        let err = locate_module(None, Some(&uri)).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/uri.so"), "{err}");
        let uri: Pkcs11Uri = "pkcs11:?module-name=no-such-module".parse().unwrap();
        let err = locate_module(None, Some(&uri)).unwrap_err();
        assert!(
            err.to_string().contains("module-name=no-such-module"),
            "{err}"
        );
    }

    #[test]
    fn the_option_comes_before_the_uri() {
        let uri: Pkcs11Uri = "pkcs11:?module-path=/from/uri.so".parse().unwrap();
        let found = candidates(Some(Path::new("/from/option.so")), Some(&uri)).unwrap();
        let uri_position = found
            .iter()
            .position(|c| c.source == "URI module-path")
            .unwrap();
        assert_eq!(found[0].source, "--module");
        assert!(uri_position > 0);
    }
}
