//! # p8hsm
//!
//! Sign Apple API tokens with a `.p8` key that lives inside a PKCS#11 token.
//!
//! The `.p8` is imported once ([`Token::import`]); from then on p8hsm builds a token's
//! header and claims on the host, hashes them, and the token makes the ECDSA P-256
//! signature, so the private key never sits in the signing process's memory (but see
//! the README's security model for SoftHSM loaded in-process).
//!
//! The pieces, and the direction of their dependencies:
//! - [`apple`]: what to sign — Apple's claim sets and lifetime rules (pure);
//! - [`Es256Signer`]: who signs — implemented by [`HsmKey`];
//! - [`pkcs11`]: module loading, token selection, login, import, key lookup, signing;
//! - [`jws`] and [`p8`]: compact JWS encoding and `.p8` parsing.
//!
//! ```no_run
//! use std::time::SystemTime;
//! use p8hsm::apple::connect::{ConnectToken, Issuer};
//! use p8hsm::apple::AppleToken;
//! use p8hsm::pkcs11::TokenSelector;
//! use p8hsm::{pkcs11, Token};
//!
//! # fn main() -> Result<(), p8hsm::Error> {
//! let module = pkcs11::locate_module(None, None)?;
//! let pin = "file:/run/secrets/p8hsm-pin".parse()?;
//! let token = Token::open(&module, &TokenSelector::label("p8hsm"), &pin)?;
//! let key = token.key(&"2X9R4HXF34".parse()?)?;
//! let request = ConnectToken {
//!     issuer: Issuer::Team("57246542-96fe-1a63-e053-0824d011072a".parse()?),
//!     scope: vec![],
//!     lifetime: Default::default(),
//! };
//! let signed = request.sign(&key, SystemTime::now())?;
//! println!("{}", signed.token);
//! # Ok(()) }
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod apple;
mod error;
mod ids;
pub mod jws;
pub mod p8;
mod pin;
pub mod pkcs11;
mod signer;

pub use error::Error;
pub use ids::{
    BundleId, ClientId, IssuerId, KeyId, OfferId, Origin, ProductId, ServiceId, TeamId,
    TransactionId,
};
pub use p8::{fingerprint, P8Key};
pub use pin::PinSource;
pub use pkcs11::{HsmKey, Token};
pub use signer::Es256Signer;
