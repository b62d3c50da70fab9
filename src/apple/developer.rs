//! Developer-account key tokens: APNs and DeviceCheck provider tokens, Sign in with
//! Apple client secrets, MusicKit, WeatherKit and MapKit tokens. Their issuer is the
//! Team ID.

use serde::{Deserialize, Serialize};

use super::identity;
use super::metadata::KeyKind;
use super::signed::{HeaderStyle, Jwt};
use super::spec::{
    check, is_false, Context, Family, Field, Finding, IssuerShape, JwtKind, JwtShape, LifetimeRule,
    Spec, Value,
};
use super::AUD_SIGN_IN_WITH_APPLE;
use crate::{ClientId, Error, Origin, ServiceId, TeamId};

/// How long APNs and DeviceCheck accept a provider token after its `iat`.
pub const PROVIDER_TOKEN_VALIDITY: u64 = 60 * 60;
/// The most Sign in with Apple and MusicKit allow between `iat` and `exp` (about 6
/// months). WeatherKit and MapKit document no limit; p8hsm holds them to the same.
pub const MAX_DEVELOPER_LIFETIME: u64 = 15_777_000;

const TEAM_ID: Field = Field::one(
    &identity::TEAM_ID,
    "Team ID (claim iss) [default: recorded with the key]",
    false,
);

const DEVELOPER: &[KeyKind] = &[KeyKind::Developer];

/// A JWT shape without `typ`, with a Team ID as `iss`.
const fn plain(
    aud: Option<&'static str>,
    required: &'static [&'static str],
    optional: &'static [&'static str],
    limit: Option<u64>,
) -> JwtShape {
    JwtShape::new(false, aud, required, optional, IssuerShape::TeamId, limit)
}

const fn provider(name: &'static str, about: &'static str, api: &'static str) -> Spec {
    Spec {
        name,
        family: Family::Token,
        about,
        api,
        key_kinds: DEVELOPER,
        lifetime: LifetimeRule::Provider {
            validity: PROVIDER_TOKEN_VALIDITY,
        },
        cacheable: true,
        fields: &[TEAM_ID],
        jwt: Some(JwtShape {
            recognize: Some(|_, claims| claims.keys().all(|k| k == "iss" || k == "iat")),
            ..plain(None, &["iss", "iat"], &[], None)
        }),
    }
}

/// `token apns`.
pub const APNS: Spec = provider(
    "apns",
    "APNs provider token (no exp; Apple accepts it for an hour)",
    "APNs provider",
);
/// `token devicecheck`.
pub const DEVICECHECK: Spec = provider(
    "devicecheck",
    "DeviceCheck / App Attest server token (no exp; accepted for an hour)",
    "DeviceCheck",
);

/// `token sign-in-with-apple`.
pub const SIGN_IN_WITH_APPLE: Spec = Spec {
    name: "sign-in-with-apple",
    family: Family::Token,
    about: "Sign in with Apple client secret",
    api: "Sign in with Apple client secret",
    key_kinds: DEVELOPER,
    lifetime: LifetimeRule::Exp {
        default_ttl: 3600,
        max: MAX_DEVELOPER_LIFETIME,
    },
    cacheable: true,
    fields: &[
        TEAM_ID,
        Field {
            name: "client_id",
            help: "Client ID (claim sub): the App ID or Services ID, case-sensitive",
            value: Value::Text {
                placeholder: "ID",
                check: check::<ClientId>,
            },
            required: true,
        },
    ],
    jwt: Some(plain(
        Some(AUD_SIGN_IN_WITH_APPLE),
        &["iss", "iat", "exp", "aud", "sub"],
        &[],
        Some(MAX_DEVELOPER_LIFETIME),
    )),
};

/// `token musickit`.
pub const MUSICKIT: Spec = Spec {
    name: "musickit",
    family: Family::Token,
    about: "MusicKit developer token",
    api: "MusicKit developer",
    key_kinds: DEVELOPER,
    lifetime: LifetimeRule::Exp {
        default_ttl: 86400,
        max: MAX_DEVELOPER_LIFETIME,
    },
    cacheable: true,
    fields: &[
        TEAM_ID,
        Field::several(
            &identity::ORIGIN,
            "Limit the token to an origin (repeatable)",
            false,
        ),
    ],
    jwt: Some(JwtShape {
        recognize: Some(|_, claims| {
            claims
                .get("origin")
                .is_some_and(serde_json::Value::is_array)
        }),
        rules: Some(|_, claims| match claims.get("origin") {
            Some(origin) if !is_string_array(origin) => vec![Finding::new(
                "origin",
                "MusicKit origin must be an array of strings",
            )],
            _ => Vec::new(),
        }),
        ..plain(
            None,
            &["iss", "iat", "exp"],
            &["origin"],
            Some(MAX_DEVELOPER_LIFETIME),
        )
    }),
};

fn is_string_array(value: &serde_json::Value) -> bool {
    value
        .as_array()
        .is_some_and(|a| a.iter().all(serde_json::Value::is_string))
}

/// `token weatherkit`.
pub const WEATHERKIT: Spec = Spec {
    name: "weatherkit",
    family: Family::Token,
    about: "WeatherKit REST API token",
    api: "WeatherKit",
    key_kinds: DEVELOPER,
    lifetime: LifetimeRule::Exp {
        default_ttl: 3600,
        max: MAX_DEVELOPER_LIFETIME,
    },
    cacheable: true,
    fields: &[
        TEAM_ID,
        Field::one(
            &identity::SERVICE_ID,
            "WeatherKit Service ID (claim sub; header id = <TeamID>.<ServiceID>)",
            true,
        ),
    ],
    jwt: Some(JwtShape {
        header: &["id"],
        recognize: Some(|header, _| header.contains_key("id")),
        rules: Some(|header, claims| {
            let expected = match (claims.get("iss"), claims.get("sub")) {
                (Some(serde_json::Value::String(iss)), Some(serde_json::Value::String(sub))) => {
                    format!("{iss}.{sub}")
                }
                _ => String::new(),
            };
            if header.get("id").and_then(serde_json::Value::as_str) == Some(expected.as_str()) {
                return Vec::new();
            }
            vec![Finding::new(
                "weatherkit-id",
                "the header id must be \"<TeamID>.<ServiceID>\" (iss.sub)",
            )]
        }),
        ..plain(None, &["iss", "iat", "exp", "sub"], &[], None)
    }),
};

/// `token mapkit`.
pub const MAPKIT: Spec = Spec {
    name: "mapkit",
    family: Family::Token,
    about: "MapKit JS or Maps Server API token",
    api: "MapKit",
    key_kinds: DEVELOPER,
    lifetime: LifetimeRule::Exp {
        default_ttl: 3600,
        max: MAX_DEVELOPER_LIFETIME,
    },
    cacheable: true,
    fields: &[
        TEAM_ID,
        Field::one(
            &identity::ORIGIN,
            "Limit the token to an origin (required with {mapkit_js})",
            false,
        ),
        Field {
            name: "mapkit_js",
            help: "A dynamically signed MapKit JS token (adds scope \"mapkit_js\")",
            value: Value::Flag,
            required: false,
        },
    ],
    jwt: Some(JwtShape {
        recognize: Some(|_, claims| {
            claims.contains_key("scope")
                || claims
                    .get("origin")
                    .is_some_and(serde_json::Value::is_string)
        }),
        rules: Some(|_, claims| {
            let finding = match claims.get("scope") {
                None => return Vec::new(),
                Some(serde_json::Value::String(s))
                    if s == "mapkit_js" && !claims.contains_key("origin") =>
                {
                    Finding::new("origin", "a MapKit JS token (scope mapkit_js) needs origin")
                }
                Some(serde_json::Value::String(s)) if s == "mapkit_js" => return Vec::new(),
                Some(other) => Finding::new(
                    "scope",
                    format!("MapKit scope is {other}, not \"mapkit_js\""),
                ),
            };
            vec![finding]
        }),
        ..JwtShape::new(
            true,
            None,
            &["iss", "iat", "exp"],
            &["origin", "scope"],
            IssuerShape::TeamId,
            None,
        )
    }),
};

/// An APNs or DeviceCheck provider token: header `alg` and `kid`, claims `iss` (Team
/// ID) and `iat` only. Apple accepts it for [`PROVIDER_TOKEN_VALIDITY`] after `iat`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Provider {
    /// The Team ID; recorded with the key when `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team_id: Option<TeamId>,
}

#[derive(Serialize)]
struct ProviderClaims<'a> {
    iss: &'a TeamId,
    iat: u64,
}

impl JwtKind for Provider {
    fn jwt(&self, cx: &Context<'_>) -> Result<Jwt, Error> {
        let times = self.times(cx)?;
        let team_id = cx.identity(&identity::TEAM_ID, self.team_id.as_ref())?;
        let claims = ProviderClaims {
            iss: &team_id,
            iat: times.iat,
        };
        Jwt::new(HeaderStyle::Plain, &claims, times)
    }
}

/// A Sign in with Apple client secret.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignInWithApple {
    /// The Team ID; recorded with the key when `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team_id: Option<TeamId>,
    /// The client ID (`sub`): the App ID or Services ID, case-sensitive.
    pub client_id: ClientId,
}

#[derive(Serialize)]
struct SignInWithAppleClaims<'a> {
    iss: &'a TeamId,
    iat: u64,
    exp: u64,
    aud: &'static str,
    sub: &'a ClientId,
}

impl JwtKind for SignInWithApple {
    fn jwt(&self, cx: &Context<'_>) -> Result<Jwt, Error> {
        let times = self.times(cx)?;
        let team_id = cx.identity(&identity::TEAM_ID, self.team_id.as_ref())?;
        let claims = SignInWithAppleClaims {
            iss: &team_id,
            iat: times.iat,
            exp: times.exp,
            aud: AUD_SIGN_IN_WITH_APPLE,
            sub: &self.client_id,
        };
        Jwt::new(HeaderStyle::Plain, &claims, times)
    }
}

/// A MusicKit developer token.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MusicKit {
    /// The Team ID; recorded with the key when `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team_id: Option<TeamId>,
    /// Origins the token is limited to (claim `origin`, omitted when empty).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub origin: Vec<Origin>,
}

#[derive(Serialize)]
struct MusicKitClaims<'a> {
    iss: &'a TeamId,
    iat: u64,
    exp: u64,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    origin: &'a [Origin],
}

impl JwtKind for MusicKit {
    fn jwt(&self, cx: &Context<'_>) -> Result<Jwt, Error> {
        let times = self.times(cx)?;
        let team_id = cx.identity(&identity::TEAM_ID, self.team_id.as_ref())?;
        let claims = MusicKitClaims {
            iss: &team_id,
            iat: times.iat,
            exp: times.exp,
            origin: &self.origin,
        };
        Jwt::new(HeaderStyle::Plain, &claims, times)
    }
}

/// A WeatherKit REST API token: header `id` = `<TeamID>.<ServiceID>`, claims exactly
/// `iss`, `iat`, `exp`, `sub`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WeatherKit {
    /// The Team ID; recorded with the key when `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team_id: Option<TeamId>,
    /// The WeatherKit Service ID (`sub`).
    pub service_id: ServiceId,
}

#[derive(Serialize)]
struct WeatherKitClaims<'a> {
    iss: &'a TeamId,
    iat: u64,
    exp: u64,
    sub: &'a ServiceId,
}

impl JwtKind for WeatherKit {
    fn jwt(&self, cx: &Context<'_>) -> Result<Jwt, Error> {
        let times = self.times(cx)?;
        let team_id = cx.identity(&identity::TEAM_ID, self.team_id.as_ref())?;
        let id = format!("{}.{}", team_id, self.service_id);
        let claims = WeatherKitClaims {
            iss: &team_id,
            iat: times.iat,
            exp: times.exp,
            sub: &self.service_id,
        };
        Jwt::new(HeaderStyle::WithId(&id), &claims, times)
    }
}

/// A MapKit JS or Maps Server API token.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MapKit {
    /// The Team ID; recorded with the key when `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team_id: Option<TeamId>,
    /// The origin the token is limited to; required for MapKit JS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<Origin>,
    /// A dynamically signed MapKit JS token (claim `scope: "mapkit_js"`).
    #[serde(default, skip_serializing_if = "is_false")]
    pub mapkit_js: bool,
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

impl JwtKind for MapKit {
    fn validate(&self, _spec: &'static Spec) -> Result<(), Error> {
        if self.mapkit_js && self.origin.is_none() {
            return Err(Error::MissingInput {
                field: "origin",
                what: "origin",
                why: "a MapKit JS token must name the origin it serves",
            });
        }
        Ok(())
    }

    fn jwt(&self, cx: &Context<'_>) -> Result<Jwt, Error> {
        let times = self.times(cx)?;
        let team_id = cx.identity(&identity::TEAM_ID, self.team_id.as_ref())?;
        let claims = MapKitClaims {
            iss: &team_id,
            iat: times.iat,
            exp: times.exp,
            origin: self.origin.as_ref(),
            scope: self.mapkit_js.then_some("mapkit_js"),
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

    fn team() -> Option<TeamId> {
        Some("A1B2C3D4E5".parse().unwrap())
    }

    fn signed(params: JwtParams) -> (String, String) {
        let skew = Some(60);
        let ttl = match params.kind().spec().lifetime {
            LifetimeRule::Exp { .. } => Some(600),
            _ => None,
        };
        parts(
            &request(params, ttl, skew)
                .sign(&MemorySigner::new(), None, now())
                .unwrap()
                .token,
        )
    }

    #[test]
    fn provider_tokens_have_iss_and_iat_only_and_a_plain_header() {
        for params in [
            JwtParams::Apns(Provider { team_id: team() }),
            JwtParams::Devicecheck(Provider { team_id: team() }),
        ] {
            let times = request(params.clone(), None, Some(60))
                .times(now())
                .unwrap();
            let (header, claims) = signed(params);
            assert_eq!(header, r#"{"alg":"ES256","kid":"2X9R4HXF34"}"#);
            assert_eq!(
                claims,
                format!(r#"{{"iss":"A1B2C3D4E5","iat":{}}}"#, NOW - 60)
            );
            assert_eq!(times.exp, NOW - 60 + 3600);
        }
        let with_ttl = JwtRequest::new(
            "2X9R4HXF34".parse().unwrap(),
            JwtParams::Apns(Provider { team_id: team() }),
            Some(60),
            None,
        );
        assert!(matches!(with_ttl, Err(Error::NotApplicable { .. })));
        let old = JwtRequest::new(
            "2X9R4HXF34".parse().unwrap(),
            JwtParams::Apns(Provider { team_id: team() }),
            None,
            Some(3600),
        );
        assert!(matches!(old, Err(Error::SkewTooLarge { .. })));
    }

    #[test]
    fn sign_in_with_apple_secret_has_aud_and_sub() {
        let params = JwtParams::SignInWithApple(SignInWithApple {
            team_id: team(),
            client_id: "com.example.web".parse().unwrap(),
        });
        let (header, claims) = signed(params.clone());
        assert_eq!(header, r#"{"alg":"ES256","kid":"2X9R4HXF34"}"#);
        assert_eq!(
            claims,
            format!(
                r#"{{"iss":"A1B2C3D4E5","iat":{},"exp":{},"aud":"https://appleid.apple.com","sub":"com.example.web"}}"#,
                NOW - 60,
                NOW + 600
            )
        );
        let too_long = JwtRequest::new(
            "2X9R4HXF34".parse().unwrap(),
            params,
            Some(MAX_DEVELOPER_LIFETIME),
            Some(60),
        );
        assert!(matches!(too_long, Err(Error::LifetimeTooLong { .. })));
    }

    #[test]
    fn musickit_token_lists_origins_only_when_given() {
        let mut token = MusicKit {
            team_id: team(),
            origin: vec![],
        };
        assert!(!signed(JwtParams::Musickit(token.clone()))
            .1
            .contains("origin"));
        token.origin = vec![
            "https://a.example".parse().unwrap(),
            "https://b.example".parse().unwrap(),
        ];
        assert!(signed(JwtParams::Musickit(token))
            .1
            .ends_with(r#","origin":["https://a.example","https://b.example"]}"#));
    }

    #[test]
    fn weatherkit_token_has_the_id_header_and_exactly_four_claims() {
        let (header, claims) = signed(JwtParams::Weatherkit(WeatherKit {
            team_id: team(),
            service_id: "com.example.weather".parse().unwrap(),
        }));
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
        let mut token = MapKit {
            team_id: team(),
            origin: None,
            mapkit_js: true,
        };
        assert!(matches!(
            JwtRequest::new(
                "2X9R4HXF34".parse().unwrap(),
                JwtParams::Mapkit(token.clone()),
                None,
                None
            ),
            Err(Error::MissingInput {
                field: "origin",
                ..
            })
        ));
        token.origin = Some("https://example.com".parse().unwrap());
        let (header, claims) = signed(JwtParams::Mapkit(token.clone()));
        assert_eq!(header, r#"{"alg":"ES256","kid":"2X9R4HXF34","typ":"JWT"}"#);
        assert!(
            claims.ends_with(r#","origin":"https://example.com","scope":"mapkit_js"}"#),
            "{claims}"
        );
        token.mapkit_js = false;
        assert!(signed(JwtParams::Mapkit(token))
            .1
            .ends_with(r#","origin":"https://example.com"}"#));
    }
}
