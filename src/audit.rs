//! What the long-lived front ends (the agent and the service) share: their lines — one
//! audit line per token handed out, naming who asked, and events (listening, refused
//! peers, stopping), as text or JSON, to stderr or an audit log; never the PIN, the whole
//! token only with `--audit-tokens` — and their hardening (non-dumpable).

use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use p8hsm::apple::cache::Source;
use p8hsm::{Request, Signed};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The one claim an audit line reads back from the token it signed.
#[derive(Deserialize)]
struct Audience<'a> {
    #[serde(borrow)]
    aud: Option<std::borrow::Cow<'a, str>>,
}

/// How the lines look.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// `time event key=value …`
    Text,
    /// One JSON object a line.
    Json,
}

/// Where the lines go and how they look.
pub struct Audit {
    /// The audit log, or stderr when `None`.
    file: Option<File>,
    format: LogFormat,
    tokens: bool,
}

impl Audit {
    pub fn new(file: Option<File>, format: LogFormat, tokens: bool) -> Audit {
        Audit {
            file,
            format,
            tokens,
        }
    }

    /// The audit line for a token handed out to `who` (the peer's fields: its uid and
    /// pid, or its certificate's name and address). The caller hands the token out only
    /// if this succeeds.
    pub fn sign(
        &self,
        request: &Request,
        signed: &Signed,
        source: Source,
        who: &[(&'static str, String)],
    ) -> io::Result<()> {
        let token = signed.line();
        let payload = token.split('.').nth(1).unwrap_or(token);
        let digest = base16ct::lower::encode_string(&Sha256::digest(payload.as_bytes()));
        let aud = URL_SAFE_NO_PAD
            .decode(payload)
            .ok()
            .and_then(|claims| {
                serde_json::from_slice::<Audience>(&claims)
                    .ok()
                    .and_then(|claims| claims.aud.map(|aud| aud.into_owned()))
            })
            .unwrap_or_else(|| "-".to_owned());
        let mut fields = vec![
            ("key_id", request.key_id().to_string()),
            ("kind", request.spec().command()),
            ("aud", aud),
            ("claims_sha256", digest),
        ];
        fields.extend(who.iter().cloned());
        fields.push(("source", source.name().to_owned()));
        if self.tokens {
            fields.push(("token", token.to_owned()));
        }
        self.write("sign", &fields)
    }

    /// An event line; a failure to write it is not the caller's concern.
    pub fn event(&self, event: &str, fields: &[(&str, String)]) {
        let _ = self.write(event, fields);
    }

    /// One line, written with one write(2) call (the log is opened for appending, so
    /// lines from many threads never interleave).
    fn write(&self, event: &str, fields: &[(&str, String)]) -> io::Result<()> {
        let time = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        let mut line = match self.format {
            LogFormat::Json => {
                let mut object = serde_json::Map::new();
                object.insert("time".into(), serde_json::json!(time));
                object.insert("event".into(), event.into());
                for (k, v) in fields {
                    object.insert((*k).into(), v.clone().into());
                }
                serde_json::Value::Object(object).to_string()
            }
            LogFormat::Text => {
                let mut text = format!("{time:.3} {event}");
                for (k, v) in fields {
                    text.push(' ');
                    text.push_str(k);
                    text.push('=');
                    // What `escape_default` leaves as it is, copied at once.
                    if v.bytes()
                        .all(|b| (b' '..=b'~').contains(&b) && !b"\\'\"".contains(&b))
                    {
                        text.push_str(v);
                    } else {
                        let _ = write!(text, "{}", v.escape_default());
                    }
                }
                text
            }
        };
        line.push('\n');
        match &self.file {
            Some(file) => (&*file).write_all(line.as_bytes()),
            None => io::stderr().lock().write_all(line.as_bytes()),
        }
    }
}

/// Opens a log for appending: created with mode 0600, only ever a regular file (a
/// FIFO would block every write), never through a symbolic link.
pub fn open_log(path: &Path) -> io::Result<File> {
    let not_regular = || io::Error::new(io::ErrorKind::InvalidInput, "not a regular file");
    if std::fs::symlink_metadata(path).is_ok_and(|m| !m.is_file()) {
        return Err(not_regular());
    }
    // Never through a symbolic link: in a shared directory another user could point
    // it at a file of the process's user, which it would then append to.
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .custom_flags((rustix::fs::OFlags::NONBLOCK | rustix::fs::OFlags::NOFOLLOW).bits() as i32)
        .open(path)?;
    // The path may have changed in between: the opened file is what counts.
    if !file.metadata()?.is_file() {
        return Err(not_regular());
    }
    Ok(file)
}

/// Marks this process non-dumpable: no core file, no ptrace by other processes of the
/// same uid, and /proc/PID/mem readable only by root. Long-lived front ends hold the PIN.
pub fn not_dumpable() {
    // Failing leaves the process as it was; nothing better can be done.
    let _ = rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable);
}
