//! The [`Resolver`] trait users implement, its errors and its options.

use std::time::Duration;

use async_trait::async_trait;

/// Why a resolver could not produce the referenced value. The variant decides
/// what happens to the task (see the [module documentation](super)); the
/// message is stored sealed with the task and never logged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    /// No such record: the task is archived with reason `reference_missing`
    /// and not retried.
    #[error("not found")]
    NotFound,
    /// The store is unavailable or slow (connection refused, 503 ...): the
    /// task is retried with its backoff.
    #[error("transient: {0}")]
    Transient(String),
    /// The worker may not read this record: the task is archived with reason
    /// `reference_forbidden` and a warning is logged.
    #[error("forbidden: {0}")]
    Forbidden(String),
}

impl ResolveError {
    /// A transient error with a message.
    pub fn transient(message: impl Into<String>) -> Self {
        ResolveError::Transient(message.into())
    }

    /// A forbidden error with a message.
    pub fn forbidden(message: impl Into<String>) -> Self {
        ResolveError::Forbidden(message.into())
    }
}

/// Fetches the `T` a [`Ref<T>`](super::Ref) points to. Implement it once per
/// referenced type and register it with
/// [`WorkerBuilder::resolver`](crate::WorkerBuilder::resolver).
///
/// Implementations only fetch: timeouts, caching, single-flight, panics and
/// the classification of failures into task outcomes are handled around them.
/// They should not log ids or records.
///
/// ```
/// use std::collections::HashMap;
/// use sealq::reference::{ResolveError, Resolver};
///
/// #[derive(Clone)]
/// struct Customer { name: String }
///
/// struct CustomerTable(HashMap<String, Customer>);
///
/// #[sealq::reference::async_trait]
/// impl Resolver<Customer> for CustomerTable {
///     async fn resolve(&self, id: &str) -> Result<Customer, ResolveError> {
///         self.0.get(id).cloned().ok_or(ResolveError::NotFound)
///     }
///
///     // Optional: refuse ids that cannot exist without a round trip.
///     fn validate_id(&self, id: &str) -> Result<(), String> {
///         if id.starts_with("cus_") { Ok(()) } else { Err("expected a `cus_` id".into()) }
///     }
/// }
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let table = CustomerTable(HashMap::from([("cus_1".into(), Customer { name: "Ada".into() })]));
/// assert_eq!(table.resolve("cus_1").await.unwrap().name, "Ada");
/// assert_eq!(table.resolve("cus_2").await.err(), Some(ResolveError::NotFound));
/// # });
/// ```
#[async_trait]
pub trait Resolver<T>: Send + Sync + 'static {
    /// Fetch the record with this id.
    async fn resolve(&self, id: &str) -> Result<T, ResolveError>;

    /// Check an id's shape before fetching (after the built-in check of
    /// [`Ref::check_id`](super::Ref::check_id)). An `Err` archives the task
    /// with reason `reference_malformed`; its text is stored sealed. The
    /// default accepts every id.
    fn validate_id(&self, id: &str) -> Result<(), String> {
        let _ = id;
        Ok(())
    }
}

/// A shared resolver (keep a handle to it, register the `Arc`).
#[async_trait]
impl<T, R> Resolver<T> for std::sync::Arc<R>
where
    T: Send + 'static,
    R: Resolver<T> + ?Sized,
{
    async fn resolve(&self, id: &str) -> Result<T, ResolveError> {
        (**self).resolve(id).await
    }

    fn validate_id(&self, id: &str) -> Result<(), String> {
        (**self).validate_id(id)
    }
}

/// How the worker calls one type's resolver.
///
/// ```
/// use std::time::Duration;
/// use sealq::reference::{CacheOptions, ResolverOptions};
///
/// let fresh = ResolverOptions::default(); // 5 s timeout, no cache
/// let cached = ResolverOptions::default()
///     .timeout(Duration::from_secs(2))
///     .cache(CacheOptions::new(Duration::from_secs(60), 10_000));
/// # let _ = (fresh, cached);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ResolverOptions {
    /// Longest a fetch may take; past it the fetch counts as a transient
    /// failure (the task is retried). Default 5 s.
    pub timeout: Duration,
    /// The in-process cache; `None` (the default) fetches on every resolve,
    /// for data that must be fresh. Concurrent resolves of one id share one
    /// fetch either way.
    pub cache: Option<CacheOptions>,
    /// The `type` label of metrics and stats; default: the last path segment
    /// of the type's name (`Customer`).
    pub name: Option<String>,
}

impl Default for ResolverOptions {
    fn default() -> Self {
        ResolverOptions {
            timeout: Duration::from_secs(5),
            cache: None,
            name: None,
        }
    }
}

impl ResolverOptions {
    /// Defaults: 5 s timeout, no cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// Set the fetch timeout (at least 1 ms).
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout.max(Duration::from_millis(1));
        self
    }

    /// Turn the cache on.
    #[must_use]
    pub fn cache(mut self, cache: CacheOptions) -> Self {
        self.cache = Some(cache);
        self
    }

    /// Set the metrics label for this type.
    #[must_use]
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }
}

/// A bounded in-process cache of resolved values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct CacheOptions {
    /// How long a fetched value is served from the cache.
    pub ttl: Duration,
    /// At most this many ids are kept; the least recently used goes first.
    pub max_entries: usize,
}

impl CacheOptions {
    /// Keep up to `max_entries` values (at least 1) for `ttl` each.
    pub fn new(ttl: Duration, max_entries: usize) -> Self {
        CacheOptions {
            ttl,
            max_entries: max_entries.max(1),
        }
    }
}
