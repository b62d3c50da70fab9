//! Reusing signed tokens until they near expiry, so the HSM signs only when a new token
//! is really needed.
//!
//! The same request (kind and claims) with the same key gets the same token until less
//! than a third of its lifetime remains; a token with under a minute left is never
//! handed out. Concurrent callers asking for the same token wait on one signature.
//! Only [`AppleToken`]s can be cached: StoreKit signatures carry one-time nonces and
//! are not `AppleToken`s, so the compiler refuses them:
//!
//! ```compile_fail
//! # use p8hsm::apple::cache::TokenCache;
//! # use p8hsm::apple::storekit::StoreKitSignature;
//! # fn f(cache: &TokenCache, request: &StoreKitSignature, signer: &dyn p8hsm::Es256Signer) {
//! cache.get(request, signer);
//! # }
//! ```

use std::any::Any;
use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use super::{unix, AppleToken, SignedToken};
use crate::{Error, Es256Signer, KeyId};

/// A token is never handed out from the cache with fewer seconds than this left.
pub const MIN_REMAINING: u64 = 60;

/// Where the cache reads the time; tests give it a fake one.
pub trait Clock: Send + Sync {
    /// The current time.
    fn now(&self) -> SystemTime;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// A token request the cache can key on: any [`AppleToken`] that is `Hash + Eq + Clone`
/// (all of p8hsm's are), usable as a trait object.
pub trait Cacheable: AppleToken + Send + Sync + 'static {
    /// Feeds the request (and its type) to `state`.
    fn cache_hash(&self, state: &mut dyn Hasher);
    /// Whether `other` is the same request.
    fn cache_eq(&self, other: &(dyn Any + Send + Sync)) -> bool;
    /// A copy to keep as the cache's key.
    fn cache_clone(&self) -> Box<dyn Any + Send + Sync>;
}

impl<T: AppleToken + Hash + Eq + Clone + Send + Sync + 'static> Cacheable for T {
    fn cache_hash(&self, mut state: &mut dyn Hasher) {
        std::any::TypeId::of::<T>().hash(&mut state);
        self.hash(&mut state);
    }

    fn cache_eq(&self, other: &(dyn Any + Send + Sync)) -> bool {
        other.downcast_ref::<T>() == Some(self)
    }

    fn cache_clone(&self) -> Box<dyn Any + Send + Sync> {
        Box::new(self.clone())
    }
}

/// Whether a token came from the cache or from a new signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Handed out again.
    Hit,
    /// Signed for this call.
    Fresh,
    /// Handed out again because signing failed (the token went away) while the cached
    /// token still had at least [`MIN_REMAINING`] seconds left.
    Stale,
}

/// One cached request and its latest token; its lock is the single flight.
struct Entry {
    request: Box<dyn Any + Send + Sync>,
    key_id: KeyId,
    token: Mutex<Option<SignedToken>>,
}

/// A cache of signed tokens, safe to share between threads.
pub struct TokenCache<C: Clock = SystemClock> {
    clock: C,
    entries: Mutex<Entries>,
}

/// The entries, by hash, and the size at which expired ones are next pruned.
#[derive(Default)]
struct Entries {
    by_hash: HashMap<u64, Vec<Arc<Entry>>>,
    count: usize,
    prune_at: usize,
}

impl Default for TokenCache<SystemClock> {
    fn default() -> Self {
        TokenCache::new(SystemClock)
    }
}

/// Entries kept before expired ones are pruned.
const PRUNE_ABOVE: usize = 4096;

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl<C: Clock> TokenCache<C> {
    /// An empty cache reading `clock`.
    pub fn new(clock: C) -> Self {
        TokenCache {
            clock,
            entries: Mutex::new(Entries {
                prune_at: PRUNE_ABOVE,
                ..Entries::default()
            }),
        }
    }

    /// The cached token for `request` signed by `signer`'s key while it is fresh;
    /// otherwise a new signature, which is cached. Callers asking at once for the same
    /// token wait for one signature.
    pub fn get(
        &self,
        request: &dyn Cacheable,
        signer: &dyn Es256Signer,
    ) -> Result<SignedToken, Error> {
        self.get_with_source(request, signer)
            .map(|(token, _)| token)
    }

    /// [`TokenCache::get`], saying whether the token was a hit, fresh, or — when signing
    /// failed — a still-valid cached one.
    pub fn get_with_source(
        &self,
        request: &dyn Cacheable,
        signer: &dyn Es256Signer,
    ) -> Result<(SignedToken, Source), Error> {
        let entry = self.entry(request, signer.key_id());
        let mut token = lock(&entry.token);
        let now = self.clock.now();
        if let Some(cached) = token.as_ref().filter(|t| fresh(t, now)) {
            return Ok((cached.clone(), Source::Hit));
        }
        match request.sign(signer, now) {
            Ok(signed) => {
                *token = Some(signed.clone());
                Ok((signed, Source::Fresh))
            }
            Err(error) => match token.as_ref().filter(|t| usable(t, now)) {
                Some(cached) => Ok((cached.clone(), Source::Stale)),
                None => Err(error),
            },
        }
    }

    fn entry(&self, request: &dyn Cacheable, key_id: &KeyId) -> Arc<Entry> {
        let mut hasher = DefaultHasher::new();
        request.cache_hash(&mut hasher);
        key_id.hash(&mut hasher);
        let hash = hasher.finish();
        let mut entries = lock(&self.entries);
        let same = |e: &&Arc<Entry>| &e.key_id == key_id && request.cache_eq(e.request.as_ref());
        if let Some(entry) = entries
            .by_hash
            .get(&hash)
            .and_then(|bucket| bucket.iter().find(same))
        {
            return entry.clone();
        }
        if entries.count >= entries.prune_at {
            self.prune(&mut entries);
            // Pruning again only once the cache has doubled keeps inserts O(1) on average.
            entries.prune_at = (entries.count * 2).max(PRUNE_ABOVE);
        }
        let entry = Arc::new(Entry {
            request: request.cache_clone(),
            key_id: key_id.clone(),
            token: Mutex::new(None),
        });
        entries.by_hash.entry(hash).or_default().push(entry.clone());
        entries.count += 1;
        entry
    }

    /// Drops entries whose tokens have expired and that nobody is signing for.
    fn prune(&self, entries: &mut Entries) {
        let now = unix(self.clock.now()).unwrap_or(0);
        for bucket in entries.by_hash.values_mut() {
            bucket.retain(|entry| match entry.token.try_lock() {
                Ok(token) => token.as_ref().is_some_and(|t| t.expires_at > now),
                Err(_) => true,
            });
        }
        entries.by_hash.retain(|_, bucket| !bucket.is_empty());
        entries.count = entries.by_hash.values().map(Vec::len).sum();
    }

    /// How many requests the cache holds.
    pub fn len(&self) -> usize {
        lock(&self.entries).count
    }

    /// Whether the cache holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Whether `token` may still be handed out at `now` when no new one can be signed: at
/// least [`MIN_REMAINING`] seconds left.
fn usable(token: &SignedToken, now: SystemTime) -> bool {
    unix(now).is_ok_and(|now| token.expires_at.saturating_sub(now) >= MIN_REMAINING)
}

/// Whether `token` may still be handed out at `now`: at least a third of its lifetime
/// and at least [`MIN_REMAINING`] seconds left.
fn fresh(token: &SignedToken, now: SystemTime) -> bool {
    let Ok(now) = unix(now) else { return false };
    let lifetime = token.expires_at.saturating_sub(token.issued_at);
    let remaining = token.expires_at.saturating_sub(now);
    remaining >= MIN_REMAINING && remaining.saturating_mul(3) >= lifetime
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apple::connect::{ConnectToken, Issuer};
    use crate::apple::developer::{ProviderService, ProviderToken};
    use crate::apple::tests::NOW;
    use crate::apple::Lifetime;
    use crate::jws::tests::MemorySigner;
    use p256::ecdsa::Signature;
    use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
    use std::time::{Duration, UNIX_EPOCH};

    /// A clock the test moves.
    #[derive(Clone, Default)]
    struct FakeClock(Arc<AtomicU64>);

    impl FakeClock {
        fn at(seconds: u64) -> Self {
            FakeClock(Arc::new(AtomicU64::new(seconds)))
        }
        fn set(&self, seconds: u64) {
            self.0.store(seconds, Ordering::SeqCst);
        }
    }

    impl Clock for FakeClock {
        fn now(&self) -> SystemTime {
            UNIX_EPOCH + Duration::from_secs(self.0.load(Ordering::SeqCst))
        }
    }

    /// Counts signatures; optionally slow, to make callers overlap.
    struct Counting {
        inner: MemorySigner,
        count: AtomicUsize,
        delay: Duration,
    }

    impl Counting {
        fn new(delay: Duration) -> Self {
            Counting {
                inner: MemorySigner::new(),
                count: AtomicUsize::new(0),
                delay,
            }
        }
        fn count(&self) -> usize {
            self.count.load(Ordering::SeqCst)
        }
    }

    impl Es256Signer for Counting {
        fn key_id(&self) -> &KeyId {
            self.inner.key_id()
        }
        fn sign_es256(&self, message: &[u8]) -> Result<Signature, Error> {
            std::thread::sleep(self.delay);
            self.count.fetch_add(1, Ordering::SeqCst);
            self.inner.sign_es256(message)
        }
    }

    fn connect(ttl: u64, skew: u64, scope: &[&str]) -> ConnectToken {
        ConnectToken {
            issuer: Issuer::Individual,
            scope: scope.iter().map(|s| s.parse().unwrap()).collect(),
            lifetime: Lifetime { ttl, skew },
        }
    }

    #[test]
    fn the_same_request_gets_the_same_token_until_a_third_of_its_life_remains() {
        let clock = FakeClock::at(NOW);
        let cache = TokenCache::new(clock.clone());
        let signer = Counting::new(Duration::ZERO);
        let request = connect(600, 60, &[]); // lifetime 660 s: refresh below 220 s left
        let first = cache.get(&request, &signer).unwrap();
        assert_eq!(cache.get(&request, &signer).unwrap().token, first.token);
        clock.set(NOW + 380); // 220 s left
        assert_eq!(cache.get(&request, &signer).unwrap().token, first.token);
        assert_eq!(signer.count(), 1);
        clock.set(NOW + 381); // 219 s left
        let second = cache.get(&request, &signer).unwrap();
        assert_ne!(second.token, first.token);
        assert_eq!(second.issued_at, NOW + 381 - 60);
        assert_eq!(signer.count(), 2);
    }

    #[test]
    fn a_token_with_under_a_minute_left_is_never_handed_out() {
        let clock = FakeClock::at(NOW);
        let cache = TokenCache::new(clock.clone());
        let signer = Counting::new(Duration::ZERO);
        let request = connect(100, 0, &[]); // a third would be 33 s; the minute rule wins
        cache.get(&request, &signer).unwrap();
        clock.set(NOW + 40); // 60 s left
        cache.get(&request, &signer).unwrap();
        assert_eq!(signer.count(), 1);
        clock.set(NOW + 41); // 59 s left
        let refreshed = cache.get(&request, &signer).unwrap();
        assert_eq!(signer.count(), 2);
        assert_eq!(refreshed.expires_at, NOW + 41 + 100);
    }

    #[test]
    fn different_claims_kinds_or_keys_get_their_own_tokens() {
        let cache = TokenCache::new(FakeClock::at(NOW));
        let signer = Counting::new(Duration::ZERO);
        let a = cache
            .get(&connect(600, 60, &["GET /v1/apps"]), &signer)
            .unwrap();
        let b = cache
            .get(&connect(600, 60, &["GET /v1/builds"]), &signer)
            .unwrap();
        let c = cache
            .get(&connect(300, 60, &["GET /v1/apps"]), &signer)
            .unwrap();
        let apns = ProviderToken {
            service: ProviderService::Apns,
            team_id: "A1B2C3D4E5".parse().unwrap(),
            skew: 0,
        };
        let d = cache.get(&apns, &signer).unwrap();
        assert_eq!(signer.count(), 4);
        let tokens = [&a.token, &b.token, &c.token, &d.token];
        for (i, x) in tokens.iter().enumerate() {
            for y in &tokens[i + 1..] {
                assert_ne!(x, y);
            }
        }
        let other_key = MemorySigner {
            key: p256::ecdsa::SigningKey::from_slice(&[0x22; 32]).unwrap(),
            kid: "ZZZZZZZZZ1".parse().unwrap(),
        };
        let e = cache
            .get(&connect(600, 60, &["GET /v1/apps"]), &other_key)
            .unwrap();
        assert!(e.token.contains('.') && e.key_id.as_str() == "ZZZZZZZZZ1");
        assert_eq!(cache.len(), 5);
        assert_eq!(cache.get(&apns, &signer).unwrap().token, d.token);
        assert_eq!(signer.count(), 4);
    }

    #[test]
    fn concurrent_callers_wait_on_one_signature() {
        let cache = TokenCache::new(FakeClock::at(NOW));
        let signer = Counting::new(Duration::from_millis(50));
        let request = connect(600, 60, &[]);
        let tokens: Vec<String> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|_| s.spawn(|| cache.get(&request, &signer).unwrap().token))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(signer.count(), 1, "one signature for eight callers");
        assert!(tokens.iter().all(|t| t == &tokens[0]));
    }

    #[test]
    fn when_signing_fails_a_still_valid_token_is_served_but_never_one_near_expiry() {
        struct Flaky {
            inner: MemorySigner,
            down: std::sync::atomic::AtomicBool,
        }
        impl Es256Signer for Flaky {
            fn key_id(&self) -> &KeyId {
                self.inner.key_id()
            }
            fn sign_es256(&self, message: &[u8]) -> Result<Signature, Error> {
                if self.down.load(Ordering::SeqCst) {
                    return Err(Error::Internal("token unavailable".into()));
                }
                self.inner.sign_es256(message)
            }
        }
        let clock = FakeClock::at(NOW);
        let cache = TokenCache::new(clock.clone());
        let signer = Flaky {
            inner: MemorySigner::new(),
            down: false.into(),
        };
        let request = connect(600, 60, &[]); // exp = NOW + 600
        let first = cache.get(&request, &signer).unwrap();
        signer.down.store(true, Ordering::SeqCst);
        clock.set(NOW + 500); // past the refresh margin, 100 s left
        let (served, source) = cache.get_with_source(&request, &signer).unwrap();
        assert_eq!((served.token, source), (first.token, Source::Stale));
        clock.set(NOW + 541); // 59 s left: never handed out
        assert!(cache.get(&request, &signer).is_err());
        signer.down.store(false, Ordering::SeqCst);
        let (_, source) = cache.get_with_source(&request, &signer).unwrap();
        assert_eq!(source, Source::Fresh);
    }

    #[test]
    fn a_failed_signature_is_not_cached() {
        struct Failing;
        impl Es256Signer for Failing {
            fn key_id(&self) -> &KeyId {
                static ID: std::sync::OnceLock<KeyId> = std::sync::OnceLock::new();
                ID.get_or_init(|| "2X9R4HXF34".parse().unwrap())
            }
            fn sign_es256(&self, _: &[u8]) -> Result<Signature, Error> {
                Err(Error::Internal("token unavailable".into()))
            }
        }
        let cache = TokenCache::new(FakeClock::at(NOW));
        let request = connect(600, 60, &[]);
        assert!(cache.get(&request, &Failing).is_err());
        let signer = Counting::new(Duration::ZERO);
        cache.get(&request, &signer).unwrap();
        assert_eq!(signer.count(), 1);
    }
}
