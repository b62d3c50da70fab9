//! `check`: every reason Apple would reject a token. Apple answers them all with the
//! same 401, so this names each one. Pure: the caller supplies the time and, to verify
//! the signature, the public key.

use std::collections::BTreeSet;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use p256::ecdsa::signature::Verifier;
use p256::ecdsa::{Signature, VerifyingKey};
use p256::PublicKey;
use serde::Serialize;
use serde_json::{Map, Value};

pub use super::spec::Finding;
use super::spec::{IssuerShape, JwtShape, LifetimeRule};
use super::Kind;
use crate::ids::printable;
use crate::{Error, IssuerId, KeyId, OAuthId, TeamId};

/// The kinds `check` knows: every kind whose result is a JWT.
pub fn kinds() -> impl Iterator<Item = Kind> {
    Kind::ALL.iter().copied().filter(|k| k.spec().jwt.is_some())
}

/// The JWT kind named `name` (`--kind`).
pub fn kind(name: &str) -> Result<Kind, Error> {
    kinds()
        .find(|k| k.name() == name)
        .ok_or_else(|| Error::InvalidId {
            what: "token kind",
            value: printable(name),
            rule: "not a kind whose result is a JWT",
        })
}

/// What `check` found.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The kind checked against, when known.
    pub kind: Option<Kind>,
    /// The decoded header.
    pub header: Option<Value>,
    /// The decoded claims.
    pub claims: Option<Value>,
    /// Every reason Apple would reject the token; empty when clean.
    pub findings: Vec<Finding>,
    /// Remarks that are not rejections (e.g. the kind could not be told).
    pub notes: Vec<String>,
}

fn shape(kind: Kind) -> JwtShape {
    // `check` is only ever given JWT kinds (see [`kinds`]).
    kind.spec().jwt.unwrap_or(JwtShape::new(
        false,
        None,
        &[],
        &[],
        IssuerShape::TeamId,
        None,
    ))
}

fn is_storekit(kind: Kind) -> bool {
    kind.spec().lifetime == LifetimeRule::Instant
}

/// Times above this are milliseconds, not seconds (year 5138 in seconds).
const MAX_SECONDS: i64 = 100_000_000_000;

/// Checks `token` as Apple would at UNIX time `now`, against `kind` or the kind its
/// claims show.
pub fn check(token: &str, kind: Option<Kind>, now: u64) -> Report {
    let mut report = Report {
        kind,
        header: None,
        claims: None,
        findings: Vec::new(),
        notes: Vec::new(),
    };
    let parts: Vec<&str> = token.trim().split('.').collect();
    if parts.len() != 3 {
        report.find(
            "malformed",
            "not a compact JWS: three base64url parts separated by dots".into(),
        );
        return report;
    }
    let header = decode_object(parts[0]);
    let claims = decode_object(parts[1]);
    let (Some(header), Some(claims)) = (header, claims) else {
        report.find(
            "malformed",
            "the header or claims are not base64url-encoded JSON objects".into(),
        );
        return report;
    };
    check_signature_encoding(&mut report, parts[2]);
    let kind = kind.or_else(|| detect(&header, &claims, &mut report));
    report.kind = kind;
    check_header(&mut report, &header, kind);
    check_times(&mut report, &claims, kind, now);
    if let Some(kind) = kind {
        check_claims(&mut report, &header, &claims, kind);
    }
    report.header = Some(Value::Object(header));
    report.claims = Some(Value::Object(claims));
    report
}

/// Whether the token's R||S signature verifies with `key` (false when malformed).
pub fn verify_signature(token: &str, key: &PublicKey) -> bool {
    let Some((input, signature)) = token.trim().rsplit_once('.') else {
        return false;
    };
    URL_SAFE_NO_PAD
        .decode(signature)
        .ok()
        .and_then(|bytes| Signature::from_slice(&bytes).ok())
        .is_some_and(|sig| {
            VerifyingKey::from(key)
                .verify(input.as_bytes(), &sig)
                .is_ok()
        })
}

impl Report {
    fn find(&mut self, code: &'static str, message: String) {
        self.findings.push(Finding { code, message });
    }
}

fn decode_object(part: &str) -> Option<Map<String, Value>> {
    let bytes = URL_SAFE_NO_PAD.decode(part).ok()?;
    match serde_json::from_slice(&bytes).ok()? {
        Value::Object(map) => Some(map),
        _ => None,
    }
}

fn check_signature_encoding(report: &mut Report, signature: &str) {
    match URL_SAFE_NO_PAD.decode(signature) {
        Ok(bytes) if bytes.len() == 64 => {}
        Ok(bytes) if bytes.first() == Some(&0x30) && (8..=72).contains(&bytes.len()) => report
            .find(
                "der-signature",
                format!(
                    "the signature is DER ({} bytes); ES256 in a JWS is the 64-byte R||S",
                    bytes.len()
                ),
            ),
        Ok(bytes) => report.find(
            "signature",
            format!(
                "the signature is {} bytes; ES256 is 64 bytes R||S",
                bytes.len()
            ),
        ),
        Err(_) => report.find("signature", "the signature is not base64url".into()),
    }
}

/// The kind an unnamed token is for, told by each kind's shape: among the kinds of its
/// `aud` (or of none), those that recognize it, a kind with a rule of its own before one
/// its `aud` alone tells, and then the first in the list of kinds.
fn detect(
    header: &Map<String, Value>,
    claims: &Map<String, Value>,
    report: &mut Report,
) -> Option<Kind> {
    let aud = match claims.get("aud") {
        None => None,
        Some(Value::String(aud)) => Some(aud.as_str()),
        Some(other) => {
            report.find(
                "aud",
                format!("aud is {other}, not one of Apple's audience strings"),
            );
            return None;
        }
    };
    let of_aud: Vec<(Kind, JwtShape)> = kinds()
        .map(|k| (k, shape(k)))
        .filter(|(_, shape)| shape.aud == aud)
        .collect();
    if let (Some(aud), true) = (aud, of_aud.is_empty()) {
        report.find("aud", format!("unknown aud {}", printable(aud)));
        return None;
    }
    let told = |specific: bool| {
        of_aud.iter().find(|(_, shape)| match shape.recognize {
            Some(recognize) => specific && recognize(header, claims),
            None => !specific,
        })
    };
    let kind = told(true).or_else(|| told(false)).map(|(kind, _)| *kind);
    if kind.is_none() {
        report.notes.push(
            "cannot tell which API the token is for (its aud and claims fit none, or several \
             alike); name the kind"
                .into(),
        );
    }
    kind
}

fn check_header(report: &mut Report, header: &Map<String, Value>, kind: Option<Kind>) {
    match header.get("alg") {
        Some(Value::String(alg)) if alg == "ES256" => {}
        Some(alg) => report.find("alg", format!("alg is {alg}; Apple accepts only ES256")),
        None => report.find(
            "alg",
            "the header has no alg; Apple accepts only ES256".into(),
        ),
    }
    match header.get("kid") {
        Some(Value::String(kid)) => match kid.parse::<KeyId>() {
            Ok(key_id) => {
                if let Some(Err(e)) = kind.map(|k| k.spec().check_key_id(&key_id)) {
                    report.find("kid", e.to_string());
                }
            }
            Err(e) => report.find("kid", e.to_string()),
        },
        Some(kid) => report.find("kid", format!("kid {kid} is not a string")),
        None => report.find("kid", "the header has no kid (the Apple key ID)".into()),
    }
    match header.get("typ") {
        Some(Value::String(typ)) if typ == "JWT" => {}
        Some(typ) => report.find("typ", format!("typ is {typ}, not \"JWT\"")),
        None if kind.is_some_and(|k| shape(k).typ) => report.find(
            "typ",
            "the header has no typ; this API's tokens carry typ \"JWT\"".into(),
        ),
        None => {}
    }
    let own = kind.map_or(&[][..], |k| shape(k).header);
    let others: Vec<&str> = header
        .keys()
        .map(String::as_str)
        .filter(|name| !matches!(*name, "alg" | "kid" | "typ") && !own.contains(name))
        .collect();
    if !others.is_empty() {
        report.find(
            "header",
            format!(
                "the header carries {}, which this API's tokens do not",
                others.join(", ")
            ),
        );
    }
}

fn time(report: &mut Report, claims: &Map<String, Value>, name: &'static str) -> Option<i64> {
    let value = claims.get(name)?;
    let Some(t) = value.as_i64() else {
        report.find(
            "time",
            format!("{name} is {value}, not a whole number of seconds"),
        );
        return None;
    };
    if t < 0 {
        report.find("time", format!("{name} is {t}, before 1970"));
        return None;
    }
    if t > MAX_SECONDS {
        report.find(
            "milliseconds",
            format!("{name} {t} is in milliseconds; Apple wants UNIX seconds"),
        );
        return None;
    }
    Some(t)
}

fn check_times(report: &mut Report, claims: &Map<String, Value>, kind: Option<Kind>, now: u64) {
    let now = now as i64;
    let iat = time(report, claims, "iat");
    let exp = time(report, claims, "exp");
    if let Some(iat) = iat.filter(|iat| *iat > now) {
        report.find(
            "iat-future",
            format!(
                "iat is {} s in the future; Apple rejects tokens issued after its clock",
                iat - now
            ),
        );
    }
    if let Some(exp) = exp.filter(|exp| *exp <= now) {
        report.find("expired", format!("exp passed {} s ago", now - exp));
    }
    let Some(kind) = kind else { return };
    if let LifetimeRule::Provider { validity } = kind.spec().lifetime {
        if let Some(iat) = iat.filter(|iat| now - iat > validity as i64) {
            report.find(
                "expired",
                format!(
                    "iat is {} s old; Apple accepts provider tokens for {validity} s",
                    now - iat
                ),
            );
        }
    }
    let (Some(iat), Some(exp)) = (iat, exp) else {
        return;
    };
    let shape = shape(kind);
    let limit = shape
        .longer
        .and_then(|longer| longer(claims))
        .or(shape.limit);
    if let Some(limit) = limit.filter(|limit| exp - iat > *limit as i64) {
        report.find(
            "lifetime",
            format!(
                "exp - iat is {} s; {} tokens may live at most {limit} s",
                exp - iat,
                kind.spec().api
            ),
        );
    }
    if exp <= iat {
        report.find("lifetime", "exp is not after iat".into());
    }
}

fn check_claims(
    report: &mut Report,
    header: &Map<String, Value>,
    claims: &Map<String, Value>,
    kind: Kind,
) {
    let shape = shape(kind);
    let present: BTreeSet<&str> = claims.keys().map(String::as_str).collect();
    for name in shape.required.iter().filter(|n| !present.contains(*n)) {
        report.find(
            "claim-missing",
            format!("{} tokens carry the claim {name}", kind.spec().api),
        );
    }
    for name in present
        .iter()
        .filter(|n| !shape.required.contains(n) && !shape.optional.contains(n))
    {
        if *name == "exp" && is_storekit(kind) {
            report.find(
                "exp-in-storekit",
                "StoreKit signatures must not carry exp: Apple derives expiry from iat".into(),
            );
        } else {
            report.find(
                "claim-extra",
                format!("{} tokens carry no claim {name}", kind.spec().api),
            );
        }
    }
    if let (Some(expected), Some(aud)) = (shape.aud, claims.get("aud")) {
        if aud != expected {
            report.find(
                "aud",
                format!(
                    "aud is {aud}; {} tokens carry aud \"{expected}\"",
                    kind.spec().api
                ),
            );
        }
    }
    let oauth = |s: &str, prefix: &str| s.parse::<OAuthId>().is_ok_and(|id| id.prefix() == prefix);
    if let Some(iss) = claims.get("iss") {
        let ok = iss.as_str().is_some_and(|s| match shape.issuer {
            IssuerShape::IssuerId => s.parse::<IssuerId>().is_ok(),
            IssuerShape::TeamId => s.parse::<TeamId>().is_ok(),
            IssuerShape::OAuth { prefix, .. } => oauth(s, prefix),
        });
        if !ok {
            let want = match shape.issuer {
                IssuerShape::IssuerId => "an issuer ID (UUID)".to_owned(),
                IssuerShape::TeamId => "a Team ID".to_owned(),
                IssuerShape::OAuth { prefix, .. } => format!("{prefix}.<uuid>"),
            };
            report.find("iss", format!("iss {iss} is not {want}"));
        }
    }
    if let IssuerShape::OAuth { prefix, is_sub } = shape.issuer {
        if let Some(sub) = claims.get("sub") {
            if !sub.as_str().is_some_and(|s| oauth(s, prefix)) {
                report.find(
                    "sub",
                    format!("sub {sub} is not a client ID {prefix}.<uuid>"),
                );
            } else if is_sub && claims.get("iss").is_some_and(|iss| iss != sub) {
                report.find(
                    "iss",
                    "iss and sub must both be the client ID in a client assertion".into(),
                );
            }
        }
    }
    if shape.required.contains(&"jti")
        && claims.get("jti").is_some_and(|jti| {
            !jti.as_str()
                .is_some_and(|s| s.len() == 36 && uuid::Uuid::try_parse(s).is_ok())
        })
    {
        report.find("jti", "jti must be a fresh UUID".into());
    }
    if let Some(rules) = shape.rules {
        report.findings.extend(rules(header, claims));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apple::connect::Connect;
    use crate::apple::oauth::AUD_ACCOUNT_TOKEN;
    use crate::apple::tests::{now, request, NOW};
    use crate::apple::JwtParams;
    use crate::apple::AUD_SIGN_IN_WITH_APPLE;
    use crate::jws;
    use crate::jws::tests::MemorySigner;
    use p256::ecdsa::SigningKey;

    fn codes(report: &Report) -> Vec<&'static str> {
        report.findings.iter().map(|f| f.code).collect()
    }

    /// A token with these header and claims, signed by the test key.
    fn token(header: Value, claims: Value) -> String {
        let signer = MemorySigner::new();
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let sig = jws::tests::sign_raw(&signer, input.as_bytes());
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig))
    }

    fn jwt() -> Value {
        serde_json::json!({"alg": "ES256", "kid": "2X9R4HXF34", "typ": "JWT"})
    }

    const ISS: &str = "57246542-96fe-1a63-e053-0824d011072a";

    #[test]
    fn a_token_p8hsm_signs_is_clean_and_verifies() {
        let params = JwtParams::Connect(Connect {
            issuer: Some(ISS.parse().unwrap()),
            ..Connect::default()
        });
        let signed = request(params, None, None)
            .sign(&MemorySigner::new(), None, now())
            .unwrap();
        let report = check(&signed.token, None, NOW);
        assert_eq!(report.kind, Some(Kind::Connect));
        assert!(report.findings.is_empty(), "{:?}", report.findings);
        let public = SigningKey::from_slice(&[0x11; 32])
            .unwrap()
            .verifying_key()
            .into();
        assert!(verify_signature(&signed.token, &public));
        let other = SigningKey::from_slice(&[0x12; 32])
            .unwrap()
            .verifying_key()
            .into();
        assert!(!verify_signature(&signed.token, &other));
    }

    #[test]
    fn each_bad_token_gets_its_own_finding() {
        let t = NOW as i64;
        let connect = |claims: Value| token(jwt(), claims);
        let cases: Vec<(String, Option<Kind>, &str)> = vec![
            ("abc".into(), None, "malformed"),
            (
                connect(
                    serde_json::json!({"iss": ISS, "iat": t, "exp": t + 600, "aud": "appstoreconnect-v2"}),
                ),
                None,
                "aud",
            ),
            (
                connect(
                    serde_json::json!({"iss": ISS, "iat": t - 60, "exp": t + 1200, "aud": "appstoreconnect-v1"}),
                ),
                None,
                "lifetime",
            ),
            (
                connect(
                    serde_json::json!({"iss": ISS, "iat": t + 120, "exp": t + 600, "aud": "appstoreconnect-v1"}),
                ),
                None,
                "iat-future",
            ),
            (
                connect(
                    serde_json::json!({"iss": ISS, "iat": t - 900, "exp": t - 10, "aud": "appstoreconnect-v1"}),
                ),
                None,
                "expired",
            ),
            (
                connect(
                    serde_json::json!({"iss": ISS, "iat": t * 1000, "exp": (t + 600) * 1000, "aud": "appstoreconnect-v1"}),
                ),
                None,
                "milliseconds",
            ),
            (
                connect(
                    serde_json::json!({"iss": ISS, "sub": "user", "iat": t, "exp": t + 600, "aud": "appstoreconnect-v1"}),
                ),
                None,
                "iss-and-sub",
            ),
            (
                connect(serde_json::json!({"iat": t, "exp": t + 600, "aud": "appstoreconnect-v1"})),
                None,
                "claim-missing",
            ),
            (
                connect(
                    serde_json::json!({"iss": ISS, "iat": t, "exp": t + 600, "aud": "appstoreconnect-v1", "scope": "GET /v1/apps"}),
                ),
                None,
                "scope",
            ),
            (
                connect(
                    serde_json::json!({"iss": ISS, "iat": t, "exp": t + 600, "aud": "appstoreconnect-v1", "scope": ["apps"]}),
                ),
                None,
                "scope",
            ),
            (
                connect(
                    serde_json::json!({"iss": ISS, "iat": t, "exp": t + 600, "aud": "appstoreconnect-v1", "jti": "x"}),
                ),
                None,
                "claim-extra",
            ),
            (
                connect(
                    serde_json::json!({"iss": ISS, "iat": t, "exp": t + 600, "aud": "appstoreconnect-v1"}),
                ),
                Some(Kind::Server),
                "claim-missing",
            ),
            (
                connect(
                    serde_json::json!({"iss": ISS, "iat": t, "exp": t + 600, "aud": "appstoreconnect-v1", "bid": "a.b"}),
                ),
                Some(Kind::Server),
                "none",
            ),
            (
                connect(
                    serde_json::json!({"iss": ISS, "iat": t, "exp": t + 4000, "aud": "appstoreconnect-v1", "bid": "a.b"}),
                ),
                None,
                "lifetime",
            ),
            (
                connect(
                    serde_json::json!({"iss": "A1B2C3D4E5", "iat": t, "exp": t + 600, "aud": "appstoreconnect-v1", "bid": "a.b"}),
                ),
                None,
                "iss",
            ),
            (
                token(
                    serde_json::json!({"alg": "RS256", "kid": "2X9R4HXF34", "typ": "JWT"}),
                    serde_json::json!({"iss": ISS, "iat": t, "exp": t + 600, "aud": "appstoreconnect-v1"}),
                ),
                None,
                "alg",
            ),
            (
                token(
                    serde_json::json!({"alg": "ES256", "typ": "JWT"}),
                    serde_json::json!({"iss": ISS, "iat": t, "exp": t + 600, "aud": "appstoreconnect-v1"}),
                ),
                None,
                "kid",
            ),
            (
                token(
                    serde_json::json!({"alg": "ES256", "kid": "2X9R4HXF34", "typ": "JOSE"}),
                    serde_json::json!({"iss": ISS, "iat": t, "exp": t + 600, "aud": "appstoreconnect-v1"}),
                ),
                None,
                "typ",
            ),
            (
                token(
                    serde_json::json!({"alg": "ES256", "kid": "2X9R4HXF34", "id": "A1B2C3D4E5.com.x"}),
                    serde_json::json!({"iss": "A1B2C3D4E5", "iat": t, "exp": t + 600, "sub": "com.y"}),
                ),
                None,
                "weatherkit-id",
            ),
            (
                token(
                    serde_json::json!({"alg": "ES256", "kid": "2X9R4HXF34", "id": "A1B2C3D4E5.com.x"}),
                    serde_json::json!({"iss": "A1B2C3D4E5", "iat": t, "exp": t + 600, "sub": "com.x", "aud": "x"}),
                ),
                Some(Kind::Weatherkit),
                "claim-extra",
            ),
            (
                connect(
                    serde_json::json!({"iss": ISS, "iat": t, "exp": t + 600, "aud": "promotional-offer", "bid": "a.b", "nonce": "3e1bd4a2-1b50-4c1f-9d5f-2d1e5a0c8f11", "productId": "p", "offerIdentifier": "o"}),
                ),
                None,
                "exp-in-storekit",
            ),
            (
                connect(
                    serde_json::json!({"iss": ISS, "iat": t, "aud": "promotional-offer", "bid": "a.b", "nonce": "3E1BD4A2-1B50-4C1F-9D5F-2D1E5A0C8F11", "productId": "p", "offerIdentifier": "o"}),
                ),
                None,
                "nonce",
            ),
            (
                connect(
                    serde_json::json!({"iss": ISS, "iat": t, "aud": "introductory-offer-eligibility", "bid": "a.b", "nonce": "3e1bd4a2-1b50-4c1f-9d5f-2d1e5a0c8f11", "productId": "p", "allowIntroductoryOffer": "true", "transactionId": "1"}),
                ),
                None,
                "allow-intro-offer",
            ),
            (
                connect(
                    serde_json::json!({"iss": ISS, "iat": t, "aud": "advanced-commerce-api", "bid": "a.b", "nonce": "3e1bd4a2-1b50-4c1f-9d5f-2d1e5a0c8f11", "request": "not base64!"}),
                ),
                None,
                "request",
            ),
            (
                token(
                    serde_json::json!({"alg": "ES256", "kid": "2X9R4HXF34"}),
                    serde_json::json!({"iss": "A1B2C3D4E5", "iat": t - 4000}),
                ),
                None,
                "expired",
            ),
            (
                token(
                    serde_json::json!({"alg": "ES256", "kid": "2X9R4HXF34", "typ": "JWT"}),
                    serde_json::json!({"iss": "A1B2C3D4E5", "iat": t, "exp": t + 600, "scope": "mapkit_js"}),
                ),
                None,
                "origin",
            ),
        ];
        for (i, (token, kind, expected)) in cases.iter().enumerate() {
            let report = check(token, *kind, NOW);
            if *expected == "none" {
                assert!(
                    report.findings.is_empty(),
                    "case {i}: {:?}",
                    report.findings
                );
            } else {
                assert!(
                    codes(&report).contains(expected),
                    "case {i}: expected {expected}, got {:?}",
                    report.findings
                );
            }
        }
    }

    #[test]
    fn a_der_signature_is_named_as_such() {
        let params = JwtParams::Connect(Connect {
            individual: true,
            ..Connect::default()
        });
        let good = request(params, None, None)
            .sign(&MemorySigner::new(), None, now())
            .unwrap()
            .token;
        let (input, sig) = good.rsplit_once('.').unwrap();
        let sig = Signature::from_slice(&URL_SAFE_NO_PAD.decode(sig).unwrap()).unwrap();
        let der = format!(
            "{input}.{}",
            URL_SAFE_NO_PAD.encode(sig.to_der().as_bytes())
        );
        assert_eq!(codes(&check(&der, None, NOW)), ["der-signature"]);
    }

    #[test]
    fn long_lived_scoped_gets_are_within_the_limit() {
        let t = NOW as i64;
        let claims = |scope: &str| serde_json::json!({"sub": "user", "iat": t, "exp": t + 86400, "aud": "appstoreconnect-v1", "scope": [scope]});
        assert!(
            check(&token(jwt(), claims("GET /v1/ciProducts")), None, NOW)
                .findings
                .is_empty()
        );
        assert_eq!(
            codes(&check(&token(jwt(), claims("GET /v1/apps")), None, NOW)),
            ["lifetime"]
        );
    }

    #[test]
    fn times_at_the_ends_of_the_integers_are_findings_not_overflows() {
        let header = serde_json::json!({"alg": "ES256", "kid": "2X9R4HXF34"});
        for (iat, exp) in [
            (i64::MIN, None),
            (0, Some(i64::MIN)),
            (i64::MAX, Some(i64::MAX)),
        ] {
            let mut claims = serde_json::json!({"iss": "A1B2C3D4E5", "iat": iat});
            if let Some(exp) = exp {
                claims["exp"] = exp.into();
            }
            let report = check(&token(header.clone(), claims), Some(Kind::Apns), NOW);
            assert!(!report.findings.is_empty(), "{iat} {exp:?}");
        }
    }

    #[test]
    fn a_header_parameter_apple_does_not_use_is_a_finding() {
        let header = serde_json::json!({"alg": "ES256", "kid": "2X9R4HXF34", "typ": "JWT", "crit": ["x"], "jku": "https://example.com"});
        let t = NOW as i64;
        let claims =
            serde_json::json!({"iss": ISS, "iat": t, "exp": t + 600, "aud": "appstoreconnect-v1"});
        let report = check(&token(header, claims), Some(Kind::Connect), NOW);
        assert_eq!(codes(&report), ["header"]);
        assert_eq!(
            report.findings[0].message,
            "the header carries crit, jku, which this API's tokens do not"
        );
    }

    #[test]
    fn the_kind_is_told_from_aud_and_claims() {
        let t = NOW as i64;
        let kind = |header: Value, claims: Value| check(&token(header, claims), None, NOW).kind;
        let plain = serde_json::json!({"alg": "ES256", "kid": "2X9R4HXF34"});
        assert_eq!(
            kind(
                plain.clone(),
                serde_json::json!({"iss": "A1B2C3D4E5", "iat": t})
            ),
            Some(Kind::Apns)
        );
        assert_eq!(
            kind(
                plain.clone(),
                serde_json::json!({"iss": "A1B2C3D4E5", "iat": t, "exp": t + 60, "origin": ["x"]})
            ),
            Some(Kind::Musickit)
        );
        let report = check(
            &token(
                plain,
                serde_json::json!({"iss": "A1B2C3D4E5", "iat": t, "exp": t + 60}),
            ),
            None,
            NOW,
        );
        assert_eq!(report.kind, None);
        assert!(report.findings.is_empty() && !report.notes.is_empty());
    }

    #[test]
    fn oauth_secrets_are_told_apart_and_checked_claim_by_claim() {
        let t = NOW as i64;
        let uuid = "8a4e1f0c-2b3d-4c5e-9f60-718293a4b5c6";
        let kid = "d136aa66-0c3b-4bd4-9892-c20e8db024ab";
        let business = format!("BUSINESSAPI.{uuid}");
        let ads = format!("SEARCHADS.{uuid}");
        let typ = serde_json::json!({"alg": "ES256", "kid": kid, "typ": "JWT"});
        let assertion = serde_json::json!({
            "sub": business, "iss": business, "aud": AUD_ACCOUNT_TOKEN,
            "iat": t, "exp": t + 600, "jti": uuid,
        });
        let report = check(&token(typ.clone(), assertion.clone()), None, NOW);
        assert_eq!(report.kind, Some(Kind::BusinessManager));
        assert!(report.findings.is_empty(), "{:?}", report.findings);
        let school = serde_json::json!({
            "sub": format!("SCHOOLAPI.{uuid}"), "iss": format!("SCHOOLAPI.{uuid}"),
            "aud": AUD_ACCOUNT_TOKEN, "iat": t, "exp": t + 600, "jti": uuid,
        });
        assert_eq!(
            check(&token(typ.clone(), school), None, NOW).kind,
            Some(Kind::SchoolManager)
        );
        let secret = serde_json::json!({
            "sub": ads, "iss": ads, "aud": AUD_SIGN_IN_WITH_APPLE, "iat": t, "exp": t + 600,
        });
        let plain = serde_json::json!({"alg": "ES256", "kid": kid});
        let report = check(&token(plain, secret), None, NOW);
        assert_eq!(report.kind, Some(Kind::AppleAds));
        assert!(report.findings.is_empty(), "{:?}", report.findings);

        let codes = |header: Value, claims: Value| -> Vec<&'static str> {
            check(&token(header, claims), Some(Kind::BusinessManager), NOW)
                .findings
                .into_iter()
                .map(|f| f.code)
                .collect()
        };
        let mut bad = assertion.clone();
        bad["iss"] = serde_json::json!(format!("BUSINESSAPI.{kid}"));
        assert_eq!(codes(typ.clone(), bad), ["iss"]);
        let mut bad = assertion.clone();
        bad["jti"] = serde_json::json!("1");
        assert_eq!(codes(typ.clone(), bad), ["jti"]);
        let mut bad = assertion.clone();
        bad["exp"] = serde_json::json!(t + 181 * 86_400);
        assert_eq!(codes(typ.clone(), bad), ["lifetime"]);
        let mut bad = assertion.clone();
        bad["sub"] = serde_json::json!(ads);
        assert_eq!(codes(typ.clone(), bad), ["sub"]);
        let apple_kid = serde_json::json!({"alg": "ES256", "kid": "2X9R4HXF34", "typ": "JWT"});
        assert_eq!(codes(apple_kid, assertion.clone()), ["kid"]);
        let no_typ = serde_json::json!({"alg": "ES256", "kid": kid});
        assert_eq!(codes(no_typ, assertion), ["typ"]);
    }
}
