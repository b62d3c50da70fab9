//! Apple's token kinds: what to sign. Pure: no PKCS#11, no I/O.
//!
//! Each kind is a module holding its request fields, its [`spec::Spec`] (name, key
//! kinds, lifetime rule, cacheability, fields, JWT shape) and its claims; the list of
//! kinds below ties them to [`Kind`], [`JwtParams`] and [`SignatureParams`]. A
//! [`Request`] is checked when it is made, and [`Request::sign`] takes any
//! [`Es256Signer`](crate::Es256Signer): every rule holds before the signer is asked for
//! anything, so a token Apple would reject is never signed.

#[macro_use]
mod kinds;

pub mod cache;
pub mod check;
pub mod cloudkit;
pub mod connect;
pub mod developer;
pub mod identity;
mod lifetime;
pub mod metadata;
pub mod oauth;
pub mod renew;
mod request;
pub mod server;
mod signed;
pub mod spec;
pub mod storekit;

pub(crate) use lifetime::unix;
pub use lifetime::{clock, Lifetime, Times, SANE_CLOCK};
pub use request::{JwtRequest, Request, SignatureRequest};
pub use signed::{Jwt, LegacySignature, Signed, SignedHeaders, SignedJwt, SignedStoreKit};

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
        /// Apple Business Manager API client assertion.
        BusinessManager(oauth::ClientAssertion) = oauth::BUSINESS_MANAGER,
        /// Apple School Manager API client assertion.
        SchoolManager(oauth::ClientAssertion) = oauth::SCHOOL_MANAGER,
        /// Apple Ads Campaign Management API client secret.
        AppleAds(oauth::AppleAds) = oauth::APPLE_ADS,
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
        /// CloudKit Web Services server-to-server request signature.
        Cloudkit(cloudkit::CloudKit) = cloudkit::CLOUDKIT,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    use std::time::Duration;
    use std::time::{SystemTime, UNIX_EPOCH};

    pub(crate) const NOW: u64 = 1_700_000_000;

    pub(crate) fn now() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(NOW)
    }

    /// A request signed by key 2X9R4HXF34.
    pub(crate) fn request(params: JwtParams, ttl: Option<u64>, skew: Option<u64>) -> JwtRequest {
        JwtRequest::new("2X9R4HXF34".parse().unwrap(), params, ttl, skew).unwrap()
    }

    /// Decodes a token's header and claims as JSON text.
    pub(crate) fn parts(token: &str) -> (String, String) {
        let mut it = token.split('.');
        let mut next =
            || String::from_utf8(URL_SAFE_NO_PAD.decode(it.next().unwrap()).unwrap()).unwrap();
        (next(), next())
    }
}
