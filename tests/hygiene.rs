//! File hygiene: everything p8hsm and its scripts write that others must not read is
//! created private — PIN files, the token store, the agent's socket, log and audit log;
//! and `--audit-tokens` is the one way a whole token reaches the audit log.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::common::{succeeded, Hsm};

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

#[test]
fn pin_files_token_store_and_agent_files_are_private() {
    let hsm = Hsm::new();
    hsm.import_new_key("2X9R4HXF34");
    let dir = hsm.dir.path();
    if !crate::common::kryoptic() {
        assert_eq!(mode(&dir.join("tokens")), 0o700);
        assert_eq!(mode(&dir.join("softhsm2.conf")), 0o600);
    }
    assert_eq!(mode(&dir.join("user.pin")), 0o600);
    assert_eq!(mode(&dir.join("so.pin")), 0o600);

    // The agent in the background: its directory, socket, log and audit log.
    let run = dir.join("agent");
    let out = hsm
        .command(&[
            "agent",
            "--socket",
            run.join("agent.sock").to_str().unwrap(),
            "--audit-log",
            dir.join("audit.log").to_str().unwrap(),
            "--audit-tokens",
        ])
        .stdout(Stdio::piped())
        .output()
        .unwrap();
    succeeded(&out);
    let env = String::from_utf8(out.stdout).unwrap();
    let pid = env
        .lines()
        .find_map(|l| l.strip_prefix("P8HSM_AGENT_PID="))
        .and_then(|rest| rest.split(';').next())
        .unwrap()
        .to_owned();
    // One request, so the audit log has a line.
    let stream = std::os::unix::net::UnixStream::connect(run.join("agent.sock")).unwrap();
    let mut writer = stream.try_clone().unwrap();
    std::io::Write::write_all(
        &mut writer,
        b"{\"id\":1,\"command\":\"token\",\"kind\":\"connect\",\"key_id\":\"2X9R4HXF34\",\"individual\":true}\n",
    )
    .unwrap();
    let mut reply = String::new();
    BufReader::new(stream).read_line(&mut reply).unwrap();
    assert!(reply.contains("\"ok\":true"), "{reply}");
    let reply: serde_json::Value = serde_json::from_str(&reply).unwrap();
    let token = reply["result"]["token"].as_str().unwrap();
    let audit = std::fs::read_to_string(dir.join("audit.log")).unwrap();
    assert!(
        audit.contains(&format!("token={token}")),
        "--audit-tokens puts the whole token in the audit line: {audit}"
    );
    assert_eq!(mode(&run), 0o700);
    assert_eq!(mode(&run.join("agent.sock")), 0o600);
    assert_eq!(mode(&run.join("agent.log")), 0o600);
    assert_eq!(mode(&dir.join("audit.log")), 0o600);
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
}

/// Whole tokens never go to an audit log everyone may read.
#[test]
fn whole_tokens_are_not_written_to_a_log_everyone_may_read() {
    let hsm = Hsm::new();
    let log = hsm.dir.path().join("audit.log");
    std::fs::write(&log, "").unwrap();
    std::fs::set_permissions(&log, std::fs::Permissions::from_mode(0o644)).unwrap();
    let socket = hsm.dir.path().join("run").join("agent.sock");
    let args = [
        "agent",
        "--foreground",
        "--socket",
        socket.to_str().unwrap(),
        "--audit-log",
        log.to_str().unwrap(),
        "--audit-tokens",
    ];
    hsm.run(&args).fails(
        12,
        "error: cannot start the agent: cannot open the audit log {dir}/audit.log: it is \
         readable by everyone (mode 0644), and --audit-tokens writes whole tokens to it: chmod \
         o-r it first",
    );
}

/// The `rsa` crate is used for one thing: encrypting the key under a token's RSA public
/// key (`import`'s RSA-OAEP unwrap). Its known advisory (RUSTSEC-2023-0071, a timing
/// leak of the private key in RSA decryption and signing) is accepted in
/// `.cargo/audit.toml` on that ground, so any use of its private-key side fails here.
#[test]
fn the_rsa_crate_is_used_only_to_encrypt_under_a_public_key() {
    let mut uses = Vec::new();
    let mut stack = vec![crate::common::root().join("src")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            for line in text.lines() {
                let code = line.split("//").next().unwrap_or_default();
                if code.contains("rsa::") && !code.contains("cryptoki::mechanism::rsa::")
                    || [
                        "RsaPrivateKey",
                        ".decrypt(",
                        "DecryptingKey",
                        "rsa::pkcs1v15",
                        "rsa::pss",
                    ]
                    .iter()
                    .any(|word| code.contains(word))
                {
                    uses.push(code.trim().to_owned());
                }
            }
        }
    }
    assert_eq!(
        uses,
        ["use rsa::{BigUint, Oaep, RsaPublicKey};"],
        "{uses:#?}"
    );
}

/// The library says what happened; only the binary names its options, variables and
/// commands (to a person) or JSON fields (to a program). A word of the command line in
/// the library's code — outside comments and unit tests — fails here.
#[test]
fn the_library_names_no_option_variable_or_command_of_the_binary() {
    let root = crate::common::root().join("src");
    let mut found = Vec::new();
    let mut stack = vec![root.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path == root.join("bin") {
                continue;
            }
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            // Unit tests sit last in a file, from `#[cfg(test)]` on.
            let code = text.split("#[cfg(test)]").next().unwrap_or_default();
            for (n, line) in code.lines().enumerate() {
                let line = line.trim_start();
                if line.starts_with("//") {
                    continue;
                }
                let words = line.split(" //").next().unwrap_or_default();
                let option = words
                    .match_indices("--")
                    .any(|(i, _)| words[i + 2..].starts_with(|c: char| c.is_ascii_lowercase()));
                let variable = words.contains("P8HSM_") && !words.contains("P8HSM_FAULT_");
                if option || variable || words.contains("`p8hsm ") {
                    found.push(format!("{}:{}: {line}", path.display(), n + 1));
                }
            }
        }
    }
    assert!(found.is_empty(), "{found:#?}");
}

/// A service manager that restarts p8hsm never does so after the token refused the PIN
/// (exit 4): each restart would count against a hardware token's retry limit.
#[test]
fn the_service_units_never_restart_after_a_refused_pin() {
    let manual = std::fs::read_to_string(crate::common::root().join("docs/manual.md")).unwrap();
    assert!(
        manual
            .lines()
            .any(|l| l.starts_with("| 4 |") && l.contains("PIN")),
        "exit 4 is the refused PIN"
    );
    let mut units = 0;
    for entry in std::fs::read_dir(crate::common::root().join("packaging")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "service") {
            let unit = std::fs::read_to_string(&path).unwrap();
            assert!(unit.contains("Restart=on-failure"), "{}", path.display());
            assert!(
                unit.lines().any(|l| l == "RestartPreventExitStatus=4"),
                "{}",
                path.display()
            );
            units += 1;
        }
    }
    assert_eq!(units, 2);
}
