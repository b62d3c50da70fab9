//! Every token kind and StoreKit signature, signed by a real SoftHSM token and verified
//! by implementations p8hsm did not write: the `jsonwebtoken` crate for JWTs, `p256` for
//! the legacy DER signature. Key metadata and `check` through the CLI.

use std::collections::{BTreeSet, HashSet};

use crate::common::{now, path_str, Hsm, ISSUER};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use jsonwebtoken::{decode, decode_header, Algorithm, DecodingKey, Validation};
use p256::ecdsa::signature::Verifier;
use p256::ecdsa::{DerSignature, VerifyingKey};
use p256::pkcs8::{EncodePublicKey, LineEnding};
use p256::SecretKey;
use serde_json::{json, Value};

const KEY_ID: &str = "2X9R4HXF34";
const TEAM: &str = "A1B2C3D4E5";

/// Verifies `token` with jsonwebtoken (ES256, the aud given, exp when present) and
/// returns the raw header JSON and the claims.
fn verify(token: &str, key: &SecretKey, aud: Option<&str>) -> (Value, Value) {
    let pem = key.public_key().to_public_key_pem(LineEnding::LF).unwrap();
    let decoding = DecodingKey::from_ec_pem(pem.as_bytes()).unwrap();
    let mut validation = Validation::new(Algorithm::ES256);
    validation.required_spec_claims = HashSet::new();
    validation.leeway = 0;
    match aud {
        Some(aud) => validation.set_audience(&[aud]),
        None => validation.validate_aud = false,
    }
    let header = decode_header(token).expect("a JOSE header");
    assert_eq!(header.alg, Algorithm::ES256);
    let data = decode::<Value>(token, &decoding, &validation)
        .unwrap_or_else(|e| panic!("jsonwebtoken rejects {token}: {e}"));
    let raw_header: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(token.split('.').next().unwrap())
            .unwrap(),
    )
    .unwrap();
    (raw_header, data.claims)
}

fn names(value: &Value) -> BTreeSet<&str> {
    value
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect()
}

fn set<'a>(names: &[&'a str]) -> BTreeSet<&'a str> {
    names.iter().copied().collect()
}

#[test]
fn every_token_kind_verifies_with_jsonwebtoken_and_has_apples_shape() {
    let hsm = Hsm::new();
    let key = hsm.import_new_key(KEY_ID);
    // (token command and its flags, aud, header names, claim names)
    type Case<'a> = (Vec<&'a str>, Option<&'a str>, Vec<&'a str>, Vec<&'a str>);
    let cases: Vec<Case> = vec![
        (
            vec!["connect", "--issuer", ISSUER],
            Some("appstoreconnect-v1"),
            vec!["alg", "kid", "typ"],
            vec!["iss", "iat", "exp", "aud"],
        ),
        (
            vec!["connect", "--individual"],
            Some("appstoreconnect-v1"),
            vec!["alg", "kid", "typ"],
            vec!["sub", "iat", "exp", "aud"],
        ),
        (
            vec![
                "server",
                "--issuer",
                ISSUER,
                "--bundle-id",
                "com.example.app",
            ],
            Some("appstoreconnect-v1"),
            vec!["alg", "kid", "typ"],
            vec!["iss", "iat", "exp", "aud", "bid"],
        ),
        (
            vec![
                "external-purchase",
                "--issuer",
                ISSUER,
                "--bundle-id",
                "com.example.app",
            ],
            Some("appstoreconnect-v1"),
            vec!["alg", "kid", "typ"],
            vec!["iss", "iat", "exp", "aud", "bid"],
        ),
        (
            vec![
                "advanced-commerce",
                "--issuer",
                ISSUER,
                "--bundle-id",
                "com.example.app",
            ],
            Some("appstoreconnect-v1"),
            vec!["alg", "kid", "typ"],
            vec!["iss", "iat", "exp", "aud", "bid"],
        ),
        (
            vec![
                "retention-messaging",
                "--issuer",
                ISSUER,
                "--bundle-id",
                "com.example.app",
            ],
            Some("appstoreconnect-v1"),
            vec!["alg", "kid", "typ"],
            vec!["iss", "iat", "exp", "aud", "bid"],
        ),
        (
            vec!["enterprise", "--issuer", ISSUER, "--scope", "GET /v1/apps"],
            Some("apple-developer-enterprise-v1"),
            vec!["alg", "kid", "typ"],
            vec!["iss", "iat", "exp", "aud", "scope"],
        ),
        (
            vec!["apns", "--team-id", TEAM],
            None,
            vec!["alg", "kid"],
            vec!["iss", "iat"],
        ),
        (
            vec!["devicecheck", "--team-id", TEAM],
            None,
            vec!["alg", "kid"],
            vec!["iss", "iat"],
        ),
        (
            vec![
                "sign-in-with-apple",
                "--team-id",
                TEAM,
                "--client-id",
                "com.example.web",
            ],
            Some("https://appleid.apple.com"),
            vec!["alg", "kid"],
            vec!["iss", "iat", "exp", "aud", "sub"],
        ),
        (
            vec![
                "musickit",
                "--team-id",
                TEAM,
                "--origin",
                "https://a.example",
                "--origin",
                "https://b.example",
            ],
            None,
            vec!["alg", "kid"],
            vec!["iss", "iat", "exp", "origin"],
        ),
        (
            vec![
                "weatherkit",
                "--team-id",
                TEAM,
                "--service-id",
                "com.example.weather",
            ],
            None,
            vec!["alg", "kid", "id"],
            vec!["iss", "iat", "exp", "sub"],
        ),
        (
            vec![
                "mapkit",
                "--team-id",
                TEAM,
                "--origin",
                "https://maps.example",
                "--mapkit-js",
            ],
            None,
            vec!["alg", "kid", "typ"],
            vec!["iss", "iat", "exp", "origin", "scope"],
        ),
    ];
    for (args, aud, header_names, claim_names) in cases {
        let kind = args[0];
        let mut all = vec!["token"];
        all.extend(&args);
        all.extend(["--key-id", KEY_ID]);
        let before = now();
        let out = hsm.run(&all).ok();
        let (header, claims) = verify(out.trim_end(), &key, aud);
        assert_eq!(
            names(&header),
            set(&header_names),
            "{kind} header: {header}"
        );
        assert_eq!(names(&claims), set(&claim_names), "{kind} claims: {claims}");
        assert_eq!(header["kid"], KEY_ID);
        let iat = claims["iat"].as_i64().unwrap();
        assert!(
            (before - 60..=now() - 60).contains(&iat),
            "{kind}: iat backdated 60 s"
        );
        if let Some(aud) = aud {
            assert_eq!(claims["aud"], aud);
        }
        if kind == "weatherkit" {
            assert_eq!(header["id"], format!("{TEAM}.com.example.weather"));
        }
        if kind == "mapkit" {
            assert_eq!(claims["scope"], "mapkit_js");
        }
        if kind == "musickit" {
            assert_eq!(
                claims["origin"],
                json!(["https://a.example", "https://b.example"])
            );
        }
        if kind == "connect" && claims.get("sub").is_some() {
            assert_eq!(claims["sub"], "user");
        }
        let check = hsm.run(&["check", out.trim_end(), "--key-id", KEY_ID, "--kind", kind]);
        assert_eq!(check.code, 0, "{kind}: p8hsm's own check: {}", check.stdout);
    }
}

#[test]
fn a_long_lived_connect_token_takes_scoped_gets_on_listed_resources() {
    let hsm = Hsm::new();
    let key = hsm.import_new_key(KEY_ID);
    let token = |args: &[&str]| {
        let mut all = vec!["token"];
        all.extend(args);
        all.extend(["--key-id", KEY_ID]);
        hsm.run(&all)
    };
    // What is refused is in the table of refusals (`common/examples.rs`).
    // A duration as people write it, as every duration option takes one.
    let out = token(&[
        "connect",
        "--individual",
        "--ttl",
        "30d",
        "--scope",
        "GET /v1/ciProducts",
        "--scope",
        "GET /v1/ciBuildRuns/1",
    ])
    .ok();
    let (_, claims) = verify(out.trim_end(), &key, Some("appstoreconnect-v1"));
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        30 * 86400 + 60
    );
}

#[test]
fn storekit_jws_signatures_verify_and_carry_fresh_nonces_and_no_exp() {
    let hsm = Hsm::new();
    let key = hsm.import_new_key(KEY_ID);
    let common = [
        "--key-id",
        KEY_ID,
        "--issuer",
        ISSUER,
        "--bundle-id",
        "com.example.app",
        "--json",
    ];
    let sign = |args: &[&str], stdin: &[u8]| {
        let mut all = vec!["sign"];
        all.extend(args);
        all.extend(common);
        let out: Value = serde_json::from_str(&hsm.run_with_stdin(&all, stdin).ok()).unwrap();
        let (header, claims) = verify(out["token"].as_str().unwrap(), &key, None);
        assert_eq!(header, json!({"alg": "ES256", "kid": KEY_ID, "typ": "JWT"}));
        assert_eq!(out["nonce"], claims["nonce"]);
        assert_eq!(out["issued_at"], claims["iat"]);
        assert!(claims.get("exp").is_none(), "never exp: {claims}");
        claims
    };
    let promo = sign(
        &[
            "promo-offer",
            "--product-id",
            "com.example.monthly",
            "--offer-id",
            "WINBACK",
            "--transaction-id",
            "2000000123",
        ],
        b"",
    );
    assert_eq!(
        names(&promo),
        set(&[
            "iss",
            "iat",
            "aud",
            "bid",
            "nonce",
            "productId",
            "offerIdentifier",
            "transactionId"
        ])
    );
    assert_eq!(promo["aud"], "promotional-offer");
    assert_eq!(promo["offerIdentifier"], "WINBACK");
    let nonce = promo["nonce"].as_str().unwrap();
    assert_eq!(uuid_version(nonce), 4);
    assert_eq!(nonce, nonce.to_lowercase());
    let again = sign(
        &["promo-offer", "--product-id", "p", "--offer-id", "o"],
        b"",
    );
    assert_ne!(again["nonce"], promo["nonce"], "a fresh nonce every time");
    assert!(again.get("transactionId").is_none());

    let intro = sign(
        &[
            "intro-offer-eligibility",
            "--product-id",
            "p",
            "--allow-intro-offer",
            "false",
            "--transaction-id",
            "1",
        ],
        b"",
    );
    assert_eq!(intro["aud"], "introductory-offer-eligibility");
    assert_eq!(intro["allowIntroductoryOffer"], json!(false));

    let request = br#"{"operation":"CREATE_SUBSCRIPTION","version":"1","requestInfo":{"requestReferenceId":"x"}}"#;
    let commerce = sign(
        &["advanced-commerce-request", "--request-file", "-"],
        request,
    );
    assert_eq!(commerce["aud"], "advanced-commerce-api");
    assert_eq!(
        STANDARD
            .decode(commerce["request"].as_str().unwrap())
            .unwrap(),
        request
    );
}

fn uuid_version(s: &str) -> u32 {
    let hex: String = s.chars().filter(|c| *c != '-').collect();
    u32::from_str_radix(&hex[12..13], 16).unwrap()
}

#[test]
fn legacy_promotional_offer_signature_is_der_over_apples_payload() {
    let hsm = Hsm::new();
    let key = hsm.import_new_key(KEY_ID);
    let timestamp = crate::common::now() as u64 * 1000 + 123;
    let out = hsm
        .run(&[
            "sign",
            "promo-offer-legacy",
            "--key-id",
            KEY_ID,
            "--bundle-id",
            "com.example.app",
            "--product-id",
            "com.example.monthly",
            "--offer-id",
            "WINBACK",
            "--app-account-token",
            "ABCDEF01-0000-4000-8000-000000000000",
            "--nonce",
            "3E1BD4A2-1B50-4C1F-9D5F-2D1E5A0C8F11",
            "--timestamp",
            &timestamp.to_string(),
            "--json",
        ])
        .ok();
    let out: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(out["key_id"], KEY_ID);
    assert_eq!(out["nonce"], "3e1bd4a2-1b50-4c1f-9d5f-2d1e5a0c8f11");
    assert_eq!(out["timestamp"], timestamp);
    let payload = format!(
        "com.example.app\u{2063}2X9R4HXF34\u{2063}com.example.monthly\u{2063}WINBACK\u{2063}\
         abcdef01-0000-4000-8000-000000000000\u{2063}3e1bd4a2-1b50-4c1f-9d5f-2d1e5a0c8f11\u{2063}{timestamp}"
    );
    let der = STANDARD.decode(out["signature"].as_str().unwrap()).unwrap();
    let signature = DerSignature::try_from(der.as_slice()).expect("a DER ECDSA signature");
    VerifyingKey::from(key.public_key())
        .verify(payload.as_bytes(), &signature)
        .expect("verifies over Apple's payload string");

    let plain = hsm
        .run(&[
            "sign",
            "promo-offer-legacy",
            "--key-id",
            KEY_ID,
            "--bundle-id",
            "b",
            "--product-id",
            "p",
            "--offer-id",
            "o",
        ])
        .ok();
    assert!(
        STANDARD.decode(plain.trim_end()).unwrap()[0] == 0x30,
        "plain output is the base64 signature"
    );
}

#[test]
fn recorded_metadata_supplies_identities_and_refuses_other_kinds() {
    let hsm = Hsm::new();
    let (path, key) = hsm.write_key("SubscriptionKey_ABCDEFGH12.p8");
    let out = hsm
        .run(&[
            "import",
            path_str(&path),
            "--kind",
            "in-app-purchase",
            "--issuer",
            ISSUER,
        ])
        .ok();
    assert!(
        out.ends_with(&format!(
            "kind         in-app-purchase\nissuer       {ISSUER}\n"
        )),
        "{out}"
    );
    assert_eq!(hsm.object_count(), 3, "private key, public key, metadata");

    let out = hsm
        .run(&[
            "token",
            "server",
            "--key-id",
            "ABCDEFGH12",
            "--bundle-id",
            "com.example.app",
        ])
        .ok();
    let (_, claims) = verify(out.trim_end(), &key, Some("appstoreconnect-v1"));
    assert_eq!(claims["iss"], ISSUER, "issuer from the recorded metadata");
    let out = hsm
        .run(&[
            "sign",
            "promo-offer",
            "--key-id",
            "ABCDEFGH12",
            "--bundle-id",
            "b",
            "--product-id",
            "p",
            "--offer-id",
            "o",
        ])
        .ok();
    assert_eq!(verify(out.trim_end(), &key, None).1["iss"], ISSUER);

    let run = hsm.run(&["token", "apns", "--key-id", "ABCDEFGH12", "--team-id", TEAM]);
    run.fails(
        10,
        "error: key ABCDEFGH12 is recorded as an in-app-purchase key; `token apns` needs a developer key\nhint: use the key Apple issued for this API; `p8hsm keys` shows what each key is recorded as",
    );
    assert!(
        run.stderr
            .contains("hint: use the key Apple issued for this API"),
        "{}",
        run.stderr
    );
    hsm.run(&["token", "connect", "--key-id", "ABCDEFGH12", "--individual"])
        .fails(
            10,
            "error: key ABCDEFGH12 is recorded as an in-app-purchase key; `token connect` needs a connect or a connect-individual key\nhint: use the key Apple issued for this API; `p8hsm keys` shows what each key is recorded as",
        );
    hsm.run(&[
        "token",
        "server",
        "--key-id",
        "ABCDEFGH12",
        "--bundle-id",
        "b",
        "--issuer",
        "00000000-0000-4000-8000-000000000000",
    ])
    .fails(
        10,
        "error: issuer ID 00000000-0000-4000-8000-000000000000 contradicts the issuer ID 57246542-96fe-1a63-e053-0824d011072a recorded with key ABCDEFGH12\nhint: leave out --issuer to use the recorded value, or use the key it belongs to",
    );

    let keys: Value = serde_json::from_str(&hsm.run(&["keys", "--json"]).ok()).unwrap();
    assert_eq!(keys[0]["kind"], "in-app-purchase");
    assert_eq!(keys[0]["issuer"], ISSUER);

    // A developer key records its Team ID.
    let (path, key) = hsm.write_key("AuthKey_DEVKEY0001.p8");
    hsm.run(&[
        "import",
        path_str(&path),
        "--kind",
        "developer",
        "--team-id",
        TEAM,
    ])
    .ok();
    let out = hsm.run(&["token", "apns", "--key-id", "DEVKEY0001"]).ok();
    assert_eq!(verify(out.trim_end(), &key, None).1["iss"], TEAM);
    hsm.run(&[
        "token",
        "server",
        "--key-id",
        "DEVKEY0001",
        "--issuer",
        ISSUER,
        "--bundle-id",
        "b",
    ])
    .fails(10, "error: key DEVKEY0001 is recorded as a developer key; `token server` needs an in-app-purchase key\nhint: use the key Apple issued for this API; `p8hsm keys` shows what each key is recorded as");

    // Identities that do not fit the kind are refused before anything is written.
    let (path, _) = hsm.write_key("AuthKey_BADMETA001.p8");
    hsm.run(&[
        "import",
        path_str(&path),
        "--kind",
        "developer",
        "--issuer",
        ISSUER,
    ])
    .fails(
        3,
        "error: developer keys record no issuer ID (they record their Team ID)",
    );
    let run = hsm.run(&["import", path_str(&path), "--issuer", ISSUER]);
    assert_eq!(run.code, 2, "--issuer needs --kind: {}", run.stderr);
    assert_eq!(hsm.object_count(), 6);

    hsm.run(&["delete", "--key-id", "ABCDEFGH12", "--yes"]).ok();
    assert_eq!(hsm.object_count(), 3, "delete removes the metadata too");
}

#[test]
fn check_explains_what_apple_would_reject() {
    let hsm = Hsm::new();
    hsm.import_new_key(KEY_ID);
    let good = hsm
        .run(&["token", "connect", "--key-id", KEY_ID, "--issuer", ISSUER])
        .ok();
    let good = good.trim_end();
    let out = hsm.run(&["check", good, "--key-id", KEY_ID]).ok();
    assert!(out.contains("kind    connect\n"), "{out}");
    assert!(out.contains("✓ the signature verifies\n"), "{out}");
    assert!(
        out.ends_with("✓ no reason found for Apple to reject this token\n"),
        "{out}"
    );
    let out = hsm
        .run_with_stdin(&["check", "-", "--json"], good.as_bytes())
        .ok();
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["findings"], json!([]));
    assert_eq!(report["kind"], "connect");

    // Another key's public key does not verify it.
    let other = hsm.dir.path().join("other.pem");
    let other_key = SecretKey::random(&mut p256::elliptic_curve::rand_core::OsRng);
    std::fs::write(
        &other,
        other_key
            .public_key()
            .to_public_key_pem(LineEnding::LF)
            .unwrap(),
    )
    .unwrap();
    let run = hsm.run(&["check", good, "--pubkey", path_str(&other)]);
    assert_eq!(run.code, 9, "{}", run.stderr);
    assert!(
        run.stdout
            .contains("✗ signature-mismatch: the signature does not verify"),
        "{}",
        run.stdout
    );
    assert_eq!(
        run.stderr,
        "error: Apple would reject this token: 1 problem listed above\n"
    );

    // A token signed right but with times in milliseconds and a lifetime over the limit.
    let t = now();
    let bad = hsm
        .run(&["token", "connect", "--key-id", KEY_ID, "--issuer", ISSUER])
        .ok();
    let (header, _) = bad.trim_end().split_once('.').unwrap();
    let claims = json!({"iss": ISSUER, "iat": t * 1000, "exp": (t + 600) * 1000, "aud": "appstoreconnect-v1", "scope": "GET /v1/apps"});
    let forged = format!(
        "{header}.{}.{}",
        URL_SAFE_NO_PAD.encode(claims.to_string()),
        "A".repeat(86)
    );
    let run = hsm.run(&["check", &forged, "--json"]);
    assert_eq!(run.code, 9);
    let report: Value = serde_json::from_str(&run.stdout).unwrap();
    let codes: Vec<&str> = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["code"].as_str().unwrap())
        .collect();
    assert!(
        codes.contains(&"milliseconds") && codes.contains(&"scope"),
        "{codes:?}"
    );
    let run = hsm.run(&["check", "not-a-token"]);
    assert_eq!(run.code, 9);
    assert!(run.stdout.contains("✗ malformed"), "{}", run.stdout);
}
