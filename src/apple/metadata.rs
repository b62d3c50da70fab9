//! What a key is for, recorded beside it on the token at import, so later commands need
//! only `--key-id` and a command that contradicts the key's kind is refused.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::ids::printable;
use crate::{Error, IssuerId, KeyId, TeamId};

/// The kinds of key Apple issues as `.p8` files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeyKind {
    /// App Store Connect API team key.
    Connect,
    /// App Store Connect API individual key.
    ConnectIndividual,
    /// In-App Purchase key (App Store Server API family, StoreKit signatures).
    InAppPurchase,
    /// Enterprise Program API key.
    Enterprise,
    /// Developer-account key (APNs, DeviceCheck, Sign in with Apple, MusicKit,
    /// WeatherKit, MapKit).
    Developer,
}

impl KeyKind {
    /// Every kind, in the order the CLI lists them.
    pub const ALL: [KeyKind; 5] = [
        KeyKind::Connect,
        KeyKind::ConnectIndividual,
        KeyKind::InAppPurchase,
        KeyKind::Enterprise,
        KeyKind::Developer,
    ];

    /// The name used on the command line and on the token.
    pub fn name(self) -> &'static str {
        match self {
            KeyKind::Connect => "connect",
            KeyKind::ConnectIndividual => "connect-individual",
            KeyKind::InAppPurchase => "in-app-purchase",
            KeyKind::Enterprise => "enterprise",
            KeyKind::Developer => "developer",
        }
    }

    fn article(self) -> &'static str {
        match self {
            KeyKind::InAppPurchase | KeyKind::Enterprise => "an",
            _ => "a",
        }
    }
}

impl fmt::Display for KeyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for KeyKind {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        KeyKind::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| Error::InvalidId {
                what: "key kind",
                value: printable(s),
                rule: "use connect, connect-individual, in-app-purchase, enterprise or developer",
            })
    }
}

/// What is recorded with a key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyMetadata {
    /// What the key is for.
    pub kind: KeyKind,
    /// The issuer ID (App Store Connect team, In-App Purchase and Enterprise keys).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<IssuerId>,
    /// The Team ID (developer keys).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team_id: Option<TeamId>,
}

impl KeyMetadata {
    /// Metadata for a key of `kind`, refusing identities that kind does not use.
    pub fn new(
        kind: KeyKind,
        issuer: Option<IssuerId>,
        team_id: Option<TeamId>,
    ) -> Result<Self, Error> {
        let takes_issuer = matches!(
            kind,
            KeyKind::Connect | KeyKind::InAppPurchase | KeyKind::Enterprise
        );
        if issuer.is_some() && !takes_issuer {
            return Err(Error::InvalidMetadata(format!(
                "{} keys have no issuer ID",
                kind.name()
            )));
        }
        if team_id.is_some() && kind != KeyKind::Developer {
            return Err(Error::InvalidMetadata(format!(
                "only developer keys have a Team ID, not {} keys",
                kind.name()
            )));
        }
        Ok(KeyMetadata {
            kind,
            issuer,
            team_id,
        })
    }

    /// The bytes stored on the token.
    pub fn to_bytes(&self) -> Vec<u8> {
        // Serializing plain strings and enums cannot fail.
        serde_json::to_vec(self).expect("metadata serializes")
    }

    /// Reads stored bytes.
    pub fn from_bytes(key_id: &KeyId, bytes: &[u8]) -> Result<Self, Error> {
        serde_json::from_slice(bytes).map_err(|source| Error::MetadataUnreadable {
            key_id: key_id.to_string(),
            source,
        })
    }

    /// Refuses `command` unless the key is one of `allowed` kinds.
    pub fn allow(&self, key_id: &KeyId, command: &str, allowed: &[KeyKind]) -> Result<(), Error> {
        if allowed.contains(&self.kind) {
            return Ok(());
        }
        let expected: Vec<String> = allowed
            .iter()
            .map(|k| format!("{} {}", k.article(), k.name()))
            .collect();
        Err(Error::KeyKindMismatch {
            key_id: key_id.to_string(),
            recorded: format!("{} {}", self.kind.article(), self.kind.name()),
            command: command.to_owned(),
            expected: expected.join(" or "),
        })
    }

    /// The issuer to use: the one given, which must match the recorded one, or the
    /// recorded one.
    pub fn issuer(
        &self,
        key_id: &KeyId,
        given: Option<IssuerId>,
    ) -> Result<Option<IssuerId>, Error> {
        resolve("--issuer", key_id, given, self.issuer.clone())
    }

    /// The Team ID to use, as [`KeyMetadata::issuer`].
    pub fn team_id(&self, key_id: &KeyId, given: Option<TeamId>) -> Result<Option<TeamId>, Error> {
        resolve("--team-id", key_id, given, self.team_id.clone())
    }
}

fn resolve<T: PartialEq + fmt::Display>(
    what: &'static str,
    key_id: &KeyId,
    given: Option<T>,
    recorded: Option<T>,
) -> Result<Option<T>, Error> {
    match (given, recorded) {
        (Some(given), Some(recorded)) if given != recorded => Err(Error::MetadataContradiction {
            what,
            given: given.to_string(),
            recorded: recorded.to_string(),
            key_id: key_id.to_string(),
        }),
        (given, recorded) => Ok(given.or(recorded)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_id() -> KeyId {
        "2X9R4HXF34".parse().unwrap()
    }

    #[test]
    fn metadata_round_trips_through_its_stored_bytes() {
        let meta = KeyMetadata::new(
            KeyKind::InAppPurchase,
            Some("57246542-96fe-1a63-e053-0824d011072a".parse().unwrap()),
            None,
        )
        .unwrap();
        let bytes = meta.to_bytes();
        assert_eq!(
            bytes,
            br#"{"kind":"in-app-purchase","issuer":"57246542-96fe-1a63-e053-0824d011072a"}"#
        );
        assert_eq!(KeyMetadata::from_bytes(&key_id(), &bytes).unwrap(), meta);
        assert!(KeyMetadata::from_bytes(&key_id(), br#"{"kind":"nope"}"#).is_err());
        assert!(
            KeyMetadata::from_bytes(&key_id(), br#"{"kind":"developer","team_id":"bad"}"#).is_err()
        );
    }

    #[test]
    fn identities_must_fit_the_kind() {
        let team: TeamId = "A1B2C3D4E5".parse().unwrap();
        assert!(KeyMetadata::new(KeyKind::Developer, None, Some(team.clone())).is_ok());
        assert!(KeyMetadata::new(KeyKind::Connect, None, Some(team)).is_err());
        let issuer: IssuerId = "57246542-96fe-1a63-e053-0824d011072a".parse().unwrap();
        assert!(KeyMetadata::new(KeyKind::ConnectIndividual, Some(issuer.clone()), None).is_err());
        assert!(KeyMetadata::new(KeyKind::Developer, Some(issuer), None).is_err());
    }

    #[test]
    fn a_command_for_another_kind_is_refused_with_both_kinds_named() {
        let meta = KeyMetadata::new(KeyKind::InAppPurchase, None, None).unwrap();
        let err = meta
            .allow(&key_id(), "token apns", &[KeyKind::Developer])
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "key 2X9R4HXF34 is recorded as an in-app-purchase key; `token apns` needs a developer key"
        );
        assert!(meta
            .allow(&key_id(), "token server", &[KeyKind::InAppPurchase])
            .is_ok());
    }

    #[test]
    fn given_identities_must_match_recorded_ones() {
        let recorded: IssuerId = "57246542-96fe-1a63-e053-0824d011072a".parse().unwrap();
        let other: IssuerId = "00000000-96fe-1a63-e053-0824d011072a".parse().unwrap();
        let meta = KeyMetadata::new(KeyKind::Connect, Some(recorded.clone()), None).unwrap();
        assert_eq!(
            meta.issuer(&key_id(), None).unwrap(),
            Some(recorded.clone())
        );
        assert_eq!(
            meta.issuer(&key_id(), Some(recorded.clone())).unwrap(),
            Some(recorded)
        );
        assert!(matches!(
            meta.issuer(&key_id(), Some(other)),
            Err(Error::MetadataContradiction { .. })
        ));
    }
}
