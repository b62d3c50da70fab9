//! Finding PKCS#11 modules: the one named, then the modules registered with p11-kit
//! (through its proxy module), then SoftHSM.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::context::{context, ModuleArgs};
use super::slot::{initialized_tokens, unpadded};
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

/// How [`Candidate::source`] names p11-kit's proxy module.
pub const PROXY_SOURCE: &str = "p11-kit proxy";

/// The [`Candidate::source`] of the module the caller named.
pub const GIVEN: &str = "given";

/// Where p11-kit keeps modules given by a bare file name.
const MODULE_DIRS: &[&str] = &[
    "/usr/lib/x86_64-linux-gnu/pkcs11",
    "/usr/lib/aarch64-linux-gnu/pkcs11",
    "/usr/lib64/pkcs11",
    "/usr/lib/pkcs11",
];

/// Where p11-kit's module registrations (`NAME.module`) live, from the packaged ones to
/// the system's: a later directory's settings win over an earlier one's.
const REGISTRATION_DIRS: &[&str] = &["/usr/share/p11-kit/modules", "/etc/pkcs11/modules"];

/// The program name p11-kit's `enable-in` and `disable-in` settings name.
const PROGRAM: &str = "p8hsm";

/// A module p8hsm could use, and why.
#[derive(Debug, Clone, Serialize)]
pub struct Candidate {
    /// The module file.
    pub path: PathBuf,
    /// Where it came from: `--module`, `PKCS11_MODULE_PATH`, `URI module-path`,
    /// `p11-kit: NAME`, `p11-kit proxy`, `SoftHSM`.
    pub source: String,
}

/// A module registered with p11-kit.
#[derive(Debug, Clone)]
pub struct Registration {
    /// The registration's name (its file name without `.module`).
    pub name: String,
    /// The module file.
    pub path: PathBuf,
    /// `x-init-reserved`: what p11-kit passes to the module's C_Initialize.
    pub args: Option<ModuleArgs>,
}

/// The modules registered with p11-kit for p8hsm, as p11-kit reads them: the packaged
/// registrations, then the system's (`/etc/pkcs11/modules`), then — unless running as
/// root, or `/etc/pkcs11/pkcs11.conf` says `user-config: none` — the user's
/// (`~/.config/pkcs11/modules`), each setting of a later file of the same name winning.
/// A registration whose `enable-in` does not name p8hsm, or whose `disable-in` does, is
/// left out, as are remote ones (p11-kit's proxy reaches those). Read once a process:
/// choosing the module and its arguments, and `modules`, ask again and again.
pub fn registered() -> &'static [Registration] {
    static REGISTERED: std::sync::OnceLock<Vec<Registration>> = std::sync::OnceLock::new();
    REGISTERED.get_or_init(read_registrations)
}

fn read_registrations() -> Vec<Registration> {
    let mut dirs: Vec<PathBuf> = REGISTRATION_DIRS.iter().map(PathBuf::from).collect();
    dirs.extend(user_registrations());
    let mut settings: Vec<(String, Vec<(String, String)>)> = Vec::new();
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(&dir) else {
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
            let Some(text) = registration_text(&file) else {
                continue;
            };
            let index = match settings.iter().position(|(n, _)| n == name) {
                Some(i) => i,
                None => {
                    settings.push((name.to_owned(), Vec::new()));
                    settings.len() - 1
                }
            };
            let entry = &mut settings[index].1;
            for (key, value) in config_lines(&text) {
                entry.retain(|(k, _)| *k != key);
                entry.push((key, value));
            }
        }
    }
    settings
        .into_iter()
        .filter_map(|(name, settings)| {
            let get = |key: &str| {
                settings
                    .iter()
                    .find(|(k, _)| k == key)
                    .map(|(_, v)| v.as_str())
            };
            let names = |key: &str| get(key).map(|v| v.split(',').any(|p| p.trim() == PROGRAM));
            if names("enable-in") == Some(false) || names("disable-in") == Some(true) {
                return None;
            }
            let path = resolve_file(get("module")?)?;
            let args = get("x-init-reserved").and_then(|a| ModuleArgs::new(a).ok());
            Some(Registration { name, path, args })
        })
        .collect()
}

/// A registration file's text: a regular file of at most 64 KiB, opened without waiting
/// (a FIFO would block the open, a device never end), else nothing.
fn registration_text(file: &Path) -> Option<String> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    const LIMIT: u64 = 64 * 1024;
    let opened = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags((rustix::fs::OFlags::NONBLOCK | rustix::fs::OFlags::NOCTTY).bits() as i32)
        .open(file)
        .ok()?;
    if !opened.metadata().ok()?.is_file() {
        return None;
    }
    let mut text = String::new();
    opened.take(LIMIT + 1).read_to_string(&mut text).ok()?;
    (text.len() as u64 <= LIMIT).then_some(text)
}

/// The `name: value` settings of a p11-kit configuration file.
fn config_lines(text: &str) -> impl Iterator<Item = (String, String)> + '_ {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
}

/// The user's registrations directory, when p11-kit would read it.
fn user_registrations() -> Option<PathBuf> {
    if rustix::process::geteuid().is_root() {
        return None;
    }
    let global = std::fs::read_to_string("/etc/pkcs11/pkcs11.conf").unwrap_or_default();
    if config_lines(&global).any(|(k, v)| k == "user-config" && v == "none") {
        return None;
    }
    let config = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".config")))?;
    Some(config.join("pkcs11/modules"))
}

/// Whether `module` is p11-kit's proxy module, however it was named.
pub fn is_proxy(module: &Path) -> bool {
    let Ok(module) = std::fs::canonicalize(module) else {
        return false;
    };
    P11_KIT_PROXY_PATHS
        .iter()
        .any(|p| std::fs::canonicalize(p).is_ok_and(|p| p == module))
}

/// The `x-init-reserved` of the p11-kit registration of `module`, if it has one.
pub fn registered_args(module: &Path) -> Option<ModuleArgs> {
    let module = std::fs::canonicalize(module).ok()?;
    registered()
        .iter()
        .find(|r| std::fs::canonicalize(&r.path).is_ok_and(|p| p == module))
        .and_then(|r| r.args.clone())
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
        push(path.to_path_buf(), GIVEN);
    }
    if let Some(path) = std::env::var_os("PKCS11_MODULE_PATH").filter(|v| !v.is_empty()) {
        push(PathBuf::from(path), "PKCS11_MODULE_PATH");
    }
    if let Some(path) = uri.and_then(|u| u.module_path.clone()) {
        push(path, "URI module-path");
    }
    if let Some(name) = uri.and_then(|u| u.module_name.as_deref()) {
        let path = registered()
            .iter()
            .find(|r| r.name == name)
            .map(|r| r.path.clone())
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
            push(proxy, PROXY_SOURCE);
        }
    }
    for registration in registered {
        push(
            registration.path.clone(),
            &format!("p11-kit: {}", registration.name),
        );
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

/// The initialized tokens a module offers, and the slots it left out.
#[derive(Debug, Default, Serialize)]
pub struct Tokens {
    /// The tokens.
    pub tokens: Vec<TokenSummary>,
    /// Slots whose token could not be described, and why.
    pub skipped: Vec<String>,
}

/// The initialized tokens `module` offers, initializing it with `args` if it is not yet.
pub fn tokens(module: &Path, args: Option<&ModuleArgs>) -> Result<Tokens, Error> {
    let pkcs11 = context(module, args)?;
    let readable = initialized_tokens(&pkcs11)?;
    let mut out = Vec::new();
    for (slot, info) in readable.tokens {
        let uri = Pkcs11Uri {
            token: Some(unpadded(info.label()).to_owned()),
            manufacturer: Some(unpadded(info.manufacturer_id()).to_owned()),
            serial: Some(unpadded(info.serial_number()).to_owned()),
            model: Some(unpadded(info.model()).to_owned()),
            module_path: Some(module.to_path_buf()),
            ..Pkcs11Uri::default()
        };
        out.push(TokenSummary {
            label: unpadded(info.label()).to_owned(),
            manufacturer: unpadded(info.manufacturer_id()).to_owned(),
            model: unpadded(info.model()).to_owned(),
            serial: unpadded(info.serial_number()).to_owned(),
            slot_id: slot.id(),
            uri: uri.to_string(),
        });
    }
    Ok(Tokens {
        tokens: out,
        skipped: readable.skipped,
    })
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
        assert_eq!(found[0].source, GIVEN);
        assert!(uri_position > 0);
    }
}
