//! The producer side: check the payload policy, seal, enqueue; and read
//! a task's outcome back ([`Client::result`], [`Client::wait_result`], in
//! `result.rs`).

mod bulk;
mod result;
mod settle;

pub use result::TaskOutcome;
pub use settle::{EnqueueCall, settle_enqueue};

use std::collections::HashMap;
use std::sync::Arc;
use tracing::Instrument as _;

use crate::audit::hooks as audit_hooks;
use crate::blob::DEFAULT_OFFLOAD_THRESHOLD;
use crate::error::{Error, Result};
use crate::metrics::record as metric;
use crate::model::clock::{SharedClock, system_clock};
use crate::model::id::{SubjectTag, TaskId};
use crate::model::options::{
    DEFAULT_MAX_RETRIES, DEFAULT_QUEUE, DEFAULT_RETENTION, DEFAULT_TIMEOUT, EnqueueOptions,
    default_not_after_ms, validate_kind, validate_queue_name,
};
use crate::model::record::NewTask;
use crate::model::task::{Task, TaskMeta, duration_ms, encode_payload};
use crate::policy::PayloadPolicy;
use crate::seal::data_key::DataKey;
use crate::seal::envelope::{Aad, Purpose};
use crate::seal::keyring::Keyring;
use crate::store::Stores;
use crate::store::broker::Broker;
use crate::store::subject_keys::SubjectKeyStore;
use crate::subject_keys::SubjectKeys;

/// One task to enqueue, before sealing: a type name, the MessagePack payload
/// and options. The dynamic counterpart of a typed [`Task`], for tools.
#[derive(Clone)]
pub struct RawTask {
    /// Task type name.
    pub kind: String,
    /// Payload in sealq's wire form (MessagePack, see [`crate::task::encode_payload`]).
    pub payload: Vec<u8>,
    /// Options.
    pub options: EnqueueOptions,
}

impl std::fmt::Debug for RawTask {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawTask")
            .field("kind", &self.kind)
            .field("payload_len", &self.payload.len())
            .field("options", &self.options)
            .finish()
    }
}

impl RawTask {
    /// A raw task from a type name and an encoded payload.
    pub fn new(kind: impl Into<String>, payload: Vec<u8>, options: EnqueueOptions) -> Self {
        RawTask {
            kind: kind.into(),
            payload,
            options,
        }
    }

    /// A raw task from a typed one: encodes the payload and merges the type's default options.
    pub fn typed<T: Task>(task: &T, options: EnqueueOptions) -> Result<Self> {
        Ok(RawTask {
            kind: T::KIND.to_owned(),
            payload: encode_payload(task)?,
            options: options.or(T::options()),
        })
    }

    /// A raw task from a JSON value (converted to MessagePack).
    pub fn from_json(
        kind: impl Into<String>,
        value: &serde_json::Value,
        options: EnqueueOptions,
    ) -> Result<Self> {
        Ok(RawTask::new(kind, encode_payload(value)?, options))
    }
}

/// Enqueues sealed tasks. Cheap to clone; share one per process.
///
/// ```no_run
/// # async fn f(broker: std::sync::Arc<dyn sealq::Broker>) -> sealq::Result<()> {
/// use serde::{Deserialize, Serialize};
/// #[derive(Serialize, Deserialize)]
/// struct Resize { image_id: u64 }
/// impl sealq::Task for Resize { const KIND: &'static str = "image.resize"; }
///
/// let keyring = sealq::Keyring::from_env()?;
/// let client = sealq::Client::builder(broker, keyring).producer("web-1").build();
/// let id = client.enqueue(&Resize { image_id: 7 }, sealq::EnqueueOptions::new()).await?;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct Client {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    broker: Arc<dyn Broker>,
    keyring: Arc<Keyring>,
    policy: PayloadPolicy,
    /// Claim-check: the blob store and the offload threshold (payload bytes).
    blobs: Option<(Arc<dyn crate::store::blob::BlobStore>, usize)>,
    producer: String,
    clock: SharedClock,
    audit: Option<crate::audit::Auditor>,
    /// Per-subject data keys, when the broker provides a key store.
    subject_keys: Option<Arc<SubjectKeys>>,
    /// Accept a keyring the broker's recorded check values do not know.
    accept_new_keyring: bool,
    /// Compare with (and record in) the broker's check values at all.
    check_keyring: bool,
    /// Set once the keyring was checked against (and recorded in) the
    /// broker's check values: before the first enqueue, once per client.
    keyring_recorded: tokio::sync::OnceCell<()>,
}

/// Builds a [`Client`].
#[derive(Debug)]
pub struct ClientBuilder {
    broker: Arc<dyn Broker>,
    keyring: Arc<Keyring>,
    policy: PayloadPolicy,
    blobs: Option<(Arc<dyn crate::store::blob::BlobStore>, usize)>,
    producer: Option<String>,
    clock: SharedClock,
    audit: Option<crate::audit::Auditor>,
    /// The subject key store, when given apart from the broker.
    subject_key_store: Option<Arc<dyn SubjectKeyStore>>,
    accept_new_keyring: bool,
    check_keyring: bool,
}

impl ClientBuilder {
    /// Where subject data keys live (default: the broker's own,
    /// `Broker::subject_key_store`). [`Client::from_stores`] sets it.
    pub fn subject_key_store(mut self, store: Arc<dyn SubjectKeyStore>) -> Self {
        self.subject_key_store = Some(store);
        self
    }

    /// Write an audit record for every task stored (`enqueued`, with the
    /// ciphertext's SHA-256 and size) and every policy refusal
    /// (`policy_rejected`, rule and field path only). Default: none.
    pub fn audit(mut self, auditor: crate::audit::Auditor) -> Self {
        self.audit = Some(auditor);
        self
    }

    /// Claim-check (see [`crate::blob`]): payloads larger than `threshold`
    /// serialized bytes are sealed into `store` and the task carries a small
    /// sealed claim. The queue's size budget then applies to what the broker
    /// stores, so these payloads pass it; the scanner still runs. Workers
    /// need the same store ([`crate::WorkerBuilder::blob_store`]).
    pub fn blob_store(
        mut self,
        store: Arc<dyn crate::store::blob::BlobStore>,
        threshold: usize,
    ) -> Self {
        self.blobs = Some((store, threshold));
        self
    }

    /// The producer id bound into every envelope (default `HOSTNAME:PID`).
    pub fn producer(mut self, id: impl Into<String>) -> Self {
        self.producer = Some(id.into());
        self
    }

    /// The payload policy (default: 64 KiB per payload, every scanner rule rejecting).
    pub fn policy(mut self, policy: PayloadPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Before its first enqueue a client compares its keyring with the
    /// check values the broker recorded and refuses a keyring that holds
    /// none of the deployment's keys ([`crate::keyring_check::stored`]);
    /// `true` accepts one, for a deliberate new deployment on an old broker
    /// (its values are then recorded beside the old ones). A key id the
    /// broker knows with another secret is refused all the same. Default
    /// `false`.
    pub fn accept_new_keyring(mut self, accept: bool) -> Self {
        self.accept_new_keyring = accept;
        self
    }

    /// Whether the client compares its keyring with the broker's recorded
    /// check values before its first enqueue and records its own (default
    /// `true`). Turn it off only for a throw-away keyring that must leave no
    /// trace in the broker (`sealq bench` and `sealq demo` do).
    pub fn check_keyring(mut self, check: bool) -> Self {
        self.check_keyring = check;
        self
    }

    /// The clock used for created-at and delays (tests).
    pub fn clock(mut self, clock: SharedClock) -> Self {
        self.clock = clock;
        self
    }

    /// Build the client.
    pub fn build(self) -> Client {
        let subject_keys = self
            .subject_key_store
            .or_else(|| self.broker.subject_key_store())
            .map(|store| Arc::new(SubjectKeys::new(store, &self.keyring)));
        Client {
            inner: Arc::new(Inner {
                subject_keys,
                broker: self.broker,
                keyring: self.keyring,
                policy: self.policy,
                blobs: self.blobs,
                producer: self
                    .producer
                    .unwrap_or_else(crate::model::id::default_process_id),
                clock: self.clock,
                audit: self.audit,
                accept_new_keyring: self.accept_new_keyring,
                check_keyring: self.check_keyring,
                keyring_recorded: tokio::sync::OnceCell::new(),
            }),
        }
    }
}

impl Client {
    /// Start building a client over `broker` sealing with `keyring`.
    pub fn builder(broker: Arc<dyn Broker>, keyring: impl Into<Arc<Keyring>>) -> ClientBuilder {
        ClientBuilder {
            broker,
            keyring: keyring.into(),
            policy: PayloadPolicy::default(),
            blobs: None,
            producer: None,
            clock: system_clock(),
            audit: None,
            subject_key_store: None,
            accept_new_keyring: false,
            check_keyring: true,
        }
    }

    /// Start building a client over a backend's whole [`Stores`]: its
    /// broker, its subject key store and, when it has one, its blob store
    /// (payloads over [`DEFAULT_OFFLOAD_THRESHOLD`] are offloaded; change
    /// it with [`ClientBuilder::blob_store`]). The audit log stays explicit
    /// ([`ClientBuilder::audit`]): an [`Auditor`](crate::audit::Auditor)
    /// runs a task of its own.
    pub fn from_stores(stores: &Stores, keyring: impl Into<Arc<Keyring>>) -> ClientBuilder {
        let mut builder = Client::builder(stores.broker.clone(), keyring);
        if let Some(keys) = &stores.subject_keys {
            builder = builder.subject_key_store(keys.clone());
        }
        if let Some(blobs) = &stores.blobs {
            builder = builder.blob_store(blobs.clone(), DEFAULT_OFFLOAD_THRESHOLD);
        }
        builder
    }

    /// The broker this client writes to.
    pub fn broker(&self) -> &Arc<dyn Broker> {
        &self.inner.broker
    }

    /// The keyring this client seals with.
    pub fn keyring(&self) -> &Arc<Keyring> {
        &self.inner.keyring
    }

    /// The auditor, if any ([`ClientBuilder::audit`]).
    pub fn auditor(&self) -> Option<&crate::audit::Auditor> {
        self.inner.audit.as_ref()
    }

    /// Per-subject data keys, if the broker keeps a key store.
    pub(crate) fn subject_keys(&self) -> Option<&Arc<SubjectKeys>> {
        self.inner.subject_keys.as_ref()
    }

    /// The claim-check store, if any.
    pub(crate) fn blob_store(&self) -> Option<&dyn crate::store::blob::BlobStore> {
        self.inner.blobs.as_ref().map(|(s, _)| &**s)
    }

    /// Now, by this client's clock (Unix ms).
    pub(crate) fn now_ms(&self) -> i64 {
        self.inner.clock.now_ms()
    }

    /// This client's producer id.
    pub fn producer(&self) -> &str {
        &self.inner.producer
    }

    /// Once per client, before its first enqueue: compare the keyring with
    /// the check values the broker recorded, refuse one that does not fit
    /// ([`Error::Keyring`], saying what to do) and record its own
    /// ([`crate::keyring_check::stored`]). A broker whose ACL does not let
    /// this role read them (a Redis user set up before they existed) is
    /// logged once and not asked again; other broker errors are returned
    /// (the next enqueue asks again).
    async fn check_keyring_once(&self) -> Result<()> {
        use crate::keyring_check::stored::{RecordOptions, check_recorded_keys};
        if !self.inner.check_keyring {
            return Ok(());
        }
        self.inner
            .keyring_recorded
            .get_or_try_init(|| async {
                let options = RecordOptions {
                    accept_new_keyring: self.inner.accept_new_keyring,
                    record: true,
                };
                match check_recorded_keys(&*self.inner.broker, &self.inner.keyring, options).await {
                    Ok(_) => Ok(()),
                    Err(Error::Broker(e))
                        if e.kind == crate::error::BrokerErrorKind::PermissionDenied =>
                    {
                        tracing::warn!(
                            error = %e,
                            "cannot read the keyring check values the broker records; enqueueing \
                             without comparing (grant the role the permissions in \
                             docs/redis-acl.md)"
                        );
                        Ok(())
                    }
                    Err(e) => Err(e),
                }
            })
            .await
            .map(|_| ())
    }

    /// Check, seal and enqueue one typed task; returns its id.
    ///
    /// Fails with [`Error::Duplicate`] (carrying the existing id) when the
    /// unique key is held, with [`Error::PolicyViolation`] or
    /// [`Error::PayloadTooLarge`] before anything is sealed or sent.
    pub async fn enqueue<T: Task>(&self, task: &T, options: EnqueueOptions) -> Result<TaskId> {
        self.enqueue_raw(RawTask::typed(task, options)?).await
    }

    /// Check, seal and enqueue one raw task; returns its id.
    pub async fn enqueue_raw(&self, task: RawTask) -> Result<TaskId> {
        let mut results = self.enqueue_batch(vec![task]).await?;
        results.pop().unwrap_or(Err(Error::Shutdown))
    }

    /// Check, seal and enqueue many tasks in one broker round trip.
    ///
    /// The outer error is a broker failure (nothing can be said about which
    /// tasks were stored only if the broker failed mid-way; SQLite and Redis
    /// apply a batch atomically). The inner results are per task, in order:
    /// a task refused by the policy or a unique key does not stop the others.
    pub async fn enqueue_batch(&self, tasks: Vec<RawTask>) -> Result<Vec<Result<TaskId>>> {
        let batch = self.prepare(tasks).await?;
        self.submit(batch, false).await
    }

    /// Check and seal `tasks` for a store the caller writes itself, as
    /// [`Client::enqueue_batch`] would before its broker call: the policy
    /// is applied (refusals audited as `policy_rejected`), subjects' data
    /// keys fetched, large payloads offloaded to the claim-check store, and
    /// the keyring checked against the broker's recorded check values. No
    /// `enqueued` record is written: the caller stores the tasks and their
    /// record ([`crate::audit::enqueued_event`]). Per task, in order.
    /// Used by a backend's transactional enqueue (`sealq_postgres::PostgresTxClient`).
    pub async fn seal_batch(&self, tasks: Vec<RawTask>) -> Result<Vec<Result<NewTask>>> {
        let Prepared { out, sealed, .. } = self.prepare(tasks).await?;
        if !sealed.is_empty() {
            self.check_keyring_once().await?;
        }
        let mut sealed = sealed.into_iter();
        Ok(out
            .into_iter()
            .map(|r| r.and_then(|_| sealed.next().ok_or(Error::Shutdown)))
            .collect())
    }

    /// Check and seal `tasks` (offloading large payloads): the first half of
    /// an enqueue, with nothing sent to the broker yet.
    async fn prepare(&self, tasks: Vec<RawTask>) -> Result<Prepared> {
        let data_keys = self.data_keys_for(&tasks).await?;
        let batch = self.seal_all(tasks, &data_keys);
        self.offload(batch, &data_keys).await
    }

    /// Check and seal each task; refusals are recorded in place.
    pub(super) fn seal_all(
        &self,
        tasks: Vec<RawTask>,
        data_keys: &HashMap<SubjectTag, Arc<DataKey>>,
    ) -> Prepared {
        let mut out: Vec<Result<TaskId>> = Vec::with_capacity(tasks.len());
        let mut sealed = Vec::with_capacity(tasks.len());
        let mut slots = Vec::with_capacity(tasks.len());
        for task in tasks {
            // Only with an auditor: what a policy refusal is recorded against.
            let names = self.inner.audit.as_ref().map(|_| {
                let q = task.options.queue.as_deref().unwrap_or(DEFAULT_QUEUE);
                (q.to_owned(), task.kind.clone())
            });
            match self.seal_with(task, data_keys) {
                Ok(new) => {
                    slots.push(out.len());
                    out.push(Ok(new.id));
                    sealed.push(new);
                }
                Err(e) => {
                    if let (Some(a), Some((q, k))) = (&self.inner.audit, &names)
                        && let Some(ev) = audit_hooks::policy_rejected(&e, q, k, self.producer())
                    {
                        a.record(ev);
                    }
                    out.push(Err(e));
                }
            }
        }
        Prepared { out, sealed, slots }
    }

    /// Move large sealed payloads to the claim-check store, if configured
    /// (those of tasks with a subject sealed with its data key, `data_keys`).
    pub(super) async fn offload(
        &self,
        mut batch: Prepared,
        data_keys: &HashMap<SubjectTag, Arc<DataKey>>,
    ) -> Result<Prepared> {
        if !batch.sealed.is_empty()
            && let Some((store, threshold)) = &self.inner.blobs
        {
            crate::blob::offload_all(
                &**store,
                &self.inner.keyring,
                data_keys,
                *threshold,
                &mut batch.sealed,
            )
            .await?;
        }
        Ok(batch)
    }

    /// Store prepared tasks in one broker call; the second half of an
    /// enqueue. `bulk`: a batch of [`Client::enqueue_bulk`], sent with
    /// [`Broker::enqueue_bulk_batch`].
    ///
    /// [`Broker::enqueue_bulk_batch`]: crate::store::broker::Broker::enqueue_bulk_batch
    async fn submit(&self, batch: Prepared, bulk: bool) -> Result<Vec<Result<TaskId>>> {
        let Prepared {
            mut out,
            sealed,
            slots,
        } = batch;
        if sealed.is_empty() {
            return Ok(out);
        }
        // An audit log that cannot keep up slows enqueueing down rather
        // than holding ever more records in memory.
        if let Some(a) = &self.inner.audit {
            a.wait_for_room().await;
        }
        let call = EnqueueCall::new(&sealed, &slots, self.inner.audit.is_some());
        self.check_keyring_once().await?;
        let span = crate::store::spans::enqueue(&sealed);
        let broker = &self.inner.broker;
        let stored = if bulk {
            broker.enqueue_bulk_batch(sealed)
        } else {
            broker.enqueue(sealed)
        };
        let results = stored
            .instrument(span)
            .await
            .inspect_err(|e| metric::broker_error("enqueue", e))?;
        let accepted = settle_enqueue(
            call,
            results,
            &mut out,
            self.producer(),
            self.inner.audit.as_ref(),
        );
        if let Some(a) = &self.inner.audit {
            a.on_enqueued(self.producer(), accepted);
        }
        Ok(out)
    }

    /// The data keys of every subject named in `tasks` (created on first use).
    pub(super) async fn data_keys_for(
        &self,
        tasks: &[RawTask],
    ) -> Result<HashMap<SubjectTag, Arc<DataKey>>> {
        let tags: Vec<SubjectTag> = tasks
            .iter()
            .filter_map(|t| t.options.subject.as_deref())
            .map(|s| self.inner.keyring.subject_tag(s))
            .collect();
        if tags.is_empty() {
            return Ok(HashMap::new());
        }
        let Some(store) = &self.inner.subject_keys else {
            return Err(Error::Config(format!(
                "{} keeps no subject keys, so a task with a subject cannot be sealed for erasure; \
                 use a broker with a subject key store or enqueue without a subject",
                self.inner.broker.describe()
            )));
        };
        store.for_seal_many(&tags).await
    }

    /// Apply the policy and seal one task, without sending it. A task with a
    /// subject is sealed with the subject's data key: seal those with
    /// [`Client::seal_async`] (this method refuses them).
    pub fn seal(&self, task: RawTask) -> Result<NewTask> {
        self.seal_with(task, &HashMap::new())
    }

    /// [`Client::seal`] for any task, fetching or creating the subject's data key.
    pub async fn seal_async(&self, task: RawTask) -> Result<NewTask> {
        let keys = self.data_keys_for(std::slice::from_ref(&task)).await?;
        self.seal_with(task, &keys)
    }

    fn seal_with(
        &self,
        task: RawTask,
        data_keys: &HashMap<SubjectTag, Arc<DataKey>>,
    ) -> Result<NewTask> {
        let RawTask {
            kind,
            payload,
            options,
        } = task;
        let queue = options
            .queue
            .clone()
            .unwrap_or_else(|| DEFAULT_QUEUE.to_owned());
        validate_queue_name(&queue)?;
        validate_kind(&kind)?;
        let checked = match &self.inner.blobs {
            Some((_, threshold)) => {
                crate::blob::check_policy(&self.inner.policy, *threshold, &queue, &payload)
            }
            None => self.inner.policy.check(&queue, &payload),
        };
        if let Err(e) = &checked {
            metric::policy_rejected(&queue, rejected_rule(e));
        }
        checked?;

        let now = self.inner.clock.now_ms();
        let run_at_ms = options
            .run_at_ms
            .or_else(|| {
                options
                    .delay
                    .map(|d| now.saturating_add(duration_ms(d) as i64))
            })
            .unwrap_or(now);
        let subject_tag = options
            .subject
            .as_deref()
            .map(|s| self.inner.keyring.subject_tag(s));
        let timeout_ms = Some(duration_ms(options.timeout.unwrap_or(DEFAULT_TIMEOUT)));
        let max_retries = options.max_retries.unwrap_or(DEFAULT_MAX_RETRIES);
        let backoff = options.backoff.unwrap_or_default();
        // Every envelope binds an expiry (see `DEFAULT_EXPIRY`), counted from
        // the earliest start so a task scheduled far ahead is not born expired.
        let not_after_ms = options.not_after_ms.unwrap_or_else(|| {
            default_not_after_ms(run_at_ms.max(now), max_retries, &backoff, timeout_ms)
        });
        let meta = TaskMeta {
            producer: self.inner.producer.clone(),
            created_at_ms: now,
            not_after_ms: Some(not_after_ms),
            deadline_ms: options.deadline_ms,
            timeout_ms,
            max_retries,
            backoff,
            retention_ms: duration_ms(options.retention.unwrap_or(DEFAULT_RETENTION)),
            subject_tag,
            // The start the producer asked for is sealed: a broker that runs
            // the task earlier is refused by the worker.
            not_before_ms: (run_at_ms > now).then_some(run_at_ms),
        };
        let id = options.id.unwrap_or_default();
        let aad = Aad::new(Purpose::Payload, id, &queue, &kind, &meta);
        let envelope = match &meta.subject_tag {
            Some(tag) => match data_keys.get(tag) {
                Some(key) => match &options.trace_parent {
                    Some(trace) => key.seal_traced(&aad, trace, &payload)?,
                    None => key.seal(&aad, &payload)?,
                },
                None if self.inner.subject_keys.is_some() => {
                    return Err(Error::InvalidArgument {
                        what: "task",
                        reason: "a task with a subject is sealed with the subject's data key: \
                                 use Client::seal_async or Client::enqueue"
                            .into(),
                    });
                }
                None => {
                    return Err(Error::Config(format!(
                        "{} keeps no subject keys, so a task with a subject cannot be sealed for erasure",
                        self.inner.broker.describe()
                    )));
                }
            },
            None => match &options.trace_parent {
                Some(trace) => self.inner.keyring.seal_traced(&aad, trace, &payload)?,
                None => self.inner.keyring.seal(&aad, &payload)?,
            },
        };
        // The plaintext copy is no longer needed; wipe it.
        zeroize::Zeroize::zeroize(&mut { payload });
        Ok(NewTask {
            id,
            queue,
            kind,
            envelope,
            meta,
            run_at_ms,
            unique: options.unique.map(|(k, ttl)| (k, duration_ms(ttl))),
        })
    }
}

/// Tasks checked and sealed, not yet sent ([`Client::prepare`]).
pub(super) struct Prepared {
    /// Per task, in order: its id, or why it was refused before sealing.
    pub(super) out: Vec<Result<TaskId>>,
    /// The sealed tasks, in order.
    pub(super) sealed: Vec<NewTask>,
    /// Where each sealed task's result goes in `out`.
    pub(super) slots: Vec<usize>,
}

/// The rule a refusal before sealing is counted under: the scanner rule,
/// `size_budget`, `decode` (not one MessagePack value) or `invalid` (a bad
/// queue or type name never reaches the policy).
fn rejected_rule(e: &Error) -> &str {
    match e {
        Error::PolicyViolation { rule, .. } => rule,
        Error::PayloadTooLarge { .. } => "size_budget",
        Error::Codec { .. } => "decode",
        _ => "other",
    }
}
