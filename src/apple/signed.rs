//! What signing produces: tokens and signatures, and the JOSE headers Apple's kinds use.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::lifetime::Times;
use crate::ids::Nonce;
use crate::jws::{self, Header};
use crate::{Error, Es256Signer, KeyId};

/// What a request produced.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Signed {
    /// A JWT.
    Jwt(SignedJwt),
    /// A StoreKit JWS.
    StoreKit(SignedStoreKit),
    /// A legacy promotional offer signature.
    Legacy(LegacySignature),
    /// A request signature sent as request headers.
    Headers(SignedHeaders),
}

impl Signed {
    /// The token or signature itself.
    pub fn line(&self) -> &str {
        match self {
            Signed::Jwt(t) => &t.token,
            Signed::StoreKit(t) => &t.token,
            Signed::Legacy(s) => &s.signature,
            Signed::Headers(s) => &s.signature,
        }
    }

    /// What the command line prints without `--json`: the token or signature on one
    /// line, or the request headers, one per line.
    pub fn text(&self) -> String {
        match self {
            Signed::Headers(s) => s
                .headers
                .iter()
                .map(|(name, value)| format!("{name}: {}\n", value.as_str().unwrap_or_default()))
                .collect(),
            other => format!("{}\n", other.line()),
        }
    }
}

/// A signed token and what it is good for.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SignedJwt {
    /// The compact JWS.
    pub token: String,
    /// The key that signed it.
    pub key_id: KeyId,
    /// `iat`, UNIX seconds.
    pub issued_at: u64,
    /// `exp`, UNIX seconds (for APNs and DeviceCheck: when Apple stops accepting it).
    pub expires_at: u64,
}

/// Which JOSE header a kind uses besides `alg` and `kid`.
#[derive(Debug, Clone, Copy)]
pub(crate) enum HeaderStyle<'a> {
    /// `typ: "JWT"`.
    Jwt,
    /// `alg` and `kid` only.
    Plain,
    /// WeatherKit: `id: "<TeamID>.<ServiceID>"`.
    WithId(&'a str),
}

/// A JWT before it is signed: its header and claims, as a kind builds them from a
/// request and what is recorded with the key. [`Jwt::sign`] is the one way a JWT is
/// signed; the audit, renewal and `check` read the claims from here, not from a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Jwt {
    /// Whether the header carries `typ: "JWT"`.
    pub typ: bool,
    /// WeatherKit's header `id`, `<TeamID>.<ServiceID>`.
    pub id: Option<String>,
    /// The claims.
    pub claims: Map<String, Value>,
    /// `iat` and `exp` (for APNs and DeviceCheck: when Apple stops accepting the token).
    pub times: Times,
}

impl Jwt {
    /// The JWT of `claims` under the header `style`.
    pub(crate) fn new<C: Serialize>(
        style: HeaderStyle<'_>,
        claims: &C,
        times: Times,
    ) -> Result<Jwt, Error> {
        let Value::Object(claims) = serde_json::to_value(claims).map_err(Error::internal)? else {
            return Err(Error::internal("a claim set is not a JSON object"));
        };
        let (typ, id) = match style {
            HeaderStyle::Jwt => (true, None),
            HeaderStyle::Plain => (false, None),
            HeaderStyle::WithId(id) => (false, Some(id.to_owned())),
        };
        Ok(Jwt {
            typ,
            id,
            claims,
            times,
        })
    }

    /// The JOSE header for the key `kid`.
    pub fn header<'a>(&'a self, kid: &'a str) -> Header<'a> {
        Header {
            typ: self.typ.then_some("JWT"),
            id: self.id.as_deref(),
            ..Header::jwt(kid)
        }
    }

    /// Has `signer` sign it.
    pub fn sign(&self, signer: &dyn Es256Signer) -> Result<SignedJwt, Error> {
        let key_id = signer.key_id().clone();
        let token = jws::sign(signer, &self.header(key_id.as_str()), &self.claims)?;
        Ok(SignedJwt {
            token,
            key_id,
            issued_at: self.times.iat,
            expires_at: self.times.exp,
        })
    }
}

/// A signed StoreKit JWS.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SignedStoreKit {
    /// The compact JWS.
    pub token: String,
    /// The key that signed it.
    pub key_id: KeyId,
    /// The one-time nonce it carries.
    pub nonce: Nonce,
    /// `iat`, UNIX seconds.
    pub issued_at: u64,
}

/// A legacy promotional offer signature and the values the app passes with it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LegacySignature {
    /// Standard base64 of the DER ECDSA signature.
    pub signature: String,
    /// The key that signed it (`keyIdentifier`).
    pub key_id: KeyId,
    /// The nonce.
    pub nonce: Nonce,
    /// The timestamp, UNIX milliseconds.
    pub timestamp: u64,
}

/// A request signature a client sends as request headers: the key, the date and the
/// signature, and the headers that carry them.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SignedHeaders {
    /// Standard base64 of the DER ECDSA signature.
    pub signature: String,
    /// The key that signed it.
    pub key_id: KeyId,
    /// The date signed.
    pub date: String,
    /// The request headers, by name, in the order the API lists them.
    pub headers: Map<String, Value>,
}
