//! The binary on its own: `p8hsm softhsm init` makes a test token through PKCS#11 (no
//! OpenSC, no clone of this repository), and completions and man pages come from the
//! command line's own definitions.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

use crate::common::succeeded;

/// `p8hsm ARGS` with a clean environment, run from `cwd`.
fn p8hsm(args: &[&str], cwd: &Path, env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_p8hsm"))
        .args(args)
        .current_dir(cwd)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The environment `init`'s output sets, as a shell evaluates it.
fn exports(out: &Output) -> Vec<(String, String)> {
    let names = [
        "SOFTHSM2_CONF",
        "P8HSM_MODULE",
        "P8HSM_TOKEN",
        "P8HSM_PIN_SOURCE",
    ];
    let script = format!(
        "{}\nprintf '%s\\0' {}",
        text(&out.stdout),
        names.map(|n| format!("\"${n}\"")).join(" ")
    );
    let shell = Command::new("bash").arg("-c").arg(script).output().unwrap();
    succeeded(&shell);
    let values: Vec<String> = text(&shell.stdout).split('\0').map(str::to_owned).collect();
    names.iter().map(|n| n.to_string()).zip(values).collect()
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn init_makes_a_private_token_twice_the_same_and_a_signer_in_two_commands() {
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("store with 'quote'");
    let dir_str = dir.to_str().unwrap();
    let first = p8hsm(&["softhsm", "init", "--dir", dir_str], work.path(), &[]);
    succeeded(&first);
    assert_eq!(text(&first.stdout).lines().count(), 4, "four export lines");
    // eval-able: the quoted path comes back whole through a shell.
    let env = exports(&first);
    assert_eq!(env[0].1, dir.join("softhsm2.conf").to_str().unwrap());
    assert_eq!(env[2].1, "p8hsm");

    let user_pin = std::fs::read_to_string(dir.join("user.pin")).unwrap();
    let so_pin = std::fs::read_to_string(dir.join("so.pin")).unwrap();
    assert_eq!(
        user_pin.trim_end().len(),
        24,
        "24 random hexadecimal digits"
    );
    assert_ne!(user_pin, so_pin);
    for secret in [user_pin.trim_end(), so_pin.trim_end()] {
        assert!(!text(&first.stdout).contains(secret) && !text(&first.stderr).contains(secret));
    }
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&dir.join("tokens")), 0o700);
    for file in ["user.pin", "so.pin", "softhsm2.conf"] {
        assert_eq!(mode(&dir.join(file)), 0o600, "{file}");
    }

    // Twice: the same token, the same PINs, the same output.
    let second = p8hsm(&["softhsm", "init", "--dir", dir_str], work.path(), &[]);
    succeeded(&second);
    assert_eq!(second.stdout, first.stdout);
    assert!(
        text(&second.stderr).contains("already exists"),
        "{}",
        text(&second.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("user.pin")).unwrap(),
        user_pin
    );

    // A signer in two more commands: a key born in the token, and a token signed by it.
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let keygen = p8hsm(&["keygen", "--label", "ci"], work.path(), &env);
    succeeded(&keygen);
    succeeded(&p8hsm(
        &[
            "assign",
            "--label",
            "ci",
            "--key-id",
            "d136aa66-0c3b-4bd4-9892-c20e8db024ab",
            "--kind",
            "apple-ads",
            "--client-id",
            "SEARCHADS.8a4e1f0c-2b3d-4c5e-9f60-718293a4b5c6",
            "--ads-team-id",
            "SEARCHADS.0f1e2d3c-4b5a-4697-8877-665544332211",
        ],
        work.path(),
        &env,
    ));
    let token = p8hsm(
        &[
            "token",
            "apple-ads",
            "--key-id",
            "d136aa66-0c3b-4bd4-9892-c20e8db024ab",
        ],
        work.path(),
        &env,
    );
    succeeded(&token);
    assert_eq!(text(&token.stdout).matches('.').count(), 2, "a JWT");
}

#[test]
fn init_refuses_a_second_token_a_lost_pin_file_and_a_read_only_directory() {
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("store");
    let dir_str = dir.to_str().unwrap();
    succeeded(&p8hsm(
        &["softhsm", "init", "--dir", dir_str],
        work.path(),
        &[],
    ));
    let before = std::fs::read_dir(dir.join("tokens")).unwrap().count();

    let hash = p8hsm(&["softhsm", "init", "--dir", "/tmp/a#b"], work.path(), &[]);
    assert_eq!(hash.status.code(), Some(2));
    assert!(
        text(&hash.stderr).contains("cannot hold a path with #"),
        "{}",
        text(&hash.stderr)
    );
    assert!(!Path::new("/tmp/a#b").exists());
    let other = p8hsm(
        &["softhsm", "init", "--dir", dir_str, "--label", "other"],
        work.path(),
        &[],
    );
    assert_eq!(other.status.code(), Some(2));
    assert!(
        text(&other.stderr).contains("already holds token \"p8hsm\""),
        "{}",
        text(&other.stderr)
    );
    assert!(other.stdout.is_empty());
    assert_eq!(
        std::fs::read_dir(dir.join("tokens")).unwrap().count(),
        before
    );

    std::fs::remove_file(dir.join("user.pin")).unwrap();
    let lost = p8hsm(&["softhsm", "init", "--dir", dir_str], work.path(), &[]);
    assert_eq!(lost.status.code(), Some(2));
    assert!(
        text(&lost.stderr).contains("user.pin is missing"),
        "{}",
        text(&lost.stderr)
    );

    // A directory others may write to (they could swap what p8hsm keeps there): refused
    // before anything is made in it.
    let shared = work.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o777)).unwrap();
    let run = p8hsm(
        &["softhsm", "init", "--dir", shared.to_str().unwrap()],
        work.path(),
        &[],
    );
    assert_eq!(run.status.code(), Some(2), "{}", text(&run.stderr));
    assert!(
        text(&run.stderr).contains("only you may write"),
        "{}",
        text(&run.stderr)
    );
    assert_eq!(
        std::fs::read_dir(&shared).unwrap().count(),
        0,
        "nothing made in it"
    );

    // Inside a directory others may write to, however deep: refused (another user
    // could rename the private directory away and put one of theirs in its place).
    let inner = shared.join("a").join("b");
    let run = p8hsm(
        &["softhsm", "init", "--dir", inner.to_str().unwrap()],
        work.path(),
        &[],
    );
    assert_eq!(run.status.code(), Some(2), "{}", text(&run.stderr));
    assert!(
        text(&run.stderr).contains("others may write to without the sticky bit"),
        "{}",
        text(&run.stderr)
    );
    assert!(!shared.join("a").exists(), "nothing made");
    // The sticky bit (as on /tmp) lets only an entry's owner rename it: accepted.
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let run = p8hsm(
        &["softhsm", "init", "--dir", inner.to_str().unwrap()],
        work.path(),
        &[],
    );
    assert_eq!(run.status.code(), Some(0), "{}", text(&run.stderr));

    // A read-only file system: a clear error, nothing made.
    let ro = work.path().join("ro");
    std::fs::create_dir(&ro).unwrap();
    assert!(
        Command::new("mount")
            .args(["-t", "tmpfs", "-o", "ro,size=64k", "tmpfs"])
            .arg(&ro)
            .status()
            .unwrap()
            .success(),
        "mounting a read-only tmpfs (the tests run as root)"
    );
    let run = p8hsm(
        &[
            "softhsm",
            "init",
            "--dir",
            ro.join("store").to_str().unwrap(),
        ],
        work.path(),
        &[],
    );
    let listed = std::fs::read_dir(&ro).unwrap().count();
    let _ = Command::new("umount").arg(&ro).status();
    assert_eq!(run.status.code(), Some(1), "{}", text(&run.stderr));
    assert!(
        text(&run.stderr).starts_with("error: cannot write "),
        "{}",
        text(&run.stderr)
    );
    assert!(
        text(&run.stderr).contains("Read-only file system"),
        "{}",
        text(&run.stderr)
    );
    assert!(run.stdout.is_empty());
    assert_eq!(listed, 0, "nothing half-made");
}

#[test]
fn completions_and_man_pages_come_from_the_command_line() {
    let work = tempfile::tempdir().unwrap();
    for shell in ["bash", "zsh", "fish"] {
        let out = p8hsm(&["completions", shell], work.path(), &[]);
        succeeded(&out);
        let script = text(&out.stdout);
        for word in ["keygen", "assign", "apple-ads", "renew-within"] {
            assert!(script.contains(word), "{shell} completion lacks {word}");
        }
    }
    let bash = p8hsm(&["completions", "bash"], work.path(), &[]);
    let file = work.path().join("p8hsm.bash");
    std::fs::write(&file, &bash.stdout).unwrap();
    succeeded(&Command::new("bash").arg("-n").arg(&file).output().unwrap());

    let man = work.path().join("man");
    std::fs::create_dir(&man).unwrap();
    succeeded(&p8hsm(&["man", man.to_str().unwrap()], work.path(), &[]));
    for page in [
        "p8hsm.1",
        "p8hsm-keygen.1",
        "p8hsm-token-apple-ads.1",
        "p8hsm-softhsm-init.1",
    ] {
        let text = std::fs::read_to_string(man.join(page)).unwrap_or_else(|_| panic!("{page}"));
        assert!(
            text.starts_with(".ie") || text.contains(".TH"),
            "{page} is a man page"
        );
    }
    assert!(
        !man.join("p8hsm-help.1").exists(),
        "no pages for clap's help command"
    );
}
