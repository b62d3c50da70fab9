//! # p8hsm
//!
//! Sign Apple API tokens with a `.p8` key that lives inside a PKCS#11 token.
//!
//! The `.p8` is imported once ([`Token::import`]); from then on p8hsm builds a token's
//! header and claims on the host, hashes them, and the token makes the ECDSA P-256
//! signature, so the private key never sits in the signing process's memory (but see
//! `docs/security.md` for SoftHSM loaded in-process).
//!
//! The pieces, and the direction of their dependencies:
//! - [`Service`]: what every front end (the command line, the agent) signs through —
//!   a [`Token`], its keys and what is recorded with them, and a token cache;
//! - [`apple`]: what to sign — the one [`Request`] type, Apple's claim sets and
//!   lifetime rules (pure);
//! - [`Es256Signer`]: who signs — implemented by [`HsmKey`];
//! - [`pkcs11`]: module loading, token selection, login, import, key lookup, signing;
//! - [`pipeline`]: the one request pipeline the long-lived front ends are transports
//!   over — a [`pipeline::Gate`] decides, the service signs, an audit record results;
//! - [`protocol`]: the agent's line-delimited JSON protocol;
//! - [`jws`] and [`p8`]: compact JWS encoding and `.p8` parsing.
//!
//! The library does no terminal or file I/O: the caller reads the PIN and key files.
//!
//! ```no_run
//! use p8hsm::apple::connect::Connect;
//! use p8hsm::apple::{Request, JwtParams, JwtRequest};
//! use p8hsm::pkcs11::{TokenSelector, TokenLocation};
//! use p8hsm::{pkcs11, Service, Token};
//! use secrecy::SecretString;
//!
//! # fn main() -> Result<(), p8hsm::Error> {
//! let spec = TokenLocation::new(pkcs11::locate_module(None, None)?, TokenSelector::label("p8hsm"));
//! let pin = SecretString::from(std::fs::read_to_string("/run/secrets/p8hsm-pin").unwrap());
//! let service = Service::new(Token::open(&spec, pin)?);
//! let request = Request::Token(JwtRequest::new(
//!     "2X9R4HXF34".parse()?,
//!     JwtParams::Connect(Connect {
//!         issuer: Some("57246542-96fe-1a63-e053-0824d011072a".parse()?),
//!         ..Connect::default()
//!     }),
//!     None, // ttl: the kind's default
//!     None, // skew: 60 s
//! )?);
//! let (signed, _) = service.sign(&request)?;
//! println!("{}", signed.line());
//! # Ok(()) }
//! ```

#![warn(missing_docs)]
// Unsafe code is forbidden in every module but `pkcs11::context` (one block, C_Initialize
// with pReserved), and denied there but for that block.

#[forbid(unsafe_code)]
pub mod apple;
#[forbid(unsafe_code)]
mod error;
#[forbid(unsafe_code)]
mod ids;
#[forbid(unsafe_code)]
pub mod jws;
#[forbid(unsafe_code)]
pub mod p8;
#[forbid(unsafe_code)]
pub mod pipeline;
pub mod pkcs11;
#[forbid(unsafe_code)]
pub mod protocol;
#[forbid(unsafe_code)]
mod service;
#[forbid(unsafe_code)]
mod signer;

use std::sync::{Mutex, MutexGuard};

pub use apple::{Request, Signed};
pub use error::{Error, ErrorCode};
pub use ids::{
    AdsTeamId, BundleId, ClientId, IssuerId, KeyId, KeyIdFormat, OAuthId, OfferId, Origin,
    ProductId, Scope, ServiceId, TeamId, TransactionId,
};
pub use p8::{fingerprint, P8Key};
pub use pkcs11::{HsmKey, Token};
pub use service::Service;
pub use signer::Es256Signer;

/// A mutex guard whether or not another thread panicked while holding it: the data
/// p8hsm guards (idle sessions, a slot, a handle, cached tokens) stays consistent either
/// way.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
