//! `GET /metrics`, in the Prometheus text format (prometheus-client): requests by kind
//! and outcome, cache results, the latency of fresh signatures, whether the token is
//! available, and how often the service logged in.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// A request's kind and how it ended (`ok` or the protocol's error code).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Outcome {
    pub kind: String,
    pub outcome: String,
}

/// How a token was obtained: `hit`, `fresh` or `stale`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Cache {
    pub result: String,
}

/// The service's metrics.
pub struct Metrics {
    registry: Registry,
    pub requests: Family<Outcome, Counter>,
    pub cache: Family<Cache, Counter>,
    pub sign_seconds: Histogram,
    pub token_available: Gauge,
    pub logins: Gauge,
}

impl Metrics {
    pub fn new() -> Metrics {
        let requests = Family::<Outcome, Counter>::default();
        let cache = Family::<Cache, Counter>::default();
        // 0.1 ms to about 3 s.
        let sign_seconds = Histogram::new(exponential_buckets(0.0001, 2.0, 16));
        let token_available = Gauge::default();
        let logins = Gauge::default();
        let mut registry = Registry::with_prefix("p8hsm");
        registry.register(
            "requests",
            "Token and signature requests, by kind and outcome",
            requests.clone(),
        );
        registry.register(
            "cache",
            "Results handed out: from the cache (hit), signed (fresh), or cached while the token was away (stale)",
            cache.clone(),
        );
        registry.register(
            "sign_seconds",
            "Time to sign a fresh token or signature with the token",
            sign_seconds.clone(),
        );
        registry.register(
            "token_available",
            "Whether the token answered the last call (1) or is being left alone (0)",
            token_available.clone(),
        );
        registry.register(
            "logins",
            "Successful logins to the token since the service started",
            logins.clone(),
        );
        Metrics {
            registry,
            requests,
            cache,
            sign_seconds,
            token_available,
            logins,
        }
    }

    /// The text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
