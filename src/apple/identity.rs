//! The identities a token names — whose key, which team, which app, service or origin —
//! and the scopes it is limited to, one entry each. The front ends iterate over this
//! table: the command line's options (`--FIELD`, for `import`, `assign` and each kind
//! that takes it, and its environment variable where it has one), the protocol's fields,
//! `keys`, the resolution of a request against what is recorded with its key, and the
//! service's policy (`FIELDs = [...]`). Which key kinds record an identity is said by the
//! list of key kinds ([`KeyKind::identities`](super::metadata::KeyKind::identities)). The
//! table names no kind: it sits below them.

use std::str::FromStr;

use crate::{AdsTeamId, BundleId, Error, IssuerId, OAuthId, Origin, Scope, ServiceId, TeamId};

/// The parser of `T`, as an identity (and a request field) holds it.
pub fn check<T: FromStr<Err = Error>>(s: &str) -> Result<(), Error> {
    s.parse::<T>().map(drop)
}

/// A parser, and the canonical form of what it takes.
type Parsers = (
    fn(&str) -> Result<(), Error>,
    fn(&str) -> Result<String, Error>,
);

/// The parser and canonical form of `T`.
const fn parsed<T: FromStr<Err = Error> + std::fmt::Display>() -> Parsers {
    (check::<T>, canonical::<T>)
}

/// A value of `T` as `T` writes it (an issuer ID in lower case…), or why it is none.
pub fn canonical<T: FromStr<Err = Error> + std::fmt::Display>(s: &str) -> Result<String, Error> {
    s.parse::<T>().map(|value| value.to_string())
}

/// One identity.
#[derive(Debug)]
pub struct Identity {
    /// Its name in the protocol, in recorded metadata and in the policy (there in the
    /// plural); the command line's option is the same in kebab-case.
    pub field: &'static str,
    /// What it is, as messages name it: `issuer ID`.
    pub about: &'static str,
    /// How help names a value: `UUID`.
    pub placeholder: &'static str,
    /// The parser of a value.
    pub check: fn(&str) -> Result<(), Error>,
    /// A value as the token carries it and a key records it (an issuer ID in lower
    /// case), or why it is none.
    pub canonical: fn(&str) -> Result<String, Error>,
    /// Whether it is an OAuth ID that carries its key kind's prefix (`BUSINESSAPI.…`).
    pub prefixed: bool,
    /// Whether the service's policy can limit a caller to some of its values.
    pub constrained: bool,
    /// Whether the command line also reads it from its environment variable.
    pub from_environment: bool,
}

const fn identity(
    field: &'static str,
    about: &'static str,
    placeholder: &'static str,
    (check, canonical): Parsers,
) -> Identity {
    Identity {
        field,
        about,
        placeholder,
        check,
        canonical,
        prefixed: false,
        constrained: true,
        from_environment: false,
    }
}

/// An App Store Connect issuer ID.
pub const ISSUER: Identity = Identity {
    from_environment: true,
    ..identity("issuer", "issuer ID", "UUID", parsed::<IssuerId>())
};
/// A developer team's Team ID.
pub const TEAM_ID: Identity = Identity {
    from_environment: true,
    ..identity("team_id", "Team ID", "ID", parsed::<TeamId>())
};
/// An OAuth client ID.
pub const CLIENT_ID: Identity = Identity {
    prefixed: true,
    ..identity("client_id", "client ID", "ID", parsed::<OAuthId>())
};
/// An Apple Ads team ID, `SEARCHADS.<uuid>`.
pub const ADS_TEAM_ID: Identity = Identity {
    prefixed: true,
    constrained: false,
    ..identity("ads_team_id", "ads team ID", "ID", parsed::<AdsTeamId>())
};
/// An app's bundle ID.
pub const BUNDLE_ID: Identity = identity("bundle_id", "bundle ID", "BUNDLE", parsed::<BundleId>());
/// A WeatherKit Service ID.
pub const SERVICE_ID: Identity = identity("service_id", "Service ID", "ID", parsed::<ServiceId>());
/// A web origin.
pub const ORIGIN: Identity = identity("origin", "origin", "ORIGIN", parsed::<Origin>());
/// An App Store Connect scope entry.
pub const SCOPE: Identity = identity("scope", "scope", "\"METHOD /path\"", parsed::<Scope>());

/// Every identity, in the order the command line lists them.
pub const ALL: &[&Identity] = &[
    &ISSUER,
    &TEAM_ID,
    &CLIENT_ID,
    &ADS_TEAM_ID,
    &BUNDLE_ID,
    &SERVICE_ID,
    &ORIGIN,
    &SCOPE,
];

/// The identity named `field`.
pub fn find(field: &str) -> Option<&'static Identity> {
    ALL.iter().copied().find(|i| i.field == field)
}
