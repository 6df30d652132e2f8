//! The [`AuditSink`] trait: where the audit log's records and signed
//! checkpoints are appended and read back.

use async_trait::async_trait;

use crate::seal::audit_chain::{AuditRecord, Checkpoint};

/// A storage failure of an audit sink. The message names the sink and what
/// failed; never a secret.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct AuditError {
    /// What failed.
    pub message: String,
    /// The underlying error.
    #[source]
    pub source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

impl AuditError {
    /// An error with a message.
    pub fn new(message: impl Into<String>) -> Self {
        AuditError {
            message: message.into(),
            source: None,
        }
    }

    /// Attach the cause.
    pub fn with_source(mut self, e: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(e));
        self
    }
}

/// One item read back from a sink, with where it was found: a 1-based line
/// number for files, a row id for tables. An item that does not parse is
/// kept as `Err(reason)` so verification can name it.
#[derive(Debug, Clone)]
pub struct Loaded<T> {
    /// Line number or row id.
    pub position: u64,
    /// The parsed item, or why it could not be parsed.
    pub item: Result<T, String>,
}

impl<T: serde::de::DeserializeOwned> Loaded<T> {
    /// Parse one JSON line found at `position`.
    pub fn parse(position: u64, line: &[u8]) -> Self {
        let item = serde_json::from_slice::<T>(line).map_err(|e| {
            let text = e.to_string();
            // serde_json appends " at line 1 column N"; keep the column only.
            match text.rfind(" at line ") {
                Some(i) => format!("{} (column {})", &text[..i], e.column()),
                None => text,
            }
        });
        Loaded { position, item }
    }
}

/// Storage for audit records and checkpoints.
///
/// Appends must be durable when they return (the [`Auditor`](crate::audit::Auditor) calls
/// them with whole batches, so one sync per batch is the expected cost) and
/// must never rewrite what is stored. Records and checkpoints should live in
/// different places (two files, two tables, two streams), so that cutting
/// one is caught by the other.
#[async_trait]
pub trait AuditSink: Send + Sync + std::fmt::Debug + 'static {
    /// Append records, in order.
    async fn append_records(&self, records: &[AuditRecord]) -> Result<(), AuditError>;
    /// Append one checkpoint.
    async fn append_checkpoint(&self, checkpoint: &Checkpoint) -> Result<(), AuditError>;
    /// Every stored record in storage order, unparseable ones included.
    async fn read_records(&self) -> Result<Vec<Loaded<AuditRecord>>, AuditError>;
    /// Every stored checkpoint in storage order; `None` when the checkpoint
    /// store itself is missing (deleted), which verification reports.
    async fn read_checkpoints(&self) -> Result<Option<Vec<Loaded<Checkpoint>>>, AuditError>;
    /// A short human description (path, table) for messages.
    fn describe(&self) -> String;
    /// This sink as [`std::any::Any`], for a backend that must know whether
    /// a sink is its own (a Postgres transactional enqueue writes its audit
    /// records in the caller's transaction only to the Postgres sink).
    /// Default `None`: no sink has to say.
    fn as_any(&self) -> Option<&dyn std::any::Any> {
        None
    }
}
