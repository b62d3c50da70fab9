//! `token connect` and `token server`: tokens signed by the SoftHSM token, verified
//! with the .p8's public key; exact headers, claim sets and lifetime rules.

use crate::common::{now, succeeded, verify_jwt, Hsm, Run, ISSUER};
use serde_json::json;

const KEY_ID: &str = "2X9R4HXF34";

fn keys_of(value: &serde_json::Value) -> Vec<&str> {
    let mut keys: Vec<&str> = value
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort();
    keys
}

/// iat is now - 60 and exp now + ttl, within the seconds the test itself took.
fn assert_times(claims: &serde_json::Value, before: i64, after: i64, ttl: i64, skew: i64) {
    let iat = claims["iat"].as_i64().unwrap();
    let exp = claims["exp"].as_i64().unwrap();
    assert!(
        (before - skew..=after - skew).contains(&iat),
        "iat {iat} not now - {skew}"
    );
    assert_eq!(exp - iat, ttl + skew, "exp - iat");
}

#[test]
fn connect_team_token_verifies_and_has_exactly_apples_claims() {
    let hsm = Hsm::new();
    let key = hsm.import_new_key(KEY_ID);
    let before = now();
    let out = hsm
        .run(&[
            "token",
            "connect",
            "--key-id",
            KEY_ID,
            "--issuer",
            ISSUER,
            "--scope",
            "GET /v1/apps",
            "--scope",
            "GET /v1/builds?limit=2",
        ])
        .ok();
    let after = now();
    assert!(
        out.ends_with('\n') && out.lines().count() == 1,
        "stdout is the token and a newline: {out:?}"
    );
    let (header, claims) = verify_jwt(out.trim_end(), &key);
    assert_eq!(header, json!({"alg": "ES256", "kid": KEY_ID, "typ": "JWT"}));
    assert_eq!(keys_of(&claims), ["aud", "exp", "iat", "iss", "scope"]);
    assert_eq!(claims["iss"], ISSUER);
    assert_eq!(claims["aud"], "appstoreconnect-v1");
    assert_eq!(
        claims["scope"],
        json!(["GET /v1/apps", "GET /v1/builds?limit=2"])
    );
    assert_times(&claims, before, after, 600, 60);
}

#[test]
fn connect_individual_token_has_sub_user_and_no_iss() {
    let hsm = Hsm::new();
    let key = hsm.import_new_key(KEY_ID);
    let out = hsm
        .run(&["token", "connect", "--key-id", KEY_ID, "--individual"])
        .ok();
    let (_, claims) = verify_jwt(out.trim_end(), &key);
    assert_eq!(keys_of(&claims), ["aud", "exp", "iat", "sub"]);
    assert_eq!(claims["sub"], "user");

    // A team token needs an issuer: given, from P8HSM_ISSUER, or recorded with the key.
    hsm.run(&["token", "connect", "--key-id", KEY_ID])
        .fails(3, "error: issuer ID is required: the token names it, and none is recorded with the key\nhint: give --issuer or set P8HSM_ISSUER (a key imported or assigned with its --kind and --issuer records it)");
    let run = hsm.run(&[
        "token",
        "connect",
        "--key-id",
        KEY_ID,
        "--individual",
        "--issuer",
        ISSUER,
    ]);
    assert_eq!(run.code, 2, "not both: {}", run.stderr);
}

#[test]
fn server_token_has_bid_and_json_output_describes_it() {
    let hsm = Hsm::new();
    let key = hsm.import_new_key(KEY_ID);
    let before = now();
    let out = hsm
        .run(&[
            "token",
            "server",
            "--key-id",
            KEY_ID,
            "--issuer",
            ISSUER,
            "--bundle-id",
            "com.example.app",
            "--ttl",
            "3000",
            "--json",
        ])
        .ok();
    let after = now();
    let result: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        keys_of(&result),
        ["expires_at", "issued_at", "key_id", "token"]
    );
    assert_eq!(result["key_id"], KEY_ID);
    let (header, claims) = verify_jwt(result["token"].as_str().unwrap(), &key);
    assert_eq!(header, json!({"alg": "ES256", "kid": KEY_ID, "typ": "JWT"}));
    assert_eq!(keys_of(&claims), ["aud", "bid", "exp", "iat", "iss"]);
    assert_eq!(claims["bid"], "com.example.app");
    assert_eq!(claims["aud"], "appstoreconnect-v1");
    assert_times(&claims, before, after, 3000, 60);
    assert_eq!(result["issued_at"], claims["iat"]);
    assert_eq!(result["expires_at"], claims["exp"]);
}

#[test]
fn lifetimes_over_the_limit_are_errors_never_silently_shortened() {
    let hsm = Hsm::new();
    let key = hsm.import_new_key(KEY_ID);
    let connect = |extra: &[&str]| {
        let mut args = vec!["token", "connect", "--key-id", KEY_ID, "--issuer", ISSUER];
        args.extend_from_slice(extra);
        hsm.run(&args)
    };
    let (_, claims) = verify_jwt(connect(&["--ttl", "1140"]).ok().trim_end(), &key);
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        1200
    );
    let (_, claims) = verify_jwt(
        connect(&["--ttl", "1200", "--skew", "0"]).ok().trim_end(),
        &key,
    );
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        1200
    );

    let run = connect(&["--ttl", "1200"]);
    run.fails(
        3,
        "error: App Store Connect API tokens may live at most 1200 s from iat to exp, but ttl 1200 with skew 60 gives 1260\nhint: use --ttl 1140 or less with --skew 60; only tokens whose --scope entries are all GETs on resources Apple allows may live longer",
    );
    assert!(
        run.stderr.contains("hint: use --ttl 1140 or less"),
        "{}",
        run.stderr
    );
    connect(&["--ttl", "0"]).fails(
        3,
        "error: ttl must be at least 1 second\nhint: give --ttl 1 or more, or leave it out",
    );
    hsm.run(&[
        "token",
        "server",
        "--key-id",
        KEY_ID,
        "--issuer",
        ISSUER,
        "--bundle-id",
        "a.b",
        "--ttl",
        "3541",
    ])
    .fails(3, "error: App Store Server API tokens may live at most 3600 s from iat to exp, but ttl 3541 with skew 60 gives 3601\nhint: use --ttl 3540 or less with --skew 60, or lower --skew");
}

#[test]
fn a_bad_lifetime_is_refused_before_any_pin_is_read() {
    let hsm = Hsm::new();
    hsm.import_new_key(KEY_ID);
    let run = hsm
        .command(&[
            "token", "connect", "--key-id", KEY_ID, "--issuer", ISSUER, "--ttl", "99999",
        ])
        .env("P8HSM_PIN_SOURCE", "env:P8HSM_UNSET_PIN_VARIABLE")
        .output()
        .unwrap();
    Run::from(run).fails(
        3,
        "error: App Store Connect API tokens may live at most 1200 s from iat to exp, but ttl \
         99999 with skew 60 gives 100059\nhint: use --ttl 1140 or less with --skew 60; only \
         tokens whose --scope entries are all GETs on resources Apple allows may live longer",
    );
}

#[test]
fn issuer_comes_from_the_environment() {
    let hsm = Hsm::new();
    let key = hsm.import_new_key(KEY_ID);
    let out = hsm
        .command(&[
            "token",
            "server",
            "--key-id",
            KEY_ID,
            "--bundle-id",
            "com.example.app",
        ])
        .env("P8HSM_ISSUER", ISSUER)
        .output()
        .unwrap();
    succeeded(&out);
    let (_, claims) = verify_jwt(String::from_utf8(out.stdout).unwrap().trim_end(), &key);
    assert_eq!(claims["iss"], ISSUER);

    // What a request refuses is in the table of refusals (`common/examples.rs`).
}

#[test]
fn a_closed_stdout_pipe_is_not_an_error() {
    let hsm = Hsm::new();
    hsm.import_new_key(KEY_ID);
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let status = hsm
        .command(&["token", "connect", "--key-id", KEY_ID, "--individual"])
        .stdout(writer)
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(0));
}
