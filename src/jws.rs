//! JWS compact serialization (RFC 7515) for ES256: pure, no I/O.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::Serialize;

use crate::signer::Es256Signer;
use crate::Error;

/// A JOSE header for ES256.
#[derive(Debug, Clone, Serialize)]
pub struct Header<'a> {
    /// Always `ES256`.
    pub alg: &'static str,
    /// The Apple key ID.
    pub kid: &'a str,
    /// `JWT` where Apple's token kind has it; omitted otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub typ: Option<&'static str>,
    /// WeatherKit's `<TeamID>.<ServiceID>`; omitted otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<&'a str>,
}

impl<'a> Header<'a> {
    /// `{"alg":"ES256","kid":…,"typ":"JWT"}`.
    pub fn jwt(kid: &'a str) -> Self {
        Header {
            alg: "ES256",
            kid,
            typ: Some("JWT"),
            id: None,
        }
    }
}

/// The signing input `base64url(header) . base64url(claims)`.
pub fn signing_input<C: Serialize>(header: &Header<'_>, claims: &C) -> Result<String, Error> {
    let header = serde_json::to_vec(header).map_err(Error::internal)?;
    let claims = serde_json::to_vec(claims).map_err(Error::internal)?;
    Ok(format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(claims)
    ))
}

/// Signs `claims` under `header` with `signer` and returns the compact JWS.
pub fn sign<C: Serialize>(
    signer: &dyn Es256Signer,
    header: &Header<'_>,
    claims: &C,
) -> Result<String, Error> {
    let input = signing_input(header, claims)?;
    let signature = signer.sign_es256(input.as_bytes())?;
    Ok(format!(
        "{input}.{}",
        URL_SAFE_NO_PAD.encode(signature.to_bytes())
    ))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::KeyId;
    use p256::ecdsa::signature::{Signer, Verifier};
    use p256::ecdsa::{Signature, SigningKey, VerifyingKey};

    /// An in-memory signer with a fixed key (RFC 6979 deterministic): tests only.
    pub(crate) struct MemorySigner {
        pub(crate) key: SigningKey,
        pub(crate) kid: KeyId,
    }

    impl MemorySigner {
        pub(crate) fn new() -> Self {
            MemorySigner {
                key: SigningKey::from_slice(&[0x11; 32]).unwrap(),
                kid: "2X9R4HXF34".parse().unwrap(),
            }
        }
    }

    impl Es256Signer for MemorySigner {
        fn key_id(&self) -> &KeyId {
            &self.kid
        }
        fn sign_es256(&self, message: &[u8]) -> Result<Signature, Error> {
            Ok(self.key.sign(message))
        }
    }

    /// The 64-byte R||S signature of `message` by `signer`.
    pub(crate) fn sign_raw(signer: &MemorySigner, message: &[u8]) -> Vec<u8> {
        signer.sign_es256(message).unwrap().to_bytes().to_vec()
    }

    #[derive(Serialize)]
    struct Claims {
        iss: &'static str,
        iat: u64,
    }

    #[test]
    fn compact_jws_is_pinned_byte_for_byte() {
        let signer = MemorySigner::new();
        let header = Header::jwt(signer.kid.as_str());
        let token = sign(
            &signer,
            &header,
            &Claims {
                iss: "me",
                iat: 1528407600,
            },
        )
        .unwrap();
        // header {"alg":"ES256","kid":"2X9R4HXF34","typ":"JWT"}, claims {"iss":"me","iat":1528407600}
        let expected_input = "eyJhbGciOiJFUzI1NiIsImtpZCI6IjJYOVI0SFhGMzQiLCJ0eXAiOiJKV1QifQ\
                              .eyJpc3MiOiJtZSIsImlhdCI6MTUyODQwNzYwMH0";
        assert_eq!(token.rsplit_once('.').unwrap().0, expected_input);
        assert_eq!(
            token,
            format!("{expected_input}.{}", PINNED_SIGNATURE),
            "RFC 6979 makes the signature deterministic"
        );
        let (input, sig) = token.rsplit_once('.').unwrap();
        let sig = Signature::from_slice(&URL_SAFE_NO_PAD.decode(sig).unwrap()).unwrap();
        VerifyingKey::from(&signer.key)
            .verify(input.as_bytes(), &sig)
            .unwrap();
    }

    const PINNED_SIGNATURE: &str =
        "OyP_qijRVbCdSkDOGYTHXr-7H4RWzxJHVWNQux_JTzGKK1AUXxb7hENdYKzcEVD1-LDOw5FWbIdvEnfg4pIWJA";

    #[test]
    fn header_without_typ_omits_it() {
        let header = Header {
            alg: "ES256",
            kid: "2X9R4HXF34",
            typ: None,
            id: None,
        };
        let input = signing_input(&header, &serde_json::json!({})).unwrap();
        let decoded = URL_SAFE_NO_PAD
            .decode(input.split('.').next().unwrap())
            .unwrap();
        assert_eq!(decoded, br#"{"alg":"ES256","kid":"2X9R4HXF34"}"#);
    }
}
