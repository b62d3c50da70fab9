//! Apple's token kinds: what to sign. Pure: no PKCS#11, no I/O.
//!
//! Each kind is a module holding its request fields, its [`spec::Spec`] (name, key
//! kinds, lifetime rule, cacheability, fields, JWT shape) and its claims; the list of
//! kinds below ties them to [`Kind`], [`TokenParams`] and [`SignatureParams`]. A
//! [`Request`] is checked when it is made, and [`Request::sign`] takes any
//! [`Es256Signer`](crate::Es256Signer): every rule holds before the signer is asked for
//! anything, so a token Apple would reject is never signed.

pub mod cache;
pub mod check;
pub mod connect;
pub mod developer;
pub mod metadata;
#[macro_use]
mod request;
pub mod server;
pub mod spec;
pub mod storekit;

use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

pub use request::{Request, SignatureRequest, Signed, TokenRequest};

use crate::jws::{self, Header};
use crate::{Error, Es256Signer, KeyId};

/// The `aud` of App Store Connect API and App Store Server API family tokens.
pub const AUD_APP_STORE_CONNECT: &str = "appstoreconnect-v1";
/// The `aud` of Enterprise Program API tokens.
pub const AUD_ENTERPRISE: &str = "apple-developer-enterprise-v1";
/// The `aud` of Sign in with Apple client secrets.
pub const AUD_SIGN_IN_WITH_APPLE: &str = "https://appleid.apple.com";

// The one list of kinds: each entry names the kind's request fields (its module's
// struct) and its [`spec::Spec`]. Adding a kind is its module plus one entry here.
kinds! {
    tokens {
        /// App Store Connect API (team or individual key).
        Connect(connect::Connect) = connect::CONNECT,
        /// App Store Server API.
        Server(server::Server) = server::APP_STORE_SERVER,
        /// External Purchase Server API.
        ExternalPurchase(server::Server) = server::EXTERNAL_PURCHASE,
        /// Advanced Commerce API server calls.
        AdvancedCommerce(server::Server) = server::ADVANCED_COMMERCE,
        /// Retention Messaging API.
        RetentionMessaging(server::Server) = server::RETENTION_MESSAGING,
        /// Enterprise Program API.
        Enterprise(connect::Enterprise) = connect::ENTERPRISE,
        /// APNs provider token.
        Apns(developer::Provider) = developer::APNS,
        /// DeviceCheck / App Attest server token.
        Devicecheck(developer::Provider) = developer::DEVICECHECK,
        /// Sign in with Apple client secret.
        SignInWithApple(developer::SignInWithApple) = developer::SIGN_IN_WITH_APPLE,
        /// MusicKit developer token.
        Musickit(developer::MusicKit) = developer::MUSICKIT,
        /// WeatherKit REST API token.
        Weatherkit(developer::WeatherKit) = developer::WEATHERKIT,
        /// MapKit JS or Maps Server API token.
        Mapkit(developer::MapKit) = developer::MAPKIT,
    }
    signatures {
        /// Promotional offer signature (V2 JWS).
        PromoOffer(storekit::PromoOffer) = storekit::PROMO_OFFER,
        /// Introductory-offer eligibility signature (JWS).
        IntroOfferEligibility(storekit::IntroOfferEligibility) = storekit::INTRO_OFFER_ELIGIBILITY,
        /// Advanced Commerce in-app request signature (JWS).
        AdvancedCommerceRequest(storekit::AdvancedCommerceRequest) = storekit::ADVANCED_COMMERCE_REQUEST,
        /// Legacy (StoreKit 1) promotional offer signature: DER, base64.
        PromoOfferLegacy(storekit::PromoOfferLegacy) = storekit::PROMO_OFFER_LEGACY,
    }
}

/// When a token starts and ends: `iat = now - skew`, `exp = now + ttl`.
///
/// The default is 10 minutes from now with `iat` backdated 60 s, so a signer whose
/// clock runs a little ahead of Apple's still gets accepted. Each kind's
/// [`spec::LifetimeRule`] gives its own default TTL and limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Lifetime {
    /// Seconds from now until `exp`.
    pub ttl: u64,
    /// Seconds `iat` is backdated.
    pub skew: u64,
}

impl Default for Lifetime {
    fn default() -> Self {
        Lifetime { ttl: 600, skew: 60 }
    }
}

/// A token's `iat` and `exp`, UNIX seconds. For kinds without an `exp` claim (APNs,
/// DeviceCheck), `exp` is when Apple stops accepting the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Times {
    /// Issued at.
    pub iat: u64,
    /// Expires at.
    pub exp: u64,
}

impl Lifetime {
    /// The times for a token signed at `now`, refusing a lifetime whose `exp - iat`
    /// exceeds `limit` seconds: never shortened silently.
    pub fn times(&self, now: SystemTime, api: &'static str, limit: u64) -> Result<Times, Error> {
        if self.ttl == 0 {
            return Err(Error::LifetimeZero);
        }
        if self.ttl.saturating_add(self.skew) > limit {
            return Err(Error::LifetimeTooLong {
                api,
                ttl: self.ttl,
                skew: self.skew,
                limit,
            });
        }
        let iat = unix(now)?.checked_sub(self.skew).ok_or(Error::Clock)?;
        Ok(Times {
            iat,
            exp: iat + self.skew + self.ttl,
        })
    }
}

/// Seconds since the UNIX epoch.
pub(crate) fn unix(now: SystemTime) -> Result<u64, Error> {
    Ok(now
        .duration_since(UNIX_EPOCH)
        .map_err(|_| Error::Clock)?
        .as_secs())
}

/// A signed token and what it is good for.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SignedToken {
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

/// Signs `claims` under the header `style` and wraps the result.
pub(crate) fn sign_jwt<C: Serialize>(
    signer: &dyn Es256Signer,
    style: HeaderStyle<'_>,
    claims: &C,
    times: Times,
) -> Result<SignedToken, Error> {
    let key_id = signer.key_id().clone();
    let mut header = Header::jwt(key_id.as_str());
    match style {
        HeaderStyle::Jwt => {}
        HeaderStyle::Plain => header.typ = None,
        HeaderStyle::WithId(id) => {
            header.typ = None;
            header.id = Some(id);
        }
    }
    let token = jws::sign(signer, &header, claims)?;
    Ok(SignedToken {
        token,
        key_id,
        issued_at: times.iat,
        expires_at: times.exp,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    use std::time::Duration;

    pub(crate) const NOW: u64 = 1_700_000_000;

    pub(crate) fn now() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(NOW)
    }

    /// A request signed by key 2X9R4HXF34.
    pub(crate) fn request(
        params: TokenParams,
        ttl: Option<u64>,
        skew: Option<u64>,
    ) -> TokenRequest {
        TokenRequest::new("2X9R4HXF34".parse().unwrap(), params, ttl, skew).unwrap()
    }

    /// Decodes a token's header and claims as JSON text.
    pub(crate) fn parts(token: &str) -> (String, String) {
        let mut it = token.split('.');
        let mut next =
            || String::from_utf8(URL_SAFE_NO_PAD.decode(it.next().unwrap()).unwrap()).unwrap();
        (next(), next())
    }

    #[test]
    fn default_lifetime_is_ten_minutes_backdated_a_minute() {
        let t = Lifetime::default().times(now(), "x", 1200).unwrap();
        assert_eq!(
            t,
            Times {
                iat: NOW - 60,
                exp: NOW + 600
            }
        );
    }

    #[test]
    fn lifetime_over_the_limit_is_an_error_not_a_silent_change() {
        let at_limit = Lifetime {
            ttl: 1140,
            skew: 60,
        };
        let times = at_limit.times(now(), "x", 1200).unwrap();
        assert_eq!(times.exp - times.iat, 1200);
        let over = Lifetime {
            ttl: 1141,
            skew: 60,
        };
        assert!(matches!(
            over.times(now(), "x", 1200),
            Err(Error::LifetimeTooLong { limit: 1200, .. })
        ));
        let zero = Lifetime { ttl: 0, skew: 60 };
        assert!(matches!(
            zero.times(now(), "x", 1200),
            Err(Error::LifetimeZero)
        ));
    }
}
