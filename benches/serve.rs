//! `p8hsm serve` under load, from a client in this process (hyper over tokio-rustls, as
//! a real HTTPS client): cached tokens per second over keep-alive connections with p50
//! and p99, fresh signatures as a ratio to the raw C_Sign ceiling, and full TLS
//! handshakes per second; and the CPU time each token costs the service and this load
//! generator, which share the machine's cores. Set by scripts/bench.sh: BENCH_SERVE_URL
//! and BENCH_SERVE_TOKEN_URL with BENCH_SERVE_PID and BENCH_SERVE_TOKEN_PID (the
//! services' processes), BENCH_SERVE_CA, BENCH_SERVE_CERT, BENCH_SERVE_KEY (the client's).

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

/// CPU seconds a process (`self`, or a pid) has used so far: `/proc/<pid>/stat`'s utime
/// and stime.
pub fn cpu_seconds(pid: &str) -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    let ticks = *TICKS.get_or_init(|| {
        let out = std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .unwrap();
        String::from_utf8(out.stdout)
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    });
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // The fields after the command's name (which may hold spaces), from field 3 on.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    (fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap()) / ticks
}

/// A load's outcome: requests per second, sorted latencies, and the CPU time per
/// request of the service and of this process (the load generator), in seconds.
struct Load {
    rate: f64,
    latencies: Vec<Duration>,
    service_cpu: f64,
    client_cpu: f64,
}

impl Load {
    /// The loads as one: all their requests over all their time.
    fn merge(loads: Vec<Load>) -> Load {
        let counts: Vec<f64> = loads.iter().map(|l| l.latencies.len() as f64).collect();
        let requests: f64 = counts.iter().sum();
        let seconds: f64 = loads.iter().zip(&counts).map(|(l, n)| n / l.rate).sum();
        let per_request = |cpu: fn(&Load) -> f64| {
            loads
                .iter()
                .zip(&counts)
                .map(|(l, n)| cpu(l) * n)
                .sum::<f64>()
                / requests
        };
        let (service_cpu, client_cpu) = (
            per_request(|l| l.service_cpu),
            per_request(|l| l.client_cpu),
        );
        let mut latencies: Vec<Duration> = loads.into_iter().flat_map(|l| l.latencies).collect();
        latencies.sort();
        Load {
            rate: requests / seconds,
            latencies,
            service_cpu,
            client_cpu,
        }
    }

    fn ms(&self, q: f64) -> f64 {
        let at = ((self.latencies.len() as f64 * q) as usize).min(self.latencies.len() - 1);
        self.latencies[at].as_secs_f64() * 1e3
    }
}

/// Requests `body_for(n)` as fast as `CONNECTIONS` keep-alive connections allow, for
/// `window`, to the service whose process is `pid`.
async fn load(
    addr: &str,
    pid: &str,
    window: Duration,
    body_for: impl Fn(usize, usize) -> String + Send + Sync + Clone + 'static,
) -> Load {
    let tls = connector();
    let mut senders = Vec::new();
    for _ in 0..CONNECTIONS {
        senders.push(connect(addr, &tls).await);
    }
    let cpu = (cpu_seconds(pid), cpu_seconds("self"));
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
    let n = latencies.len() as f64;
    let rate = n / start.elapsed().as_secs_f64();
    latencies.sort();
    Load {
        rate,
        latencies,
        service_cpu: (cpu_seconds(pid) - cpu.0) / n,
        client_cpu: (cpu_seconds("self") - cpu.1) / n,
    }
}

/// Request bodies that are never in the cache: connection `c`'s `n`th asks for a scope
/// of its own (`tag` sets apart the requests of one run's loads).
fn fresh(key_id: &str, tag: &str) -> impl Fn(usize, usize) -> String + Send + Sync + Clone {
    let (key, tag) = (key_id.to_owned(), tag.to_owned());
    move |c, n| {
        format!(
            r#"{{"kind":"connect","key_id":"{key}","individual":true,"scope":["GET /v1/apps/{tag}{c}-{n}"]}}"#
        )
    }
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

/// One window of raw C_Sign at 2 threads on the service's key: signatures per second,
/// and the CPU time of one in seconds (`None` when the token computes in another
/// process).
pub struct Raw {
    pub rate: f64,
    pub cpu: Option<f64>,
}

/// Windows on each side of the fresh-token ratio.
const ROUNDS: u32 = 3;

/// Prints the rows of each service bench.sh started: its TLS key in a file
/// (`BENCH_SERVE_URL`, process `BENCH_SERVE_PID`), and in the token
/// (`BENCH_SERVE_TOKEN_URL`, `BENCH_SERVE_TOKEN_PID`). `ceiling` measures a window of
/// raw C_Sign.
pub fn bench(mode: &str, key_id: &str, window: Duration, ceiling: &dyn Fn(Duration) -> Raw) {
    for (var, pid, label) in [
        ("BENCH_SERVE_URL", "BENCH_SERVE_PID", " (TLS key in a file)"),
        (
            "BENCH_SERVE_TOKEN_URL",
            "BENCH_SERVE_TOKEN_PID",
            " (TLS key in the token)",
        ),
    ] {
        if let (Ok(url), Ok(pid)) = (std::env::var(var), std::env::var(pid)) {
            let service = Service { url, pid, label };
            one(mode, &service, key_id, window, ceiling);
        }
    }
}

/// A service bench.sh started.
struct Service {
    url: String,
    pid: String,
    label: &'static str,
}

fn one(
    mode: &str,
    service: &Service,
    key_id: &str,
    window: Duration,
    ceiling: &dyn Fn(Duration) -> Raw,
) {
    let Service { url, pid, label } = service;
    let addr = url.trim_start_matches("https://").to_owned();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let us = |seconds: f64| seconds * 1e6;
    let key = key_id.to_owned();
    let cached = move |_: usize, _: usize| {
        format!(
            r#"{{"kind":"connect","key_id":"{key}","individual":true,"scope":["GET /v1/apps"]}}"#
        )
    };
    let hits = runtime.block_on(load(&addr, pid, window, cached));
    println!(
        "| {mode} | serve{label}, cached tokens over HTTPS, {CONNECTIONS} keep-alive connections | {:.0} tokens/s, p50 {:.2} ms, p99 {:.2} ms | |",
        hits.rate,
        hits.ms(0.5),
        hits.ms(0.99)
    );
    println!(
        "| {mode} | serve{label}, CPU per cached token: the service + the load generator | {:.0} + {:.0} µs | |",
        us(hits.service_cpu),
        us(hits.client_cpu)
    );
    // Fresh tokens and the ceiling in alternating windows, `ROUNDS` each: the host's
    // drift, which moves whole runs by 10–20 %, falls on both sides of the ratio.
    let (mut loads, mut raws) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        raws.push(ceiling(window / ROUNDS));
        let bodies = fresh(key_id, &format!("{round}-"));
        loads.push(runtime.block_on(load(&addr, pid, window / ROUNDS, bodies)));
    }
    let signed = Load::merge(loads);
    let raw_rate = raws.iter().map(|r| r.rate).sum::<f64>() / f64::from(ROUNDS);
    let raw_cpu = raws
        .iter()
        .map(|r| r.cpu)
        .sum::<Option<f64>>()
        .map(|c| c / f64::from(ROUNDS));
    let of_ceiling = |rate: f64| format!("{:.2} of the 2-thread ceiling", rate / raw_rate);
    println!(
        "| {mode} | serve{label}, fresh tokens over HTTPS, {CONNECTIONS} keep-alive connections | {:.0} tokens/s, p50 {:.2} ms, p99 {:.2} ms | {} (raw C_Sign at 2 threads in the windows between: {raw_rate:.0}/s) |",
        signed.rate,
        signed.ms(0.5),
        signed.ms(0.99),
        of_ceiling(signed.rate)
    );
    let raw = raw_cpu.map_or(
        "the token's own work is in p11-kit's server process, not counted".to_owned(),
        |cpu| format!("raw C_Sign: {:.0} µs (2 threads)", us(cpu)),
    );
    println!(
        "| {mode} | serve{label}, CPU per fresh token: the service + the load generator | {:.0} + {:.0} µs | {raw} |",
        us(signed.service_cpu),
        us(signed.client_cpu),
    );
    // A fresh token is all a cached one is, plus a signature: had it cost both ends no
    // more than that, this is what the machine's cores could serve (an estimate — one
    // signature costs less CPU at 1 thread than at 2).
    if let Some(raw_cpu) = raw_cpu {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        let bound = cores / (raw_cpu + hits.service_cpu + hits.client_cpu);
        println!(
            "| {mode} | serve{label}, fresh tokens had each cost a raw C_Sign plus a cached token's CPU, both ends on these {cores} cores | {bound:.0} tokens/s | {} |",
            of_ceiling(bound)
        );
    }
    let rate = runtime.block_on(handshakes(&addr, window));
    println!("| {mode} | serve{label}, full TLS handshakes, {HANDSHAKERS} clients | {rate:.0} handshakes/s | |");
}

/// `scripts/bench.sh --against`: fresh tokens from this build's service and another's
/// (`BENCH_AGAINST_URLS` and `BENCH_AGAINST_PIDS`, this build first), in alternating
/// 1-second windows, `BENCH_ROUNDS` (10) each: the host's drift falls on both.
pub fn against(key_id: &str) {
    let list = |name: &str| -> Vec<String> {
        std::env::var(name)
            .unwrap()
            .split_whitespace()
            .map(str::to_owned)
            .collect()
    };
    let (urls, pids) = (list("BENCH_AGAINST_URLS"), list("BENCH_AGAINST_PIDS"));
    let rounds: usize = std::env::var("BENCH_ROUNDS").map_or(10, |r| r.parse().unwrap());
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut totals = [(0.0, 0.0, 0.0); 2];
    for round in 0..rounds {
        for (side, total) in totals.iter_mut().enumerate() {
            let fresh = fresh(key_id, &format!("{round}-{side}-"));
            let addr = urls[side].trim_start_matches("https://");
            let load = runtime.block_on(load(addr, &pids[side], Duration::from_secs(1), fresh));
            total.0 += load.rate;
            total.1 += load.service_cpu;
            total.2 += load.client_cpu;
        }
    }
    println!("| side | fresh tokens over HTTPS, {CONNECTIONS} keep-alive connections, mean of {rounds} 1-second windows | CPU per token: the service + the load generator |");
    println!("|---|---|---|");
    let n = rounds as f64;
    for (side, (rate, service, client)) in ["this build", "--against"].iter().zip(totals) {
        println!(
            "| {side} | {:.0} tokens/s | {:.0} + {:.0} µs |",
            rate / n,
            service / n * 1e6,
            client / n * 1e6
        );
    }
    println!(
        "\nthis build / --against: {:.2}× the tokens per second",
        totals[0].0 / totals[1].0
    );
}
