//! [`Resolvers`]: the per-type registry with timeout, cache and single-flight.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, MutexGuard};

use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use tokio::time::Instant;

use super::cache::LruTtl;
use super::resolver::{ResolveError, Resolver, ResolverOptions};
use super::stats::{Counters, ErrorClass, ResolverStats};
use super::{Ref, check_id, short_type_name};

/// Why [`Resolvers::resolve`] produced no value: the class (what happens to
/// the task) and a message. The message may quote the resolver's error text
/// and the id: it is meant for the task's sealed error, never for logs.
#[derive(Clone, PartialEq, Eq)]
pub struct ResolveFailure {
    /// The class.
    pub class: ErrorClass,
    message: String,
}

impl ResolveFailure {
    fn new(class: ErrorClass, message: String) -> Self {
        ResolveFailure { class, message }
    }

    /// The message (may hold the id: store it sealed, do not log it).
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl std::fmt::Debug for ResolveFailure {
    /// The class and message length only: the message may quote the id.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResolveFailure")
            .field("class", &self.class)
            .field("message_len", &self.message.len())
            .finish()
    }
}

impl std::fmt::Display for ResolveFailure {
    /// The class only (safe for logs); [`ResolveFailure::message`] has the detail.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "reference could not be resolved: {}", self.class)
    }
}

impl std::error::Error for ResolveFailure {}

type Outcome<T> = Result<Arc<T>, ResolveFailure>;
type Flight<T> = Shared<BoxFuture<'static, Outcome<T>>>;

/// One registered type, its payload type erased.
trait Entry: Send + Sync + 'static {
    fn as_any(&self) -> &(dyn Any + Send + Sync);
    fn stats(&self) -> ResolverStats;
}

struct Typed<T> {
    resolver: Arc<dyn Resolver<T>>,
    options: ResolverOptions,
    counters: Arc<Counters>,
    state: Arc<Mutex<State<T>>>,
}

struct State<T> {
    cache: Option<LruTtl<T>>,
    inflight: HashMap<String, Flight<T>>,
}

fn lock<T>(m: &Mutex<State<T>>) -> MutexGuard<'_, State<T>> {
    // Only plain map operations run under the lock; a panic there cannot
    // leave the maps half-updated in a way that matters (worst case a
    // redundant fetch), so a poisoned lock is still usable.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl<T: Send + Sync + 'static> Entry for Typed<T> {
    fn as_any(&self) -> &(dyn Any + Send + Sync) {
        self
    }

    fn stats(&self) -> ResolverStats {
        let cached = lock(&self.state).cache.as_ref().map_or(0, LruTtl::len);
        self.counters.snapshot(cached)
    }
}

impl<T: Send + Sync + 'static> Typed<T> {
    async fn resolve(&self, id: &str) -> Outcome<T> {
        self.counters.resolve();
        let name = &self.counters.label;
        if let Err(why) = check_id(id).and_then(|()| self.resolver.validate_id(id)) {
            return Err(self.fail(
                ErrorClass::Malformed,
                format!("malformed reference to {name}: {why}"),
            ));
        }
        let flight = {
            let mut st = lock(&self.state);
            if let Some(cache) = st.cache.as_mut() {
                let hit = cache.get(id, Instant::now());
                self.counters.cache(hit.is_some());
                if let Some(v) = hit {
                    return Ok(v);
                }
            }
            match st.inflight.get(id) {
                Some(f) => {
                    self.counters.coalesced();
                    f.clone()
                }
                None => {
                    let f = self.start_fetch(id.to_owned());
                    st.inflight.insert(id.to_owned(), f.clone());
                    f
                }
            }
        };
        flight.await.inspect_err(|f| self.counters.error(f.class))
    }

    fn fail(&self, class: ErrorClass, message: String) -> ResolveFailure {
        self.counters.error(class);
        ResolveFailure::new(class, message)
    }

    /// Run the resolver for `id` in its own task, so that it finishes (and
    /// fills the cache) even if the task that started it is cancelled, and
    /// so that its panics stay inside it. Called with the state locked; the
    /// fetch removes itself from `inflight` when done.
    fn start_fetch(&self, id: String) -> Flight<T> {
        let resolver = self.resolver.clone();
        let state = self.state.clone();
        let counters = self.counters.clone();
        let timeout = self.options.timeout;
        let fetch = tokio::spawn(async move {
            let name = &counters.label;
            let started = Instant::now();
            let call = AssertUnwindSafe(resolver.resolve(&id)).catch_unwind();
            let outcome = match tokio::time::timeout(timeout, call).await {
                Ok(Ok(Ok(value))) => Ok(Arc::new(value)),
                Ok(Ok(Err(e))) => Err(classify(name, &id, e)),
                Ok(Err(_panic)) => {
                    // The panic message may quote data: not logged.
                    tracing::warn!(r#type = %name, "resolver panicked; the task will be retried");
                    Err(ResolveFailure::new(
                        ErrorClass::Panic,
                        format!("the {name} resolver panicked"),
                    ))
                }
                Err(_elapsed) => {
                    tracing::warn!(
                        r#type = %name,
                        timeout_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
                        "resolver timed out; the task will be retried"
                    );
                    Err(ResolveFailure::new(
                        ErrorClass::Timeout,
                        format!("the {name} resolver timed out after {timeout:?}"),
                    ))
                }
            };
            counters.fetched(started.elapsed());
            let mut st = lock(&state);
            // Fill the cache before leaving `inflight`, so no resolve finds
            // neither and starts a second fetch.
            if let (Ok(value), Some(cache)) = (&outcome, st.cache.as_mut()) {
                cache.insert(&id, value.clone(), Instant::now());
            }
            st.inflight.remove(&id);
            outcome
        });
        async move {
            fetch.await.unwrap_or_else(|_| {
                // Only reachable if the runtime shuts down under the fetch.
                Err(ResolveFailure::new(
                    ErrorClass::Transient,
                    "the resolve task was cancelled".to_owned(),
                ))
            })
        }
        .boxed()
        .shared()
    }
}

fn classify(name: &str, id: &str, e: ResolveError) -> ResolveFailure {
    match e {
        ResolveError::NotFound => {
            ResolveFailure::new(ErrorClass::NotFound, format!("{name} `{id}` not found"))
        }
        ResolveError::Transient(m) => ResolveFailure::new(
            ErrorClass::Transient,
            format!("resolving {name} `{id}` failed: {m}"),
        ),
        ResolveError::Forbidden(m) => ResolveFailure::new(
            ErrorClass::Forbidden,
            format!("resolving {name} `{id}` was refused: {m}"),
        ),
    }
}

/// The resolvers of a worker, one per referenced type; build them with
/// [`WorkerBuilder::resolver`](crate::WorkerBuilder::resolver) (handlers then
/// call [`TaskContext::resolve`](crate::TaskContext::resolve)) or on their own
/// with [`Resolvers::register`] to resolve outside a worker.
///
/// Each type has its timeout, optional cache and single-flight map; see
/// [`ResolverOptions`]. Registering a type again replaces its resolver.
///
/// ```
/// use std::sync::Arc;
/// use sealq::reference::{ErrorClass, Ref, ResolveError, Resolver, ResolverOptions, Resolvers};
///
/// struct Square;
/// #[sealq::reference::async_trait]
/// impl Resolver<u64> for Square {
///     async fn resolve(&self, id: &str) -> Result<u64, ResolveError> {
///         let n: u64 = id.parse().map_err(|_| ResolveError::NotFound)?;
///         Ok(n * n)
///     }
/// }
///
/// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
/// let mut resolvers = Resolvers::new();
/// resolvers.register(Square, ResolverOptions::default());
/// assert_eq!(*resolvers.resolve(&Ref::<u64>::new("7")).await.unwrap(), 49);
/// let err = resolvers.resolve(&Ref::<u64>::new("x")).await.unwrap_err();
/// assert_eq!(err.class, ErrorClass::NotFound);
/// let stats = &resolvers.stats()[0];
/// assert_eq!((stats.type_name.as_str(), stats.resolves, stats.fetches), ("u64", 2, 2));
/// # });
/// ```
#[derive(Clone, Default)]
pub struct Resolvers {
    by_type: HashMap<TypeId, Arc<dyn Entry>>,
    /// Registration order, for [`Resolvers::stats`].
    order: Vec<TypeId>,
}

impl std::fmt::Debug for Resolvers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<String> = self
            .order
            .iter()
            .filter_map(|t| self.by_type.get(t))
            .map(|e| e.stats().type_name)
            .collect();
        f.debug_struct("Resolvers").field("types", &names).finish()
    }
}

impl Resolvers {
    /// No resolvers.
    pub fn new() -> Self {
        Self::default()
    }

    /// Register `resolver` for `T` with `options` (replacing an earlier one).
    pub fn register<T, R>(&mut self, resolver: R, options: ResolverOptions) -> &mut Self
    where
        T: Send + Sync + 'static,
        R: Resolver<T>,
    {
        let label = options
            .name
            .clone()
            .unwrap_or_else(|| short_type_name::<T>().to_owned());
        let cache = options.cache.map(|c| LruTtl::new(c.ttl, c.max_entries));
        let entry = Typed::<T> {
            resolver: Arc::new(resolver),
            options,
            counters: Arc::new(Counters::new(label)),
            state: Arc::new(Mutex::new(State {
                cache,
                inflight: HashMap::new(),
            })),
        };
        let key = TypeId::of::<T>();
        if self.by_type.insert(key, Arc::new(entry)).is_none() {
            self.order.push(key);
        }
        self
    }

    /// Whether a resolver for `T` is registered.
    pub fn contains<T: 'static>(&self) -> bool {
        self.by_type.contains_key(&TypeId::of::<T>())
    }

    /// How many types have a resolver.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// Whether no type has a resolver.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// Resolve `reference`: check the id, then serve it from the cache, join
    /// a fetch of the same id already running, or fetch it (bounded by the
    /// type's timeout, panics caught). Only successes are cached.
    pub async fn resolve<T: Send + Sync + 'static>(
        &self,
        reference: &Ref<T>,
    ) -> Result<Arc<T>, ResolveFailure> {
        let Some(entry) = self
            .by_type
            .get(&TypeId::of::<T>())
            .and_then(|e| e.as_any().downcast_ref::<Typed<T>>())
        else {
            let name = short_type_name::<T>();
            metrics::counter!(
                "sealq_resolve_errors_total",
                "type" => name,
                "class" => ErrorClass::Unregistered.as_str()
            )
            .increment(1);
            return Err(ResolveFailure::new(
                ErrorClass::Unregistered,
                format!("no resolver is registered for {name} (WorkerBuilder::resolver)"),
            ));
        };
        entry.resolve(reference.id()).await
    }

    /// The figures of every registered type, in registration order.
    pub fn stats(&self) -> Vec<ResolverStats> {
        self.order
            .iter()
            .filter_map(|t| self.by_type.get(t))
            .map(|e| e.stats())
            .collect()
    }
}
