//! App Store Connect API tokens (team and individual keys) and Enterprise Program API
//! tokens.

use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use super::{
    sign_jwt, AppleToken, HeaderStyle, Lifetime, SignedToken, Times, AUD_APP_STORE_CONNECT,
    AUD_ENTERPRISE,
};
use crate::ids::printable;
use crate::{Error, Es256Signer, IssuerId};

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

/// Who the token speaks for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Issuer {
    /// A team key: `iss` is the team's issuer ID.
    Team(IssuerId),
    /// An individual key: `sub` is `"user"` and there is no `iss`.
    Individual,
}

/// One entry of a token's `scope`: `METHOD /path[?query]`, e.g. `GET /v1/apps`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct Scope(String);

impl TryFrom<String> for Scope {
    type Error = Error;

    fn try_from(s: String) -> Result<Self, Error> {
        s.parse()
    }
}

impl From<Scope> for String {
    fn from(scope: Scope) -> String {
        scope.0
    }
}

impl Scope {
    /// The entry as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether this entry may appear in a long-lived token.
    pub(crate) fn allows_long_lived(&self) -> bool {
        self.long_lived_refusal().is_none()
    }

    /// Why this entry may not appear in a long-lived token, if it may not.
    fn long_lived_refusal(&self) -> Option<String> {
        let (method, target) = self.0.split_once(' ')?;
        if method != "GET" {
            return Some(format!("{method} is not GET"));
        }
        let path = target.split('?').next().unwrap_or(target);
        let mut segments = path.split('/').filter(|s| !s.is_empty());
        let _version = segments.next();
        let segments: Vec<&str> = segments.collect();
        let allowed = segments
            .first()
            .is_some_and(|first| LONG_LIVED_RESOURCES.contains(first))
            || segments
                .iter()
                .any(|s| *s == "perfPowerMetrics" || *s == "diagnosticSignatures");
        (!allowed).then(|| {
            format!(
                "{} is not a resource that allows long-lived tokens",
                segments.first().unwrap_or(&path)
            )
        })
    }
}

impl std::str::FromStr for Scope {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        let valid = s.split_once(' ').is_some_and(|(method, path)| {
            !method.is_empty()
                && method.bytes().all(|b| b.is_ascii_uppercase())
                && path.starts_with('/')
                && !path.chars().any(|c| c.is_whitespace() || c.is_control())
        });
        if valid {
            Ok(Scope(s.to_owned()))
        } else {
            Err(Error::InvalidScope {
                value: printable(s),
            })
        }
    }
}

/// An App Store Connect API token request.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ConnectToken {
    /// Team issuer ID or individual key.
    pub issuer: Issuer,
    /// Optional scope: the requests the token is good for.
    pub scope: Vec<Scope>,
    /// Lifetime; `exp - iat` at most [`MAX_LIFETIME`], or [`MAX_LONG_LIVED_LIFETIME`]
    /// when every scope entry is a GET on a [`LONG_LIVED_RESOURCES`] resource.
    pub lifetime: Lifetime,
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

const CONNECT_API: &str = "App Store Connect API";

impl AppleToken for ConnectToken {
    fn times(&self, now: SystemTime) -> Result<Times, Error> {
        let lifetime = self.lifetime.ttl.saturating_add(self.lifetime.skew);
        if lifetime <= MAX_LIFETIME || self.scope.is_empty() {
            return self.lifetime.times(now, CONNECT_API, MAX_LIFETIME);
        }
        if let Some((scope, reason)) = self
            .scope
            .iter()
            .find_map(|s| s.long_lived_refusal().map(|r| (s, r)))
        {
            return Err(Error::LongLivedScope {
                scope: scope.0.clone(),
                reason,
            });
        }
        self.lifetime.times(
            now,
            "long-lived App Store Connect API",
            MAX_LONG_LIVED_LIFETIME,
        )
    }

    fn sign(&self, signer: &dyn Es256Signer, now: SystemTime) -> Result<SignedToken, Error> {
        let times = self.times(now)?;
        let (iss, sub) = match &self.issuer {
            Issuer::Team(id) => (Some(id), None),
            Issuer::Individual => (None, Some("user")),
        };
        let claims = ConnectClaims {
            iss,
            sub,
            iat: times.iat,
            exp: times.exp,
            aud: AUD_APP_STORE_CONNECT,
            scope: &self.scope,
        };
        sign_jwt(signer, HeaderStyle::Jwt, &claims, times)
    }
}

/// An Enterprise Program API token request.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EnterpriseToken {
    /// The issuer ID.
    pub issuer: IssuerId,
    /// Optional scope.
    pub scope: Vec<Scope>,
    /// Lifetime; `exp - iat` at most [`MAX_ENTERPRISE_LIFETIME`].
    pub lifetime: Lifetime,
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

impl AppleToken for EnterpriseToken {
    fn times(&self, now: SystemTime) -> Result<Times, Error> {
        self.lifetime
            .times(now, "Enterprise Program API", MAX_ENTERPRISE_LIFETIME)
    }

    fn sign(&self, signer: &dyn Es256Signer, now: SystemTime) -> Result<SignedToken, Error> {
        let times = self.times(now)?;
        let claims = EnterpriseClaims {
            iss: &self.issuer,
            iat: times.iat,
            exp: times.exp,
            aud: AUD_ENTERPRISE,
            scope: &self.scope,
        };
        sign_jwt(signer, HeaderStyle::Jwt, &claims, times)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apple::tests::{now, parts, NOW};
    use crate::jws::tests::MemorySigner;

    #[test]
    fn team_token_has_apples_documented_shape() {
        let request = ConnectToken {
            issuer: Issuer::Team("57246542-96fe-1a63-e053-0824d011072a".parse().unwrap()),
            scope: vec!["GET /v1/apps?filter[platform]=IOS".parse().unwrap()],
            lifetime: Lifetime::default(),
        };
        let signed = request.sign(&MemorySigner::new(), now()).unwrap();
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
        let request = ConnectToken {
            issuer: Issuer::Individual,
            scope: vec![],
            lifetime: Lifetime { ttl: 300, skew: 0 },
        };
        let (_, claims) = parts(&request.sign(&MemorySigner::new(), now()).unwrap().token);
        assert_eq!(
            claims,
            format!(
                r#"{{"sub":"user","iat":{NOW},"exp":{},"aud":"appstoreconnect-v1"}}"#,
                NOW + 300
            )
        );
    }

    #[test]
    fn lifetime_limit_is_twenty_minutes_including_the_backdate() {
        let token = |ttl| ConnectToken {
            issuer: Issuer::Individual,
            scope: vec![],
            lifetime: Lifetime { ttl, skew: 60 },
        };
        assert!(token(1140).sign(&MemorySigner::new(), now()).is_ok());
        assert!(matches!(
            token(1141).sign(&MemorySigner::new(), now()),
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
        ConnectToken {
            issuer: Issuer::Individual,
            scope: scope.iter().map(|s| s.parse().unwrap()).collect(),
            lifetime: Lifetime { ttl, skew: 60 },
        }
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
    }

    #[test]
    fn enterprise_token_has_its_own_aud_and_no_long_lived_exception() {
        let request = |ttl| EnterpriseToken {
            issuer: "57246542-96fe-1a63-e053-0824d011072a".parse().unwrap(),
            scope: vec![],
            lifetime: Lifetime { ttl, skew: 60 },
        };
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
                r#"{{"iss":"57246542-96fe-1a63-e053-0824d011072a","iat":{},"exp":{},"aud":"apple-developer-enterprise-v1"}}"#,
                NOW - 60,
                NOW + 600
            )
        );
        assert!(matches!(
            request(1141).times(now()),
            Err(Error::LifetimeTooLong { limit: 1200, .. })
        ));
    }
}
