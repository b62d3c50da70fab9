//! The bad-input catalogue: malformed key files, claims and IDs, URIs, PIN sources and
//! agent requests. Each gets its own error and exit code (or protocol error code), none
//! panics, and the token's object count is the same afterwards. What a request's fields
//! and its key's record refuse is pinned line for line by the table of refusals in
//! `common/examples.rs` (see `parity.rs`).

use std::io::Write;
use std::process::{Command, Stdio};

use crate::common::{path_str, read_reply, Agent, Hsm, ISSUER};

const KEY_ID: &str = "2X9R4HXF34";

struct Case {
    name: &'static str,
    args: Vec<String>,
    stdin: Vec<u8>,
    env: Vec<(&'static str, String)>,
    code: i32,
    message: &'static str,
}

fn case(name: &'static str, args: &[&str], code: i32, message: &'static str) -> Case {
    Case {
        name,
        args: args.iter().map(|s| s.to_string()).collect(),
        stdin: Vec::new(),
        env: Vec::new(),
        code,
        message,
    }
}

fn openssl(args: &[&str]) -> Vec<u8> {
    let output = Command::new("openssl").args(args).output().unwrap();
    assert!(output.status.success());
    output.stdout
}

#[test]
fn every_malformed_input_gets_its_own_error_and_changes_nothing() {
    let hsm = Hsm::new();
    hsm.import_new_key(KEY_ID);
    let before = hsm.object_count();
    let dir = hsm.dir.path();
    let (good, _) = hsm.write_key("good.p8");
    let good = std::fs::read_to_string(good).unwrap();
    let ec = |curve: &str| {
        openssl(&[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            &format!("ec_paramgen_curve:{curve}"),
        ])
    };
    let mut corrupt = good.clone();
    corrupt.replace_range(40..41, "*");
    let plain = dir.join("plain.pem");
    std::fs::write(&plain, ec("P-256")).unwrap();
    let key_files: Vec<(&str, Vec<u8>, &str)> = vec![
        ("empty key file", vec![], "the key file is empty"),
        (
            "whitespace key file",
            b" \n\t\n".to_vec(),
            "the key file is empty",
        ),
        ("text key file", b"hello".to_vec(), "neither PEM nor DER"),
        ("binary key file", vec![0xde, 0xad], "neither PEM nor DER"),
        ("huge key file", vec![b'A'; 65 * 1024], "over 64 KiB"),
        (
            "corrupt base64",
            corrupt.into_bytes(),
            "corrupt or truncated",
        ),
        (
            "truncated PEM",
            format!("{}\n-----END PRIVATE KEY-----\n", &good[..good.len() / 2]).into_bytes(),
            "corrupt or truncated",
        ),
        (
            "two PEM blocks",
            format!("{good}{good}").into_bytes(),
            "holds 2 PEM blocks",
        ),
        (
            "RSA key",
            openssl(&[
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:1024",
            ]),
            "an RSA key",
        ),
        (
            "Ed25519 key",
            openssl(&["genpkey", "-algorithm", "ED25519"]),
            "an Ed25519 key",
        ),
        ("P-384 key", ec("P-384"), "on P-384"),
        ("P-521 key", ec("P-521"), "on P-521"),
        ("secp256k1 key", ec("secp256k1"), "on secp256k1"),
        (
            "encrypted PKCS#8",
            openssl(&[
                "pkcs8",
                "-topk8",
                "-in",
                path_str(&plain),
                "-passout",
                "pass:x",
            ]),
            "encrypted PKCS#8",
        ),
        (
            "certificate",
            b"-----BEGIN CERTIFICATE-----\nMAA=\n-----END CERTIFICATE-----\n".to_vec(),
            "\"CERTIFICATE\" PEM block",
        ),
    ];
    let mut cases: Vec<Case> = key_files
        .into_iter()
        .map(|(name, bytes, message)| Case {
            name,
            args: ["import", "-", "--key-id", "NEWKEY0001"]
                .map(String::from)
                .to_vec(),
            stdin: bytes,
            env: Vec::new(),
            code: 3,
            message,
        })
        .collect();

    let request = dir.join("array.json");
    std::fs::write(&request, "[1]").unwrap();
    cases.extend([
        case(
            "key ID lower case",
            &[
                "token",
                "apns",
                "--key-id",
                "abcdefgh12",
                "--team-id",
                "A1B2C3D4E5",
            ],
            2,
            "invalid key ID",
        ),
        case(
            "key ID too short",
            &["pubkey", "--key-id", "ABC"],
            2,
            "key IDs are 10 characters A-Z and 0-9, a UUID, or 32 to 128 hexadecimal digits",
        ),
        case(
            "issuer not a UUID",
            &[
                "token",
                "server",
                "--key-id",
                KEY_ID,
                "--issuer",
                "nope",
                "--bundle-id",
                "b",
            ],
            2,
            "invalid issuer ID",
        ),
        case(
            "Team ID too long",
            &[
                "token",
                "apns",
                "--key-id",
                KEY_ID,
                "--team-id",
                "A1B2C3D4E5F",
            ],
            2,
            "invalid Team ID",
        ),
        case(
            "bundle ID with a space",
            &[
                "token",
                "server",
                "--key-id",
                KEY_ID,
                "--issuer",
                ISSUER,
                "--bundle-id",
                "a b",
            ],
            2,
            "invalid bundle ID",
        ),
        case(
            "scope without a path",
            &[
                "token",
                "connect",
                "--key-id",
                KEY_ID,
                "--individual",
                "--scope",
                "GET",
            ],
            2,
            "invalid scope",
        ),
        case(
            "zero lifetime",
            &[
                "token",
                "server",
                "--key-id",
                KEY_ID,
                "--issuer",
                ISSUER,
                "--bundle-id",
                "b",
                "--ttl",
                "0",
            ],
            3,
            "ttl must be at least 1 second",
        ),
        case(
            "long-lived with a POST scope",
            &[
                "token",
                "connect",
                "--key-id",
                KEY_ID,
                "--individual",
                "--ttl",
                "86400",
                "--scope",
                "POST /v1/ciBuildRuns",
            ],
            3,
            "POST is not GET",
        ),
        case(
            "nonce not a UUID",
            &[
                "sign",
                "promo-offer",
                "--key-id",
                KEY_ID,
                "--issuer",
                ISSUER,
                "--bundle-id",
                "b",
                "--product-id",
                "p",
                "--offer-id",
                "o",
                "--nonce",
                "123",
            ],
            2,
            "invalid nonce",
        ),
        case(
            "Advanced Commerce body not an object",
            &[
                "sign",
                "advanced-commerce-request",
                "--key-id",
                KEY_ID,
                "--issuer",
                ISSUER,
                "--bundle-id",
                "b",
                "--request-file",
                path_str(&request),
            ],
            3,
            "not a JSON object",
        ),
        case(
            "intro offer flag not a boolean",
            &[
                "sign",
                "intro-offer-eligibility",
                "--key-id",
                KEY_ID,
                "--issuer",
                ISSUER,
                "--bundle-id",
                "b",
                "--product-id",
                "p",
                "--allow-intro-offer",
                "maybe",
                "--transaction-id",
                "1",
            ],
            2,
            "invalid value",
        ),
        case(
            "empty origin",
            &[
                "token",
                "musickit",
                "--key-id",
                KEY_ID,
                "--team-id",
                "A1B2C3D4E5",
                "--origin",
                "",
            ],
            2,
            "invalid origin",
        ),
        case(
            "label with a newline",
            &["import", "-", "--key-id", "NEWKEY0002", "--label", "a\nb"],
            3,
            "invalid label",
        ),
        case(
            "URI: unknown attribute",
            &["--key", "pkcs11:token=p8hsm;colour=blue", "keys"],
            3,
            "unknown path attribute \"colour\"",
        ),
        case(
            "URI: malformed percent-encoding",
            &["--key", "pkcs11:object=%4", "keys"],
            3,
            "malformed percent-encoding",
        ),
        case(
            "URI: attribute twice",
            &["--key", "pkcs11:token=a;token=b", "keys"],
            3,
            "appears twice",
        ),
        case(
            "URI: unknown type",
            &["--key", "pkcs11:type=secret", "keys"],
            3,
            "type \"secret\"",
        ),
        case(
            "URI: slot-id not a number",
            &["--key", "pkcs11:slot-id=x", "keys"],
            3,
            "slot-id \"x\"",
        ),
        case(
            "URI: not a PKCS#11 URI",
            &["--key", "https://example.com", "keys"],
            3,
            "starts with pkcs11:",
        ),
        case(
            "URI: module that does not exist",
            &["--module", "/nonexistent.so", "keys"],
            5,
            "does not exist",
        ),
        case(
            "PIN source: a bare PIN",
            &["--pin-source", "12345678", "keys"],
            4,
            "not file:PATH, env:VAR or prompt",
        ),
        case(
            "PIN source: unset variable",
            &["--pin-source", "env:P8HSM_CATALOGUE_UNSET", "keys"],
            4,
            "is not set",
        ),
        case(
            "PIN source: missing file",
            &["--pin-source", "file:/nonexistent/pin", "keys"],
            4,
            "cannot read PIN file",
        ),
        case(
            "PIN source: prompt without a terminal",
            &["--pin-source", "prompt", "keys"],
            4,
            "prompt needs a terminal",
        ),
    ]);
    let label = cases
        .iter_mut()
        .find(|c| c.name == "label with a newline")
        .unwrap();
    label.stdin = good.clone().into_bytes();
    let empty_pin = dir.join("empty.pin");
    std::fs::write(&empty_pin, "").unwrap();
    let two_lines = dir.join("two.pin");
    std::fs::write(&two_lines, "1\n2\n").unwrap();
    let wrong_pin = dir.join("wrong.pin");
    std::fs::write(&wrong_pin, "00000000\n").unwrap();
    for (name, path, code, message) in [
        ("PIN source: empty file", &empty_pin, 4, "gave an empty PIN"),
        ("PIN source: two lines", &two_lines, 4, "more than one line"),
        ("PIN source: wrong PIN", &wrong_pin, 4, "wrong PIN"),
    ] {
        let mut c = case(name, &["keys"], code, message);
        c.env
            .push(("P8HSM_PIN_SOURCE", format!("file:{}", path.display())));
        cases.push(c);
    }

    for c in &cases {
        let mut command = hsm.command(&c.args.iter().map(String::as_str).collect::<Vec<_>>());
        command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in &c.env {
            command.env(k, v);
        }
        let mut child = command.spawn().unwrap();
        let _ = child.stdin.take().unwrap().write_all(&c.stdin);
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(c.code), "{}: {stderr}", c.name);
        assert!(
            stderr.contains(c.message),
            "{}: expected {:?} in {stderr:?}",
            c.name,
            c.message
        );
        assert!(!stderr.contains("panicked"), "{}: {stderr}", c.name);
        assert!(out.stdout.is_empty(), "{}: nothing on stdout", c.name);
    }

    // Malformed agent requests: each its own protocol error code.
    let agent = Agent::start(&hsm, &hsm.env, &[], &["--keys", KEY_ID]);
    let agent_cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("agent: not JSON", b"{nope\n".to_vec(), "bad_request"),
        ("agent: not an object", b"42\n".to_vec(), "bad_request"),
        ("agent: unknown command", b"{\"id\":1,\"command\":\"fly\"}\n".to_vec(), "bad_request"),
        ("agent: unknown kind", b"{\"id\":1,\"command\":\"token\",\"kind\":\"teleport\"}\n".to_vec(), "bad_request"),
        ("agent: no key ID", b"{\"id\":1,\"command\":\"token\",\"kind\":\"connect\",\"individual\":true}\n".to_vec(), "invalid_input"),
        ("agent: key not allowed", b"{\"id\":1,\"command\":\"token\",\"kind\":\"connect\",\"key_id\":\"ABCDEFGH12\",\"individual\":true}\n".to_vec(), "key_not_allowed"),
        ("agent: bad issuer", b"{\"id\":1,\"command\":\"token\",\"kind\":\"server\",\"key_id\":\"2X9R4HXF34\",\"issuer\":\"x\",\"bundle_id\":\"b\"}\n".to_vec(), "bad_request"),
        ("agent: lifetime over the limit", b"{\"id\":1,\"command\":\"token\",\"kind\":\"connect\",\"key_id\":\"2X9R4HXF34\",\"individual\":true,\"ttl\":5000}\n".to_vec(), "invalid_input"),
        ("agent: oversized", { let mut v = vec![b' '; 70 * 1024]; v.push(b'\n'); v }, "too_large"),
    ];
    for (name, line, code) in &agent_cases {
        let mut stream = agent.connect();
        let _ = stream.write_all(line);
        let reply = read_reply(&mut stream);
        assert_eq!(reply["error"]["code"], *code, "{name}: {reply}");
    }
    let mut agent = agent;
    assert!(
        agent.child.try_wait().unwrap().is_none(),
        "the agent survived every request"
    );
    drop(agent);

    let total = cases.len() + agent_cases.len();
    println!("catalogue: {total} bad inputs, each refused as expected");
    assert!(total >= 40, "{total} cases");
    assert_eq!(
        hsm.object_count(),
        before,
        "no bad input wrote anything to the token"
    );
}
