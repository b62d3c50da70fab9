//! What a key is for, recorded beside it on the token at import, so later commands need
//! only `--key-id` and a command that contradicts the key's kind is refused.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::ids::printable;
use crate::{Error, IssuerId, KeyId, KeyIdFormat, OAuthId, TeamId};

/// The kinds of key Apple issues (as `.p8` or PEM downloads) or takes the public half
/// of (keys generated in the token with `p8hsm keygen`).
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
    /// Apple Business Manager API key.
    BusinessManager,
    /// Apple School Manager API key.
    SchoolManager,
    /// Apple Ads Campaign Management API key (its public key uploaded in Apple Ads).
    AppleAds,
    /// CloudKit Web Services server-to-server key (its public key uploaded in CloudKit
    /// Dashboard).
    Cloudkit,
}

impl KeyKind {
    /// Every kind, in the order the CLI lists them.
    pub const ALL: [KeyKind; 9] = [
        KeyKind::Connect,
        KeyKind::ConnectIndividual,
        KeyKind::InAppPurchase,
        KeyKind::Enterprise,
        KeyKind::Developer,
        KeyKind::BusinessManager,
        KeyKind::SchoolManager,
        KeyKind::AppleAds,
        KeyKind::Cloudkit,
    ];

    /// The form of the key IDs Apple shows for keys of this kind.
    pub fn key_id_format(self) -> KeyIdFormat {
        match self {
            KeyKind::BusinessManager | KeyKind::SchoolManager | KeyKind::AppleAds => {
                KeyIdFormat::Uuid
            }
            KeyKind::Cloudkit => KeyIdFormat::Hex,
            _ => KeyIdFormat::Apple,
        }
    }

    /// Refuses a key ID that is not in this kind's form.
    pub fn check_key_id(self, key_id: &KeyId) -> Result<(), Error> {
        if key_id.format() == self.key_id_format() {
            return Ok(());
        }
        Err(Error::InvalidId {
            what: "key ID",
            value: printable(key_id.as_str()),
            rule: self.key_id_format().rule(),
        })
    }

    /// The prefix of the OAuth client (and Apple Ads team) IDs of this kind, if it has any.
    pub fn oauth_prefix(self) -> Option<&'static str> {
        match self {
            KeyKind::BusinessManager => Some("BUSINESSAPI"),
            KeyKind::SchoolManager => Some("SCHOOLAPI"),
            KeyKind::AppleAds => Some("SEARCHADS"),
            _ => None,
        }
    }

    /// The name used on the command line and on the token.
    pub fn name(self) -> &'static str {
        match self {
            KeyKind::Connect => "connect",
            KeyKind::ConnectIndividual => "connect-individual",
            KeyKind::InAppPurchase => "in-app-purchase",
            KeyKind::Enterprise => "enterprise",
            KeyKind::Developer => "developer",
            KeyKind::BusinessManager => "business-manager",
            KeyKind::SchoolManager => "school-manager",
            KeyKind::AppleAds => "apple-ads",
            KeyKind::Cloudkit => "cloudkit",
        }
    }

    fn article(self) -> &'static str {
        match self {
            KeyKind::InAppPurchase | KeyKind::Enterprise | KeyKind::AppleAds => "an",
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
                rule: "use connect, connect-individual, in-app-purchase, enterprise, developer, \
                       business-manager, school-manager, apple-ads or cloudkit",
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
    /// The OAuth client ID (Apple Business and School Manager, Apple Ads keys).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<OAuthId>,
    /// The Apple Ads team ID, `SEARCHADS.<uuid>` (Apple Ads keys).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ads_team_id: Option<OAuthId>,
}

impl KeyMetadata {
    /// Metadata for a key of `kind` with no identities recorded.
    pub fn new(kind: KeyKind) -> Self {
        KeyMetadata {
            kind,
            issuer: None,
            team_id: None,
            client_id: None,
            ads_team_id: None,
        }
    }

    /// Refuses identities the kind does not use, and OAuth IDs of another kind's form.
    pub fn checked(self) -> Result<Self, Error> {
        let kind = self.kind;
        let takes_issuer = matches!(
            kind,
            KeyKind::Connect | KeyKind::InAppPurchase | KeyKind::Enterprise
        );
        if self.issuer.is_some() && !takes_issuer {
            return Err(Error::InvalidMetadata(format!(
                "{} keys have no issuer ID",
                kind.name()
            )));
        }
        if self.team_id.is_some() && kind != KeyKind::Developer {
            let hint = if kind == KeyKind::AppleAds {
                " (an Apple Ads key's team is its ads team ID, SEARCHADS.<uuid>)"
            } else {
                ""
            };
            return Err(Error::InvalidMetadata(format!(
                "only developer keys have a Team ID, not {} keys{hint}",
                kind.name()
            )));
        }
        if let Some(client_id) = &self.client_id {
            check_prefix(kind, "a client ID", client_id)?;
        }
        if let Some(team) = &self.ads_team_id {
            if kind != KeyKind::AppleAds {
                return Err(Error::InvalidMetadata(format!(
                    "only apple-ads keys have an Apple Ads team ID, not {} keys",
                    kind.name()
                )));
            }
            check_prefix(kind, "an Apple Ads team ID", team)?;
        }
        Ok(self)
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

    /// The identity recorded under a request field's name (`issuer`, `team_id`,
    /// `client_id`, `ads_team_id`), if any.
    pub fn recorded(&self, field: &str) -> Option<String> {
        if field == "kind" {
            return None;
        }
        match serde_json::to_value(self).ok()?.get(field)? {
            serde_json::Value::String(text) => Some(text.clone()),
            _ => None,
        }
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
        resolve("issuer", key_id, given, self.issuer.clone())
    }

    /// The Team ID to use, as [`KeyMetadata::issuer`].
    pub fn team_id(&self, key_id: &KeyId, given: Option<TeamId>) -> Result<Option<TeamId>, Error> {
        resolve("team_id", key_id, given, self.team_id.clone())
    }

    /// The OAuth client ID to use, as [`KeyMetadata::issuer`].
    pub fn client_id(
        &self,
        key_id: &KeyId,
        given: Option<OAuthId>,
    ) -> Result<Option<OAuthId>, Error> {
        resolve("client_id", key_id, given, self.client_id.clone())
    }

    /// The Apple Ads team ID to use, as [`KeyMetadata::issuer`].
    pub fn ads_team_id(
        &self,
        key_id: &KeyId,
        given: Option<OAuthId>,
    ) -> Result<Option<OAuthId>, Error> {
        resolve("ads_team_id", key_id, given, self.ads_team_id.clone())
    }
}

/// Refuses an OAuth ID whose prefix is not `kind`'s (`BUSINESSAPI` for business-manager…).
pub(crate) fn check_prefix(kind: KeyKind, what: &str, id: &OAuthId) -> Result<(), Error> {
    match kind.oauth_prefix() {
        Some(prefix) if id.prefix() == prefix => Ok(()),
        Some(prefix) => Err(Error::InvalidMetadata(format!(
            "{what} of {} {} key is {prefix}.<uuid>, not {id}",
            kind.article(),
            kind.name()
        ))),
        None => Err(Error::InvalidMetadata(format!(
            "{} keys have no client ID",
            kind.name()
        ))),
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
        let meta = KeyMetadata {
            issuer: Some("57246542-96fe-1a63-e053-0824d011072a".parse().unwrap()),
            ..KeyMetadata::new(KeyKind::InAppPurchase)
        }
        .checked()
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
        let with = |kind, issuer: Option<IssuerId>, team_id: Option<TeamId>| {
            KeyMetadata {
                issuer,
                team_id,
                ..KeyMetadata::new(kind)
            }
            .checked()
        };
        let team: TeamId = "A1B2C3D4E5".parse().unwrap();
        assert!(with(KeyKind::Developer, None, Some(team.clone())).is_ok());
        assert!(with(KeyKind::Connect, None, Some(team)).is_err());
        let issuer: IssuerId = "57246542-96fe-1a63-e053-0824d011072a".parse().unwrap();
        assert!(with(KeyKind::ConnectIndividual, Some(issuer.clone()), None).is_err());
        assert!(with(KeyKind::Developer, Some(issuer), None).is_err());
    }

    #[test]
    fn oauth_ids_must_carry_the_kinds_prefix() {
        let uuid = "d136aa66-0c3b-4bd4-9892-c20e8db024ab";
        let id = |prefix: &str| format!("{prefix}.{uuid}").parse::<OAuthId>().unwrap();
        let with = |kind, client: &str, team: Option<&str>| {
            KeyMetadata {
                client_id: Some(id(client)),
                ads_team_id: team.map(id),
                ..KeyMetadata::new(kind)
            }
            .checked()
        };
        assert!(with(KeyKind::BusinessManager, "BUSINESSAPI", None).is_ok());
        assert!(with(KeyKind::SchoolManager, "SCHOOLAPI", None).is_ok());
        assert!(with(KeyKind::AppleAds, "SEARCHADS", Some("SEARCHADS")).is_ok());
        let err = with(KeyKind::BusinessManager, "SCHOOLAPI", None).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "a client ID of a business-manager key is BUSINESSAPI.<uuid>, not SCHOOLAPI.{uuid}"
            )
        );
        assert!(with(KeyKind::BusinessManager, "BUSINESSAPI", Some("SEARCHADS")).is_err());
        assert!(with(KeyKind::Cloudkit, "SEARCHADS", None).is_err());
        assert!(with(KeyKind::Developer, "SEARCHADS", None).is_err());
    }

    #[test]
    fn each_kind_takes_its_own_form_of_key_id() {
        let apple: KeyId = "2X9R4HXF34".parse().unwrap();
        let uuid: KeyId = "d136aa66-0c3b-4bd4-9892-c20e8db024ab".parse().unwrap();
        let hex: KeyId = "ab".repeat(32).parse().unwrap();
        assert!(KeyKind::Developer.check_key_id(&apple).is_ok());
        assert!(KeyKind::Developer.check_key_id(&uuid).is_err());
        assert!(KeyKind::BusinessManager.check_key_id(&uuid).is_ok());
        assert!(KeyKind::AppleAds.check_key_id(&hex).is_err());
        assert!(KeyKind::Cloudkit.check_key_id(&hex).is_ok());
        assert!(KeyKind::Cloudkit.check_key_id(&apple).is_err());
    }

    #[test]
    fn a_command_for_another_kind_is_refused_with_both_kinds_named() {
        let meta = KeyMetadata::new(KeyKind::InAppPurchase);
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
        let meta = KeyMetadata {
            issuer: Some(recorded.clone()),
            ..KeyMetadata::new(KeyKind::Connect)
        };
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
