//! `p8hsm agent`: logs in once, then hands out tokens to local clients over a unix
//! socket, from the token cache when it can and from the session pool when it must;
//! checks every peer's uid, audits every token it hands out, and rides out HSM outages.

pub mod client;
pub mod protocol;

use std::collections::HashMap;
use std::fs::{DirBuilder, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use p256::ecdsa::Signature;
use p8hsm::apple::cache::{Source, TokenCache};
use p8hsm::apple::metadata::KeyMetadata;
use p8hsm::{Error, Es256Signer, HsmKey, KeyId, Token};
use sha2::{Digest, Sha256};

use crate::cli::args::{AgentArgs, LogFormat};
use crate::cli::render;
use crate::cli::run::{Ctx, Failure};
use crate::cli::signing::{read_metadata, Call, Signed};
use protocol::{error_reply, Reply, MAX_REQUEST};

/// Connections served at once; more are told the agent is busy.
const MAX_CONNECTIONS: usize = 64;
/// How long a client may take to send a request line.
const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Waits before trying a token that went away again: doubling up to the last.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(5));

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Starts the agent: in the background (a copy of this process in its own process
/// group, logging to `agent.log` beside the socket), or with `--foreground` here.
pub fn run(args: &AgentArgs, ctx: &Ctx) -> Result<(), Failure> {
    let socket = socket_path(args)?;
    if !args.foreground {
        return spawn_background(&socket);
    }
    serve(args, ctx, &socket)
}

fn socket_path(args: &AgentArgs) -> Result<PathBuf, Error> {
    if let Some(path) = &args.socket {
        return Ok(path.clone());
    }
    let dir = match std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        Some(runtime) => PathBuf::from(runtime).join("p8hsm"),
        None => std::env::temp_dir().join(format!("p8hsm-{}", rustix::process::getuid().as_raw())),
    };
    Ok(dir.join("agent.sock"))
}

/// Runs `p8hsm … agent --foreground` detached, relays the environment it prints once
/// it listens, and returns.
fn spawn_background(socket: &Path) -> Result<(), Failure> {
    let dir = private_dir(socket)?;
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(dir.join("agent.log"))
        .map_err(|e| Error::AgentSetup {
            reason: format!("cannot open {}: {e}", dir.join("agent.log").display()),
        })?;
    let exe = std::env::current_exe().map_err(Error::internal)?;
    let mut args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    args.push("--foreground".into());
    if !args.iter().any(|a| a == "--socket") {
        args.push("--socket".into());
        args.push(socket.into());
    }
    let mut child = {
        use std::os::unix::process::CommandExt;
        Command::new(exe)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .process_group(0)
            .spawn()
            .map_err(Error::internal)?
    };
    let mut env = String::new();
    let mut out = BufReader::new(child.stdout.take().expect("piped stdout"));
    for _ in 0..2 {
        if out.read_line(&mut env).map_err(Error::internal)? == 0 {
            let status = child.wait().map_err(Error::internal)?;
            return Err(Error::AgentSetup {
                reason: format!(
                    "the agent exited ({status}) before listening; see {}",
                    dir.join("agent.log").display()
                ),
            }
            .into());
        }
    }
    crate::cli::run::print(&env)
}

/// Creates the socket's directory with mode 0700 from the start, or checks that an
/// existing one is ours and private.
fn private_dir(socket: &Path) -> Result<PathBuf, Error> {
    let dir = socket.parent().unwrap_or(Path::new(".")).to_path_buf();
    let setup = |reason: String| Error::AgentSetup { reason };
    match DirBuilder::new().mode(0o700).create(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let meta = std::fs::metadata(&dir).map_err(|e| setup(e.to_string()))?;
            if meta.uid() != rustix::process::getuid().as_raw() || meta.mode() & 0o077 != 0 {
                return Err(setup(format!(
                    "{} must be a directory of yours that only you can use (mode 0700)",
                    dir.display()
                )));
            }
        }
        Err(e) => return Err(setup(format!("cannot create {}: {e}", dir.display()))),
    }
    Ok(dir)
}

/// A signer in front of the token that stops calling it for a while after it went
/// away. (After the token refused the PIN, [`Token`] itself never tries it again.)
struct Gate<'t> {
    key: HsmKey<'t>,
    state: &'t GateState,
}

#[derive(Default)]
struct GateState {
    /// Until when the token is left alone, and the next wait.
    backoff: Mutex<Option<(Instant, Duration)>>,
}

impl Es256Signer for Gate<'_> {
    fn key_id(&self) -> &KeyId {
        self.key.key_id()
    }

    fn sign_es256(&self, message: &[u8]) -> Result<Signature, Error> {
        if let Some((until, _)) = *lock(&self.state.backoff) {
            if Instant::now() < until {
                return Err(Error::TokenUnavailable);
            }
        }
        match self.key.sign_es256(message) {
            Ok(signature) => {
                *lock(&self.state.backoff) = None;
                Ok(signature)
            }
            // Not an outage: no backoff, so the answer stays `pin_refused`.
            Err(e @ (Error::PinIncorrect { .. } | Error::PinLocked)) => Err(e),
            Err(e) => {
                let mut backoff = lock(&self.state.backoff);
                let wait = match *backoff {
                    Some((_, last)) => (last * 2).min(BACKOFF.1),
                    None => BACKOFF.0,
                };
                *backoff = Some((Instant::now() + wait, wait));
                Err(e)
            }
        }
    }
}

/// A key the agent signs with, behind its gate, and what is recorded with it.
type AgentKey = Arc<(Gate<'static>, Option<KeyMetadata>)>;

/// Everything the connection threads share.
struct Agent {
    token: &'static Token,
    cache: TokenCache,
    keys: Mutex<HashMap<KeyId, AgentKey>>,
    gate: &'static GateState,
    allowed_keys: Vec<KeyId>,
    allow_uid: Vec<u32>,
    allow_gid: Vec<u32>,
    audit: Mutex<Box<dyn Write + Send>>,
    audit_tokens: bool,
    log_format: LogFormat,
    connections: AtomicUsize,
}

fn serve(args: &AgentArgs, ctx: &Ctx, socket: &Path) -> Result<(), Failure> {
    if ctx.pin_is_prompt() && !std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        return Err(Error::PinSource {
            reason: "the agent has no terminal to prompt on".to_owned(),
        }
        .into());
    }
    let token: &'static Token = Box::leak(Box::new(ctx.open()?));
    private_dir(socket)?;
    if UnixStream::connect(socket).is_ok() {
        return Err(Error::AgentSetup {
            reason: format!("an agent already listens on {}", socket.display()),
        }
        .into());
    }
    let _ = std::fs::remove_file(socket);
    // The socket is created private: nothing between bind and a chmod to race.
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o177));
    let listener = UnixListener::bind(socket).map_err(|e| Error::AgentSetup {
        reason: format!("cannot listen on {}: {e}", socket.display()),
    })?;
    let audit: Box<dyn Write + Send> = match &args.audit_log {
        Some(path) => Box::new(
            OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o600)
                .open(path)
                .map_err(|e| Error::AgentSetup {
                    reason: format!("cannot open the audit log {}: {e}", path.display()),
                })?,
        ),
        None => Box::new(std::io::stderr()),
    };
    let agent: &'static Agent = Box::leak(Box::new(Agent {
        token,
        cache: TokenCache::default(),
        keys: Mutex::new(HashMap::new()),
        gate: Box::leak(Box::default()),
        allowed_keys: args.keys.clone(),
        allow_uid: args.allow_uid.clone(),
        allow_gid: args.allow_gid.clone(),
        audit: Mutex::new(audit),
        audit_tokens: args.audit_tokens,
        log_format: args.log_format,
        connections: AtomicUsize::new(0),
    }));

    let socket_owned = socket.to_path_buf();
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
    ])
    .map_err(Error::internal)?;
    std::thread::spawn(move || {
        if let Some(signal) = signals.forever().next() {
            let _ = std::fs::remove_file(&socket_owned);
            agent.log("stopped", &[("signal", signal.to_string())]);
            std::process::exit(0);
        }
    });

    let env = format!(
        "P8HSM_AGENT_SOCK={}; export P8HSM_AGENT_SOCK;\nP8HSM_AGENT_PID={}; export P8HSM_AGENT_PID;\n",
        shell_quote(&socket.to_string_lossy()),
        std::process::id()
    );
    crate::cli::run::print(&env)?;
    agent.log(
        "listening",
        &[
            ("socket", socket.display().to_string()),
            ("token", token.label().to_owned()),
        ],
    );
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        if agent.connections.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
            agent.connections.fetch_sub(1, Ordering::SeqCst);
            let mut stream = stream;
            let _ = write_reply(
                &mut stream,
                &error_reply(
                    serde_json::Value::Null,
                    "busy",
                    "the agent is serving too many connections",
                    None,
                ),
            );
            continue;
        }
        std::thread::spawn(move || {
            agent.connection(stream);
            agent.connections.fetch_sub(1, Ordering::SeqCst);
        });
    }
    Ok(())
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

fn write_reply(stream: &mut UnixStream, reply: &Reply) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(reply).map_err(std::io::Error::other)?;
    line.push(b'\n');
    stream.write_all(&line)
}

/// The peer at the other end of a connection.
struct Peer {
    pid: i32,
    uid: u32,
    gid: u32,
}

impl Agent {
    fn connection(&self, mut stream: UnixStream) {
        let peer = match rustix::net::sockopt::socket_peercred(&stream) {
            Ok(cred) => Peer {
                pid: cred.pid.as_raw_nonzero().get(),
                uid: cred.uid.as_raw(),
                gid: cred.gid.as_raw(),
            },
            Err(_) => return,
        };
        let own = rustix::process::getuid().as_raw();
        if peer.uid != own
            && !self.allow_uid.contains(&peer.uid)
            && !self.allow_gid.contains(&peer.gid)
        {
            self.log(
                "refused",
                &[
                    ("peer_pid", peer.pid.to_string()),
                    ("peer_uid", peer.uid.to_string()),
                ],
            );
            let _ = write_reply(
                &mut stream,
                &error_reply(
                    serde_json::Value::Null,
                    "forbidden",
                    &format!("uid {} may not use this agent", peer.uid),
                    Some("start the agent with --allow-uid or --allow-gid to let it".to_owned()),
                ),
            );
            return;
        }
        let _ = stream.set_read_timeout(Some(READ_TIMEOUT));
        let _ = stream.set_write_timeout(Some(READ_TIMEOUT));
        let Ok(reading) = stream.try_clone() else {
            return;
        };
        let mut reader = BufReader::new(reading);
        let mut line = Vec::new();
        loop {
            line.clear();
            match reader
                .by_ref()
                .take(MAX_REQUEST as u64 + 1)
                .read_until(b'\n', &mut line)
            {
                Ok(0) | Err(_) => return, // closed, or too slow
                Ok(_) => {}
            }
            if line.last() != Some(&b'\n') {
                let _ = write_reply(
                    &mut stream,
                    &error_reply(
                        serde_json::Value::Null,
                        "too_large",
                        &format!("a request is one line of at most {MAX_REQUEST} bytes"),
                        None,
                    ),
                );
                return;
            }
            let reply = self.handle(&line, &peer);
            if write_reply(&mut stream, &reply).is_err() {
                return;
            }
        }
    }

    fn handle(&self, line: &[u8], peer: &Peer) -> Reply {
        let request = match protocol::parse(line) {
            Ok(request) => request,
            Err(reply) => return *reply,
        };
        match self.sign(&request.call, peer) {
            Ok((result, source)) => Reply::Ok {
                id: request.id,
                ok: true,
                source: match source {
                    Source::Hit => "hit",
                    Source::Fresh => "fresh",
                    Source::Stale => "stale",
                }
                .to_owned(),
                result,
            },
            Err(e) => {
                let (code, message, hint) = describe_error(&e);
                error_reply(request.id, code, &message, hint)
            }
        }
    }

    fn sign(&self, call: &Call, peer: &Peer) -> Result<(Signed, Source), Error> {
        let key_id = call.key_id().cloned().ok_or(Error::MissingInput {
            what: "key_id",
            why: "the agent signs with the key the request names",
        })?;
        if !self.allowed_keys.is_empty() && !self.allowed_keys.contains(&key_id) {
            return Err(Error::KeyNotAllowed {
                key_id: key_id.to_string(),
            });
        }
        let key = self.key(&key_id)?;
        let (name, allowed) = call.name();
        if let Some(meta) = &key.1 {
            meta.allow(&key_id, &name, allowed)?;
        }
        let (signed, source) = call.sign(&key.0, key.1.as_ref(), Some(&self.cache))?;
        self.audit(&key_id, &name, &signed, source, peer);
        Ok((signed, source))
    }

    /// The key and its metadata, looked up once.
    fn key(&self, key_id: &KeyId) -> Result<AgentKey, Error> {
        if let Some(key) = lock(&self.keys).get(key_id) {
            return Ok(key.clone());
        }
        let hsm_key = self.token.key(key_id).map_err(|e| match e {
            Error::Pkcs11 { .. } => Error::TokenUnavailable,
            other => other,
        })?;
        let meta = read_metadata(self.token, key_id)?;
        let entry = Arc::new((
            Gate {
                key: hsm_key,
                state: self.gate,
            },
            meta,
        ));
        lock(&self.keys).insert(key_id.clone(), entry.clone());
        Ok(entry)
    }

    fn audit(&self, key_id: &KeyId, kind: &str, signed: &Signed, source: Source, peer: &Peer) {
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
            ("key_id", key_id.to_string()),
            ("kind", kind.to_owned()),
            ("aud", aud),
            ("claims_sha256", digest),
            ("peer_pid", peer.pid.to_string()),
            ("peer_uid", peer.uid.to_string()),
            (
                "source",
                match source {
                    Source::Hit => "hit",
                    Source::Fresh => "fresh",
                    Source::Stale => "stale",
                }
                .to_owned(),
            ),
        ];
        if self.audit_tokens {
            fields.push(("token", token.to_owned()));
        }
        self.log("sign", &fields);
    }

    /// One audit or event line, JSON or text.
    fn log(&self, event: &str, fields: &[(&str, String)]) {
        let time = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        let line = match self.log_format {
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
                    text.push_str(&format!(" {k}={v}"));
                }
                text
            }
        };
        let mut audit = lock(&self.audit);
        let _ = writeln!(audit, "{line}");
        let _ = audit.flush();
    }
}

/// The protocol's error code, message and hint for an error.
fn describe_error(e: &Error) -> (&'static str, String, Option<String>) {
    let code = match e {
        // After startup, a token that cannot be found or called has gone away.
        Error::TokenUnavailable
        | Error::Pkcs11 { .. }
        | Error::TokenNotFound { .. }
        | Error::ModuleLoad { .. } => "token_unavailable",
        Error::PinIncorrect { .. } | Error::PinLocked => "pin_refused",
        Error::KeyNotFound { .. } => "key_not_found",
        Error::KeyNotAllowed { .. } => "key_not_allowed",
        Error::KeyKindMismatch { .. } | Error::MetadataContradiction { .. } => "key_kind",
        Error::Internal(_) => "internal",
        Error::InvalidOption { .. } => "usage",
        _ => "invalid_input",
    };
    if code == "token_unavailable" {
        let message = match e {
            Error::TokenUnavailable => e.to_string(),
            _ => format!("token unavailable: {e}"),
        };
        return (code, message, render::hint(&Error::TokenUnavailable));
    }
    (code, e.to_string(), render::hint(e))
}
