//! The one request type: what the command line builds from its options, what the
//! agent's protocol carries, and what the token cache keys on. A [`Request`] exists only
//! after every rule that needs no key has been checked ("parse, don't validate"), and
//! signing one is the one signing path every front end shares.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::identity::Identity;
use super::metadata::KeyMetadata;
use super::signed::{Jwt, Signed, SignedJwt};
use super::spec::{Context, Family, LifetimeRule, Spec, DEFAULT_SKEW};
use super::{JwtParams, Kind, Lifetime, SignatureParams};
use crate::ids::printable;
use crate::{Error, Es256Signer, KeyId};

/// A request to sign, checked: a JWT for an API, or a signature.
#[derive(Debug, Clone)]
pub enum Request {
    /// `p8hsm token KIND`.
    Token(JwtRequest),
    /// `p8hsm sign KIND`.
    Signature(SignatureRequest),
}

/// A request for a JWT. `Hash + Eq`: the token cache keys on it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct JwtRequest {
    key_id: KeyId,
    lifetime: Lifetime,
    params: JwtParams,
}

/// A request for a signature (never cached).
#[derive(Debug, Clone)]
pub struct SignatureRequest {
    key_id: KeyId,
    params: SignatureParams,
}

/// A time well inside the range every clock check accepts: construction checks the
/// lifetime rules (which need no clock) against it.
const REFERENCE_TIME: Duration = Duration::from_secs(2_000_000_000);

impl JwtRequest {
    /// Whether it asks for a provider token (APNs, DeviceCheck): one a team's servers
    /// share, which Apple wants changed rarely.
    pub fn provider(&self) -> bool {
        matches!(
            self.params.kind().spec().lifetime,
            LifetimeRule::Provider { .. }
        )
    }

    /// The request as the token cache tells requests apart: a provider token stands for
    /// its team whatever its `iat` was backdated by (one token per team and key, as Apple
    /// wants; a new one for each skew would be refused as too many updates).
    /// The request itself, but for a provider token asked with a skew.
    pub fn cache_key(&self) -> std::borrow::Cow<'_, JwtRequest> {
        if !self.provider() || self.lifetime.skew == 0 {
            return std::borrow::Cow::Borrowed(self);
        }
        let mut key = self.clone();
        key.lifetime.skew = 0;
        std::borrow::Cow::Owned(key)
    }

    /// A JWT request signed by `key_id`, with `ttl` (seconds from now until `exp`) and
    /// `skew` (seconds `iat` is backdated) where the kind has them: defaults come from
    /// the kind's [`Spec`]. Checks every rule that needs neither the key nor the clock.
    pub fn new(
        key_id: KeyId,
        params: JwtParams,
        ttl: Option<u64>,
        skew: Option<u64>,
    ) -> Result<JwtRequest, Error> {
        let spec = params.kind().spec();
        spec.check_key_id(&key_id)?;
        let skew = skew.unwrap_or(DEFAULT_SKEW);
        let lifetime = match spec.lifetime {
            LifetimeRule::Exp { default_ttl, .. } => Lifetime {
                ttl: ttl.unwrap_or(default_ttl),
                skew,
            },
            LifetimeRule::Provider { validity } => {
                if ttl.is_some() {
                    return Err(Error::NotApplicable {
                        field: "ttl",
                        reason: format!(
                            "{} tokens carry no exp (Apple accepts them for {validity} s after \
                             iat): ttl does not apply",
                            spec.api
                        ),
                    });
                }
                Lifetime { ttl: 0, skew }
            }
            LifetimeRule::Instant => Lifetime { ttl: 0, skew: 0 },
        };
        params.rules().validate(spec)?;
        let request = JwtRequest {
            key_id,
            lifetime,
            params,
        };
        request.times(UNIX_EPOCH + REFERENCE_TIME)?;
        Ok(request)
    }

    /// The key that signs.
    pub fn key_id(&self) -> &KeyId {
        &self.key_id
    }

    /// The kind-specific part.
    pub fn params(&self) -> &JwtParams {
        &self.params
    }

    /// The lifetime asked for (defaults filled in).
    pub fn lifetime(&self) -> Lifetime {
        self.lifetime
    }

    fn context<'a>(&'a self, meta: Option<&'a KeyMetadata>, now: SystemTime) -> Context<'a> {
        Context {
            key_id: &self.key_id,
            spec: self.params.kind().spec(),
            lifetime: self.lifetime,
            meta,
            now,
        }
    }

    /// The token's `iat` and `exp` if signed at `now`, or the rule it breaks.
    pub fn times(&self, now: SystemTime) -> Result<super::Times, Error> {
        self.params.rules().times(&self.context(None, now))
    }

    /// The header and claims it would be signed with at `now`, resolving identities
    /// against `meta` (what is recorded with the key), which must allow the kind.
    pub fn jwt(&self, meta: Option<&KeyMetadata>, now: SystemTime) -> Result<Jwt, Error> {
        let cx = self.context(meta, now);
        allow(&cx)?;
        self.params.rules().jwt(&cx)
    }

    /// Signs with `signer`, resolving identities against `meta` (what is recorded with
    /// the key), which must allow the kind.
    pub fn sign(
        &self,
        signer: &dyn Es256Signer,
        meta: Option<&KeyMetadata>,
        now: SystemTime,
    ) -> Result<SignedJwt, Error> {
        self.jwt(meta, now)?.sign(signer)
    }
}

impl SignatureRequest {
    /// A signature request by `key_id`; checks every rule that needs no key.
    pub fn new(key_id: KeyId, params: SignatureParams) -> Result<SignatureRequest, Error> {
        params.kind().spec().check_key_id(&key_id)?;
        params.rules().validate(params.kind().spec())?;
        Ok(SignatureRequest { key_id, params })
    }

    /// The key that signs.
    pub fn key_id(&self) -> &KeyId {
        &self.key_id
    }

    /// The kind-specific part.
    pub fn params(&self) -> &SignatureParams {
        &self.params
    }

    /// Signs with `signer`, resolving identities against `meta`, which must allow the kind.
    pub fn sign(
        &self,
        signer: &dyn Es256Signer,
        meta: Option<&KeyMetadata>,
        now: SystemTime,
    ) -> Result<Signed, Error> {
        let cx = Context {
            key_id: &self.key_id,
            spec: self.params.kind().spec(),
            lifetime: Lifetime { ttl: 0, skew: 0 },
            meta,
            now,
        };
        allow(&cx)?;
        self.params.rules().sign(&cx, signer)
    }
}

/// Refuses a kind the key's recorded kind does not allow.
fn allow(cx: &Context<'_>) -> Result<(), Error> {
    match cx.meta {
        Some(meta) => meta.allow(cx.key_id, &cx.spec.command(), cx.spec.key_kinds),
        None => Ok(()),
    }
}

impl Request {
    /// Its kind.
    pub fn kind(&self) -> Kind {
        match self {
            Request::Token(r) => r.params.kind(),
            Request::Signature(r) => r.params.kind(),
        }
    }

    /// What its kind states about itself.
    pub fn spec(&self) -> &'static Spec {
        self.kind().spec()
    }

    /// The key that signs.
    pub fn key_id(&self) -> &KeyId {
        match self {
            Request::Token(r) => &r.key_id,
            Request::Signature(r) => &r.key_id,
        }
    }

    /// Refuses, at `now` and before any PIN is read, a request that breaks a rule the
    /// key's metadata is not needed to tell (a lifetime, a clock).
    pub fn precheck(&self, now: SystemTime) -> Result<(), Error> {
        match self {
            Request::Token(r) => r.times(now).map(drop),
            Request::Signature(_) => super::unix(now).map(drop),
        }
    }

    /// Signs with `signer`, whose key's recorded metadata is `meta`, at `now`: always a
    /// fresh signature ([`JwtCache::sign`](super::cache::JwtCache::sign) reuses tokens).
    pub fn sign(
        &self,
        signer: &dyn Es256Signer,
        meta: Option<&KeyMetadata>,
        now: SystemTime,
    ) -> Result<Signed, Error> {
        match self {
            Request::Token(r) => Ok(Signed::Jwt(r.sign(signer, meta, now)?)),
            Request::Signature(r) => r.sign(signer, meta, now),
        }
    }

    /// A request from a JSON object, as the agent's protocol carries it: `kind`,
    /// `key_id`, `ttl` and `skew` where the kind has them, and the kind's own fields.
    /// `command` (`token` or `sign`) may be given and must then match the kind.
    pub fn from_json(value: Value) -> Result<Request, Error> {
        let malformed = Error::malformed;
        let Value::Object(mut fields) = value else {
            return Err(malformed("a request is a JSON object".to_owned()));
        };
        let kind = match fields.remove("kind") {
            Some(Value::String(name)) => Kind::from_name(&name)
                .ok_or_else(|| malformed(format!("unknown kind {}", printable(&name))))?,
            Some(other) => return Err(malformed(format!("kind is {other}, not a string"))),
            None => return Err(malformed("the request has no \"kind\"".to_owned())),
        };
        let spec = kind.spec();
        match fields.remove("command") {
            None => {}
            Some(Value::String(c)) if c == spec.family.command() => {}
            Some(other) => {
                return Err(malformed(format!(
                    "command {other} does not make {kind}: it is a `{}` kind",
                    spec.family.command()
                )))
            }
        }
        let key_id = match fields.remove("key_id") {
            Some(Value::String(id)) => id.parse::<KeyId>().map_err(|e| malformed(e.to_string()))?,
            Some(other) => return Err(malformed(format!("key_id is {other}, not a string"))),
            None => {
                return Err(Error::MissingInput {
                    field: "key_id",
                    what: "key ID",
                    why: "a request names the key that signs it",
                })
            }
        };
        let mut number = |name: &str| match fields.remove(name) {
            None => Ok(None),
            Some(Value::Number(n)) => n
                .as_u64()
                .map(Some)
                .ok_or_else(|| malformed(format!("{name} is {n}, not a whole number of seconds"))),
            Some(other) => Err(malformed(format!("{name} is {other}, not a number"))),
        };
        let has_ttl = matches!(
            spec.lifetime,
            LifetimeRule::Exp { .. } | LifetimeRule::Provider { .. }
        );
        let (ttl, skew) = if has_ttl {
            (number("ttl")?, number("skew")?)
        } else {
            (None, None)
        };
        if let Some(params) = JwtParams::from_fields(kind, fields.clone()) {
            return Ok(Request::Token(JwtRequest::new(key_id, params?, ttl, skew)?));
        }
        match SignatureParams::from_fields(kind, fields) {
            Some(params) => Ok(Request::Signature(SignatureRequest::new(key_id, params?)?)),
            None => Err(Error::internal(format!("{kind} is in no family"))),
        }
    }

    /// The request as the agent's protocol carries it (see [`Request::from_json`]).
    pub fn to_json(&self) -> Result<Value, Error> {
        let mut object = Map::new();
        object.insert("kind".into(), self.kind().name().into());
        object.insert("key_id".into(), self.key_id().as_str().into());
        let fields = match self {
            Request::Token(r) => {
                match self.spec().lifetime {
                    LifetimeRule::Exp { .. } => {
                        object.insert("ttl".into(), r.lifetime.ttl.into());
                        object.insert("skew".into(), r.lifetime.skew.into());
                    }
                    LifetimeRule::Provider { .. } => {
                        object.insert("skew".into(), r.lifetime.skew.into());
                    }
                    LifetimeRule::Instant => {}
                }
                r.params.to_fields()?
            }
            Request::Signature(r) => r.params.to_fields()?,
        };
        object.extend(fields);
        Ok(Value::Object(object))
    }

    /// The values the request gives for `identity` (none when it leaves the field out;
    /// one, or several for a list such as `scope`), as the protocol writes them.
    pub fn values(&self, identity: &Identity) -> Vec<String> {
        let fields = match self {
            Request::Token(r) => r.params.to_fields(),
            Request::Signature(r) => r.params.to_fields(),
        };
        match fields.ok().and_then(|mut f| f.remove(identity.field)) {
            Some(Value::String(text)) => vec![text],
            Some(Value::Array(items)) => items
                .into_iter()
                .filter_map(|v| match v {
                    Value::String(text) => Some(text),
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        }
    }

    /// Whether its kind takes `identity` as a field.
    pub fn takes(&self, identity: &Identity) -> bool {
        self.spec().fields.iter().any(|f| f.name == identity.field)
    }

    /// Whether it makes a token or a signature.
    pub fn family(&self) -> Family {
        self.spec().family
    }
}

impl Serialize for Request {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.to_json()
            .map_err(serde::ser::Error::custom)?
            .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Request {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Request::from_json(Value::deserialize(deserializer)?).map_err(serde::de::Error::custom)
    }
}

/// A kind's fields as a JSON object.
pub(crate) fn to_fields<T: Serialize>(params: &T) -> Result<Map<String, Value>, Error> {
    match serde_json::to_value(params).map_err(Error::internal)? {
        Value::Object(map) => Ok(map),
        other => Err(Error::internal(format!("fields serialized as {other}"))),
    }
}

/// A kind's fields from a JSON object; unknown fields are refused.
pub(crate) fn from_fields<T: DeserializeOwned>(fields: Map<String, Value>) -> Result<T, Error> {
    serde_json::from_value(Value::Object(fields)).map_err(|e| Error::malformed(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    /// The fields serde knows for `kind`, from its refusal of an unknown one.
    fn serde_fields(kind: Kind) -> BTreeSet<String> {
        let mut object = Map::new();
        object.insert("zzz".into(), Value::Null);
        let refused = match JwtParams::from_fields(kind, object.clone()) {
            Some(result) => result.map(drop),
            None => SignatureParams::from_fields(kind, object)
                .unwrap()
                .map(drop),
        };
        let message = refused.unwrap_err().to_string();
        let listed = message
            .split_once("expected ")
            .map(|(_, list)| list)
            .unwrap_or_else(|| panic!("{kind}: {message}"));
        listed
            .split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn each_spec_lists_exactly_the_fields_its_request_takes() {
        for kind in Kind::ALL {
            let spec = kind.spec();
            let declared: BTreeSet<String> =
                spec.fields.iter().map(|f| f.name.to_owned()).collect();
            assert_eq!(serde_fields(*kind), declared, "{kind}");
            assert_eq!(Kind::from_name(spec.name), Some(*kind));
        }
        let names: BTreeSet<&str> = Kind::ALL.iter().map(|k| k.name()).collect();
        assert_eq!(names.len(), Kind::ALL.len(), "kind names are unique");
    }

    #[test]
    fn a_request_reads_back_from_its_own_json() {
        let line = serde_json::json!({
            "command": "sign", "kind": "promo-offer", "key_id": "2X9R4HXF34",
            "bundle_id": "b", "product_id": "p", "offer_id": "o", "transaction_id": "1"
        });
        let request = Request::from_json(line).unwrap();
        let again = Request::from_json(request.to_json().unwrap()).unwrap();
        assert_eq!(again.to_json().unwrap(), request.to_json().unwrap());
        assert_eq!(again.kind(), Kind::PromoOffer);
    }

    #[test]
    fn a_missing_key_id_is_input_and_a_broken_field_is_malformed() {
        let no_key = Request::from_json(serde_json::json!({"kind": "apns"})).unwrap_err();
        assert!(
            matches!(
                no_key,
                Error::MissingInput {
                    field: "key_id",
                    ..
                }
            ),
            "{no_key}"
        );
        let bad_issuer = Request::from_json(serde_json::json!({
            "kind": "server", "key_id": "2X9R4HXF34", "issuer": "x", "bundle_id": "b"
        }))
        .unwrap_err();
        assert!(
            matches!(bad_issuer, Error::Malformed { .. }),
            "{bad_issuer}"
        );
        assert!(
            bad_issuer.to_string().contains("invalid issuer ID"),
            "{bad_issuer}"
        );
    }
}
