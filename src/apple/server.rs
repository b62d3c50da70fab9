//! App Store Server API tokens (In-App Purchase keys).

use std::time::SystemTime;

use serde::Serialize;

use super::{sign_jwt, Lifetime, SignedToken, Times, AUD_APP_STORE_CONNECT};
use crate::{BundleId, Error, Es256Signer, IssuerId};

/// The most an App Store Server API token may live, `exp - iat`, in seconds.
pub const MAX_LIFETIME: u64 = 60 * 60;

/// An App Store Server API token request.
#[derive(Debug, Clone)]
pub struct ServerToken {
    /// The issuer ID from App Store Connect's In-App Purchase keys page.
    pub issuer: IssuerId,
    /// The app's bundle ID (`bid`).
    pub bundle_id: BundleId,
    /// Lifetime; `exp - iat` at most [`MAX_LIFETIME`].
    pub lifetime: Lifetime,
}

#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a IssuerId,
    iat: u64,
    exp: u64,
    aud: &'static str,
    bid: &'a BundleId,
}

impl ServerToken {
    /// The token's `iat` and `exp` if signed at `now`; an error if the lifetime
    /// breaks the API's limit. Lets a caller check a request before logging in.
    pub fn times(&self, now: SystemTime) -> Result<Times, Error> {
        self.lifetime
            .times(now, "App Store Server API", MAX_LIFETIME)
    }

    /// Builds the claims and has `signer` sign them.
    pub fn sign(&self, signer: &dyn Es256Signer, now: SystemTime) -> Result<SignedToken, Error> {
        let times = self.times(now)?;
        let claims = Claims {
            iss: &self.issuer,
            iat: times.iat,
            exp: times.exp,
            aud: AUD_APP_STORE_CONNECT,
            bid: &self.bundle_id,
        };
        sign_jwt(signer, &claims, times)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apple::tests::{now, parts, NOW};
    use crate::jws::tests::MemorySigner;

    fn request(ttl: u64) -> ServerToken {
        ServerToken {
            issuer: "57246542-96fe-1a63-e053-0824d011072a".parse().unwrap(),
            bundle_id: "com.example.app".parse().unwrap(),
            lifetime: Lifetime { ttl, skew: 60 },
        }
    }

    #[test]
    fn server_token_has_iss_iat_exp_aud_bid() {
        let (header, claims) = parts(
            &request(600)
                .sign(&MemorySigner::new(), now())
                .unwrap()
                .token,
        );
        assert_eq!(header, r#"{"alg":"ES256","kid":"2X9R4HXF34","typ":"JWT"}"#);
        assert_eq!(
            claims,
            format!(
                r#"{{"iss":"57246542-96fe-1a63-e053-0824d011072a","iat":{},"exp":{},"aud":"appstoreconnect-v1","bid":"com.example.app"}}"#,
                NOW - 60,
                NOW + 600
            )
        );
    }

    #[test]
    fn lifetime_limit_is_an_hour_including_the_backdate() {
        assert!(request(3540).sign(&MemorySigner::new(), now()).is_ok());
        assert!(matches!(
            request(3541).sign(&MemorySigner::new(), now()),
            Err(Error::LifetimeTooLong { limit: 3600, .. })
        ));
    }
}
