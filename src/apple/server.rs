//! App Store Server API family tokens (In-App Purchase keys): the App Store Server API,
//! External Purchase Server API, Advanced Commerce API and Retention Messaging API share
//! one claim set and limit.

use std::time::SystemTime;

use serde::Serialize;

use super::{
    sign_jwt, AppleToken, HeaderStyle, Lifetime, SignedToken, Times, AUD_APP_STORE_CONNECT,
};
use crate::{BundleId, Error, Es256Signer, IssuerId};

/// The most a token of this family may live, `exp - iat`, in seconds.
pub const MAX_LIFETIME: u64 = 60 * 60;

/// Which API of the family the token is for (the claims are the same).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ServerApi {
    /// App Store Server API.
    #[default]
    AppStoreServer,
    /// External Purchase Server API.
    ExternalPurchase,
    /// Advanced Commerce API (server calls).
    AdvancedCommerce,
    /// Retention Messaging API.
    RetentionMessaging,
}

impl ServerApi {
    /// The API's name.
    pub fn name(self) -> &'static str {
        match self {
            ServerApi::AppStoreServer => "App Store Server API",
            ServerApi::ExternalPurchase => "External Purchase Server API",
            ServerApi::AdvancedCommerce => "Advanced Commerce API",
            ServerApi::RetentionMessaging => "Retention Messaging API",
        }
    }
}

/// An App Store Server API family token request.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ServerToken {
    /// Which API.
    pub api: ServerApi,
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

impl AppleToken for ServerToken {
    fn times(&self, now: SystemTime) -> Result<Times, Error> {
        self.lifetime.times(now, self.api.name(), MAX_LIFETIME)
    }

    fn sign(&self, signer: &dyn Es256Signer, now: SystemTime) -> Result<SignedToken, Error> {
        let times = self.times(now)?;
        let claims = Claims {
            iss: &self.issuer,
            iat: times.iat,
            exp: times.exp,
            aud: AUD_APP_STORE_CONNECT,
            bid: &self.bundle_id,
        };
        sign_jwt(signer, HeaderStyle::Jwt, &claims, times)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apple::tests::{now, parts, NOW};
    use crate::jws::tests::MemorySigner;

    fn request(api: ServerApi, ttl: u64) -> ServerToken {
        ServerToken {
            api,
            issuer: "57246542-96fe-1a63-e053-0824d011072a".parse().unwrap(),
            bundle_id: "com.example.app".parse().unwrap(),
            lifetime: Lifetime { ttl, skew: 60 },
        }
    }

    #[test]
    fn every_api_of_the_family_has_iss_iat_exp_aud_bid() {
        for api in [
            ServerApi::AppStoreServer,
            ServerApi::ExternalPurchase,
            ServerApi::AdvancedCommerce,
            ServerApi::RetentionMessaging,
        ] {
            let signed = request(api, 600).sign(&MemorySigner::new(), now()).unwrap();
            let (header, claims) = parts(&signed.token);
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
    }

    #[test]
    fn lifetime_limit_is_an_hour_including_the_backdate() {
        assert!(request(ServerApi::AppStoreServer, 3540)
            .times(now())
            .is_ok());
        match request(ServerApi::RetentionMessaging, 3541).times(now()) {
            Err(e @ Error::LifetimeTooLong { limit: 3600, .. }) => {
                assert!(
                    e.to_string().starts_with("Retention Messaging API tokens"),
                    "{e}"
                )
            }
            other => panic!("{other:?}"),
        }
    }
}
