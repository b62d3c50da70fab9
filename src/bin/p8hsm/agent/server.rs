//! The agent's listener and its connections.
//!
//! Limits: a request is one line of at most [`MAX_REQUEST`] bytes, which must arrive
//! whole within [`REQUEST_TIME`] of the agent starting to wait for it, or the connection
//! closes; at most [`MAX_CONNECTIONS`] connections at once, and when all are taken a new
//! one evicts the connection that has waited longest for its request or for its reply to
//! be read (one being signed for is never evicted), so slow, idle or unread clients
//! cannot starve others.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use p8hsm::apple::cache::Source;
use p8hsm::apple::metadata::KeyMetadata;
use p8hsm::pipeline::{self, Gate};
use p8hsm::protocol::{self, Reply, MAX_REQUEST};
use p8hsm::{KeyId, Request, Service, Signed, Token};

use super::daemon::{is_socket, private_dir};
use super::Settings;
use crate::audit::Audit;
use crate::failure::{print, shell_word, Failure};

/// Connections served at once.
const MAX_CONNECTIONS: usize = 64;
/// How long a client may take to send a whole request line.
const REQUEST_TIME: Duration = Duration::from_secs(10);
/// How long a client may take to read a reply.
const REPLY_TIME: Duration = Duration::from_secs(10);

/// Everything the connection threads share.
struct Agent {
    service: Service,
    audit: Audit,
    allowed_keys: Vec<KeyId>,
    allow_uid: Vec<u32>,
    allow_gid: Vec<u32>,
    connections: Connections,
}

/// The open connections, and since when each has waited for a request line.
#[derive(Default)]
struct Connections {
    next: AtomicU64,
    open: Mutex<HashMap<u64, (UnixStream, Option<Instant>)>>,
}

impl Connections {
    /// The open connections, whether or not a connection thread panicked holding them.
    fn open(&self) -> std::sync::MutexGuard<'_, HashMap<u64, (UnixStream, Option<Instant>)>> {
        self.open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Registers a connection, evicting the one that has waited longest for its
    /// request when all are taken; `None` when all are being served.
    fn admit(&self, stream: &UnixStream) -> Option<u64> {
        let handle = stream.try_clone().ok()?;
        let mut open = self.open();
        if open.len() >= MAX_CONNECTIONS {
            let oldest = open
                .iter()
                .filter_map(|(id, (_, waiting))| waiting.map(|since| (*id, since)))
                .min_by_key(|(_, since)| *since)
                .map(|(id, _)| id)?;
            if let Some((evicted, _)) = open.remove(&oldest) {
                let _ = evicted.shutdown(std::net::Shutdown::Both);
            }
        }
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        open.insert(id, (handle, Some(Instant::now())));
        Some(id)
    }

    /// Marks a connection as waiting for a request (`true`) or being served.
    fn waiting(&self, id: u64, waiting: bool) {
        if let Some(entry) = self.open().get_mut(&id) {
            entry.1 = waiting.then(Instant::now);
        }
    }

    fn close(&self, id: u64) {
        self.open().remove(&id);
    }
}

/// Listens on `socket` and serves until a signal stops the agent.
pub fn serve(settings: &Settings, token: Token) -> Result<(), Failure> {
    let socket = settings.socket.as_path();
    let label = token.label().to_owned();
    private_dir(socket, settings.shared())?;
    if UnixStream::connect(socket).is_ok() {
        return Err(Failure::AgentRunning(socket.to_path_buf()));
    }
    // Only a stale socket is ever removed: never a file that is something else.
    if socket.symlink_metadata().is_ok() {
        if !is_socket(socket) {
            return Err(Failure::AgentSetup(format!(
                "{} exists and is not a socket; choose another --socket",
                socket.display()
            )));
        }
        let _ = std::fs::remove_file(socket);
    }
    // The socket is created with its mode: nothing between bind and a chmod to race.
    // Allowed peers of other uids need write access; the uid check keeps others out.
    let umask = if settings.shared() { 0o111 } else { 0o177 };
    let old = rustix::process::umask(rustix::fs::Mode::from_raw_mode(umask));
    let bound = UnixListener::bind(socket);
    rustix::process::umask(old);
    let listener = bound
        .map_err(|e| Failure::AgentSetup(format!("cannot listen on {}: {e}", socket.display())))?;
    let audit = Audit::new(
        settings.audit_log.as_deref(),
        settings.log_format,
        settings.audit_tokens,
    )
    .map_err(|e| {
        let _ = std::fs::remove_file(socket);
        let path = settings.audit_log.as_deref().unwrap_or(Path::new("-"));
        Failure::AgentSetup(format!("cannot open the audit log {}: {e}", path.display()))
    })?;
    let agent = Arc::new(Agent {
        service: Service::long_lived(token),
        audit,
        allowed_keys: settings.keys.clone(),
        allow_uid: settings.allow_uid.clone(),
        allow_gid: settings.allow_gid.clone(),
        connections: Connections::default(),
    });
    stop_on_signals(&agent, socket)?;

    let env = format!(
        "P8HSM_AGENT_SOCK={}; export P8HSM_AGENT_SOCK;\nP8HSM_AGENT_PID={}; export P8HSM_AGENT_PID;\n",
        shell_word(&socket.to_string_lossy()),
        std::process::id()
    );
    print(&env)?;
    agent.audit.event(
        "listening",
        &[("socket", socket.display().to_string()), ("token", label)],
    );
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else { continue };
        let Some(id) = agent.connections.admit(&stream) else {
            let _ = stream
                .write_all(&Reply::error(serde_json::Value::Null, Failure::Busy.body()).line());
            continue;
        };
        let serving = agent.clone();
        let spawned = std::thread::Builder::new()
            .name("p8hsm-connection".into())
            .spawn(move || {
                serving.connection(stream, id);
                serving.connections.close(id);
            });
        if spawned.is_err() {
            // The stream moved into the closure that did not run: answer on its clone.
            if let Some((mut stream, _)) = agent.connections.open().remove(&id) {
                let _ = stream
                    .write_all(&Reply::error(serde_json::Value::Null, Failure::Busy.body()).line());
            }
        }
    }
    Ok(())
}

/// On SIGTERM or SIGINT: remove the socket, log, exit 0. On SIGHUP: open the audit log
/// again (after logrotate renamed it).
fn stop_on_signals(agent: &Arc<Agent>, socket: &Path) -> Result<(), Failure> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP])
        .map_err(p8hsm::Error::internal)?;
    let socket = socket.to_path_buf();
    let agent = agent.clone();
    std::thread::Builder::new()
        .name("p8hsm-signals".into())
        .spawn(move || {
            for signal in signals.forever() {
                if signal == SIGHUP {
                    agent.audit.reopened();
                    continue;
                }
                let _ = std::fs::remove_file(&socket);
                agent.audit.left_out();
                agent
                    .audit
                    .event("stopped", &[("signal", signal.to_string())]);
                std::process::exit(0);
            }
        })
        .map_err(p8hsm::Error::internal)?;
    Ok(())
}

/// The peer at the other end of a connection.
#[derive(Debug, Clone, Copy)]
struct Peer {
    pid: i32,
    uid: u32,
    gid: u32,
}

impl Peer {
    /// How audit lines name it.
    fn fields(&self) -> [(&'static str, String); 2] {
        [
            ("peer_pid", self.pid.to_string()),
            ("peer_uid", self.uid.to_string()),
        ]
    }
}

impl Agent {
    fn connection(&self, mut stream: UnixStream, id: u64) {
        let Ok(cred) = rustix::net::sockopt::socket_peercred(&stream) else {
            return;
        };
        let peer = Peer {
            pid: cred.pid.as_raw_nonzero().get(),
            uid: cred.uid.as_raw(),
            gid: cred.gid.as_raw(),
        };
        let own = rustix::process::getuid().as_raw();
        if peer.uid != own
            && !self.allow_uid.contains(&peer.uid)
            && !self.allow_gid.contains(&peer.gid)
        {
            self.audit
                .refused(&format!("uid:{}", peer.uid), &peer.fields());
            let _ = stream.write_all(
                &Reply::error(
                    serde_json::Value::Null,
                    Failure::Forbidden { uid: peer.uid }.body(),
                )
                .line(),
            );
            return;
        }
        let _ = stream.set_write_timeout(Some(REPLY_TIME));
        let mut pending = Vec::new();
        loop {
            self.connections.waiting(id, true);
            let line = match read_line(&mut stream, &mut pending) {
                Ok(Some(line)) => line,
                Ok(None) => return, // closed, too slow, or evicted
                Err(TooLarge) => {
                    let _ = stream.write_all(
                        &Reply::error(
                            serde_json::Value::Null,
                            Failure::TooLarge(MAX_REQUEST).body(),
                        )
                        .line(),
                    );
                    return;
                }
            };
            self.connections.waiting(id, false);
            let reply = self.handle(&line, &peer);
            // A client that does not read its replies holds its place no better than
            // one that sends nothing: while the reply is written, it may be evicted.
            self.connections.waiting(id, true);
            if stream.write_all(&reply.line()).is_err() {
                return;
            }
        }
    }

    fn handle(&self, line: &[u8], peer: &Peer) -> Reply {
        let incoming = protocol::parse(line);
        let result = incoming
            .request
            .map_err(Failure::from)
            .and_then(|request| self.sign(&request, peer));
        match result {
            Ok((signed, source)) => Reply::signed(incoming.id, signed, source),
            Err(failure) => Reply::error(incoming.id, failure.body()),
        }
    }

    /// The one pipeline, behind this agent's gate for the peer: a token whose audit
    /// line cannot be written is not handed out.
    fn sign(&self, request: &Request, peer: &Peer) -> Result<(Signed, Source), Failure> {
        let gate = Keys {
            caller: format!("uid:{}", peer.uid),
            keys: &self.allowed_keys,
        };
        let outcome = pipeline::answer(&self.service, &gate, request);
        self.audit.settle(outcome, &peer.fields())
    }
}

/// The agent's gate: a peer it serves may use the keys it was started with (`--keys`),
/// or every key.
struct Keys<'a> {
    caller: String,
    keys: &'a [KeyId],
}

impl Gate for Keys<'_> {
    type Refusal = Failure;

    fn caller(&self) -> &str {
        &self.caller
    }

    fn allow(
        &self,
        request: &Request,
        _recorded: &dyn Fn() -> Result<Option<Arc<KeyMetadata>>, p8hsm::Error>,
    ) -> Result<(), Failure> {
        let key_id = request.key_id();
        if self.keys.is_empty() || self.keys.contains(key_id) {
            return Ok(());
        }
        Err(Failure::KeyNotAllowed(key_id.clone()))
    }

    fn reason(refusal: &Failure) -> Option<String> {
        match refusal {
            Failure::KeyNotAllowed(key_id) => Some(format!("use key {key_id}")),
            _ => None,
        }
    }
}

/// A request line over [`MAX_REQUEST`] bytes.
struct TooLarge;

/// The next request line (without its newline): `None` when the client closed the
/// connection, or did not send a whole line within [`REQUEST_TIME`]. Bytes after the
/// line stay in `pending` for the next one.
fn read_line(stream: &mut UnixStream, pending: &mut Vec<u8>) -> Result<Option<Vec<u8>>, TooLarge> {
    let deadline = Instant::now() + REQUEST_TIME;
    let mut chunk = [0u8; 8192];
    let mut searched = 0;
    loop {
        if let Some(at) = pending[searched..].iter().position(|b| *b == b'\n') {
            let end = searched + at;
            if end + 1 > MAX_REQUEST {
                return Err(TooLarge);
            }
            let line = pending[..end].to_vec();
            pending.drain(..=end);
            return Ok(Some(line));
        }
        if pending.len() >= MAX_REQUEST {
            return Err(TooLarge);
        }
        searched = pending.len();
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
            return Ok(None);
        }
        match stream.read(&mut chunk) {
            Ok(0) => return Ok(None),
            Ok(n) => pending.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return Ok(None),
        }
    }
}
