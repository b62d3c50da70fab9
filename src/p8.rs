//! Parsing Apple's `.p8` private keys.
//!
//! Accepts PEM `PRIVATE KEY` (PKCS#8 v0 wrapping an SEC1 `ECPrivateKey` on P-256, with
//! or without the optional curve parameters and public key), DER PKCS#8, and SEC1
//! `EC PRIVATE KEY` PEM. Everything else is refused with a [`P8Error`] that names the
//! problem. The parsed scalar lives only in zeroizing types and never reaches `Debug`.

use std::fmt;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use der::asn1::ObjectIdentifier as Oid;
use der::{Decode, Sequence};
use p256::pkcs8::{EncodePrivateKey, EncodePublicKey};
use p256::{PublicKey, SecretKey};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

/// The largest key file p8hsm reads; a real `.p8` is about 250 bytes.
pub const MAX_KEY_FILE_BYTES: usize = 64 * 1024;

const ID_EC_PUBLIC_KEY: Oid = Oid::new_unwrap("1.2.840.10045.2.1");
const PRIME256V1: Oid = Oid::new_unwrap("1.2.840.10045.3.1.7");

/// Why a key file was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum P8Error {
    /// The input is empty or only whitespace.
    #[error("the key file is empty")]
    Empty,
    /// The input is larger than [`MAX_KEY_FILE_BYTES`].
    #[error("the key file is over {} KiB; a .p8 is a few hundred bytes", MAX_KEY_FILE_BYTES / 1024)]
    TooLarge,
    /// Neither PEM nor DER.
    #[error("the key file is neither PEM nor DER")]
    NotPemOrDer,
    /// The PEM framing or its base64 body is broken.
    #[error("the key file's PEM body is corrupt or truncated ({0})")]
    Pem(String),
    /// More than one `-----BEGIN` block.
    #[error("the key file holds {0} PEM blocks; a .p8 holds exactly one")]
    SeveralBlocks(usize),
    /// A PEM block that is not a private key (a certificate, a public key…).
    #[error("the key file holds a \"{0}\" PEM block, not a private key")]
    NotAPrivateKey(String),
    /// An encrypted PKCS#8 key.
    #[error("the key file is an encrypted PKCS#8 key")]
    Encrypted,
    /// The DER structure is invalid or cut short.
    #[error("the key file's DER structure is invalid ({0})")]
    Malformed(String),
    /// Not an elliptic-curve key.
    #[error("the key file holds {0} key, not an EC P-256 key")]
    UnsupportedAlgorithm(&'static str),
    /// An EC key on another curve.
    #[error("the key file holds an EC key on {0}, not P-256")]
    UnsupportedCurve(String),
    /// A standalone SEC1 key that does not name its curve.
    #[error("the EC private key does not name its curve")]
    MissingCurve,
    /// The private scalar is zero or not below the group order.
    #[error("the private scalar is out of range for P-256")]
    ScalarOutOfRange,
    /// The embedded public key is not the one the private scalar gives.
    #[error("the key file's public key does not match its private key")]
    PublicKeyMismatch,
    /// The key could not be written as PKCS#8 for an import by unwrapping.
    #[error("the key cannot be encoded as PKCS#8 ({0})")]
    Encode(String),
}

/// A parsed P-256 private key and its public key.
///
/// The secret scalar is zeroized on drop and redacted from `Debug`. It lives on the
/// heap, so moving a `P8Key` between stack frames moves a pointer, not the scalar.
pub struct P8Key {
    secret: Box<SecretKey>,
    public: PublicKey,
}

impl P8Key {
    /// Parses a key file's bytes (PEM or DER), refusing anything that is not a valid
    /// P-256 private key.
    pub fn parse(input: &[u8]) -> Result<P8Key, P8Error> {
        let parsed = P8Key::parse_inner(input);
        scrub_stack();
        parsed
    }

    fn parse_inner(input: &[u8]) -> Result<P8Key, P8Error> {
        if input.len() > MAX_KEY_FILE_BYTES {
            return Err(P8Error::TooLarge);
        }
        let trimmed = input.trim_ascii();
        if trimmed.is_empty() {
            return Err(P8Error::Empty);
        }
        // RFC 7468: text outside the encapsulation boundaries is allowed (`openssl
        // pkcs12` writes "Bag Attributes" before the BEGIN line); the BEGIN line starts a
        // line of its own.
        let begin = (0..trimmed.len()).find(|&at| {
            trimmed[at..].starts_with(b"-----BEGIN ") && (at == 0 || trimmed[at - 1] == b'\n')
        });
        if let Some(at) = begin {
            return parse_pem(trimmed, &trimmed[at..]);
        }
        if trimmed.windows(11).any(|w| w == b"-----BEGIN ") {
            return Err(P8Error::NotPemOrDer);
        }
        if input[0] == 0x30 {
            return parse_pkcs8_der(input);
        }
        Err(P8Error::NotPemOrDer)
    }

    /// The public key.
    pub fn public_key(&self) -> &PublicKey {
        &self.public
    }

    /// The private scalar as 32 big-endian bytes, in a buffer wiped on drop.
    pub(crate) fn scalar_bytes(&self) -> Zeroizing<Vec<u8>> {
        let bytes = Zeroizing::new(self.secret.to_bytes());
        Zeroizing::new(bytes.to_vec())
    }

    /// The key as PKCS#8 DER (for C_UnwrapKey), in a buffer wiped on drop.
    pub(crate) fn pkcs8_der(&self) -> Result<Zeroizing<Vec<u8>>, P8Error> {
        let document = self
            .secret
            .to_pkcs8_der()
            .map_err(|e| P8Error::Encode(e.to_string()))?;
        Ok(Zeroizing::new(document.as_bytes().to_vec()))
    }
}

impl fmt::Debug for P8Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("P8Key")
            .field("public", &fingerprint(&self.public))
            .field("secret", &"[REDACTED]")
            .finish()
    }
}

/// Overwrites 64 KiB of the stack below the caller with zeros. Moving a key between
/// stack frames, and the elliptic-curve arithmetic that derives its public key, leave
/// copies of the scalar in frames that return without wiping them; call this after the
/// frames that held a key have returned.
#[inline(never)]
pub(crate) fn scrub_stack() {
    let mut area = [0u8; 64 * 1024];
    zeroize::Zeroize::zeroize(&mut area[..]);
    std::hint::black_box(&area);
}

/// The SHA-256 fingerprint of a public key's SubjectPublicKeyInfo DER, as
/// `sha256:<64 lowercase hex digits>`.
pub fn fingerprint(public: &PublicKey) -> String {
    // SPKI encoding of a valid P-256 point cannot fail.
    let spki = public
        .to_public_key_der()
        .expect("a P-256 public key always encodes as SPKI");
    let digest = Sha256::digest(spki.as_bytes());
    format!("sha256:{}", base16ct::lower::encode_string(&digest))
}

/// The key in the PEM block that starts `block`, the only one in `whole`.
fn parse_pem(whole: &[u8], block: &[u8]) -> Result<P8Key, P8Error> {
    let blocks = whole.windows(11).filter(|w| w == b"-----BEGIN ").count();
    if blocks > 1 {
        return Err(P8Error::SeveralBlocks(blocks));
    }
    let (label, der) = decode_pem(block)?;
    match label.as_str() {
        "PRIVATE KEY" => parse_pkcs8_der(&der),
        // Apple Business and School Manager name PKCS#8 data `EC PRIVATE KEY` at times.
        "EC PRIVATE KEY" if pkcs8::PrivateKeyInfo::from_der(&der).is_ok() => parse_pkcs8_der(&der),
        "EC PRIVATE KEY" => parse_sec1(&der, None),
        "ENCRYPTED PRIVATE KEY" => Err(P8Error::Encrypted),
        "RSA PRIVATE KEY" => Err(P8Error::UnsupportedAlgorithm("an RSA")),
        other => Err(P8Error::NotAPrivateKey(other.to_owned())),
    }
}

/// A PEM block's label and body, read as RFC 7468's lax parsers read it: the body's
/// lines may be of any length (76 columns, or one line), white space anywhere in it is
/// ignored; the base64 itself must be whole (padded). The body's copies are wiped.
fn decode_pem(text: &[u8]) -> Result<(String, Zeroizing<Vec<u8>>), P8Error> {
    let corrupt = |why: &str| P8Error::Pem(why.to_owned());
    let text = std::str::from_utf8(text).map_err(|_| corrupt("not text"))?;
    let begin = text
        .strip_prefix("-----BEGIN ")
        .ok_or_else(|| corrupt("no BEGIN line"))?;
    let (label, rest) = begin
        .split_once("-----")
        .ok_or_else(|| corrupt("the BEGIN line is not closed"))?;
    let end = format!("-----END {label}-----");
    let (body, after) = rest
        .split_once(end.as_str())
        .ok_or_else(|| corrupt("no END line matching the BEGIN line"))?;
    // Text may follow the END line, on lines of its own.
    if !(after.is_empty() || after.starts_with(['\r', '\n'])) || !body.starts_with(['\r', '\n']) {
        return Err(corrupt("text on the encapsulation boundaries' lines"));
    }
    let base64: Zeroizing<Vec<u8>> =
        Zeroizing::new(body.bytes().filter(|b| !b.is_ascii_whitespace()).collect());
    let mut der = Zeroizing::new(vec![0u8; base64.len() / 4 * 3 + 3]);
    let len = STANDARD
        .decode_slice(&base64[..], &mut der[..])
        .map_err(|e| P8Error::Pem(format!("invalid base64: {e}")))?;
    der.truncate(len);
    Ok((label.to_owned(), der))
}

/// EncryptedPrivateKeyInfo (RFC 5958): only recognised, never decrypted.
#[derive(Sequence)]
struct EncryptedPrivateKeyInfo<'a> {
    algorithm: spki::AlgorithmIdentifierRef<'a>,
    encrypted_data: der::asn1::OctetStringRef<'a>,
}

fn parse_pkcs8_der(der: &[u8]) -> Result<P8Key, P8Error> {
    let info = match pkcs8::PrivateKeyInfo::from_der(der) {
        Ok(info) => info,
        Err(_) if EncryptedPrivateKeyInfo::from_der(der).is_ok() => return Err(P8Error::Encrypted),
        Err(e) => return Err(P8Error::Malformed(e.to_string())),
    };
    let algorithm = info.algorithm.oid;
    if algorithm != ID_EC_PUBLIC_KEY {
        return Err(P8Error::UnsupportedAlgorithm(algorithm_name(algorithm)));
    }
    let curve = info
        .algorithm
        .parameters_oid()
        .map_err(|_| P8Error::MissingCurve)?;
    check_curve(curve)?;
    parse_sec1(info.private_key, Some(curve))
}

fn parse_sec1(der: &[u8], outer_curve: Option<Oid>) -> Result<P8Key, P8Error> {
    let ec = sec1::EcPrivateKey::from_der(der).map_err(|e| P8Error::Malformed(e.to_string()))?;
    let inner_curve = ec.parameters.and_then(|p| p.named_curve());
    match (outer_curve, inner_curve) {
        (_, Some(inner)) => check_curve(inner)?,
        (None, None) => return Err(P8Error::MissingCurve),
        (Some(_), None) => {}
    }
    if ec.private_key.len() > 32 {
        return Err(P8Error::UnsupportedCurve(format!(
            "a curve with {}-byte scalars",
            ec.private_key.len()
        )));
    }
    let secret = SecretKey::from_slice(ec.private_key).map_err(|_| P8Error::ScalarOutOfRange)?;
    let public = secret.public_key();
    if let Some(embedded) = ec.public_key {
        if PublicKey::from_sec1_bytes(embedded).ok() != Some(public) {
            return Err(P8Error::PublicKeyMismatch);
        }
    }
    Ok(P8Key {
        secret: Box::new(secret),
        public,
    })
}

fn check_curve(curve: Oid) -> Result<(), P8Error> {
    if curve == PRIME256V1 {
        return Ok(());
    }
    let name = match curve.to_string().as_str() {
        "1.3.132.0.34" => "P-384".to_owned(),
        "1.3.132.0.35" => "P-521".to_owned(),
        "1.3.132.0.10" => "secp256k1".to_owned(),
        "1.3.36.3.3.2.8.1.1.7" => "brainpoolP256r1".to_owned(),
        other => format!("the curve {other}"),
    };
    Err(P8Error::UnsupportedCurve(name))
}

fn algorithm_name(oid: Oid) -> &'static str {
    match oid.to_string().as_str() {
        "1.2.840.113549.1.1.1" | "1.2.840.113549.1.1.10" => "an RSA",
        "1.3.101.112" => "an Ed25519",
        "1.3.101.113" => "an Ed448",
        "1.3.101.110" | "1.3.101.111" => "an X25519/X448",
        "1.2.840.10040.4.1" => "a DSA",
        _ => "a non-EC",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use p256::pkcs8::{EncodePrivateKey, LineEnding};

    fn key() -> SecretKey {
        SecretKey::from_slice(&[7u8; 32]).unwrap()
    }

    fn pkcs8_pem() -> String {
        key().to_pkcs8_pem(LineEnding::LF).unwrap().to_string()
    }

    /// PKCS#8 DER around a hand-built SEC1 key, to vary the optional fields.
    fn pkcs8_around(sec1_der: &[u8]) -> Vec<u8> {
        use der::Encode;
        let algorithm = spki::AlgorithmIdentifierRef {
            oid: ID_EC_PUBLIC_KEY,
            parameters: Some(der::asn1::AnyRef::from(&PRIME256V1)),
        };
        pkcs8::PrivateKeyInfo::new(algorithm, sec1_der)
            .to_der()
            .unwrap()
    }

    fn sec1_der(scalar: &[u8], params: bool, public: Option<&[u8]>) -> Vec<u8> {
        use der::Encode;
        sec1::EcPrivateKey {
            private_key: scalar,
            parameters: params.then_some(sec1::EcParameters::NamedCurve(PRIME256V1)),
            public_key: public,
        }
        .to_der()
        .unwrap()
    }

    fn pem(label: &str, der: &[u8]) -> String {
        der::pem::encode_string(label, der::pem::LineEnding::LF, der).unwrap()
    }

    /// The PEM with its body's lines `width` characters long.
    fn rewrap(pem: &str, width: usize) -> String {
        let lines: Vec<&str> = pem.lines().collect();
        let body: String = lines[1..lines.len() - 1].concat();
        let wrapped: Vec<String> = body
            .as_bytes()
            .chunks(width.min(body.len()))
            .map(|c| String::from_utf8(c.to_vec()).unwrap())
            .collect();
        format!(
            "{}\n{}\n{}\n",
            lines[0],
            wrapped.join("\n"),
            lines[lines.len() - 1]
        )
    }

    fn public_point() -> Vec<u8> {
        key().public_key().to_sec1_bytes().to_vec()
    }

    #[test]
    fn accepts_apple_pem_and_its_variants() {
        let expected = key().public_key();
        let scalar = key().to_bytes();
        let point = public_point();
        let variants = [
            pkcs8_pem(),
            pkcs8_pem().replace('\n', "\r\n"),
            format!("\n  \t{}\n\n", pkcs8_pem()),
            // As `openssl pkcs12 -nocerts -nodes` writes it, and with a comment after.
            format!(
                "Bag Attributes\n    localKeyID: 01 00 00 00\nKey Attributes: <No Attributes>\n{}",
                pkcs8_pem()
            ),
            format!("{}Comment: exported for the HSM\n", pkcs8_pem()),
            pem(
                "PRIVATE KEY",
                &pkcs8_around(&sec1_der(&scalar, true, Some(&point))),
            ),
            pem(
                "PRIVATE KEY",
                &pkcs8_around(&sec1_der(&scalar, false, Some(&point))),
            ),
            pem("PRIVATE KEY", &pkcs8_around(&sec1_der(&scalar, true, None))),
            pem(
                "PRIVATE KEY",
                &pkcs8_around(&sec1_der(&scalar, false, None)),
            ),
            pem("EC PRIVATE KEY", &sec1_der(&scalar, true, Some(&point))),
            // Finding 21: any line length RFC 7468's lax parsers accept.
            rewrap(&pkcs8_pem(), 76),
            rewrap(&pkcs8_pem(), usize::MAX),
            rewrap(&pkcs8_pem(), 16),
            // PKCS#8 labelled as SEC1, as some Apple Business Manager downloads are.
            pkcs8_pem().replace("PRIVATE KEY", "EC PRIVATE KEY"),
        ];
        for (i, text) in variants.iter().enumerate() {
            let parsed =
                P8Key::parse(text.as_bytes()).unwrap_or_else(|e| panic!("variant {i}: {e}"));
            assert_eq!(parsed.public_key(), &expected, "variant {i}");
        }
        let der = key().to_pkcs8_der().unwrap();
        assert_eq!(
            P8Key::parse(der.as_bytes()).unwrap().public_key(),
            &expected
        );
    }

    #[test]
    fn refuses_each_bad_input_with_its_own_error() {
        let scalar = key().to_bytes();
        let other_point = SecretKey::from_slice(&[9u8; 32])
            .unwrap()
            .public_key()
            .to_sec1_bytes();
        let order: [u8; 32] = [
            0xFF, 0xFF, 0xFF, 0xFF, 0x00, 0x00, 0x00, 0x00, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
            0xFF, 0xFF, 0xBC, 0xE6, 0xFA, 0xAD, 0xA7, 0x17, 0x9E, 0x84, 0xF3, 0xB9, 0xCA, 0xC2,
            0xFC, 0x63, 0x25, 0x51,
        ];
        let good = pkcs8_pem();
        let body_start = good.find('\n').unwrap() + 1;
        let mut corrupt = good.clone();
        corrupt.replace_range(body_start + 5..body_start + 6, "!");
        let full_der = key().to_pkcs8_der().unwrap();
        let truncated_der = &full_der.as_bytes()[..60];
        let cases: Vec<(Vec<u8>, P8Error)> = vec![
            (b"".to_vec(), P8Error::Empty),
            (b" \n\r\n".to_vec(), P8Error::Empty),
            (b"hello".to_vec(), P8Error::NotPemOrDer),
            (vec![b'A'; MAX_KEY_FILE_BYTES + 1], P8Error::TooLarge),
            (
                format!("{good}{good}").into_bytes(),
                P8Error::SeveralBlocks(2),
            ),
            (corrupt.into_bytes(), P8Error::Pem(String::new())),
            (
                pem("PRIVATE KEY", truncated_der).into_bytes(),
                P8Error::Malformed(String::new()),
            ),
            (truncated_der.to_vec(), P8Error::Malformed(String::new())),
            (
                pem("ENCRYPTED PRIVATE KEY", &[0x30, 0x00]).into_bytes(),
                P8Error::Encrypted,
            ),
            (
                pem("CERTIFICATE", &[0x30, 0x00]).into_bytes(),
                P8Error::NotAPrivateKey(String::new()),
            ),
            (
                pem(
                    "PRIVATE KEY",
                    &pkcs8_around(&sec1_der(&[0u8; 32], true, None)),
                )
                .into_bytes(),
                P8Error::ScalarOutOfRange,
            ),
            (
                pem("PRIVATE KEY", &pkcs8_around(&sec1_der(&order, true, None))).into_bytes(),
                P8Error::ScalarOutOfRange,
            ),
            (
                pem(
                    "PRIVATE KEY",
                    &pkcs8_around(&sec1_der(&scalar, true, Some(&other_point))),
                )
                .into_bytes(),
                P8Error::PublicKeyMismatch,
            ),
            (
                pem("EC PRIVATE KEY", &sec1_der(&scalar, false, None)).into_bytes(),
                P8Error::MissingCurve,
            ),
        ];
        for (i, (input, expected)) in cases.iter().enumerate() {
            let err = P8Key::parse(input).expect_err(&format!("case {i} accepted"));
            assert_eq!(
                std::mem::discriminant(&err),
                std::mem::discriminant(expected),
                "case {i}: got {err}"
            );
            assert!(
                !err.to_string().contains('\n'),
                "case {i}: multi-line error"
            );
        }
    }

    #[test]
    fn debug_is_redacted() {
        let parsed = P8Key::parse(pkcs8_pem().as_bytes()).unwrap();
        let debug = format!("{parsed:?}");
        let scalar_hex = base16ct::lower::encode_string(&key().to_bytes());
        assert!(debug.contains("[REDACTED]"), "{debug}");
        assert!(!debug.contains(&scalar_hex), "{debug}");
        assert!(!debug.contains("7, 7, 7"), "{debug}");
        assert!(!debug.to_lowercase().contains("0707"), "{debug}");
    }

    #[test]
    fn fingerprint_is_sha256_of_spki() {
        let fp = fingerprint(&key().public_key());
        let spki = key().public_key().to_public_key_der().unwrap();
        let hex = base16ct::lower::encode_string(&Sha256::digest(spki.as_bytes()));
        assert_eq!(fp, format!("sha256:{hex}"));
    }
}
