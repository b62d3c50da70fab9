//! RFC 7512 PKCS#11 URIs: `pkcs11:token=p8hsm;object=ABC123DEFG;type=private?module-path=…`.
//!
//! A small strict parser on `percent-encoding`: every attribute is percent-decoded,
//! `id` to bytes; an unknown, repeated or malformed attribute is an error naming it.
//! Printing a URI never includes a PIN.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use secrecy::SecretString;

use crate::{Error, KeyId};

/// The object classes a URI's `type` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectType {
    /// `public`.
    Public,
    /// `private`.
    Private,
    /// `cert`.
    Cert,
    /// `secret-key`.
    SecretKey,
    /// `data`.
    Data,
}

impl ObjectType {
    fn name(self) -> &'static str {
        match self {
            ObjectType::Public => "public",
            ObjectType::Private => "private",
            ObjectType::Cert => "cert",
            ObjectType::SecretKey => "secret-key",
            ObjectType::Data => "data",
        }
    }
}

/// A parsed PKCS#11 URI. `pin_value` is kept only in a secret type and never printed.
#[derive(Debug, Default)]
pub struct Pkcs11Uri {
    /// `token`: the token label.
    pub token: Option<String>,
    /// `manufacturer`: the token's manufacturer ID.
    pub manufacturer: Option<String>,
    /// `serial`: the token's serial number.
    pub serial: Option<String>,
    /// `model`: the token's model.
    pub model: Option<String>,
    /// `library-manufacturer`.
    pub library_manufacturer: Option<String>,
    /// `library-description`.
    pub library_description: Option<String>,
    /// `library-version`, as `major[.minor]`.
    pub library_version: Option<(u8, u8)>,
    /// `slot-description`.
    pub slot_description: Option<String>,
    /// `slot-manufacturer`.
    pub slot_manufacturer: Option<String>,
    /// `slot-id`.
    pub slot_id: Option<u64>,
    /// `object`: CKA_LABEL.
    pub object: Option<String>,
    /// `id`: CKA_ID bytes.
    pub id: Option<Vec<u8>>,
    /// `type`.
    pub object_type: Option<ObjectType>,
    /// `module-name`.
    pub module_name: Option<String>,
    /// `module-path`.
    pub module_path: Option<PathBuf>,
    /// `pin-source`.
    pub pin_source: Option<String>,
    /// `pin-value`: accepted, but a URI that carries it must be kept as secret as the PIN.
    pub pin_value: Option<SecretString>,
}

const PATH: &[&str] = &[
    "token",
    "manufacturer",
    "serial",
    "model",
    "library-manufacturer",
    "library-description",
    "library-version",
    "slot-description",
    "slot-manufacturer",
    "slot-id",
    "object",
    "id",
    "type",
];
const QUERY: &[&str] = &["pin-source", "pin-value", "module-name", "module-path"];

fn invalid(reason: String) -> Error {
    Error::InvalidUri { reason }
}

impl FromStr for Pkcs11Uri {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self, Error> {
        // A URI wrapped over lines for display is read without its white space.
        let text: String = text.chars().filter(|c| !c.is_whitespace()).collect();
        let rest = text
            .get(..7)
            .filter(|scheme| scheme.eq_ignore_ascii_case("pkcs11:"))
            .map(|_| &text[7..])
            .ok_or_else(|| invalid("a PKCS#11 URI starts with pkcs11:".to_owned()))?;
        let (path, query) = match rest.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (rest, None),
        };
        let mut uri = Pkcs11Uri::default();
        let mut seen = Vec::new();
        let attributes = path
            .split(';')
            .filter(|a| !a.is_empty())
            .map(|a| (a, PATH))
            .chain(
                query
                    .into_iter()
                    .flat_map(|q| q.split('&'))
                    .filter(|a| !a.is_empty())
                    .map(|a| (a, QUERY)),
            );
        for (attribute, allowed) in attributes {
            // The query may hold a PIN (pin-value), cut in pieces by a stray `&`: no
            // error ever echoes query text, only the names p8hsm knows.
            let in_query = allowed == QUERY;
            let (name, raw) = match attribute.split_once('=') {
                Some(pair) => pair,
                None if in_query => {
                    return Err(invalid(
                        "a query attribute has no value (name=value; a value holding & or = \
                         must percent-encode it as %26 or %3D)"
                            .to_owned(),
                    ))
                }
                None => {
                    return Err(invalid(format!(
                        "attribute \"{attribute}\" has no value (name=value)"
                    )))
                }
            };
            if !allowed.contains(&name) {
                if in_query {
                    if PATH.contains(&name) {
                        return Err(invalid(format!("{name} belongs in the path, before ?")));
                    }
                    return Err(invalid(
                        "unknown query attribute (the query takes pin-source, pin-value, \
                         module-name and module-path; a value holding & must percent-encode \
                         it as %26)"
                            .to_owned(),
                    ));
                }
                if QUERY.contains(&name) {
                    return Err(invalid(format!("{name} belongs in the query, after ?")));
                }
                return Err(invalid(format!("unknown path attribute \"{name}\"")));
            }
            if seen.contains(&name) {
                return Err(invalid(format!("attribute {name} appears twice")));
            }
            seen.push(name);
            uri.set(name, &decode(name, raw)?)?;
        }
        Ok(uri)
    }
}

/// Percent-decodes `raw`, refusing a `%` not followed by two hex digits.
fn decode(name: &str, raw: &str) -> Result<Vec<u8>, Error> {
    let bytes = raw.as_bytes();
    for (i, b) in bytes.iter().enumerate() {
        if *b == b'%'
            && !(bytes.len() > i + 2
                && bytes[i + 1].is_ascii_hexdigit()
                && bytes[i + 2].is_ascii_hexdigit())
        {
            return Err(invalid(format!("{name} has a malformed percent-encoding")));
        }
    }
    Ok(percent_decode_str(raw).collect())
}

impl Pkcs11Uri {
    /// The Apple key ID the URI names: its `id` when that is one, else its `object`.
    pub fn key_id(&self) -> Option<KeyId> {
        let from_id = self
            .id
            .as_deref()
            .and_then(|id| std::str::from_utf8(id).ok())
            .and_then(|id| id.parse().ok());
        from_id.or_else(|| self.object.as_deref().and_then(|o| o.parse().ok()))
    }

    fn set(&mut self, name: &str, value: &[u8]) -> Result<(), Error> {
        let text = || {
            String::from_utf8(value.to_vec())
                .map_err(|_| invalid(format!("{name} is not UTF-8 text")))
        };
        match name {
            "token" => self.token = Some(text()?),
            "manufacturer" => self.manufacturer = Some(text()?),
            "serial" => self.serial = Some(text()?),
            "model" => self.model = Some(text()?),
            "library-manufacturer" => self.library_manufacturer = Some(text()?),
            "library-description" => self.library_description = Some(text()?),
            "library-version" => {
                let v = text()?;
                let (major, minor) = v.split_once('.').unwrap_or((&v, "0"));
                self.library_version =
                    Some(major.parse().ok().zip(minor.parse().ok()).ok_or_else(|| {
                        invalid(format!("library-version \"{v}\" is not M or M.N"))
                    })?);
            }
            "slot-description" => self.slot_description = Some(text()?),
            "slot-manufacturer" => self.slot_manufacturer = Some(text()?),
            "slot-id" => {
                let v = text()?;
                self.slot_id =
                    Some(v.parse().map_err(|_| {
                        invalid(format!("slot-id \"{v}\" is not a decimal number"))
                    })?);
            }
            "object" => self.object = Some(text()?),
            "id" => self.id = Some(value.to_vec()),
            "type" => {
                let v = text()?;
                let all = [
                    ObjectType::Public,
                    ObjectType::Private,
                    ObjectType::Cert,
                    ObjectType::SecretKey,
                    ObjectType::Data,
                ];
                self.object_type =
                    Some(all.into_iter().find(|t| t.name() == v).ok_or_else(|| {
                        invalid(format!(
                            "type \"{v}\" is not public, private, cert, secret-key or data"
                        ))
                    })?);
            }
            "pin-source" => self.pin_source = Some(text()?),
            "pin-value" => self.pin_value = Some(SecretString::from(text()?)),
            "module-name" => self.module_name = Some(text()?),
            "module-path" => self.module_path = Some(PathBuf::from(text()?)),
            _ => unreachable!("only known attribute names reach set"),
        }
        Ok(())
    }
}

/// Characters kept as they are in printed attribute values; everything else is
/// percent-encoded.
const VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');
const PATH_VALUE: &AsciiSet = &VALUE.remove(b'/');

impl fmt::Display for Pkcs11Uri {
    /// The URI without `pin-value`: a printed URI never carries a PIN.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut path = Vec::new();
        let text = |name: &str, value: &Option<String>, out: &mut Vec<String>| {
            if let Some(v) = value {
                out.push(format!("{name}={}", utf8_percent_encode(v, VALUE)));
            }
        };
        text("token", &self.token, &mut path);
        text("manufacturer", &self.manufacturer, &mut path);
        text("serial", &self.serial, &mut path);
        text("model", &self.model, &mut path);
        text(
            "library-manufacturer",
            &self.library_manufacturer,
            &mut path,
        );
        text("library-description", &self.library_description, &mut path);
        if let Some((major, minor)) = self.library_version {
            path.push(format!("library-version={major}.{minor}"));
        }
        text("slot-description", &self.slot_description, &mut path);
        text("slot-manufacturer", &self.slot_manufacturer, &mut path);
        if let Some(slot) = self.slot_id {
            path.push(format!("slot-id={slot}"));
        }
        text("object", &self.object, &mut path);
        if let Some(id) = &self.id {
            path.push(format!(
                "id={}",
                id.iter().map(|b| format!("%{b:02X}")).collect::<String>()
            ));
        }
        if let Some(t) = self.object_type {
            path.push(format!("type={}", t.name()));
        }
        let mut query = Vec::new();
        text("module-name", &self.module_name, &mut query);
        if let Some(p) = &self.module_path {
            query.push(format!(
                "module-path={}",
                utf8_percent_encode(&p.to_string_lossy(), PATH_VALUE)
            ));
        }
        if let Some(s) = &self.pin_source {
            query.push(format!("pin-source={}", utf8_percent_encode(s, PATH_VALUE)));
        }
        write!(f, "pkcs11:{}", path.join(";"))?;
        if !query.is_empty() {
            write!(f, "?{}", query.join("&"))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    fn parse(s: &str) -> Pkcs11Uri {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn the_rfcs_examples_parse() {
        let empty = parse("pkcs11:");
        assert!(empty.token.is_none() && empty.object.is_none());
        let public = parse("pkcs11:object=my-pubkey;type=public");
        assert_eq!(public.object.as_deref(), Some("my-pubkey"));
        assert_eq!(public.object_type, Some(ObjectType::Public));
        let key = parse("pkcs11:object=my-key;type=private?pin-source=file:/etc/token");
        assert_eq!(key.pin_source.as_deref(), Some("file:/etc/token"));
        let cert = parse(
            "pkcs11:token=The%20Software%20PKCS%2311%20Softtoken;
             manufacturer=Snake%20Oil,%20Inc.;model=1.0;object=my-certificate;type=cert;
             id=%69%95%3E%5C%F4%BD%EC%91;serial=?pin-source=file:/etc/token_pin",
        );
        assert_eq!(
            cert.token.as_deref(),
            Some("The Software PKCS#11 Softtoken")
        );
        assert_eq!(cert.manufacturer.as_deref(), Some("Snake Oil, Inc."));
        assert_eq!(cert.model.as_deref(), Some("1.0"));
        assert_eq!(cert.serial.as_deref(), Some(""));
        assert_eq!(
            cert.id.as_deref(),
            Some(&[0x69, 0x95, 0x3E, 0x5C, 0xF4, 0xBD, 0xEC, 0x91][..])
        );
        assert_eq!(
            parse("pkcs11:object=my-sign-key;type=private?module-name=mypkcs11")
                .module_name
                .as_deref(),
            Some("mypkcs11")
        );
        assert_eq!(
            parse("pkcs11:object=my-sign-key;type=private?module-path=/mnt/libmypkcs11.so.1")
                .module_path,
            Some(PathBuf::from("/mnt/libmypkcs11.so.1"))
        );
        let pin = parse("pkcs11:token=Software%20PKCS%2311%20softtoken;manufacturer=Snake%20Oil,%20Inc.?pin-value=the-pin");
        assert_eq!(pin.pin_value.as_ref().unwrap().expose_secret(), "the-pin");
        assert_eq!(
            parse("pkcs11:slot-description=Sun%20Metaslot")
                .slot_description
                .as_deref(),
            Some("Sun Metaslot")
        );
        let library = parse(
            "pkcs11:library-manufacturer=Snake%20Oil,%20Inc.;library-description=Soft%20Token%20Library;library-version=1.23",
        );
        assert_eq!(library.library_version, Some((1, 23)));
        let mixed = parse("pkcs11:token=My%20token%25%20created%20by%20Joe;library-version=3;id=%01%02%03%Ba%dd%Ef%fe;type=cert");
        assert_eq!(mixed.token.as_deref(), Some("My token% created by Joe"));
        assert_eq!(mixed.library_version, Some((3, 0)));
        assert_eq!(
            mixed.id.as_deref(),
            Some(&[1, 2, 3, 0xBA, 0xDD, 0xEF, 0xFE][..])
        );
        assert_eq!(
            parse("pkcs11:token=A%20name%20with%20a%20substring%20%25%3B;object=my-certificate;type=cert").token.as_deref(),
            Some("A name with a substring %;")
        );
        assert_eq!(
            parse("pkcs11:token=Name%20with%20a%20small%20A%20with%20acute:%20%C3%A1;object=my-certificate;type=cert")
                .token
                .as_deref(),
            Some("Name with a small A with acute: á")
        );
        assert_eq!(parse("pkcs11:slot-id=42").slot_id, Some(42));
    }

    #[test]
    fn unknown_repeated_and_malformed_attributes_are_named() {
        let error = |s: &str| s.parse::<Pkcs11Uri>().unwrap_err().to_string();
        // The RFC's vendor-specific example: p8hsm knows no vendor attributes.
        assert!(error("pkcs11:token=my-token;object=my-certificate;type=cert;vendor-aaa=value-a?pin-source=file:/etc/token_pin&vendor-bbb=value-b")
            .contains("unknown path attribute \"vendor-aaa\""));
        assert!(error("pkcs11:token=a?vendor-bbb=b").contains("unknown query attribute"));
        // Query text is never echoed: it may be a PIN that a stray & cut in two.
        for secret in [
            "?pin-value=Se&cretTail99",
            "?MyS3cretPIN",
            "?pin-value=a&b=cretTail99",
        ] {
            let e = error(&format!("pkcs11:token=a{secret}"));
            assert!(!e.contains("cret") && !e.contains("S3cret"), "{e}");
        }
        assert!(error("pkcs11:token=a;token=b").contains("attribute token appears twice"));
        assert!(error("pkcs11:object=%4").contains("object has a malformed percent-encoding"));
        assert!(error("pkcs11:id=%zz").contains("id has a malformed percent-encoding"));
        assert!(error("pkcs11:type=secret").contains("type \"secret\""));
        assert!(error("pkcs11:slot-id=one").contains("slot-id \"one\""));
        assert!(error("pkcs11:library-version=x.1").contains("library-version"));
        assert!(error("pkcs11:token").contains("has no value"));
        assert!(error("pkcs11:module-path=/x").contains("module-path belongs in the query"));
        assert!(error("pkcs11:?token=x").contains("token belongs in the path"));
        assert!(error("pkcs11:object=%FF").contains("object is not UTF-8"));
        assert!(error("http://example.com").contains("starts with pkcs11:"));
    }

    #[test]
    fn a_printed_uri_parses_back_and_never_holds_the_pin() {
        let uri = parse(
            "pkcs11:token=p8hsm%20ops;object=ABC123DEFG;id=%41%42;type=private?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/run/pin&pin-value=1234",
        );
        let printed = uri.to_string();
        assert_eq!(
            printed,
            "pkcs11:token=p8hsm%20ops;object=ABC123DEFG;id=%41%42;type=private?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file%3A/run/pin"
        );
        assert!(!printed.contains("1234") && !printed.contains("pin-value"));
        let again = parse(&printed);
        assert_eq!(again.token, uri.token);
        assert_eq!(again.id, uri.id);
        assert_eq!(again.pin_source, uri.pin_source);
        assert!(
            !format!("{uri:?}").contains("1234"),
            "Debug redacts the PIN"
        );
    }
}
