//! The agent's protocol and everything it runs before the token is touched: any line
//! gets a request or an error with a code and a message, never a panic; a request
//! survives a round trip through its own request line; and signing it (with a software
//! key in the token's place) gives a result or an error, never a panic. Built against
//! the library alone: the protocol and the request type live there.
#![no_main]

use libfuzzer_sys::fuzz_target;
use p256::ecdsa::signature::Signer;
use p256::ecdsa::{Signature, SigningKey};
use p8hsm::apple::cache::JwtCache;
use p8hsm::protocol::{self, ErrorBody, Reply};
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
    let incoming = protocol::parse(data);
    let request = match incoming.request {
        Ok(request) => request,
        Err(e) => {
            let body = ErrorBody {
                code: e.code(),
                message: e.to_string(),
                hint: None,
            };
            let reply = Reply::error(incoming.id, body);
            assert!(!e.to_string().is_empty());
            assert!(reply.line().ends_with(b"\n"));
            return;
        }
    };
    let line = protocol::request_line(&incoming.id, &request).unwrap();
    let reparsed = protocol::parse(&line[..line.len() - 1]);
    let reparsed = reparsed.request.unwrap_or_else(|e| {
        panic!(
            "a parsed request does not parse again ({e}): {}",
            String::from_utf8_lossy(&line)
        )
    });
    assert_eq!(request.to_json().unwrap(), reparsed.to_json().unwrap());
    if request.precheck(std::time::SystemTime::now()).is_err() {
        return;
    }
    let key = SoftKey {
        key_id: request.key_id().clone(),
        key: SigningKey::from_slice(&[7u8; 32]).unwrap(),
    };
    let cache = JwtCache::default();
    match cache.sign(&request, "", &key, None) {
        Ok((signed, _)) => assert!(!signed.line().is_empty()),
        Err(e) => assert!(!e.to_string().is_empty()),
    }
});
