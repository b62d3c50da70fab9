//! Identifiers that carry meaning: each validates on construction, so a value of
//! these types is always well formed.

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use serde::Serialize;

use crate::Error;

/// An Apple key ID: 10 characters, `A`–`Z` and `0`–`9` (e.g. `2X9R4HXF34`).
///
/// It is the JWT header's `kid` and, on the token, the key objects' `CKA_ID`.
#[derive(Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct KeyId(String);

impl KeyId {
    /// The key ID as text.
    pub fn as_str(&self) -> &str {
        &self.0
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

impl FromStr for KeyId {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        if s.len() == 10
            && s.bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
        {
            Ok(KeyId(s.to_owned()))
        } else {
            Err(Error::InvalidKeyId {
                value: printable(s),
            })
        }
    }
}

/// An App Store Connect issuer ID: a UUID, kept in its lowercase hyphenated form.
#[derive(Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct IssuerId(String);

impl IssuerId {
    /// The issuer ID as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for IssuerId {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        // Only the hyphenated 36-character form Apple shows in App Store Connect.
        match uuid::Uuid::try_parse(s) {
            Ok(uuid) if s.len() == 36 => Ok(IssuerId(uuid.hyphenated().to_string())),
            _ => Err(Error::InvalidIssuerId {
                value: printable(s),
            }),
        }
    }
}

/// An app's bundle ID (e.g. `com.example.app`): non-empty, no whitespace or
/// control characters.
#[derive(Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct BundleId(String);

impl BundleId {
    /// The bundle ID as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for BundleId {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        if !s.is_empty()
            && s.len() <= 255
            && !s.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            Ok(BundleId(s.to_owned()))
        } else {
            Err(Error::InvalidBundleId {
                value: printable(s),
            })
        }
    }
}

macro_rules! display_as_str {
    ($($t:ty),*) => {$(
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl fmt::Debug for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($t), self.0)
            }
        }
    )*};
}
display_as_str!(KeyId, IssuerId, BundleId);

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
