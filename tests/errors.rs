//! Failures a user meets: wrong PIN (exactly one C_Login, counted by OpenSC's
//! pkcs11-spy, also when the PIN stops working while the agent runs), missing module,
//! token, key and PIN source.

use crate::common::{spy, Agent, Hsm, Run, ISSUER};
use serde_json::json;

/// `p8hsm args` through OpenSC's pkcs11-spy with a wrong PIN; returns the run and the
/// PKCS#11 calls the spy logged.
fn with_spy_and_a_wrong_pin(hsm: &Hsm, args: &[&str]) -> (std::process::Output, String) {
    let spy = spy();
    let log = hsm.dir.path().join("spy.log");
    let wrong_pin = hsm.dir.path().join("wrong.pin");
    std::fs::write(&wrong_pin, "00000000\n").unwrap();
    let output = hsm
        .command(args)
        .env("P8HSM_MODULE", spy)
        .env("PKCS11SPY", hsm.var("P8HSM_MODULE"))
        .env("PKCS11SPY_OUTPUT", &log)
        .env("P8HSM_PIN_SOURCE", format!("file:{}", wrong_pin.display()))
        .output()
        .unwrap();
    (output, std::fs::read_to_string(&log).unwrap())
}

#[test]
fn a_wrong_pin_is_tried_exactly_once_and_reported_with_a_warning() {
    let hsm = Hsm::new();
    hsm.import_new_key("2X9R4HXF34");
    let (output, calls) = with_spy_and_a_wrong_pin(
        &hsm,
        &[
            "token",
            "connect",
            "--key-id",
            "2X9R4HXF34",
            "--issuer",
            ISSUER,
        ],
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(4), "{stderr}");
    assert!(output.stdout.is_empty());
    assert_eq!(
        stderr,
        "error: the token refused the PIN (wrong PIN)\nwarning: repeated wrong PINs can lock a hardware \
         token; p8hsm tried once and will not retry: check the PIN source before running again\n"
    );
    let logins = calls.lines().filter(|l| l.contains("C_Login")).count();
    assert_eq!(logins, 1, "exactly one C_Login:\n{calls}");
    assert!(
        calls.contains("CKR_PIN_INCORRECT"),
        "the spy saw the refusal"
    );
    assert!(
        !calls.contains("C_Sign"),
        "nothing signed after a failed login"
    );
}

#[test]
fn the_pin_never_appears_in_output_or_arguments() {
    let hsm = Hsm::new();
    let (path, _) = hsm.write_key("AuthKey_2X9R4HXF34.p8");
    let pin = hsm.pin();
    for run in [
        hsm.run(&["import", path.to_str().unwrap()]),
        hsm.run(&["keys"]),
        hsm.run(&[
            "token",
            "connect",
            "--key-id",
            "2X9R4HXF34",
            "--individual",
            "--json",
        ]),
    ] {
        assert_eq!(run.code, 0, "{}", run.stderr);
        assert!(!run.stdout.contains(&pin) && !run.stderr.contains(&pin));
    }
    let run = hsm.run(&["--pin-source", &pin, "keys"]);
    run.fails(4, "error: cannot read the PIN: the PIN source is not file:PATH, env:VAR or prompt\nhint: give --pin-source file:PATH, env:VAR or prompt (or set P8HSM_PIN_SOURCE)");
    assert!(
        !run.stderr.contains(&pin),
        "the mistaken PIN is not echoed: {}",
        run.stderr
    );
    let run = hsm.run(&["--pin", &pin, "keys"]);
    assert_eq!(run.code, 2, "there is no --pin option");
    assert!(!run.stderr.contains(&pin), "{}", run.stderr);
}

#[test]
fn missing_module_token_key_and_pin_source_each_have_their_own_message() {
    let hsm = Hsm::new();
    hsm.import_new_key("2X9R4HXF34");
    hsm.run(&["--module", "/nonexistent/libpkcs11.so", "keys"])
        .fails(5, "error: PKCS#11 module /nonexistent/libpkcs11.so does not exist\nhint: check --module, P8HSM_MODULE and PKCS11_MODULE_PATH");
    hsm.run(&["--token", "elsewhere", "keys"])
        .fails(5, "error: no token labelled \"elsewhere\" (tokens present: p8hsm)\nhint: choose the token with --token LABEL, P8HSM_TOKEN or a --key URI (`p8hsm modules` lists them); for SoftHSM, `p8hsm softhsm init` makes one");
    hsm.run(&["token", "connect", "--key-id", "ABCDEFGH12", "--individual"])
        .fails(6, "error: no key with key ID ABCDEFGH12 on the token\nhint: `p8hsm keys` lists the keys; `p8hsm import AuthKey_<ID>.p8` adds one");
    hsm.run(&["pubkey", "--key-id", "ABCDEFGH12"])
        .fails(6, "error: no key with key ID ABCDEFGH12 on the token\nhint: `p8hsm keys` lists the keys; `p8hsm import AuthKey_<ID>.p8` adds one");
    hsm.run(&["--pin-source", "env:P8HSM_NO_SUCH_VARIABLE", "keys"])
        .fails(4, "error: cannot read the PIN: environment variable P8HSM_NO_SUCH_VARIABLE is not set or not UTF-8\nhint: give --pin-source file:PATH, env:VAR or prompt (or set P8HSM_PIN_SOURCE)");
    hsm.run(&["--pin-source", "file:/nonexistent/pin", "keys"])
        .fails(4, "error: cannot read the PIN: cannot read PIN file /nonexistent/pin: No such file or directory (os error 2)\nhint: give --pin-source file:PATH, env:VAR or prompt (or set P8HSM_PIN_SOURCE)");
    let run = hsm
        .command(&["keys"])
        .env_remove("P8HSM_PIN_SOURCE")
        .output()
        .unwrap();
    Run::from(run).fails(4, "error: cannot read the PIN: prompt needs a terminal, and there is none\nhint: give --pin-source file:PATH, env:VAR or prompt (or set P8HSM_PIN_SOURCE)");
}

#[test]
fn module_from_pkcs11_module_path_when_p8hsm_module_is_unset() {
    let hsm = Hsm::new();
    let module = hsm.var("P8HSM_MODULE").to_owned();
    let run = hsm
        .command(&["keys"])
        .env_remove("P8HSM_MODULE")
        .env("PKCS11_MODULE_PATH", "/nonexistent/from-env.so")
        .output()
        .unwrap();
    assert_eq!(run.status.code(), Some(5));
    assert!(String::from_utf8_lossy(&run.stderr).contains("/nonexistent/from-env.so"));
    let run = hsm
        .command(&["keys"])
        .env_remove("P8HSM_MODULE")
        .env("PKCS11_MODULE_PATH", &module)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
}

#[test]
fn the_agent_also_tries_a_wrong_pin_exactly_once() {
    let hsm = Hsm::new();
    hsm.import_new_key("2X9R4HXF34");
    let socket = hsm.dir.path().join("run").join("agent.sock");
    let (output, calls) = with_spy_and_a_wrong_pin(
        &hsm,
        &[
            "agent",
            "--foreground",
            "--socket",
            socket.to_str().unwrap(),
        ],
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(4), "{stderr}");
    assert!(stderr.contains("wrong PIN"), "{stderr}");
    assert!(
        !socket.exists(),
        "no socket for an agent that could not log in"
    );
    assert_eq!(
        calls.lines().filter(|l| l.contains("C_Login")).count(),
        1,
        "{calls}"
    );
}

#[test]
fn the_agent_never_tries_a_pin_again_once_the_token_refused_it() {
    let hsm = Hsm::new();
    hsm.import_new_key("2X9R4HXF34");
    let server = hsm.serve();
    let log = hsm.dir.path().join("spy.log");
    let mut env = server.env.clone();
    env.retain(|(k, _)| k != "P8HSM_MODULE");
    env.extend([
        ("P8HSM_MODULE".to_owned(), spy().to_owned()),
        (
            "PKCS11SPY".to_owned(),
            server.var("P8HSM_MODULE").to_owned(),
        ),
        ("PKCS11SPY_OUTPUT".to_owned(), log.display().to_string()),
    ]);
    let agent = Agent::start(&hsm, &env, &[], &[]);
    let fresh = |n: u32| {
        agent.request(&json!({"id": n, "command": "token", "kind": "connect",
            "key_id": "2X9R4HXF34", "individual": true, "scope": [format!("GET /v1/apps/{n}")]}))
    };
    assert_eq!(fresh(1)["ok"], true);
    let logins = || {
        std::fs::read_to_string(&log)
            .unwrap()
            .lines()
            .filter(|l| l.contains("C_Login"))
            .count()
    };
    assert_eq!(logins(), 1);

    // While the server is down, the user PIN changes: the agent's kept PIN is now wrong.
    server.stop();
    hsm.pkcs11_tool(
        &["--change-pin", "--new-pin", "env:P8HSM_NEW_PIN"],
        &[("P8HSM_NEW_PIN", "11223344")],
    );
    server.start();

    for n in 2..5 {
        let reply = fresh(n);
        assert_eq!(reply["error"]["code"], "pin_refused", "{reply}");
    }
    assert_eq!(
        logins(),
        2,
        "one login at start, one after the restart, none after the refusal"
    );
}

/// A key on another curve, made outside p8hsm under a key ID, is named as such wherever
/// p8hsm would use it, not taken for a key without a public key or signed with.
#[test]
fn a_key_on_another_curve_is_refused_as_one() {
    let hsm = Hsm::new();
    let id: String = "P384KEY001".bytes().map(|b| format!("{b:02x}")).collect();
    hsm.pkcs11_tool(
        &[
            "--keypairgen",
            "--key-type",
            "EC:secp384r1",
            "--label",
            "P384KEY001",
            "--id",
            &id,
        ],
        &[],
    );
    let refused = "error: key P384KEY001 is an EC key on another curve than P-256; p8hsm signs \
                   only with EC P-256 keys, as Apple's are";
    hsm.run(&[
        "token",
        "apns",
        "--key-id",
        "P384KEY001",
        "--team-id",
        "A1B2C3D4E5",
    ])
    .fails(10, refused);
    hsm.run(&["pubkey", "--key-id", "P384KEY001"])
        .fails(10, refused);
}

/// The background agent that cannot log in says so as the foreground one does, with its
/// exit status (which a service manager must not restart on) and its warning.
#[test]
fn the_background_agent_reports_a_refused_pin_as_the_foreground_one_does() {
    let hsm = Hsm::new();
    let wrong = hsm.dir.path().join("wrong.pin");
    std::fs::write(&wrong, "00000000\n").unwrap();
    let socket = hsm.dir.path().join("run").join("agent.sock");
    let run = hsm
        .command(&["agent", "--socket", socket.to_str().unwrap()])
        .env("P8HSM_PIN_SOURCE", format!("file:{}", wrong.display()))
        .output()
        .unwrap();
    Run::from(run).fails(
        4,
        "error: the token refused the PIN (wrong PIN)\nwarning: repeated wrong PINs can lock a \
         hardware token; p8hsm tried once and will not retry: check the PIN source before \
         running again",
    );
    assert!(!socket.exists());
}

/// `keys` on an empty token prints nothing a script would take for a key, and tells a
/// person what adds one.
#[test]
fn keys_on_an_empty_token_says_what_adds_one() {
    let hsm = Hsm::new();
    let run = hsm.run(&["keys"]);
    assert_eq!((run.code, run.stdout.as_str()), (0, ""));
    assert_eq!(
        run.stderr,
        "the token holds no keys: `p8hsm import AuthKey_<ID>.p8` imports one, `p8hsm keygen \
         --label LABEL` makes one in the token\n"
    );
    assert_eq!(hsm.run(&["keys", "--json"]).ok(), "[]\n");
}
