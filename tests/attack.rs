//! Regression tests for what an adversarial review found — a hostile local user and a
//! careless operator against the release binary — one or more a finding, named by it.

use std::path::Path;
use std::process::{Command, Output, Stdio};

use crate::common::{path_str, Hsm, Run, SmallDisk};

fn code(output: &Output) -> Option<i32> {
    output.status.code()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Finding 1: concurrent imports of one key ID made duplicates p8hsm could not use.
#[test]
fn racing_imports_of_one_key_id_leave_exactly_one_key() {
    if crate::common::kryoptic() {
        // Kryoptic 1.5's SQLite store fails and loses writes from several processes at
        // once (CKR_DEVICE_MEMORY, objects seen late); docs/manual.md says so.
        return;
    }
    let hsm = Hsm::new();
    let before = hsm.object_count();
    let (same, _) = hsm.write_key("same.p8");
    let (other, _) = hsm.write_key("other.p8");
    // Six imports of one file and two of another key under the same ID, all at once.
    let children: Vec<_> = (0..8)
        .map(|i| {
            let file = if i < 6 { &same } else { &other };
            hsm.command(&["import", "--key-id", "RACE000001", path_str(file)])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let outputs: Vec<Output> = children
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect();
    let won = outputs.iter().filter(|o| o.status.success()).count();
    if crate::common::nss() {
        // NSS softoken keeps one private key per CKA_ID and refuses the data objects
        // p8hsm's claims are: imports of one key ID at once are not guarded there — the
        // last one written stays, and an earlier one may have reported success
        // (docs/tokens.md says so). What holds: one key, and it signs.
        assert!(
            won >= 1,
            "{:?}",
            outputs.iter().map(stderr).collect::<Vec<_>>()
        );
    } else {
        assert_eq!(
            won,
            1,
            "exactly one import wins: {:?}",
            outputs.iter().map(stderr).collect::<Vec<_>>()
        );
        for lost in outputs.iter().filter(|o| !o.status.success()) {
            assert_eq!(code(lost), Some(7), "{}", stderr(lost));
            assert!(stderr(lost).contains("RACE000001"), "{}", stderr(lost));
        }
    }
    assert_eq!(
        hsm.object_count(),
        before + 2,
        "one private and one public key"
    );
    hsm.run(&["token", "connect", "--key-id", "RACE000001", "--individual"])
        .ok();
    hsm.run(&["doctor"]).ok();
}

/// Finding 1: a key ID on the token twice (made behind p8hsm's back) fails `doctor`, and
/// `delete --all` removes every copy.
#[test]
fn a_duplicated_key_id_fails_doctor_and_delete_all_removes_it() {
    let hsm = Hsm::new();
    let before = hsm.object_count();
    hsm.import_new_key("DUPKEY0001");
    // A second private key with the same CKA_ID and label, written by OpenSC.
    let der = hsm.dir.path().join("second.der");
    let status = Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-outform",
            "DER",
            "-out",
        ])
        .arg(&der)
        .status()
        .unwrap();
    assert!(status.success());
    let id = base16ct::lower::encode_string(b"DUPKEY0001");
    hsm.pkcs11_tool(
        &[
            "--write-object",
            path_str(&der),
            "--type",
            "privkey",
            "--id",
            &id,
            "--label",
            "DUPKEY0001",
        ],
        &[],
    );

    let signing = hsm.run(&["token", "connect", "--key-id", "DUPKEY0001", "--individual"]);
    signing.fails(7, "error: 2 private keys on the token have key ID DUPKEY0001\nhint: `p8hsm keys` shows their fingerprints; `p8hsm delete --key-id DUPKEY0001 --all --yes` removes every one, then import the right key again");
    assert!(signing.stderr.contains("--all --yes"), "{}", signing.stderr);
    hsm.run(&["doctor"])
        .prints(11, "✗ key ID DUPKEY0001 is on the token 2 times");
    hsm.run(&["delete", "--key-id", "DUPKEY0001", "--yes"])
        .fails(7, "error: 2 private keys on the token have key ID DUPKEY0001\nhint: `p8hsm keys` shows their fingerprints; `p8hsm delete --key-id DUPKEY0001 --all --yes` removes every one, then import the right key again");
    let deleted = hsm.run(&["delete", "--key-id", "DUPKEY0001", "--all", "--yes"]);
    assert_eq!(deleted.code, 0, "{}", deleted.stderr);
    assert!(
        deleted
            .stderr
            .contains("deleted 3 objects of key ID DUPKEY0001"),
        "{}",
        deleted.stderr
    );
    assert_eq!(hsm.object_count(), before);
    hsm.run(&["doctor"]).ok();
}

/// Finding 2: an import killed after its second object looked like a good key.
#[test]
fn an_import_killed_halfway_leaves_objects_that_never_sign() {
    let hsm = Hsm::new();
    let (path, _) = hsm.write_key("AuthKey_KILLED0001.p8");
    let killed = hsm
        .command(&["import", path_str(&path), "--kind", "connect-individual"])
        .env("P8HSM_FAULT_KILL", "public-key")
        .output()
        .unwrap();
    assert_eq!(code(&killed), None, "the import died: {}", stderr(&killed));

    let keys = hsm.run(&["keys"]);
    assert_eq!(keys.code, 0, "{}", keys.stderr);
    assert!(
        !keys.stdout.contains("KILLED0001") && !keys.stdout.contains("pending"),
        "{}",
        keys.stdout
    );
    assert!(
        keys.stderr.contains("unfinished imports"),
        "{}",
        keys.stderr
    );
    hsm.run(&["token", "connect", "--key-id", "KILLED0001", "--individual"])
        .fails(6, "error: no key with key ID KILLED0001 on the token\nhint: `p8hsm keys` lists the keys; `p8hsm import AuthKey_<ID>.p8` adds one");
    let doctor = hsm.run(&["doctor"]);
    assert_eq!(doctor.code, 11, "{}", doctor.stdout);
    assert!(
        doctor
            .stdout
            .contains("of unfinished imports: a private key (p8hsm-pending-"),
        "{}",
        doctor.stdout
    );
    assert!(
        doctor.stdout.contains("a claim on key ID KILLED0001"),
        "{}",
        doctor.stdout
    );
    assert!(
        doctor.stdout.contains("`p8hsm delete --unfinished --yes`"),
        "{}",
        doctor.stdout
    );

    // The claim left behind keeps an import of another key under the key ID out, and
    // says why.
    std::fs::create_dir_all(hsm.dir.path().join("other")).unwrap();
    let (other, _) = hsm.write_key("other/AuthKey_KILLED0001.p8");
    let again = hsm.run(&["import", path_str(&other)]);
    // Which of two the import says depends on the order of the claims' random nonces.
    let reason = if again.stderr.contains("under way") {
        "another import of key ID KILLED0001 is under way (or was interrupted)"
    } else {
        "another import's claim on key ID KILLED0001 stayed for 10 s"
    };
    again.fails(
        7,
        &format!("error: {reason}; nothing of this import was kept\nhint: `p8hsm keys` shows key KILLED0001 once an import finishes; if no import is running, an interrupted one left its claim: `p8hsm doctor` names it, `p8hsm delete --unfinished --yes` removes it"),
    );
    assert!(
        again.stderr.contains("delete --unfinished --yes"),
        "{}",
        again.stderr
    );
    // The same import again clears what the one cut short left (its pending key signs
    // for this key), and completes.
    hsm.run(&["import", path_str(&path)]).ok();
    hsm.run(&["token", "connect", "--key-id", "KILLED0001", "--individual"])
        .ok();
    hsm.run(&["doctor"]).ok();
    assert_eq!(hsm.run(&["delete", "--unfinished", "--yes"]).code, 0);
}

/// Labels in p8hsm's own namespace are refused, and `delete --unfinished` removes only
/// what is provably an import's unfinished work: never a key whose ID is a key ID,
/// whatever its label.
#[test]
fn a_live_key_is_never_taken_for_an_unfinished_import() {
    let hsm = Hsm::new();
    let pending = "p8hsm-pending-00112233445566778899aabbccddeeff";
    hsm.run(&["keygen", "--label", pending])
        .fails(3, "error: invalid label \"p8hsm-pending-00112233445566778899aabbccddeeff\": labels starting p8hsm-pending- name p8hsm's unfinished imports");
    let (path, _) = hsm.write_key("AuthKey_LABELLED01.p8");
    hsm.run(&["import", path_str(&path), "--label", "p8hsm-pending-x"])
        .fails(3, "error: invalid label \"p8hsm-pending-x\": labels starting p8hsm-pending- name p8hsm's unfinished imports");
    // A key made outside p8hsm with such a label, under a key ID.
    let key_id_hex: String = "LIVEKEY001".bytes().map(|b| format!("{b:02x}")).collect();
    hsm.pkcs11_tool(
        &[
            "--keypairgen",
            "--key-type",
            "EC:prime256v1",
            "--label",
            pending,
            "--id",
            &key_id_hex,
        ],
        &[],
    );
    let doctor = hsm.run(&["doctor"]);
    assert!(!doctor.stdout.contains("unfinished"), "{}", doctor.stdout);
    hsm.run(&["delete", "--unfinished", "--yes"]);
    let public = hsm.run(&["pubkey", "--key-id", "LIVEKEY001"]);
    assert_eq!(public.code, 0, "the key is still there: {}", public.stderr);
}

/// Finding 2: on a full token store SoftHSM fails writes without saying so; an import
/// must never report a key it did not keep.
#[test]
fn a_full_token_store_never_reports_an_import_it_did_not_keep() {
    if crate::common::kryoptic() {
        return; // SoftHSM's file store is what fills up
    }
    let dir = SmallDisk::new("64k");
    let hsm = Hsm::in_dir(dir.path());
    let mut kept = Vec::new();
    let mut refused = 0;
    for i in 0..10 {
        let key_id = format!("FULLDISK{i:02}");
        let (path, _) = hsm.write_key(&format!("{key_id}.p8"));
        let run = hsm.run(&["import", "--key-id", &key_id, path_str(&path)]);
        match run.code {
            0 => kept.push(key_id),
            8 => {
                assert!(run.stderr.contains("did not keep"), "{}", run.stderr);
                refused += 1;
            }
            other => panic!("import {i} exited {other}: {}", run.stderr),
        }
    }
    assert!(
        refused > 0 && !kept.is_empty(),
        "the store filled up: {} kept",
        kept.len()
    );
    let keys = hsm.run(&["keys", "--json"]).ok();
    let listed: serde_json::Value = serde_json::from_str(&keys).unwrap();
    let listed = listed.as_array().unwrap();
    assert_eq!(listed.len(), kept.len(), "{keys}");
    for key in listed {
        assert_eq!(
            key["has_public_key"], true,
            "every key kept is whole: {key}"
        );
        assert!(kept.iter().any(|k| key["id"] == k.as_str()), "{key}");
    }
    let doctor = hsm.run(&["doctor"]);
    assert_eq!(
        doctor.code, 0,
        "nothing half-made is left: {}",
        doctor.stdout
    );
}

/// The environment `p8hsm agent` prints, parsed: (socket, pid).
fn agent_env(stdout: &str) -> (String, u32) {
    let value = |name: &str| {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}=")))
            .and_then(|v| v.split(';').next())
            .unwrap()
            .trim_matches('\'')
            .to_owned()
    };
    (
        value("P8HSM_AGENT_SOCK"),
        value("P8HSM_AGENT_PID").parse().unwrap(),
    )
}

/// Finding 4: a PIN in a `--key` URI must never reach the background agent's argv (or
/// environment): it goes through a pipe, and the parent warns on its own stderr.
#[test]
fn the_background_agent_never_carries_the_pin_in_its_arguments() {
    let hsm = Hsm::new();
    hsm.import_new_key("2X9R4HXF34");
    let pin = hsm.pin();
    let uri = format!(
        "pkcs11:token=p8hsm?module-path={}&pin-value={pin}",
        hsm.var("P8HSM_MODULE")
    );
    let socket = hsm.dir.path().join("bg").join("agent.sock");
    let out = hsm
        .command(&["--key", &uri, "agent", "--socket", path_str(&socket)])
        .env_remove("P8HSM_PIN_SOURCE")
        .env("P8HSM_KEY_UNUSED", "x")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("warning: the PKCS#11 URI carries pin-value"),
        "{}",
        stderr(&out)
    );
    let (_, pid) = agent_env(&stdout);
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    let kill = || {
        let _ = Command::new("kill").arg(pid.to_string()).status();
    };
    for (what, bytes) in [("argv", &cmdline), ("environment", &environ)] {
        let text = String::from_utf8_lossy(bytes);
        if text.contains(&pin) || text.contains("pin-value") {
            kill();
            panic!("the agent's {what} holds the PIN: {text:?}");
        }
    }
    // It works: it logged in with the PIN it was sent.
    let signed = hsm
        .command(&["token", "connect", "--key-id", "2X9R4HXF34", "--individual"])
        .env("P8HSM_AGENT_SOCK", &socket)
        .env_remove("P8HSM_PIN_SOURCE")
        .output()
        .unwrap();
    kill();
    assert!(signed.status.success(), "{}", stderr(&signed));
}

/// The variable an `env:` PIN source names stays with the command that read it: the
/// background agent, which lives on, does not inherit it.
#[test]
fn the_background_agent_does_not_keep_the_pin_variable() {
    let hsm = Hsm::new();
    hsm.import_new_key("2X9R4HXF34");
    let socket = hsm.dir.path().join("bg").join("agent.sock");
    let out = hsm
        .command(&["agent", "--socket", path_str(&socket)])
        .env("P8HSM_PIN_SOURCE", "env:DEPLOY_TOKEN_PIN")
        .env("DEPLOY_TOKEN_PIN", hsm.pin())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let (_, pid) = agent_env(&String::from_utf8_lossy(&out.stdout));
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    let _ = Command::new("kill").arg(pid.to_string()).status();
    let environ = String::from_utf8_lossy(&environ);
    assert!(!environ.contains("DEPLOY_TOKEN_PIN"), "{environ:?}");
    assert!(!environ.contains(&hsm.pin()), "{environ:?}");
}

/// Finding 5: slow and idle clients cannot hold the agent: a request line must arrive
/// whole within 10 s, and when every connection is taken a new one evicts the one that
/// waited longest.
#[test]
fn slow_clients_are_cut_off_and_cannot_starve_others() {
    use std::io::{Read, Write};
    use std::time::{Duration, Instant};
    let hsm = Hsm::new();
    hsm.import_new_key("2X9R4HXF34");
    let agent = crate::common::Agent::start(&hsm, &hsm.env, &[], &[]);
    let request =
        b"{\"id\":1,\"kind\":\"connect\",\"key_id\":\"2X9R4HXF34\",\"individual\":true}\n";

    // One byte every 3 s: under the old per-read timeout this never ended.
    let mut trickle = agent.connect();
    let started = Instant::now();
    let closed = std::thread::spawn(move || {
        for byte in request.iter().take(8) {
            if trickle.write_all(&[*byte]).is_err() {
                break;
            }
            std::thread::sleep(Duration::from_secs(3));
        }
        let mut rest = Vec::new();
        let _ = trickle.read_to_end(&mut rest);
        started.elapsed()
    });

    // 70 idle connections, more than the agent serves at once.
    let idle: Vec<_> = (0..70).map(|_| agent.connect()).collect();
    let begin = Instant::now();
    let reply = agent.request(&serde_json::from_slice(&request[..request.len() - 1]).unwrap());
    assert_eq!(reply["ok"], true, "a new client is served: {reply}");
    assert!(
        begin.elapsed() < Duration::from_secs(5),
        "{:?}",
        begin.elapsed()
    );
    let elapsed = closed.join().unwrap();
    assert!(
        elapsed < Duration::from_secs(20),
        "the trickling client was cut off after {elapsed:?}"
    );
    drop(idle);
}

/// Clients that send requests and never read the replies cannot hold the agent: a reply
/// waiting to be read is evicted as an idle client is.
#[test]
fn clients_that_never_read_cannot_starve_others() {
    use std::io::Write;
    use std::time::{Duration, Instant};
    let hsm = Hsm::new();
    hsm.import_new_key("2X9R4HXF34");
    // Its audit lines go to a file: a pipe nobody reads would hold every connection.
    let log = hsm.dir.path().join("audit.log");
    let agent = crate::common::Agent::start(&hsm, &hsm.env, &[], &["--audit-log", path_str(&log)]);
    let line = b"{\"id\":1,\"command\":\"token\",\"kind\":\"connect\",\"key_id\":\"2X9R4HXF34\",\"individual\":true}\n";
    let flood: Vec<_> = (0..70)
        .map(|_| {
            let mut stream = agent.connect();
            stream.set_nonblocking(true).unwrap();
            // As many requests as the socket takes; the replies are never read.
            for _ in 0..4000 {
                if stream.write_all(line).is_err() {
                    break;
                }
            }
            stream
        })
        .collect();
    std::thread::sleep(Duration::from_secs(1));
    let begin = Instant::now();
    let reply = agent.request(&serde_json::from_slice(&line[..line.len() - 1]).unwrap());
    assert_eq!(reply["ok"], true, "a new client is served: {reply}");
    assert!(
        begin.elapsed() < Duration::from_secs(5),
        "{:?}",
        begin.elapsed()
    );
    drop(flood);
}

/// Finding 6: `--socket` pointing at a regular file must never remove it.
#[test]
fn the_agent_removes_only_a_stale_socket() {
    let hsm = Hsm::new();
    hsm.import_new_key("2X9R4HXF34");
    let private = hsm.dir.path().join("private");
    std::os::unix::fs::DirBuilderExt::mode(&mut std::fs::DirBuilder::new(), 0o700)
        .create(&private)
        .unwrap();
    let precious = private.join("precious");
    std::fs::write(&precious, "precious\n").unwrap();
    let out = hsm
        .command(&["agent", "--foreground", "--socket", path_str(&precious)])
        .output()
        .unwrap();
    assert_eq!(code(&out), Some(12), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("exists and is not a socket"),
        "{}",
        stderr(&out)
    );
    assert_eq!(std::fs::read_to_string(&precious).unwrap(), "precious\n");
}

/// Finding 7: `--allow-uid` works for a real second uid, and the default stays closed.
#[test]
fn an_allowed_uid_can_reach_the_agent_and_others_cannot() {
    let hsm = Hsm::new();
    let key = hsm.import_new_key("2X9R4HXF34");
    let dir = std::path::PathBuf::from(format!("/tmp/p8hsm-allow-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let socket = dir.join("agent.sock");
    let run_as_nobody = |socket: &Path| {
        let mut args = crate::common::as_uid(65534);
        args.extend(
            [
                crate::common::p8hsm_for_others().to_str().unwrap(),
                "token",
                "connect",
                "--key-id",
                "2X9R4HXF34",
                "--individual",
            ]
            .map(String::from),
        );
        Command::new(&args[0])
            .args(&args[1..])
            .env("P8HSM_AGENT_SOCK", socket)
            .output()
            .unwrap()
    };
    {
        let _closed = crate::common::Agent::start_at(&socket, &hsm.env, &[], &[]);
        let refused = run_as_nobody(&socket);
        assert_eq!(code(&refused), Some(5), "{}", stderr(&refused));
    }
    std::fs::remove_dir_all(&dir).unwrap();
    let _open = crate::common::Agent::start_at(&socket, &hsm.env, &[], &["--allow-uid", "65534"]);
    let served = run_as_nobody(&socket);
    assert!(served.status.success(), "{}", stderr(&served));
    crate::common::verify_jwt(String::from_utf8_lossy(&served.stdout).trim_end(), &key);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
    assert_eq!(
        mode, 0o711,
        "others may reach the socket, not list the directory"
    );
    drop(_open);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Finding 8: when it cannot start a thread, the agent answers `busy` and goes on.
#[test]
fn the_agent_survives_when_it_cannot_start_threads() {
    use std::io::Write;
    let hsm = Hsm::new();
    let key = hsm.import_new_key("2X9R4HXF34");
    crate::common::give_to(&hsm.store, 45454);
    crate::common::give_to(hsm.dir.path(), 45454);
    let mut prefix = crate::common::as_uid(45454);
    prefix.extend([
        "prlimit".to_owned(),
        "--nproc=6".to_owned(),
        "--".to_owned(),
    ]);
    let prefix: Vec<&str> = prefix.iter().map(String::as_str).collect();
    let mut agent = crate::common::Agent::start(&hsm, &hsm.env, &prefix, &["--allow-uid", "0"]);
    let mut held: Vec<_> = (0..30).map(|_| agent.connect()).collect();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let busy = held
        .iter_mut()
        .filter(|s| {
            s.set_read_timeout(Some(std::time::Duration::from_millis(200)))
                .unwrap();
            let mut line = String::new();
            std::io::BufRead::read_line(&mut std::io::BufReader::new(&**s), &mut line).is_ok()
                && line.contains("\"busy\"")
        })
        .count();
    assert!(busy > 0, "some connections were told the agent is busy");
    drop(held);
    std::thread::sleep(std::time::Duration::from_millis(300));
    let mut stream = agent.connect();
    let _ = stream.write_all(
        b"{\"id\":1,\"kind\":\"connect\",\"key_id\":\"2X9R4HXF34\",\"individual\":true}\n",
    );
    let reply = crate::common::read_reply(&mut stream);
    crate::common::verify_jwt(reply["result"]["token"].as_str().unwrap(), &key);
    assert!(
        agent.child.try_wait().unwrap().is_none(),
        "the agent still runs"
    );
}

/// Finding 10: a socket directory reached through a symbolic link is refused, and a
/// client does not talk to an agent of another user.
#[test]
fn symlinked_socket_directories_and_foreign_agents_are_refused() {
    let hsm = Hsm::new();
    hsm.import_new_key("2X9R4HXF34");
    let real = hsm.dir.path().join("real");
    std::fs::create_dir(&real).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o700)).unwrap();
    let link = hsm.dir.path().join("link");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let out = hsm
        .command(&[
            "agent",
            "--foreground",
            "--socket",
            path_str(&link.join("agent.sock")),
        ])
        .output()
        .unwrap();
    assert_eq!(code(&out), Some(12), "{}", stderr(&out));
    assert!(stderr(&out).contains("symbolic link"), "{}", stderr(&out));

    // An agent of uid 65534 that would serve root: root's client refuses to use it.
    crate::common::give_to(&hsm.store, 65534);
    let socket = std::path::PathBuf::from(format!(
        "/tmp/p8hsm-foreign-{}/agent.sock",
        std::process::id()
    ));
    let prefix = crate::common::as_uid(65534);
    let prefix: Vec<&str> = prefix.iter().map(String::as_str).collect();
    let agent = crate::common::Agent::start_at(&socket, &hsm.env, &prefix, &["--allow-uid", "0"]);
    let args = ["token", "connect", "--key-id", "2X9R4HXF34", "--individual"];
    Run::from(
        hsm.command(&args)
            .env("P8HSM_AGENT_SOCK", &socket)
            .output()
            .unwrap(),
    )
    .fails(5, &format!("error: cannot reach the agent at {}: it is served by uid 65534, not by you (set P8HSM_AGENT_UID=65534 if that agent is yours to use)\nhint: is `p8hsm agent` running? Unset P8HSM_AGENT_SOCK to use the token directly", socket.display()));
    let trusted = hsm
        .command(&args)
        .env("P8HSM_AGENT_SOCK", &socket)
        .env("P8HSM_AGENT_UID", "65534")
        .output()
        .unwrap();
    assert!(trusted.status.success(), "{}", stderr(&trusted));
    drop(agent);
    let _ = std::fs::remove_dir_all(socket.parent().unwrap());
}

/// Finding 12: no audit line, no token.
#[test]
fn a_token_that_cannot_be_audited_is_not_handed_out() {
    let hsm = Hsm::new();
    hsm.import_new_key("2X9R4HXF34");
    let disk = SmallDisk::new("16k");
    let audit = disk.path().join("audit.log");
    let agent =
        crate::common::Agent::start(&hsm, &hsm.env, &[], &["--audit-log", path_str(&audit)]);
    let request =
        serde_json::json!({"id": 1, "kind": "connect", "key_id": "2X9R4HXF34", "individual": true});
    assert_eq!(agent.request(&request)["ok"], true);
    // Fill the disk the audit log is on, its own last page too.
    let _ = std::fs::write(disk.path().join("filler"), vec![b'x'; 64 * 1024]);
    let mut log = std::fs::OpenOptions::new()
        .append(true)
        .open(&audit)
        .unwrap();
    while std::io::Write::write_all(&mut log, b"x").is_ok() {}
    let reply = agent.request(&serde_json::json!({"id": 2, "kind": "connect", "key_id": "2X9R4HXF34", "individual": true, "scope": ["GET /v1/apps"]}));
    assert_eq!(reply["ok"], false, "{reply}");
    assert_eq!(reply["error"]["code"], "audit_failed", "{reply}");
    assert!(reply.get("result").is_none());
    // A cached token needs an audit line too.
    let cached = agent.request(&request);
    assert_eq!(cached["error"]["code"], "audit_failed", "{cached}");
    drop(agent);
}

/// Finding 14: the agent holds the PIN, so it is not dumpable: /proc/PID/ belongs to
/// root although the agent runs as another user.
#[test]
fn the_agent_cannot_dump_core() {
    use std::os::unix::fs::MetadataExt;
    let hsm = Hsm::new();
    hsm.import_new_key("2X9R4HXF34");
    crate::common::give_to(&hsm.store, 45455);
    crate::common::give_to(hsm.dir.path(), 45455);
    let prefix = crate::common::as_uid(45455);
    let prefix: Vec<&str> = prefix.iter().map(String::as_str).collect();
    let agent = crate::common::Agent::start(&hsm, &hsm.env, &prefix, &[]);
    let pid = agent.child.id();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    assert!(
        status
            .lines()
            .any(|l| l.starts_with("Uid:") && l.contains("45455")),
        "{status}"
    );
    let owner = std::fs::metadata(format!("/proc/{pid}/environ"))
        .unwrap()
        .uid();
    assert_eq!(
        owner, 0,
        "a non-dumpable process's /proc files belong to root"
    );
}

/// Finding 17: a rogue agent streaming data cannot make the client read without end.
#[test]
fn the_client_bounds_what_it_reads_from_an_agent() {
    use std::io::{Read, Write};
    let hsm = Hsm::new();
    let socket = hsm.dir.path().join("rogue.sock");
    let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    std::thread::spawn(move || {
        if let Ok((mut stream, _)) = listener.accept() {
            let mut line = [0u8; 1024];
            let _ = stream.read(&mut line);
            let chunk = vec![b'x'; 64 * 1024];
            while stream.write_all(&chunk).is_ok() {}
        }
    });
    let out = Run::from(
        hsm.command(&["token", "connect", "--key-id", "2X9R4HXF34", "--individual"])
            .env("P8HSM_AGENT_SOCK", &socket)
            .output()
            .unwrap(),
    );
    out.fails(5, &format!("error: cannot reach the agent at {}: the answer is over 1048576 bytes, which is not the agent's protocol\nhint: is `p8hsm agent` running? Unset P8HSM_AGENT_SOCK to use the token directly", socket.display()));
    assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
}

/// Runs `command` and fails the test if it takes more than 10 s (a FIFO blocking it).
fn within_10s(mut command: Command) -> Output {
    let child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let watchdog = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_secs(10));
        let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
    });
    let out = child.wait_with_output().unwrap();
    drop(watchdog);
    assert!(out.status.code().is_some(), "it blocked and was killed");
    out
}

/// Finding 18: a FIFO where a file belongs is refused at once, never waited on.
#[test]
fn fifos_are_refused_not_waited_on() {
    let hsm = Hsm::new();
    hsm.import_new_key("2X9R4HXF34");
    let fifo = hsm.dir.path().join("fifo");
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let mut pin = hsm.command(&["keys"]);
    pin.env("P8HSM_PIN_SOURCE", format!("file:{}", fifo.display()));
    let out = within_10s(pin);
    assert_eq!(code(&out), Some(4), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("not a regular file"),
        "{}",
        stderr(&out)
    );

    let token = hsm
        .run(&["token", "connect", "--key-id", "2X9R4HXF34", "--individual"])
        .ok();
    let out = within_10s(hsm.command(&["check", token.trim_end(), "--pubkey", path_str(&fifo)]));
    assert_eq!(code(&out), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("not a regular file"),
        "{}",
        stderr(&out)
    );

    let socket = hsm.dir.path().join("run").join("agent.sock");
    let out = within_10s(hsm.command(&[
        "agent",
        "--foreground",
        "--socket",
        path_str(&socket),
        "--audit-log",
        path_str(&fifo),
    ]));
    assert_eq!(code(&out), Some(12), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("not a regular file"),
        "{}",
        stderr(&out)
    );
    assert!(
        !socket.exists(),
        "no socket left by an agent that did not start"
    );

    // Found in this project's own pass: an audit log that is a symbolic link (another
    // user's trap in a shared directory) is refused, and its target left alone.
    let target = hsm.dir.path().join("victim");
    std::fs::write(&target, "untouched\n").unwrap();
    let trap = hsm.dir.path().join("audit-trap.log");
    std::os::unix::fs::symlink(&target, &trap).unwrap();
    let out = within_10s(hsm.command(&[
        "agent",
        "--foreground",
        "--socket",
        path_str(&socket),
        "--audit-log",
        path_str(&trap),
    ]));
    assert_eq!(code(&out), Some(12), "{}", stderr(&out));
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "untouched\n");
}

/// SIGHUP opens the agent's audit log again (after logrotate renamed it), and the agent
/// goes on serving; SIGTERM stops it cleanly, socket removed.
#[test]
fn sighup_reopens_the_agents_audit_log() {
    let hsm = Hsm::new();
    hsm.import_new_key("2X9R4HXF34");
    let log = hsm.dir.path().join("audit.log");
    let mut agent =
        crate::common::Agent::start(&hsm, &hsm.env, &[], &["--audit-log", path_str(&log)]);
    let request =
        serde_json::json!({"kind": "connect", "key_id": "2X9R4HXF34", "individual": true});
    assert_eq!(agent.request(&request)["ok"], true);
    let rotated = hsm.dir.path().join("audit.log.1");
    std::fs::rename(&log, &rotated).unwrap();
    let hup = || {
        Command::new("kill")
            .args(["-HUP", &agent.child.id().to_string()])
            .status()
            .unwrap()
    };
    hup();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !log.exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(agent.request(&request)["ok"], true, "still serving");
    let old = std::fs::read_to_string(&rotated).unwrap();
    let new = std::fs::read_to_string(&log).unwrap();
    assert_eq!(old.matches(" sign ").count(), 1, "{old}");
    assert!(
        new.contains("log-reopened") && new.matches(" sign ").count() == 1,
        "{new}"
    );
    // Deleted, not renamed: no token until a SIGHUP opens a new log.
    std::fs::remove_file(&log).unwrap();
    let refused = agent.request(&request);
    assert_eq!(refused["error"]["code"], "audit_failed", "{refused}");
    hup();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !log.exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(agent.request(&request)["ok"], true);
    Command::new("kill")
        .args(["-TERM", &agent.child.id().to_string()])
        .status()
        .unwrap();
    let status = agent.child.wait().unwrap();
    assert!(status.success(), "{status}");
    assert!(!agent.socket.exists());
}

/// Findings 21 and 22: PEM in any line length is read; a label with a bidirectional
/// override is refused.
#[test]
fn pem_line_lengths_are_lax_and_labels_plain() {
    let hsm = Hsm::new();
    let (path, _) = hsm.write_key("AuthKey_WRAPPED076.p8");
    let pem = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = pem.lines().collect();
    let body = lines[1..lines.len() - 1].concat();
    let one_line = format!("{}\n{body}\n{}\n", lines[0], lines[lines.len() - 1]);
    std::fs::write(&path, one_line).unwrap();
    hsm.run(&["import", path_str(&path)]).ok();
    let (other, _) = hsm.write_key("AuthKey_BIDILABEL1.p8");
    hsm.run(&["import", path_str(&other), "--label", "ops\u{202e}yek"])
        .fails(3, "error: invalid label \"ops\\u{202e}yek\": use 1 to 64 bytes without control or bidirectional formatting characters");
}

/// Finding 23: numbers too large, values with newlines, and a report that cannot be
/// written after an import.
#[test]
fn odd_values_keep_messages_true_and_on_one_line() {
    let hsm = Hsm::new();
    hsm.import_new_key("2X9R4HXF34");
    let big = hsm.run(&[
        "token",
        "connect",
        "--key-id",
        "2X9R4HXF34",
        "--individual",
        "--ttl",
        "18446744073709551615",
    ]);
    big.fails(3, "error: App Store Connect API tokens may live at most 1200 s from iat to exp, but ttl 18446744073709551615 with skew 60 gives 18446744073709551615\nhint: use --ttl 1140 or less with --skew 60; only tokens whose --scope entries are all GETs on resources Apple allows may live longer");
    let newline = hsm.run(&[
        "token",
        "connect",
        "--key-id",
        "2X9R4HXF34",
        "--individual",
        "--scope",
        "GET /v1/\napps",
    ]);
    newline.fails(2, "error: invalid scope \"GET /v1/\\napps\": a scope is \"METHOD /path\" with METHOD GET, POST, PATCH, PUT or DELETE, e.g. \"GET /v1/apps\"");
    assert_eq!(newline.stderr.lines().count(), 1, "{}", newline.stderr);

    let (path, _) = hsm.write_key("AuthKey_UNREPORT01.p8");
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let out = hsm
        .command(&["import", path_str(&path)])
        .stdout(full)
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert_eq!(code(&out), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("key UNREPORT01 was imported"),
        "{}",
        stderr(&out)
    );
    hsm.run(&["token", "connect", "--key-id", "UNREPORT01", "--individual"])
        .ok();
}
