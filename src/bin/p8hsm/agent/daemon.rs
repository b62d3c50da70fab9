//! Where the agent listens and how it starts in the background.
//!
//! The socket's directory is created private (mode 0700; 0711 when other uids are
//! allowed, so that they can reach the socket but not list the directory) or, when it
//! exists, checked on the opened directory itself — never through a symbolic link.
//! The background agent is this program started again with `agent --from-parent`: its
//! parent writes the token to open and the PIN into a pipe on its standard input, so
//! neither is ever in its arguments (`/proc/PID/cmdline` is readable by every user).

use std::fs::DirBuilder;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use p8hsm::pkcs11::TokenLocation;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::Settings;
use crate::failure::{print, Failure};

/// The default socket: `$XDG_RUNTIME_DIR/p8hsm/agent.sock`, else a directory of the
/// user's own under the temporary directory.
pub fn socket_path(given: Option<PathBuf>) -> PathBuf {
    if let Some(path) = given {
        return path;
    }
    let dir = match std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        Some(runtime) => PathBuf::from(runtime).join("p8hsm"),
        None => std::env::temp_dir().join(format!("p8hsm-{}", rustix::process::getuid().as_raw())),
    };
    dir.join("agent.sock")
}

/// Creates the socket's directory private from the start, or checks that an existing
/// one is a directory of ours that others cannot write to (nor list, unless `shared`).
pub fn private_dir(socket: &Path, shared: bool) -> Result<PathBuf, Failure> {
    let dir = socket
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf();
    let setup = |reason: String| Failure::AgentSetup(reason);
    let mode = if shared { 0o711 } else { 0o700 };
    // The umask must not take the search bit others need from a shared directory.
    let old = rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o022));
    let created = DirBuilder::new().mode(mode).create(&dir);
    rustix::process::umask(old);
    match created {
        Ok(()) => return Ok(dir),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(setup(format!("cannot create {}: {e}", dir.display()))),
    }
    // Opened without following a symbolic link; owner and mode read from the handle.
    let opened = rustix::fs::open(
        &dir,
        rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::RDONLY,
        rustix::fs::Mode::empty(),
    )
    .map_err(|e| {
        setup(format!(
            "{} is not a directory of its own ({e}); it must not be a symbolic link",
            dir.display()
        ))
    })?;
    let stat = rustix::fs::fstat(&opened)
        .map_err(|e| setup(format!("cannot read {}: {e}", dir.display())))?;
    let forbidden = if shared { 0o066 } else { 0o077 };
    if stat.st_uid != rustix::process::getuid().as_raw() || stat.st_mode & forbidden != 0 {
        return Err(setup(format!(
            "{} must be a directory of yours that only you can use (mode {})",
            dir.display(),
            if shared { "0700 or 0711" } else { "0700" }
        )));
    }
    Ok(dir)
}

/// What a parent sends its background agent, before the PIN.
#[derive(Serialize, Deserialize)]
struct Launch<S, T> {
    settings: S,
    spec: T,
}

/// The most the parent sends: the launch line and a PIN.
const MAX_LAUNCH: usize = 64 * 1024;

/// Starts `p8hsm agent --from-parent` detached, sends it the token and the PIN through
/// its standard input, relays the environment it prints once it listens, and returns.
pub fn spawn(
    settings: &Settings,
    spec: &TokenLocation,
    pin: SecretString,
    pin_variable: Option<&str>,
) -> Result<(), Failure> {
    let dir = private_dir(&settings.socket, settings.shared())?;
    let log_path = dir.join("agent.log");
    // What this agent writes starts here: earlier agents' lines are not its reasons.
    let before = std::fs::metadata(&log_path).map_or(0, |m| m.len() as usize);
    let log = crate::audit::open_log(&log_path)
        .map_err(|e| Failure::AgentSetup(format!("cannot open {}: {e}", log_path.display())))?;
    let exe = std::env::current_exe().map_err(p8hsm::Error::internal)?;
    let mut child = {
        use std::os::unix::process::CommandExt;
        let mut command = Command::new(exe);
        if let Some(name) = pin_variable {
            // The PIN travels through the pipe; the variable it came from stays here.
            command.env_remove(name);
        }
        command
            .args(["agent", "--from-parent"])
            // Nothing in the environment may name a PIN either.
            .env_remove("P8HSM_KEY")
            .env_remove("P8HSM_PIN_SOURCE")
            // The module's arguments travel with the token, as the PIN does.
            .env_remove("P8HSM_MODULE_ARGS")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log)
            .process_group(0)
            .spawn()
            .map_err(p8hsm::Error::internal)?
    };
    let mut launch =
        serde_json::to_vec(&Launch { settings, spec }).map_err(p8hsm::Error::internal)?;
    launch.push(b'\n');
    let mut sent = Zeroizing::new(launch);
    sent.extend_from_slice(pin.expose_secret().as_bytes());
    drop(pin);
    if let Some(mut stdin) = child.stdin.take() {
        // A child that died early says why in its log, read below.
        let _ = stdin.write_all(&sent);
    }
    drop(sent);
    let mut env = String::new();
    let mut out = BufReader::new(
        child
            .stdout
            .take()
            .ok_or_else(|| Failure::AgentSetup("the agent's output is not a pipe".to_owned()))?,
    );
    for _ in 0..2 {
        if out.read_line(&mut env).map_err(p8hsm::Error::internal)? == 0 {
            let status = child.wait().map_err(p8hsm::Error::internal)?;
            let log = std::fs::read(&log_path).unwrap_or_default();
            let log = String::from_utf8_lossy(log.get(before..).unwrap_or_default());
            let lines: Vec<&str> = log.lines().collect();
            let at = lines.iter().rposition(|l| l.starts_with("error: "));
            let last = at.map_or("", |at| lines[at]);
            // Failing as the foreground agent would (a refused PIN: 4; an agent already
            // there: 12), it says so as the foreground agent would, with its status.
            let said = status.code().and_then(|code| u8::try_from(code).ok());
            if let (Some(status), Some(at)) = (said, at) {
                let next = lines
                    .get(at + 1)
                    .filter(|l| l.starts_with("hint: ") || l.starts_with("warning: "));
                return Err(Failure::AgentFailed {
                    status,
                    message: last.trim_start_matches("error: ").to_owned(),
                    next: next.map(|l| (*l).to_owned()),
                });
            }
            return Err(Failure::AgentSetup(format!(
                "the agent exited ({status}) before listening{}; see {}",
                if last.is_empty() {
                    String::new()
                } else {
                    format!(": {}", last.trim_start_matches("error: "))
                },
                log_path.display()
            )));
        }
    }
    print(&env)
}

/// The background agent's side: the launch line and the PIN from standard input.
pub fn read_parent() -> Result<(Settings, TokenLocation, SecretString), Failure> {
    let bytes = crate::input::read_fd(rustix::stdio::stdin(), MAX_LAUNCH)
        .map_err(|e| Failure::AgentSetup(format!("cannot read what the parent sent: {e}")))?;
    let newline = bytes
        .iter()
        .position(|b| *b == b'\n')
        .ok_or_else(|| Failure::AgentSetup("the parent sent no launch line".to_owned()))?;
    let launch: Launch<Settings, TokenLocation> = serde_json::from_slice(&bytes[..newline])
        .map_err(|e| Failure::AgentSetup(format!("the parent's launch line: {e}")))?;
    let pin = std::str::from_utf8(&bytes[newline + 1..])
        .map_err(|_| Failure::PinSource("the PIN is not UTF-8".to_owned()))?;
    if pin.is_empty() {
        return Err(Failure::PinSource("the parent sent no PIN".to_owned()));
    }
    Ok((launch.settings, launch.spec, SecretString::from(pin)))
}

/// Whether a path is a socket (and not a file of the user's that must never be removed).
pub fn is_socket(path: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket())
}
