//! CloudKit Web Services server-to-server request signatures. Not a JWT: the message
//! `<date>:<body hash>:<subpath>` is signed (ECDSA P-256 over SHA-256), and the DER
//! signature goes, in standard base64, into the `X-Apple-CloudKit-Request-SignatureV1`
//! header beside the key ID and the date. Never cached: each is for one request.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::metadata::KeyKind;
use super::signed::{Signed, SignedHeaders};
use super::spec::{check, Context, Family, Field, LifetimeRule, SignatureKind, Spec, Value};
use crate::ids::printable;
use crate::{Error, Es256Signer};

/// The largest request body p8hsm hashes: 16 MiB.
pub const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;
/// The longest subpath p8hsm signs.
const MAX_SUBPATH: usize = 4096;

/// `sign cloudkit`.
pub const CLOUDKIT: Spec = Spec {
    name: "cloudkit",
    family: Family::Signature,
    about: "CloudKit Web Services server-to-server request signature (three headers)",
    api: "CloudKit Web Services",
    key_kinds: &[KeyKind::Cloudkit],
    lifetime: LifetimeRule::Instant,
    cacheable: false,
    fields: &[
        Field {
            name: "subpath",
            help: "The request's URL path from /database/1/ on, without scheme, host or query",
            value: Value::Text {
                placeholder: "PATH",
                check: check::<Subpath>,
            },
            required: true,
        },
        Field {
            name: "body_sha256",
            help: "The exact request body: the command line reads it from a file (- for \
                   standard input); the protocol carries its SHA-256 in standard base64 \
                   [default: empty]",
            value: Value::Digest {
                limit: MAX_BODY_BYTES,
                digest: body_sha256,
                check: check::<BodyHash>,
            },
            required: false,
        },
        Field {
            name: "date",
            help: "The request's date, ISO 8601 UTC without fractional seconds, e.g. \
                   2026-11-27T13:31:14Z [default: now]",
            value: Value::Text {
                placeholder: "DATE",
                check: check::<IsoDate>,
            },
            required: false,
        },
    ],
    jwt: None,
};

/// The standard base64 of SHA-256 of `body`: the body hash of the signed message.
pub fn body_sha256(body: &[u8]) -> String {
    STANDARD.encode(Sha256::digest(body))
}

/// A CloudKit URL subpath: `/database/…`, printable ASCII without spaces, no query or
/// fragment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Subpath(String);

impl std::str::FromStr for Subpath {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        let refuse = |rule: &'static str| Error::InvalidId {
            what: "subpath",
            value: printable(s),
            rule,
        };
        if !s.starts_with("/database/") {
            return Err(refuse(
                "it is the URL path from /database/ on, e.g. \
                 /database/1/iCloud.com.example/development/public/records/query",
            ));
        }
        if s.len() > MAX_SUBPATH || !s.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(refuse(
                "it must be printable ASCII without spaces, at most 4096 bytes (percent-encode \
                 the rest)",
            ));
        }
        if s.contains(['?', '#']) {
            return Err(refuse("it is the path only, without a query or fragment"));
        }
        Ok(Subpath(s.to_owned()))
    }
}

/// A body hash: the standard base64 of a SHA-256 digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct BodyHash(String);

impl std::str::FromStr for BodyHash {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        match STANDARD.decode(s) {
            Ok(bytes) if bytes.len() == 32 => Ok(BodyHash(s.to_owned())),
            _ => Err(Error::InvalidId {
                what: "body hash",
                value: printable(s),
                rule: "it is the standard base64 of the body's SHA-256 (44 characters)",
            }),
        }
    }
}

/// A date as CloudKit wants it: ISO 8601 UTC without fractional seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct IsoDate(u64);

/// How far ahead of this clock a request's date may be (another clock's drift).
const AHEAD: u64 = 5 * 60;

impl IsoDate {
    /// The date of `time`, to the second.
    pub fn at(time: SystemTime) -> Result<IsoDate, Error> {
        super::lifetime::clock(time).map(IsoDate)
    }
}

impl std::str::FromStr for IsoDate {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        let invalid = || Error::InvalidId {
            what: "date",
            value: printable(s),
            rule: "it is ISO 8601 UTC without fractional seconds, e.g. 2026-11-27T13:31:14Z",
        };
        if s.len() != 20 || !s.ends_with('Z') {
            return Err(invalid());
        }
        let time = humantime::parse_rfc3339(s).map_err(|_| invalid())?;
        let seconds = time
            .duration_since(UNIX_EPOCH)
            .map_err(|_| invalid())?
            .as_secs();
        if !super::SANE_CLOCK.contains(&seconds) {
            return Err(Error::InvalidId {
                what: "date",
                value: printable(s),
                rule: "it must lie between 2020 and 2100",
            });
        }
        Ok(IsoDate(seconds))
    }
}

impl fmt::Display for IsoDate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let time = UNIX_EPOCH + Duration::from_secs(self.0);
        write!(f, "{}", humantime::format_rfc3339_seconds(time))
    }
}

impl TryFrom<String> for IsoDate {
    type Error = Error;

    fn try_from(s: String) -> Result<Self, Error> {
        s.parse()
    }
}

impl From<IsoDate> for String {
    fn from(date: IsoDate) -> String {
        date.to_string()
    }
}

macro_rules! text_conversions {
    ($($name:ident),*) => {$(
        impl TryFrom<String> for $name {
            type Error = Error;

            fn try_from(s: String) -> Result<Self, Error> {
                s.parse()
            }
        }

        impl From<$name> for String {
            fn from(value: $name) -> String {
                value.0
            }
        }
    )*};
}

text_conversions!(Subpath, BodyHash);

/// A CloudKit Web Services request to sign.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CloudKit {
    /// The URL path from `/database/` on.
    pub subpath: Subpath,
    /// The body hash; that of the empty body when `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_sha256: Option<BodyHash>,
    /// The date; now when `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub date: Option<IsoDate>,
}

impl CloudKit {
    /// The signed message: `<date>:<body hash>:<subpath>`.
    pub fn message(&self, date: IsoDate) -> String {
        let body = match &self.body_sha256 {
            Some(hash) => hash.0.clone(),
            None => body_sha256(b""),
        };
        format!("{date}:{body}:{}", self.subpath.0)
    }
}

impl SignatureKind for CloudKit {
    fn sign(&self, cx: &Context<'_>, signer: &dyn Es256Signer) -> Result<Signed, Error> {
        // The clock is checked even when the date is given: nothing is signed with a
        // clock that cannot be right.
        let now = IsoDate::at(cx.now)?;
        let date = self.date.unwrap_or(now);
        // A request dated ahead would be pre-signed for a time its caller may no longer
        // be allowed to sign at.
        if date.0 > now.0 + AHEAD {
            return Err(Error::InvalidId {
                what: "date",
                value: date.to_string(),
                rule: "it is more than 5 minutes ahead of this clock",
            });
        }
        let signature = signer.sign_es256(self.message(date).as_bytes())?;
        let key_id = signer.key_id().clone();
        let signature = STANDARD.encode(signature.to_der().as_bytes());
        let headers = [
            ("X-Apple-CloudKit-Request-KeyID", key_id.to_string()),
            ("X-Apple-CloudKit-Request-ISO8601Date", date.to_string()),
            ("X-Apple-CloudKit-Request-SignatureV1", signature.clone()),
        ];
        Ok(Signed::Headers(SignedHeaders {
            key_id,
            date: date.to_string(),
            signature,
            headers: headers
                .into_iter()
                .map(|(name, value)| (name.to_owned(), value.into()))
                .collect(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apple::tests::now;
    use crate::apple::{SignatureParams, SignatureRequest};
    use crate::jws::tests::MemorySigner;
    use crate::KeyId;
    use p256::ecdsa::signature::Verifier;
    use p256::ecdsa::{DerSignature, VerifyingKey};

    const KID: &str = "ec8a4df1ef6b4f7a4f3c9d2b1a0e9f8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a29";
    const PATH: &str = "/database/1/iCloud.com.example.app/development/public/records/query";

    fn request(params: serde_json::Value) -> Result<SignatureRequest, Error> {
        let mut object = params;
        object["kind"] = "cloudkit".into();
        object["key_id"] = KID.into();
        match crate::Request::from_json(object)? {
            crate::Request::Signature(r) => Ok(r),
            crate::Request::Token(_) => unreachable!("cloudkit is a signature"),
        }
    }

    #[test]
    fn the_message_is_date_body_hash_and_subpath_and_the_signature_der() {
        let signer = MemorySigner {
            kid: KID.parse().unwrap(),
            ..MemorySigner::new()
        };
        let body = br#"{"query":{"recordType":"Note"}}"#;
        let request = request(serde_json::json!({
            "subpath": PATH,
            "body_sha256": body_sha256(body),
            "date": "2026-11-27T13:31:14Z",
        }))
        .unwrap();
        let at = humantime::parse_rfc3339("2026-11-27T13:31:14Z").unwrap();
        let ahead = request
            .sign(&signer, None, at - std::time::Duration::from_secs(301))
            .unwrap_err();
        assert_eq!(
            ahead.to_string(),
            "invalid date 2026-11-27T13:31:14Z: it is more than 5 minutes ahead of this clock"
        );
        let Signed::Headers(signed) = request.sign(&signer, None, at).unwrap() else {
            panic!("not a CloudKit signature");
        };
        assert_eq!(signed.date, "2026-11-27T13:31:14Z");
        let message = format!(
            "2026-11-27T13:31:14Z:{}:{PATH}",
            STANDARD.encode(Sha256::digest(body))
        );
        let der = DerSignature::from_bytes(&STANDARD.decode(&signed.signature).unwrap()).unwrap();
        assert!(VerifyingKey::from(&signer.key)
            .verify(message.as_bytes(), &der)
            .is_ok());
        assert_eq!(
            Signed::Headers(signed).text(),
            format!(
                "X-Apple-CloudKit-Request-KeyID: {KID}\nX-Apple-CloudKit-Request-ISO8601Date: \
                 2026-11-27T13:31:14Z\nX-Apple-CloudKit-Request-SignatureV1: {}\n",
                STANDARD.encode(der.as_bytes())
            )
        );
    }

    #[test]
    fn an_empty_body_hashes_as_empty_and_the_date_defaults_to_now() {
        let request = CloudKit {
            subpath: PATH.parse().unwrap(),
            body_sha256: None,
            date: None,
        };
        let date = IsoDate::at(now()).unwrap();
        assert_eq!(date.to_string(), "2023-11-14T22:13:20Z");
        assert_eq!(
            request.message(date),
            format!("2023-11-14T22:13:20Z:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=:{PATH}")
        );
    }

    #[test]
    fn bad_subpaths_dates_hashes_and_key_ids_are_refused() {
        for bad in [
            "https://api.apple-cloudkit.com/database/1/x",
            "/records/query",
            "/database/1/x?ckAPIToken=1",
            "/database/1/a b",
            "/database/1/\u{202e}x",
        ] {
            assert!(bad.parse::<Subpath>().is_err(), "{bad:?} accepted");
        }
        for bad in [
            "2026-11-27T13:31:14.5Z",
            "2026-11-27 13:31:14Z",
            "2026-11-27T13:31:14+01:00",
            "1999-01-01T00:00:00Z",
            "2026-13-27T13:31:14Z",
        ] {
            assert!(bad.parse::<IsoDate>().is_err(), "{bad:?} accepted");
        }
        assert!("abc".parse::<BodyHash>().is_err());
        let apple: KeyId = "2X9R4HXF34".parse().unwrap();
        let params = SignatureParams::Cloudkit(CloudKit {
            subpath: PATH.parse().unwrap(),
            body_sha256: None,
            date: None,
        });
        assert!(SignatureRequest::new(apple, params).is_err());
        assert!(request(serde_json::json!({"subpath": "/records"})).is_err());
    }
}
