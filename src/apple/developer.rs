//! Developer-account key tokens: APNs and DeviceCheck provider tokens, Sign in with
//! Apple client secrets, MusicKit, WeatherKit and MapKit tokens. Their issuer is the
//! Team ID.

use std::time::SystemTime;

use serde::Serialize;

use super::{
    sign_jwt, unix, AppleToken, HeaderStyle, Lifetime, SignedToken, Times, AUD_SIGN_IN_WITH_APPLE,
};
use crate::{ClientId, Error, Es256Signer, Origin, ServiceId, TeamId};

/// How long APNs and DeviceCheck accept a provider token after its `iat`.
pub const PROVIDER_TOKEN_VALIDITY: u64 = 60 * 60;
/// The most Sign in with Apple and MusicKit allow between `iat` and `exp` (about 6
/// months). WeatherKit and MapKit document no limit; p8hsm holds them to the same.
pub const MAX_DEVELOPER_LIFETIME: u64 = 15_777_000;

/// Which service a provider token (`iss` + `iat`, no `exp`) is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProviderService {
    /// Apple Push Notification service.
    Apns,
    /// DeviceCheck and App Attest.
    DeviceCheck,
}

/// An APNs or DeviceCheck provider token: header `alg` and `kid`, claims `iss` (Team
/// ID) and `iat` only. Apple accepts it for [`PROVIDER_TOKEN_VALIDITY`] after `iat`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ProviderToken {
    /// The service.
    pub service: ProviderService,
    /// The Team ID.
    pub team_id: TeamId,
    /// Seconds `iat` is backdated.
    pub skew: u64,
}

#[derive(Serialize)]
struct ProviderClaims<'a> {
    iss: &'a TeamId,
    iat: u64,
}

impl AppleToken for ProviderToken {
    fn times(&self, now: SystemTime) -> Result<Times, Error> {
        if self.skew >= PROVIDER_TOKEN_VALIDITY {
            return Err(Error::SkewTooLarge {
                api: match self.service {
                    ProviderService::Apns => "APNs provider",
                    ProviderService::DeviceCheck => "DeviceCheck",
                },
                skew: self.skew,
                limit: PROVIDER_TOKEN_VALIDITY,
            });
        }
        let iat = unix(now)?.checked_sub(self.skew).ok_or(Error::Clock)?;
        Ok(Times {
            iat,
            exp: iat + PROVIDER_TOKEN_VALIDITY,
        })
    }

    fn sign(&self, signer: &dyn Es256Signer, now: SystemTime) -> Result<SignedToken, Error> {
        let times = self.times(now)?;
        let claims = ProviderClaims {
            iss: &self.team_id,
            iat: times.iat,
        };
        sign_jwt(signer, HeaderStyle::Plain, &claims, times)
    }
}

/// A Sign in with Apple client secret.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SignInWithAppleToken {
    /// The Team ID.
    pub team_id: TeamId,
    /// The client ID (`sub`): the App ID or Services ID, case-sensitive.
    pub client_id: ClientId,
    /// Lifetime; `exp - iat` at most [`MAX_DEVELOPER_LIFETIME`].
    pub lifetime: Lifetime,
}

#[derive(Serialize)]
struct SignInWithAppleClaims<'a> {
    iss: &'a TeamId,
    iat: u64,
    exp: u64,
    aud: &'static str,
    sub: &'a ClientId,
}

impl AppleToken for SignInWithAppleToken {
    fn times(&self, now: SystemTime) -> Result<Times, Error> {
        self.lifetime.times(
            now,
            "Sign in with Apple client secret",
            MAX_DEVELOPER_LIFETIME,
        )
    }

    fn sign(&self, signer: &dyn Es256Signer, now: SystemTime) -> Result<SignedToken, Error> {
        let times = self.times(now)?;
        let claims = SignInWithAppleClaims {
            iss: &self.team_id,
            iat: times.iat,
            exp: times.exp,
            aud: AUD_SIGN_IN_WITH_APPLE,
            sub: &self.client_id,
        };
        sign_jwt(signer, HeaderStyle::Plain, &claims, times)
    }
}

/// A MusicKit developer token.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MusicKitToken {
    /// The Team ID.
    pub team_id: TeamId,
    /// Origins the token is limited to (claim `origin`, omitted when empty).
    pub origins: Vec<Origin>,
    /// Lifetime; `exp - iat` at most [`MAX_DEVELOPER_LIFETIME`].
    pub lifetime: Lifetime,
}

#[derive(Serialize)]
struct MusicKitClaims<'a> {
    iss: &'a TeamId,
    iat: u64,
    exp: u64,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    origin: &'a [Origin],
}

impl AppleToken for MusicKitToken {
    fn times(&self, now: SystemTime) -> Result<Times, Error> {
        self.lifetime
            .times(now, "MusicKit developer", MAX_DEVELOPER_LIFETIME)
    }

    fn sign(&self, signer: &dyn Es256Signer, now: SystemTime) -> Result<SignedToken, Error> {
        let times = self.times(now)?;
        let claims = MusicKitClaims {
            iss: &self.team_id,
            iat: times.iat,
            exp: times.exp,
            origin: &self.origins,
        };
        sign_jwt(signer, HeaderStyle::Plain, &claims, times)
    }
}

/// A WeatherKit REST API token: header `id` = `<TeamID>.<ServiceID>`, claims exactly
/// `iss`, `iat`, `exp`, `sub`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct WeatherKitToken {
    /// The Team ID.
    pub team_id: TeamId,
    /// The WeatherKit Service ID (`sub`).
    pub service_id: ServiceId,
    /// Lifetime; `exp - iat` at most [`MAX_DEVELOPER_LIFETIME`].
    pub lifetime: Lifetime,
}

#[derive(Serialize)]
struct WeatherKitClaims<'a> {
    iss: &'a TeamId,
    iat: u64,
    exp: u64,
    sub: &'a ServiceId,
}

impl AppleToken for WeatherKitToken {
    fn times(&self, now: SystemTime) -> Result<Times, Error> {
        self.lifetime
            .times(now, "WeatherKit", MAX_DEVELOPER_LIFETIME)
    }

    fn sign(&self, signer: &dyn Es256Signer, now: SystemTime) -> Result<SignedToken, Error> {
        let times = self.times(now)?;
        let id = format!("{}.{}", self.team_id, self.service_id);
        let claims = WeatherKitClaims {
            iss: &self.team_id,
            iat: times.iat,
            exp: times.exp,
            sub: &self.service_id,
        };
        sign_jwt(signer, HeaderStyle::WithId(&id), &claims, times)
    }
}

/// A MapKit JS or Maps Server API token.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MapKitToken {
    /// The Team ID.
    pub team_id: TeamId,
    /// The origin the token is limited to; required for MapKit JS.
    pub origin: Option<Origin>,
    /// A dynamically signed MapKit JS token (claim `scope: "mapkit_js"`).
    pub mapkit_js: bool,
    /// Lifetime; `exp - iat` at most [`MAX_DEVELOPER_LIFETIME`].
    pub lifetime: Lifetime,
}

#[derive(Serialize)]
struct MapKitClaims<'a> {
    iss: &'a TeamId,
    iat: u64,
    exp: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    origin: Option<&'a Origin>,
    #[serde(skip_serializing_if = "Option::is_none")]
    scope: Option<&'static str>,
}

impl AppleToken for MapKitToken {
    fn times(&self, now: SystemTime) -> Result<Times, Error> {
        if self.mapkit_js && self.origin.is_none() {
            return Err(Error::MissingInput {
                what: "--origin",
                why: "a MapKit JS token (--mapkit-js) must name the origin it serves",
            });
        }
        self.lifetime.times(now, "MapKit", MAX_DEVELOPER_LIFETIME)
    }

    fn sign(&self, signer: &dyn Es256Signer, now: SystemTime) -> Result<SignedToken, Error> {
        let times = self.times(now)?;
        let claims = MapKitClaims {
            iss: &self.team_id,
            iat: times.iat,
            exp: times.exp,
            origin: self.origin.as_ref(),
            scope: self.mapkit_js.then_some("mapkit_js"),
        };
        sign_jwt(signer, HeaderStyle::Jwt, &claims, times)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apple::tests::{now, parts, NOW};
    use crate::jws::tests::MemorySigner;

    fn team() -> TeamId {
        "A1B2C3D4E5".parse().unwrap()
    }

    fn lifetime() -> Lifetime {
        Lifetime { ttl: 600, skew: 60 }
    }

    fn signed(token: &dyn AppleToken) -> (String, String) {
        parts(&token.sign(&MemorySigner::new(), now()).unwrap().token)
    }

    #[test]
    fn provider_tokens_have_iss_and_iat_only_and_a_plain_header() {
        for service in [ProviderService::Apns, ProviderService::DeviceCheck] {
            let token = ProviderToken {
                service,
                team_id: team(),
                skew: 60,
            };
            let (header, claims) = signed(&token);
            assert_eq!(header, r#"{"alg":"ES256","kid":"2X9R4HXF34"}"#);
            assert_eq!(
                claims,
                format!(r#"{{"iss":"A1B2C3D4E5","iat":{}}}"#, NOW - 60)
            );
            assert_eq!(token.times(now()).unwrap().exp, NOW - 60 + 3600);
        }
    }

    #[test]
    fn sign_in_with_apple_secret_has_aud_and_sub() {
        let token = SignInWithAppleToken {
            team_id: team(),
            client_id: "com.example.web".parse().unwrap(),
            lifetime: lifetime(),
        };
        let (header, claims) = signed(&token);
        assert_eq!(header, r#"{"alg":"ES256","kid":"2X9R4HXF34"}"#);
        assert_eq!(
            claims,
            format!(
                r#"{{"iss":"A1B2C3D4E5","iat":{},"exp":{},"aud":"https://appleid.apple.com","sub":"com.example.web"}}"#,
                NOW - 60,
                NOW + 600
            )
        );
        let too_long = SignInWithAppleToken {
            lifetime: Lifetime {
                ttl: MAX_DEVELOPER_LIFETIME,
                skew: 60,
            },
            ..token
        };
        assert!(matches!(
            too_long.times(now()),
            Err(Error::LifetimeTooLong { .. })
        ));
    }

    #[test]
    fn musickit_token_lists_origins_only_when_given() {
        let mut token = MusicKitToken {
            team_id: team(),
            origins: vec![],
            lifetime: lifetime(),
        };
        assert!(!signed(&token).1.contains("origin"));
        token.origins = vec![
            "https://a.example".parse().unwrap(),
            "https://b.example".parse().unwrap(),
        ];
        assert!(signed(&token)
            .1
            .ends_with(r#","origin":["https://a.example","https://b.example"]}"#));
    }

    #[test]
    fn weatherkit_token_has_the_id_header_and_exactly_four_claims() {
        let token = WeatherKitToken {
            team_id: team(),
            service_id: "com.example.weather".parse().unwrap(),
            lifetime: lifetime(),
        };
        let (header, claims) = signed(&token);
        assert_eq!(
            header,
            r#"{"alg":"ES256","kid":"2X9R4HXF34","id":"A1B2C3D4E5.com.example.weather"}"#
        );
        assert_eq!(
            claims,
            format!(
                r#"{{"iss":"A1B2C3D4E5","iat":{},"exp":{},"sub":"com.example.weather"}}"#,
                NOW - 60,
                NOW + 600
            )
        );
    }

    #[test]
    fn mapkit_js_needs_an_origin_and_adds_its_scope() {
        let mut token = MapKitToken {
            team_id: team(),
            origin: None,
            mapkit_js: true,
            lifetime: lifetime(),
        };
        assert!(matches!(
            token.times(now()),
            Err(Error::MissingInput {
                what: "--origin",
                ..
            })
        ));
        token.origin = Some("https://example.com".parse().unwrap());
        let (header, claims) = signed(&token);
        assert_eq!(header, r#"{"alg":"ES256","kid":"2X9R4HXF34","typ":"JWT"}"#);
        assert!(
            claims.ends_with(r#","origin":"https://example.com","scope":"mapkit_js"}"#),
            "{claims}"
        );
        token.mapkit_js = false;
        assert!(signed(&token)
            .1
            .ends_with(r#","origin":"https://example.com"}"#));
    }
}
