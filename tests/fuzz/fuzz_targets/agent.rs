//! The agent's request parser and everything it runs before the token is touched: any
//! line gets a request or the `bad_request` reply, never a panic; a request survives a
//! round trip through its own serialization; and signing it (with a software key in the
//! token's place) gives a result or an error, never a panic.
//!
//! cargo-fuzz links only libraries, so this target compiles the binary's `cli` and
//! `agent` modules from `src/` itself.
#![no_main]
#![allow(dead_code, unused_imports)]

#[path = "../../../src/agent/mod.rs"]
mod agent;
#[path = "../../../src/cli/mod.rs"]
mod cli;

use libfuzzer_sys::fuzz_target;
use p256::ecdsa::signature::Signer;
use p256::ecdsa::{Signature, SigningKey};
use p8hsm::{Error, Es256Signer, KeyId};

/// A software key standing in for the token.
struct SoftKey {
    key_id: KeyId,
    key: SigningKey,
}

impl Es256Signer for SoftKey {
    fn key_id(&self) -> &KeyId {
        &self.key_id
    }

    fn sign_es256(&self, message: &[u8]) -> Result<Signature, Error> {
        Ok(self.key.sign(message))
    }
}

fuzz_target!(|data: &[u8]| {
    let request = match agent::protocol::parse(data) {
        Ok(request) => request,
        Err(reply) => {
            serde_json::to_string(&reply).unwrap();
            return;
        }
    };
    let again = serde_json::to_vec(&request).unwrap();
    let reparsed = agent::protocol::parse(&again).unwrap_or_else(|_| {
        panic!("a parsed request does not parse again: {}", String::from_utf8_lossy(&again))
    });
    assert_eq!(
        serde_json::to_value(&request).unwrap(),
        serde_json::to_value(&reparsed).unwrap()
    );
    let call = request.call;
    let _ = call.name();
    let Some(key_id) = call.key_id().cloned() else {
        return;
    };
    if call.precheck(&key_id).is_err() {
        return;
    }
    let key = SoftKey {
        key_id,
        key: SigningKey::from_slice(&[7u8; 32]).unwrap(),
    };
    match call.sign(&key, None, None) {
        Ok((signed, _)) => assert!(!signed.line().is_empty()),
        Err(e) => assert!(!e.to_string().is_empty()),
    }
});
