//! StoreKit signatures made with an In-App Purchase key: the JWS signatures for
//! promotional offers (V2), introductory-offer eligibility and Advanced Commerce in-app
//! requests, and the legacy promotional offer signature.
//!
//! None of them carries `exp` (Apple derives expiry from `iat`), each carries a fresh
//! one-time nonce, and none may be cached.

use std::fmt;
use std::time::SystemTime;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::{Deserialize, Serialize};

use super::{sign_jwt, unix, HeaderStyle, Times};
use crate::ids::printable;
use crate::{BundleId, Error, Es256Signer, IssuerId, KeyId, OfferId, ProductId, TransactionId};

/// The largest Advanced Commerce request p8hsm signs.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;

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

/// What the signature authorizes, with its `aud`.
#[derive(Debug, Clone)]
pub enum StoreKitRequest {
    /// A promotional offer (V2): aud `promotional-offer`.
    PromotionalOffer {
        /// `productId`.
        product_id: ProductId,
        /// `offerIdentifier`.
        offer_id: OfferId,
        /// `transactionId` (optional, recommended; required for Retention Messaging).
        transaction_id: Option<TransactionId>,
    },
    /// Introductory-offer eligibility: aud `introductory-offer-eligibility`.
    IntroductoryOfferEligibility {
        /// `productId`.
        product_id: ProductId,
        /// `allowIntroductoryOffer`.
        allow_introductory_offer: bool,
        /// `transactionId`.
        transaction_id: TransactionId,
    },
    /// An Advanced Commerce in-app request: aud `advanced-commerce-api`.
    AdvancedCommerce {
        /// The JSON request body (checked to be a JSON object).
        request: AdvancedCommerceRequest,
    },
}

/// The JSON body of an Advanced Commerce in-app request, checked to be a JSON object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdvancedCommerceRequest(String);

impl AdvancedCommerceRequest {
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
            Ok(serde_json::Value::Object(_)) => Ok(AdvancedCommerceRequest(json.trim().to_owned())),
            Ok(_) => Err(invalid("it is not a JSON object".to_owned())),
            Err(e) => Err(invalid(format!("it is not JSON ({e})"))),
        }
    }
}

/// A StoreKit JWS signature request.
#[derive(Debug, Clone)]
pub struct StoreKitSignature {
    /// The issuer ID.
    pub issuer: IssuerId,
    /// The app's bundle ID (`bid`).
    pub bundle_id: BundleId,
    /// What is authorized.
    pub request: StoreKitRequest,
    /// The nonce; a fresh one when `None`.
    pub nonce: Option<Nonce>,
}

/// A signed StoreKit JWS.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SignedStoreKit {
    /// The compact JWS.
    pub token: String,
    /// The key that signed it.
    pub key_id: KeyId,
    /// The one-time nonce it carries.
    pub nonce: Nonce,
    /// `iat`, UNIX seconds.
    pub issued_at: u64,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Claims<'a> {
    iss: &'a IssuerId,
    iat: u64,
    aud: &'static str,
    bid: &'a BundleId,
    nonce: &'a Nonce,
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

impl StoreKitSignature {
    /// Signs the request: header alg, kid, typ; claims iss, iat, aud, bid, nonce and
    /// the request's own; never `exp`.
    pub fn sign(&self, signer: &dyn Es256Signer, now: SystemTime) -> Result<SignedStoreKit, Error> {
        let iat = unix(now)?;
        let nonce = self.nonce.clone().unwrap_or_else(Nonce::random);
        let mut claims = Claims {
            iss: &self.issuer,
            iat,
            aud: "",
            bid: &self.bundle_id,
            nonce: &nonce,
            product_id: None,
            offer_identifier: None,
            allow_introductory_offer: None,
            transaction_id: None,
            request: None,
        };
        match &self.request {
            StoreKitRequest::PromotionalOffer {
                product_id,
                offer_id,
                transaction_id,
            } => {
                claims.aud = AUD_PROMOTIONAL_OFFER;
                claims.product_id = Some(product_id);
                claims.offer_identifier = Some(offer_id);
                claims.transaction_id = transaction_id.as_ref();
            }
            StoreKitRequest::IntroductoryOfferEligibility {
                product_id,
                allow_introductory_offer,
                transaction_id,
            } => {
                claims.aud = AUD_INTRODUCTORY_OFFER_ELIGIBILITY;
                claims.product_id = Some(product_id);
                claims.allow_introductory_offer = Some(*allow_introductory_offer);
                claims.transaction_id = Some(transaction_id);
            }
            StoreKitRequest::AdvancedCommerce { request } => {
                claims.aud = AUD_ADVANCED_COMMERCE;
                claims.request = Some(STANDARD.encode(request.0.as_bytes()));
            }
        }
        let signed = sign_jwt(signer, HeaderStyle::Jwt, &claims, Times { iat, exp: iat })?;
        Ok(SignedStoreKit {
            token: signed.token,
            key_id: signed.key_id,
            nonce,
            issued_at: iat,
        })
    }
}

/// The legacy (StoreKit 1) promotional offer signature: not a JWT.
#[derive(Debug, Clone)]
pub struct LegacyPromotionalOffer {
    /// The app's bundle ID.
    pub bundle_id: BundleId,
    /// The subscription's product ID.
    pub product_id: ProductId,
    /// The offer's identifier.
    pub offer_id: OfferId,
    /// The app account token or application username; may be empty. Lower-cased.
    pub app_account_token: String,
    /// The nonce; a fresh one when `None`.
    pub nonce: Option<Nonce>,
    /// UNIX milliseconds; now when `None`.
    pub timestamp_ms: Option<u64>,
}

/// A legacy promotional offer signature and the values the app passes with it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LegacySignature {
    /// Standard base64 of the DER ECDSA signature.
    pub signature: String,
    /// The key that signed it (`keyIdentifier`).
    pub key_id: KeyId,
    /// The nonce.
    pub nonce: Nonce,
    /// The timestamp, UNIX milliseconds.
    pub timestamp: u64,
}

/// Timestamps below this are seconds, not milliseconds (it is March 1973 in ms).
const MIN_TIMESTAMP_MS: u64 = 100_000_000_000;

impl LegacyPromotionalOffer {
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

    /// Signs the payload (ECDSA P-256 over SHA-256) and encodes the signature as DER,
    /// then standard base64.
    pub fn sign(
        &self,
        signer: &dyn Es256Signer,
        now: SystemTime,
    ) -> Result<LegacySignature, Error> {
        if self.app_account_token.chars().any(char::is_control) {
            return Err(Error::InvalidId {
                what: "app account token",
                value: printable(&self.app_account_token),
                rule: "it must not contain control characters",
            });
        }
        let timestamp = match self.timestamp_ms {
            Some(ms) if ms < MIN_TIMESTAMP_MS => {
                return Err(Error::InvalidId {
                    what: "timestamp",
                    value: ms.to_string(),
                    rule: "Apple wants UNIX milliseconds, and this looks like seconds",
                })
            }
            Some(ms) => ms,
            None => now
                .duration_since(std::time::UNIX_EPOCH)
                .map_err(|_| Error::Clock)?
                .as_millis() as u64,
        };
        let nonce = self.nonce.clone().unwrap_or_else(Nonce::random);
        let key_id = signer.key_id().clone();
        let payload = self.payload(&key_id, &nonce, timestamp);
        let signature = signer.sign_es256(payload.as_bytes())?;
        Ok(LegacySignature {
            signature: STANDARD.encode(signature.to_der().as_bytes()),
            key_id,
            nonce,
            timestamp,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apple::tests::{now, parts, NOW};
    use crate::jws::tests::MemorySigner;
    use p256::ecdsa::signature::Verifier;
    use p256::ecdsa::{DerSignature, VerifyingKey};

    const NONCE: &str = "3e1bd4a2-1b50-4c1f-9d5f-2d1e5a0c8f11";

    fn signature(request: StoreKitRequest) -> StoreKitSignature {
        StoreKitSignature {
            issuer: "57246542-96fe-1a63-e053-0824d011072a".parse().unwrap(),
            bundle_id: "com.example.app".parse().unwrap(),
            request,
            nonce: Some(NONCE.to_uppercase().parse().unwrap()),
        }
    }

    fn claims(request: StoreKitRequest) -> String {
        let signed = signature(request)
            .sign(&MemorySigner::new(), now())
            .unwrap();
        assert_eq!(signed.nonce.as_str(), NONCE, "nonce lower-cased");
        let (header, claims) = parts(&signed.token);
        assert_eq!(header, r#"{"alg":"ES256","kid":"2X9R4HXF34","typ":"JWT"}"#);
        claims
    }

    #[test]
    fn promotional_offer_claims() {
        let common = format!(
            r#"{{"iss":"57246542-96fe-1a63-e053-0824d011072a","iat":{NOW},"aud":"promotional-offer","bid":"com.example.app","nonce":"{NONCE}""#
        );
        let offer = |transaction_id: Option<&str>| StoreKitRequest::PromotionalOffer {
            product_id: "com.example.monthly".parse().unwrap(),
            offer_id: "WINBACK".parse().unwrap(),
            transaction_id: transaction_id.map(|t| t.parse().unwrap()),
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
        let c = claims(StoreKitRequest::IntroductoryOfferEligibility {
            product_id: "com.example.monthly".parse().unwrap(),
            allow_introductory_offer: false,
            transaction_id: "2000000123".parse().unwrap(),
        });
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
        let c = claims(StoreKitRequest::AdvancedCommerce {
            request: AdvancedCommerceRequest::new(&format!(" {json}\n")).unwrap(),
        });
        assert!(c.contains(r#""aud":"advanced-commerce-api""#), "{c}");
        assert!(
            c.ends_with(&format!(r#""request":"{}"}}"#, STANDARD.encode(json))),
            "{c}"
        );
        for bad in ["", "[1]", "{", "\"x\""] {
            assert!(
                AdvancedCommerceRequest::new(bad).is_err(),
                "{bad:?} accepted"
            );
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
        let offer = LegacyPromotionalOffer {
            bundle_id: "com.example.app".parse().unwrap(),
            product_id: "com.example.monthly".parse().unwrap(),
            offer_id: "WINBACK".parse().unwrap(),
            app_account_token: "ABCDEF01-0000-4000-8000-000000000000".to_owned(),
            nonce: Some(NONCE.parse().unwrap()),
            timestamp_ms: Some(1_700_000_000_123),
        };
        let signed = offer.sign(&signer, now()).unwrap();
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

        let seconds = LegacyPromotionalOffer {
            timestamp_ms: Some(1_700_000_000),
            ..offer
        };
        assert!(matches!(
            seconds.sign(&signer, now()),
            Err(Error::InvalidId {
                what: "timestamp",
                ..
            })
        ));
    }
}
