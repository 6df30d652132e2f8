//! # sealq: a task queue whose tasks are sealed
//!
//! A payload is encrypted and bound to its task before it leaves the producer,
//! so the broker (an SQLite file or Redis) only ever holds ciphertext it can
//! neither read, forge nor move. `docs/threat-model.md` says what someone
//! with write access to the broker can still do.
//!
//! ## A tour
//!
//! - [`Task`]: a payload type with a type name. [`EnqueueOptions`] carry queue,
//!   delay, retries, uniqueness, subject, expiry.
//! - [`Keyring`]: named keys, one primary. No keyring, no start.
//! - [`envelope`]: the sealed bytes and what they are bound to.
//! - [`PayloadPolicy`]: size budgets and a scanner that refuses card numbers,
//!   private keys, cloud keys and tokens before anything is sealed.
//! - [`store`]: the storage seams ([`Broker`], subject keys, blobs, audit
//!   sink) and the [`Stores`] bundle a backend hands out; `sealq-sqlite` is
//!   the embedded default, `sealq-connect` opens any backend from a URL.
//! - [`admin`]: the operator actions, each audited.
//! - [`Client`]: policy check, seal, enqueue (one round trip per batch).
//! - [`Worker`]: lease, open, run the handler, ack; retries, timeouts,
//!   heartbeats, graceful shutdown.
//! - [`audit`]: the HMAC-chained, checkpoint-signed audit log ([`Auditor`]).
//! - [`mod@metrics`]: what sealq counts (`sealq_*`), and a Prometheus
//!   exporter in one call (feature `prometheus`); [`health`]: liveness and
//!   readiness checks, served over [`http`].
//! - [`Ref`] and [`Resolver`]: identifiers in payloads, resolved in the
//!   handler with timeout, cache, single-flight and metrics ([`mod@reference`]).
//!
//! The modules sit in layers, each importing only from those below it:
//! [`model`] (what a task is), [`seal`] (keys and sealed bytes), [`store`]
//! (the seams), the services ([`audit`], [`blob`], [`subject_keys`],
//! [`keyring_check`], [`mod@reference`]), the client, the [`worker`], then
//! [`scheduler`] and [`admin`]. `docs/internals.md` in the repository draws
//! them and follows one task through the code.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

// The modules sit in layers (docs/internals.md); `tests/layers.rs` lists
// them bottom up and checks that each imports only from those below it.
pub mod admin;
pub mod audit;
pub mod blob;
pub mod client;
mod error;
pub mod health;
pub mod http;
pub mod keyring_check;
pub mod metrics;
pub mod model;
pub mod policy;
pub mod reference;
pub mod scheduler;
pub mod seal;
pub mod store;
pub mod subject_keys;
#[cfg(feature = "testkit")]
pub mod testkit;
pub mod worker;

// Paths from before the layers were drawn, kept for users.
pub use admin::reseal;
pub use model::{backoff, clock, options};
pub use seal::{envelope, keyring};
pub use store::broker;

/// The task model: ids, states, archive reasons, the [`Task`] trait and the
/// clear metadata (now in [`model`]; this path is kept for users).
pub mod task {
    pub use crate::model::id::{SubjectTag, TaskId};
    pub use crate::model::state::{ArchiveReason, TaskState};
    pub use crate::model::task::{Task, TaskMeta, TaskPolicy, decode_payload, encode_payload};
}

pub use admin::{
    BulkAction, BulkOptions, BulkReport, EraseOptions, FinaliseReport, KeyUsage, Revealed,
    TaskFilter,
};
pub use audit::{AuditEvent, AuditSink, Auditor};
pub use client::{Client, ClientBuilder, RawTask, TaskOutcome};
#[doc(hidden)]
pub use error::fmt_with_causes;
pub use error::{BrokerError, BrokerErrorKind, Error, IntegrityError, Result};
pub use model::backoff::Backoff;
pub use model::clock::{Clock, SystemClock};
pub use model::id::{SubjectTag, TaskId};
pub use model::live_worker::LiveWorker;
pub use model::options::EnqueueOptions;
pub use model::state::{ArchiveReason, TaskState};
pub use model::task::{Task, TaskMeta, TaskPolicy};
pub use model::trace_parent::TraceParent;
pub use model::unix_ms::UnixMs;
pub use policy::{Finding, PayloadPolicy, PolicyMode, Rule};
pub use reference::{
    CacheOptions, PayloadStats, Ref, ResolveError, Resolver, ResolverOptions, Resolvers,
    payload_report,
};
pub use scheduler::{Scheduler, SchedulerBuilder, SchedulerHandle};
pub use seal::keyring::Keyring;
pub use store::{Broker, Stores};
pub use worker::{
    Failure, HandlerResult, Priority, RawPayload, TaskContext, TaskError, Worker, WorkerBuilder,
    WorkerHandle, WorkerReport,
};
