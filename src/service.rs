//! What every front end signs through: a logged-in [`Token`], its keys looked up once
//! with what is recorded beside them, and — for long-lived front ends — the token cache
//! and a gate that stops calling a token that went away.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use p256::ecdsa::Signature;

use crate::apple::cache::{JwtCache, Source};
use crate::apple::metadata::KeyMetadata;
use crate::apple::renew::{self, Decision};
use crate::apple::{JwtRequest, Request, Signed};
use crate::{lock, Error, Es256Signer, HsmKey, KeyId, Token};

/// Waits before a token that went away is called again: doubling from the first to
/// the last.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(5));

/// Signs [`Request`]s with the keys of one token.
///
/// [`Service::new`] is what a one-shot process needs; [`Service::long_lived`] adds the
/// token cache and rides out a token that goes away: still-valid cached tokens are
/// handed out, other requests fail fast with [`Error::TokenUnavailable`] while the token
/// is left alone (0.1 s, doubling up to 5 s), and a key whose look-up failed is looked up
/// again. A PIN the token refused is never tried again ([`Token`] drops it).
pub struct Service {
    token: Token,
    cache: Option<JwtCache>,
    gate: Option<Arc<Gate>>,
    keys: Mutex<HashMap<KeyId, Arc<Key>>>,
}

/// A key the service signs with, and what is recorded beside it.
struct Key {
    signer: Gated,
    meta: Option<Arc<KeyMetadata>>,
}

impl Service {
    /// A service without a cache: every request is signed.
    pub fn new(token: Token) -> Service {
        Service {
            token,
            cache: None,
            gate: None,
            keys: Mutex::new(HashMap::new()),
        }
    }

    /// A service for a process that lives on: a token cache, and a backoff gate in
    /// front of the token.
    pub fn long_lived(token: Token) -> Service {
        Service {
            cache: Some(JwtCache::default()),
            gate: Some(Arc::new(Gate::default())),
            ..Service::new(token)
        }
    }

    /// The token it signs with.
    pub fn token(&self) -> &Token {
        &self.token
    }

    /// Whether the token is being called (not left alone after it went away).
    pub fn available(&self) -> bool {
        match &self.gate {
            Some(gate) => lock(&gate.backoff).is_none_or(|(until, _)| Instant::now() >= until),
            None => true,
        }
    }

    /// Whether the service can sign now: the token is called, answers, and is logged in
    /// (logging in again with the kept PIN if it forgot the login).
    pub fn ready(&self) -> bool {
        self.available() && self.token.ready()
    }

    /// Signs `request` with the key it names: from the cache when it may and can, else
    /// through the token. Refuses a kind the key's recorded kind does not allow.
    pub fn sign(&self, request: &Request) -> Result<(Signed, Source), Error> {
        self.sign_for(request, "")
    }

    /// [`Service::sign`] for `caller` (whoever asked, as a long-lived front end names
    /// it): the cache bounds what one caller can make it drop of the others' tokens.
    pub fn sign_for(&self, request: &Request, caller: &str) -> Result<(Signed, Source), Error> {
        let key = self.key(request.key_id())?;
        match &self.cache {
            Some(cache) => cache.sign(request, caller, &key.signer, key.meta.as_deref()),
            None => Ok((
                request.sign(&key.signer, key.meta.as_deref(), SystemTime::now())?,
                Source::Fresh,
            )),
        }
    }

    /// Whether the token `kept` in a file (`None`: no file) may stay as the token of
    /// `request`, or why to sign a new one: see [`renew::decide`].
    pub fn renewal(
        &self,
        request: &JwtRequest,
        kept: Option<&str>,
        within: Duration,
    ) -> Result<Decision, Error> {
        let key = self.key(request.key_id())?;
        let public = self.token.public_key(request.key_id())?;
        renew::decide(
            kept,
            request,
            key.meta.as_deref(),
            &public,
            SystemTime::now(),
            within,
        )
    }

    /// A cache hit for `request`, without calling the token or waiting on another
    /// caller: for callers that must not block (an async front end), which take
    /// [`Service::sign`] when this is `None`.
    pub fn cached(&self, request: &Request) -> Option<Signed> {
        match (request, &self.cache) {
            (Request::Token(token), Some(cache)) if request.spec().cacheable => {
                cache.peek(token).map(Signed::Jwt)
            }
            _ => None,
        }
    }

    /// What is recorded with the key, looked up once (the first time, from the token).
    pub fn metadata(&self, key_id: &KeyId) -> Result<Option<Arc<KeyMetadata>>, Error> {
        Ok(self.key(key_id)?.meta.clone())
    }

    /// What is recorded with the key if it was looked up before, without calling the
    /// token: for callers that must not block, which take [`Service::metadata`] when this
    /// is `None`.
    pub fn metadata_known(&self, key_id: &KeyId) -> Option<Option<Arc<KeyMetadata>>> {
        lock(&self.keys).get(key_id).map(|key| key.meta.clone())
    }

    /// The key and its metadata, looked up once.
    fn key(&self, key_id: &KeyId) -> Result<Arc<Key>, Error> {
        if let Some(key) = lock(&self.keys).get(key_id) {
            return Ok(key.clone());
        }
        let looked_up = self.token.key(key_id).and_then(|signer| {
            let meta = self
                .token
                .key_metadata(key_id)?
                .map(|bytes| KeyMetadata::from_bytes(key_id, &bytes).map(Arc::new))
                .transpose()?;
            Ok((signer, meta))
        });
        let (signer, meta) = match (looked_up, &self.gate) {
            (Ok(found), _) => found,
            // For a long-lived service, a token that cannot be called has gone away.
            (Err(e), Some(_)) if e.means_token_gone() => return Err(Error::TokenUnavailable),
            (Err(e), _) => return Err(e),
        };
        let key = Arc::new(Key {
            signer: Gated {
                key: signer,
                gate: self.gate.clone(),
            },
            meta,
        });
        lock(&self.keys).insert(key_id.clone(), key.clone());
        Ok(key)
    }
}

/// Until when a token that went away is left alone, and the next wait.
#[derive(Default)]
struct Gate {
    backoff: Mutex<Option<(Instant, Duration)>>,
}

/// A key behind the service's gate (if it has one).
struct Gated {
    key: HsmKey,
    gate: Option<Arc<Gate>>,
}

impl Es256Signer for Gated {
    fn key_id(&self) -> &KeyId {
        self.key.key_id()
    }

    fn sign_es256(&self, message: &[u8]) -> Result<Signature, Error> {
        let Some(gate) = &self.gate else {
            return self.key.sign_es256(message);
        };
        if let Some((until, _)) = *lock(&gate.backoff) {
            if Instant::now() < until {
                return Err(Error::TokenUnavailable);
            }
        }
        match self.key.sign_es256(message) {
            Ok(signature) => {
                *lock(&gate.backoff) = None;
                Ok(signature)
            }
            // A failure of this request (a deleted key, a refused PIN…), not an outage:
            // no backoff, and the answer says what it was.
            Err(e) if !e.means_token_gone() => Err(e),
            Err(_) => {
                let mut backoff = lock(&gate.backoff);
                let wait = match *backoff {
                    Some((_, last)) => (last * 2).min(BACKOFF.1),
                    None => BACKOFF.0,
                };
                *backoff = Some((Instant::now() + wait, wait));
                Err(Error::TokenUnavailable)
            }
        }
    }
}
