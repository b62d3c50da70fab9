//! The boundary between *what to sign* and *who signs*.

use p256::ecdsa::Signature;

use crate::{Error, KeyId};

/// Something that makes ES256 signatures with one Apple key.
///
/// `sign_es256` signs the message with ECDSA P-256 over its SHA-256 digest and returns
/// the fixed-size R||S signature JWS wants. p8hsm's implementation is
/// [`HsmKey`](crate::pkcs11::HsmKey): the digest is taken on the host and the token signs it.
///
/// Signers are shared between threads, so the trait requires
/// `Send + Sync`; hold one as `Arc<dyn Es256Signer>`.
pub trait Es256Signer: Send + Sync {
    /// The Apple key ID of the key that signs (the JWT header's `kid`).
    fn key_id(&self) -> &KeyId;

    /// Signs `message` (ECDSA P-256, SHA-256).
    fn sign_es256(&self, message: &[u8]) -> Result<Signature, Error>;
}
