//! Choosing the token and key with an RFC 7512 URI (`--key`, `P8HSM_KEY`), the one
//! precedence (options and environment over the URI, the URI over defaults), and
//! `p8hsm modules`.

use crate::common::{succeeded, verify_jwt, Hsm};

/// The URI `keys` prints for the only key on the token.
/// A path attribute of a PKCS#11 URI, percent-decoded.
fn attribute(uri: &str, name: &str) -> String {
    let value = uri.split(&format!("{name}=")).nth(1).unwrap();
    let value = value.split([';', '?']).next().unwrap().as_bytes();
    let mut decoded = Vec::new();
    let mut i = 0;
    while i < value.len() {
        if value[i] == b'%' {
            let hex = std::str::from_utf8(&value[i + 1..i + 3]).unwrap();
            decoded.push(u8::from_str_radix(hex, 16).unwrap());
            i += 3;
        } else {
            decoded.push(value[i]);
            i += 1;
        }
    }
    String::from_utf8(decoded).unwrap()
}

fn key_uri(hsm: &Hsm) -> String {
    let keys: serde_json::Value = serde_json::from_str(&hsm.run(&["keys", "--json"]).ok()).unwrap();
    keys[0]["uri"].as_str().unwrap().to_owned()
}

#[test]
fn a_printed_uri_chooses_module_token_and_key() {
    let hsm = Hsm::new();
    let key = hsm.import_new_key("2X9R4HXF34");
    let uri = key_uri(&hsm);
    assert!(!uri.contains("pin"), "{uri}");
    // Only the URI says which module and token: their options are unset.
    let run = |uri: &str, extra: &[(&str, &str)]| {
        let mut command = hsm.command(&["--key", uri, "token", "apns", "--team-id", "A1B2C3D4E5"]);
        command.env_remove("P8HSM_MODULE").env_remove("P8HSM_TOKEN");
        for (k, v) in extra {
            command.env(k, v);
        }
        command.output().unwrap()
    };
    let out = run(&uri, &[]);
    succeeded(&out);
    verify_jwt(String::from_utf8(out.stdout).unwrap().trim_end(), &key);

    // P8HSM_KEY works as --key does; a pin-source in the URI is used when no option gives one.
    let pin_file = hsm
        .var("P8HSM_PIN_SOURCE")
        .strip_prefix("file:")
        .unwrap()
        .to_owned();
    let with_pin_source = format!("{uri}&pin-source=file:{pin_file}");
    let out = hsm
        .command(&["token", "apns", "--team-id", "A1B2C3D4E5"])
        .env_remove("P8HSM_MODULE")
        .env_remove("P8HSM_TOKEN")
        .env_remove("P8HSM_PIN_SOURCE")
        .env("P8HSM_KEY", &with_pin_source)
        .output()
        .unwrap();
    succeeded(&out);

    // pin-value is accepted with a warning, and the PIN is never echoed.
    let pin = hsm.pin();
    let with_pin_value = format!("{uri}&pin-value={pin}");
    let out = hsm
        .command(&["--key", &with_pin_value, "pubkey"])
        .env_remove("P8HSM_PIN_SOURCE")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.starts_with("warning: the PKCS#11 URI carries pin-value"),
        "{stderr}"
    );
    assert!(!stderr.contains(&pin) && !String::from_utf8_lossy(&out.stdout).contains(&pin));
}

#[test]
fn options_win_over_the_uri_and_bad_uris_are_named() {
    let hsm = Hsm::new();
    hsm.import_new_key("2X9R4HXF34");
    let uri = key_uri(&hsm);
    let (manufacturer, model, serial) = (
        attribute(&uri, "manufacturer"),
        attribute(&uri, "model"),
        attribute(&uri, "serial"),
    );
    hsm.run(&["--key", &uri, "--token", "elsewhere", "pubkey"])
        .fails(5, &format!("error: no token labelled \"elsewhere\", with manufacturer \"{manufacturer}\", with model \"{model}\", with serial \"{serial}\" (tokens present: p8hsm)\nhint: choose the token with --token LABEL, P8HSM_TOKEN or a --key URI (`p8hsm modules` lists them); for SoftHSM, `p8hsm softhsm init` makes one"));
    hsm.run(&["--key", &uri, "pubkey", "--key-id", "ABCDEFGH12"])
        .fails(6, "error: no key with key ID ABCDEFGH12 on the token\nhint: `p8hsm keys` lists the keys; `p8hsm import AuthKey_<ID>.p8` adds one");
    hsm.run(&["--key", "pkcs11:token=p8hsm;serial=nope", "keys"])
        .fails(5, "error: no token labelled \"p8hsm\", with serial \"nope\" (tokens present: p8hsm)\nhint: choose the token with --token LABEL, P8HSM_TOKEN or a --key URI (`p8hsm modules` lists them); for SoftHSM, `p8hsm softhsm init` makes one");
    hsm.run(&["--key", "pkcs11:token=p8hsm;colour=blue", "keys"])
        .fails(3, "error: invalid PKCS#11 URI: unknown path attribute \"colour\"\nhint: see RFC 7512; `p8hsm keys` and `p8hsm modules` print URIs to start from");
    let run = hsm.run(&[
        "--key",
        "pkcs11:token=p8hsm;?pin-value=123456&bad=1",
        "keys",
    ]);
    // Finding 9: no query text is echoed (it may be a PIN a stray & cut in two).
    run.fails(3, "error: invalid PKCS#11 URI: unknown query attribute (the query takes pin-source, pin-value, module-name and module-path; a value holding & must percent-encode it as %26)\nhint: see RFC 7512; `p8hsm keys` and `p8hsm modules` print URIs to start from");
    assert!(
        !run.stderr.contains("123456") && !run.stderr.contains("bad"),
        "{}",
        run.stderr
    );
    for uri in [
        "pkcs11:token=p8hsm?pin-value=Se&cretTail99",
        "pkcs11:token=p8hsm?MyS3cretPIN",
    ] {
        let run = hsm.run(&["--key", uri, "keys"]);
        run.fails(3, "error: invalid PKCS#11 URI: a query attribute has no value (name=value; a value holding & or = must percent-encode it as %26 or %3D)\nhint: see RFC 7512; `p8hsm keys` and `p8hsm modules` print URIs to start from");
        assert!(
            !run.stderr.contains("cretTail99") && !run.stderr.contains("S3cret"),
            "{}",
            run.stderr
        );
    }
    hsm.run(&["--key", "pkcs11:object=%G1", "keys"])
        .fails(3, "error: invalid PKCS#11 URI: object has a malformed percent-encoding\nhint: see RFC 7512; `p8hsm keys` and `p8hsm modules` print URIs to start from");
    hsm.run(&["--key", "pkcs11:token=p8hsm", "pubkey"])
        .fails(3, "error: key ID is required: it names the key\nhint: give --key-id, or a --key URI whose id or object is the Apple key ID");
}

#[test]
fn modules_lists_what_p8hsm_finds_and_their_tokens() {
    let hsm = Hsm::new();
    let out = hsm.run(&["modules"]).ok();
    let first = out.lines().next().unwrap();
    assert!(
        first.starts_with(&format!("* {}  (--module)", hsm.var("P8HSM_MODULE"))),
        "{out}"
    );
    assert!(out.contains("\n    token \"p8hsm\"  "), "{out}");
    let json: serde_json::Value =
        serde_json::from_str(&hsm.run(&["modules", "--json"]).ok()).unwrap();
    assert_eq!(json[0]["selected"], true);
    assert_eq!(json[0]["tokens"][0]["label"], "p8hsm");
    // Only the module p8hsm would use is loaded (SoftHSM's install path is listed after
    // it); --all loads the others.
    let rows = json.as_array().unwrap();
    assert!(rows.len() > 1, "{json}");
    for row in &rows[1..] {
        assert_eq!(
            row["note"], "not loaded (`p8hsm modules --all` loads it)",
            "{row}"
        );
        assert_eq!(row["tokens"], serde_json::json!([]), "{row}");
    }
    let all: serde_json::Value =
        serde_json::from_str(&hsm.run(&["modules", "--all", "--json"]).ok()).unwrap();
    let all = all.as_array().unwrap();
    assert!(
        all.iter()
            .all(|row| !row["note"].to_string().contains("--all")),
        "{all:?}"
    );
    assert!(
        all[1..]
            .iter()
            .any(|row| row["source"] == "SoftHSM" && row["note"].is_null()),
        "{all:?}"
    );
    let token_uri = json[0]["tokens"][0]["uri"].as_str().unwrap();
    assert!(token_uri.starts_with("pkcs11:token=p8hsm;"), "{token_uri}");
    // The printed token URI chooses the token.
    let out = hsm
        .command(&["--key", token_uri, "keys", "--json"])
        .env_remove("P8HSM_MODULE")
        .env_remove("P8HSM_TOKEN")
        .output()
        .unwrap();
    succeeded(&out);
}
