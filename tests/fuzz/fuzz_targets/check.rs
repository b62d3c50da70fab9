//! `check`'s JWT decoding and the renewal decision: any text gives a report (or a
//! decision), never a panic, and signature verification of arbitrary input never
//! panics either.
#![no_main]

use std::time::{Duration, UNIX_EPOCH};

use libfuzzer_sys::fuzz_target;
use p8hsm::apple::check;
use p8hsm::apple::oauth::ClientAssertion;
use p8hsm::apple::renew;
use p8hsm::apple::{JwtParams, JwtRequest};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let report = check::check(&text, None, 1_800_000_000);
    let _ = serde_json::to_string(&report.findings);
    let key = p256::SecretKey::from_slice(&[7u8; 32]).unwrap().public_key();
    let _ = check::verify_signature(&text, &key);
    // A kept Apple Business Manager assertion, as `--out` reads it back.
    let request = JwtRequest::new(
        "d136aa66-0c3b-4bd4-9892-c20e8db024ab".parse().unwrap(),
        JwtParams::BusinessManager(ClientAssertion {
            client_id: Some(
                "BUSINESSAPI.8a4e1f0c-2b3d-4c5e-9f60-718293a4b5c6"
                    .parse()
                    .unwrap(),
            ),
        }),
        Some(86_400),
        None,
    )
    .unwrap();
    let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let decision = renew::decide(Some(&text), &request, None, &key, now, Duration::from_secs(60));
    assert!(decision.is_ok(), "a kept file never makes the decision fail");
});
