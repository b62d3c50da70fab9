//! Keys born in the token (`keygen`, `assign`) and the kinds whose keys Apple never
//! sees: attributes read back with raw PKCS#11, tokens verified against the public key
//! `keygen` printed, and every refusal leaving the token as it was.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use p256::ecdsa::signature::Verifier;
use p256::ecdsa::{DerSignature, Signature, VerifyingKey};
use p256::pkcs8::DecodePublicKey;
use p256::PublicKey;
use serde_json::Value;
use sha2::{Digest, Sha256};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::common::{path_str, Hsm};

const ADS_KEY: &str = "d136aa66-0c3b-4bd4-9892-c20e8db024ab";
const ADS_CLIENT: &str = "SEARCHADS.8a4e1f0c-2b3d-4c5e-9f60-718293a4b5c6";
const ADS_TEAM: &str = "SEARCHADS.0f1e2d3c-4b5a-4697-8877-665544332211";
const CLOUDKIT_KEY: &str = "ec8a4df1ef6b4f7a4f3c9d2b1a0e9f8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a29";

/// How OpenSC's pkcs11-tool (a neutral PKCS#11 client) describes the private key
/// labelled `label`: its `Usage:` and `Access:` lines.
fn described(hsm: &Hsm, label: &str) -> (String, String) {
    let listing = hsm.pkcs11_tool(&["--list-objects", "--type", "privkey"], &[]);
    let block = listing
        .split("Private Key Object")
        .find(|block| {
            block
                .lines()
                .any(|l| l.trim() == format!("label:      {label}"))
        })
        .unwrap_or_else(|| panic!("no private key labelled {label}: {listing}"));
    let line = |name: &str| {
        block
            .lines()
            .find_map(|l| l.trim().strip_prefix(name))
            .unwrap_or_else(|| panic!("no {name} in {block}"))
            .trim()
            .to_owned()
    };
    (line("Usage:"), line("Access:"))
}

fn keygen(hsm: &Hsm, label: &str) -> PublicKey {
    let run = hsm.run(&["keygen", "--label", label]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(
        run.stderr.lines().count(),
        1,
        "one line on stderr: {}",
        run.stderr
    );
    assert!(
        run.stderr.contains("p8hsm assign --label"),
        "{}",
        run.stderr
    );
    PublicKey::from_public_key_pem(&run.stdout).expect("stdout is the SPKI PEM, nothing else")
}

/// Gives the key generated under `label` the Apple Ads key ID and identities; returns
/// what `assign` printed.
fn assign_ads(hsm: &Hsm, label: &str) -> String {
    hsm.run(&[
        "assign",
        "--label",
        label,
        "--key-id",
        ADS_KEY,
        "--kind",
        "apple-ads",
        "--client-id",
        ADS_CLIENT,
        "--ads-team-id",
        ADS_TEAM,
    ])
    .ok()
}

fn keys(hsm: &Hsm) -> Vec<Value> {
    let out = hsm.run(&["keys", "--json"]).ok();
    serde_json::from_str::<Value>(&out)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

fn verify_jws(token: &str, public: &PublicKey) -> (Value, Value) {
    let (input, signature) = token.rsplit_once('.').unwrap();
    let signature = Signature::from_slice(&URL_SAFE_NO_PAD.decode(signature).unwrap()).unwrap();
    VerifyingKey::from(public)
        .verify(input.as_bytes(), &signature)
        .expect("verifies with the public key keygen printed");
    let mut parts = input
        .split('.')
        .map(|p| serde_json::from_slice::<Value>(&URL_SAFE_NO_PAD.decode(p).unwrap()).unwrap());
    (parts.next().unwrap(), parts.next().unwrap())
}

#[test]
fn a_generated_key_never_left_the_token_and_signs_for_its_printed_public_key() {
    let hsm = Hsm::new();
    let public = keygen(&hsm, "ads-prod");
    // CKA_SIGN only (a TPM's key may also decrypt: tpm2-pkcs11 derives the usage from
    // the TPM object and refuses a template that says otherwise); CKA_SENSITIVE,
    // CKA_ALWAYS_SENSITIVE, CKA_NEVER_EXTRACTABLE, CKA_LOCAL.
    assert_eq!(
        described(&hsm, "ads-prod"),
        (
            if crate::common::tpm2() {
                "decrypt, sign"
            } else {
                "sign"
            }
            .to_owned(),
            "sensitive, always sensitive, never extractable, local".to_owned()
        )
    );
    let listed = keys(&hsm);
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["unassigned"], true, "{listed:?}");
    assert_eq!(listed[0]["origin"], "generated");
    // Before its key ID is assigned, nothing finds it by one.
    hsm.run(&[
        "token",
        "apple-ads",
        "--key-id",
        ADS_KEY,
        "--client-id",
        ADS_CLIENT,
        "--ads-team-id",
        ADS_TEAM,
    ])
    .fails(6, "error: no key with key ID d136aa66-0c3b-4bd4-9892-c20e8db024ab on the token\nhint: `p8hsm keys` lists the keys; `p8hsm import AuthKey_<ID>.p8` adds one");

    let assigned = assign_ads(&hsm, "ads-prod");
    assert!(assigned.contains("origin       generated"), "{assigned}");
    let listed = keys(&hsm);
    assert_eq!(listed[0]["id"], ADS_KEY);
    assert_eq!(listed[0]["origin"], "generated");
    assert_eq!(listed[0]["kind"], "apple-ads");
    assert_eq!(listed[0]["client_id"], ADS_CLIENT);
    assert!(listed[0].get("unassigned").is_none(), "{listed:?}");
    let doctor = hsm.run(&["doctor"]).ok();
    assert!(
        doctor.contains(&format!(
            "✓ key {ADS_KEY}: generated in the token (never outside it)"
        )),
        "{doctor}"
    );

    // The recorded IDs fill the claims in; the token verifies with the printed key.
    let token = hsm.run(&["token", "apple-ads", "--key-id", ADS_KEY]).ok();
    let (header, claims) = verify_jws(token.trim(), &public);
    assert_eq!(header, serde_json::json!({"alg": "ES256", "kid": ADS_KEY}));
    let mut names: Vec<&String> = claims.as_object().unwrap().keys().collect();
    names.sort();
    assert_eq!(names, ["aud", "exp", "iat", "iss", "sub"], "{claims}");
    assert_eq!(claims["sub"], ADS_CLIENT);
    assert_eq!(claims["iss"], ADS_TEAM);
    assert_eq!(claims["aud"], "https://appleid.apple.com");
}

#[test]
fn cloudkit_signs_the_date_body_hash_and_subpath_with_a_generated_key() {
    let hsm = Hsm::new();
    let public = keygen(&hsm, "cloudkit");
    hsm.run(&[
        "assign",
        "--label",
        "cloudkit",
        "--key-id",
        CLOUDKIT_KEY,
        "--kind",
        "cloudkit",
    ])
    .ok();
    let body = br#"{"operations":[{"operationType":"create"}]}"#;
    let path = hsm.dir.path().join("body.json");
    std::fs::write(&path, body).unwrap();
    let subpath = "/database/1/iCloud.com.example.app/development/public/records/modify";
    let out = hsm
        .run(&joined(
            CLOUDKIT,
            &[
                subpath,
                "--body-file",
                path_str(&path),
                "--date",
                "2026-11-27T13:31:14Z",
            ],
        ))
        .ok();
    // A date ahead of the clock would pre-sign a request for later.
    hsm.run(&joined(
        CLOUDKIT,
        &[subpath, "--date", "2099-12-31T23:59:59Z"],
    ))
    .fails(
        3,
        "error: invalid date 2099-12-31T23:59:59Z: it is more than 5 minutes ahead of this clock",
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert_eq!(
        lines[0],
        format!("X-Apple-CloudKit-Request-KeyID: {CLOUDKIT_KEY}")
    );
    assert_eq!(
        lines[1],
        "X-Apple-CloudKit-Request-ISO8601Date: 2026-11-27T13:31:14Z"
    );
    let signature = lines[2]
        .strip_prefix("X-Apple-CloudKit-Request-SignatureV1: ")
        .unwrap();
    let message = format!(
        "2026-11-27T13:31:14Z:{}:{subpath}",
        STANDARD.encode(Sha256::digest(body))
    );
    let der = DerSignature::from_bytes(&STANDARD.decode(signature).unwrap()).unwrap();
    VerifyingKey::from(&public)
        .verify(message.as_bytes(), &der)
        .expect("the DER signature verifies over date:body-hash:subpath");
    // Another body does not verify: the hash is of the body given.
    let other = format!(
        "2026-11-27T13:31:14Z:{}:{subpath}",
        STANDARD.encode(Sha256::digest(b""))
    );
    assert!(VerifyingKey::from(&public)
        .verify(other.as_bytes(), &der)
        .is_err());
    let json: Value =
        serde_json::from_str(&hsm.run(&joined(CLOUDKIT, &[subpath, "--json"])).ok()).unwrap();
    assert_eq!(json["key_id"], CLOUDKIT_KEY);
    assert!(json["date"].as_str().unwrap().ends_with('Z'));
}

#[test]
fn keygen_and_assign_refuse_what_they_cannot_do_and_change_nothing() {
    let hsm = Hsm::new();
    hsm.import_new_key("2X9R4HXF34");
    keygen(&hsm, "spare");
    // An imported key is described as no more than sensitive: its value once existed
    // outside the token.
    assert_eq!(described(&hsm, "2X9R4HXF34").1, "sensitive");
    let before = hsm.object_count();
    let refused: [(&[&str], i32, &str); 9] = [
        (
            &["keygen", "--label", "spare"],
            7,
            "error: the token already holds an object labelled \"spare\"; nothing was written\nhint: `p8hsm keys` lists what is there; to replace a key, delete it first with `p8hsm delete --key-id ID --yes`",
        ),
        (
            &["keygen", "--label", "ABCDEFGH12"],
            3,
            "error: invalid label \"ABCDEFGH12\": a generated key's label must not look like a key ID, which p8hsm would take it for",
        ),
        (&["keygen", "--label", "a\u{202e}b"], 3, "error: invalid label \"a\\u{202e}b\": use 1 to 64 bytes without control or bidirectional formatting characters"),
        (
            &["assign", "--label", "nope", "--key-id", ADS_KEY],
            6,
            "error: no generated key awaiting its key ID is labelled \"nope\"\nhint: `p8hsm keys` lists the keys and their labels; `p8hsm keygen --label LABEL` generates one",
        ),
        (
            &["assign", "--label", "spare", "--key-id", "2X9R4HXF34"],
            7,
            "error: the token already holds an object with key ID 2X9R4HXF34; nothing was written\nhint: `p8hsm keys` lists what is there; to replace a key, delete it first with `p8hsm delete --key-id ID --yes`",
        ),
        (
            &[
                "assign",
                "--label",
                "spare",
                "--key-id",
                "ABCDEFGH12",
                "--kind",
                "apple-ads",
            ],
            3,
            "error: invalid key ID \"ABCDEFGH12\": this kind's key IDs are UUIDs",
        ),
        (
            &[
                "assign",
                "--label",
                "spare",
                "--key-id",
                ADS_KEY,
                "--kind",
                "business-manager",
                "--client-id",
                ADS_CLIENT,
            ],
            3,
            "error: the client ID of a business-manager key is BUSINESSAPI.<uuid>, not SEARCHADS.8a4e1f0c-2b3d-4c5e-9f60-718293a4b5c6",
        ),
        (
            &[
                "assign",
                "--label",
                "spare",
                "--key-id",
                ADS_KEY,
                "--kind",
                "apple-ads",
                "--team-id",
                "A1B2C3D4E5",
            ],
            3,
            "error: apple-ads keys record no Team ID (they record their client ID and ads team ID)",
        ),
        (
            &[
                "assign", "--label", "spare", "--key-id", ADS_KEY, "--kind", "cloudkit",
            ],
            3,
            "error: invalid key ID \"d136aa66-0c3b-4bd4-9892-c20e8db024ab\": a key ID of this kind is 32 to 128 hexadecimal digits",
        ),
    ];
    for (args, code, message) in refused {
        hsm.run(args).fails(code, message);
    }
    assert_eq!(hsm.object_count(), before, "nothing was written");
    assert_eq!(
        keys(&hsm)
            .iter()
            .filter(|k| k["unassigned"] == true)
            .count(),
        1
    );

    hsm.run(&["assign", "--label", "spare", "--key-id", ADS_KEY])
        .ok();
    hsm.run(&[
        "assign",
        "--label",
        "spare",
        "--key-id",
        "8a4e1f0c-2b3d-4c5e-9f60-718293a4b5c6",
    ])
    .fails(
        7,
        &format!("error: the key labelled \"spare\" already has key ID {ADS_KEY}; nothing was changed\nhint: a key's ID cannot change; `p8hsm keygen` makes a new key for a new ID"),
    );
}

const BUSINESS: &[&str] = &["token", "business-manager", "--key-id"];
const CLOUDKIT: &[&str] = &["sign", "cloudkit", "--key-id", CLOUDKIT_KEY, "--subpath"];

fn joined<'a>(prefix: &[&'a str], rest: &[&'a str]) -> Vec<&'a str> {
    [prefix, rest].concat()
}

#[test]
fn new_kinds_refuse_bad_input_with_their_own_errors_and_sign_nothing() {
    let hsm = Hsm::new();
    let uuid = "8a4e1f0c-2b3d-4c5e-9f60-718293a4b5c6";
    let (path, _) = hsm.write_key("abm.pem");
    // Apple Business Manager's download: PKCS#8 under an "EC PRIVATE KEY" label.
    let pem = std::fs::read_to_string(&path)
        .unwrap()
        .replace("PRIVATE KEY-----", "EC PRIVATE KEY-----");
    std::fs::write(&path, pem).unwrap();
    hsm.run(&[
        "import",
        path_str(&path),
        "--key-id",
        uuid,
        "--kind",
        "business-manager",
        "--client-id",
        "BUSINESSAPI.0f1e2d3c-4b5a-4697-8877-665544332211",
    ])
    .ok();
    let before = hsm.object_count();
    let big = hsm.dir.path().join("big");
    std::fs::write(&big, vec![b'x'; 16 * 1024 * 1024 + 1]).unwrap();
    let out = hsm.dir.path().join("kept.jwt");
    let school_id = "SCHOOLAPI.0f1e2d3c-4b5a-4697-8877-665544332211";
    let other_id = "BUSINESSAPI.1f1e2d3c-4b5a-4697-8877-665544332211";
    for (args, code, message) in [
        (
            joined(BUSINESS, &["2X9R4HXF34"]),
            3,
            "error: invalid key ID \"2X9R4HXF34\": this kind's key IDs are UUIDs",
        ),
        (
            joined(BUSINESS, &["short"]),
            2,
            "error: invalid key ID \"short\": key IDs are 10 characters A-Z and 0-9, a UUID, or 32 to 128 hexadecimal digits",
        ),
        (
            joined(BUSINESS, &[uuid, "--ttl", "15552001"]),
            3,
            "error: Apple Business Manager API tokens may live at most 15552000 s from iat to exp, but ttl 15552001 with skew 60 gives 15552061\nhint: use --ttl 15551940 or less with --skew 60, or lower --skew",
        ),
        (
            joined(BUSINESS, &[uuid, "--client-id", school_id]),
            3,
            "error: the client ID of a business-manager key is BUSINESSAPI.<uuid>, not SCHOOLAPI.0f1e2d3c-4b5a-4697-8877-665544332211",
        ),
        (
            joined(BUSINESS, &[uuid, "--client-id", other_id]),
            10,
            "error: client ID BUSINESSAPI.1f1e2d3c-4b5a-4697-8877-665544332211 contradicts the client ID BUSINESSAPI.0f1e2d3c-4b5a-4697-8877-665544332211 recorded with key 8a4e1f0c-2b3d-4c5e-9f60-718293a4b5c6\nhint: leave out --client-id to use the recorded value, or use the key it belongs to",
        ),
        (
            vec!["token", "school-manager", "--key-id", uuid],
            10,
            "error: key 8a4e1f0c-2b3d-4c5e-9f60-718293a4b5c6 is recorded as a business-manager key; `token school-manager` needs a school-manager key\nhint: use the key Apple issued for this API; `p8hsm keys` shows what each key is recorded as",
        ),
        (
            vec![
                "token",
                "apple-ads",
                "--key-id",
                uuid,
                "--client-id",
                "SEARCHADS.x",
            ],
            2,
            "error: invalid client ID \"SEARCHADS.x\": it is BUSINESSAPI.<uuid>, SCHOOLAPI.<uuid> or SEARCHADS.<uuid>",
        ),
        (
            joined(
                BUSINESS,
                &[
                    uuid,
                    "--out",
                    path_str(&out),
                    "--renew-within",
                    "30d",
                    "--ttl",
                    "15552001",
                ],
            ),
            3,
            "error: Apple Business Manager API tokens may live at most 15552000 s from iat to exp, but ttl 15552001 with skew 60 gives 15552061\nhint: use --ttl 15551940 or less with --skew 60, or lower --skew",
        ),
        (
            joined(CLOUDKIT, &["/records/query"]),
            2,
            "error: invalid subpath \"/records/query\": it is the URL path from /database/ on, e.g. /database/1/iCloud.com.example/development/public/records/query",
        ),
        (
            joined(CLOUDKIT, &["/database/1/x?y=1"]),
            2,
            "error: invalid subpath \"/database/1/x?y=1\": it is the path only, without a query or fragment",
        ),
        (
            joined(
                CLOUDKIT,
                &["/database/1/x", "--date", "2026-11-27T13:31:14.250Z"],
            ),
            2,
            "error: invalid date \"2026-11-27T13:31:14.250Z\": it is ISO 8601 UTC without fractional seconds, e.g. 2026-11-27T13:31:14Z",
        ),
        (
            joined(CLOUDKIT, &["/database/1/x", "--body-file", path_str(&big)]),
            3,
            "error: cannot use {dir}/big: it is over 16 MiB, the most p8hsm hashes",
        ),
        (
            vec![
                "sign",
                "cloudkit",
                "--key-id",
                uuid,
                "--subpath",
                "/database/1/x",
            ],
            3,
            "error: invalid key ID \"8a4e1f0c-2b3d-4c5e-9f60-718293a4b5c6\": a key ID of this kind is 32 to 128 hexadecimal digits",
        ),
    ] {
        hsm.run(&args).fails(code, message);
    }
    assert!(!out.exists(), "a refused --out writes nothing");
    assert_eq!(hsm.object_count(), before);
}

#[test]
fn the_agent_serves_the_new_kinds_from_generated_keys() {
    let hsm = Hsm::new();
    let ads_public = keygen(&hsm, "ads");
    assign_ads(&hsm, "ads");
    let ck_public = keygen(&hsm, "ck");
    hsm.run(&[
        "assign",
        "--label",
        "ck",
        "--key-id",
        CLOUDKIT_KEY,
        "--kind",
        "cloudkit",
    ])
    .ok();
    let agent = crate::common::Agent::start(&hsm, &hsm.env, &[], &[]);
    let reply =
        agent.request(&serde_json::json!({"id": 1, "kind": "apple-ads", "key_id": ADS_KEY}));
    assert_eq!(reply["ok"], true, "{reply}");
    let (_, claims) = verify_jws(reply["result"]["token"].as_str().unwrap(), &ads_public);
    assert_eq!(claims["iss"], ADS_TEAM, "recorded identities fill in");
    let empty = STANDARD.encode(Sha256::digest(b""));
    let reply = agent.request(&serde_json::json!({
        "id": 2, "kind": "cloudkit", "key_id": CLOUDKIT_KEY, "subpath": "/database/1/x/development/public/zones/list",
        "body_sha256": empty, "date": "2026-11-27T13:31:14Z",
    }));
    assert_eq!(reply["ok"], true, "{reply}");
    assert_eq!(reply["source"], "fresh", "signatures are never cached");
    let der = DerSignature::from_bytes(
        &STANDARD
            .decode(reply["result"]["signature"].as_str().unwrap())
            .unwrap(),
    )
    .unwrap();
    let message =
        format!("2026-11-27T13:31:14Z:{empty}:/database/1/x/development/public/zones/list");
    VerifyingKey::from(&ck_public)
        .verify(message.as_bytes(), &der)
        .expect("the agent's CloudKit signature verifies");
    // The CloudKit key cannot make an Apple Ads secret, nor an Apple-form key ID a CloudKit signature.
    let reply =
        agent.request(&serde_json::json!({"id": 3, "kind": "apple-ads", "key_id": CLOUDKIT_KEY}));
    assert_eq!(reply["error"]["code"], "invalid_input", "{reply}");
    let reply = agent.request(&serde_json::json!({"id": 4, "kind": "cloudkit", "key_id": "2X9R4HXF34", "subpath": "/database/1/x"}));
    assert_eq!(reply["error"]["code"], "invalid_input", "{reply}");
}

#[test]
fn two_assigns_of_one_key_id_at_once_leave_it_on_one_key() {
    let hsm = Hsm::new();
    keygen(&hsm, "first");
    keygen(&hsm, "second");
    let children: Vec<_> = ["first", "second"]
        .iter()
        .map(|label| {
            hsm.command(&["assign", "--label", label, "--key-id", ADS_KEY])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let codes: Vec<Option<i32>> = children
        .into_iter()
        .map(|c| c.wait_with_output().unwrap().status.code())
        .collect();
    assert_eq!(
        codes.iter().filter(|c| **c == Some(0)).count(),
        1,
        "exactly one assign wins: {codes:?}"
    );
    assert!(
        codes.contains(&Some(7)),
        "the other refused as taken: {codes:?}"
    );
    let listed = keys(&hsm);
    assert_eq!(
        listed.iter().filter(|k| k["id"] == ADS_KEY).count(),
        1,
        "{listed:?}"
    );
    assert_eq!(listed.iter().filter(|k| k["unassigned"] == true).count(), 1);
    hsm.run(&["doctor"]).ok();
}

#[test]
fn a_token_whose_objects_keep_their_id_refuses_keygen() {
    let hsm = Hsm::new();
    let before = hsm.object_count();
    hsm.run(&["--profile", "yubihsm", "keygen", "--label", "k"])
        .fails(5, "error: this token cannot generate the key: its objects keep the ID they are made with, and Apple shows the key ID only after the public key is uploaded: generate the key with the vendor's tool under the key ID, then sign with p8hsm\nhint: `p8hsm modules` lists the tokens p8hsm finds");
    assert_eq!(hsm.object_count(), before);
}
