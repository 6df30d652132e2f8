//! # sealq: a task queue whose tasks are sealed
//!
//! A payload is encrypted and bound to its task before it leaves the producer,
//! so the broker (an SQLite file, Redis, Postgres) only ever holds ciphertext
//! it can neither read, forge, replay nor move.
//!
//! ## A tour
//!
//! - [`Task`]: a payload type with a type name. [`EnqueueOptions`] carry queue,
//!   delay, retries, uniqueness, subject, expiry.
//! - [`Keyring`]: named keys, one primary. No keyring, no start.
//! - [`envelope`]: the sealed bytes and what they are bound to.
//! - [`PayloadPolicy`]: size budgets and a scanner that refuses card numbers,
//!   private keys, cloud keys and tokens before anything is sealed.
//! - [`Broker`]: the storage seam; `sealq-sqlite` is the embedded default.
//! - [`Client`]: policy check, seal, enqueue (one round trip per batch).
//! - [`Worker`]: lease, open, run the handler, ack; retries, timeouts,
//!   heartbeats, graceful shutdown.
//! - [`audit`]: the HMAC-chained, checkpoint-signed audit log ([`Auditor`]).
//! - [`Ref`] and [`Resolver`]: identifiers in payloads, resolved in the
//!   handler with timeout, cache, single-flight and metrics ([`mod@reference`]).
//!
//! `docs/internals.md` in the repository follows one task through the code.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod audit;
pub mod backoff;
pub mod blob;
pub mod broker;
mod client;
pub mod clock;
pub mod envelope;
mod error;
mod hexfmt;
pub mod keyring;
mod operator;
pub mod options;
pub mod policy;
pub mod reference;
pub mod reseal;
pub mod scheduler;
pub mod subject_keys;
pub mod task;
#[cfg(feature = "testkit")]
pub mod testkit;
pub mod worker;

pub use audit::{AuditEvent, AuditSink, Auditor};
pub use backoff::Backoff;
pub use broker::Broker;
pub use client::{Client, ClientBuilder, RawTask};
pub use clock::{Clock, SystemClock};
pub use error::{BrokerError, BrokerErrorKind, Error, IntegrityError, Result};
pub use keyring::Keyring;
pub use operator::Revealed;
pub use options::EnqueueOptions;
pub use policy::{Finding, PayloadPolicy, PolicyMode, Rule};
pub use reference::{
    CacheOptions, PayloadStats, Ref, ResolveError, Resolver, ResolverOptions, Resolvers,
    payload_report,
};
pub use scheduler::{Scheduler, SchedulerBuilder, SchedulerHandle};
pub use task::{ArchiveReason, SubjectTag, Task, TaskId, TaskMeta, TaskState};
pub use worker::{
    Failure, HandlerResult, Priority, RawPayload, TaskContext, TaskError, Worker, WorkerBuilder,
    WorkerHandle, WorkerReport,
};
