//! Reusing signed tokens until they near expiry, so the HSM signs only when a new token
//! is really needed.
//!
//! The same [`JwtRequest`] (kind, claims, lifetime and key) gets the same token until
//! less than a third of its lifetime remains; a token with under a minute left is never
//! handed out. Concurrent callers asking for the same token wait on one signature.
//!
//! Callers share entries, but one caller cannot flush the others': at capacity, the
//! entries go of the caller that made the most of them, nearest their end first; and a
//! provider token (APNs, DeviceCheck) is never dropped for another entry while it can be
//! handed out, since Apple refuses a team's provider token that changes too often.
//!
//! The cache keys on `JwtRequest`, so StoreKit signatures — [`SignatureRequest`]s, which
//! carry one-time nonces — cannot be cached; the compiler refuses them:
//!
//! ```compile_fail
//! # use p8hsm::apple::cache::JwtCache;
//! # use p8hsm::apple::SignatureRequest;
//! # fn f(cache: &JwtCache, request: &SignatureRequest) {
//! cache.get(request, "", |_| unimplemented!());
//! # }
//! ```
//!
//! [`SignatureRequest`]: super::SignatureRequest

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use super::lifetime::unix;
use super::metadata::KeyMetadata;
use super::request::{JwtRequest, Request};
use super::signed::{Signed, SignedJwt};
use crate::{lock, Error, Es256Signer};

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

impl Source {
    /// `hit`, `fresh` or `stale`, as the agent's protocol and audit lines say it.
    pub fn name(self) -> &'static str {
        match self {
            Source::Hit => "hit",
            Source::Fresh => "fresh",
            Source::Stale => "stale",
        }
    }
}

/// One request's latest token; its lock is the single flight.
type Entry = Arc<Mutex<Option<SignedJwt>>>;

/// A cache of signed tokens, safe to share between threads.
pub struct JwtCache<C: Clock = SystemClock> {
    clock: C,
    entries: Mutex<Entries>,
    /// The most entries it keeps.
    capacity: usize,
}

/// The entries, and the size at which expired ones are next pruned.
struct Entries {
    by_request: HashMap<JwtRequest, Slot>,
    prune_at: usize,
}

/// An entry, the caller that made it, and whether it holds a provider token.
struct Slot {
    entry: Entry,
    owner: Arc<str>,
    provider: bool,
}

impl Default for JwtCache<SystemClock> {
    fn default() -> Self {
        JwtCache::new(SystemClock)
    }
}

/// Entries kept before expired ones are pruned.
const PRUNE_ABOVE: usize = 4096;
/// The most entries the cache keeps: past it, the tokens nearest their end go first.
pub const MAX_ENTRIES: usize = 16_384;

impl<C: Clock> JwtCache<C> {
    /// An empty cache reading `clock`.
    pub fn new(clock: C) -> Self {
        JwtCache::with_capacity(clock, MAX_ENTRIES)
    }

    /// An empty cache reading `clock` that keeps at most `capacity` entries.
    pub fn with_capacity(clock: C, capacity: usize) -> Self {
        let capacity = capacity.max(1);
        JwtCache {
            clock,
            entries: Mutex::new(Entries {
                by_request: HashMap::new(),
                prune_at: PRUNE_ABOVE.min(capacity),
            }),
            capacity,
        }
    }

    /// The time the cache reads.
    pub fn now(&self) -> SystemTime {
        self.clock.now()
    }

    /// The cached token for `request` while it is fresh; otherwise `sign(now)`, whose
    /// token is cached (a new entry counted as `caller`'s). Callers asking at once for
    /// the same token wait for one signature. When signing fails, a cached token with at
    /// least [`MIN_REMAINING`] seconds left is handed out as [`Source::Stale`].
    pub fn get(
        &self,
        request: &JwtRequest,
        caller: &str,
        sign: impl FnOnce(SystemTime) -> Result<SignedJwt, Error>,
    ) -> Result<(SignedJwt, Source), Error> {
        let entry = self.entry(request, caller);
        let mut token = lock(&entry);
        let now = self.clock.now();
        if let Some(cached) = token.as_ref().filter(|t| fresh(t, now)) {
            return Ok((cached.clone(), Source::Hit));
        }
        match sign(now) {
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

    /// The cached token for `request`, if one is fresh enough to hand out — without
    /// waiting: `None` also while another caller holds the entry (signing it), so that a
    /// caller that must not block can take the blocking path ([`JwtCache::get`]).
    pub fn peek(&self, request: &JwtRequest) -> Option<SignedJwt> {
        let entry = lock(&self.entries)
            .by_request
            .get(request.cache_key().as_ref())?
            .entry
            .clone();
        let token = entry.try_lock().ok()?;
        let now = self.clock.now();
        token.as_ref().filter(|t| fresh(t, now)).cloned()
    }

    /// Signs `request` for `caller` with `signer` (whose key's recorded metadata is
    /// `meta`): from the cache when the kind may be cached, else fresh.
    pub fn sign(
        &self,
        request: &Request,
        caller: &str,
        signer: &dyn Es256Signer,
        meta: Option<&KeyMetadata>,
    ) -> Result<(Signed, Source), Error> {
        match request {
            Request::Token(r) if request.spec().cacheable => {
                let (token, source) = self.get(r, caller, |now| r.sign(signer, meta, now))?;
                Ok((Signed::Jwt(token), source))
            }
            _ => Ok((request.sign(signer, meta, self.clock.now())?, Source::Fresh)),
        }
    }

    fn entry(&self, request: &JwtRequest, caller: &str) -> Entry {
        let key = request.cache_key();
        let request = key.as_ref();
        let mut entries = lock(&self.entries);
        if let Some(slot) = entries.by_request.get(request) {
            return slot.entry.clone();
        }
        if entries.by_request.len() >= entries.prune_at {
            self.prune(&mut entries);
            // Pruning again only once the cache has doubled keeps inserts O(1) on average.
            entries.prune_at =
                (entries.by_request.len() * 2).clamp(PRUNE_ABOVE.min(self.capacity), self.capacity);
        }
        let entry = Entry::default();
        let slot = Slot {
            entry: entry.clone(),
            owner: Arc::from(caller),
            provider: request.provider(),
        };
        entries.by_request.insert(request.clone(), slot);
        entry
    }

    /// Drops entries whose tokens can no longer be handed out and that nobody is signing
    /// for; then, at capacity, a quarter of it: the entries of the caller that made the
    /// most, nearest their end first — never a provider token that can be handed out.
    fn prune(&self, entries: &mut Entries) {
        let now = self.clock.now();
        entries
            .by_request
            .retain(|_, slot| match slot.entry.try_lock() {
                Ok(token) => token.as_ref().is_some_and(|t| usable(t, now)),
                Err(_) => true,
            });
        let mut over = match entries.by_request.len() {
            // Never more than there are (a cache of one empties itself for the next).
            n if n >= self.capacity => (n + 1 - self.capacity * 3 / 4).min(n),
            _ => 0,
        };
        while over > 0 {
            // The caller with the most entries that may go gives them up.
            let mut counts: HashMap<&Arc<str>, usize> = HashMap::new();
            for slot in entries.by_request.values().filter(|s| evictable(s)) {
                *counts.entry(&slot.owner).or_default() += 1;
            }
            let Some((owner, count)) = counts.into_iter().max_by_key(|(_, count)| *count) else {
                break; // only provider tokens and entries being signed: kept
            };
            let (owner, going) = (owner.clone(), over.min(count));
            // The `going` nearest ends, found without copying a request or sorting: this
            // runs under the lock every caller takes, cache hits included.
            let mut ends: Vec<u64> = entries
                .by_request
                .values()
                .filter(|s| s.owner == owner && evictable(s))
                .map(|s| end(&s.entry))
                .collect();
            let threshold = *ends.select_nth_unstable(going - 1).1;
            let mut ties = going - ends.iter().filter(|&&e| e < threshold).count();
            entries.by_request.retain(|_, slot| {
                if slot.owner != owner || !evictable(slot) {
                    return true;
                }
                match end(&slot.entry) {
                    e if e < threshold => false,
                    e if e == threshold && ties > 0 => {
                        ties -= 1;
                        false
                    }
                    _ => true,
                }
            });
            over -= going;
        }
    }

    /// How many requests the cache holds.
    pub fn len(&self) -> usize {
        lock(&self.entries).by_request.len()
    }

    /// Whether the cache holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Whether an entry may go at capacity: not a provider token (one that can no longer be
/// handed out was pruned already), and nobody is signing for it.
fn evictable(slot: &Slot) -> bool {
    !slot.provider && end(&slot.entry) != u64::MAX
}

/// When an entry's token ends, for pruning at capacity: 0 with no token yet, never for
/// an entry being signed.
fn end(entry: &Entry) -> u64 {
    match entry.try_lock() {
        Ok(token) => token.as_ref().map_or(0, |t| t.expires_at),
        Err(_) => u64::MAX,
    }
}

/// Whether `token` may still be handed out at `now` when no new one can be signed: at
/// least [`MIN_REMAINING`] seconds left, and not issued after `now` (a clock stepped
/// back would hand out a token from the future, living longer than its kind allows).
fn usable(token: &SignedJwt, now: SystemTime) -> bool {
    unix(now).is_ok_and(|now| {
        token.issued_at <= now && token.expires_at.saturating_sub(now) >= MIN_REMAINING
    })
}

/// Whether `token` may still be handed out at `now`: [`usable`], with at least a third
/// of its lifetime left.
fn fresh(token: &SignedJwt, now: SystemTime) -> bool {
    let Ok(seconds) = unix(now) else { return false };
    let lifetime = token.expires_at.saturating_sub(token.issued_at);
    let remaining = token.expires_at.saturating_sub(seconds);
    usable(token, now) && remaining.saturating_mul(3) >= lifetime
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apple::connect::Connect;
    use crate::apple::developer::Provider;
    use crate::apple::tests::NOW;
    use crate::apple::JwtParams;
    use crate::jws::tests::MemorySigner;
    use crate::{Es256Signer, KeyId};
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

    fn connect(ttl: u64, skew: u64, scope: &[&str]) -> JwtRequest {
        connect_by("2X9R4HXF34", ttl, skew, scope)
    }

    fn connect_by(key_id: &str, ttl: u64, skew: u64, scope: &[&str]) -> JwtRequest {
        let params = JwtParams::Connect(Connect {
            issuer: None,
            individual: true,
            scope: scope.iter().map(|s| s.parse().unwrap()).collect(),
        });
        JwtRequest::new(key_id.parse().unwrap(), params, Some(ttl), Some(skew)).unwrap()
    }

    /// The cache's answer, signing with `signer` on a miss.
    fn get_with_source<C: Clock>(
        cache: &JwtCache<C>,
        request: &JwtRequest,
        signer: &dyn Es256Signer,
    ) -> Result<(SignedJwt, Source), Error> {
        cache.get(request, "", |now| request.sign(signer, None, now))
    }

    fn get<C: Clock>(
        cache: &JwtCache<C>,
        request: &JwtRequest,
        signer: &dyn Es256Signer,
    ) -> Result<SignedJwt, Error> {
        get_with_source(cache, request, signer).map(|(t, _)| t)
    }

    #[test]
    fn the_same_request_gets_the_same_token_until_a_third_of_its_life_remains() {
        let clock = FakeClock::at(NOW);
        let cache = JwtCache::new(clock.clone());
        let signer = Counting::new(Duration::ZERO);
        let request = connect(600, 60, &[]); // lifetime 660 s: refresh below 220 s left
        let first = get(&cache, &request, &signer).unwrap();
        assert_eq!(get(&cache, &request, &signer).unwrap().token, first.token);
        clock.set(NOW + 380); // 220 s left
        assert_eq!(get(&cache, &request, &signer).unwrap().token, first.token);
        assert_eq!(signer.count(), 1);
        clock.set(NOW + 381); // 219 s left
        let second = get(&cache, &request, &signer).unwrap();
        assert_ne!(second.token, first.token);
        assert_eq!(second.issued_at, NOW + 381 - 60);
        assert_eq!(signer.count(), 2);
    }

    #[test]
    fn peeking_never_signs_never_waits_and_hands_out_only_what_get_would() {
        let clock = FakeClock::at(NOW);
        let cache = Arc::new(JwtCache::new(clock.clone()));
        let signer = Arc::new(Counting::new(Duration::from_millis(300)));
        let request = connect(600, 60, &[]);
        assert!(cache.peek(&request).is_none(), "nothing cached yet");
        // While another caller signs the entry, peeking does not wait for it.
        let signing = {
            let (cache, signer, request) = (cache.clone(), signer.clone(), request.clone());
            std::thread::spawn(move || get(&cache, &request, &*signer).unwrap())
        };
        std::thread::sleep(Duration::from_millis(100));
        let started = std::time::Instant::now();
        assert!(cache.peek(&request).is_none());
        assert!(
            started.elapsed() < Duration::from_millis(100),
            "peek waited"
        );
        let signed = signing.join().unwrap();
        assert_eq!(cache.peek(&request).unwrap().token, signed.token);
        assert_eq!(signer.count(), 1, "peeking signs nothing");
        clock.set(NOW + 381); // under a third of its life left: get would sign anew
        assert!(cache.peek(&request).is_none());
    }

    #[test]
    fn a_token_with_under_a_minute_left_is_never_handed_out() {
        let clock = FakeClock::at(NOW);
        let cache = JwtCache::new(clock.clone());
        let signer = Counting::new(Duration::ZERO);
        let request = connect(100, 0, &[]); // a third would be 33 s; the minute rule wins
        get(&cache, &request, &signer).unwrap();
        clock.set(NOW + 40); // 60 s left
        get(&cache, &request, &signer).unwrap();
        assert_eq!(signer.count(), 1);
        clock.set(NOW + 41); // 59 s left
        let refreshed = get(&cache, &request, &signer).unwrap();
        assert_eq!(signer.count(), 2);
        assert_eq!(refreshed.expires_at, NOW + 41 + 100);
    }

    #[test]
    fn different_claims_kinds_or_keys_get_their_own_tokens() {
        let cache = JwtCache::new(FakeClock::at(NOW));
        let signer = Counting::new(Duration::ZERO);
        let a = get(&cache, &connect(600, 60, &["GET /v1/apps"]), &signer).unwrap();
        let b = get(&cache, &connect(600, 60, &["GET /v1/builds"]), &signer).unwrap();
        let c = get(&cache, &connect(300, 60, &["GET /v1/apps"]), &signer).unwrap();
        let apns = JwtRequest::new(
            "2X9R4HXF34".parse().unwrap(),
            JwtParams::Apns(Provider {
                team_id: Some("A1B2C3D4E5".parse().unwrap()),
            }),
            None,
            Some(0),
        )
        .unwrap();
        let d = get(&cache, &apns, &signer).unwrap();
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
        let e = get(
            &cache,
            &connect_by("ZZZZZZZZZ1", 600, 60, &["GET /v1/apps"]),
            &other_key,
        )
        .unwrap();
        assert!(e.token.contains('.') && e.key_id.as_str() == "ZZZZZZZZZ1");
        assert_eq!(cache.len(), 5);
        assert_eq!(get(&cache, &apns, &signer).unwrap().token, d.token);
        assert_eq!(signer.count(), 4);
    }

    #[test]
    fn concurrent_callers_wait_on_one_signature() {
        let cache = JwtCache::new(FakeClock::at(NOW));
        let signer = Counting::new(Duration::from_millis(50));
        let request = connect(600, 60, &[]);
        let tokens: Vec<String> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|_| s.spawn(|| get(&cache, &request, &signer).unwrap().token))
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
        let cache = JwtCache::new(clock.clone());
        let signer = Flaky {
            inner: MemorySigner::new(),
            down: false.into(),
        };
        let request = connect(600, 60, &[]); // exp = NOW + 600
        let first = get(&cache, &request, &signer).unwrap();
        signer.down.store(true, Ordering::SeqCst);
        clock.set(NOW + 500); // past the refresh margin, 100 s left
        let (served, source) = get_with_source(&cache, &request, &signer).unwrap();
        assert_eq!((served.token, source), (first.token, Source::Stale));
        clock.set(NOW + 541); // 59 s left: never handed out
        assert!(get(&cache, &request, &signer).is_err());
        signer.down.store(false, Ordering::SeqCst);
        let (_, source) = get_with_source(&cache, &request, &signer).unwrap();
        assert_eq!(source, Source::Fresh);
    }

    #[test]
    fn a_clock_stepped_back_gets_a_new_token_never_one_from_the_future() {
        let clock = FakeClock::at(NOW);
        let cache = JwtCache::new(clock.clone());
        let signer = Counting::new(Duration::ZERO);
        let request = connect(600, 60, &[]);
        let first = get(&cache, &request, &signer).unwrap();
        clock.set(NOW - 7139); // stepped back two hours
        let (again, source) = get_with_source(&cache, &request, &signer).unwrap();
        assert_eq!(source, Source::Fresh);
        assert_ne!(again.token, first.token);
        assert_eq!(
            again.issued_at,
            NOW - 7139 - 60,
            "issued by the clock as it reads now"
        );
    }

    #[test]
    fn the_cache_stays_bounded_and_drops_what_expired() {
        let clock = FakeClock::at(NOW);
        let cache = JwtCache::with_capacity(clock.clone(), 64);
        let signer = MemorySigner::new();
        for i in 0..300 {
            let request = connect(600, 60, &[&format!("GET /v1/apps/{i}")]);
            get(&cache, &request, &signer).unwrap();
            assert!(cache.len() <= 64, "{}", cache.len());
        }
        // The newest stay: the entry just signed is a hit.
        let last = connect(600, 60, &["GET /v1/apps/299"]);
        assert_eq!(
            get_with_source(&cache, &last, &signer).unwrap().1,
            Source::Hit
        );
        clock.set(NOW + 3600); // every token has expired
        cache.prune(&mut lock(&cache.entries));
        assert_eq!(
            cache.len(),
            0,
            "a prune drops every token that can no longer be handed out"
        );
    }

    #[test]
    fn at_capacity_the_tokens_nearest_their_end_go_first() {
        let clock = FakeClock::at(NOW);
        let cache = JwtCache::with_capacity(clock.clone(), 8);
        let signer = MemorySigner::new();
        let request = |i: usize| connect(600, 60, &[&format!("GET /v1/apps/{i}")]);
        // Two tokens ending first, two ending 5 s later, four 10 s later.
        for (i, issued) in [0, 0, 5, 5, 10, 10, 10, 10].into_iter().enumerate() {
            clock.set(NOW + issued);
            get(&cache, &request(i), &signer).unwrap();
        }
        assert_eq!(cache.len(), 8);
        // A ninth: a quarter of the capacity, and room for it, goes.
        get(&cache, &request(8), &signer).unwrap();
        assert_eq!(cache.len(), 6);
        let kept = |i: usize| lock(&cache.entries).by_request.contains_key(&request(i));
        assert!(!(0..2).any(kept), "the first ends go");
        assert_eq!(
            (2..4).filter(|&i| kept(i)).count(),
            1,
            "of the tokens ending next, together, exactly as many go as must"
        );
        assert!((4..9).all(kept), "the later ends stay");
    }

    #[test]
    fn a_cache_of_one_keeps_the_newest() {
        let cache = JwtCache::with_capacity(FakeClock::at(NOW), 1);
        let signer = MemorySigner::new();
        for i in 0..3 {
            get(
                &cache,
                &connect(600, 60, &[&format!("GET /v1/apps/{i}")]),
                &signer,
            )
            .unwrap();
            assert_eq!(cache.len(), 1);
        }
        let last = connect(600, 60, &["GET /v1/apps/2"]);
        assert_eq!(
            get_with_source(&cache, &last, &signer).unwrap().1,
            Source::Hit
        );
    }

    fn apns(key_id: &str) -> JwtRequest {
        JwtRequest::new(
            key_id.parse().unwrap(),
            JwtParams::Apns(Provider {
                team_id: Some("A1B2C3D4E5".parse().unwrap()),
            }),
            None,
            None,
        )
        .unwrap()
    }

    #[test]
    fn a_provider_token_is_one_per_team_and_key_whatever_the_skew() {
        let cache = JwtCache::new(FakeClock::at(NOW));
        let signer = MemorySigner::new();
        let with_skew = |skew| {
            JwtRequest::new(
                "2X9R4HXF34".parse().unwrap(),
                JwtParams::Apns(Provider {
                    team_id: Some("A1B2C3D4E5".parse().unwrap()),
                }),
                None,
                Some(skew),
            )
            .unwrap()
        };
        let first = with_skew(60);
        let (token, _) = cache
            .get(&first, "a", |now| first.sign(&signer, None, now))
            .unwrap();
        for skew in [0, 61, 62, 600] {
            let request = with_skew(skew);
            let (again, source) = cache
                .get(&request, "a", |now| request.sign(&signer, None, now))
                .unwrap();
            assert_eq!(
                (again.token.as_str(), source),
                (token.token.as_str(), Source::Hit)
            );
        }
        // Other kinds still tell lifetimes apart.
        let (a, b) = (connect(600, 60, &[]), connect(600, 0, &[]));
        let (a, _) = cache
            .get(&a, "a", |now| a.sign(&signer, None, now))
            .unwrap();
        let (b, source) = cache
            .get(&b, "a", |now| b.sign(&signer, None, now))
            .unwrap();
        assert_eq!(source, Source::Fresh);
        assert_ne!(a.token, b.token);
    }

    #[test]
    fn one_caller_cannot_flush_another_callers_tokens() {
        let cache = JwtCache::with_capacity(FakeClock::at(NOW), 64);
        let signer = MemorySigner::new();
        let kept = connect(600, 60, &["GET /v1/apps"]);
        cache
            .get(&kept, "b", |now| kept.sign(&signer, None, now))
            .unwrap();
        for i in 0..1000 {
            let request = connect(600, 60, &[&format!("GET /v1/apps/{i}")]);
            cache
                .get(&request, "a", |now| request.sign(&signer, None, now))
                .unwrap();
            assert!(cache.len() <= 64, "{}", cache.len());
        }
        let (_, source) = cache
            .get(&kept, "b", |now| kept.sign(&signer, None, now))
            .unwrap();
        assert_eq!(source, Source::Hit, "b's token outlived a's thousand");
    }

    #[test]
    fn a_provider_token_that_can_be_handed_out_is_never_dropped_for_another_entry() {
        let clock = FakeClock::at(NOW);
        let cache = JwtCache::with_capacity(clock.clone(), 16);
        let signer = MemorySigner::new();
        let provider = apns("2X9R4HXF34");
        // Made by the caller that then floods the cache, and the first to end.
        let first = cache
            .get(&provider, "a", |now| provider.sign(&signer, None, now))
            .unwrap();
        clock.set(NOW + 60);
        // MusicKit tokens that each end after the provider token: a flood of them with
        // distinct lifetimes, as a caller allowed only MusicKit could ask for.
        for i in 0..500 {
            let request = JwtRequest::new(
                "2X9R4HXF34".parse().unwrap(),
                JwtParams::Musickit(crate::apple::developer::MusicKit {
                    team_id: Some("A1B2C3D4E5".parse().unwrap()),
                    origin: vec![],
                }),
                Some(86_400 + i),
                None,
            )
            .unwrap();
            cache
                .get(&request, "a", |now| request.sign(&signer, None, now))
                .unwrap();
            assert!(cache.len() <= 16, "{}", cache.len());
        }
        let again = cache
            .get(&provider, "b", |now| provider.sign(&signer, None, now))
            .unwrap();
        assert_eq!(again.1, Source::Hit);
        assert_eq!(again.0.token, first.0.token, "the same provider token");
        // One that can no longer be handed out goes like any other.
        clock.set(NOW + 3600);
        cache.prune(&mut lock(&cache.entries));
        assert!(cache.peek(&provider).is_none());
        assert!(!lock(&cache.entries).by_request.contains_key(&provider));
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
        let cache = JwtCache::new(FakeClock::at(NOW));
        let request = connect(600, 60, &[]);
        assert!(get(&cache, &request, &Failing).is_err());
        let signer = Counting::new(Duration::ZERO);
        get(&cache, &request, &signer).unwrap();
        assert_eq!(signer.count(), 1);
    }
}
