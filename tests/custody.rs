//! Key custody: while a p8hsm signer signs through p11-kit's client module, its memory
//! holds no copy of the private scalar; with SoftHSM loaded in-process, it does (the
//! control that shows the scan finds the key when it is there). The agent, through
//! p11-kit, holds none after thousands of signatures. And after `p8hsm import` through
//! p11-kit has done its work (paused before exit by a test-build hook), its memory holds
//! neither the scalar nor the `.p8`'s base64 body; `--method create`, which hands the
//! scalar to p11-kit's client, leaves one there (the control for that scan).
//!
//! Runs without the test harness: the binary re-executes itself with `--signer` as the
//! process under inspection, which never sees the .p8, only the token.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use common::{apns_request, open_token, Hsm, Pki};

/// Signatures made before the scans; the signer keeps signing between them.
const WARM_UP: usize = 2000;
/// Snapshots of the signer's memory. SoftHSM holds the decrypted scalar only while a
/// signature is under way, so a snapshot catches it in-process only some of the time.
const SNAPSHOTS: usize = 40;

fn main() -> ExitCode {
    if std::env::args().nth(1).as_deref() == Some("--signer") {
        return signer();
    }
    let hsm = Hsm::new();
    let key = hsm.import_new_key("2X9R4HXF34");
    let scalar: Vec<u8> = key.to_bytes().to_vec();

    let in_process = copies(&scalar, &hsm.env, true);
    // With SoftHSM in-process, what SoftHSM's own code leaves is reported, not judged:
    // this is not a custody mode (see the README).
    let in_process_env = (&hsm.env[..], "SoftHSM in-process");
    import_copies(&hsm, in_process_env, "INPROC0001", Import::Auto);
    import_copies(&hsm, in_process_env, "INPROC0002", Import::Create);
    let server = hsm.serve();
    let isolated = copies(&scalar, &server.env, false);
    let agent = agent_copies(&hsm, &scalar, &server.env);
    let serve = serve_copies(&hsm, &server.env);
    let through = (&server.env[..], "through p11-kit");
    let import = import_copies(&hsm, through, "IMPORT0001", Import::Auto);
    let from_stdin = import_copies(&hsm, through, "STDIN00001", Import::Stdin);
    let created = import_copies(&hsm, through, "CREATE0001", Import::Create);
    let refused = import_copies(&hsm, through, "REFUSED001", Import::Refused);
    drop(server);
    println!(
        "custody: the agent, through p11-kit, after {AGENT_SIGNATURES} fresh signatures: {agent} copies of the scalar"
    );
    println!(
        "custody: p8hsm serve, through p11-kit, after {HANDSHAKES} TLS handshakes signed with its \
         TLS key in the token: {serve} copies of that key's scalar"
    );
    if import.is_none() {
        println!("custody: the import scans need the fault-injection feature (scripts/test.sh builds with it)");
    }

    println!(
        "custody: while signing (after {WARM_UP} signatures), {} snapshots of the signer's memory \
         through p11-kit's client held {} copies of the private scalar; with SoftHSM in-process, \
         {} of {} snapshots held it ({} copies in all)",
        isolated.snapshots,
        isolated.copies,
        in_process.hits,
        in_process.snapshots,
        in_process.copies
    );
    let (isolated, in_process) = (isolated.copies, in_process.copies);
    let mut passed = vec![
        (
            "no copy of the scalar in the signer through p11-kit",
            isolated == 0,
        ),
        (
            "the scan finds the scalar with SoftHSM in-process",
            in_process > 0,
        ),
        (
            "no copy of the scalar in the agent through p11-kit",
            agent == 0,
        ),
        (
            "no copy of the TLS key's scalar in p8hsm serve through p11-kit",
            serve == 0,
        ),
    ];
    if let Some((scalar, body)) = import {
        passed.push((
            "no copy of the scalar or the .p8's base64 body after an import through p11-kit",
            scalar == 0 && body == 0,
        ));
    }
    if let Some((scalar, body)) = from_stdin {
        passed.push((
            "no copy of the scalar or the body after `import -` through p11-kit",
            scalar == 0 && body == 0,
        ));
    }
    if let Some((scalar, _)) = created {
        // The control: p11-kit's client frees the buffer it serialized C_CreateObject's
        // template into without wiping it, and the scan finds the scalar there.
        passed.push((
            "the scan finds the scalar left by --method create in p11-kit's client",
            scalar > 0,
        ));
    }
    if let Some((scalar, body)) = refused {
        passed.push((
            "no copy of the scalar or the body after parsing and logging in",
            scalar == 0 && body == 0,
        ));
    }
    for (name, ok) in &passed {
        println!("{} {name}", if *ok { "ok  " } else { "FAIL" });
    }
    let failed = passed.iter().filter(|(_, ok)| !ok).count();
    println!("custody: {} passed, {failed} failed", passed.len() - failed);
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Fresh signatures the agent makes before its memory is scanned.
const AGENT_SIGNATURES: usize = 3000;

/// Starts the agent through `env` (p11-kit's client), has it sign fresh tokens, then
/// counts the copies of `scalar` in its memory.
fn agent_copies(hsm: &Hsm, scalar: &[u8], env: &[(String, String)]) -> usize {
    let socket = hsm.dir.path().join("agent-run").join("agent.sock");
    let mut agent = Command::new(env!("CARGO_BIN_EXE_p8hsm"))
        .args([
            "agent",
            "--foreground",
            "--socket",
            socket.to_str().unwrap(),
        ])
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the agent");
    let mut ready = String::new();
    BufReader::new(agent.stdout.take().unwrap())
        .read_line(&mut ready)
        .unwrap();
    let stream = std::os::unix::net::UnixStream::connect(&socket).unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    let mut reply = String::new();
    for i in 0..AGENT_SIGNATURES {
        writeln!(
            writer,
            "{{\"id\":{i},\"command\":\"token\",\"kind\":\"connect\",\"key_id\":\"2X9R4HXF34\",\"individual\":true,\"scope\":[\"GET /v1/apps/{i}\"]}}"
        )
        .unwrap();
        reply.clear();
        reader.read_line(&mut reply).unwrap();
        assert!(reply.contains("\"source\":\"fresh\""), "{reply}");
    }
    let pid = agent.id().to_string();
    let reversed: Vec<u8> = scalar.iter().rev().copied().collect();
    Command::new("kill").args(["-STOP", &pid]).status().unwrap();
    let found = scan(&pid, &[scalar, &reversed]);
    Command::new("kill").args(["-CONT", &pid]).status().unwrap();
    let _ = agent.kill();
    let _ = agent.wait();
    found
}

/// TLS handshakes `p8hsm serve` signs with its key in the token before its memory is
/// scanned.
const HANDSHAKES: usize = 200;

/// Starts `p8hsm serve` through `env` (p11-kit's client) with its TLS key — imported from
/// a file, so that the scan knows its scalar — in the token, makes [`HANDSHAKES`] TLS
/// connections to it, then counts the copies of that scalar in its memory.
fn serve_copies(hsm: &Hsm, env: &[(String, String)]) -> usize {
    let (path, key) = hsm.write_key("tls.p8");
    hsm.run(&["import", path.to_str().unwrap(), "--key-id", "TLSSERVER1"])
        .ok();
    std::fs::remove_file(&path).unwrap();
    let pki = Pki::new(&hsm.dir.path().join("pki"));
    pki.ca("ca");
    let public = pki.dir.join("server-public.pem");
    std::fs::write(&public, hsm.run(&["pubkey", "--key-id", "TLSSERVER1"]).ok()).unwrap();
    pki.issue(
        "ca",
        "server",
        "server",
        "subjectAltName=IP:127.0.0.1\n",
        "1",
        Some(&public),
    );
    pki.issue(
        "ca",
        "client",
        "client",
        "extendedKeyUsage=clientAuth\n",
        "1",
        None,
    );
    std::fs::write(pki.dir.join("policy.toml"), "").unwrap();
    let mut serve = Command::new(env!("CARGO_BIN_EXE_p8hsm"))
        .args(pki.serve_args(&pki.path("server.pem"), "pkcs11:object=TLSSERVER1"))
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start p8hsm serve");
    let mut url = String::new();
    BufReader::new(serve.stdout.take().unwrap())
        .read_line(&mut url)
        .unwrap();
    let url = format!("{}/healthz", url.trim());
    let mut answered = 0;
    for _ in 0..HANDSHAKES {
        let out = Command::new("curl")
            .args([
                "-sS",
                "--cacert",
                &pki.path("ca.pem"),
                "--cert",
                &pki.path("client.pem"),
            ])
            .args(["--key", &pki.path("client.key"), &url])
            .output()
            .unwrap();
        answered += usize::from(out.stdout == b"ok\n");
    }
    assert_eq!(answered, HANDSHAKES, "every handshake succeeded");
    let pid = serve.id().to_string();
    let scalar = key.to_bytes().to_vec();
    let reversed: Vec<u8> = scalar.iter().rev().copied().collect();
    Command::new("kill").args(["-STOP", &pid]).status().unwrap();
    let found = scan(&pid, &[&scalar, &reversed]);
    Command::new("kill").args(["-CONT", &pid]).status().unwrap();
    let _ = serve.kill();
    let _ = serve.wait();
    found
}

/// Which import [`import_copies`] scans.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Import {
    /// The default method, `auto`.
    Auto,
    /// The default method, the key read from standard input (`import -`).
    Stdin,
    /// `--method create`: the scalar crosses the PKCS#11 interface.
    Create,
    /// Stops after parsing and logging in (its label is taken), before any object is made.
    Refused,
}

/// Imports a new key as `key_id` through `env` (named `via`) with the process paused
/// before exit, and counts the copies of its scalar and of the `.p8`'s base64 lines left
/// in that process's memory.
#[cfg(feature = "fault-injection")]
fn import_copies(
    hsm: &Hsm,
    (env, via): (&[(String, String)], &str),
    key_id: &str,
    case: Import,
) -> Option<(usize, usize)> {
    let args: &[&str] = match case {
        Import::Auto => &[],
        Import::Stdin => &["--key-id", key_id],
        Import::Create => &["--method", "create"],
        Import::Refused => &["--label", "2X9R4HXF34"],
    };
    let (path, key) = hsm.write_key(&format!("AuthKey_{key_id}.p8"));
    let pem = std::fs::read_to_string(&path).unwrap();
    let body: Vec<Vec<u8>> = pem
        .lines()
        .filter(|l| !l.starts_with("-----") && l.len() >= 16)
        .map(|l| l.as_bytes().to_vec())
        .collect();
    // From stdin, the process cannot wait for stdin to close: it waits for a file.
    let resume = hsm.dir.path().join(format!("resume-{key_id}"));
    let (file, pause) = match case {
        Import::Stdin => ("-", resume.to_str().unwrap()),
        _ => (path.to_str().unwrap(), "1"),
    };
    let mut import = Command::new(env!("CARGO_BIN_EXE_p8hsm"))
        .args(["import", file])
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env("P8HSM_PAUSE_BEFORE_EXIT", pause)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start p8hsm import");
    if case == Import::Stdin {
        let mut stdin = import.stdin.take().unwrap();
        stdin.write_all(pem.as_bytes()).unwrap();
    }
    let mut stderr = BufReader::new(import.stderr.take().unwrap());
    let mut paused = String::new();
    while !paused.starts_with("paused") {
        paused.clear();
        assert!(
            stderr.read_line(&mut paused).unwrap() > 0,
            "the import paused"
        );
    }
    std::fs::remove_file(&path).unwrap();
    let pid = import.id().to_string();
    let scalar: Vec<u8> = key.to_bytes().to_vec();
    let reversed: Vec<u8> = scalar.iter().rev().copied().collect();
    Command::new("kill").args(["-STOP", &pid]).status().unwrap();
    let scalar_copies = scan(&pid, &[&scalar]);
    let reversed_copies = scan(&pid, &[&reversed]);
    let scalar_copies_total = scalar_copies + reversed_copies;
    let needles: Vec<&[u8]> = body.iter().map(Vec::as_slice).collect();
    let body_copies = scan(&pid, &needles);
    println!(
        "custody: p8hsm import ({case:?}) {via}, paused before exit: {scalar_copies} big-endian and \
         {reversed_copies} little-endian copies of the scalar, {body_copies} of the .p8's base64 lines"
    );
    Command::new("kill").args(["-CONT", &pid]).status().unwrap();
    drop(import.stdin.take());
    std::fs::write(&resume, "").unwrap();
    let out = import.wait_with_output().unwrap();
    assert_eq!(out.status.success(), case != Import::Refused);
    Some((scalar_copies_total, body_copies))
}

#[cfg(not(feature = "fault-injection"))]
fn import_copies(
    _: &Hsm,
    _: (&[(String, String)], &str),
    _: &str,
    _: Import,
) -> Option<(usize, usize)> {
    None
}

/// What the snapshots of one signer found.
struct Scan {
    snapshots: usize,
    /// Snapshots that held at least one copy.
    hits: usize,
    /// Copies over all snapshots.
    copies: usize,
}

/// Starts the signer with `env`, waits until it has signed, then takes snapshots of its
/// memory while it signs and counts the copies of `scalar` (big-endian, and
/// byte-reversed as a little-endian bignum) in them; stops at the first hit when
/// `until_found`.
fn copies(scalar: &[u8], env: &[(String, String)], until_found: bool) -> Scan {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .arg("--signer")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the signer");
    let mut ready = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut ready)
        .unwrap();
    assert_eq!(ready, "ready\n", "the signer signed");
    let pid = child.id().to_string();
    let reversed: Vec<u8> = scalar.iter().rev().copied().collect();
    let mut result = Scan {
        snapshots: 0,
        hits: 0,
        copies: 0,
    };
    while result.snapshots < SNAPSHOTS && !(until_found && result.hits > 0) {
        // Stopped while scanned, so the memory does not change under the scan.
        Command::new("kill").args(["-STOP", &pid]).status().unwrap();
        let found = scan(&pid, &[scalar, &reversed]);
        Command::new("kill").args(["-CONT", &pid]).status().unwrap();
        result.snapshots += 1;
        result.hits += usize::from(found > 0);
        result.copies += found;
        std::thread::sleep(std::time::Duration::from_millis(
            3 + (result.snapshots as u64 * 7) % 11,
        ));
    }
    drop(child.stdin.take());
    assert!(child.wait().unwrap().success(), "the signer ran cleanly");
    result
}

/// Occurrences of any of `needles` in the readable mappings of process `pid`.
fn scan(pid: &str, needles: &[&[u8]]) -> usize {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    let mut mem = std::fs::File::open(format!("/proc/{pid}/mem")).unwrap();
    let mut count = 0;
    for line in maps.lines() {
        let mut fields = line.split_whitespace();
        let (range, perms) = (fields.next().unwrap(), fields.next().unwrap());
        if !perms.starts_with('r') || line.ends_with("[vvar]") || line.ends_with("[vsyscall]") {
            continue;
        }
        let (start, end) = range.split_once('-').unwrap();
        let start = u64::from_str_radix(start, 16).unwrap();
        let end = u64::from_str_radix(end, 16).unwrap();
        let mut region = vec![0u8; (end - start) as usize];
        use std::io::{Seek, SeekFrom};
        if mem.seek(SeekFrom::Start(start)).is_err() || mem.read_exact(&mut region).is_err() {
            continue;
        }
        for needle in needles {
            count += region.windows(needle.len()).filter(|w| w == needle).count();
        }
    }
    count
}

/// The process under inspection: signs through the token until its stdin closes.
fn signer() -> ExitCode {
    let token = open_token(|name| std::env::var(name).unwrap());
    let key = token.key(&"2X9R4HXF34".parse().unwrap()).unwrap();
    let request = apns_request();
    let sign = || request.sign(&key, None, SystemTime::now()).unwrap();
    for _ in 0..WARM_UP {
        sign();
    }
    let done = Arc::new(AtomicBool::new(false));
    let stdin_closed = done.clone();
    std::thread::spawn(move || {
        let _ = std::io::stdin().read_to_end(&mut Vec::new());
        stdin_closed.store(true, Ordering::SeqCst);
    });
    println!("ready");
    std::io::stdout().flush().unwrap();
    while !done.load(Ordering::SeqCst) {
        sign();
    }
    ExitCode::SUCCESS
}
