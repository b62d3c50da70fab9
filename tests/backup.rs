//! Backups across tokens: `import --also-into URI` reads the key once, imports it into
//! every token named and proves each copy, all or nothing.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::common::{path_str, succeeded, Hsm};

/// Adds a token labelled `label` to the fixture's SoftHSM store, with the PIN of the
/// first; returns a `--also-into` URI naming it, its PIN source inside.
fn add_token(hsm: &Hsm, label: &str) -> String {
    let module = hsm.var("P8HSM_MODULE");
    let slots = Command::new("pkcs11-tool")
        .args(["--module", module, "--list-slots"])
        .envs(hsm.env.iter().map(|(k, v)| (k, v)))
        .output()
        .unwrap();
    let slots = String::from_utf8_lossy(&slots.stdout).into_owned();
    // The slot whose token is not initialized yet: SoftHSM always keeps one.
    let free = slots
        .split("Slot ")
        .find(|s| s.contains("uninitialized"))
        .and_then(|s| {
            s.split_once('(')?
                .1
                .split_once(')')
                .map(|(id, _)| id.to_owned())
        })
        .unwrap_or_else(|| panic!("a free slot in {slots}"));
    let free = u64::from_str_radix(free.trim_start_matches("0x"), 16)
        .unwrap()
        .to_string();
    let so = "so-pin-for-tests";
    for args in [
        vec![
            "--slot",
            &free,
            "--init-token",
            "--label",
            label,
            "--so-pin",
            "env:SO",
        ],
        vec![
            "--token-label",
            label,
            "--login",
            "--login-type",
            "so",
            "--so-pin",
            "env:SO",
            "--init-pin",
            "--pin",
            "env:USER",
        ],
    ] {
        let out = Command::new("pkcs11-tool")
            .args(["--module", module])
            .args(&args)
            .envs(hsm.env.iter().map(|(k, v)| (k, v)))
            .env("SO", so)
            .env("USER", hsm.pin())
            .output()
            .unwrap();
        succeeded(&out);
    }
    format!(
        "pkcs11:token={label}?pin-source=file:{}",
        hsm.store.join("user.pin").display()
    )
}

/// `keys --json` on the token labelled `label`.
fn keys_on(hsm: &Hsm, label: &str) -> Vec<Value> {
    let out = hsm.run(&["--token", label, "keys", "--json"]).ok();
    serde_json::from_str::<Value>(&out)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

/// The fixture with two more tokens, `backup-a` and `backup-b`, and the URIs naming them;
/// `None` on Kryoptic (the extra tokens are SoftHSM's).
fn three_tokens() -> Option<(Hsm, String, String)> {
    if crate::common::kryoptic() {
        return None;
    }
    let hsm = Hsm::new();
    let a = add_token(&hsm, "backup-a");
    let b = add_token(&hsm, "backup-b");
    Some((hsm, a, b))
}

#[test]
fn a_key_goes_into_every_token_named_each_copy_proven() {
    let Some((hsm, a, b)) = three_tokens() else {
        return;
    };
    let (path, key) = hsm.write_key("AuthKey_BACKUP0001.p8");
    let out = hsm
        .run(&[
            "import",
            path_str(&path),
            "--kind",
            "developer",
            "--team-id",
            "A1B2C3D4E5",
            "--also-into",
            &a,
            "--also-into",
            &b,
        ])
        .ok();
    assert!(
        out.contains("tokens       p8hsm, backup-a, backup-b"),
        "{out}"
    );
    let fingerprint = p8hsm::fingerprint(&key.public_key());
    for label in ["p8hsm", "backup-a", "backup-b"] {
        let keys = keys_on(&hsm, label);
        assert_eq!(keys.len(), 1, "{label}: {keys:?}");
        assert_eq!(keys[0]["id"], "BACKUP0001");
        assert_eq!(keys[0]["fingerprint"], fingerprint.as_str(), "{label}");
        assert_eq!(
            keys[0]["team_id"], "A1B2C3D4E5",
            "metadata goes along: {label}"
        );
        // Each copy signs on its own.
        let token = hsm
            .run(&["--token", label, "token", "apns", "--key-id", "BACKUP0001"])
            .ok();
        crate::common::verify_jwt(token.trim(), &key);
    }
    // A URI that names no token is refused before anything is read or written.
    let (other, _) = hsm.write_key("other.p8");
    hsm.run(&[
        "import",
        path_str(&other),
        "--key-id",
        "BACKUP0002",
        "--also-into",
        "pkcs11:model=SoftHSM%20v2",
    ])
    .fails(2, "error: --also-into needs a URI that names a token: add token=LABEL (or serial= or slot-id=); `p8hsm modules` prints each token's URI");
}

/// A small filesystem mounted over one token's directory: that token refuses writes.
struct Full(PathBuf);

impl Drop for Full {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// Fills the token labelled `label` (its SoftHSM directory goes onto a full tmpfs).
fn fill(hsm: &Hsm, label: &str) -> Full {
    let tokens = hsm.store.join("tokens");
    let dir = std::fs::read_dir(&tokens)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.is_dir()
                && std::fs::read(p.join("token.object"))
                    .is_ok_and(|b| b.windows(label.len()).any(|w| w == label.as_bytes()))
        })
        .expect("the token's directory");
    let copy = hsm.dir.path().join("copy");
    copy_dir(&dir, &copy);
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=64k", "tmpfs"])
        .arg(&dir)
        .status()
        .unwrap();
    assert!(
        mounted.success(),
        "mounting a tmpfs (the tests run as root)"
    );
    let full = Full(dir.clone());
    copy_dir(&copy, &dir);
    // Whatever room is left goes to a filler file.
    let _ = std::fs::write(dir.join("filler"), vec![0u8; 64 * 1024]);
    full
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, to.join(path.file_name().unwrap())).unwrap();
    }
}

#[test]
fn when_one_token_refuses_no_copy_is_left_anywhere() {
    let Some((hsm, a, b)) = three_tokens() else {
        return;
    };
    let before: Vec<usize> = ["p8hsm", "backup-a", "backup-b"]
        .iter()
        .map(|l| hsm.object_count_on(l))
        .collect();
    let (path, _) = hsm.write_key("AuthKey_BACKUP0001.p8");

    // A token that refuses the PIN: refused before anything is written.
    let wrong = hsm.dir.path().join("wrong.pin");
    std::fs::write(&wrong, "wrong-pin\n").unwrap();
    let refusing = format!("pkcs11:token=backup-b?pin-source=file:{}", wrong.display());
    hsm.run(&[
        "import",
        path_str(&path),
        "--also-into",
        &a,
        "--also-into",
        &refusing,
    ])
    .fails(4, "error: the token refused the PIN (wrong PIN)\nwarning: repeated wrong PINs can lock a hardware token; p8hsm tried once and will not retry: check the PIN source before running again");

    // A token that refuses the write, after two copies were made: both are removed.
    let _full = fill(&hsm, "backup-b");
    let run = hsm.run(&[
        "import",
        path_str(&path),
        "--kind",
        "connect-individual",
        "--also-into",
        &a,
        "--also-into",
        &b,
    ]);
    run.fails(8, "error: importing into token \"backup-b\" failed: import check failed: the token did not keep the claim on the key ID it said it created (is its storage full?); the objects created were destroyed; the copies in \"p8hsm\", \"backup-a\" were removed");
    assert!(
        run.stderr
            .contains("the copies in \"p8hsm\", \"backup-a\" were removed"),
        "{}",
        run.stderr
    );
    drop(_full);
    let after: Vec<usize> = ["p8hsm", "backup-a", "backup-b"]
        .iter()
        .map(|l| hsm.object_count_on(l))
        .collect();
    assert_eq!(after, before, "nothing is left in any token");
}

/// `--also-into` naming the token the import writes to already: a usage error, before
/// anything is written.
#[test]
fn the_primary_token_named_again_is_refused_before_anything_is_written() {
    let Some((hsm, a, _)) = three_tokens() else {
        return;
    };
    let (path, _) = hsm.write_key("AuthKey_BACKUP0003.p8");
    let primary = format!(
        "pkcs11:token=p8hsm?pin-source=file:{}",
        hsm.store.join("user.pin").display()
    );
    let before = hsm.object_count_on("p8hsm");
    hsm.run(&["import", path_str(&path), "--also-into", &primary])
        .fails(2, "error: --also-into names token \"p8hsm\", which the import writes to already: name each other token once");
    hsm.run(&[
        "import",
        path_str(&path),
        "--also-into",
        &a,
        "--also-into",
        &a,
    ])
    .fails(2, "error: --also-into names token \"backup-a\", which the import writes to already: name each other token once");
    assert_eq!(hsm.object_count_on("p8hsm"), before);
    assert_eq!(hsm.object_count_on("backup-a"), 0);
}

/// An import into several tokens killed (as by SIGKILL) while it prepares them, or
/// while it finishes them: no token signs with a half-made key, `doctor` names the
/// pending objects, and the same command run again completes in every token.
#[test]
fn an_import_into_several_tokens_killed_midway_is_completed_by_a_run_again() {
    let Some((hsm, a, b)) = three_tokens() else {
        return;
    };
    for (n, step) in ["proved", "finished"].into_iter().enumerate() {
        let key_id = format!("KILLEDBAK{n}");
        let (path, key) = hsm.write_key(&format!("AuthKey_{key_id}.p8"));
        let import = [
            "import",
            path_str(&path),
            "--also-into",
            &a,
            "--also-into",
            &b,
        ];
        let killed = hsm
            .command(&import)
            .env("P8HSM_FAULT_KILL", step)
            .output()
            .unwrap();
        assert_eq!(killed.status.code(), None, "{step}: killed");
        let with_key: Vec<&str> = ["p8hsm", "backup-a", "backup-b"]
            .into_iter()
            .filter(|label| {
                keys_on(&hsm, label)
                    .iter()
                    .any(|k| k["id"] == key_id.as_str())
            })
            .collect();
        // Killed while preparing: no token has the key yet. Killed once the first token
        // took it: that one only, the others' copies pending.
        let expected: &[&str] = if step == "proved" { &[] } else { &["p8hsm"] };
        assert_eq!(with_key, expected, "{step}");
        let doctor = hsm.run(&["--token", "backup-a", "doctor"]);
        if step == "finished" {
            assert!(
                doctor.stdout.contains("unfinished imports"),
                "{}",
                doctor.stdout
            );
        }
        let again = hsm.run(&import).ok();
        assert!(
            again.contains("tokens       p8hsm, backup-a, backup-b"),
            "{again}"
        );
        for label in ["p8hsm", "backup-a", "backup-b"] {
            let token = hsm
                .run(&[
                    "--token",
                    label,
                    "token",
                    "connect",
                    "--key-id",
                    &key_id,
                    "--individual",
                ])
                .ok();
            crate::common::verify_jwt(token.trim(), &key);
            let doctor = hsm.run(&["--token", label, "doctor"]);
            assert!(
                !doctor.stdout.contains("unfinished"),
                "{label}: {}",
                doctor.stdout
            );
        }
    }
}
