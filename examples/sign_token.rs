//! Signing Apple API tokens from a Rust service with a key kept in a PKCS#11 token.
//!
//! ```sh
//! eval "$(scripts/softhsm-init.sh)"          # P8HSM_MODULE, P8HSM_TOKEN, P8HSM_PIN_SOURCE
//! cargo run --example sign_token -- DEMOKEY001 57246542-96fe-1a63-e053-0824d011072a
//! ```
//!
//! Opens the token once (one login), then signs an App Store Connect token and an App
//! Store Server API token with the same key, and checks both signatures against the
//! public key on the token.

use std::process::ExitCode;
use std::time::SystemTime;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use p256::ecdsa::signature::Verifier;
use p256::ecdsa::{Signature, VerifyingKey};
use p8hsm::apple::connect::{ConnectToken, Issuer};
use p8hsm::apple::server::{ServerApi, ServerToken};
use p8hsm::apple::{AppleToken, Lifetime};
use p8hsm::pkcs11::TokenSelector;
use p8hsm::{pkcs11, Error, IssuerId, KeyId, PinSource, Token};

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), Error> {
    let mut args = std::env::args().skip(1);
    let (Some(key_id), Some(issuer)) = (args.next(), args.next()) else {
        return Err(Error::Internal("usage: sign_token KEY_ID ISSUER_ID".into()));
    };
    let key_id: KeyId = key_id.parse()?;
    let issuer: IssuerId = issuer.parse()?;

    // The same configuration the CLI reads.
    let module = pkcs11::locate_module(
        std::env::var_os("P8HSM_MODULE")
            .as_deref()
            .map(AsRef::as_ref),
        None,
    )?;
    let label = std::env::var("P8HSM_TOKEN").unwrap_or_else(|_| "p8hsm".into());
    let pin: PinSource = std::env::var("P8HSM_PIN_SOURCE")
        .unwrap_or_else(|_| "prompt".into())
        .parse()?;

    let token = Token::open(&module, &TokenSelector::label(&label), &pin)?;
    let key = token.key(&key_id)?;
    let public = VerifyingKey::from(token.public_key(&key_id)?);

    let connect = ConnectToken {
        issuer: Issuer::Team(issuer.clone()),
        scope: vec!["GET /v1/apps".parse()?],
        lifetime: Lifetime::default(),
    }
    .sign(&key, SystemTime::now())?;
    let server = ServerToken {
        api: ServerApi::AppStoreServer,
        issuer,
        bundle_id: "com.example.app".parse()?,
        lifetime: Lifetime {
            ttl: 1800,
            skew: 60,
        },
    }
    .sign(&key, SystemTime::now())?;

    for signed in [connect, server] {
        let (input, signature) = signed.token.rsplit_once('.').expect("a compact JWS");
        let signature = URL_SAFE_NO_PAD
            .decode(signature)
            .ok()
            .and_then(|bytes| Signature::from_slice(&bytes).ok())
            .ok_or_else(|| Error::Internal("malformed signature".into()))?;
        public
            .verify(input.as_bytes(), &signature)
            .map_err(|_| Error::Internal("signature does not verify".into()))?;
        println!("{} (expires at {})", signed.token, signed.expires_at);
    }
    Ok(())
}
