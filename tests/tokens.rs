//! Implementations other than SoftHSM and Kryoptic, each set up here whatever token the
//! run tests: NSS softoken loaded directly (it needs initialization arguments), a TPM
//! through tpm2-pkcs11 on swtpm, openCryptoki's soft token, and p11-kit's module
//! registrations (`x-init-reserved`, `enable-in`, `disable-in`).

use std::path::Path;

use p256::pkcs8::DecodePublicKey;
use std::process::Command;

use crate::common::{as_uid, give_to, path_str, succeeded, Hsm, Run, SwTpm};

/// NSS's arguments, with a marker that must never be shown: NSS ignores the unknown
/// parameter, so the module loads with it.
fn marked(args: &str) -> String {
    format!("{args} p8hsmtest='MARKER-8f3a'")
}

#[test]
fn nss_loaded_directly_needs_its_arguments_and_never_shows_them() {
    let hsm = Hsm::nss();
    let args = hsm.var("P8HSM_MODULE_ARGS").to_owned();
    let without = |cli: &[&str]| {
        Run::from(
            hsm.command(cli)
                .env_remove("P8HSM_MODULE_ARGS")
                .output()
                .unwrap(),
        )
    };
    // Without its arguments NSS refuses C_Initialize; the hint says what to give.
    let run = without(&["keys"]);
    run.fails(5, "error: cannot load PKCS#11 module /usr/lib/x86_64-linux-gnu/libsoftokn3.so: CKR_ARGUMENTS_BAD\nhint: this module wants initialization arguments: give them with P8HSM_MODULE_ARGS (NSS softoken: \"configdir='sql:DIR' certPrefix='' keyPrefix='' secmod='secmod.db' flags=\") or x-init-reserved in its p11-kit registration");
    assert!(run.stderr.contains("P8HSM_MODULE_ARGS"), "{}", run.stderr);
    let listed = without(&["modules"]).ok();
    assert!(listed.contains("CKR_ARGUMENTS_BAD"), "{listed}");

    // Given by the option or the variable, they work — and appear nowhere.
    let marked = marked(&args);
    let (path, key) = hsm.write_key("AuthKey_NSSKEY0001.p8");
    let by_option = without(&["--module-args", &marked, "import", path_str(&path)]);
    assert_eq!(by_option.code, 0, "{}", by_option.stderr);
    let token = hsm
        .command(&["token", "connect", "--key-id", "NSSKEY0001", "--individual"])
        .env("P8HSM_MODULE_ARGS", &marked)
        .output()
        .unwrap();
    succeeded(&token);
    crate::common::verify_jwt(String::from_utf8_lossy(&token.stdout).trim_end(), &key);
    let mut runs = vec![by_option];
    for cli in [
        &["modules", "--json"][..],
        &["--token", "elsewhere", "keys"],
        &["doctor"],
    ] {
        runs.push(Run::from(
            hsm.command(cli)
                .env("P8HSM_MODULE_ARGS", &marked)
                .output()
                .unwrap(),
        ));
    }
    // Arguments the module refuses: the error names the module and the variable, not
    // what they hold.
    let bad = without(&[
        "--module-args",
        "configdir='sql:/nonexistent' MARKER-8f3a",
        "keys",
    ]);
    bad.fails(5, "error: cannot load PKCS#11 module /usr/lib/x86_64-linux-gnu/libsoftokn3.so: CKR_VENDOR_DEFINED(3461563217)\nhint: check the module's initialization arguments (P8HSM_MODULE_ARGS, --module-args or x-init-reserved in its p11-kit registration)");
    assert!(
        bad.stderr.contains("initialization arguments"),
        "{}",
        bad.stderr
    );
    runs.push(bad);
    for run in &runs {
        assert!(
            !run.stdout.contains("MARKER-8f3a") && !run.stderr.contains("MARKER-8f3a"),
            "{}{}",
            run.stdout,
            run.stderr
        );
    }
}

#[test]
fn nss_refuses_metadata_and_keygen_before_writing_anything() {
    let hsm = Hsm::nss();
    let (path, _) = hsm.write_key("AuthKey_NSSKEY0002.p8");
    let before = hsm.object_count();
    // NSS refuses data objects, where --kind is recorded: refused before the key goes in.
    hsm.run(&["import", path_str(&path), "--kind", "connect-individual"])
        .fails(5, "error: this token cannot import the key: NSS softoken refuses the data object p8hsm records a key's kind in: import without recording one and give the kind's identities when signing\nhint: `p8hsm modules` lists the tokens p8hsm finds");
    assert_eq!(hsm.object_count(), before);
    // The unwrap (RSA-OAEP, with CKA_NSS_DB) and the plain create work; the AES-CBC-PAD
    // unwrap runs in import::each_way_in_falls_back… on NSS.
    for (method, key_id) in [("unwrap", "NSSKEY0003"), ("create", "NSSKEY0004")] {
        let (path, _) = hsm.write_key(&format!("{key_id}.p8"));
        let out = hsm
            .run(&[
                "import",
                path_str(&path),
                "--key-id",
                key_id,
                "--method",
                method,
            ])
            .ok();
        assert!(out.contains(&format!("method       {method}")), "{out}");
    }
    assert_eq!(hsm.object_count(), before + 4);
    // keygen's key ID comes later, under a claim NSS cannot keep.
    hsm.run(&["keygen", "--label", "born-here"])
        .fails(5, "error: this token cannot generate the key: its objects keep the ID they are made with, and Apple shows the key ID only after the public key is uploaded: generate the key with the vendor's tool under the key ID, then sign with p8hsm\nhint: `p8hsm modules` lists the tokens p8hsm finds");
    assert_eq!(hsm.object_count(), before + 4);
}

#[test]
fn a_p11_kit_registration_gives_its_arguments_and_is_followed_for_p8hsm() {
    // p11-kit reads a user's registrations only when not root: run as another uid.
    let uid = 64_000 + (std::process::id() % 1000);
    let hsm = Hsm::nss();
    let home = hsm.dir.path().join("home");
    let registrations = home.join(".config/pkcs11/modules");
    std::fs::create_dir_all(&registrations).unwrap();
    give_to(hsm.dir.path(), uid);
    give_to(&hsm.store, uid);
    let module = hsm.var("P8HSM_MODULE").to_owned();
    let register = |extra: &str| {
        let file = registrations.join("nss-test.module");
        std::fs::write(
            &file,
            format!(
                "module: {module}\nx-init-reserved: {}\n{extra}",
                hsm.var("P8HSM_MODULE_ARGS")
            ),
        )
        .unwrap();
        give_to(&file, uid);
    };
    // `wrapper`: what the command runs under, before the timeout.
    let run_under = |wrapper: &[&str], cli: &[&str]| {
        // Bounded: a registration p8hsm waited on would hang the test otherwise.
        let mut argv: Vec<String> = wrapper.iter().map(|a| a.to_string()).collect();
        argv.extend(["timeout".to_owned(), "30".to_owned()]);
        argv.extend(as_uid(uid));
        argv.push(
            crate::common::p8hsm_for_others()
                .to_str()
                .unwrap()
                .to_owned(),
        );
        argv.extend(cli.iter().map(|a| a.to_string()));
        Run::from(
            Command::new(&argv[0])
                .args(&argv[1..])
                .env_clear()
                .env("HOME", &home)
                .env("PATH", std::env::var("PATH").unwrap())
                .envs(
                    hsm.env
                        .iter()
                        .filter(|(k, _)| k != "P8HSM_MODULE_ARGS")
                        .map(|(k, v)| (k, v)),
                )
                .output()
                .unwrap(),
        )
    };
    let run = |cli: &[&str]| run_under(&[], cli);
    register("");
    // A FIFO among the registrations is passed over, not waited on.
    let fifo = registrations.join("fifo.module");
    succeeded(&Command::new("mkfifo").arg(&fifo).output().unwrap());
    give_to(&fifo, uid);
    // The module named by --module gets its registration's x-init-reserved.
    assert_eq!(run(&["keys"]).code, 0, "{}", run(&["keys"]).stderr);
    let listed = run(&["modules"]).ok();
    assert!(listed.contains("(p11-kit: nss-test)"), "{listed}");
    // Enabled for other programs only, or disabled for p8hsm: not p8hsm's to use.
    for extra in ["enable-in: firefox, thunderbird\n", "disable-in: p8hsm\n"] {
        register(extra);
        let listed = run(&["modules"]).ok();
        assert!(!listed.contains("nss-test"), "{extra}{listed}");
        run(&["keys"]).fails(5, "error: cannot load PKCS#11 module /usr/lib/x86_64-linux-gnu/libsoftokn3.so: CKR_ARGUMENTS_BAD\nhint: this module wants initialization arguments: give them with P8HSM_MODULE_ARGS (NSS softoken: \"configdir='sql:DIR' certPrefix='' keyPrefix='' secmod='secmod.db' flags=\") or x-init-reserved in its p11-kit registration");
    }
    register("enable-in: firefox, p8hsm\n");
    assert_eq!(run(&["keys"]).code, 0, "{}", run(&["keys"]).stderr);
    // When the system's p11-kit configuration says `user-config: none`, the user's
    // registrations are not read: seen through a private mount of /etc/pkcs11 that says
    // so (its own mount namespace, so nothing else on the machine sees it).
    let etc = hsm.dir.path().join("etc-pkcs11");
    std::fs::create_dir_all(etc.join("modules")).unwrap();
    std::fs::write(etc.join("pkcs11.conf"), "# the test's\nuser-config: none\n").unwrap();
    let private_etc = [
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "--",
        "sh",
        "-c",
        "mount --bind \"$0\" /etc/pkcs11 && exec \"$@\"",
        etc.to_str().unwrap(),
    ];
    let listed = run_under(&private_etc, &["modules"]).ok();
    assert!(!listed.contains("nss-test"), "{listed}");
    run_under(&private_etc, &["keys"]).fails(5, "error: cannot load PKCS#11 module /usr/lib/x86_64-linux-gnu/libsoftokn3.so: CKR_ARGUMENTS_BAD\nhint: this module wants initialization arguments: give them with P8HSM_MODULE_ARGS (NSS softoken: \"configdir='sql:DIR' certPrefix='' keyPrefix='' secmod='secmod.db' flags=\") or x-init-reserved in its p11-kit registration");
    // The same mount without that line: the registration is read again.
    std::fs::write(etc.join("pkcs11.conf"), "# the test's\n").unwrap();
    let listed = run_under(&private_etc, &["modules"]).ok();
    assert!(listed.contains("(p11-kit: nss-test)"), "{listed}");
}

#[test]
fn a_tpm_generates_keys_refuses_imports_and_doctor_says_why_an_imported_key_is_extractable() {
    let tpm = SwTpm::start();
    let hsm = Hsm::tpm2(&tpm);
    let before = hsm.object_count();
    let (path, _) = hsm.write_key("AuthKey_TPMKEY0001.p8");
    let refused = hsm.run(&["import", path_str(&path)]);
    refused.fails(5, "error: a TPM through tpm2-pkcs11 cannot import the key: tpm2-pkcs11 takes no private key in through PKCS#11 (C_CreateObject makes only RSA public keys and data objects, and no mechanism unwraps): generate the key in the TPM instead, or import the .p8 with tpm2-pkcs11's own tool (tpm2_ptool import)\nhint: `p8hsm modules` lists the tokens p8hsm finds");
    assert_eq!(hsm.object_count(), before, "nothing written");

    // Born in the TPM: generated, assigned, signing for the public key keygen printed.
    let generated = hsm.run(&["keygen", "--label", "in-the-tpm"]);
    assert_eq!(generated.code, 0, "{}", generated.stderr);
    let public = p256::PublicKey::from_public_key_pem(&generated.stdout).unwrap();
    hsm.run(&["assign", "--label", "in-the-tpm", "--key-id", "TPMGEN0001"])
        .ok();
    let token = hsm
        .run(&["token", "connect", "--key-id", "TPMGEN0001", "--individual"])
        .ok();
    let parts: Vec<&str> = token.trim_end().split('.').collect();
    let signature = p256::ecdsa::Signature::from_slice(
        &base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, parts[2])
            .unwrap(),
    )
    .unwrap();
    p256::ecdsa::signature::Verifier::verify(
        &p256::ecdsa::VerifyingKey::from(&public),
        format!("{}.{}", parts[0], parts[1]).as_bytes(),
        &signature,
    )
    .expect("verifies with the public key keygen printed");

    // Imported the documented way: tpm2-pkcs11 calls it extractable; doctor says why
    // instead of advising revocation — on this profile only.
    hsm.import_new_key("TPMIMP0001");
    hsm.run(&["doctor"]).prints(
        0,
        "✓ key TPMIMP0001: imported, sensitive, reported extractable by tpm2-pkcs11",
    );
    hsm.run(&["--profile", "standard", "doctor"])
        .prints(11, "✗ key TPMIMP0001: imported, extractable");
}

#[test]
fn an_opencryptoki_slot_whose_token_cannot_be_described_is_skipped_with_why() {
    let module = "/usr/lib/x86_64-linux-gnu/opencryptoki/libopencryptoki.so.0";
    assert!(
        Path::new(module).exists(),
        "apt-get install opencryptoki (.ci/run does)"
    );
    // Its slot daemon, and its soft token initialized (default SO PIN 87654321).
    if !Command::new("pgrep")
        .args(["-x", "pkcsslotd"])
        .output()
        .unwrap()
        .status
        .success()
    {
        succeeded(&Command::new("pkcsslotd").output().unwrap());
    }
    let listed = Command::new("pkcs11-tool")
        .args(["--module", module, "--list-slots"])
        .output()
        .unwrap();
    if String::from_utf8_lossy(&listed.stdout).contains("uninitialized") {
        let _ = Command::new("pkcs11-tool")
            .args(["--module", module, "--slot", "3", "--init-token"])
            .args(["--label", "ock", "--so-pin", "87654321"])
            .output()
            .unwrap();
    }
    let hsm = Hsm::new();
    let run = |cli: &[&str]| {
        Run::from(
            hsm.command(cli)
                .env("P8HSM_MODULE", module)
                .env("P8HSM_TOKEN", "ock")
                .output()
                .unwrap(),
        )
    };
    let reason = "slot 3 skipped: C_GetTokenInfo reported a utcTime that is not PKCS#11's";
    let listed = run(&["modules"]).ok();
    assert!(listed.contains(&format!("warning: {reason}")), "{listed}");
    run(&["keys"]).fails(
        5,
        &format!(
            "error: no token labelled \"ock\" (the module has no initialized token; {reason} \
             YYYYMMDDhhmmss00 (Error parsing string as integer (invalid digit found in string)))\n\
             hint: choose the token with --token LABEL, P8HSM_TOKEN or a --key URI (`p8hsm \
             modules` lists them); for SoftHSM, `p8hsm softhsm init` makes one"
        ),
    );
    run(&["doctor"]).prints(11, reason);

    // Beside other tokens — p11-kit's proxy offering the openCryptoki slot and this
    // test's SoftHSM token (Debian registers SoftHSM) — the others still work. As root
    // p11-kit reads only the system's registrations: one is written for the test.
    let registration = Path::new("/etc/pkcs11/modules/p8hsm-test-opencryptoki.module");
    std::fs::create_dir_all(registration.parent().unwrap()).unwrap();
    std::fs::write(registration, format!("module: {module}\n")).unwrap();
    struct Remove<'a>(&'a Path);
    impl Drop for Remove<'_> {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(self.0);
        }
    }
    let _registered = Remove(registration);
    let proxy = *p8hsm::pkcs11::modules::P11_KIT_PROXY_PATHS
        .iter()
        .find(|p| Path::new(p).exists())
        .expect("p11-kit's proxy module");
    let through_proxy = |cli: &[&str]| {
        Run::from(
            hsm.command(cli)
                .env("P8HSM_MODULE", proxy)
                .output()
                .unwrap(),
        )
    };
    let listed = through_proxy(&["modules"]).ok();
    assert!(
        listed.contains("C_GetTokenInfo reported a utcTime") && listed.contains("token \"p8hsm\""),
        "{listed}"
    );
    // The registered modules are not loaded again beside the proxy that loads them.
    let all = through_proxy(&["modules", "--all"]).ok();
    assert!(
        all.contains("(p11-kit: p8hsm-test-opencryptoki)\n    not loaded: its tokens are listed through p11-kit's proxy"),
        "{all}"
    );
    let key = hsm.import_new_key("BESIDEOCK1");
    let token = through_proxy(&["token", "connect", "--key-id", "BESIDEOCK1", "--individual"]).ok();
    crate::common::verify_jwt(token.trim_end(), &key);
}

/// A GNOME Keyring daemon of its own (its PKCS#11 component only), unlocked with a
/// password, behind a D-Bus of its own; stopped when dropped.
struct GnomeKeyring {
    daemon: std::process::Child,
    bus: std::process::Child,
}

impl Drop for GnomeKeyring {
    fn drop(&mut self) {
        let _ = self.daemon.kill();
        let _ = self.bus.kill();
        let _ = self.daemon.wait();
        let _ = self.bus.wait();
    }
}

/// A token in GNOME Keyring's "Gnome2 Key Storage", as an [`Hsm`].
fn gnome_keyring() -> (Hsm, GnomeKeyring) {
    use std::io::Write;
    use std::process::Stdio;
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().to_path_buf();
    let address = format!("unix:path={}", home.join("bus").display());
    let bus = Command::new("dbus-daemon")
        .args(["--session", "--nofork", "--address", &address])
        .stdout(Stdio::null())
        .spawn()
        .expect("run dbus-daemon (apt-get install dbus-daemon)");
    let control = home.join("control");
    let password = "p8hsm-test-keyring";
    let mut daemon = Command::new("gnome-keyring-daemon")
        .args([
            "--foreground",
            "--unlock",
            "--components=pkcs11",
            "--control-directory",
        ])
        .arg(&control)
        .env("HOME", &home)
        .env("XDG_RUNTIME_DIR", &home)
        .env("DBUS_SESSION_BUS_ADDRESS", &address)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("run gnome-keyring-daemon (apt-get install gnome-keyring)");
    daemon
        .stdin
        .take()
        .unwrap()
        .write_all(password.as_bytes())
        .unwrap();
    for _ in 0..100 {
        if control.join("control").exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    std::fs::write(home.join("user.pin"), format!("{password}\n")).unwrap();
    let module = "/usr/lib/x86_64-linux-gnu/pkcs11/gnome-keyring-pkcs11.so";
    assert!(
        Path::new(module).exists(),
        "apt-get install gnome-keyring-pkcs11 (.ci/run does)"
    );
    let env = [
        ("P8HSM_MODULE", module.to_owned()),
        ("P8HSM_TOKEN", "Gnome2 Key Storage".to_owned()),
        (
            "P8HSM_PIN_SOURCE",
            format!("file:{}", home.join("user.pin").display()),
        ),
        ("HOME", home.display().to_string()),
        ("XDG_RUNTIME_DIR", home.display().to_string()),
        ("DBUS_SESSION_BUS_ADDRESS", address),
        ("GNOME_KEYRING_CONTROL", control.display().to_string()),
    ];
    let hsm = Hsm {
        store: home,
        dir,
        env: env
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect(),
    };
    (hsm, GnomeKeyring { daemon, bus })
}

#[test]
fn gnome_keyring_takes_keys_under_ids_of_its_own_and_p8hsm_finds_them_by_label() {
    let (hsm, _keyring) = gnome_keyring();
    let before = hsm.object_count();
    let (path, key) = hsm.write_key("AuthKey_GNOMEKEY01.p8");
    // Refused before anything is written: a label other than the key ID (keys are
    // found by label there), and --kind (no data objects).
    hsm.run(&["import", path_str(&path), "--label", "prod"])
        .fails(2, "error: this token sets each key's CKA_ID itself, so p8hsm finds its keys by label, which must be the key ID: another label does not apply\nhint: drop --label");
    hsm.run(&["import", path_str(&path), "--kind", "connect-individual"])
        .fails(5, "error: this token cannot import the key: GNOME Keyring refuses the data object p8hsm records a key's kind in: import without recording one and give the kind's identities when signing\nhint: `p8hsm modules` lists the tokens p8hsm finds");
    assert_eq!(hsm.object_count(), before);

    // Created with the public point in the private key's template; GNOME Keyring gives
    // both halves a CKA_ID of its own, and p8hsm finds them by their label.
    let out = hsm.run(&["import", path_str(&path)]).ok();
    assert!(out.contains("method       create"), "{out}");
    assert_eq!(hsm.object_count(), before + 2);
    let keys: serde_json::Value = serde_json::from_str(&hsm.run(&["keys", "--json"]).ok()).unwrap();
    assert_eq!(keys[0]["label"], "GNOMEKEY01");
    assert_ne!(keys[0]["id"], "GNOMEKEY01", "the token set its own CKA_ID");
    assert_eq!(keys[0]["has_public_key"], true);
    let token = hsm
        .run(&["token", "connect", "--key-id", "GNOMEKEY01", "--individual"])
        .ok();
    crate::common::verify_jwt(token.trim_end(), &key);
    hsm.run(&["doctor"]).ok();
    hsm.run(&["import", path_str(&path)])
        .fails(7, "error: the token already holds an object labelled \"GNOMEKEY01\"; nothing was written\nhint: `p8hsm keys` lists what is there; to replace a key, delete it first with `p8hsm delete --key-id ID --yes`");
    // Deleting by key ID removes both halves.
    hsm.run(&["delete", "--key-id", "GNOMEKEY01", "--yes"]).ok();
    assert_eq!(hsm.object_count(), before);
}

#[test]
fn a_token_that_cannot_sign_with_ecdsa_is_refused_before_anything_is_written() {
    // Kryoptic built without its ECDSA: a real token that offers no CKM_ECDSA.
    let built = Command::new(crate::common::root().join("scripts/kryoptic.sh"))
        .arg("--without-ecdsa")
        .output()
        .expect("run scripts/kryoptic.sh");
    succeeded(&built);
    let module = String::from_utf8(built.stdout).unwrap();
    let hsm = Hsm::kryoptic_token(Path::new(module.trim_end()));
    let before = hsm.object_count();
    let (path, _) = hsm.write_key("AuthKey_NOECDSA001.p8");
    for method in ["auto", "create", "unwrap"] {
        hsm.run(&["import", path_str(&path), "--method", method])
            .fails(5, "error: this token cannot import the key: it does not offer CKM_ECDSA for signing, so a key in it could sign nothing: choose a token that signs with P-256 ECDSA\nhint: `p8hsm modules` lists the tokens p8hsm finds");
    }
    hsm.run(&["keygen", "--label", "never"])
        .fails(5, "error: this token cannot generate the key: it does not offer both CKM_EC_KEY_PAIR_GEN and CKM_ECDSA for signing: choose a token that makes and signs with P-256 keys\nhint: `p8hsm modules` lists the tokens p8hsm finds");
    assert_eq!(hsm.object_count(), before, "nothing written");
    hsm.run(&["doctor"])
        .prints(11, "✗ the token does not offer CKM_ECDSA signatures");
}

/// Holds the tpm2-pkcs11 store `db` locked (an exclusive SQLite transaction) for
/// `seconds`; returns once it is locked.
fn lock_store(db: &Path, seconds: &str) -> std::process::Child {
    let mut holder = Command::new("python3")
        .args([
            "-c",
            "import sqlite3, sys, time\n\
             db = sqlite3.connect(sys.argv[1], isolation_level=None)\n\
             db.execute('BEGIN EXCLUSIVE')\n\
             print('locked', flush=True)\n\
             time.sleep(float(sys.argv[2]))\n\
             db.execute('COMMIT')",
        ])
        .arg(db)
        .arg(seconds)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3 (.ci/run installs it)");
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(holder.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line.trim(), "locked");
    holder
}

#[test]
fn a_tpm_store_another_process_holds_is_waited_for_briefly_then_refused() {
    let tpm = SwTpm::start();
    let hsm = Hsm::tpm2(&tpm);
    let db = hsm.store.join("tpm2_pkcs11.sqlite3");
    // tpm2-pkcs11 fails C_Initialize at once while its SQLite store is locked
    // (CKR_GENERAL_ERROR): p8hsm tries again a few times, so a lock held for a moment
    // (another p8hsm writing, tpm2_ptool) is ridden out…
    let mut holder = lock_store(&db, "0.05");
    hsm.run(&["keys"]).ok();
    holder.wait().unwrap();
    // …and one held for long is refused while it is still held, not waited on.
    let mut holder = lock_store(&db, "5");
    let refused = hsm.run(&["keys"]);
    assert!(
        holder.try_wait().unwrap().is_none(),
        "gave up while the store was locked"
    );
    // tpm2-pkcs11 prints its own lines first; p8hsm's error and hint come last.
    assert_eq!(refused.code, 5, "{}", refused.stderr);
    let lines: Vec<&str> = refused.stderr.lines().collect();
    let [.., error, hint] = lines[..] else {
        panic!("{}", refused.stderr)
    };
    assert!(
        error.starts_with("error: cannot load PKCS#11 module"),
        "{error}"
    );
    assert!(hint.contains("another process holds its store"), "{hint}");
    holder.kill().unwrap();
    holder.wait().unwrap();
}
