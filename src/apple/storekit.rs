//! StoreKit signatures made with an In-App Purchase key: the JWS signatures for
//! promotional offers (V2), introductory-offer eligibility and Advanced Commerce in-app
//! requests, and the legacy promotional offer signature.
//!
//! None of them carries `exp` (Apple derives expiry from `iat`), each carries a fresh
//! one-time nonce, and none may be cached.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::{Deserialize, Serialize};

use super::identity;
use super::metadata::KeyKind;
use super::signed::{HeaderStyle, Jwt, LegacySignature, Signed, SignedStoreKit};
use super::spec::{
    check, Context, Family, Field, Finding, IssuerShape, JwtShape, LifetimeRule, Object,
    SignatureKind, Spec, Value, BUNDLE_ID, ISSUER,
};
use crate::ids::printable;
pub use crate::ids::Nonce;
use crate::{BundleId, Error, Es256Signer, IssuerId, KeyId, OfferId, ProductId, TransactionId};

/// The largest Advanced Commerce request p8hsm signs.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;

/// The JSON body of an Advanced Commerce in-app request, checked to be one JSON object
/// within [`MAX_REQUEST_BYTES`] (surrounding white space dropped).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct AdvancedCommerceBody(String);

impl TryFrom<String> for AdvancedCommerceBody {
    type Error = Error;

    fn try_from(json: String) -> Result<Self, Error> {
        AdvancedCommerceBody::new(&json)
    }
}

impl From<AdvancedCommerceBody> for String {
    fn from(body: AdvancedCommerceBody) -> String {
        body.0
    }
}

impl AdvancedCommerceBody {
    /// Checks that `json` is one JSON object within [`MAX_REQUEST_BYTES`].
    pub fn new(json: &str) -> Result<Self, Error> {
        let invalid = |reason: String| Error::InvalidRequest { reason };
        if json.len() > MAX_REQUEST_BYTES {
            return Err(invalid(format!(
                "it is over {} KiB",
                MAX_REQUEST_BYTES / 1024
            )));
        }
        match serde_json::from_str::<serde_json::Value>(json) {
            Ok(serde_json::Value::Object(_)) => Ok(AdvancedCommerceBody(json.trim().to_owned())),
            Ok(_) => Err(invalid("it is not a JSON object".to_owned())),
            Err(e) => Err(invalid(format!("it is not JSON ({e})"))),
        }
    }
}

const NONCE: Field = Field {
    name: "nonce",
    help: "The one-time nonce, a UUID [default: a fresh random one]",
    value: Value::Text {
        placeholder: "UUID",
        check: check::<Nonce>,
    },
    required: false,
};
const PRODUCT_ID: Field = Field {
    name: "product_id",
    help: "Product ID of the subscription",
    value: Value::Text {
        placeholder: "ID",
        check: check::<ProductId>,
    },
    required: true,
};
const OFFER_ID: Field = Field {
    name: "offer_id",
    help: "Identifier of the promotional offer",
    value: Value::Text {
        placeholder: "ID",
        check: check::<OfferId>,
    },
    required: true,
};
const fn transaction_id(help: &'static str, required: bool) -> Field {
    Field {
        name: "transaction_id",
        help,
        value: Value::Text {
            placeholder: "ID",
            check: check::<TransactionId>,
        },
        required,
    }
}

const IN_APP_PURCHASE: &[KeyKind] = &[KeyKind::InAppPurchase];

const fn jws(
    name: &'static str,
    about: &'static str,
    aud: &'static str,
    fields: &'static [Field],
    required: &'static [&'static str],
    optional: &'static [&'static str],
) -> Spec {
    Spec {
        name,
        family: Family::Signature,
        about,
        api: "StoreKit",
        key_kinds: IN_APP_PURCHASE,
        lifetime: LifetimeRule::Instant,
        cacheable: false,
        fields,
        jwt: Some(JwtShape {
            rules: Some(storekit_rules),
            ..JwtShape::new(
                true,
                Some(aud),
                required,
                optional,
                IssuerShape::IssuerId,
                None,
            )
        }),
    }
}

/// A StoreKit signature's nonce is a lowercase UUID, `allowIntroductoryOffer` a JSON
/// boolean, and an Advanced Commerce `request` standard base64 of a JSON object.
fn storekit_rules(_header: &Object, claims: &Object) -> Vec<Finding> {
    use base64::engine::general_purpose::STANDARD;
    use base64::Engine;
    let mut findings = Vec::new();
    let nonce_ok = claims
        .get("nonce")
        .and_then(serde_json::Value::as_str)
        .is_none_or(|n| n.len() == 36 && uuid::Uuid::try_parse(n).is_ok() && n == n.to_lowercase());
    if !nonce_ok {
        findings.push(Finding::new("nonce", "nonce must be a lowercase UUID"));
    }
    if let Some(allow) = claims
        .get("allowIntroductoryOffer")
        .filter(|v| !v.is_boolean())
    {
        findings.push(Finding::new(
            "allow-intro-offer",
            format!("allowIntroductoryOffer is {allow}, not a JSON boolean"),
        ));
    }
    if let Some(request) = claims.get("request") {
        let ok = request
            .as_str()
            .and_then(|s| STANDARD.decode(s).ok())
            .is_some_and(|bytes| {
                serde_json::from_slice::<serde_json::Value>(&bytes).is_ok_and(|v| v.is_object())
            });
        if !ok {
            findings.push(Finding::new(
                "request",
                "request must be standard base64 of a JSON object",
            ));
        }
    }
    findings
}

/// `sign promo-offer`.
pub const PROMO_OFFER: Spec = jws(
    "promo-offer",
    "Promotional offer signature (V2 JWS)",
    AUD_PROMOTIONAL_OFFER,
    &[
        ISSUER,
        BUNDLE_ID,
        NONCE,
        PRODUCT_ID,
        OFFER_ID,
        transaction_id("The customer's transaction ID (recommended)", false),
    ],
    &[
        "iss",
        "iat",
        "aud",
        "bid",
        "nonce",
        "productId",
        "offerIdentifier",
    ],
    &["transactionId"],
);

/// `sign intro-offer-eligibility`.
pub const INTRO_OFFER_ELIGIBILITY: Spec = jws(
    "intro-offer-eligibility",
    "Introductory-offer eligibility signature (JWS)",
    AUD_INTRODUCTORY_OFFER_ELIGIBILITY,
    &[
        ISSUER,
        BUNDLE_ID,
        NONCE,
        PRODUCT_ID,
        Field {
            name: "allow_intro_offer",
            help: "Whether the customer may have the introductory offer",
            value: Value::Bool,
            required: true,
        },
        transaction_id("The customer's transaction ID", true),
    ],
    &[
        "iss",
        "iat",
        "aud",
        "bid",
        "nonce",
        "productId",
        "allowIntroductoryOffer",
        "transactionId",
    ],
    &[],
);

/// `sign advanced-commerce-request`.
pub const ADVANCED_COMMERCE_REQUEST: Spec = jws(
    "advanced-commerce-request",
    "Advanced Commerce in-app request signature (JWS)",
    AUD_ADVANCED_COMMERCE,
    &[
        ISSUER,
        BUNDLE_ID,
        NONCE,
        Field {
            name: "request",
            help: "The JSON request body (the command line reads it from a file, or - for \
                   standard input)",
            value: Value::File {
                limit: MAX_REQUEST_BYTES,
                check: |json| AdvancedCommerceBody::new(json).map(drop),
            },
            required: true,
        },
    ],
    &["iss", "iat", "aud", "bid", "nonce", "request"],
    &[],
);

/// `sign promo-offer-legacy`.
pub const PROMO_OFFER_LEGACY: Spec = Spec {
    name: "promo-offer-legacy",
    family: Family::Signature,
    about: "Legacy (StoreKit 1) promotional offer signature: DER, base64",
    api: "StoreKit",
    key_kinds: IN_APP_PURCHASE,
    lifetime: LifetimeRule::Instant,
    cacheable: false,
    fields: &[
        Field {
            help: "The app's bundle ID",
            ..BUNDLE_ID
        },
        PRODUCT_ID,
        OFFER_ID,
        Field {
            name: "app_account_token",
            help: "The app account token / application username (lower-cased) [default: empty]",
            value: Value::Text {
                placeholder: "TOKEN",
                check: |_| Ok(()),
            },
            required: false,
        },
        NONCE,
        Field {
            name: "timestamp",
            help: "UNIX time in milliseconds [default: now]",
            value: Value::Number { placeholder: "MS" },
            required: false,
        },
    ],
    jwt: None,
};

/// A promotional offer signature (V2): aud `promotional-offer`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PromoOffer {
    /// The issuer ID; recorded with the key when `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<IssuerId>,
    /// The app's bundle ID (`bid`).
    pub bundle_id: BundleId,
    /// The nonce; a fresh one when `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<Nonce>,
    /// `productId`.
    pub product_id: ProductId,
    /// `offerIdentifier`.
    pub offer_id: OfferId,
    /// `transactionId` (optional, recommended; required for Retention Messaging).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transaction_id: Option<TransactionId>,
}

/// Introductory-offer eligibility: aud `introductory-offer-eligibility`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntroOfferEligibility {
    /// The issuer ID; recorded with the key when `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<IssuerId>,
    /// The app's bundle ID (`bid`).
    pub bundle_id: BundleId,
    /// The nonce; a fresh one when `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<Nonce>,
    /// `productId`.
    pub product_id: ProductId,
    /// `allowIntroductoryOffer`.
    pub allow_intro_offer: bool,
    /// `transactionId`.
    pub transaction_id: TransactionId,
}

/// An Advanced Commerce in-app request: aud `advanced-commerce-api`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdvancedCommerceRequest {
    /// The issuer ID; recorded with the key when `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<IssuerId>,
    /// The app's bundle ID (`bid`).
    pub bundle_id: BundleId,
    /// The nonce; a fresh one when `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<Nonce>,
    /// The JSON request body.
    pub request: AdvancedCommerceBody,
}

#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a IssuerId,
    iat: u64,
    aud: &'static str,
    bid: &'a BundleId,
    nonce: &'a Nonce,
    #[serde(flatten)]
    own: Own<'a>,
}

/// The claims a StoreKit kind adds to the common ones.
#[derive(Serialize, Default)]
#[serde(rename_all = "camelCase")]
struct Own<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    product_id: Option<&'a ProductId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    offer_identifier: Option<&'a OfferId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    allow_introductory_offer: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    transaction_id: Option<&'a TransactionId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    request: Option<String>,
}

/// The `aud` of each StoreKit JWS kind.
pub const AUD_PROMOTIONAL_OFFER: &str = "promotional-offer";
/// See [`AUD_PROMOTIONAL_OFFER`].
pub const AUD_INTRODUCTORY_OFFER_ELIGIBILITY: &str = "introductory-offer-eligibility";
/// See [`AUD_PROMOTIONAL_OFFER`].
pub const AUD_ADVANCED_COMMERCE: &str = "advanced-commerce-api";

/// Signs a StoreKit JWS: header alg, kid, typ; claims iss, iat, aud, bid, nonce and the
/// kind's own (filled in `claims`); never `exp`.
fn sign_jws(
    cx: &Context<'_>,
    signer: &dyn Es256Signer,
    (issuer, bundle_id, nonce): (Option<&IssuerId>, &BundleId, Option<&Nonce>),
    aud: &'static str,
    own: Own<'_>,
) -> Result<Signed, Error> {
    let times = cx.times()?;
    let issuer = cx.identity(&identity::ISSUER, issuer)?;
    let nonce = nonce.cloned().unwrap_or_else(Nonce::random);
    let claims = Claims {
        iss: &issuer,
        iat: times.iat,
        aud,
        bid: bundle_id,
        nonce: &nonce,
        own,
    };
    let signed = Jwt::new(HeaderStyle::Jwt, &claims, times)?.sign(signer)?;
    Ok(Signed::StoreKit(SignedStoreKit {
        token: signed.token,
        key_id: signed.key_id,
        nonce,
        issued_at: times.iat,
    }))
}

impl SignatureKind for PromoOffer {
    fn sign(&self, cx: &Context<'_>, signer: &dyn Es256Signer) -> Result<Signed, Error> {
        sign_jws(
            cx,
            signer,
            (self.issuer.as_ref(), &self.bundle_id, self.nonce.as_ref()),
            AUD_PROMOTIONAL_OFFER,
            Own {
                product_id: Some(&self.product_id),
                offer_identifier: Some(&self.offer_id),
                transaction_id: self.transaction_id.as_ref(),
                ..Own::default()
            },
        )
    }
}

impl SignatureKind for IntroOfferEligibility {
    fn sign(&self, cx: &Context<'_>, signer: &dyn Es256Signer) -> Result<Signed, Error> {
        sign_jws(
            cx,
            signer,
            (self.issuer.as_ref(), &self.bundle_id, self.nonce.as_ref()),
            AUD_INTRODUCTORY_OFFER_ELIGIBILITY,
            Own {
                product_id: Some(&self.product_id),
                allow_introductory_offer: Some(self.allow_intro_offer),
                transaction_id: Some(&self.transaction_id),
                ..Own::default()
            },
        )
    }
}

impl SignatureKind for AdvancedCommerceRequest {
    fn sign(&self, cx: &Context<'_>, signer: &dyn Es256Signer) -> Result<Signed, Error> {
        sign_jws(
            cx,
            signer,
            (self.issuer.as_ref(), &self.bundle_id, self.nonce.as_ref()),
            AUD_ADVANCED_COMMERCE,
            Own {
                request: Some(STANDARD.encode(self.request.0.as_bytes())),
                ..Own::default()
            },
        )
    }
}

/// The legacy (StoreKit 1) promotional offer signature: not a JWT.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PromoOfferLegacy {
    /// The app's bundle ID.
    pub bundle_id: BundleId,
    /// The subscription's product ID.
    pub product_id: ProductId,
    /// The offer's identifier.
    pub offer_id: OfferId,
    /// The app account token or application username; may be empty. Lower-cased.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub app_account_token: String,
    /// The nonce; a fresh one when `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<Nonce>,
    /// UNIX milliseconds; now when `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<u64>,
}

/// Timestamps below this are seconds, not milliseconds (it is March 1973 in ms).
const MIN_TIMESTAMP_MS: u64 = 100_000_000_000;

/// How long Apple accepts a legacy offer signature after its timestamp.
const VALID_MS: u64 = 24 * 3600 * 1000;

/// How far ahead of this clock a given timestamp may be (another clock's drift).
const FUTURE_MS: u64 = 5 * 60 * 1000;

impl PromoOfferLegacy {
    /// The payload: `bundleId ⁣ keyId ⁣ productId ⁣ offerId ⁣ appAccountToken ⁣ nonce ⁣
    /// timestamp`, joined with U+2063 INVISIBLE SEPARATOR.
    pub fn payload(&self, key_id: &KeyId, nonce: &Nonce, timestamp_ms: u64) -> String {
        [
            self.bundle_id.as_str(),
            key_id.as_str(),
            self.product_id.as_str(),
            self.offer_id.as_str(),
            &self.app_account_token.to_lowercase(),
            nonce.as_str(),
            &timestamp_ms.to_string(),
        ]
        .join("\u{2063}")
    }
}

impl SignatureKind for PromoOfferLegacy {
    fn validate(&self, _spec: &'static Spec) -> Result<(), Error> {
        if self.app_account_token.chars().any(char::is_control) {
            return Err(Error::InvalidId {
                what: "app account token",
                value: printable(&self.app_account_token),
                rule: "it must not contain control characters",
            });
        }
        match self.timestamp {
            Some(ms) if ms < MIN_TIMESTAMP_MS => Err(Error::InvalidId {
                what: "timestamp",
                value: ms.to_string(),
                rule: "Apple wants UNIX milliseconds, and this looks like seconds",
            }),
            _ => Ok(()),
        }
    }

    /// Signs the payload (ECDSA P-256 over SHA-256) and encodes the signature as DER,
    /// then standard base64.
    fn sign(&self, cx: &Context<'_>, signer: &dyn Es256Signer) -> Result<Signed, Error> {
        // The clock is checked even when the timestamp is given: nothing is signed with
        // a clock that cannot be right.
        let seconds = super::lifetime::clock(cx.now)?;
        let timestamp = match self.timestamp {
            Some(ms) => {
                let now_ms = seconds.saturating_mul(1000);
                let rule = if ms > now_ms + FUTURE_MS {
                    Some("it is in the future, and Apple takes an offer's time as when it was signed")
                } else if ms + VALID_MS < now_ms {
                    Some("it is over 24 hours ago, and Apple accepts an offer signature for 24 hours")
                } else {
                    None
                };
                if let Some(rule) = rule {
                    return Err(Error::InvalidId {
                        what: "timestamp",
                        value: ms.to_string(),
                        rule,
                    });
                }
                ms
            }
            None => {
                let millis = cx
                    .now
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.subsec_millis());
                seconds * 1000 + u64::from(millis)
            }
        };
        let nonce = self.nonce.clone().unwrap_or_else(Nonce::random);
        let key_id = signer.key_id().clone();
        let payload = self.payload(&key_id, &nonce, timestamp);
        let signature = signer.sign_es256(payload.as_bytes())?;
        Ok(Signed::Legacy(LegacySignature {
            signature: STANDARD.encode(signature.to_der().as_bytes()),
            key_id,
            nonce,
            timestamp,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apple::tests::{now, parts, NOW};
    use crate::apple::{SignatureParams, SignatureRequest};
    use crate::jws::tests::MemorySigner;
    use p256::ecdsa::signature::Verifier;
    use p256::ecdsa::{DerSignature, VerifyingKey};

    const NONCE: &str = "3e1bd4a2-1b50-4c1f-9d5f-2d1e5a0c8f11";
    const ISS: &str = "57246542-96fe-1a63-e053-0824d011072a";

    fn sign(params: SignatureParams) -> Result<Signed, Error> {
        SignatureRequest::new("2X9R4HXF34".parse().unwrap(), params)?.sign(
            &MemorySigner::new(),
            None,
            now(),
        )
    }

    fn claims(params: SignatureParams) -> String {
        let Signed::StoreKit(signed) = sign(params).unwrap() else {
            panic!("not a JWS")
        };
        assert_eq!(signed.nonce.as_str(), NONCE, "nonce lower-cased");
        let (header, claims) = parts(&signed.token);
        assert_eq!(header, r#"{"alg":"ES256","kid":"2X9R4HXF34","typ":"JWT"}"#);
        claims
    }

    fn nonce() -> Option<Nonce> {
        Some(NONCE.to_uppercase().parse().unwrap())
    }

    #[test]
    fn promotional_offer_claims() {
        let common = format!(
            r#"{{"iss":"{ISS}","iat":{NOW},"aud":"promotional-offer","bid":"com.example.app","nonce":"{NONCE}""#
        );
        let offer = |transaction_id: Option<&str>| {
            SignatureParams::PromoOffer(PromoOffer {
                issuer: Some(ISS.parse().unwrap()),
                bundle_id: "com.example.app".parse().unwrap(),
                nonce: nonce(),
                product_id: "com.example.monthly".parse().unwrap(),
                offer_id: "WINBACK".parse().unwrap(),
                transaction_id: transaction_id.map(|t| t.parse().unwrap()),
            })
        };
        assert_eq!(
            claims(offer(None)),
            format!(r#"{common},"productId":"com.example.monthly","offerIdentifier":"WINBACK"}}"#)
        );
        assert_eq!(
            claims(offer(Some("2000000123"))),
            format!(
                r#"{common},"productId":"com.example.monthly","offerIdentifier":"WINBACK","transactionId":"2000000123"}}"#
            )
        );
    }

    #[test]
    fn intro_offer_eligibility_has_a_json_boolean() {
        let c = claims(SignatureParams::IntroOfferEligibility(
            IntroOfferEligibility {
                issuer: Some(ISS.parse().unwrap()),
                bundle_id: "com.example.app".parse().unwrap(),
                nonce: nonce(),
                product_id: "com.example.monthly".parse().unwrap(),
                allow_intro_offer: false,
                transaction_id: "2000000123".parse().unwrap(),
            },
        ));
        assert!(
            c.contains(r#""aud":"introductory-offer-eligibility""#),
            "{c}"
        );
        assert!(
            c.ends_with(r#""productId":"com.example.monthly","allowIntroductoryOffer":false,"transactionId":"2000000123"}"#),
            "{c}"
        );
        assert!(!c.contains("exp"), "never exp: {c}");
    }

    #[test]
    fn advanced_commerce_request_is_standard_base64_of_the_json() {
        let json = r#"{"operation":"CREATE_SUBSCRIPTION","version":"1"}"#;
        let c = claims(SignatureParams::AdvancedCommerceRequest(
            AdvancedCommerceRequest {
                issuer: Some(ISS.parse().unwrap()),
                bundle_id: "com.example.app".parse().unwrap(),
                nonce: nonce(),
                request: AdvancedCommerceBody::new(&format!(" {json}\n")).unwrap(),
            },
        ));
        assert!(c.contains(r#""aud":"advanced-commerce-api""#), "{c}");
        assert!(
            c.ends_with(&format!(r#""request":"{}"}}"#, STANDARD.encode(json))),
            "{c}"
        );
        for bad in ["", "[1]", "{", "\"x\""] {
            assert!(AdvancedCommerceBody::new(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn fresh_nonces_are_lowercase_v4_uuids_and_differ() {
        let a = Nonce::random();
        let b = Nonce::random();
        assert_ne!(a, b);
        assert_eq!(a.as_str(), a.as_str().to_lowercase());
        assert_eq!(
            uuid::Uuid::parse_str(a.as_str()).unwrap().get_version_num(),
            4
        );
    }

    #[test]
    fn legacy_signature_is_der_over_apples_payload() {
        let signer = MemorySigner::new();
        let offer = PromoOfferLegacy {
            bundle_id: "com.example.app".parse().unwrap(),
            product_id: "com.example.monthly".parse().unwrap(),
            offer_id: "WINBACK".parse().unwrap(),
            app_account_token: "ABCDEF01-0000-4000-8000-000000000000".to_owned(),
            nonce: Some(NONCE.parse().unwrap()),
            timestamp: Some(1_700_000_000_123),
        };
        let Signed::Legacy(signed) =
            sign(SignatureParams::PromoOfferLegacy(offer.clone())).unwrap()
        else {
            panic!("not a legacy signature")
        };
        let payload = format!(
            "com.example.app\u{2063}2X9R4HXF34\u{2063}com.example.monthly\u{2063}WINBACK\u{2063}\
             abcdef01-0000-4000-8000-000000000000\u{2063}{NONCE}\u{2063}1700000000123"
        );
        let der = STANDARD.decode(&signed.signature).unwrap();
        assert_eq!(der[0], 0x30, "DER SEQUENCE");
        assert!((8..=72).contains(&der.len()));
        let signature = DerSignature::try_from(der.as_slice()).unwrap();
        VerifyingKey::from(&signer.key)
            .verify(payload.as_bytes(), &signature)
            .unwrap();
        assert_eq!(signed.timestamp, 1_700_000_000_123);

        let seconds = PromoOfferLegacy {
            timestamp: Some(1_700_000_000),
            ..offer
        };
        assert!(matches!(
            sign(SignatureParams::PromoOfferLegacy(seconds)),
            Err(Error::InvalidId {
                what: "timestamp",
                ..
            })
        ));
    }
}
