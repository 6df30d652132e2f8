//! # Operator actions
//!
//! Revealing a payload, deleting and re-running tasks (by id, or in bulk by
//! a filter: [`bulk`]), pausing and resuming
//! queues, depth caps and rate limits, re-sealing after a key rotation,
//! erasing a subject and checking a key before its removal. They are the only
//! way anything outside the client and the worker changes stored state, and
//! each writes an audit record naming the operator. They are methods of
//! [`Client`] (the CLI, and later the gateway and dashboard, call these and
//! nothing lower).

pub mod bulk;
mod erase;
pub mod finalise;
mod keys;
mod queues;
pub mod reseal;
mod reveal;
mod tasks;

use crate::client::Client;
use crate::error::{Error, Result};
use crate::model::audit_event::AuditEvent;

pub use bulk::{BulkAction, BulkOptions, BulkReport, TaskFilter};
pub use erase::EraseOptions;
pub use finalise::FinaliseReport;
pub use keys::KeyUsage;
pub use reveal::Revealed;

impl Client {
    /// Record `event` and wait until it is written: an operator action is
    /// reported done only once its audit record is stored.
    pub(crate) async fn audit_now(&self, event: AuditEvent) -> Result<()> {
        if let Some(a) = self.auditor() {
            a.record(event);
            a.flush()
                .await
                .map_err(|e| Error::Audit(format!("the audit record was not written: {e}")))?;
        }
        Ok(())
    }
}
