//! `check`'s JWT decoding: any text gives a report, never a panic, and signature
//! verification of arbitrary input never panics either.
#![no_main]

use libfuzzer_sys::fuzz_target;
use p8hsm::apple::check;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let report = check::check(&text, None, 1_800_000_000);
    let _ = serde_json::to_string(&report.findings);
    let key = p256::SecretKey::from_slice(&[7u8; 32]).unwrap().public_key();
    let _ = check::verify_signature(&text, &key);
});
