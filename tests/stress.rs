//! Stress: 16 one-shot `p8hsm token connect` processes started at once, then 8 library
//! processes × 250 fresh tokens, started at once, against one SoftHSM token while this
//! process's library thread pool signs at full load. Every token verifies, nothing
//! fails, and the token has the same objects afterwards.
//!
//! Runs without the test harness: the binary re-executes itself with `--worker`.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, ExitCode, Stdio};
use std::time::SystemTime;

use common::{connect_request, open_token, verify_jwt, Hsm};
use p8hsm::Token;

const PROCESSES: usize = 8;
const TOKENS: usize = 250;
const THREADS: usize = 4;
/// One-shot `p8hsm token connect` processes started at once.
const ONE_SHOT: usize = 16;

fn main() -> ExitCode {
    if let Some(worker) = std::env::args().skip_while(|a| a != "--worker").nth(1) {
        return work(&worker);
    }
    let hsm = Hsm::new();
    let key = hsm.import_new_key("2X9R4HXF34");
    let before = hsm.object_count();
    for (name, value) in &hsm.env {
        std::env::set_var(name, value);
    }
    // One-shot processes of the command line, all started together: each loads SoftHSM,
    // logs in (SoftHSM rewrites its token store at every login) and signs.
    let one_shot: Vec<_> = (0..ONE_SHOT)
        .map(|i| {
            hsm.command(&[
                "token",
                "connect",
                "--key-id",
                "2X9R4HXF34",
                "--individual",
                "--scope",
                &format!("GET /v1/apps/cli-{i}"),
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start p8hsm")
        })
        .collect();
    let mut one_shot_failures = Vec::new();
    let mut tokens = Vec::new();
    for child in one_shot {
        let out = child.wait_with_output().unwrap();
        if out.status.success() {
            tokens.push(String::from_utf8(out.stdout).unwrap().trim_end().to_owned());
        } else {
            one_shot_failures.push(String::from_utf8_lossy(&out.stderr).into_owned());
        }
    }

    // Library workers, all started together: they open the token at once, then sign
    // together while this process's pool signs at full load.
    let token = open();
    let mut workers: Vec<_> = (0..PROCESSES)
        .map(|i| {
            Command::new(std::env::current_exe().unwrap())
                .args(["--worker", &format!("p{i}")])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .expect("start a worker")
        })
        .collect::<Vec<_>>()
        .into_iter()
        .enumerate()
        .map(|(i, mut worker)| {
            let mut out = BufReader::new(worker.stdout.take().unwrap());
            let mut ready = String::new();
            out.read_line(&mut ready).unwrap();
            assert_eq!(ready, "ready\n", "worker {i} opened the token");
            (worker, out)
        })
        .collect();
    for (worker, _) in &mut workers {
        drop(worker.stdin.take()); // go
    }
    // Meanwhile, the library's pool at full load in this process.
    let in_process: Vec<String> = std::thread::scope(|s| {
        let token = &token;
        let handles: Vec<_> = (0..THREADS)
            .map(|t| s.spawn(move || sign_many(token, &format!("t{t}"))))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    tokens.extend(in_process);
    let mut failed = 0;
    for (mut worker, out) in workers {
        let lines: Vec<String> = out.lines().map(Result::unwrap).collect();
        failed += usize::from(!worker.wait().unwrap().success() || lines.len() != TOKENS);
        tokens.extend(lines);
    }
    for token in &tokens {
        verify_jwt(token, &key);
    }
    let unique: std::collections::HashSet<&String> = tokens.iter().collect();
    for failure in &one_shot_failures {
        println!("a one-shot process failed: {failure}");
    }
    let checks = [
        (
            "every one-shot process started at once succeeded",
            one_shot_failures.is_empty(),
        ),
        ("every worker signed all its tokens", failed == 0),
        ("every token is fresh", unique.len() == tokens.len()),
        (
            "as many tokens as asked",
            tokens.len() == ONE_SHOT + PROCESSES * TOKENS + THREADS * TOKENS,
        ),
        ("no object created or lost", hsm.object_count() == before),
    ];
    println!(
        "stress: {} tokens from {ONE_SHOT} one-shot processes, {PROCESSES} worker processes and \
         {THREADS} threads, all verified",
        tokens.len()
    );
    for (name, ok) in &checks {
        println!("{} {name}", if *ok { "ok  " } else { "FAIL" });
    }
    let failed = checks.iter().filter(|(_, ok)| !ok).count();
    println!("stress: {} passed, {failed} failed", checks.len() - failed);
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Signs `TOKENS` fresh tokens with the library and returns them.
fn sign_many(token: &Token, tag: &str) -> Vec<String> {
    let key = token.key(&"2X9R4HXF34".parse().unwrap()).unwrap();
    (0..TOKENS)
        .map(|i| {
            connect_request(Some(format!("GET /v1/apps/{tag}-{i}")))
                .sign(&key, None, SystemTime::now())
                .unwrap()
                .token
        })
        .collect()
}

fn open() -> Token {
    open_token(|name| std::env::var(name).unwrap())
}

/// A worker process: opens the token, says so, waits for stdin to close, then prints
/// its tokens, one a line.
fn work(tag: &str) -> ExitCode {
    let token = open();
    println!("ready");
    let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut Vec::new());
    for line in sign_many(&token, tag) {
        println!("{line}");
    }
    ExitCode::SUCCESS
}
