//! Regression tests for what an adversarial review found — a hostile local user and a
//! careless operator against the release binary — one or more a finding, named by it.

use std::path::Path;
use std::process::{Command, Output, Stdio};

use crate::common::{path_str, Hsm};

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
    let id: String = "DUPKEY0001".bytes().map(|b| format!("{b:02x}")).collect();
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
    signing.fails(7, "2 private keys on the token have key ID DUPKEY0001");
    assert!(signing.stderr.contains("--all --yes"), "{}", signing.stderr);
    let doctor = hsm.run(&["doctor"]);
    assert_eq!(doctor.code, 11, "{}", doctor.stdout);
    assert!(
        doctor
            .stdout
            .contains("✗ key ID DUPKEY0001 is on the token 2 times"),
        "{}",
        doctor.stdout
    );
    hsm.run(&["delete", "--key-id", "DUPKEY0001", "--yes"])
        .fails(7, "2 private keys");
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
        .fails(6, "no key with key ID KILLED0001");
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

    // The claim left behind keeps a new import of the key ID out, and says why.
    let again = hsm.run(&["import", path_str(&path)]);
    again.fails(7, "KILLED0001");
    assert!(
        again.stderr.contains("delete --unfinished --yes"),
        "{}",
        again.stderr
    );
    let cleaned = hsm.run(&["delete", "--unfinished", "--yes"]);
    assert!(
        cleaned
            .stderr
            .contains("deleted 3 objects of unfinished imports"),
        "{}",
        cleaned.stderr
    );
    hsm.run(&["import", path_str(&path)]).ok();
    hsm.run(&["token", "connect", "--key-id", "KILLED0001", "--individual"])
        .ok();
    hsm.run(&["doctor"]).ok();
}

/// A small tmpfs, unmounted when dropped.
struct SmallDisk<'a>(&'a Path);

impl Drop for SmallDisk<'_> {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.0).status();
    }
}

/// Finding 2: on a full token store SoftHSM fails writes without saying so; an import
/// must never report a key it did not keep.
#[test]
fn a_full_token_store_never_reports_an_import_it_did_not_keep() {
    if crate::common::kryoptic() {
        return; // SoftHSM's file store is what fills up
    }
    let dir = tempfile::tempdir().unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=64k", "tmpfs"])
        .arg(dir.path())
        .status()
        .unwrap();
    assert!(
        mounted.success(),
        "mounting a 64 KiB tmpfs (the tests run as root)"
    );
    let _disk = SmallDisk(dir.path());
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
