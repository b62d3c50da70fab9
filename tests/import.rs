//! `import`, `keys`, `pubkey` and `delete` against a real SoftHSM token.

use std::process::Command;

use crate::common::{path_str, Hsm};
use p256::pkcs8::{EncodePublicKey, LineEnding};
use sha2::{Digest, Sha256};

fn fingerprint(key: &p256::SecretKey) -> String {
    let spki = key.public_key().to_public_key_der().unwrap();
    format!(
        "sha256:{}",
        base16ct::lower::encode_string(&Sha256::digest(spki.as_bytes()))
    )
}

#[test]
fn import_infers_the_key_id_and_reports_what_it_created() {
    let hsm = Hsm::new();
    let (path, key) = hsm.write_key("AuthKey_2X9R4HXF34.p8");
    let out = hsm.run(&["import", path_str(&path)]).ok();
    // `auto` unwraps under RSA-OAEP where the token offers it (SoftHSM); the Kryoptic
    // build has no RSA, so there it creates.
    let method = if crate::common::kryoptic() {
        "create"
    } else {
        "unwrap"
    };
    assert_eq!(
        out,
        format!(
            "key_id       2X9R4HXF34\nlabel        2X9R4HXF34\nfingerprint  {}\nmethod       {method}\n",
            fingerprint(&key)
        )
    );
    assert_eq!(hsm.object_count(), 2, "a private and a public key object");

    let mut keys: serde_json::Value =
        serde_json::from_str(&hsm.run(&["keys", "--json"]).ok()).unwrap();
    let uri = keys[0].as_object_mut().unwrap().remove("uri").unwrap();
    let uri = uri.as_str().unwrap();
    assert!(uri.starts_with("pkcs11:token=p8hsm;manufacturer="), "{uri}");
    assert!(
        uri.contains(
            ";object=2X9R4HXF34;id=%32%58%39%52%34%48%58%46%33%34;type=private?module-path=/"
        ),
        "{uri}"
    );
    assert_eq!(
        keys,
        serde_json::json!([{
            "id": "2X9R4HXF34",
            "label": "2X9R4HXF34",
            "fingerprint": fingerprint(&key),
            "sensitive": true,
            "extractable": false,
            "has_public_key": true,
            "origin": "imported",
            "kind": null,
            "issuer": null,
            "team_id": null,
            "client_id": null,
            "ads_team_id": null,
        }])
    );
    let table = hsm.run(&["keys"]).ok();
    assert!(
        table.contains("2X9R4HXF34") && table.contains(&fingerprint(&key)),
        "{table}"
    );

    let pem = hsm.run(&["pubkey", "--key-id", "2X9R4HXF34"]).ok();
    assert_eq!(
        pem,
        key.public_key().to_public_key_pem(LineEnding::LF).unwrap()
    );
}

#[test]
fn subscription_key_names_stdin_and_labels() {
    let hsm = Hsm::new();
    let (path, _) = hsm.write_key("SubscriptionKey_ABCDEFGH12.p8");
    assert!(hsm
        .run(&["import", path_str(&path)])
        .ok()
        .starts_with("key_id       ABCDEFGH12\n"));

    let (path, _) = hsm.write_key("whatever.p8");
    let bytes = std::fs::read(&path).unwrap();
    let out = hsm
        .run_with_stdin(
            &[
                "import",
                "-",
                "--key-id",
                "ZZZZZZZZZ1",
                "--label",
                "ops signing key",
            ],
            &bytes,
        )
        .ok();
    assert!(out.contains("label        ops signing key\n"), "{out}");
    let keys = hsm.run(&["keys", "--json"]).ok();
    assert!(keys.contains("\"label\":\"ops signing key\""), "{keys}");
    assert_eq!(hsm.object_count(), 4);
}

#[test]
fn key_id_problems_are_refused_before_the_token_is_touched() {
    let hsm = Hsm::new();
    let (path, _) = hsm.write_key("key.p8");
    hsm.run(&["import", path_str(&path)])
        .fails(3, "error: no key ID: the file name is not AuthKey_<ID>.p8 or SubscriptionKey_<ID>.p8\nhint: pass --key-id ID (App Store Connect shows it next to the key)");
    hsm.run_with_stdin(&["import", "-"], b"x")
        .fails(3, "error: no key ID: the file name is not AuthKey_<ID>.p8 or SubscriptionKey_<ID>.p8\nhint: pass --key-id ID (App Store Connect shows it next to the key)");
    let (path, _) = hsm.write_key("AuthKey_2X9R4HXF34.p8");
    hsm.run(&["import", path_str(&path), "--key-id", "ABCDEFGH12"])
        .fails(
            3,
            "error: --key-id ABCDEFGH12 does not match the key ID 2X9R4HXF34 in the file name\nhint: Apple names the file after the key ID; drop --key-id or check the file",
        );
    hsm.run(&["import", path_str(&path), "--label", ""])
        .fails(3, "error: invalid label \"\": use 1 to 64 bytes without control or bidirectional formatting characters");
    assert_eq!(hsm.object_count(), 0);
}

#[test]
fn duplicate_import_is_refused_and_writes_nothing() {
    let hsm = Hsm::new();
    hsm.import_new_key("2X9R4HXF34");
    assert_eq!(hsm.object_count(), 2);

    let (path, _) = hsm.write_key("AuthKey_2X9R4HXF34.p8");
    hsm.run(&["import", path_str(&path)]).fails(
        7,
        "error: the token already holds an object with key ID 2X9R4HXF34; nothing was written\nhint: `p8hsm keys` lists what is there; to replace a key, delete it first with `p8hsm delete --key-id ID --yes`",
    );
    // A label that looks like another key ID would be taken for that key (a token that
    // sets CKA_ID itself is searched by label).
    let (path, _) = hsm.write_key("AuthKey_ABCDEFGH12.p8");
    hsm.run(&["import", path_str(&path), "--label", "DEVKEY0009"])
        .fails(
            3,
            "error: invalid label \"DEVKEY0009\": a label that looks like another key ID would be taken for that key",
        );
    hsm.run(&["import", path_str(&path), "--label", "prod"])
        .ok();
    let (path, _) = hsm.write_key("AuthKey_ABCDEFGH13.p8");
    hsm.run(&["import", path_str(&path), "--label", "prod"])
        .fails(
            7,
            "error: the token already holds an object labelled \"prod\"; nothing was written\nhint: `p8hsm keys` lists what is there; to replace a key, delete it first with `p8hsm delete --key-id ID --yes`",
        );
    assert_eq!(hsm.object_count(), 4);
}

/// Runs openssl to make a key file of another kind.
fn openssl(args: &[&str]) -> Vec<u8> {
    let output = Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl is installed");
    assert!(
        output.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

#[test]
fn every_bad_key_file_is_refused_with_its_own_error_and_nothing_written() {
    let hsm = Hsm::new();
    let (good_path, _) = hsm.write_key("good.p8");
    let good = std::fs::read_to_string(&good_path).unwrap();
    let ec = |curve: &str| {
        openssl(&[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            &format!("ec_paramgen_curve:{curve}"),
        ])
    };
    let p256_key = ec("P-256");
    let mut corrupt = good.clone();
    corrupt.replace_range(40..41, "*");
    let truncated = format!("{}\n-----END PRIVATE KEY-----\n", &good[..good.len() / 2]);
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("empty", vec![], "error: the key file is empty\nhint: Apple's .p8 files are PEM \"PRIVATE KEY\" EC P-256 keys, as downloaded from App Store Connect"),
        ("text", b"not a key at all".to_vec(), "error: the key file is neither PEM nor DER\nhint: Apple's .p8 files are PEM \"PRIVATE KEY\" EC P-256 keys, as downloaded from App Store Connect"),
        (
            "binary",
            vec![0xde, 0xad, 0xbe, 0xef],
            "error: the key file is neither PEM nor DER\nhint: Apple's .p8 files are PEM \"PRIVATE KEY\" EC P-256 keys, as downloaded from App Store Connect",
        ),
        ("huge", vec![b'A'; 70 * 1024], "error: the key file is over 64 KiB; a .p8 is a few hundred bytes\nhint: Apple's .p8 files are PEM \"PRIVATE KEY\" EC P-256 keys, as downloaded from App Store Connect"),
        (
            "corrupt base64",
            corrupt.into_bytes(),
            "error: the key file's PEM body is corrupt or truncated (invalid base64: DecodeError: Invalid symbol 42, offset 12.)\nhint: Apple's .p8 files are PEM \"PRIVATE KEY\" EC P-256 keys, as downloaded from App Store Connect",
        ),
        ("truncated", truncated.into_bytes(), "error: the key file's PEM body is corrupt or truncated (invalid base64: DecodeError: Invalid padding)\nhint: Apple's .p8 files are PEM \"PRIVATE KEY\" EC P-256 keys, as downloaded from App Store Connect"),
        (
            "two blocks",
            format!("{good}{good}").into_bytes(),
            "error: the key file holds 2 PEM blocks; a .p8 holds exactly one\nhint: keep only the private key block (openssl ecparam -genkey also writes EC PARAMETERS)",
        ),
        (
            "rsa",
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
            "rsa traditional",
            openssl(&["genrsa", "-traditional", "1024"]),
            "error: the key file holds an RSA key, not an EC P-256 key\nhint: Apple's .p8 files are PEM \"PRIVATE KEY\" EC P-256 keys, as downloaded from App Store Connect",
        ),
        (
            "ed25519",
            openssl(&["genpkey", "-algorithm", "ED25519"]),
            "error: the key file holds an Ed25519 key, not an EC P-256 key\nhint: Apple's .p8 files are PEM \"PRIVATE KEY\" EC P-256 keys, as downloaded from App Store Connect",
        ),
        ("p384", ec("P-384"), "error: the key file holds an EC key on P-384, not P-256\nhint: Apple's .p8 files are PEM \"PRIVATE KEY\" EC P-256 keys, as downloaded from App Store Connect"),
        ("p521", ec("P-521"), "error: the key file holds an EC key on P-521, not P-256\nhint: Apple's .p8 files are PEM \"PRIVATE KEY\" EC P-256 keys, as downloaded from App Store Connect"),
        ("secp256k1", ec("secp256k1"), "error: the key file holds an EC key on secp256k1, not P-256\nhint: Apple's .p8 files are PEM \"PRIVATE KEY\" EC P-256 keys, as downloaded from App Store Connect"),
        (
            "encrypted",
            {
                let path = hsm.dir.path().join("plain.pem");
                std::fs::write(&path, &p256_key).unwrap();
                openssl(&[
                    "pkcs8",
                    "-topk8",
                    "-in",
                    path_str(&path),
                    "-passout",
                    "pass:secret",
                ])
            },
            "error: the key file is an encrypted PKCS#8 key\nhint: decrypt it into the import without a file: openssl pkcs8 -in KEY.p8 | p8hsm import --key-id ID -",
        ),
        (
            "certificate",
            b"-----BEGIN CERTIFICATE-----\nMAA=\n-----END CERTIFICATE-----\n".to_vec(),
            "error: the key file holds a \"CERTIFICATE\" PEM block, not a private key\nhint: Apple's .p8 files are PEM \"PRIVATE KEY\" EC P-256 keys, as downloaded from App Store Connect",
        ),
    ];
    for (name, bytes, message) in cases {
        let path = hsm.dir.path().join(format!("AuthKey_{}.p8", "ABCDEFGH12"));
        std::fs::write(&path, &bytes).unwrap();
        eprintln!("{name}");
        hsm.run(&["import", path_str(&path)]).fails(3, message);
    }
    assert_eq!(
        hsm.object_count(),
        0,
        "no bad key file left anything on the token"
    );

    // And the openssl-made P-256 keys are accepted: PKCS#8 and SEC1 "EC PRIVATE KEY".
    let path = hsm.dir.path().join("AuthKey_ABCDEFGH12.p8");
    std::fs::write(&path, &p256_key).unwrap();
    hsm.run(&["import", path_str(&path)]).ok();
    let (other, _) = hsm.write_key("other.p8");
    let sec1 = openssl(&["ec", "-in", path_str(&other)]);
    assert!(String::from_utf8_lossy(&sec1).contains("BEGIN EC PRIVATE KEY"));
    hsm.run_with_stdin(&["import", "-", "--key-id", "SEC1KEY001"], &sec1)
        .ok();
    assert_eq!(hsm.object_count(), 4);
}

#[test]
fn delete_needs_yes_then_destroys_both_objects() {
    let hsm = Hsm::new();
    hsm.import_new_key("2X9R4HXF34");
    hsm.import_new_key("ABCDEFGH12");
    hsm.run(&["delete", "--key-id", "2X9R4HXF34"])
        .fails(2, "error: delete destroys key 2X9R4HXF34 for good (Apple keeps no copy); add --yes to confirm");
    assert_eq!(hsm.object_count(), 4);
    let run = hsm.run(&["delete", "--key-id", "2X9R4HXF34", "--yes"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.stdout, "");
    assert_eq!(hsm.object_count(), 2);
    let keys = hsm.run(&["keys", "--json"]).ok();
    assert!(
        !keys.contains("2X9R4HXF34") && keys.contains("ABCDEFGH12"),
        "{keys}"
    );
    hsm.run(&["delete", "--key-id", "2X9R4HXF34", "--yes"])
        .fails(6, "error: no key with key ID 2X9R4HXF34 on the token\nhint: `p8hsm keys` lists the keys; `p8hsm import AuthKey_<ID>.p8` adds one");
}

#[cfg(feature = "fault-injection")]
#[test]
fn an_import_failing_midway_destroys_what_it_created() {
    let hsm = Hsm::new();
    hsm.import_new_key("ABCDEFGH12");
    let (path, _) = hsm.write_key("AuthKey_2X9R4HXF34.p8");
    for step in ["private-key", "public-key"] {
        let run = hsm
            .command(&["import", path_str(&path)])
            .env("P8HSM_FAULT_AFTER", step)
            .output()
            .unwrap();
        assert_eq!(
            run.status.code(),
            Some(1),
            "{}",
            String::from_utf8_lossy(&run.stderr)
        );
        assert!(
            String::from_utf8_lossy(&run.stderr).contains(&format!("fault injected after {step}"))
        );
        assert_eq!(
            hsm.object_count(),
            2,
            "after a fault at {step}, only the earlier key remains"
        );
    }
    hsm.run(&["import", path_str(&path)]).ok();
    assert_eq!(hsm.object_count(), 4);
}

#[test]
fn import_by_unwrap_gives_the_same_proven_key() {
    let hsm = Hsm::new();
    let (path, key) = hsm.write_key("AuthKey_UNWRAP0001.p8");
    let out = hsm
        .run(&["import", path_str(&path), "--method", "unwrap"])
        .ok();
    assert!(out.ends_with("method       unwrap\n"), "{out}");
    assert!(out.contains(&fingerprint(&key)), "{out}");
    assert_eq!(
        hsm.object_count(),
        2,
        "the temporary wrapping keys are gone"
    );
    let keys: serde_json::Value = serde_json::from_str(&hsm.run(&["keys", "--json"]).ok()).unwrap();
    assert_eq!(
        (keys[0]["sensitive"].clone(), keys[0]["extractable"].clone()),
        (true.into(), false.into())
    );
    let token = hsm
        .run(&[
            "token",
            "apns",
            "--key-id",
            "UNWRAP0001",
            "--team-id",
            "A1B2C3D4E5",
        ])
        .ok();
    crate::common::verify_jwt(token.trim_end(), &key);
    let (path, _) = hsm.write_key("AuthKey_CREATE0001.p8");
    let out = hsm
        .run(&["import", path_str(&path), "--method", "create"])
        .ok();
    assert!(out.ends_with("method       create\n"), "{out}");
    let run = hsm.run(&["import", path_str(&path), "--method", "copy"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
}

#[cfg(feature = "fault-injection")]
#[test]
fn each_way_in_falls_back_to_the_next_when_the_token_refuses_it() {
    let hsm = Hsm::new();
    let refusing = |name: &str, method: &str, refuse: &str| {
        let (path, key) = hsm.write_key(&format!("AuthKey_{name}.p8"));
        let out = hsm
            .command(&["import", path_str(&path), "--method", method])
            .env("P8HSM_FAULT_REFUSE", refuse)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        (out.status.code(), stdout, stderr, key)
    };
    let signs_with = |key_id: &str, key: &p256::SecretKey| {
        let token = hsm
            .run(&[
                "token",
                "apns",
                "--key-id",
                key_id,
                "--team-id",
                "A1B2C3D4E5",
            ])
            .ok();
        crate::common::verify_jwt(token.trim_end(), key);
    };

    // Only the way asked for, and its refusal reported: the token cannot import this
    // way (exit 5).
    let (code, _, stderr, _) = refusing("CREATE0001", "create", "create");
    assert_eq!(code, Some(5), "{stderr}");
    assert!(
        stderr.contains("refused every way") && !stderr.contains("C_UnwrapKey"),
        "{stderr}"
    );
    assert!(
        stderr.contains("C_CreateObject") && stderr.contains("CKR_TEMPLATE_INCONSISTENT"),
        "{stderr}"
    );
    assert_eq!(hsm.object_count(), 0);

    // auto: when the RSA-OAEP unwrap fails (the hook answers CKR_FUNCTION_FAILED: any
    // answer moves on from it) or is not offered, C_CreateObject.
    let (code, stdout, stderr, key) = refusing("CREATE0002", "auto", "rsa-oaep");
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.ends_with("method       create\n"), "{stdout}");
    signs_with("CREATE0002", &key);

    // auto: when both are refused, the AES-CBC-PAD unwrap where the token offers it
    // (Kryoptic), else every way's refusal, with nothing written (SoftHSM).
    let (code, stdout, stderr, key) = refusing("UNWRAP0001", "auto", "rsa-oaep,create");
    if crate::common::kryoptic() || crate::common::nss() {
        assert_eq!(code, Some(0), "{stderr}");
        assert!(stdout.ends_with("method       unwrap\n"), "{stdout}");
        signs_with("UNWRAP0001", &key);
        assert_eq!(hsm.object_count(), 4);
    } else {
        assert_eq!(code, Some(5), "{stderr}");
        let create = stderr.find("C_CreateObject) failed: CKR_TEMPLATE_INCONSISTENT");
        let oaep = stderr.find("CKM_RSA_PKCS_OAEP) failed: CKR_FUNCTION_FAILED");
        assert!(
            oaep.is_some() && create.is_some() && oaep < create,
            "{stderr}"
        );
        assert_eq!(hsm.object_count(), 2);
    }

    // unwrap with every unwrapping refused: each way's error (SoftHSM has only the
    // RSA-OAEP one, Kryoptic only the AES-CBC-PAD one, NSS both), nothing written.
    let before = hsm.object_count();
    let (code, _, stderr, _) = refusing("UNWRAP0002", "unwrap", "rsa-oaep,aes-cbc-pad");
    assert_eq!(code, Some(5), "{stderr}");
    let oaep = "C_UnwrapKey with CKM_RSA_PKCS_OAEP) failed: CKR_FUNCTION_FAILED";
    let cbc = "C_UnwrapKey with CKM_AES_CBC_PAD) failed: CKR_TEMPLATE_INCONSISTENT";
    let expected: &[&str] = if crate::common::kryoptic() {
        &[cbc]
    } else if crate::common::nss() {
        &[oaep, cbc]
    } else {
        &[oaep]
    };
    for way in expected {
        assert!(stderr.contains(way), "{stderr}");
    }
    assert_eq!(
        stderr.matches("C_UnwrapKey").count(),
        expected.len(),
        "{stderr}"
    );
    assert_eq!(hsm.object_count(), before);

    // A token that takes the key but cannot sign with it: the import's check fails
    // (exit 8), and what it made goes.
    let before = hsm.object_count();
    let (code, _, stderr, _) = refusing("NOSIGN0001", "auto", "sign");
    assert_eq!(code, Some(8), "{stderr}");
    assert!(
        stderr.contains("the token cannot sign with the key it took (C_Sign failed: CKR_KEY_FUNCTION_NOT_PERMITTED)"),
        "{stderr}"
    );
    assert_eq!(hsm.object_count(), before);
}

#[test]
fn vendor_profiles_shape_the_import() {
    let hsm = Hsm::new();
    // The YubiHSM 2 profile on SoftHSM: a 2-byte CKA_ID, the key ID in the label, no
    // public object; the key is still found by its Apple key ID and signs.
    let (path, key) = hsm.write_key("AuthKey_YUBI000001.p8");
    hsm.run(&["--profile", "yubihsm", "import", path_str(&path)])
        .ok();
    assert_eq!(hsm.object_count(), 1);
    let keys: serde_json::Value = serde_json::from_str(&hsm.run(&["keys", "--json"]).ok()).unwrap();
    assert_eq!(keys[0]["label"], "YUBI000001");
    assert_eq!(keys[0]["has_public_key"], false);
    assert_eq!(
        keys[0]["id"].as_str().unwrap().len(),
        4,
        "2 bytes in hex: {}",
        keys[0]["id"]
    );
    let token = hsm
        .run(&[
            "token",
            "apns",
            "--key-id",
            "YUBI000001",
            "--team-id",
            "A1B2C3D4E5",
        ])
        .ok();
    crate::common::verify_jwt(token.trim_end(), &key);
    hsm.run(&["pubkey", "--key-id", "YUBI000001"])
        .fails(6, "error: key YUBI000001 has no public key object on the token\nhint: this token keeps no public key object (a YubiHSM 2's are virtual); read it with the vendor's tool, e.g. yubihsm-shell -a get-public-key");
    let (path, _) = hsm.write_key("AuthKey_YUBI000002.p8");
    hsm.run(&[
        "--profile",
        "yubihsm",
        "import",
        path_str(&path),
        "--kind",
        "developer",
        "--team-id",
        "A1B2C3D4E5",
    ])
    .fails(
        5,
        "error: this token cannot import the key: YubiHSM 2 keeps no data objects, where p8hsm records a key's kind: import without recording one and give the kind's identities when signing\nhint: `p8hsm modules` lists the tokens p8hsm finds",
    );
    hsm.run(&["--profile", "kmsp11", "import", path_str(&path)])
        .fails(5, "error: Google Cloud KMS (kmsp11) cannot import the key: its PKCS#11 library cannot import keys; import the .p8 with Cloud KMS import jobs, then sign with p8hsm\nhint: `p8hsm modules` lists the tokens p8hsm finds");
    let run = hsm.run(&["--profile", "luna", "keys"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert_eq!(hsm.object_count(), 1);
}
