//! The bad-input catalogue: malformed key files, claims and IDs, URIs, PIN sources and
//! agent requests. Each gets its own error and exit code (or protocol error code), none
//! panics, and the token's object count is the same afterwards. What a request's fields
//! and its key's record refuse is pinned line for line by the table of refusals in
//! `common/examples.rs` (see `parity.rs`).

use std::io::Write;
use std::process::{Command, Stdio};

use crate::common::{path_str, read_reply, Agent, Hsm, Run, ISSUER};

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
        ("empty key file", vec![], "error: the key file is empty\nhint: Apple's .p8 files are PEM \"PRIVATE KEY\" EC P-256 keys, as downloaded from App Store Connect"),
        (
            "whitespace key file",
            b" \n\t\n".to_vec(),
            "error: the key file is empty\nhint: Apple's .p8 files are PEM \"PRIVATE KEY\" EC P-256 keys, as downloaded from App Store Connect",
        ),
        ("text key file", b"hello".to_vec(), "error: the key file is neither PEM nor DER\nhint: Apple's .p8 files are PEM \"PRIVATE KEY\" EC P-256 keys, as downloaded from App Store Connect"),
        ("binary key file", vec![0xde, 0xad], "error: the key file is neither PEM nor DER\nhint: Apple's .p8 files are PEM \"PRIVATE KEY\" EC P-256 keys, as downloaded from App Store Connect"),
        ("huge key file", vec![b'A'; 65 * 1024], "error: the key file is over 64 KiB; a .p8 is a few hundred bytes\nhint: Apple's .p8 files are PEM \"PRIVATE KEY\" EC P-256 keys, as downloaded from App Store Connect"),
        (
            "corrupt base64",
            corrupt.into_bytes(),
            "error: the key file's PEM body is corrupt or truncated (invalid base64: DecodeError: Invalid symbol 42, offset 12.)\nhint: Apple's .p8 files are PEM \"PRIVATE KEY\" EC P-256 keys, as downloaded from App Store Connect",
        ),
        (
            "truncated PEM",
            format!("{}\n-----END PRIVATE KEY-----\n", &good[..good.len() / 2]).into_bytes(),
            "error: the key file's PEM body is corrupt or truncated (invalid base64: DecodeError: Invalid padding)\nhint: Apple's .p8 files are PEM \"PRIVATE KEY\" EC P-256 keys, as downloaded from App Store Connect",
        ),
        (
            "two PEM blocks",
            format!("{good}{good}").into_bytes(),
            "error: the key file holds 2 PEM blocks; a .p8 holds exactly one\nhint: keep only the private key block (openssl ecparam -genkey also writes EC PARAMETERS)",
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
            "error: the key file holds an RSA key, not an EC P-256 key\nhint: Apple's .p8 files are PEM \"PRIVATE KEY\" EC P-256 keys, as downloaded from App Store Connect",
        ),
        (
            "Ed25519 key",
            openssl(&["genpkey", "-algorithm", "ED25519"]),
            "error: the key file holds an Ed25519 key, not an EC P-256 key\nhint: Apple's .p8 files are PEM \"PRIVATE KEY\" EC P-256 keys, as downloaded from App Store Connect",
        ),
        ("P-384 key", ec("P-384"), "error: the key file holds an EC key on P-384, not P-256\nhint: Apple's .p8 files are PEM \"PRIVATE KEY\" EC P-256 keys, as downloaded from App Store Connect"),
        ("P-521 key", ec("P-521"), "error: the key file holds an EC key on P-521, not P-256\nhint: Apple's .p8 files are PEM \"PRIVATE KEY\" EC P-256 keys, as downloaded from App Store Connect"),
        ("secp256k1 key", ec("secp256k1"), "error: the key file holds an EC key on secp256k1, not P-256\nhint: Apple's .p8 files are PEM \"PRIVATE KEY\" EC P-256 keys, as downloaded from App Store Connect"),
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
            "error: the key file is an encrypted PKCS#8 key\nhint: decrypt it into the import without a file: openssl pkcs8 -in KEY.p8 | p8hsm import --key-id ID -",
        ),
        (
            "certificate",
            b"-----BEGIN CERTIFICATE-----\nMAA=\n-----END CERTIFICATE-----\n".to_vec(),
            "error: the key file holds a \"CERTIFICATE\" PEM block, not a private key\nhint: Apple's .p8 files are PEM \"PRIVATE KEY\" EC P-256 keys, as downloaded from App Store Connect",
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
            "key ID too short",
            &["pubkey", "--key-id", "ABC"],
            2,
            "error: invalid key ID \"ABC\": key IDs are 10 characters A-Z and 0-9, a UUID, or 32 to 128 hexadecimal digits",
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
            "error: cannot use {dir}/array.json: invalid request body: it is not a JSON object",
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
            "error: invalid value 'maybe' for '--allow-intro-offer <true|false>'\n  [possible values: true, false]\n\nFor more information, try '--help'.",
        ),
        case(
            "label with a newline",
            &["import", "-", "--key-id", "NEWKEY0002", "--label", "a\nb"],
            3,
            "error: invalid label \"a\\nb\": use 1 to 64 bytes without control or bidirectional formatting characters",
        ),
        case(
            "kind without the identity it records",
            &["import", "-", "--key-id", "NEWKEY0003", "--kind", "connect"],
            2,
            "error: connect keys record their issuer ID: give --issuer\nhint: `p8hsm import --kind connect --issuer UUID` records it once for every token",
        ),
        case(
            "a renamed AuthKey file",
            &["import", "{dir}/AuthKey_lower00001.p8"],
            2,
            "error: the key ID in the file name is not as Apple writes it (upper case): was the file renamed? Its key ID would be LOWER00001\nhint: pass --key-id LOWER00001 if it is",
        ),
        case(
            "kind forgotten",
            &["token", "--key-id", KEY_ID],
            2,
            "error: `p8hsm token` needs the kind first: `p8hsm token KIND --key-id …`\nhint: the kinds are connect, server, external-purchase, advanced-commerce, retention-messaging, enterprise, apns, devicecheck, sign-in-with-apple, musickit, weatherkit, mapkit, business-manager, school-manager, apple-ads",
        ),
        case(
            "a signature's kind asked of token",
            &["token", "promo-offer", "--key-id", KEY_ID],
            2,
            "error: promo-offer is made by `p8hsm sign promo-offer`, not `p8hsm token`",
        ),
        case(
            "unknown kind",
            &["--module-args", "x", "token", "teleport"],
            2,
            "error: unknown kind \"teleport\"\nhint: the kinds are connect, server, external-purchase, advanced-commerce, retention-messaging, enterprise, apns, devicecheck, sign-in-with-apple, musickit, weatherkit, mapkit, business-manager, school-manager, apple-ads",
        ),
        case(
            "negative lifetime",
            &["token", "connect", "--key-id", KEY_ID, "--individual", "--ttl", "-5"],
            2,
            "error: invalid duration \"-5\": give seconds (1140) or a duration such as 19m, 12h or 30d",
        ),
        case(
            "URI: unknown attribute",
            &["--key", "pkcs11:token=p8hsm;colour=blue", "keys"],
            3,
            "error: invalid PKCS#11 URI: unknown path attribute \"colour\"\nhint: see RFC 7512; `p8hsm keys` and `p8hsm modules` print URIs to start from",
        ),
        case(
            "URI: malformed percent-encoding",
            &["--key", "pkcs11:object=%4", "keys"],
            3,
            "error: invalid PKCS#11 URI: object has a malformed percent-encoding\nhint: see RFC 7512; `p8hsm keys` and `p8hsm modules` print URIs to start from",
        ),
        case(
            "URI: attribute twice",
            &["--key", "pkcs11:token=a;token=b", "keys"],
            3,
            "error: invalid PKCS#11 URI: attribute token appears twice\nhint: see RFC 7512; `p8hsm keys` and `p8hsm modules` print URIs to start from",
        ),
        case(
            "URI: unknown type",
            &["--key", "pkcs11:type=secret", "keys"],
            3,
            "error: invalid PKCS#11 URI: type \"secret\" is not public, private, cert, secret-key or data\nhint: see RFC 7512; `p8hsm keys` and `p8hsm modules` print URIs to start from",
        ),
        case(
            "URI: slot-id not a number",
            &["--key", "pkcs11:slot-id=x", "keys"],
            3,
            "error: invalid PKCS#11 URI: slot-id \"x\" is not a decimal number\nhint: see RFC 7512; `p8hsm keys` and `p8hsm modules` print URIs to start from",
        ),
        case(
            "URI: not a PKCS#11 URI",
            &["--key", "https://example.com", "keys"],
            3,
            "error: invalid PKCS#11 URI: a PKCS#11 URI starts with pkcs11:\nhint: see RFC 7512; `p8hsm keys` and `p8hsm modules` print URIs to start from",
        ),
        case(
            "URI: module that does not exist",
            &["--module", "/nonexistent.so", "keys"],
            5,
            "error: PKCS#11 module /nonexistent.so does not exist\nhint: check --module, P8HSM_MODULE and PKCS11_MODULE_PATH",
        ),
        case(
            "PIN source: a bare PIN",
            &["--pin-source", "12345678", "keys"],
            4,
            "error: cannot read the PIN: the PIN source is not file:PATH, env:VAR or prompt\nhint: give --pin-source file:PATH, env:VAR or prompt (or set P8HSM_PIN_SOURCE)",
        ),
        case(
            "PIN source: unset variable",
            &["--pin-source", "env:P8HSM_CATALOGUE_UNSET", "keys"],
            4,
            "error: cannot read the PIN: environment variable P8HSM_CATALOGUE_UNSET is not set or not UTF-8\nhint: give --pin-source file:PATH, env:VAR or prompt (or set P8HSM_PIN_SOURCE)",
        ),
        case(
            "PIN source: missing file",
            &["--pin-source", "file:/nonexistent/pin", "keys"],
            4,
            "error: cannot read the PIN: cannot read PIN file /nonexistent/pin: No such file or directory (os error 2)\nhint: give --pin-source file:PATH, env:VAR or prompt (or set P8HSM_PIN_SOURCE)",
        ),
        case(
            "PIN source: prompt without a terminal",
            &["--pin-source", "prompt", "keys"],
            4,
            "error: cannot read the PIN: prompt needs a terminal, and there is none\nhint: give --pin-source file:PATH, env:VAR or prompt (or set P8HSM_PIN_SOURCE)",
        ),
    ]);
    for c in cases.iter_mut().filter(|c| {
        [
            "label with a newline",
            "kind without the identity it records",
        ]
        .contains(&c.name)
    }) {
        c.stdin = good.clone().into_bytes();
    }
    let empty_pin = dir.join("empty.pin");
    std::fs::write(&empty_pin, "").unwrap();
    let two_lines = dir.join("two.pin");
    std::fs::write(&two_lines, "1\n2\n").unwrap();
    let wrong_pin = dir.join("wrong.pin");
    std::fs::write(&wrong_pin, "00000000\n").unwrap();
    for (name, path, code, message) in [
        ("PIN source: empty file", &empty_pin, 4, "error: cannot read the PIN: file {dir}/empty.pin gave an empty PIN\nhint: give --pin-source file:PATH, env:VAR or prompt (or set P8HSM_PIN_SOURCE)"),
        ("PIN source: two lines", &two_lines, 4, "error: cannot read the PIN: PIN file {dir}/two.pin holds more than one line\nhint: give --pin-source file:PATH, env:VAR or prompt (or set P8HSM_PIN_SOURCE)"),
        ("PIN source: wrong PIN", &wrong_pin, 4, "error: the token refused the PIN (wrong PIN)\nwarning: repeated wrong PINs can lock a hardware token; p8hsm tried once and will not retry: check the PIN source before running again"),
    ] {
        let mut c = case(name, &["keys"], code, message);
        c.env
            .push(("P8HSM_PIN_SOURCE", format!("file:{}", path.display())));
        cases.push(c);
    }

    std::fs::write(dir.join("AuthKey_lower00001.p8"), &good).unwrap();
    for c in &cases {
        let args: Vec<String> = c
            .args
            .iter()
            .map(|a| a.replace("{dir}", path_str(dir)))
            .collect();
        let mut command = hsm.command(&args.iter().map(String::as_str).collect::<Vec<_>>());
        command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in &c.env {
            command.env(k, v);
        }
        let mut child = command.spawn().unwrap();
        let _ = child.stdin.take().unwrap().write_all(&c.stdin);
        let run = Run {
            dir: Some(dir.to_owned()),
            ..Run::from(child.wait_with_output().unwrap())
        };
        run.fails(c.code, c.message);
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
