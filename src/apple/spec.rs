//! What each kind of request states about itself, in one place: its name, which recorded
//! key kinds may sign it, its lifetime rule (default TTL, maximum), whether its results
//! may be cached, the fields a request carries, and — for JWTs — the header and claims
//! `check` expects. The command line builds its options from [`Spec::fields`], the
//! agent's protocol carries the same fields, and `check` reads [`Spec::jwt`].

use std::str::FromStr;
use std::time::SystemTime;

use super::identity::{self, Identity};
use super::lifetime::{unix, Lifetime, Times};
use super::metadata::{KeyKind, KeyMetadata};
use super::signed::Jwt;
use crate::{Error, Es256Signer, KeyId};

/// Everything one kind of request states about itself.
#[derive(Debug)]
pub struct Spec {
    /// The kind's name: `p8hsm token NAME` or `p8hsm sign NAME`, and `"kind"` in the
    /// agent's protocol.
    pub name: &'static str,
    /// A JWT for an API (`token`), or a signature (`sign`).
    pub family: Family,
    /// One line saying what it is for.
    pub about: &'static str,
    /// The API's name, as error messages use it.
    pub api: &'static str,
    /// The recorded key kinds that may sign it.
    pub key_kinds: &'static [KeyKind],
    /// How long its results live.
    pub lifetime: LifetimeRule,
    /// Whether a result may be handed out again (a token cache); never for results that
    /// carry one-time values.
    pub cacheable: bool,
    /// The request's own fields, besides `kind`, `key_id` and the lifetime.
    pub fields: &'static [Field],
    /// The JWT's header and claims, for `check`; `None` for signatures that are not JWTs.
    pub jwt: Option<JwtShape>,
}

/// Whether a kind is a token (`p8hsm token`) or a signature (`p8hsm sign`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// A JWT that authorizes calls to an API.
    Token,
    /// A signature over something else (StoreKit offers, requests).
    Signature,
}

impl Family {
    /// The command that makes it: `token` or `sign`.
    pub fn command(self) -> &'static str {
        match self {
            Family::Token => "token",
            Family::Signature => "sign",
        }
    }
}

/// How a kind's `iat` and `exp` are set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LifetimeRule {
    /// `iat = now - skew`, `exp = now + ttl`, and `exp - iat` at most `max` seconds.
    Exp {
        /// The TTL when none is asked for.
        default_ttl: u64,
        /// The most `exp - iat` may be.
        max: u64,
    },
    /// No `exp` claim: Apple accepts the token `validity` seconds after `iat`
    /// (`iat = now - skew`).
    Provider {
        /// How long Apple accepts the token.
        validity: u64,
    },
    /// `iat = now` and no `exp` (Apple derives expiry from `iat`), or no time claims.
    Instant,
}

/// The seconds `iat` is backdated unless a request says otherwise, so a signer whose
/// clock runs a little ahead of Apple's still gets accepted.
pub const DEFAULT_SKEW: u64 = 60;

/// One field of a request.
#[derive(Debug)]
pub struct Field {
    /// The name in the agent's protocol (snake_case); the command line's option is the
    /// same in kebab-case.
    pub name: &'static str,
    /// What it is, for the command line's help and the protocol's documentation; a
    /// field named in braces (`{mapkit_js}`) is written as each front end names it.
    pub help: &'static str,
    /// Its type.
    pub value: Value,
    /// Whether a request must give it.
    pub required: bool,
}

/// The type of a field.
#[derive(Debug)]
pub enum Value {
    /// One string, checked by its type's parser.
    Text {
        /// How `--help` names the value, e.g. `UUID`.
        placeholder: &'static str,
        /// The type's parser.
        check: fn(&str) -> Result<(), Error>,
    },
    /// Several strings (a JSON array; a repeatable option).
    List {
        /// How `--help` names one value.
        placeholder: &'static str,
        /// The type's parser, for each value.
        check: fn(&str) -> Result<(), Error>,
    },
    /// A switch: `true` when given.
    Flag,
    /// `true` or `false`, given explicitly.
    Bool,
    /// A whole number.
    Number {
        /// How `--help` names the value.
        placeholder: &'static str,
    },
    /// A string the command line reads from a file (`--NAME-file FILE|-`).
    File {
        /// The most bytes it may hold.
        limit: usize,
        /// The field's parser.
        check: fn(&str) -> Result<(), Error>,
    },
    /// A digest of a file: the command line reads the file (`--NAME-file FILE|-`, the
    /// field's name without its `_sha256`) and the request carries `digest` of its bytes.
    Digest {
        /// The most bytes the file may hold.
        limit: usize,
        /// What the request carries for the bytes read.
        digest: fn(&[u8]) -> String,
        /// The field's parser.
        check: fn(&str) -> Result<(), Error>,
    },
}

/// The issuer ID field the App Store Connect, App Store Server and StoreKit kinds share.
pub(crate) const ISSUER: Field = Field::one(
    &identity::ISSUER,
    "Issuer ID (a UUID) [default: recorded with the key]",
    false,
);

/// The bundle ID field the App Store Server and StoreKit kinds share.
pub(crate) const BUNDLE_ID: Field = Field::one(
    &identity::BUNDLE_ID,
    "The app's bundle ID (claim bid)",
    true,
);

impl Field {
    /// The request field that gives one value of `identity`.
    pub(crate) const fn one(
        identity: &'static Identity,
        help: &'static str,
        required: bool,
    ) -> Field {
        Field::of(identity, help, required, false)
    }

    /// The request field that gives several values of `identity` (a JSON array; a
    /// repeatable option).
    pub(crate) const fn several(
        identity: &'static Identity,
        help: &'static str,
        required: bool,
    ) -> Field {
        Field::of(identity, help, required, true)
    }

    const fn of(
        identity: &'static Identity,
        help: &'static str,
        required: bool,
        several: bool,
    ) -> Field {
        let (placeholder, check) = (identity.placeholder, identity.check);
        Field {
            name: identity.field,
            help,
            value: if several {
                Value::List { placeholder, check }
            } else {
                Value::Text { placeholder, check }
            },
            required,
        }
    }
}

pub use super::identity::check;

/// A JWT's header and claims as Apple expects them.
#[derive(Debug, Clone, Copy)]
pub struct JwtShape {
    /// Whether the header carries `typ: "JWT"`.
    pub typ: bool,
    /// Header parameters the kind carries besides `alg`, `kid` and `typ`.
    pub header: &'static [&'static str],
    /// The `aud` claim, if the kind has one.
    pub aud: Option<&'static str>,
    /// Claims that must be present.
    pub required: &'static [&'static str],
    /// Claims that may be present.
    pub optional: &'static [&'static str],
    /// What `iss` holds.
    pub issuer: IssuerShape,
    /// The most `exp - iat` may be as Apple documents it; `None` where Apple documents
    /// no limit (p8hsm may still hold its own tokens to one, in [`Spec::lifetime`]).
    pub limit: Option<u64>,
    /// A longer limit that some claims earn (long-lived App Store Connect tokens).
    pub longer: Option<fn(&Object) -> Option<u64>>,
    /// Whether `check` takes a token whose kind is not named for this kind, among those
    /// of its `aud` (given the header and claims); `None`: its `aud` alone tells. Of
    /// kinds that no claim tells apart, the first in the list of kinds is reported.
    pub recognize: Option<fn(&Object, &Object) -> bool>,
    /// The kind's own rules beyond its claims' names, `aud` and `iss`: a finding for each
    /// one the header and claims break.
    pub rules: Option<fn(&Object, &Object) -> Vec<Finding>>,
}

/// A JWT's header or claims, decoded.
pub type Object = serde_json::Map<String, serde_json::Value>;

/// One reason Apple would reject a token.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Finding {
    /// A stable identifier, e.g. `lifetime`.
    pub code: &'static str,
    /// What is wrong, in one line.
    pub message: String,
}

impl Finding {
    /// A finding.
    pub fn new(code: &'static str, message: impl Into<String>) -> Finding {
        Finding {
            code,
            message: message.into(),
        }
    }
}

impl JwtShape {
    /// A shape told by its `aud` alone, with no rules of its own.
    pub const fn new(
        typ: bool,
        aud: Option<&'static str>,
        required: &'static [&'static str],
        optional: &'static [&'static str],
        issuer: IssuerShape,
        limit: Option<u64>,
    ) -> JwtShape {
        JwtShape {
            typ,
            header: &[],
            aud,
            required,
            optional,
            issuer,
            limit,
            longer: None,
            recognize: None,
            rules: None,
        }
    }
}

/// What a JWT's `iss` holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IssuerShape {
    /// An App Store Connect issuer ID (a UUID).
    IssuerId,
    /// A 10-character Team ID.
    TeamId,
    /// An OAuth ID (`<prefix>.<uuid>`); with `is_sub`, the same as `sub` (a client
    /// assertion), else `sub` is another ID of the same form.
    OAuth {
        /// `BUSINESSAPI`, `SCHOOLAPI` or `SEARCHADS`.
        prefix: &'static str,
        /// Whether `iss` and `sub` are the one client ID.
        is_sub: bool,
    },
}

impl Spec {
    /// The command that makes it, e.g. `token connect`.
    pub fn command(&self) -> String {
        format!("{} {}", self.family.command(), self.name)
    }

    /// Whether its tokens may live long enough to be kept in a file and renewed before
    /// they lapse (`--out FILE --renew-within DURATION`): tokens that may live over a day.
    pub fn renewable(&self) -> bool {
        matches!(self.lifetime, LifetimeRule::Exp { max, .. } if max > RENEWABLE_AFTER)
    }

    /// The longest `ttl` a request of this kind may ask for with `skew` (the default
    /// when `None`): what leaves room for the skew under the kind's maximum. `None` for
    /// kinds without `exp`.
    pub fn longest_ttl(&self, skew: Option<u64>) -> Option<u64> {
        match self.lifetime {
            LifetimeRule::Exp { max, .. } => Some(max.saturating_sub(skew.unwrap_or(DEFAULT_SKEW))),
            _ => None,
        }
    }

    /// Refuses a key ID in a form no key of this kind has.
    pub fn check_key_id(&self, key_id: &KeyId) -> Result<(), Error> {
        let Some(first) = self.key_kinds.first() else {
            return Ok(());
        };
        if self
            .key_kinds
            .iter()
            .any(|kind| kind.key_id_format() == key_id.format())
        {
            return Ok(());
        }
        first.check_key_id(key_id)
    }
}

/// Tokens that may live longer than this (a day) can be kept in a file and renewed.
const RENEWABLE_AFTER: u64 = 24 * 60 * 60;

/// What signing needs besides the request: the key, what is recorded with it, the
/// lifetime asked for, and the time.
pub(crate) struct Context<'a> {
    pub(crate) key_id: &'a KeyId,
    pub(crate) spec: &'static Spec,
    pub(crate) lifetime: Lifetime,
    pub(crate) meta: Option<&'a KeyMetadata>,
    pub(crate) now: SystemTime,
}

impl Context<'_> {
    /// The value of `identity` given in the request or recorded with the key (which
    /// must agree when both are there).
    pub(crate) fn identity<T>(&self, identity: &Identity, given: Option<&T>) -> Result<T, Error>
    where
        T: FromStr<Err = Error> + PartialEq + std::fmt::Display + Clone,
    {
        let resolved = match self.meta {
            Some(meta) => meta.resolve(identity, self.key_id, given.cloned())?,
            None => given.cloned(),
        };
        resolved.ok_or(Error::MissingInput {
            field: identity.field,
            what: identity.about,
            why: "the token names it, and none is recorded with the key",
        })
    }

    /// The times the kind's lifetime rule gives at `now`.
    pub(crate) fn times(&self) -> Result<Times, Error> {
        match self.spec.lifetime {
            LifetimeRule::Exp { max, .. } => self.lifetime.times(self.now, self.spec.api, max),
            LifetimeRule::Provider { validity } => {
                if self.lifetime.skew >= validity {
                    return Err(Error::SkewTooLarge {
                        api: self.spec.api,
                        skew: self.lifetime.skew,
                        limit: validity,
                    });
                }
                let iat = unix(self.now)?.saturating_sub(self.lifetime.skew);
                Ok(Times {
                    iat,
                    exp: iat + validity,
                })
            }
            LifetimeRule::Instant => {
                let iat = unix(self.now)?;
                Ok(Times { iat, exp: iat })
            }
        }
    }
}

/// One kind of JWT: its cross-field rules, its times and its claims.
pub(crate) trait JwtKind: Send + Sync {
    /// Rules between fields, checked when a request is made.
    fn validate(&self, _spec: &'static Spec) -> Result<(), Error> {
        Ok(())
    }

    /// `iat` and `exp` if signed now, or the rule the request breaks. Needs nothing
    /// recorded with the key, so a caller can refuse a request before logging in.
    fn times(&self, cx: &Context<'_>) -> Result<Times, Error> {
        cx.times()
    }

    /// Resolves identities against what is recorded with the key and builds the header
    /// and claims.
    fn jwt(&self, cx: &Context<'_>) -> Result<Jwt, Error>;
}

/// One kind of signature that is never reused (it carries a one-time nonce).
pub(crate) trait SignatureKind: Send + Sync {
    /// Rules between fields, checked when a request is made.
    fn validate(&self, _spec: &'static Spec) -> Result<(), Error> {
        Ok(())
    }

    /// Resolves identities, builds what is signed and has `signer` sign it.
    fn sign(
        &self,
        cx: &Context<'_>,
        signer: &dyn Es256Signer,
    ) -> Result<super::signed::Signed, Error>;
}

/// `#[serde(skip_serializing_if)]` for switches.
pub(crate) fn is_false(b: &bool) -> bool {
    !b
}
