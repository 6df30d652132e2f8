//! # The model: what a task is, with no behaviour that needs a key or a store
//!
//! The leaf of the crate: everything above (sealing, storage, the client,
//! the worker, the admin actions) speaks in these types, and nothing here
//! imports anything of sealq but the error type.
//!
//! - [`id`]: [`TaskId`], [`SubjectTag`], the default process id.
//! - [`task`]: the typed [`Task`] trait, [`TaskMeta`] (the clear metadata),
//!   the payload wire form.
//! - [`options`]: [`EnqueueOptions`], defaults and name rules.
//! - [`backoff`]: [`Backoff`], the retry delay policy.
//! - [`state`]: [`TaskState`] and [`ArchiveReason`].
//! - [`record`]: [`NewTask`] and [`TaskRecord`], a task as stored.
//! - [`counts`]: [`QueueStats`], [`ErasureCounts`], [`ErasureReceipt`].
//! - [`key_check`]: [`key_check::KeyCheck`], a sealing key's check value.
//! - [`live_worker`]: [`live_worker::LiveWorker`], a worker as the broker's
//!   registry of live workers lists it.
//! - [`audit_event`]: [`AuditEvent`], what the audit log says happened.
//! - [`clock`]: the [`Clock`] that dates everything.
//! - [`unix_ms`]: [`UnixMs`], a time from a `SystemTime`, a
//!   `jiff::Timestamp` or Unix milliseconds.
//! - [`trace_parent`]: [`trace_parent::TraceParent`], a W3C trace context.
//! - `hex`: lowercase hex for ids and digests.

pub mod audit_event;
pub mod backoff;
pub mod clock;
pub mod counts;
pub(crate) mod hex;
pub mod id;
pub mod key_check;
pub mod live_worker;
pub mod options;
pub mod record;
pub mod state;
pub mod task;
pub mod trace_parent;
pub mod unix_ms;

pub use audit_event::AuditEvent;
pub use backoff::Backoff;
pub use clock::Clock;
pub use counts::{ErasureCounts, ErasureReceipt, QueueStats};
pub use id::{SubjectTag, TaskId};
pub use options::EnqueueOptions;
pub use record::{NewTask, TaskRecord};
pub use state::{ArchiveReason, TaskState};
pub use task::{Task, TaskMeta, TaskPolicy};
pub use unix_ms::UnixMs;
