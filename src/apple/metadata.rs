//! What a key is for, recorded beside it on the token at import, so later commands need
//! only the key ID, and a request that contradicts the key's kind is refused. The kinds
//! of key are one list (`key_kinds!` below); what each records is a list of identities
//! from the one table of them ([`super::identity`]).

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::identity::{self, Identity, ADS_TEAM_ID, CLIENT_ID, ISSUER, TEAM_ID};
use crate::ids::printable;
use crate::{Error, KeyId, KeyIdFormat, OAuthId};

/// Generates [`KeyKind`] and what each kind states about itself from the one list below.
macro_rules! key_kinds {
    ($(
        $(#[$doc:meta])*
        $variant:ident = $name:literal, $format:ident, $article:literal,
            prefix $prefix:expr, records [$($identity:expr),*];
    )*) => {
        /// The kinds of key Apple issues (as `.p8` or PEM downloads) or takes the public
        /// half of (keys generated in the token).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum KeyKind {
            $( $(#[$doc])* #[serde(rename = $name)] $variant, )*
        }

        impl KeyKind {
            /// Every kind, in the order the command line lists them.
            pub const ALL: &'static [KeyKind] = &[$(KeyKind::$variant,)*];

            /// The name used on the command line, in the protocol and on the token.
            pub fn name(self) -> &'static str {
                match self { $( KeyKind::$variant => $name, )* }
            }

            /// The form of the key IDs Apple shows for keys of this kind.
            pub fn key_id_format(self) -> KeyIdFormat {
                match self { $( KeyKind::$variant => KeyIdFormat::$format, )* }
            }

            /// The prefix of the OAuth IDs of this kind (`BUSINESSAPI`), if it has any.
            pub fn oauth_prefix(self) -> Option<&'static str> {
                match self { $( KeyKind::$variant => $prefix, )* }
            }

            /// The identities recorded with a key of this kind.
            pub fn identities(self) -> &'static [&'static Identity] {
                match self { $( KeyKind::$variant => &[$(&$identity),*], )* }
            }

            fn article(self) -> &'static str {
                match self { $( KeyKind::$variant => $article, )* }
            }
        }
    };
}

key_kinds! {
    /// App Store Connect API team key.
    Connect = "connect", Apple, "a", prefix None, records [ISSUER];
    /// App Store Connect API individual key.
    ConnectIndividual = "connect-individual", Apple, "a", prefix None, records [];
    /// In-App Purchase key (App Store Server API family, StoreKit signatures).
    InAppPurchase = "in-app-purchase", Apple, "an", prefix None, records [ISSUER];
    /// Enterprise Program API key.
    Enterprise = "enterprise", Apple, "an", prefix None, records [ISSUER];
    /// Developer-account key (APNs, DeviceCheck, Sign in with Apple, MusicKit,
    /// WeatherKit, MapKit).
    Developer = "developer", Apple, "a", prefix None, records [TEAM_ID];
    /// Apple Business Manager API key.
    BusinessManager = "business-manager", Uuid, "a", prefix Some("BUSINESSAPI"),
        records [CLIENT_ID];
    /// Apple School Manager API key.
    SchoolManager = "school-manager", Uuid, "a", prefix Some("SCHOOLAPI"), records [CLIENT_ID];
    /// Apple Ads Campaign Management API key (its public key uploaded in Apple Ads).
    AppleAds = "apple-ads", Uuid, "an", prefix Some("SEARCHADS"),
        records [CLIENT_ID, ADS_TEAM_ID];
    /// CloudKit Web Services server-to-server key (its public key uploaded in CloudKit
    /// Dashboard).
    Cloudkit = "cloudkit", Hex, "a", prefix None, records [];
}

impl KeyKind {
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

    /// Whether a key of this kind records `identity`.
    pub fn records(self, identity: &Identity) -> bool {
        self.identities().iter().any(|i| i.field == identity.field)
    }
}

/// The identities a key can be recorded with: those some key kind records, in the order
/// of the table of identities.
pub fn recordable() -> impl Iterator<Item = &'static Identity> {
    identity::ALL
        .iter()
        .copied()
        .filter(|i| KeyKind::ALL.iter().any(|kind| kind.records(i)))
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
            .iter()
            .copied()
            .find(|k| k.name() == s)
            .ok_or_else(|| Error::InvalidId {
                what: "key kind",
                value: printable(s),
                rule: "not a kind of key p8hsm knows",
            })
    }
}

/// What is recorded with a key: its kind, and the identities of the kind's that were
/// given (`{"kind":"in-app-purchase","issuer":"…"}` on the token).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyMetadata {
    /// What the key is for.
    pub kind: KeyKind,
    /// The identities recorded, by field name.
    #[serde(flatten)]
    identities: BTreeMap<String, String>,
}

impl KeyMetadata {
    /// Metadata for a key of `kind` with no identities recorded.
    pub fn new(kind: KeyKind) -> Self {
        KeyMetadata {
            kind,
            identities: BTreeMap::new(),
        }
    }

    /// Records `value` as the key's `identity`, checked against the identity's form, the
    /// kind's identities and the kind's prefix.
    pub fn with(mut self, identity: &Identity, value: &str) -> Result<Self, Error> {
        // Recorded as tokens carry it: an issuer ID given in upper case is one in lower.
        let value = (identity.canonical)(value)?;
        self.check(identity, &value)?;
        self.identities.insert(identity.field.to_owned(), value);
        Ok(self)
    }

    /// Refuses an identity the kind does not record, or an OAuth ID of another kind's
    /// form.
    fn check(&self, identity: &Identity, value: &str) -> Result<(), Error> {
        let kind = self.kind;
        if !kind.records(identity) {
            let records: Vec<&str> = kind.identities().iter().map(|i| i.about).collect();
            return Err(Error::InvalidMetadata(format!(
                "{} keys record no {}{}",
                kind.name(),
                identity.about,
                match records.as_slice() {
                    [] => " (they record no identity)".to_owned(),
                    some => format!(" (they record their {})", some.join(" and ")),
                }
            )));
        }
        if identity.prefixed {
            let id: OAuthId = value.parse()?;
            check_prefix(kind, &format!("the {}", identity.about), &id)?;
        }
        Ok(())
    }

    /// The identities recorded, in the order of the table of identities.
    pub fn identities(&self) -> impl Iterator<Item = (&'static Identity, &str)> {
        identity::ALL.iter().copied().filter_map(|i| {
            self.identities
                .get(i.field)
                .map(|value| (i, value.as_str()))
        })
    }

    /// The bytes stored on the token.
    pub fn to_bytes(&self) -> Vec<u8> {
        // Serializing plain strings and enums cannot fail.
        serde_json::to_vec(self).expect("metadata serializes")
    }

    /// Reads stored bytes: each identity the kind records is checked as when it was
    /// recorded; anything else (recorded by a later version) is left aside.
    pub fn from_bytes(key_id: &KeyId, bytes: &[u8]) -> Result<Self, Error> {
        let unreadable = |reason: String| Error::MetadataUnreadable {
            key_id: key_id.to_string(),
            reason,
        };
        let stored: KeyMetadata =
            serde_json::from_slice(bytes).map_err(|e| unreadable(e.to_string()))?;
        let mut meta = KeyMetadata::new(stored.kind);
        for identity in stored.kind.identities() {
            if let Some(value) = stored.identities.get(identity.field) {
                meta = meta
                    .with(identity, value)
                    .map_err(|e| unreadable(e.to_string()))?;
            }
        }
        Ok(meta)
    }

    /// The identity recorded under a field's name (`issuer`, `team_id`…), if any.
    pub fn recorded(&self, field: &str) -> Option<&str> {
        self.identities.get(field).map(String::as_str)
    }

    /// The value of `identity` to use: the one given, which must match the recorded one,
    /// or the recorded one.
    pub fn resolve<T>(
        &self,
        identity: &Identity,
        key_id: &KeyId,
        given: Option<T>,
    ) -> Result<Option<T>, Error>
    where
        T: FromStr<Err = Error> + PartialEq + fmt::Display,
    {
        let recorded = self.recorded(identity.field).map(str::parse).transpose()?;
        match (given, recorded) {
            (Some(given), Some(recorded)) if given != recorded => {
                Err(Error::MetadataContradiction {
                    what: identity.field,
                    about: identity.about,
                    given: given.to_string(),
                    recorded: recorded.to_string(),
                    key_id: key_id.to_string(),
                })
            }
            (given, recorded) => Ok(given.or(recorded)),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::IssuerId;

    fn key_id() -> KeyId {
        "2X9R4HXF34".parse().unwrap()
    }

    #[test]
    fn metadata_round_trips_through_its_stored_bytes() {
        let meta = KeyMetadata::new(KeyKind::InAppPurchase)
            .with(&ISSUER, "57246542-96fe-1a63-e053-0824d011072a")
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
        let with =
            |kind, identity: &Identity, value: &str| KeyMetadata::new(kind).with(identity, value);
        let (team, issuer) = ("A1B2C3D4E5", "57246542-96fe-1a63-e053-0824d011072a");
        assert!(with(KeyKind::Developer, &TEAM_ID, team).is_ok());
        assert!(with(KeyKind::Connect, &TEAM_ID, team).is_err());
        assert!(with(KeyKind::ConnectIndividual, &ISSUER, issuer).is_err());
        assert!(with(KeyKind::Developer, &ISSUER, issuer).is_err());
        assert!(with(KeyKind::Developer, &TEAM_ID, "bad").is_err());
        assert_eq!(
            with(KeyKind::AppleAds, &TEAM_ID, team)
                .unwrap_err()
                .to_string(),
            "apple-ads keys record no Team ID (they record their client ID and ads team ID)"
        );
    }

    #[test]
    fn identities_are_recorded_as_tokens_carry_them() {
        let meta = KeyMetadata::new(KeyKind::Connect)
            .with(&ISSUER, "57246542-96FE-1A63-E053-0824D011072A")
            .unwrap();
        assert_eq!(
            meta.recorded("issuer"),
            Some("57246542-96fe-1a63-e053-0824d011072a")
        );
    }

    #[test]
    fn oauth_ids_must_carry_the_kinds_prefix() {
        let uuid = "d136aa66-0c3b-4bd4-9892-c20e8db024ab";
        let id = |prefix: &str| format!("{prefix}.{uuid}");
        let with = |kind, client: &str, team: Option<&str>| {
            let meta = KeyMetadata::new(kind).with(&CLIENT_ID, &id(client))?;
            match team {
                Some(team) => meta.with(&ADS_TEAM_ID, &id(team)),
                None => Ok(meta),
            }
        };
        assert!(with(KeyKind::BusinessManager, "BUSINESSAPI", None).is_ok());
        assert!(with(KeyKind::SchoolManager, "SCHOOLAPI", None).is_ok());
        assert!(with(KeyKind::AppleAds, "SEARCHADS", Some("SEARCHADS")).is_ok());
        let err = with(KeyKind::BusinessManager, "SCHOOLAPI", None).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "the client ID of a business-manager key is BUSINESSAPI.<uuid>, not SCHOOLAPI.{uuid}"
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
        let meta = KeyMetadata::new(KeyKind::Connect)
            .with(&ISSUER, recorded.as_str())
            .unwrap();
        let resolve = |given| meta.resolve::<IssuerId>(&ISSUER, &key_id(), given);
        assert_eq!(resolve(None).unwrap(), Some(recorded.clone()));
        assert_eq!(resolve(Some(recorded.clone())).unwrap(), Some(recorded));
        assert!(matches!(
            resolve(Some(other)),
            Err(Error::MetadataContradiction { .. })
        ));
    }
}
