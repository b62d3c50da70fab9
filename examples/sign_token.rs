//! Signing Apple API tokens from a Rust service with a key kept in a PKCS#11 token.
//!
//! ```sh
//! eval "$(scripts/softhsm-init.sh)"          # P8HSM_MODULE, P8HSM_TOKEN, P8HSM_PIN_SOURCE
//! cargo run --example sign_token -- DEMOKEY001 57246542-96fe-1a63-e053-0824d011072a
//! ```
//!
//! Opens the token once (one login), then signs an App Store Connect token and an App
//! Store Server API token with the same key through a [`Service`] (the signing path the
//! command line and the agent use), and checks both signatures against the public key
//! on the token. The library reads no files: the PIN file is read here.

use std::process::ExitCode;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use p256::ecdsa::signature::Verifier;
use p256::ecdsa::{Signature, VerifyingKey};
use p8hsm::apple::connect::Connect;
use p8hsm::apple::server::Server;
use p8hsm::apple::{JwtParams, JwtRequest, Request};
use p8hsm::pkcs11::{TokenLocation, TokenSelector};
use p8hsm::{pkcs11, Error, IssuerId, KeyId, Service, Token};
use secrecy::SecretString;

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

    // The same configuration the CLI reads: here the PIN source must be a file.
    let mut spec = TokenLocation::new(
        pkcs11::locate_module(
            std::env::var_os("P8HSM_MODULE")
                .as_deref()
                .map(AsRef::as_ref),
            None,
        )?,
        TokenSelector::label(&std::env::var("P8HSM_TOKEN").unwrap_or_else(|_| "p8hsm".into())),
    );
    spec.module_args = std::env::var("P8HSM_MODULE_ARGS")
        .ok()
        .map(|a| p8hsm::pkcs11::ModuleArgs::new(&a))
        .transpose()?;
    let source = std::env::var("P8HSM_PIN_SOURCE").unwrap_or_default();
    let pin_file = source
        .strip_prefix("file:")
        .ok_or_else(|| Error::Internal("set P8HSM_PIN_SOURCE=file:PATH".into()))?;
    let pin = std::fs::read_to_string(pin_file).map_err(Error::internal)?;
    let token = Token::open(&spec, SecretString::from(pin.trim_end()))?;
    let public = VerifyingKey::from(token.public_key(&key_id)?);
    let service = Service::new(token);

    let connect = JwtParams::Connect(Connect {
        issuer: Some(issuer.clone()),
        scope: vec!["GET /v1/apps".parse()?],
        ..Connect::default()
    });
    let server = JwtParams::Server(Server {
        issuer: Some(issuer),
        bundle_id: "com.example.app".parse()?,
    });
    for (params, ttl) in [(connect, None), (server, Some(1800))] {
        let request = Request::Token(JwtRequest::new(key_id.clone(), params, ttl, None)?);
        let (signed, _) = service.sign(&request)?;
        let (input, signature) = signed.line().rsplit_once('.').expect("a compact JWS");
        let signature = URL_SAFE_NO_PAD
            .decode(signature)
            .ok()
            .and_then(|bytes| Signature::from_slice(&bytes).ok())
            .ok_or_else(|| Error::Internal("malformed signature".into()))?;
        public
            .verify(input.as_bytes(), &signature)
            .map_err(|_| Error::Internal("signature does not verify".into()))?;
        println!("{}", signed.line());
    }
    Ok(())
}
