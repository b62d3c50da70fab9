//! App Store Server API family tokens (In-App Purchase keys): the App Store Server API,
//! External Purchase Server API, Advanced Commerce API and Retention Messaging API share
//! one claim set and limit.

use serde::{Deserialize, Serialize};

use super::identity;
use super::metadata::KeyKind;
use super::signed::{HeaderStyle, Jwt};
use super::spec::{
    Context, Family, Field, IssuerShape, JwtKind, JwtShape, LifetimeRule, Spec, BUNDLE_ID, ISSUER,
};
use super::AUD_APP_STORE_CONNECT;
use crate::{BundleId, Error, IssuerId};

/// The most a token of this family may live, `exp - iat`, in seconds.
pub const MAX_LIFETIME: u64 = 60 * 60;

/// The fields every API of the family takes.
pub(crate) const FIELDS: &[Field] = &[ISSUER, BUNDLE_ID];

const fn family(name: &'static str, about: &'static str, api: &'static str) -> Spec {
    Spec {
        name,
        family: Family::Token,
        about,
        api,
        key_kinds: &[KeyKind::InAppPurchase],
        lifetime: LifetimeRule::Exp {
            default_ttl: 600,
            max: MAX_LIFETIME,
        },
        cacheable: true,
        fields: FIELDS,
        jwt: Some(JwtShape {
            // App Store Connect API tokens share the aud, and carry no bid.
            recognize: Some(|_, claims| claims.contains_key("bid")),
            ..JwtShape::new(
                true,
                Some(AUD_APP_STORE_CONNECT),
                &["iss", "iat", "exp", "aud", "bid"],
                &[],
                IssuerShape::IssuerId,
                Some(MAX_LIFETIME),
            )
        }),
    }
}

/// `token server`.
pub const APP_STORE_SERVER: Spec = family(
    "server",
    "App Store Server API (In-App Purchase key)",
    "App Store Server API",
);
/// `token external-purchase`.
pub const EXTERNAL_PURCHASE: Spec = family(
    "external-purchase",
    "External Purchase Server API (In-App Purchase key)",
    "External Purchase Server API",
);
/// `token advanced-commerce`.
pub const ADVANCED_COMMERCE: Spec = family(
    "advanced-commerce",
    "Advanced Commerce API server calls (In-App Purchase key)",
    "Advanced Commerce API",
);
/// `token retention-messaging`.
pub const RETENTION_MESSAGING: Spec = family(
    "retention-messaging",
    "Retention Messaging API (In-App Purchase key)",
    "Retention Messaging API",
);

/// An App Store Server API family token request (the same for each API of the family).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Server {
    /// The issuer ID from App Store Connect's In-App Purchase keys page; recorded with
    /// the key when `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<IssuerId>,
    /// The app's bundle ID (`bid`).
    pub bundle_id: BundleId,
}

#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a IssuerId,
    iat: u64,
    exp: u64,
    aud: &'static str,
    bid: &'a BundleId,
}

impl JwtKind for Server {
    fn jwt(&self, cx: &Context<'_>) -> Result<Jwt, Error> {
        let times = self.times(cx)?;
        let issuer = cx.identity(&identity::ISSUER, self.issuer.as_ref())?;
        let claims = Claims {
            iss: &issuer,
            iat: times.iat,
            exp: times.exp,
            aud: AUD_APP_STORE_CONNECT,
            bid: &self.bundle_id,
        };
        Jwt::new(HeaderStyle::Jwt, &claims, times)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apple::tests::{now, parts, request, NOW};
    use crate::apple::{JwtParams, JwtRequest};
    use crate::jws::tests::MemorySigner;

    fn server() -> Server {
        Server {
            issuer: Some("57246542-96fe-1a63-e053-0824d011072a".parse().unwrap()),
            bundle_id: "com.example.app".parse().unwrap(),
        }
    }

    #[test]
    fn every_api_of_the_family_has_iss_iat_exp_aud_bid() {
        for params in [
            JwtParams::Server(server()),
            JwtParams::ExternalPurchase(server()),
            JwtParams::AdvancedCommerce(server()),
            JwtParams::RetentionMessaging(server()),
        ] {
            let signed = request(params, Some(600), None)
                .sign(&MemorySigner::new(), None, now())
                .unwrap();
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
        let new =
            |params, ttl| JwtRequest::new("2X9R4HXF34".parse().unwrap(), params, Some(ttl), None);
        assert!(new(JwtParams::Server(server()), 3540).is_ok());
        match new(JwtParams::RetentionMessaging(server()), 3541) {
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
