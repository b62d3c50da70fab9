//! App Store Connect API tokens (team and individual keys).

use std::time::SystemTime;

use serde::Serialize;

use super::{sign_jwt, Lifetime, SignedToken, Times, AUD_APP_STORE_CONNECT};
use crate::ids::printable;
use crate::{Error, Es256Signer, IssuerId};

/// The most an App Store Connect token may live, `exp - iat`, in seconds.
pub const MAX_LIFETIME: u64 = 20 * 60;

/// Who the token speaks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Issuer {
    /// A team key: `iss` is the team's issuer ID.
    Team(IssuerId),
    /// An individual key: `sub` is `"user"` and there is no `iss`.
    Individual,
}

/// One entry of a token's `scope`: `METHOD /path[?query]`, e.g. `GET /v1/apps`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Scope(String);

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
#[derive(Debug, Clone)]
pub struct ConnectToken {
    /// Team issuer ID or individual key.
    pub issuer: Issuer,
    /// Optional scope: the requests the token is good for.
    pub scope: Vec<Scope>,
    /// Lifetime; `exp - iat` at most [`MAX_LIFETIME`].
    pub lifetime: Lifetime,
}

#[derive(Serialize)]
struct Claims<'a> {
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

impl ConnectToken {
    /// The token's `iat` and `exp` if signed at `now`; an error if the lifetime
    /// breaks the API's limit. Lets a caller check a request before logging in.
    pub fn times(&self, now: SystemTime) -> Result<Times, Error> {
        self.lifetime
            .times(now, "App Store Connect API", MAX_LIFETIME)
    }

    /// Builds the claims and has `signer` sign them.
    pub fn sign(&self, signer: &dyn Es256Signer, now: SystemTime) -> Result<SignedToken, Error> {
        let times = self.times(now)?;
        let (iss, sub) = match &self.issuer {
            Issuer::Team(id) => (Some(id), None),
            Issuer::Individual => (None, Some("user")),
        };
        let claims = Claims {
            iss,
            sub,
            iat: times.iat,
            exp: times.exp,
            aud: AUD_APP_STORE_CONNECT,
            scope: &self.scope,
        };
        sign_jwt(signer, &claims, times)
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
}
