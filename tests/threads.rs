//! The library signer is `Send + Sync`: threads share one `Token` and sign in parallel
//! through its session pool, and every token verifies. One test only: C_Initialize reads
//! SOFTHSM2_CONF once per process.

mod common;

use std::time::SystemTime;

use common::{verify_jwt, Hsm};
use p8hsm::apple::cache::TokenCache;
use p8hsm::apple::connect::{ConnectToken, Issuer};
use p8hsm::apple::{AppleToken, Lifetime};
use p8hsm::pkcs11::TokenSelector;
use p8hsm::{HsmKey, PinSource, Token};

fn assert_send_sync<T: Send + Sync>() {}

#[test]
fn threads_share_one_token_and_its_session_pool() {
    assert_send_sync::<Token>();
    assert_send_sync::<HsmKey<'static>>();
    assert_send_sync::<TokenCache>();

    let hsm = Hsm::new();
    let key = hsm.import_new_key("2X9R4HXF34");
    for (name, value) in &hsm.env {
        std::env::set_var(name, value);
    }
    let pin: PinSource = hsm.var("P8HSM_PIN_SOURCE").parse().unwrap();
    let token = Token::open(
        hsm.var("P8HSM_MODULE").as_ref(),
        &TokenSelector::label("p8hsm"),
        &pin,
    )
    .unwrap()
    .with_max_sessions(3);
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
                            ConnectToken {
                                issuer: Issuer::Individual,
                                scope: vec![format!("GET /v1/apps/{i}-{j}").parse().unwrap()],
                                lifetime: Lifetime::default(),
                            }
                            .sign(signer, SystemTime::now())
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
    let cache = TokenCache::default();
    let request = ConnectToken {
        issuer: Issuer::Individual,
        scope: vec![],
        lifetime: Lifetime::default(),
    };
    let cached: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|_| s.spawn(|| cache.get(&request, &signer).unwrap().token))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(cached.iter().all(|t| t == &cached[0]));
    verify_jwt(&cached[0], &key);
}
