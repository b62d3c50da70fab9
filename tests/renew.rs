//! Long-lived tokens kept in a file (`--out FILE --renew-within DURATION`): written
//! atomically with mode 0600, kept while good, renewed near expiry or when the file is
//! not a token of this request and key; other files are never replaced.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use crate::common::{path_str, verify_jwt, Hsm};

const SIWA: &[&str] = &[
    "token",
    "sign-in-with-apple",
    "--key-id",
    "2X9R4HXF34",
    "--team-id",
    "A1B2C3D4E5",
    "--client-id",
    "com.example.web",
];

fn keep(hsm: &Hsm, out: &Path, extra: &[&str]) -> crate::common::Run {
    let mut args = SIWA.to_vec();
    args.extend(["--out", path_str(out)]);
    args.extend(extra);
    hsm.run(&args)
}

#[test]
fn a_kept_token_stays_until_it_nears_expiry_then_is_renewed() {
    let hsm = Hsm::new();
    let key = hsm.import_new_key("2X9R4HXF34");
    let out = hsm.dir.path().join("secret.jwt");

    let first = keep(&hsm, &out, &["--renew-within", "30d"]);
    assert_eq!(first.code, 0, "{}", first.stderr);
    assert_eq!(first.stdout, "", "the token goes to the file, not stdout");
    assert!(first.stderr.starts_with("renewed "), "{}", first.stderr);
    assert!(first.stderr.contains("(none was kept)"), "{}", first.stderr);
    assert_eq!(first.stderr.lines().count(), 1);
    let meta = std::fs::metadata(&out).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let token = std::fs::read_to_string(&out).unwrap();
    let (_, claims) = verify_jwt(token.trim_end(), &key);
    let lifetime = claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap();
    assert_eq!(
        lifetime, 15_777_000,
        "--out signs for as long as Apple allows"
    );

    // Kept: the same bytes, the same file.
    let second = keep(&hsm, &out, &["--renew-within", "30d"]);
    assert_eq!(second.code, 0, "{}", second.stderr);
    assert!(second.stderr.starts_with("kept "), "{}", second.stderr);
    assert!(
        second.stderr.contains("it expires at 20"),
        "{}",
        second.stderr
    );
    assert_eq!(std::fs::read_to_string(&out).unwrap(), token);
    assert_eq!(std::fs::metadata(&out).unwrap().ino(), meta.ino());

    // Near expiry: a token that expires in about 25 hours, a window of 2 days.
    std::fs::remove_file(&out).unwrap();
    keep(&hsm, &out, &["--renew-within", "1d", "--ttl", "90000"]).ok();
    let short = std::fs::read_to_string(&out).unwrap();
    let renewed = keep(&hsm, &out, &["--renew-within", "2d", "--ttl", "200000"]);
    assert_eq!(renewed.code, 0, "{}", renewed.stderr);
    assert!(
        renewed.stderr.contains("(it expires within 2 days)"),
        "{}",
        renewed.stderr
    );
    assert_ne!(std::fs::read_to_string(&out).unwrap(), short);
}

#[test]
fn a_file_that_is_not_a_token_of_this_request_and_key_is_replaced() {
    let hsm = Hsm::new();
    let key = hsm.import_new_key("2X9R4HXF34");
    let other = hsm.dir.path().join("other.jwt");
    let out = hsm.dir.path().join("secret.jwt");
    // Something other than a token is replaced only with --force.
    std::fs::write(&out, "garbage\n").unwrap();
    keep(&hsm, &out, &["--renew-within", "1d"]).fails(2, "error: {dir}/secret.jwt holds something other than a token, which --out would replace: name a file of its own for the token (or give --force to replace it)");
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "garbage\n");
    let forced = keep(&hsm, &out, &["--renew-within", "1d", "--force"]);
    assert!(
        forced.stderr.contains("it is not a JWT"),
        "{}",
        forced.stderr
    );
    verify_jwt(std::fs::read_to_string(&out).unwrap().trim_end(), &key);
    for (content, reason) in [
        (
            {
                // Another client's secret, signed by the same key.
                let mut args = SIWA.to_vec();
                args[7] = "com.example.other";
                args.extend(["--out", path_str(&other), "--renew-within", "1d"]);
                hsm.run(&args).ok();
                std::fs::read_to_string(&other).unwrap()
            },
            "its claims are not this request's",
        ),
        (
            {
                // This request's claims, but not this key's signature.
                keep(&hsm, &out, &["--renew-within", "1d"]).ok();
                let token = std::fs::read_to_string(&out).unwrap();
                let (input, _) = token.trim_end().rsplit_once('.').unwrap();
                format!("{input}.{}\n", "A".repeat(86))
            },
            "its signature does not verify with the key",
        ),
    ] {
        std::fs::write(&out, &content).unwrap();
        let run = keep(&hsm, &out, &["--renew-within", "1d"]);
        assert_eq!(run.code, 0, "{}", run.stderr);
        assert!(run.stderr.contains(reason), "{reason}: {}", run.stderr);
        verify_jwt(std::fs::read_to_string(&out).unwrap().trim_end(), &key);
    }
}

#[test]
fn a_renewed_token_keeps_the_owner_and_mode_of_the_file_it_replaces() {
    let hsm = Hsm::new();
    hsm.import_new_key("2X9R4HXF34");
    let out = hsm.dir.path().join("secret.jwt");
    keep(&hsm, &out, &["--renew-within", "1d"]).ok();
    // Handed to a service account, readable by its group.
    std::os::unix::fs::chown(&out, Some(65534), Some(65534)).unwrap();
    std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o640)).unwrap();
    let before = std::fs::metadata(&out).unwrap();
    let mut args = SIWA.to_vec();
    args[7] = "com.example.other"; // another request: the kept token is replaced
    args.extend(["--out", path_str(&out), "--renew-within", "1d"]);
    let run = hsm.run(&args);
    assert!(run.stderr.starts_with("renewed "), "{}", run.stderr);
    let after = std::fs::metadata(&out).unwrap();
    assert_ne!(after.ino(), before.ino(), "replaced");
    assert_eq!((after.uid(), after.gid()), (65534, 65534));
    assert_eq!(after.permissions().mode() & 0o777, 0o640);
    assert!(!run.stderr.contains("warning"), "{}", run.stderr);
    // A mode that lets everyone read the token is kept, and said.
    std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o644)).unwrap();
    args[7] = "com.example.third";
    let run = hsm.run(&args);
    assert!(
        run.stderr.contains("readable by everyone (mode 0644"),
        "{}",
        run.stderr
    );

    // A file another user made where anyone may create files (a planted one) does not
    // receive the token.
    let shared = hsm.dir.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let planted = shared.join("siwa.jwt");
    std::fs::write(&planted, "").unwrap();
    std::os::unix::fs::chown(&planted, Some(65534), Some(65534)).unwrap();
    let mut args = SIWA.to_vec();
    args.extend(["--out", path_str(&planted), "--renew-within", "1d"]);
    hsm.run(&args).fails(
        2,
        "error: {dir}/shared/siwa.jwt belongs to uid 65534, and others may create files in \
         {dir}/shared: whoever made it would receive the token; remove it, or keep the token \
         in a directory only you or root can write to",
    );
    assert_eq!(std::fs::read_to_string(&planted).unwrap(), "");
}

#[test]
fn other_files_bad_requests_and_the_agent_leave_everything_as_it_was() {
    let hsm = Hsm::new();
    hsm.import_new_key("2X9R4HXF34");
    let dir = hsm.dir.path();
    // Links, FIFOs and directories are not replaced (a careless --out /dev/null must
    // not replace /dev/null).
    let target = dir.join("target");
    std::fs::write(&target, "precious\n").unwrap();
    let link = dir.join("link.jwt");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let fifo = dir.join("fifo.jwt");
    assert!(std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    for (path, name) in [
        (&link, "{dir}/link.jwt"),
        (&fifo, "{dir}/fifo.jwt"),
        (&dir.to_path_buf(), "{dir}"),
    ] {
        keep(&hsm, path, &["--renew-within", "1d"]).fails(
            3,
            &format!("error: cannot read {name}: it is not a regular file (a link, directory, FIFO or device): p8hsm replaces only regular files"),
        );
    }
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "precious\n");
    assert!(std::fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());

    let out = dir.join("secret.jwt");
    keep(&hsm, &out, &["--renew-within", "200d"])
        .fails(2, "error: --ttl 15776940 s is not longer than --renew-within 200 days: every run would renew the token; shorten --renew-within");
    keep(&hsm, &out, &["--renew-within", "1d", "--ttl", "15777001"]).fails(3, "error: Sign in with Apple client secret tokens may live at most 15777000 s from iat to exp, but ttl 15777001 with skew 60 gives 15777061\nhint: use --ttl 15776940 or less with --skew 60, or lower --skew");
    keep(&hsm, &out, &["--renew-within", "soon"]).fails(
        2,
        "error: invalid duration \"soon\": give seconds (1140) or a duration such as 19m, 12h or 30d",
    );
    let mut args = SIWA.to_vec();
    args.extend(["--out", path_str(&out)]);
    let missing = hsm.run(&args);
    assert_eq!(missing.code, 2, "clap: --out requires --renew-within");
    assert!(
        missing.stderr.contains("--renew-within"),
        "{}",
        missing.stderr
    );
    let agent_run = hsm
        .command(&[SIWA, &["--out", path_str(&out), "--renew-within", "1d"]].concat())
        .env("P8HSM_AGENT_SOCK", dir.join("agent.sock"))
        .output()
        .unwrap();
    assert_eq!(agent_run.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&agent_run.stderr).contains("unset P8HSM_AGENT_SOCK"));
    assert!(!out.exists(), "no refused run wrote the file");
    // Short-lived kinds have no --out.
    let apns = hsm.run(&[
        "token",
        "apns",
        "--key-id",
        "2X9R4HXF34",
        "--team-id",
        "A1B2C3D4E5",
        "--out",
        path_str(&out),
        "--renew-within",
        "1d",
    ]);
    assert_eq!(apns.code, 2);
    assert!(
        apns.stderr.contains("unexpected argument '--out'"),
        "{}",
        apns.stderr
    );
    // A directory that is not there: the error says so.
    let nowhere = dir.join("missing").join("secret.jwt");
    keep(&hsm, &nowhere, &["--renew-within", "1d"]).fails(1, "error: cannot write {dir}/missing: No such file or directory (os error 2); what was there is unchanged\nhint: check that the directory exists and that p8hsm may create files in it");
}
