//! `p8hsm token KIND` and `p8hsm sign KIND`: the options become the library's `Request`
//! once; it is signed with the token, or by the agent at `P8HSM_AGENT_SOCK` — with the
//! same output and exit status either way.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, SystemTime};

use p8hsm::apple::renew::Decision;
use p8hsm::protocol::{self, Reply};
use p8hsm::{Request, Service, Signed};

use super::files;
use super::json_line;
use super::request::{Renewal, RequestArgs};
use crate::failure::{print, Failure};
use crate::input;
use crate::settings::Config;

/// How long a client waits for the agent.
const TIMEOUT: Duration = Duration::from_secs(30);

pub fn sign(mut args: RequestArgs, config: &Config) -> Result<(), Failure> {
    let json = args.json;
    let out = args.out.take();
    let key_id = config.key_id(args.key_id.as_ref())?;
    let request = args.into_request(key_id)?;
    if let Some(out) = out {
        return keep(&request, &out, config);
    }
    let signed = match std::env::var_os("P8HSM_AGENT_SOCK").filter(|s| !s.is_empty()) {
        Some(socket) => via_agent(Path::new(&socket), &request)?,
        None => {
            // Refused before any PIN is read.
            request.precheck(SystemTime::now())?;
            Service::new(config.open()?).sign(&request)?.0
        }
    };
    if json {
        print(&json_line(&signed)?)
    } else {
        print(&signed.text())
    }
}

/// The largest file `--out` reads as a kept token.
const MAX_KEPT: usize = 64 * 1024;

/// `--out FILE --renew-within DURATION`: keeps the token in FILE, signing a new one
/// only when the kept one will not do; one line on stderr says which, nothing on stdout.
fn keep(request: &Request, out: &Renewal, config: &Config) -> Result<(), Failure> {
    let Request::Token(token_request) = request else {
        return Err(Failure::Usage(
            "--out keeps tokens, not signatures".to_owned(),
        ));
    };
    if std::env::var_os("P8HSM_AGENT_SOCK").is_some_and(|s| !s.is_empty()) {
        return Err(Failure::Usage(
            "--out reads the key's public key and recorded identities from the token itself; \
             unset P8HSM_AGENT_SOCK to renew with the token"
                .to_owned(),
        ));
    }
    let ttl = token_request.lifetime().ttl;
    if ttl <= out.within.as_secs() {
        return Err(Failure::Usage(format!(
            "--ttl {ttl} s is not longer than --renew-within {}: every run would renew the \
             token; shorten --renew-within",
            p8hsm::apple::renew::span(out.within)
        )));
    }
    let path = &out.path;
    let kept = read_kept(path, out.force)?;
    request.precheck(SystemTime::now())?;
    let service = Service::new(config.open()?);
    match service.renewal(token_request, kept.as_deref(), out.within)? {
        Decision::Keep { expires_at } => {
            eprintln!(
                "kept {}: it expires at {}",
                path.display(),
                date(expires_at)
            );
        }
        Decision::Renew { reason } => {
            let (signed, _) = service.sign(request)?;
            let Signed::Jwt(token) = signed else {
                return Err(p8hsm::Error::internal("a token request signed no token").into());
            };
            files::replace_keeping_owner(path, format!("{}\n", token.token).as_bytes())?;
            if let Ok(meta) = std::fs::metadata(path) {
                use std::os::unix::fs::PermissionsExt;
                let mode = meta.permissions().mode() & 0o777;
                if mode & 0o004 != 0 {
                    eprintln!(
                        "warning: {} is readable by everyone (mode {mode:04o}, kept from the file \
                         it replaced): the token is a bearer credential (chmod o-r it)",
                        path.display()
                    );
                }
            }
            eprintln!(
                "renewed {} ({reason}): it expires at {}",
                path.display(),
                date(token.expires_at)
            );
        }
    }
    Ok(())
}

fn date(unix: u64) -> String {
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_secs(unix)).to_string()
}

/// The kept file's text: `None` when there is no file (or an empty one); an error when
/// something other than a regular file holding a token is there (a configuration, a
/// binary…), which p8hsm replaces only with `--force`.
fn read_kept(path: &Path, force: bool) -> Result<Option<String>, Failure> {
    let file_error = |source: std::io::Error| Failure::File {
        path: path.to_path_buf(),
        source,
    };
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(file_error(e)),
        Ok(meta) if !meta.file_type().is_file() => {
            return Err(file_error(std::io::Error::other(
                "it is not a regular file (a link, directory, FIFO or device): p8hsm replaces \
                 only regular files",
            )))
        }
        Ok(meta) if meta.len() == 0 => return Ok(None),
        Ok(_) => {}
    }
    let text = input::read(path, MAX_KEPT)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes.to_vec()).ok());
    match text {
        Some(text) if is_token(&text) => Ok(Some(text)),
        text if force => Ok(text),
        _ => Err(Failure::Usage(format!(
            "{} holds something other than a token, which --out would replace: name a file \
             of its own for the token (or give --force to replace it)",
            path.display()
        ))),
    }
}

/// Whether `text` is one line holding a compact JWS signed with ES256: a token, of
/// whichever request or key (a kept token of another request is renewed).
fn is_token(text: &str) -> bool {
    use base64::Engine;
    let line = text.strip_suffix('\n').unwrap_or(text);
    let parts: Vec<&str> = line.split('.').collect();
    let [header, _, _] = parts.as_slice() else {
        return false;
    };
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header)
        .ok()
        .and_then(|h| serde_json::from_slice::<serde_json::Value>(&h).ok())
        .is_some_and(|h| h["alg"] == "ES256")
}

/// Sends `request` to the agent listening on `socket` and returns what it signed.
fn via_agent(socket: &Path, request: &Request) -> Result<Signed, Failure> {
    let unreachable = |reason: String| Failure::AgentUnreachable {
        socket: socket.to_path_buf(),
        reason,
    };
    let mut stream = UnixStream::connect(socket).map_err(|e| unreachable(e.to_string()))?;
    // Whoever listens there gets the request: it must be an agent of this user's (or
    // root's, or the uid P8HSM_AGENT_UID names), not a socket another user put in its way.
    let agent_uid = rustix::net::sockopt::socket_peercred(&stream)
        .map_err(|e| unreachable(e.to_string()))?
        .uid
        .as_raw();
    let trusted = std::env::var("P8HSM_AGENT_UID")
        .ok()
        .and_then(|uid| uid.parse::<u32>().ok());
    if agent_uid != rustix::process::getuid().as_raw()
        && agent_uid != 0
        && Some(agent_uid) != trusted
    {
        return Err(unreachable(format!(
            "it is served by uid {agent_uid}, not by you (set P8HSM_AGENT_UID={agent_uid} if \
             that agent is yours to use)"
        )));
    }
    stream
        .set_read_timeout(Some(TIMEOUT))
        .and_then(|()| stream.set_write_timeout(Some(TIMEOUT)))
        .map_err(|e| unreachable(e.to_string()))?;
    let line = protocol::request_line(&serde_json::Value::from(1), request)?;
    stream
        .write_all(&line)
        .map_err(|e| unreachable(e.to_string()))?;
    // At most one reply line of bounded size: whatever answers there is not trusted.
    let mut reply = Vec::new();
    let mut byte = [0u8; 4096];
    loop {
        let n = stream
            .read(&mut byte)
            .map_err(|e| unreachable(e.to_string()))?;
        if n == 0 {
            break;
        }
        reply.extend_from_slice(&byte[..n]);
        if reply.contains(&b'\n') {
            break;
        }
        if reply.len() > protocol::MAX_REPLY {
            return Err(unreachable(format!(
                "the answer is over {} bytes, which is not the agent's protocol",
                protocol::MAX_REPLY
            )));
        }
    }
    let line = reply.split(|b| *b == b'\n').next().unwrap_or_default();
    match serde_json::from_slice::<Reply>(line) {
        Ok(Reply::Ok { result, .. }) => Ok(result),
        Ok(Reply::Err { error, .. }) => Err(Failure::Agent(error)),
        Err(_) => Err(unreachable(
            "the answer is not the agent's protocol".to_owned(),
        )),
    }
}
