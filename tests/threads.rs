//! The library signer is `Send + Sync`: threads share one `Token` and sign in parallel
//! through its session pool, and every token verifies. One test only: C_Initialize reads
//! SOFTHSM2_CONF once per process.

use std::time::SystemTime;

use crate::common::{connect_request, open_token, verify_jwt, Hsm};
use p8hsm::apple::cache::JwtCache;
use p8hsm::{HsmKey, Service, Token};

fn assert_send_sync<T: Send + Sync>() {}

#[test]
fn threads_share_one_token_and_its_session_pool() {
    assert_send_sync::<Token>();
    assert_send_sync::<HsmKey>();
    assert_send_sync::<JwtCache>();
    assert_send_sync::<Service>();

    let hsm = Hsm::new();
    let key = hsm.import_new_key("2X9R4HXF34");
    for (name, value) in &hsm.env {
        std::env::set_var(name, value);
    }
    let token = open_token(|name| hsm.var(name).to_owned()).with_max_sessions(3);
    assert_eq!(token.max_sessions(), 3);
    let signer = token.key(&"2X9R4HXF34".parse().unwrap()).unwrap();

    // Eight threads through a pool of three sessions: each waits its turn.
    let tokens: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|i| {
                let signer = &signer;
                s.spawn(move || {
                    (0..40)
                        .map(|j| {
                            connect_request(Some(format!("GET /v1/apps/{i}-{j}")))
                                .sign(signer, None, SystemTime::now())
                                .unwrap()
                                .token
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    assert_eq!(tokens.len(), 320);
    for token in &tokens {
        verify_jwt(token, &key);
    }

    // The cache in front of the token: one signature for the same request.
    let cache = JwtCache::default();
    let request = connect_request(None);
    let cached: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|_| {
                s.spawn(|| {
                    cache
                        .get(&request, "", |now| request.sign(&signer, None, now))
                        .unwrap()
                        .0
                        .token
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(cached.iter().all(|t| t == &cached[0]));
    verify_jwt(&cached[0], &key);
}
