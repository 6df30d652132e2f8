//! # The storage seams
//!
//! Four traits, one per kind of thing sealq stores, and the [`Stores`]
//! bundle a backend hands out whole. The client, the worker, the audit log,
//! erasure and the admin actions sit above them and never know which
//! backend is below; every backend passes the same conformance suite
//! (`sealq::testkit`, feature `testkit`).
//!
//! - [`Broker`] ([`broker`]): sealed tasks and their state machine.
//! - [`SubjectKeyStore`] ([`subject_keys`]): wrapped per-subject data keys,
//!   kept apart from the tasks so erasure can destroy them.
//! - [`BlobStore`] ([`blob`]): offloaded (claim-checked) sealed payloads.
//! - [`AuditSink`] ([`audit`]): the audit log's records and checkpoints.
//! - `spans`: the `tracing` spans around the broker calls of a task's life.
//!
//! This layer holds traits and their request and response types only; it
//! imports [`crate::model`], [`crate::seal`] (audit record formats) and the
//! error type.

pub mod audit;
pub mod blob;
pub mod broker;
pub(crate) mod spans;
mod stores;
pub mod subject_keys;
mod url;

pub use audit::AuditSink;
pub use blob::BlobStore;
pub use broker::Broker;
pub use stores::Stores;
pub use subject_keys::SubjectKeyStore;
pub use url::redact_url;
