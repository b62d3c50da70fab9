//! `p8hsm serve`: the token service for a fleet. HTTPS only (rustls), every client
//! presenting a certificate the client CA issued; a policy (deny by default) says which
//! caller may ask for which keys, kinds and claims. `POST /v1/tokens` takes the agent's
//! request and answers with the agent's reply, so the service is a third thin front end
//! over the library's request type, its cache and the token.

mod metrics;
mod policy;
mod tls;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request as HttpRequest, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use p8hsm::apple::cache::Source;
use p8hsm::pipeline;
use p8hsm::protocol::{self, Reply, MAX_REQUEST};
use p8hsm::{ErrorCode, Service, Signed, Token};
use serde_json::Value;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::Semaphore;

use crate::audit::{Audit, LogFormat};
use crate::failure::{Class, Failure};
use metrics::{Cache, Metrics, Outcome};
use policy::{Policy, Unmatched};
use tls::{CertNames, Handshakes, TlsFiles, TlsKey};

/// How long a client has to finish the TLS handshake.
const HANDSHAKE_TIME: Duration = Duration::from_secs(10);
/// How long a client has to send a request's headers.
const HEADER_TIME: Duration = Duration::from_secs(10);
/// How long one request may take, body and signing included.
const REQUEST_TIME: Duration = Duration::from_secs(30);
/// How long a shutdown waits for requests under way.
const DRAIN_TIME: Duration = Duration::from_secs(30);

/// `p8hsm serve`'s options.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Address to listen on, HTTPS only, e.g. 0.0.0.0:8443 or [::]:8443 (port 0: any)
    #[arg(long, value_name = "ADDR")]
    pub listen: SocketAddr,
    /// The server's certificate chain (PEM)
    #[arg(long, value_name = "FILE")]
    pub tls_cert: PathBuf,
    /// The server's private key: a PEM file, or a PKCS#11 URI naming a P-256 key on the
    /// token the service signs with (e.g. "pkcs11:object=TLSKEY0001"), so that the
    /// service's identity lives in the token too
    #[arg(long, value_name = "FILE|URI", value_parser = |s: &str| s.parse::<TlsKey>())]
    pub tls_key: TlsKey,
    /// CA certificates (PEM) that issue the clients' certificates: every client must
    /// present one (mutual TLS)
    #[arg(long, value_name = "FILE")]
    pub client_ca: PathBuf,
    /// Certificate revocation lists (PEM) of the client CA: a client certificate they
    /// revoke, or whose status none of them gives, is refused; read again on SIGHUP
    #[arg(long, value_name = "FILE")]
    pub crl: Option<PathBuf>,
    /// The policy (TOML): which caller may ask for which keys, kinds and claims; read
    /// again on SIGHUP
    #[arg(long, value_name = "FILE")]
    pub policy: PathBuf,
    /// Append audit lines to this file (created with mode 0600) instead of stderr
    #[arg(long, value_name = "FILE")]
    pub audit_log: Option<PathBuf>,
    /// Format of the audit and event lines
    #[arg(long, value_name = "FORMAT", default_value = "text")]
    pub log_format: LogFormat,
    /// Put the whole token in each audit line (off: the claims' SHA-256 only)
    #[arg(long)]
    pub audit_tokens: bool,
    /// Connections served at once (past that, one is closed once its TLS handshake is
    /// done); as many more may be in their handshake, the oldest giving way to the newest
    #[arg(long, value_name = "N", default_value_t = 1024,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,
}

/// What every connection shares.
struct State {
    service: Service,
    policy: RwLock<Arc<Policy>>,
    audit: Audit,
    metrics: Metrics,
}

/// Who is at the other end of a connection.
#[derive(Debug, Clone)]
struct Peer {
    names: Arc<CertNames>,
    addr: SocketAddr,
    client: Arc<tls::Client>,
}

/// Serves until SIGTERM or SIGINT, then drains.
pub fn run(args: Args, token: Token) -> Result<(), Failure> {
    let setup = Failure::ServeSetup;
    let policy = Policy::load(&args.policy).map_err(setup)?;
    let files = TlsFiles {
        cert: args.tls_cert.clone(),
        key: args.tls_key.clone(),
        client_ca: args.client_ca.clone(),
        crl: args.crl.clone(),
    };
    let tls = tls::server_config(&files, &token)?;
    let audit = Audit::new(
        args.audit_log.as_deref(),
        args.log_format,
        args.audit_tokens,
    )
    .map_err(|e| {
        let path = args
            .audit_log
            .as_deref()
            .unwrap_or(std::path::Path::new("-"));
        Failure::ServeSetup(format!("cannot open the audit log {}: {e}", path.display()))
    })?;
    let listener = std::net::TcpListener::bind(args.listen)
        .map_err(|e| Failure::ServeSetup(format!("cannot listen on {}: {e}", args.listen)))?;
    let addr = listener.local_addr().map_err(|e| setup(e.to_string()))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| setup(e.to_string()))?;
    let state = Arc::new(State {
        service: Service::long_lived(token),
        policy: RwLock::new(Arc::new(policy)),
        audit,
        metrics: Metrics::new(),
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .max_blocking_threads(signing_threads(state.service.token()))
        .enable_all()
        .build()
        .map_err(|e| setup(format!("cannot start the runtime: {e}")))?;
    // With the TLS key in the token, rustls signs each handshake in the middle of it,
    // synchronously, on whichever thread drives it. Those handshakes are driven by
    // threads of their own, so that a slow or hung token holds up new handshakes, never
    // the connections already open (nor their cached tokens).
    let handshakes = if matches!(args.tls_key, TlsKey::Token { .. }) {
        let threads = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(signing_threads(state.service.token()))
            .thread_name("handshake")
            .build()
            .map_err(|e| setup(format!("cannot start the handshake threads: {e}")))?;
        Some(threads)
    } else {
        None
    };
    let served = runtime.block_on(accept_loop(
        state,
        listener,
        addr,
        Handshakes::new(tls, handshakes.as_ref().map(|r| r.handle().clone())),
        files,
        args,
    ));
    // A handshake still waiting on the token is not waited for.
    if let Some(handshakes) = handshakes {
        handshakes.shutdown_background();
    }
    served
}

/// How many threads call the token: a few per core, at most one per session the token's
/// pool opens. Left to itself, tokio's blocking pool starts a thread for each request
/// waiting on the token (up to 512) and wakes an idle one for each: under load, a context
/// switch or two per token, and on a token that computes on this host's cores (SoftHSM)
/// threads queueing on its locks and taking the cores from the connections. With a
/// bounded pool, a thread that finishes a signature takes the next waiting one without
/// sleeping. Measured in docs/benchmarks.md: 10–22 % more fresh tokens per second.
fn signing_threads(token: &Token) -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    (4 * cores).min(token.max_sessions()).max(1)
}

async fn accept_loop(
    state: Arc<State>,
    listener: std::net::TcpListener,
    addr: SocketAddr,
    handshakes: Handshakes,
    files: TlsFiles,
    args: Args,
) -> Result<(), Failure> {
    let listener = tokio::net::TcpListener::from_std(listener)
        .map_err(|e| Failure::ServeSetup(e.to_string()))?;
    let signals = |kind: SignalKind| {
        signal(kind).map_err(|e| Failure::ServeSetup(format!("cannot handle signals: {e}")))
    };
    let (mut term, mut int, mut hup) = (
        signals(SignalKind::terminate())?,
        signals(SignalKind::interrupt())?,
        signals(SignalKind::hangup())?,
    );
    let places = args.max_connections as usize;
    let permits = Arc::new(Semaphore::new(places));
    let handshaking = Arc::new(tls::Handshaking::new(places));
    let shutdown = GracefulShutdown::new();
    let (stop, stopping) = tokio::sync::watch::channel(false);
    crate::failure::print(&format!("https://{addr}\n"))?;
    state
        .audit
        .event("listening", &[("address", addr.to_string())]);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((tcp, peer_addr)) = accepted else {
                    // Out of file descriptors, say: let some connections end.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                // A connection in its TLS handshake has shown no certificate yet: it
                // draws on a budget of its own, and when that is full the oldest
                // handshake gives way, so that peers without a certificate can hold
                // no place a certified client needs.
                let (handshakes, state) = (handshakes.clone(), state.clone());
                let (permits, handshaking) = (permits.clone(), handshaking.clone());
                let mut stopping = stopping.clone();
                let watcher = shutdown.watcher();
                let (slot, evicted) = handshaking.enter();
                tokio::spawn(async move {
                    let _ = tcp.set_nodelay(true);
                    // A connection still in its handshake when the service stops has no
                    // request under way: it is closed, not waited for.
                    let stream = tokio::select! {
                        stream = handshakes.accept(tcp) => stream,
                        _ = evicted => None,
                        _ = tokio::time::sleep(HANDSHAKE_TIME) => None,
                        _ = stopping.wait_for(|stop| *stop) => None,
                    };
                    drop(slot);
                    let Some((stream, client)) = stream else {
                        return;
                    };
                    // Served at once: at the limit, a certified connection is closed.
                    let Ok(_permit) = permits.try_acquire_owned() else {
                        return;
                    };
                    let peer = Peer {
                        names: Arc::new(client.names()),
                        addr: peer_addr,
                        client: Arc::new(client),
                    };
                    let handshakes = handshakes.clone();
                    let service = service_fn(move |request| {
                        let (state, peer) = (state.clone(), peer.clone());
                        // The certificate is checked again at every request: it may have
                        // expired, or a CRL or client CA read since may refuse it.
                        let still = handshakes.check(&peer.client);
                        async move {
                            if let Err(why) = still {
                                return Ok(no_longer(&state, &peer, why));
                            }
                            let response = tokio::time::timeout(REQUEST_TIME, route(&state, &peer, request))
                                .await
                                .unwrap_or_else(|_| plain(StatusCode::REQUEST_TIMEOUT, "the request took too long\n"));
                            Ok::<_, std::convert::Infallible>(response)
                        }
                    });
                    let connection = http1::Builder::new()
                        .timer(TokioTimer::new())
                        .header_read_timeout(HEADER_TIME)
                        .max_buf_size(MAX_REQUEST + 16 * 1024)
                        .serve_connection(TokioIo::new(stream), service);
                    let _ = watcher.watch(connection).await;
                });
            }
            _ = hup.recv() => {
                state.audit.reopened();
                reload(&state, &args.policy);
                // The TLS files may name a key on the token: read on a thread that may
                // wait for it.
                let (state, files, handshakes) = (state.clone(), files.clone(), handshakes.clone());
                tokio::task::spawn_blocking(move || reload_tls(&state, &files, &handshakes));
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    drop(listener);
    let _ = stop.send(true);
    state.audit.left_out();
    state
        .audit
        .event("stopping", &[("in_flight", shutdown.count().to_string())]);
    let _ = tokio::time::timeout(DRAIN_TIME, shutdown.shutdown()).await;
    Ok(())
}

/// Reads the policy again; a policy that does not parse is refused and the old one
/// stays in force.
fn reload(state: &State, path: &std::path::Path) {
    match Policy::load(path) {
        Ok(policy) => {
            let callers = policy.len();
            *state.policy.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(policy);
            state
                .audit
                .event("policy-reloaded", &[("callers", callers.to_string())]);
        }
        Err(reason) => {
            eprintln!("error: {reason}; the policy in force is unchanged");
            state.audit.event("policy-refused", &[("reason", reason)]);
        }
    }
}

/// Reads the TLS files again (certificate and key, client CA, CRL): new connections
/// are made with them; when they do not load, the ones in force stay.
fn reload_tls(state: &State, files: &TlsFiles, handshakes: &Handshakes) {
    match tls::server_config(files, state.service.token()) {
        Ok(config) => {
            handshakes.replace(config);
            state.audit.event("tls-reloaded", &[]);
        }
        Err(failure) => {
            let reason = match failure {
                Failure::ServeSetup(reason) => reason,
                other => other.message(),
            };
            eprintln!("error: {reason}; the TLS files in force are unchanged");
            state.audit.event("tls-refused", &[("reason", reason)]);
        }
    }
}

type Body = Full<Bytes>;

fn plain(status: StatusCode, text: &'static str) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

fn json(status: StatusCode, reply: &Reply) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from(reply.line())));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

async fn route(state: &Arc<State>, peer: &Peer, request: HttpRequest<Incoming>) -> Response<Body> {
    match (request.method(), request.uri().path()) {
        (&Method::GET, "/healthz") => plain(StatusCode::OK, "ok\n"),
        (&Method::GET, "/readyz") => {
            if !state.audit.writable() {
                return plain(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the audit log was deleted: send the service SIGHUP to open it again\n",
                );
            }
            let state = state.clone();
            let ready = tokio::task::spawn_blocking(move || state.service.ready())
                .await
                .unwrap_or(false);
            if ready {
                plain(StatusCode::OK, "ready\n")
            } else {
                plain(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the token is not reachable or not logged in\n",
                )
            }
        }
        (&Method::GET, "/metrics") => {
            let m = &state.metrics;
            m.token_available.set(i64::from(state.service.available()));
            m.logins
                .set(i64::try_from(state.service.token().logins()).unwrap_or(i64::MAX));
            let mut response = plain(StatusCode::OK, "");
            *response.body_mut() = Full::new(Bytes::from(m.render()));
            response.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            response
        }
        (&Method::POST, "/v1/tokens") => tokens(state, peer, request).await,
        (_, "/healthz" | "/readyz" | "/metrics" | "/v1/tokens") => {
            plain(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n")
        }
        _ => plain(
            StatusCode::NOT_FOUND,
            "not found: the API is POST /v1/tokens\n",
        ),
    }
}

/// `POST /v1/tokens`: the agent's request in, the agent's reply out.
async fn tokens(state: &Arc<State>, peer: &Peer, request: HttpRequest<Incoming>) -> Response<Body> {
    // The rest of a body over the limit is never read: the connection closes after the
    // answer.
    let too_large = || {
        let failure = Failure::TooLarge(MAX_REQUEST);
        let reply = Reply::error(serde_json::Value::Null, failure.body());
        let mut response = answer(state, "-", reply);
        response
            .headers_mut()
            .insert(hyper::header::CONNECTION, HeaderValue::from_static("close"));
        response
    };
    // A body announced as too large is refused before any of it is read (and before a
    // client waiting on `Expect: 100-continue` sends it).
    let announced = request
        .headers()
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|n| n > MAX_REQUEST as u64) {
        return too_large();
    }
    let body = match Limited::new(request.into_body(), MAX_REQUEST)
        .collect()
        .await
    {
        Ok(body) => body.to_bytes(),
        Err(_) => return too_large(),
    };
    let incoming = protocol::parse(&body);
    let id = incoming.id;
    let request = match incoming.request {
        Ok(request) => request,
        Err(e) => return answer(state, "-", Reply::error(id, Failure::from(e).body())),
    };
    let kind = request.kind().name();
    let policy = state
        .policy
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let caller = match policy.caller(&peer.names) {
        Ok(caller) => caller.clone(),
        Err(unmatched) => {
            let names = peer.names.shown();
            let failure = match unmatched {
                Unmatched::Unknown => Failure::UnknownCaller(names),
                Unmatched::Ambiguous(callers) => Failure::AmbiguousCaller { names, callers },
            };
            return refused(state, peer, kind, id, failure);
        }
    };
    // What is recorded with the key is known without calling the token once the key
    // was used: the policy is then applied here, and a cache hit answered here too.
    // Anything else goes to the signing threads, since it calls the token.
    if let Some(outcome) = pipeline::answer_now(&state.service, &*caller, &request) {
        let reply = settled(state, peer, outcome, None);
        return answer(state, kind, reply.into_reply(id));
    }
    let (sender, signed) = tokio::sync::oneshot::channel();
    {
        let (state, peer) = (state.clone(), peer.clone());
        tokio::task::spawn_blocking(move || {
            // Nobody waits any more for a request whose client left or whose time ran
            // out while it queued for a thread: it is not signed.
            if sender.is_closed() {
                return;
            }
            let started = Instant::now();
            let outcome = pipeline::answer(&state.service, &*caller, &request);
            let _ = sender.send(settled(&state, &peer, outcome, Some(started)));
        });
    }
    let reply = match signed.await {
        Ok(settled) => settled.into_reply(id),
        Err(_) => Reply::error(
            id,
            Failure::from(p8hsm::Error::internal("the signing task died")).body(),
        ),
    };
    answer(state, kind, reply)
}

/// What the pipeline decided, audited (with the peer's address) and counted.
struct Settled(Result<(Signed, Source), Failure>);

impl Settled {
    fn into_reply(self, id: Value) -> Reply {
        match self.0 {
            Ok((signed, source)) => Reply::signed(id, signed, source),
            Err(failure) => Reply::error(id, failure.body()),
        }
    }
}

/// Writes the pipeline's audit record (a token whose line cannot be written is not
/// handed out) and counts what is handed out; `started`: when a signing thread took the
/// request, for the signing time of fresh tokens.
fn settled(
    state: &State,
    peer: &Peer,
    outcome: pipeline::Outcome<Failure>,
    started: Option<Instant>,
) -> Settled {
    if let (Ok((_, source)), Some(started)) = (&outcome.result, started) {
        if *source == Source::Fresh {
            state
                .metrics
                .sign_seconds
                .observe(started.elapsed().as_secs_f64());
        }
    }
    if let Ok((_, source)) = &outcome.result {
        state
            .metrics
            .cache
            .get_or_create(&Cache {
                result: source.name().to_owned(),
            })
            .inc();
    }
    Settled(
        state
            .audit
            .settle(outcome, &[("peer_addr", peer.addr.to_string())]),
    )
}

/// A request on a connection whose certificate is no longer accepted: refused, audited,
/// and the connection closed.
fn no_longer(state: &State, peer: &Peer, why: &'static str) -> Response<Body> {
    let names = names_field(&peer.names);
    state.audit.refused(
        &names,
        &[
            ("names", names.clone()),
            ("reason", why.to_owned()),
            ("peer_addr", peer.addr.to_string()),
        ],
    );
    let reply = Reply::error(Value::Null, Failure::CertificateRefused(why).body());
    let mut response = json(StatusCode::FORBIDDEN, &reply);
    response
        .headers_mut()
        .insert(hyper::header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// A certificate's names as one audit field: a JSON array, so that a name holding a
/// comma cannot pose as two.
fn names_field(names: &CertNames) -> String {
    serde_json::to_string(&names.shown()).unwrap_or_default()
}

/// A request whose certificate names no one caller of the policy: audited (at a
/// bounded rate) and answered.
fn refused(state: &State, peer: &Peer, kind: &str, id: Value, failure: Failure) -> Response<Body> {
    let names = names_field(&peer.names);
    let (who, mut fields) = (names.clone(), vec![("names", names)]);
    fields.push(("kind", kind.to_owned()));
    fields.push(("peer_addr", peer.addr.to_string()));
    state.audit.refused(&who, &fields);
    answer(state, kind, Reply::error(id, failure.body()))
}

/// The reply as an HTTP response, counted.
fn answer(state: &State, kind: &str, reply: Reply) -> Response<Body> {
    let (status, outcome) = match &reply {
        Reply::Ok { .. } => (StatusCode::OK, "ok".to_owned()),
        Reply::Err { error, .. } => (status(error.code), code_name(error.code)),
    };
    state
        .metrics
        .requests
        .get_or_create(&Outcome {
            kind: kind.to_owned(),
            outcome,
        })
        .inc();
    json(status, &reply)
}

fn code_name(code: ErrorCode) -> String {
    serde_json::to_value(code)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| "unknown".to_owned())
}

/// The HTTP status of a protocol error code.
fn status(code: ErrorCode) -> StatusCode {
    StatusCode::from_u16(Class::of(code).http).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}
