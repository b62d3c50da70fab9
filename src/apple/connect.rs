//! App Store Connect API tokens (team and individual keys) and Enterprise Program API
//! tokens.

use serde::{Deserialize, Serialize};

use super::identity;
use super::lifetime::Times;
use super::metadata::KeyKind;
use super::signed::{HeaderStyle, Jwt};
use super::spec::{
    is_false, Context, Family, Field, Finding, IssuerShape, JwtKind, JwtShape, LifetimeRule,
    Object, Spec, Value, ISSUER,
};
#[cfg(test)]
use super::JwtRequest;
use super::{AUD_APP_STORE_CONNECT, AUD_ENTERPRISE};
use crate::ids::printable;
pub use crate::Scope;
use crate::{Error, IssuerId};

/// The most an App Store Connect token may live, `exp - iat`, in seconds.
pub const MAX_LIFETIME: u64 = 20 * 60;
/// The most a long-lived (scoped, GET-only) App Store Connect token may live: 6 months,
/// counted as 180 days.
pub const MAX_LONG_LIVED_LIFETIME: u64 = 180 * 24 * 60 * 60;
/// The most an Enterprise Program API token may live (no long-lived exception).
pub const MAX_ENTERPRISE_LIFETIME: u64 = 20 * 60;

/// The App Store Connect resources Apple lets long-lived tokens read: Build Actions,
/// Build Runs, Git References, Issues, macOS Versions, Products, Providers, Power and
/// Performance Metrics and Logs, Pull Requests, Repositories, Test Results, Workflows,
/// Xcode Versions — by their resource types in request paths.
pub const LONG_LIVED_RESOURCES: &[&str] = &[
    "ciBuildActions",
    "ciBuildRuns",
    "scmGitReferences",
    "ciIssues",
    "ciMacOsVersions",
    "ciProducts",
    "scmProviders",
    "perfPowerMetrics",
    "diagnosticSignatures",
    "scmPullRequests",
    "scmRepositories",
    "ciTestResults",
    "ciWorkflows",
    "ciXcodeVersions",
];

impl Scope {
    /// Whether this entry may appear in a long-lived token.
    pub(crate) fn allows_long_lived(&self) -> bool {
        self.long_lived_refusal().is_none()
    }

    /// Why this entry may not appear in a long-lived token, if it may not. The path is
    /// matched exactly: `/v1/` then the resource, with no empty, `.` or `..` segment
    /// and nothing percent-encoded (`/v1/ciProducts/../apps` is not a ciProducts path).
    fn long_lived_refusal(&self) -> Option<String> {
        let (method, target) = self.as_str().split_once(' ')?;
        if method != "GET" {
            return Some(format!("{method} is not GET"));
        }
        let path = target.split('?').next().unwrap_or(target);
        let Some(rest) = path.strip_prefix("/v1/") else {
            return Some(format!("{} is not a /v1/ resource path", printable(path)));
        };
        let segments: Vec<&str> = rest.split('/').collect();
        if segments
            .iter()
            .any(|s| s.is_empty() || *s == "." || *s == ".." || s.contains(['%', '\\']))
        {
            return Some(format!(
                "{} has an empty, dot or encoded path segment",
                printable(path)
            ));
        }
        let allowed = LONG_LIVED_RESOURCES.contains(&segments[0])
            || segments
                .iter()
                .any(|s| *s == "perfPowerMetrics" || *s == "diagnosticSignatures");
        (!allowed).then(|| {
            format!(
                "{} is not a resource that allows long-lived tokens",
                segments[0]
            )
        })
    }
}

const SCOPE: Field = Field::several(
    &identity::SCOPE,
    "Limit the token to a request, e.g. \"GET /v1/apps\" (repeatable); a token living over \
     20 minutes needs scopes that are all GETs on resources allowing long-lived tokens",
    false,
);

/// `token connect`: App Store Connect API tokens.
pub const CONNECT: Spec = Spec {
    name: "connect",
    family: Family::Token,
    about: "App Store Connect API (team or individual key)",
    api: "App Store Connect API",
    key_kinds: &[KeyKind::Connect, KeyKind::ConnectIndividual],
    lifetime: LifetimeRule::Exp {
        default_ttl: 600,
        max: MAX_LIFETIME,
    },
    cacheable: true,
    fields: &[
        Field {
            help: "Issuer ID of a team key (a UUID) [default: recorded with the key]",
            ..ISSUER
        },
        Field {
            name: "individual",
            help: "The key is an individual key: the token carries sub \"user\" instead of iss",
            value: Value::Flag,
            required: false,
        },
        SCOPE,
    ],
    jwt: Some(JwtShape {
        longer: Some(long_lived_limit),
        // The App Store Server family shares the aud, and its tokens carry bid.
        recognize: Some(|_, claims| !claims.contains_key("bid")),
        rules: Some(|_, claims| {
            let mut findings = issuer_or_user(claims);
            findings.extend(scope_entries(claims));
            findings
        }),
        ..JwtShape::new(
            true,
            Some(AUD_APP_STORE_CONNECT),
            &["iat", "exp", "aud"],
            &["iss", "sub", "scope"],
            IssuerShape::IssuerId,
            Some(MAX_LIFETIME),
        )
    }),
};

/// `token enterprise`: Enterprise Program API tokens.
pub const ENTERPRISE: Spec = Spec {
    name: "enterprise",
    family: Family::Token,
    about: "Enterprise Program API",
    api: "Enterprise Program API",
    key_kinds: &[KeyKind::Enterprise],
    lifetime: LifetimeRule::Exp {
        default_ttl: 600,
        max: MAX_ENTERPRISE_LIFETIME,
    },
    cacheable: true,
    fields: &[ISSUER, SCOPE],
    jwt: Some(JwtShape {
        rules: Some(|_, claims| scope_entries(claims)),
        ..JwtShape::new(
            true,
            Some(AUD_ENTERPRISE),
            &["iss", "iat", "exp", "aud"],
            &["scope"],
            IssuerShape::IssuerId,
            Some(MAX_ENTERPRISE_LIFETIME),
        )
    }),
};

/// The longer limit a token earns when every scope entry allows a long-lived token.
fn long_lived_limit(claims: &Object) -> Option<u64> {
    let Some(serde_json::Value::Array(entries)) = claims.get("scope") else {
        return None;
    };
    let long_lived = !entries.is_empty()
        && entries.iter().all(|e| {
            e.as_str()
                .and_then(|s| s.parse::<Scope>().ok())
                .is_some_and(|s| s.allows_long_lived())
        });
    long_lived.then_some(MAX_LONG_LIVED_LIFETIME)
}

/// A team key's token names its issuer; an individual key's carries sub "user".
fn issuer_or_user(claims: &Object) -> Vec<Finding> {
    let finding = match (claims.get("iss"), claims.get("sub")) {
        (Some(_), Some(_)) => Finding::new(
            "iss-and-sub",
            "the token has both iss (team key) and sub (individual key)",
        ),
        (None, None) => Finding::new(
            "claim-missing",
            "an App Store Connect token needs iss (team key) or sub \"user\" (individual key)",
        ),
        (None, Some(sub)) if sub != "user" => Finding::new(
            "sub",
            format!("sub is {sub}; individual keys use sub \"user\""),
        ),
        _ => return Vec::new(),
    };
    vec![finding]
}

/// Every scope entry is "METHOD /path".
fn scope_entries(claims: &Object) -> Vec<Finding> {
    let Some(scope) = claims.get("scope") else {
        return Vec::new();
    };
    let Some(entries) = scope.as_array() else {
        return vec![Finding::new(
            "scope",
            "scope must be an array of \"METHOD /path\" strings",
        )];
    };
    entries
        .iter()
        .filter(|entry| {
            entry
                .as_str()
                .and_then(|s| s.parse::<Scope>().ok())
                .is_none()
        })
        .map(|entry| {
            Finding::new(
                "scope",
                format!("scope entry {entry} is not \"METHOD /path\""),
            )
        })
        .collect()
}

/// An App Store Connect API token request.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Connect {
    /// A team key's issuer ID; recorded with the key when `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<IssuerId>,
    /// An individual key: `sub` is `"user"` and there is no `iss`.
    #[serde(default, skip_serializing_if = "is_false")]
    pub individual: bool,
    /// Optional scope: the requests the token is good for. A token living over
    /// [`MAX_LIFETIME`] (up to [`MAX_LONG_LIVED_LIFETIME`]) needs every entry to be a GET
    /// on a [`LONG_LIVED_RESOURCES`] resource.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scope: Vec<Scope>,
}

#[derive(Serialize)]
struct ConnectClaims<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    iss: Option<&'a IssuerId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sub: Option<&'static str>,
    iat: u64,
    exp: u64,
    aud: &'static str,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    scope: &'a [Scope],
}

impl JwtKind for Connect {
    fn validate(&self, _spec: &'static Spec) -> Result<(), Error> {
        if self.individual && self.issuer.is_some() {
            return Err(Error::NotApplicable {
                field: "individual",
                reason: "individual and issuer exclude each other: an individual key's tokens \
                         carry sub \"user\", not iss"
                    .to_owned(),
            });
        }
        Ok(())
    }

    fn times(&self, cx: &Context<'_>) -> Result<Times, Error> {
        let lifetime = cx.lifetime.ttl.saturating_add(cx.lifetime.skew);
        if lifetime <= MAX_LIFETIME || self.scope.is_empty() {
            return cx.times();
        }
        if let Some((scope, reason)) = self
            .scope
            .iter()
            .find_map(|s| s.long_lived_refusal().map(|r| (s, r)))
        {
            return Err(Error::LongLivedScope {
                scope: scope.as_str().to_owned(),
                reason,
            });
        }
        cx.lifetime.times(
            cx.now,
            "long-lived App Store Connect API",
            MAX_LONG_LIVED_LIFETIME,
        )
    }

    fn jwt(&self, cx: &Context<'_>) -> Result<Jwt, Error> {
        let times = self.times(cx)?;
        let individual = match cx.meta.map(|m| m.kind) {
            Some(KeyKind::ConnectIndividual) if self.issuer.is_some() => {
                return Err(Error::KindExcludes {
                    field: "issuer",
                    reason: format!(
                        "key {} is recorded as an individual key: its tokens carry sub \"user\", \
                         not an issuer",
                        cx.key_id
                    ),
                })
            }
            Some(KeyKind::Connect) if self.individual => {
                return Err(Error::KindExcludes {
                    field: "individual",
                    reason: format!(
                        "key {} is recorded as a team key: its tokens name an issuer, not sub \
                         \"user\"",
                        cx.key_id
                    ),
                })
            }
            Some(kind) => kind == KeyKind::ConnectIndividual,
            None => self.individual,
        };
        let issuer = if individual {
            None
        } else {
            Some(cx.identity(&identity::ISSUER, self.issuer.as_ref())?)
        };
        let claims = ConnectClaims {
            iss: issuer.as_ref(),
            sub: individual.then_some("user"),
            iat: times.iat,
            exp: times.exp,
            aud: AUD_APP_STORE_CONNECT,
            scope: &self.scope,
        };
        Jwt::new(HeaderStyle::Jwt, &claims, times)
    }
}

/// An Enterprise Program API token request.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Enterprise {
    /// The issuer ID; recorded with the key when `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<IssuerId>,
    /// Optional scope.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scope: Vec<Scope>,
}

#[derive(Serialize)]
struct EnterpriseClaims<'a> {
    iss: &'a IssuerId,
    iat: u64,
    exp: u64,
    aud: &'static str,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    scope: &'a [Scope],
}

impl JwtKind for Enterprise {
    fn jwt(&self, cx: &Context<'_>) -> Result<Jwt, Error> {
        let times = self.times(cx)?;
        let issuer = cx.identity(&identity::ISSUER, self.issuer.as_ref())?;
        let claims = EnterpriseClaims {
            iss: &issuer,
            iat: times.iat,
            exp: times.exp,
            aud: AUD_ENTERPRISE,
            scope: &self.scope,
        };
        Jwt::new(HeaderStyle::Jwt, &claims, times)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apple::tests::{now, parts, request, NOW};
    use crate::apple::JwtParams;
    use crate::jws::tests::MemorySigner;

    const ISS: &str = "57246542-96fe-1a63-e053-0824d011072a";

    fn connect(issuer: Option<&str>, scope: &[&str]) -> JwtParams {
        JwtParams::Connect(Connect {
            issuer: issuer.map(|i| i.parse().unwrap()),
            individual: issuer.is_none(),
            scope: scope.iter().map(|s| s.parse().unwrap()).collect(),
        })
    }

    fn sign(params: JwtParams, ttl: Option<u64>, skew: Option<u64>) -> crate::apple::SignedJwt {
        request(params, ttl, skew)
            .sign(&MemorySigner::new(), None, now())
            .unwrap()
    }

    #[test]
    fn team_token_has_apples_documented_shape() {
        let signed = sign(
            connect(Some(ISS), &["GET /v1/apps?filter[platform]=IOS"]),
            None,
            None,
        );
        let (header, claims) = parts(&signed.token);
        assert_eq!(header, r#"{"alg":"ES256","kid":"2X9R4HXF34","typ":"JWT"}"#);
        assert_eq!(
            claims,
            format!(
                r#"{{"iss":"57246542-96fe-1a63-e053-0824d011072a","iat":{},"exp":{},"aud":"appstoreconnect-v1","scope":["GET /v1/apps?filter[platform]=IOS"]}}"#,
                NOW - 60,
                NOW + 600
            )
        );
        assert_eq!((signed.issued_at, signed.expires_at), (NOW - 60, NOW + 600));
    }

    #[test]
    fn individual_token_has_sub_user_and_no_iss_or_empty_scope() {
        let signed = sign(connect(None, &[]), Some(300), Some(0));
        let (_, claims) = parts(&signed.token);
        assert_eq!(
            claims,
            format!(
                r#"{{"sub":"user","iat":{NOW},"exp":{},"aud":"appstoreconnect-v1"}}"#,
                NOW + 300
            )
        );
    }

    #[test]
    fn an_individual_request_with_an_issuer_is_refused() {
        let params = JwtParams::Connect(Connect {
            issuer: Some(ISS.parse().unwrap()),
            individual: true,
            scope: vec![],
        });
        let err = JwtRequest::new("2X9R4HXF34".parse().unwrap(), params, None, None).unwrap_err();
        assert!(matches!(err, Error::NotApplicable { .. }), "{err}");
    }

    #[test]
    fn lifetime_limit_is_twenty_minutes_including_the_backdate() {
        let new = |ttl| {
            JwtRequest::new(
                "2X9R4HXF34".parse().unwrap(),
                connect(None, &[]),
                Some(ttl),
                Some(60),
            )
        };
        assert!(new(1140).is_ok());
        assert!(matches!(
            new(1141),
            Err(Error::LifetimeTooLong { limit: 1200, .. })
        ));
    }

    #[test]
    fn scopes_are_method_and_path() {
        assert!("GET /v1/apps".parse::<Scope>().is_ok());
        for bad in [
            "",
            "GET",
            "get /v1/apps",
            "GET v1/apps",
            "GET /v1/apps extra",
            "GET /v1/\napps",
        ] {
            assert!(bad.parse::<Scope>().is_err(), "{bad:?} accepted");
        }
    }

    fn long_lived(scope: &[&str], ttl: u64) -> Result<Times, Error> {
        JwtRequest::new(
            "2X9R4HXF34".parse().unwrap(),
            connect(None, scope),
            Some(ttl),
            Some(60),
        )?
        .times(now())
    }

    #[test]
    fn long_lived_tokens_need_get_scopes_on_listed_resources() {
        let month = 30 * 24 * 3600;
        let ok = long_lived(
            &["GET /v1/ciProducts", "GET /v1/apps/1/perfPowerMetrics"],
            month,
        )
        .unwrap();
        assert_eq!(ok.exp - ok.iat, month + 60);
        assert!(long_lived(
            &["GET /v1/ciWorkflows/9?limit=5"],
            MAX_LONG_LIVED_LIFETIME - 60
        )
        .is_ok());
        let refused = |scope: &[&str], ttl| match long_lived(scope, ttl) {
            Err(Error::LongLivedScope { scope, reason }) => format!("{scope}: {reason}"),
            other => panic!("{other:?}"),
        };
        assert!(matches!(
            long_lived(&[], month),
            Err(Error::LifetimeTooLong { limit: 1200, .. })
        ));
        assert_eq!(
            refused(&["GET /v1/ciProducts", "POST /v1/ciBuildRuns"], month),
            "POST /v1/ciBuildRuns: POST is not GET"
        );
        assert_eq!(
            refused(&["GET /v1/apps"], month),
            "GET /v1/apps: apps is not a resource that allows long-lived tokens"
        );
        assert!(matches!(
            long_lived(&["GET /v1/ciProducts"], MAX_LONG_LIVED_LIFETIME),
            Err(Error::LifetimeTooLong { .. })
        ));
        // Finding 11: the resource is matched exactly, not by prefix.
        for sneaky in [
            "GET /v1/ciProducts/../apps",
            "GET //v1/ciProducts",
            "GET /v2/ciProducts",
            "GET /v1//ciProducts",
            "GET /v1/ciProducts/./x",
            "GET /v1/ciProducts%2F..%2Fapps",
            "GET /v1/ciProducts/",
        ] {
            assert!(
                matches!(
                    long_lived(&[sneaky], month),
                    Err(Error::LongLivedScope { .. })
                ),
                "{sneaky}"
            );
        }
    }

    #[test]
    fn enterprise_token_has_its_own_aud_and_no_long_lived_exception() {
        let params = || {
            JwtParams::Enterprise(Enterprise {
                issuer: Some(ISS.parse().unwrap()),
                scope: vec![],
            })
        };
        let (header, claims) = parts(&sign(params(), Some(600), Some(60)).token);
        assert_eq!(header, r#"{"alg":"ES256","kid":"2X9R4HXF34","typ":"JWT"}"#);
        assert_eq!(
            claims,
            format!(
                r#"{{"iss":"57246542-96fe-1a63-e053-0824d011072a","iat":{},"exp":{},"aud":"apple-developer-enterprise-v1"}}"#,
                NOW - 60,
                NOW + 600
            )
        );
        assert!(matches!(
            JwtRequest::new(
                "2X9R4HXF34".parse().unwrap(),
                params(),
                Some(1141),
                Some(60)
            ),
            Err(Error::LifetimeTooLong { limit: 1200, .. })
        ));
    }
}
