//! The agent's lines: one audit line per token handed out, and events (listening,
//! refused peers, stopping), as text or JSON, to stderr or an audit log. Never the PIN;
//! the whole token only with `--audit-tokens`.

use std::fs::File;
use std::io::{self, Write};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use p8hsm::apple::cache::Source;
use p8hsm::{Request, Signed};
use sha2::{Digest, Sha256};

use super::LogFormat;

/// Where the lines go and how they look.
pub struct Audit {
    /// The audit log, or stderr when `None`.
    file: Option<File>,
    format: LogFormat,
    tokens: bool,
}

/// The peer at the other end of a connection.
#[derive(Debug, Clone, Copy)]
pub struct Peer {
    pub pid: i32,
    pub uid: u32,
    pub gid: u32,
}

impl Audit {
    pub fn new(file: Option<File>, format: LogFormat, tokens: bool) -> Audit {
        Audit {
            file,
            format,
            tokens,
        }
    }

    /// The audit line for a token handed out. The caller hands the token out only if
    /// this succeeds.
    pub fn sign(
        &self,
        request: &Request,
        signed: &Signed,
        source: Source,
        peer: &Peer,
    ) -> io::Result<()> {
        let token = signed.line();
        let payload = token.split('.').nth(1).unwrap_or(token);
        let digest: String = Sha256::digest(payload.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let aud = URL_SAFE_NO_PAD
            .decode(payload)
            .ok()
            .and_then(|claims| serde_json::from_slice::<serde_json::Value>(&claims).ok())
            .and_then(|claims| {
                claims
                    .get("aud")
                    .and_then(|a| a.as_str())
                    .map(str::to_owned)
            })
            .unwrap_or_else(|| "-".to_owned());
        let mut fields = vec![
            ("key_id", request.key_id().to_string()),
            ("kind", request.spec().command()),
            ("aud", aud),
            ("claims_sha256", digest),
            ("peer_pid", peer.pid.to_string()),
            ("peer_uid", peer.uid.to_string()),
            ("source", source.name().to_owned()),
        ];
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
                    text.push_str(&format!(" {k}={}", v.escape_default()));
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
