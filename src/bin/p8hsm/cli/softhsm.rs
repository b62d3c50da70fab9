//! `p8hsm softhsm init`: a SoftHSM token store and a token with random PINs in 0600
//! files, made through PKCS#11 itself, and the environment that points p8hsm at it.
//! Safe to run twice: an existing token is kept.

use std::fs::DirBuilder;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use p256::elliptic_curve::rand_core::{OsRng, RngCore};
use p8hsm::pkcs11::{self, modules::SOFTHSM_PATHS};
use p8hsm::Error;
use secrecy::SecretString;
use zeroize::Zeroizing;

use super::files;
use crate::failure::{print, shell_word, Failure};
use crate::settings::Config;

/// SoftHSM's configuration, with `@TOKENDIR@` for the store.
const CONF: &str = include_str!("../../../../softhsm/softhsm2.conf.in");

/// Where the store goes without `--dir`: `$XDG_DATA_HOME/p8hsm/softhsm`, else
/// `~/.local/share/p8hsm/softhsm`.
fn default_dir() -> Result<PathBuf, Failure> {
    let data = std::env::var_os("XDG_DATA_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|h| !h.is_empty())
                .map(|h| Path::new(&h).join(".local/share"))
        })
        .ok_or_else(|| {
            Failure::Usage("neither XDG_DATA_HOME nor HOME is set: give --dir".into())
        })?;
    Ok(data.join("p8hsm/softhsm"))
}

pub fn init(dir: Option<&Path>, label: &str, config: &Config) -> Result<(), Failure> {
    let dir = match dir {
        Some(dir) => absolute(dir)?,
        None => default_dir()?,
    };
    if label.is_empty() || label.len() > 32 || label.chars().any(char::is_control) {
        return Err(Failure::Usage(
            "a token label is 1 to 32 bytes without control characters".to_owned(),
        ));
    }
    if dir.to_string_lossy().contains(['#', '=', '\n', '\r']) {
        return Err(Failure::Usage(format!(
            "SoftHSM's configuration file cannot hold a path with #, = or a line break ({}): \
             give another --dir",
            dir.display()
        )));
    }
    let module = match config.explicit_module() {
        Some(module) => module.to_path_buf(),
        None => SOFTHSM_PATHS
            .iter()
            .map(PathBuf::from)
            .find(|p| p.is_file())
            .ok_or(Error::NoModule {
                searched: SOFTHSM_PATHS.iter().map(|p| p.to_string()).collect(),
            })?,
    };
    let tokens = dir.join("tokens");
    // A directory that is there already must be as private as one made here; checked
    // before anything is made in it, and again (with its tokens/) once made.
    files::safe_ancestors(&dir)?;
    if dir.exists() {
        files::own_directory(&dir)?;
    }
    // Private from the start: 0700 directories, 0600 files, never chmod-ed after.
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&tokens)
        .map_err(|source| Failure::Write {
            path: tokens.clone(),
            source,
        })?;
    for dir in [&dir, &tokens] {
        files::own_directory(dir)?;
    }
    let conf = dir.join("softhsm2.conf");
    let conf_text = CONF.replace("@TOKENDIR@", &tokens.to_string_lossy());
    files::write_atomically(&conf, conf_text.as_bytes())?;
    // SoftHSM reads its configuration when the module is initialized, which has not
    // happened yet in this process.
    std::env::set_var("SOFTHSM2_CONF", &conf);

    let user_pin = dir.join("user.pin");
    let so_pin = dir.join("so.pin");
    let labels: Vec<String> = pkcs11::modules::tokens(&module, None)?
        .tokens
        .into_iter()
        .map(|t| t.label)
        .collect();
    if labels.iter().any(|l| l == label) {
        if !user_pin.is_file() {
            return Err(Failure::Usage(format!(
                "token \"{label}\" exists in {} but {} is missing; remove {} to start over \
                 (its keys are lost)",
                tokens.display(),
                user_pin.display(),
                tokens.display()
            )));
        }
        eprintln!("token \"{label}\" already exists in {}", tokens.display());
    } else {
        if let Some(other) = labels.first() {
            return Err(Failure::Usage(format!(
                "{} already holds token \"{other}\" and its PINs: one token per directory, \
                 give another --dir",
                dir.display()
            )));
        }
        make_token(&module, label, &tokens, &user_pin, &so_pin)?;
        eprintln!(
            "created token \"{label}\" in {} (PINs in {} and {}, mode 0600)",
            tokens.display(),
            user_pin.display(),
            so_pin.display()
        );
    }
    print(&format!(
        "export SOFTHSM2_CONF={}\nexport P8HSM_MODULE={}\nexport P8HSM_TOKEN={}\nexport \
         P8HSM_PIN_SOURCE={}\n",
        shell_word(&conf.to_string_lossy()),
        shell_word(&module.to_string_lossy()),
        shell_word(label),
        shell_word(&format!("file:{}", user_pin.display()))
    ))
}

/// Writes the PINs to private files under random names, initializes the token, then
/// gives the PIN files their names. On failure nothing is left: not the PIN files (a
/// crash leaves at most unnamed ones, which never stand in a later run's way), not the
/// token's directory.
fn make_token(
    module: &Path,
    label: &str,
    tokens: &Path,
    user_pin: &Path,
    so_pin: &Path,
) -> Result<(), Failure> {
    let before = entries(tokens);
    let user = random_pin();
    let so = random_pin();
    let dir = user_pin.parent().unwrap_or(Path::new("."));
    let result = (|| {
        let so_file = files::private_file(dir, format!("{}\n", so.as_str()).as_bytes())?;
        let user_file = files::private_file(dir, format!("{}\n", user.as_str()).as_bytes())?;
        pkcs11::init_token(
            module,
            label,
            &SecretString::from(so.as_str()),
            &SecretString::from(user.as_str()),
        )?;
        files::put(so_file, so_pin)?;
        files::put(user_file, user_pin)
    })();
    if result.is_err() {
        for made in entries(tokens).difference(&before) {
            let _ = std::fs::remove_dir_all(tokens.join(made));
        }
    }
    result
}

/// 24 hexadecimal digits from the OS's random generator.
fn random_pin() -> Zeroizing<String> {
    let mut bytes = Zeroizing::new([0u8; 12]);
    OsRng.fill_bytes(&mut *bytes);
    let mut hex = Zeroizing::new([0u8; 24]);
    let pin = base16ct::lower::encode_str(&*bytes, &mut *hex).expect("24 bytes hold 12 in hex");
    Zeroizing::new(pin.to_owned())
}

fn entries(dir: &Path) -> std::collections::BTreeSet<std::ffi::OsString> {
    std::fs::read_dir(dir)
        .map(|it| it.filter_map(|e| e.ok().map(|e| e.file_name())).collect())
        .unwrap_or_default()
}

fn absolute(dir: &Path) -> Result<PathBuf, Failure> {
    std::path::absolute(dir).map_err(|source| Failure::File {
        path: dir.to_path_buf(),
        source,
    })
}
