//! p8hsm's throughput against the raw PKCS#11 ceiling, measured in one run on one key.
//! Run by scripts/bench.sh, which makes a fresh token, imports a key and sets:
//! P8HSM_MODULE, P8HSM_TOKEN, P8HSM_PIN_SOURCE (and P11_KIT_SERVER_ADDRESS for the
//! p11-kit rows), BENCH_KEY_ID, BENCH_MODE (a label), BENCH_SECONDS, P8HSM_BIN,
//! BENCH_PIN_FILE. Prints markdown table rows; no assertion: figures are compared with
//! the anchors in the README.

mod serve;

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Barrier;
use std::time::{Duration, Instant, SystemTime};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, ObjectClass};
use cryptoki::session::UserType;
use p8hsm::apple::cache::JwtCache;
use p8hsm::apple::connect::Connect;
use p8hsm::apple::{JwtParams, JwtRequest};
use p8hsm::pkcs11::{TokenLocation, TokenSelector};
use p8hsm::{KeyId, Token};
use secrecy::SecretString;

fn var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set (run scripts/bench.sh)"))
}

fn main() {
    let mode = var("BENCH_MODE");
    let seconds: f64 = var("BENCH_SECONDS").parse().unwrap();
    let window = Duration::from_secs_f64(seconds);
    let module = var("P8HSM_MODULE");
    let key_id: KeyId = var("BENCH_KEY_ID").parse().unwrap();
    let pin_file = var("BENCH_PIN_FILE");

    // (1) The ceiling: a raw C_Sign loop through cryptoki on the same key, and (2)
    // p8hsm's library signing a fresh App Store Connect token every time. The two are
    // measured in alternating batches (all threads on one side, then all on the other,
    // through a barrier), so that a shared machine's slow moments fall on both sides.
    let pin = std::fs::read_to_string(&pin_file).unwrap();
    let spec = TokenLocation::new(module.clone(), TokenSelector::label(&var("P8HSM_TOKEN")));
    let token = Token::open(&spec, SecretString::from(pin.trim_end())).unwrap();
    let signer = token.key(&key_id).unwrap();
    // Signing never consults a cache: every call makes a new signature.
    let request = JwtRequest::new(
        key_id.clone(),
        JwtParams::Connect(Connect {
            issuer: Some("57246542-96fe-1a63-e053-0824d011072a".parse().unwrap()),
            scope: vec!["GET /v1/apps".parse().unwrap()],
            ..Connect::default()
        }),
        None,
        None,
    )
    .unwrap();
    let raw = RawSigner::new(&module, &pin_file, &key_id);
    // BENCH_ONE_CORE: scripts/bench.sh has pinned this process and the p11-kit server to
    // one core; only the 1-thread pair is measured, free of where the scheduler puts the
    // two ends of each round trip.
    // scripts/bench.sh --against: two builds' services, side by side.
    if std::env::var_os("BENCH_AGAINST_URLS").is_some() {
        serve::against(key_id.as_str());
        return;
    }
    let one_core = std::env::var_os("BENCH_ONE_CORE").is_some();
    let mut ceiling2 = None;
    for threads in if one_core { &[1][..] } else { &[1, 2][..] } {
        let threads = *threads;
        let (raw_rate, library_rate) = paired(threads, window, &raw, || {
            request.sign(&signer, None, SystemTime::now()).unwrap();
        });
        let plural = if threads == 1 { "" } else { "s" };
        if threads == 2 {
            ceiling2 = Some(raw_rate);
        }
        row(
            &mode,
            &format!("raw C_Sign (cryptoki), {threads} thread{plural}"),
            raw_rate,
            "signatures/s",
            None,
        );
        row(
            &mode,
            &format!("p8hsm library, fresh tokens, {threads} thread{plural}"),
            library_rate,
            "tokens/s",
            Some(library_rate / raw_rate),
        );
    }

    if one_core {
        return;
    }

    // What p8hsm itself adds per token, without the token: claims, JSON, base64 and the
    // SHA-256 digest, with a signer that returns a fixed signature. Through p11-kit this
    // is the whole of the library's cost next to one IPC round trip per signature.
    let fixed = FixedSigner(key_id.clone());
    let n = 200_000;
    let start = Instant::now();
    for _ in 0..n {
        std::hint::black_box(request.sign(&fixed, None, SystemTime::now()).unwrap());
    }
    let overhead = start.elapsed().as_nanos() as f64 / n as f64;
    println!("| {mode} | p8hsm's own work per token (no signature) | {overhead:.0} ns | |");

    // (3) The cache: the same request, signed once.
    let cache = JwtCache::default();
    let cached = request.clone();
    cache
        .get(&cached, "", |now| cached.sign(&signer, None, now))
        .unwrap();
    let hits = 1_000_000;
    let start = Instant::now();
    for _ in 0..hits {
        std::hint::black_box(
            cache
                .get(&cached, "", |now| cached.sign(&signer, None, now))
                .unwrap(),
        );
    }
    let per_hit = start.elapsed().as_nanos() as f64 / hits as f64;
    row(
        &mode,
        "p8hsm cache, hits, 1 thread",
        1e9 / per_hit,
        "tokens/s",
        None,
    );
    println!("| {mode} | p8hsm cache, cost of a hit | {per_hit:.0} ns | |");
    let rate2 = rate(2, window, |_| {
        std::hint::black_box(
            cache
                .get(&cached, "", |now| cached.sign(&signer, None, now))
                .unwrap(),
        );
    });
    row(
        &mode,
        "p8hsm cache, hits, 2 threads",
        rate2,
        "tokens/s",
        None,
    );

    // The agent and the service, when bench.sh started them: side by side.
    if let Ok(socket) = std::env::var("BENCH_AGENT_SOCK") {
        agent_bench(&mode, &socket, &key_id, window, ceiling2);
    }
    if std::env::var_os("BENCH_SERVE_URL").is_some() {
        // The ceiling for the service's fresh tokens, measured in windows between the
        // service's: raw C_Sign at 2 threads, and what one signature costs in CPU.
        // Through p11-kit the token computes in the server's process, not counted here.
        let in_process = std::env::var_os("P11_KIT_SERVER_ADDRESS").is_none();
        let ceiling = |window| {
            let (rate, cpu) = raw.window(2, window);
            serve::Raw {
                rate,
                cpu: in_process.then_some(cpu),
            }
        };
        serve::bench(&mode, key_id.as_str(), window, &ceiling);
    }

    // (4) One-shot processes: p8hsm's CLI next to pkcs11-tool --sign, the minimal
    // PKCS#11 process (load module, log in, find the key, sign).
    let digest = std::env::temp_dir().join(format!("p8hsm-bench-digest-{}", std::process::id()));
    std::fs::write(&digest, [7u8; 32]).unwrap();
    let pin = std::fs::read_to_string(&pin_file)
        .unwrap()
        .trim_end()
        .to_owned();
    let id_hex = base16ct::lower::encode_string(key_id.as_str().as_bytes());
    let runs = 41;
    let mut p8hsm_command = Command::new(var("P8HSM_BIN"));
    p8hsm_command.args([
        "token",
        "connect",
        "--key-id",
        key_id.as_str(),
        "--individual",
    ]);
    let mut tool_command = Command::new("pkcs11-tool");
    tool_command
        .args(["--module", &module, "--token-label", &var("P8HSM_TOKEN")])
        .args([
            "--login",
            "--pin",
            "env:BENCH_PIN",
            "--sign",
            "--mechanism",
            "ECDSA",
        ])
        .args([
            "--id",
            &id_hex,
            "--input-file",
            digest.to_str().unwrap(),
            "--output-file",
            "/dev/null",
        ])
        .env("BENCH_PIN", &pin);
    // Alternating runs, so drift falls on both.
    let (mut p8hsm, mut tool) = (OneShot::default(), OneShot::default());
    for _ in 0..runs {
        p8hsm.run(&mut p8hsm_command);
        tool.run(&mut tool_command);
    }
    let (p8hsm, tool) = (p8hsm.summary(), tool.summary());
    let _ = std::fs::remove_file(&digest);
    println!(
        "| {mode} | one-shot `pkcs11-tool --sign` process, median of {runs} | {:.1} ms, {:.1} MiB peak | |",
        tool.0, tool.1
    );
    println!(
        "| {mode} | one-shot `p8hsm token connect` process, median of {runs} | {:.1} ms, {:.1} MiB peak | {:.2}× wall, {:.2}× memory |",
        p8hsm.0,
        p8hsm.1,
        p8hsm.0 / tool.0,
        p8hsm.1 / tool.1
    );
}

fn row(mode: &str, what: &str, rate: f64, unit: &str, ratio: Option<f64>) {
    let ratio = ratio
        .map(|r| format!("{r:.2} of the ceiling"))
        .unwrap_or_default();
    println!("| {mode} | {what} | {rate:.0} {unit} | {ratio} |");
}

/// Operations per second of `op` run by `threads` threads for `window`.
fn rate(threads: usize, window: Duration, op: impl Fn(usize) + Sync) -> f64 {
    // Warm up: the first calls open sessions and fill caches.
    for i in 0..threads * 10 {
        op(i);
    }
    let start = Instant::now();
    let total: usize = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let op = &op;
                s.spawn(move || {
                    let mut n = 0;
                    while start.elapsed() < window {
                        op(t * 1_000_000 + n);
                        n += 1;
                    }
                    n
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum()
    });
    total as f64 / start.elapsed().as_secs_f64()
}

/// A signer that hashes the message as the token path does and returns a fixed signature.
struct FixedSigner(KeyId);

impl p8hsm::Es256Signer for FixedSigner {
    fn key_id(&self) -> &KeyId {
        &self.0
    }

    fn sign_es256(&self, message: &[u8]) -> Result<p256::ecdsa::Signature, p8hsm::Error> {
        use sha2::Digest;
        std::hint::black_box(sha2::Sha256::digest(message));
        Ok(p256::ecdsa::Signature::from_scalars([1u8; 32], [1u8; 32]).unwrap())
    }
}

/// Raw C_Sign over a 32-byte digest through cryptoki: one logged-in session per thread.
struct RawSigner {
    pkcs11: Pkcs11,
    slot: cryptoki::slot::Slot,
    key: cryptoki::object::ObjectHandle,
    // The session the key was found in stays open: through p11-kit, handles live with it.
    _found_in: std::sync::Mutex<cryptoki::session::Session>,
}

impl RawSigner {
    fn new(module: &str, pin_file: &str, key_id: &KeyId) -> Self {
        let pkcs11 = Pkcs11::new(module).unwrap();
        // p8hsm's library initialized the module in this process already.
        let _ = pkcs11.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK));
        let slot = pkcs11
            .get_slots_with_initialized_token()
            .unwrap()
            .into_iter()
            .find(|s| pkcs11.get_token_info(*s).unwrap().label() == var("P8HSM_TOKEN"))
            .unwrap();
        let pin = SecretString::from(
            std::fs::read_to_string(pin_file)
                .unwrap()
                .trim_end()
                .to_owned(),
        );
        let session = pkcs11.open_rw_session(slot).unwrap();
        let _ = session.login(UserType::User, Some(&pin)); // once per token and process
        let key = session
            .find_objects(&[
                Attribute::Class(ObjectClass::PRIVATE_KEY),
                Attribute::Id(key_id.as_str().as_bytes().to_vec()),
            ])
            .unwrap()[0];
        RawSigner {
            pkcs11,
            slot,
            key,
            _found_in: std::sync::Mutex::new(session),
        }
    }

    /// Signatures per second with `threads` threads signing for `window`, nothing else
    /// running in this process, and the CPU time (this process's, in seconds) of one.
    fn window(&self, threads: usize, window: Duration) -> (f64, f64) {
        let cpu = serve::cpu_seconds("self");
        let start = Instant::now();
        let total: usize = std::thread::scope(|s| {
            let handles: Vec<_> = (0..threads)
                .map(|_| {
                    s.spawn(|| {
                        let session = self.pkcs11.open_rw_session(self.slot).unwrap();
                        let mut n = 0;
                        while start.elapsed() < window {
                            session
                                .sign(&Mechanism::Ecdsa, self.key, &[7u8; 32])
                                .unwrap();
                            n += 1;
                        }
                        n
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).sum()
        });
        let rate = total as f64 / start.elapsed().as_secs_f64();
        (rate, (serve::cpu_seconds("self") - cpu) / total as f64)
    }
}

/// Rates of raw C_Sign and of `library` with `threads` threads, measured in
/// alternating batches for about `window` each.
fn paired(
    threads: usize,
    window: Duration,
    raw: &RawSigner,
    library: impl Fn() + Sync,
) -> (f64, f64) {
    const BATCH: usize = 25;
    let barrier = Barrier::new(threads);
    let deadline = Instant::now() + window * 2;
    let stop = AtomicBool::new(false);
    let times: Vec<(Duration, Duration, usize)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|index| {
                let (barrier, library, stop) = (&barrier, &library, &stop);
                s.spawn(move || {
                    let session = raw.pkcs11.open_rw_session(raw.slot).unwrap();
                    let digest = [7u8; 32];
                    for _ in 0..10 {
                        session.sign(&Mechanism::Ecdsa, raw.key, &digest).unwrap();
                        library();
                    }
                    let (mut raw_time, mut library_time, mut batches) =
                        (Duration::ZERO, Duration::ZERO, 0);
                    loop {
                        barrier.wait();
                        let start = Instant::now();
                        for _ in 0..BATCH {
                            session.sign(&Mechanism::Ecdsa, raw.key, &digest).unwrap();
                        }
                        barrier.wait();
                        raw_time += start.elapsed();
                        let start = Instant::now();
                        for _ in 0..BATCH {
                            library();
                        }
                        // One thread decides, before the barrier, so all stop together.
                        if index == 0 && Instant::now() > deadline {
                            stop.store(true, Ordering::SeqCst);
                        }
                        barrier.wait();
                        library_time += start.elapsed();
                        batches += 1;
                        if stop.load(Ordering::SeqCst) {
                            break;
                        }
                    }
                    (raw_time, library_time, batches)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    // Each thread's time spans its side's batches, the barrier wait for the slowest included.
    let per = |pick: fn(&(Duration, Duration, usize)) -> Duration| {
        times
            .iter()
            .map(|t| (t.2 * BATCH) as f64 / pick(t).as_secs_f64())
            .sum::<f64>()
    };
    (per(|t| t.0), per(|t| t.1))
}

/// Wall times and peak resident memory of repeated runs of one command.
#[derive(Default)]
struct OneShot {
    walls: Vec<f64>,
    peak_kib: u64,
}

impl OneShot {
    /// Runs `command` under GNU time, recording its wall time and peak memory.
    fn run(&mut self, command: &mut Command) {
        let mut timed = Command::new("/usr/bin/time");
        timed
            .args(["-f", "%M"])
            .arg(command.get_program())
            .args(command.get_args());
        for (k, v) in command.get_envs() {
            match v {
                Some(v) => timed.env(k, v),
                None => timed.env_remove(k),
            };
        }
        let start = Instant::now();
        let output = timed.output().unwrap();
        self.walls.push(start.elapsed().as_secs_f64() * 1000.0);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success(),
            "{:?} failed: {stderr}",
            command.get_program()
        );
        let kib: u64 = stderr.lines().last().unwrap().trim().parse().unwrap();
        self.peak_kib = self.peak_kib.max(kib);
    }

    /// Median wall time (ms) and the largest peak resident memory (MiB).
    fn summary(mut self) -> (f64, f64) {
        self.walls.sort_by(f64::total_cmp);
        (
            self.walls[self.walls.len() / 2],
            self.peak_kib as f64 / 1024.0,
        )
    }
}

/// The agent's throughput and latency through its socket: `BENCH_AGENT_SOCK` set.
fn agent_bench(mode: &str, socket: &str, key_id: &KeyId, window: Duration, ceiling: Option<f64>) {
    use std::io::{BufRead, BufReader, Write};
    use std::os::unix::net::UnixStream;
    for (label, fresh) in [("cached tokens", false), ("fresh tokens", true)] {
        let start = Instant::now();
        let results: Vec<(usize, Vec<Duration>)> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..2)
                .map(|t| {
                    s.spawn(move || {
                        let stream = UnixStream::connect(socket).unwrap();
                        let mut reader = BufReader::new(stream.try_clone().unwrap());
                        let mut writer = stream;
                        let mut latencies = Vec::new();
                        let mut reply = String::new();
                        let mut n = 0usize;
                        while start.elapsed() < window {
                            let scope = if fresh { format!("GET /v1/apps/{t}-{n}") } else { "GET /v1/apps".to_owned() };
                            let line = format!(
                                "{{\"id\":{n},\"command\":\"token\",\"kind\":\"connect\",\"key_id\":\"{key_id}\",\"individual\":true,\"scope\":[\"{scope}\"]}}\n"
                            );
                            let sent = Instant::now();
                            writer.write_all(line.as_bytes()).unwrap();
                            reply.clear();
                            reader.read_line(&mut reply).unwrap();
                            latencies.push(sent.elapsed());
                            assert!(reply.contains("\"ok\":true"), "{reply}");
                            n += 1;
                        }
                        (n, latencies)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let elapsed = start.elapsed().as_secs_f64();
        let total: usize = results.iter().map(|r| r.0).sum();
        let mut latencies: Vec<Duration> = results.into_iter().flat_map(|r| r.1).collect();
        latencies.sort();
        let p =
            |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
        let rate = total as f64 / elapsed;
        let ratio = match (fresh, ceiling) {
            (true, Some(ceiling)) => format!("{:.2} of the ceiling", rate / ceiling),
            _ => String::new(),
        };
        println!(
            "| {mode} | agent, {label} through the socket, 2 clients | {rate:.0} tokens/s, p50 {:.0} µs, p99 {:.0} µs | {ratio} |",
            p(0.50).as_secs_f64() * 1e6,
            p(0.99).as_secs_f64() * 1e6
        );
    }
}
