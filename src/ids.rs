//! Identifiers that carry meaning: each validates on construction, so a value of
//! these types is always well formed.

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::Error;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $what:literal, $rule:expr, $valid:expr) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl TryFrom<String> for $name {
            type Error = Error;

            fn try_from(s: String) -> Result<Self, Error> {
                s.parse()
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl $name {
            /// The value as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl FromStr for $name {
            type Err = Error;

            fn from_str(s: &str) -> Result<Self, Error> {
                let valid: fn(&str) -> Option<String> = $valid;
                valid(s).map($name).ok_or_else(|| Error::InvalidId {
                    what: $what,
                    value: printable(s),
                    rule: $rule,
                })
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), self.0)
            }
        }
    };
}

const TEXT_RULE: &str =
    "it must be non-empty, without spaces, control or bidirectional formatting characters";

id_type!(
    /// The ID Apple shows for a key, in one of its [`KeyIdFormat`]s: 10 characters
    /// `A`–`Z` and `0`–`9` for developer-account keys (e.g. `2X9R4HXF34`), a UUID for
    /// Apple Business and School Manager and Apple Ads keys, a long hexadecimal string
    /// for CloudKit keys. Kept exactly as given.
    ///
    /// It is the JWT header's `kid` and, on the token, the key objects' `CKA_ID`.
    KeyId,
    "key ID",
    "key IDs are 10 characters A-Z and 0-9, a UUID, or 32 to 128 hexadecimal digits",
    key_id
);
id_type!(
    /// An Apple Developer Team ID: 10 characters, `A`–`Z` and `0`–`9`.
    TeamId, "Team ID", "Team IDs are 10 characters A-Z and 0-9", apple_ten
);
id_type!(
    /// An App Store Connect issuer ID: a UUID, kept in its lowercase hyphenated form.
    IssuerId, "issuer ID", "issuer IDs are UUIDs like 57246542-96fe-1a63-e053-0824d011072a",
    hyphenated_uuid
);
id_type!(
    /// An app's bundle ID (e.g. `com.example.app`).
    BundleId, "bundle ID", TEXT_RULE, text
);
id_type!(
    /// A Sign in with Apple client ID: an App ID or a Services ID (case-sensitive).
    ClientId, "client ID", TEXT_RULE, text
);
id_type!(
    /// A WeatherKit Service ID.
    ServiceId, "Service ID", TEXT_RULE, text
);
id_type!(
    /// An In-App Purchase product ID.
    ProductId, "product ID", TEXT_RULE, text
);
id_type!(
    /// A subscription offer's identifier.
    OfferId, "offer ID", TEXT_RULE, text
);
id_type!(
    /// An App Store transaction ID.
    TransactionId, "transaction ID", TEXT_RULE, text
);

id_type!(
    /// A web origin a MusicKit or MapKit token is limited to, e.g. `https://example.com`.
    Origin, "origin", TEXT_RULE, text
);

/// The forms of key ID Apple shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyIdFormat {
    /// 10 characters `A`–`Z` and `0`–`9`: developer-account keys (App Store Connect, In-App
    /// Purchase, APNs, Sign in with Apple…).
    Apple,
    /// A UUID: Apple Business and School Manager, Apple Ads.
    Uuid,
    /// 32 to 128 hexadecimal digits: CloudKit server-to-server keys.
    Hex,
}

impl KeyIdFormat {
    /// The rule a key ID of this form follows, for an error message.
    pub fn rule(self) -> &'static str {
        match self {
            KeyIdFormat::Apple => "Apple key IDs are 10 characters A-Z and 0-9",
            KeyIdFormat::Uuid => "this kind's key IDs are UUIDs",
            KeyIdFormat::Hex => "a key ID of this kind is 32 to 128 hexadecimal digits",
        }
    }
}

impl KeyId {
    /// Its form.
    pub fn format(&self) -> KeyIdFormat {
        if apple_ten(&self.0).is_some() {
            KeyIdFormat::Apple
        } else if self.0.contains('-') {
            // Hexadecimal digits have no hyphen; a UUID (as it was checked) has four.
            KeyIdFormat::Uuid
        } else {
            KeyIdFormat::Hex
        }
    }

    /// Infers the key ID from Apple's download names `AuthKey_<ID>.p8` and
    /// `SubscriptionKey_<ID>.p8`; `None` when the name is not one of them.
    pub fn from_file_name(path: &Path) -> Option<KeyId> {
        let name = path.file_name()?.to_str()?;
        let stem = name.strip_suffix(".p8")?;
        let id = stem
            .strip_prefix("AuthKey_")
            .or_else(|| stem.strip_prefix("SubscriptionKey_"))?;
        id.parse().ok()
    }
}

/// 10 characters `A`–`Z`, `0`–`9`: Apple's key IDs and Team IDs.
fn apple_ten(s: &str) -> Option<String> {
    (s.len() == 10
        && s.bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit()))
    .then(|| s.to_owned())
}

/// A key ID in one of the [`KeyIdFormat`]s, as given.
fn key_id(s: &str) -> Option<String> {
    let uuid = s.len() == 36 && uuid::Uuid::try_parse(s).is_ok();
    let hex = (32..=128).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_hexdigit());
    (apple_ten(s).is_some() || uuid || hex).then(|| s.to_owned())
}

/// Only the hyphenated 36-character form Apple shows, lower-cased.
fn hyphenated_uuid(s: &str) -> Option<String> {
    let uuid = uuid::Uuid::try_parse(s).ok().filter(|_| s.len() == 36)?;
    Some(uuid.hyphenated().to_string())
}

/// Non-empty, at most 255 bytes, no whitespace or hidden characters.
fn text(s: &str) -> Option<String> {
    let ok = !s.is_empty() && s.len() <= 255 && !s.chars().any(|c| c.is_whitespace() || hidden(c));
    ok.then(|| s.to_owned())
}

/// Whether a character would change how text around it reads without showing itself:
/// a control character, or a bidirectional or zero-width formatting character (U+202E
/// RIGHT-TO-LEFT OVERRIDE turns a listing around).
pub(crate) fn hidden(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061C}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2069}' | '\u{FEFF}'
        )
}

/// Quotes a rejected value for an error message, escaping control characters so a
/// message stays one line, and cutting it short.
pub(crate) fn printable(s: &str) -> String {
    let mut out: String = s
        .chars()
        .take(64)
        .collect::<String>()
        .escape_debug()
        .collect();
    if s.chars().count() > 64 {
        out.push('…');
    }
    format!("\"{out}\"")
}

id_type!(
    /// An OAuth client's identifier at Apple: `BUSINESSAPI.<uuid>` (Apple Business
    /// Manager), `SCHOOLAPI.<uuid>` (Apple School Manager) or `SEARCHADS.<uuid>` (Apple
    /// Ads client and team IDs).
    OAuthId,
    "client ID",
    "it is BUSINESSAPI.<uuid>, SCHOOLAPI.<uuid> or SEARCHADS.<uuid>",
    oauth_id
);

impl OAuthId {
    /// Its prefix: `BUSINESSAPI`, `SCHOOLAPI` or `SEARCHADS`.
    pub fn prefix(&self) -> &str {
        self.0.split_once('.').map_or("", |(prefix, _)| prefix)
    }
}

id_type!(
    /// An Apple Ads team ID: `SEARCHADS.<uuid>`.
    AdsTeamId,
    "ads team ID",
    "it is SEARCHADS.<uuid>",
    |s: &str| oauth_id(s).filter(|id| id.starts_with("SEARCHADS."))
);

impl AdsTeamId {
    /// As the OAuth ID it is.
    pub fn as_oauth(&self) -> OAuthId {
        OAuthId(self.0.clone())
    }
}

fn oauth_id(s: &str) -> Option<String> {
    let (prefix, uuid) = s.split_once('.')?;
    let known = matches!(prefix, "BUSINESSAPI" | "SCHOOLAPI" | "SEARCHADS");
    (known && uuid.len() == 36 && uuid::Uuid::try_parse(uuid).is_ok()).then(|| s.to_owned())
}

/// A one-time nonce: a UUID in lowercase hyphenated form.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct Nonce(String);

impl TryFrom<String> for Nonce {
    type Error = Error;

    fn try_from(s: String) -> Result<Self, Error> {
        s.parse()
    }
}

impl From<Nonce> for String {
    fn from(nonce: Nonce) -> String {
        nonce.0
    }
}

impl Nonce {
    /// A fresh random (v4) nonce.
    pub fn random() -> Nonce {
        Nonce(uuid::Uuid::new_v4().hyphenated().to_string())
    }

    /// The nonce as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for Nonce {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        match uuid::Uuid::try_parse(s) {
            Ok(uuid) if s.len() == 36 => Ok(Nonce(uuid.hyphenated().to_string())),
            _ => Err(Error::InvalidId {
                what: "nonce",
                value: printable(s),
                rule: "a nonce is a UUID",
            }),
        }
    }
}

impl fmt::Display for Nonce {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Nonce {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Nonce({:?})", self.0)
    }
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
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for Scope {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        let valid = s.split_once(' ').is_some_and(|(method, path)| {
            matches!(method, "GET" | "POST" | "PATCH" | "PUT" | "DELETE")
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_ids_are_ten_uppercase_alphanumerics() {
        assert!("2X9R4HXF34".parse::<KeyId>().is_ok());
        for bad in [
            "",
            "2x9r4hxf34",
            "2X9R4HXF3",
            "2X9R4HXF345",
            "2X9R4HXF3-",
            "2X9R4HXF3\n",
        ] {
            assert!(bad.parse::<KeyId>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn key_ids_come_in_apples_three_forms() {
        let format = |s: &str| s.parse::<KeyId>().map(|k| k.format());
        assert_eq!(
            format("0123456789abcdef0123456789abcdef0123").unwrap(),
            KeyIdFormat::Hex,
            "36 hexadecimal digits are no UUID"
        );
        assert_eq!(format("2X9R4HXF34").unwrap(), KeyIdFormat::Apple);
        assert_eq!(
            format("d136aa66-0c3b-4bd4-9892-c20e8db024ab").unwrap(),
            KeyIdFormat::Uuid
        );
        assert_eq!(
            format("ec8a4df1ef6b4f7a4f3c9d2b1a0e9f8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a29").unwrap(),
            KeyIdFormat::Hex
        );
        for bad in [
            "d136aa66-0c3b-4bd4-9892-c20e8db024a",
            "ec8a4df1",
            "g".repeat(40).as_str(),
        ] {
            assert!(bad.parse::<KeyId>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn oauth_ids_have_a_known_prefix_and_a_uuid() {
        let id: OAuthId = "SEARCHADS.d136aa66-0c3b-4bd4-9892-c20e8db024ab"
            .parse()
            .unwrap();
        assert_eq!(id.prefix(), "SEARCHADS");
        for bad in [
            "SEARCHADS.x",
            "OTHER.d136aa66-0c3b-4bd4-9892-c20e8db024ab",
            "d136aa66-0c3b-4bd4-9892-c20e8db024ab",
        ] {
            assert!(bad.parse::<OAuthId>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn key_id_is_inferred_from_apple_file_names() {
        let id = |p: &str| KeyId::from_file_name(Path::new(p)).map(|k| k.to_string());
        assert_eq!(
            id("/x/AuthKey_2X9R4HXF34.p8").as_deref(),
            Some("2X9R4HXF34")
        );
        assert_eq!(
            id("SubscriptionKey_ABCDEFGH12.p8").as_deref(),
            Some("ABCDEFGH12")
        );
        assert_eq!(id("AuthKey_2X9R4HXF34.pem"), None);
        assert_eq!(id("key.p8"), None);
        assert_eq!(id("AuthKey_short.p8"), None);
    }

    #[test]
    fn issuer_ids_are_hyphenated_uuids_kept_lowercase() {
        let id: IssuerId = "57246542-96FE-1A63-E053-0824D011072A".parse().unwrap();
        assert_eq!(id.as_str(), "57246542-96fe-1a63-e053-0824d011072a");
        for bad in [
            "",
            "5724654296fe1a63e0530824d011072a",
            "not-a-uuid",
            "{57246542-96fe-1a63-e053-0824d011072a}",
        ] {
            assert!(bad.parse::<IssuerId>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn bundle_ids_refuse_empty_and_control_characters() {
        assert!("com.example.app".parse::<BundleId>().is_ok());
        for bad in ["", "com.example app", "com.example\u{7}", "a\nb"] {
            assert!(bad.parse::<BundleId>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn rejected_values_are_quoted_on_one_line() {
        assert_eq!(printable("a\nb"), "\"a\\nb\"");
    }
}
