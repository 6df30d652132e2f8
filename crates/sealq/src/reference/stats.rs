//! Per-type resolve counters: exported as `metrics` and kept in-process for
//! [`Resolvers::stats`](super::Resolvers::stats).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;

/// How a resolve failed, as counted in `sealq_resolve_errors_total{class}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorClass {
    /// [`ResolveError::NotFound`](super::ResolveError::NotFound).
    NotFound,
    /// [`ResolveError::Transient`](super::ResolveError::Transient).
    Transient,
    /// [`ResolveError::Forbidden`](super::ResolveError::Forbidden).
    Forbidden,
    /// The fetch took longer than the type's timeout.
    Timeout,
    /// The resolver panicked.
    Panic,
    /// The id failed the built-in check or [`Resolver::validate_id`](super::Resolver::validate_id).
    Malformed,
    /// No resolver is registered for the type (counted in the metric only:
    /// there are no per-type stats without a registration).
    Unregistered,
}

impl ErrorClass {
    /// Every class.
    pub const ALL: [ErrorClass; 7] = [
        ErrorClass::NotFound,
        ErrorClass::Transient,
        ErrorClass::Forbidden,
        ErrorClass::Timeout,
        ErrorClass::Panic,
        ErrorClass::Malformed,
        ErrorClass::Unregistered,
    ];

    /// The snake_case name used as the metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::NotFound => "not_found",
            ErrorClass::Transient => "transient",
            ErrorClass::Forbidden => "forbidden",
            ErrorClass::Timeout => "timeout",
            ErrorClass::Panic => "panic",
            ErrorClass::Malformed => "malformed",
            ErrorClass::Unregistered => "unregistered",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl std::fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A snapshot of one referenced type's resolve figures.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct ResolverStats {
    /// The `type` label ([`ResolverOptions::name`](super::ResolverOptions::name)).
    #[serde(rename = "type")]
    pub type_name: String,
    /// `resolve` calls.
    pub resolves: u64,
    /// Calls of the resolver itself (one per id and cache miss, shared by
    /// concurrent resolves of that id).
    pub fetches: u64,
    /// Resolves served from the cache (0 without a cache).
    pub cache_hits: u64,
    /// Resolves that missed the cache (0 without a cache).
    pub cache_misses: u64,
    /// Resolves that joined a fetch already running for the same id.
    pub coalesced: u64,
    /// Failed resolves by class (classes with no failure are left out).
    pub errors: BTreeMap<ErrorClass, u64>,
    /// Values in the cache now.
    pub cached_entries: usize,
    /// Fetch latency percentiles over the last 4096 fetches, milliseconds.
    pub fetch_p50_ms: f64,
    /// 99th percentile of the same.
    pub fetch_p99_ms: f64,
    /// Slowest of the same.
    pub fetch_max_ms: f64,
}

impl ResolverStats {
    /// Share of cached lookups served from the cache, if the type has a cache
    /// and was looked up.
    pub fn hit_ratio(&self) -> Option<f64> {
        let total = self.cache_hits + self.cache_misses;
        (total > 0).then(|| self.cache_hits as f64 / total as f64)
    }

    /// Failed resolves of every class.
    pub fn error_total(&self) -> u64 {
        self.errors.values().sum()
    }
}

const SAMPLES: usize = 4096;

/// Live counters of one type.
pub(crate) struct Counters {
    pub(crate) label: String,
    resolves: AtomicU64,
    fetches: AtomicU64,
    hits: AtomicU64,
    misses: AtomicU64,
    coalesced: AtomicU64,
    errors: [AtomicU64; 7],
    /// Fetch durations in microseconds, a ring of the last [`SAMPLES`].
    samples: Mutex<(Vec<u32>, usize)>,
}

impl Counters {
    pub(crate) fn new(label: String) -> Self {
        Counters {
            label,
            resolves: AtomicU64::new(0),
            fetches: AtomicU64::new(0),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            coalesced: AtomicU64::new(0),
            errors: Default::default(),
            samples: Mutex::new((Vec::new(), 0)),
        }
    }

    pub(crate) fn resolve(&self) {
        self.resolves.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn cache(&self, hit: bool) {
        let (counter, label) = if hit {
            (&self.hits, "hit")
        } else {
            (&self.misses, "miss")
        };
        counter.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("sealq_resolve_cache_total", "type" => self.label.clone(), "result" => label)
            .increment(1);
    }

    pub(crate) fn coalesced(&self) {
        self.coalesced.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("sealq_resolve_coalesced_total", "type" => self.label.clone())
            .increment(1);
    }

    pub(crate) fn fetched(&self, took: Duration) {
        self.fetches.fetch_add(1, Ordering::Relaxed);
        metrics::histogram!("sealq_resolve_duration_seconds", "type" => self.label.clone())
            .record(took.as_secs_f64());
        let micros = u32::try_from(took.as_micros()).unwrap_or(u32::MAX);
        let mut ring = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        let (v, next) = &mut *ring;
        if v.len() < SAMPLES {
            v.push(micros);
        } else {
            v[*next] = micros;
        }
        *next = (*next + 1) % SAMPLES;
    }

    pub(crate) fn error(&self, class: ErrorClass) {
        self.errors[class.index()].fetch_add(1, Ordering::Relaxed);
        metrics::counter!(
            "sealq_resolve_errors_total",
            "type" => self.label.clone(),
            "class" => class.as_str()
        )
        .increment(1);
    }

    pub(crate) fn snapshot(&self, cached_entries: usize) -> ResolverStats {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut v = self
            .samples
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .0
            .clone();
        v.sort_unstable();
        let pct = |p: f64| -> f64 {
            if v.is_empty() {
                return 0.0;
            }
            let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
            f64::from(v[rank.clamp(1, v.len()) - 1]) / 1000.0
        };
        ResolverStats {
            type_name: self.label.clone(),
            resolves: g(&self.resolves),
            fetches: g(&self.fetches),
            cache_hits: g(&self.hits),
            cache_misses: g(&self.misses),
            coalesced: g(&self.coalesced),
            errors: ErrorClass::ALL
                .into_iter()
                .map(|c| (c, g(&self.errors[c.index()])))
                .filter(|(_, n)| *n > 0)
                .collect(),
            cached_entries,
            fetch_p50_ms: pct(50.0),
            fetch_p99_ms: pct(99.0),
            fetch_max_ms: v.last().map_or(0.0, |m| f64::from(*m) / 1000.0),
        }
    }
}
