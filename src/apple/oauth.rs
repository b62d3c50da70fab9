//! OAuth 2 client credentials signed with a key in the token: the client assertion of
//! the Apple Business Manager and Apple School Manager APIs (RFC 7523), and the client
//! secret of the Apple Ads Campaign Management API. Their IDs are `<PREFIX>.<uuid>`
//! ([`OAuthId`]) and their key IDs UUIDs.

use serde::{Deserialize, Serialize};

use super::identity;
use super::metadata::{check_prefix, KeyKind};
use super::signed::{HeaderStyle, Jwt};
use super::spec::{
    Context, Family, Field, IssuerShape, JwtKind, JwtShape, LifetimeRule, Object, Spec,
};
use super::AUD_SIGN_IN_WITH_APPLE;
use crate::ids::Nonce;
use crate::{AdsTeamId, Error, OAuthId};

/// The most Apple allows between `iat` and `exp` of these secrets: 180 days.
pub const MAX_OAUTH_LIFETIME: u64 = 180 * 24 * 60 * 60;
/// The `aud` of Apple Business and School Manager client assertions.
pub const AUD_ACCOUNT_TOKEN: &str = "https://account.apple.com/auth/oauth2/v2/token";

const fn client_id_field(help: &'static str) -> Field {
    Field::one(&identity::CLIENT_ID, help, false)
}

const fn assertion(
    name: &'static str,
    about: &'static str,
    api: &'static str,
    key_kinds: &'static [KeyKind],
    prefix: &'static str,
    fields: &'static [Field],
    recognize: fn(&Object, &Object) -> bool,
) -> Spec {
    Spec {
        name,
        family: Family::Token,
        about,
        api,
        key_kinds,
        lifetime: LifetimeRule::Exp {
            default_ttl: 3600,
            max: MAX_OAUTH_LIFETIME,
        },
        // Each assertion carries a fresh jti.
        cacheable: false,
        fields,
        jwt: Some(JwtShape {
            // Business and School Manager share the aud: the client ID's prefix tells.
            recognize: Some(recognize),
            ..JwtShape::new(
                true,
                Some(AUD_ACCOUNT_TOKEN),
                &["sub", "iss", "aud", "iat", "exp", "jti"],
                &[],
                IssuerShape::OAuth {
                    prefix,
                    is_sub: true,
                },
                Some(MAX_OAUTH_LIFETIME),
            )
        }),
    }
}

/// `token business-manager`.
pub const BUSINESS_MANAGER: Spec = assertion(
    "business-manager",
    "Apple Business Manager API client assertion",
    "Apple Business Manager API",
    &[KeyKind::BusinessManager],
    "BUSINESSAPI",
    &[client_id_field(
        "Client ID, BUSINESSAPI.<uuid> (claims iss and sub) [default: recorded with the key]",
    )],
    |_, claims| sub_prefix(claims) == Some("BUSINESSAPI"),
);

/// `token school-manager`.
pub const SCHOOL_MANAGER: Spec = assertion(
    "school-manager",
    "Apple School Manager API client assertion",
    "Apple School Manager API",
    &[KeyKind::SchoolManager],
    "SCHOOLAPI",
    &[client_id_field(
        "Client ID, SCHOOLAPI.<uuid> (claims iss and sub) [default: recorded with the key]",
    )],
    |_, claims| sub_prefix(claims) == Some("SCHOOLAPI"),
);

/// `token apple-ads`.
pub const APPLE_ADS: Spec = Spec {
    name: "apple-ads",
    family: Family::Token,
    about: "Apple Ads Campaign Management API client secret",
    api: "Apple Ads API",
    key_kinds: &[KeyKind::AppleAds],
    lifetime: LifetimeRule::Exp {
        default_ttl: 3600,
        max: MAX_OAUTH_LIFETIME,
    },
    cacheable: true,
    fields: &[
        client_id_field("Client ID, SEARCHADS.<uuid> (claim sub) [default: recorded with the key]"),
        Field::one(
            &identity::ADS_TEAM_ID,
            "Apple Ads team ID, SEARCHADS.<uuid> (claim iss) [default: recorded with the key]",
            false,
        ),
    ],
    jwt: Some(JwtShape {
        // Sign in with Apple shares the aud; an Apple Ads secret's sub is SEARCHADS.…
        recognize: Some(|_, claims| sub_prefix(claims) == Some("SEARCHADS")),
        ..JwtShape::new(
            false,
            Some(AUD_SIGN_IN_WITH_APPLE),
            &["sub", "iss", "aud", "iat", "exp"],
            &[],
            IssuerShape::OAuth {
                prefix: "SEARCHADS",
                is_sub: false,
            },
            Some(MAX_OAUTH_LIFETIME),
        )
    }),
};

/// The prefix of `sub` when it is an OAuth ID (`SEARCHADS`…).
pub(crate) fn sub_prefix(claims: &Object) -> Option<&str> {
    let sub = claims.get("sub")?.as_str()?;
    let (prefix, _) = sub.split_once('.')?;
    sub.parse::<OAuthId>().ok().map(|_| prefix)
}

/// An Apple Business or School Manager client assertion: header `alg`, `kid`, `typ`;
/// claims `sub` and `iss` (the client ID), `aud`, `iat`, `exp`, `jti` (a fresh UUID).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientAssertion {
    /// The client ID; recorded with the key when `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<OAuthId>,
}

#[derive(Serialize)]
struct AssertionClaims<'a> {
    sub: &'a OAuthId,
    iss: &'a OAuthId,
    aud: &'static str,
    iat: u64,
    exp: u64,
    jti: Nonce,
}

/// The kind whose prefix the spec's key kinds want.
fn key_kind(spec: &Spec) -> KeyKind {
    spec.key_kinds[0]
}

impl JwtKind for ClientAssertion {
    fn validate(&self, spec: &'static Spec) -> Result<(), Error> {
        match &self.client_id {
            Some(id) => check_prefix(key_kind(spec), "the client ID", id),
            None => Ok(()),
        }
    }

    fn jwt(&self, cx: &Context<'_>) -> Result<Jwt, Error> {
        let times = self.times(cx)?;
        let client_id = cx.identity(&identity::CLIENT_ID, self.client_id.as_ref())?;
        check_prefix(key_kind(cx.spec), "the client ID", &client_id)?;
        let claims = AssertionClaims {
            sub: &client_id,
            iss: &client_id,
            aud: AUD_ACCOUNT_TOKEN,
            iat: times.iat,
            exp: times.exp,
            jti: Nonce::random(),
        };
        Jwt::new(HeaderStyle::Jwt, &claims, times)
    }
}

/// An Apple Ads client secret: header `alg`, `kid`; claims `sub` (the client ID), `iss`
/// (the Apple Ads team ID), `aud`, `iat`, `exp`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppleAds {
    /// The client ID; recorded with the key when `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<OAuthId>,
    /// The Apple Ads team ID; recorded with the key when `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ads_team_id: Option<AdsTeamId>,
}

#[derive(Serialize)]
struct AppleAdsClaims<'a> {
    sub: &'a OAuthId,
    iss: &'a OAuthId,
    aud: &'static str,
    iat: u64,
    exp: u64,
}

impl AppleAds {
    fn check(client_id: Option<&OAuthId>) -> Result<(), Error> {
        if let Some(id) = client_id {
            check_prefix(KeyKind::AppleAds, "the client ID", id)?;
        }
        Ok(())
    }
}

impl JwtKind for AppleAds {
    fn validate(&self, _spec: &'static Spec) -> Result<(), Error> {
        AppleAds::check(self.client_id.as_ref())
    }

    fn jwt(&self, cx: &Context<'_>) -> Result<Jwt, Error> {
        let times = self.times(cx)?;
        let client_id = cx.identity(&identity::CLIENT_ID, self.client_id.as_ref())?;
        let team = cx.identity(&identity::ADS_TEAM_ID, self.ads_team_id.as_ref())?;
        AppleAds::check(Some(&client_id))?;
        let team = team.as_oauth();
        let claims = AppleAdsClaims {
            sub: &client_id,
            iss: &team,
            aud: AUD_SIGN_IN_WITH_APPLE,
            iat: times.iat,
            exp: times.exp,
        };
        Jwt::new(HeaderStyle::Plain, &claims, times)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apple::metadata::KeyMetadata;
    use crate::apple::tests::{now, parts, NOW};
    use crate::apple::{JwtParams, JwtRequest};
    use crate::jws::tests::MemorySigner;
    use crate::KeyId;

    const KID: &str = "d136aa66-0c3b-4bd4-9892-c20e8db024ab";
    const UUID: &str = "8a4e1f0c-2b3d-4c5e-9f60-718293a4b5c6";

    fn signer() -> MemorySigner {
        MemorySigner {
            kid: KID.parse().unwrap(),
            ..MemorySigner::new()
        }
    }

    fn id(prefix: &str) -> OAuthId {
        format!("{prefix}.{UUID}").parse().unwrap()
    }

    fn request(params: JwtParams, ttl: u64) -> Result<JwtRequest, Error> {
        JwtRequest::new(KID.parse().unwrap(), params, Some(ttl), Some(60))
    }

    #[test]
    fn client_assertions_have_exactly_apples_claims_and_a_fresh_jti() {
        for (params, prefix) in [
            (
                JwtParams::BusinessManager(ClientAssertion {
                    client_id: Some(id("BUSINESSAPI")),
                }),
                "BUSINESSAPI",
            ),
            (
                JwtParams::SchoolManager(ClientAssertion {
                    client_id: Some(id("SCHOOLAPI")),
                }),
                "SCHOOLAPI",
            ),
        ] {
            let request = request(params, 600).unwrap();
            let sign = || request.sign(&signer(), None, now()).unwrap().token;
            let (first, second) = (sign(), sign());
            let (header, claims) = parts(&first);
            assert_eq!(
                header,
                format!(r#"{{"alg":"ES256","kid":"{KID}","typ":"JWT"}}"#)
            );
            let claims: serde_json::Value = serde_json::from_str(&claims).unwrap();
            let jti = claims["jti"].as_str().unwrap().to_owned();
            assert_eq!(
                claims,
                serde_json::json!({
                    "sub": format!("{prefix}.{UUID}"),
                    "iss": format!("{prefix}.{UUID}"),
                    "aud": AUD_ACCOUNT_TOKEN,
                    "iat": NOW - 60,
                    "exp": NOW + 600,
                    "jti": jti,
                })
            );
            assert!(jti.parse::<Nonce>().is_ok(), "jti {jti} is not a UUID");
            let other: serde_json::Value = serde_json::from_str(&parts(&second).1).unwrap();
            assert_ne!(
                other["jti"], claims["jti"],
                "jti must be fresh per assertion"
            );
            assert!(!request.params().kind().spec().cacheable);
        }
    }

    #[test]
    fn apple_ads_secret_has_sub_client_iss_team_and_no_typ() {
        let params = JwtParams::AppleAds(AppleAds {
            client_id: Some(id("SEARCHADS")),
            ads_team_id: Some(
                "SEARCHADS.0f1e2d3c-4b5a-4697-8877-665544332211"
                    .parse()
                    .unwrap(),
            ),
        });
        let token = request(params, 600)
            .unwrap()
            .sign(&signer(), None, now())
            .unwrap()
            .token;
        let (header, claims) = parts(&token);
        assert_eq!(header, format!(r#"{{"alg":"ES256","kid":"{KID}"}}"#));
        assert_eq!(
            claims,
            format!(
                r#"{{"sub":"SEARCHADS.{UUID}","iss":"SEARCHADS.0f1e2d3c-4b5a-4697-8877-665544332211","aud":"https://appleid.apple.com","iat":{},"exp":{}}}"#,
                NOW - 60,
                NOW + 600
            )
        );
    }

    #[test]
    fn lifetimes_over_180_days_key_ids_and_ids_of_another_kind_are_refused() {
        let business = JwtParams::BusinessManager(ClientAssertion {
            client_id: Some(id("BUSINESSAPI")),
        });
        assert!(request(business.clone(), MAX_OAUTH_LIFETIME - 60).is_ok());
        assert!(matches!(
            request(business.clone(), MAX_OAUTH_LIFETIME - 59),
            Err(Error::LifetimeTooLong { .. })
        ));
        let apple_key: KeyId = "2X9R4HXF34".parse().unwrap();
        let err = JwtRequest::new(apple_key, business, None, None).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid key ID \"2X9R4HXF34\": this kind's key IDs are UUIDs"
        );
        let school_id_for_business = JwtParams::BusinessManager(ClientAssertion {
            client_id: Some(id("SCHOOLAPI")),
        });
        assert!(matches!(
            request(school_id_for_business, 600),
            Err(Error::InvalidMetadata(_))
        ));
        let business_team = format!("BUSINESSAPI.{UUID}").parse::<crate::AdsTeamId>();
        assert_eq!(
            business_team.unwrap_err().to_string(),
            format!("invalid ads team ID \"BUSINESSAPI.{UUID}\": it is SEARCHADS.<uuid>")
        );
    }

    #[test]
    fn recorded_ids_fill_in_and_contradictions_are_refused() {
        let meta = KeyMetadata::new(KeyKind::AppleAds)
            .with(&identity::CLIENT_ID, id("SEARCHADS").as_str())
            .and_then(|m| m.with(&identity::ADS_TEAM_ID, id("SEARCHADS").as_str()))
            .unwrap();
        let request = request(JwtParams::AppleAds(AppleAds::default()), 600).unwrap();
        let token = request.sign(&signer(), Some(&meta), now()).unwrap().token;
        assert!(parts(&token)
            .1
            .contains(&format!(r#""sub":"SEARCHADS.{UUID}""#)));
        let missing = request.sign(&signer(), None, now()).unwrap_err();
        assert!(matches!(
            missing,
            Error::MissingInput {
                field: "client_id",
                ..
            }
        ));
        let business = KeyMetadata::new(KeyKind::BusinessManager);
        assert!(matches!(
            request.sign(&signer(), Some(&business), now()),
            Err(Error::KeyKindMismatch { .. })
        ));
    }
}
