//! `p8hsm serve` under load, from a client in this process (hyper over tokio-rustls, as
//! a real HTTPS client): cached tokens per second over keep-alive connections with p50
//! and p99, fresh signatures as a ratio to the raw C_Sign ceiling, and full TLS
//! handshakes per second. Set by scripts/bench.sh: BENCH_SERVE_URL and
//! BENCH_SERVE_TOKEN_URL, BENCH_SERVE_CA, BENCH_SERVE_CERT, BENCH_SERVE_KEY (the client's).

use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// Keep-alive connections for the token rows; tasks for the handshake row.
const CONNECTIONS: usize = 32;
const HANDSHAKERS: usize = 4;

fn connector() -> TlsConnector {
    let var = |n: &str| std::env::var(n).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(var("BENCH_SERVE_CA")).unwrap())
        .unwrap();
    let chain = vec![CertificateDer::from_pem_file(var("BENCH_SERVE_CERT")).unwrap()];
    let key = PrivateKeyDer::from_pem_file(var("BENCH_SERVE_KEY")).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_client_auth_cert(chain, key)
    .unwrap();
    TlsConnector::from(Arc::new(config))
}

async fn connect(
    addr: &str,
    tls: &TlsConnector,
) -> hyper::client::conn::http1::SendRequest<Full<Bytes>> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    let stream = tls
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    let (sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(connection);
    sender
}

/// Requests `body_for(n)` as fast as `CONNECTIONS` keep-alive connections allow, for
/// `window`: (requests per second, sorted latencies).
async fn load(
    addr: &str,
    window: Duration,
    body_for: impl Fn(usize, usize) -> String + Send + Sync + Clone + 'static,
) -> (f64, Vec<Duration>) {
    let tls = connector();
    let mut senders = Vec::new();
    for _ in 0..CONNECTIONS {
        senders.push(connect(addr, &tls).await);
    }
    let start = Instant::now();
    let tasks: Vec<_> = senders
        .into_iter()
        .enumerate()
        .map(|(c, mut sender)| {
            let body_for = body_for.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut n = 0;
                while start.elapsed() < window {
                    let request = hyper::Request::post("/v1/tokens")
                        .header("host", "localhost")
                        .body(Full::new(Bytes::from(body_for(c, n))))
                        .unwrap();
                    let sent = Instant::now();
                    let response = sender.send_request(request).await.unwrap();
                    let status = response.status();
                    let body = response.into_body().collect().await.unwrap().to_bytes();
                    assert!(
                        status.is_success(),
                        "{status}: {}",
                        String::from_utf8_lossy(&body)
                    );
                    latencies.push(sent.elapsed());
                    n += 1;
                }
                latencies
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.unwrap());
    }
    let rate = latencies.len() as f64 / start.elapsed().as_secs_f64();
    latencies.sort();
    (rate, latencies)
}

/// Full TLS handshakes (TCP connect, handshake, close) per second.
async fn handshakes(addr: &str, window: Duration) -> f64 {
    let tls = connector();
    let start = Instant::now();
    let tasks: Vec<_> = (0..HANDSHAKERS)
        .map(|_| {
            let (tls, addr) = (tls.clone(), addr.to_owned());
            tokio::spawn(async move {
                let mut n = 0usize;
                while start.elapsed() < window {
                    let tcp = TcpStream::connect(&addr).await.unwrap();
                    let stream = tls
                        .connect(ServerName::try_from("localhost").unwrap(), tcp)
                        .await
                        .unwrap();
                    drop(stream);
                    n += 1;
                }
                n
            })
        })
        .collect();
    let mut total = 0;
    for task in tasks {
        total += task.await.unwrap();
    }
    total as f64 / start.elapsed().as_secs_f64()
}

/// Prints the rows of each service bench.sh started: its TLS key in a file
/// (`BENCH_SERVE_URL`), and in the token (`BENCH_SERVE_TOKEN_URL`).
pub fn bench(mode: &str, key_id: &str, window: Duration, ceiling: Option<f64>) {
    for (var, label) in [
        ("BENCH_SERVE_URL", " (TLS key in a file)"),
        ("BENCH_SERVE_TOKEN_URL", " (TLS key in the token)"),
    ] {
        if let Ok(url) = std::env::var(var) {
            one(mode, &url, label, key_id, window, ceiling);
        }
    }
}

fn one(mode: &str, url: &str, label: &str, key_id: &str, window: Duration, ceiling: Option<f64>) {
    let addr = url.trim_start_matches("https://").to_owned();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let p = |latencies: &[Duration], q: f64| {
        latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)].as_secs_f64()
            * 1e3
    };
    let key = key_id.to_owned();
    let cached = move |_: usize, _: usize| {
        format!(
            r#"{{"kind":"connect","key_id":"{key}","individual":true,"scope":["GET /v1/apps"]}}"#
        )
    };
    let (rate, latencies) = runtime.block_on(load(&addr, window, cached));
    println!(
        "| {mode} | serve{label}, cached tokens over HTTPS, {CONNECTIONS} keep-alive connections | {rate:.0} tokens/s, p50 {:.2} ms, p99 {:.2} ms | |",
        p(&latencies, 0.5),
        p(&latencies, 0.99)
    );
    let key = key_id.to_owned();
    let fresh = move |c: usize, n: usize| {
        format!(
            r#"{{"kind":"connect","key_id":"{key}","individual":true,"scope":["GET /v1/apps/{c}-{n}"]}}"#
        )
    };
    let (rate, latencies) = runtime.block_on(load(&addr, window, fresh));
    let ratio = ceiling.map_or(String::new(), |c| {
        format!("{:.2} of the 2-thread ceiling", rate / c)
    });
    println!(
        "| {mode} | serve{label}, fresh tokens over HTTPS, {CONNECTIONS} keep-alive connections | {rate:.0} tokens/s, p50 {:.2} ms, p99 {:.2} ms | {ratio} |",
        p(&latencies, 0.5),
        p(&latencies, 0.99)
    );
    let rate = runtime.block_on(handshakes(&addr, window));
    println!("| {mode} | serve{label}, full TLS handshakes, {HANDSHAKERS} clients | {rate:.0} handshakes/s | |");
}
