//! Identifiers: a task's id, a subject's keyed tag, a process's id.
//!
//! A leaf: parsing a [`TaskId`] from text (`FromStr`) is implemented beside
//! the error type it returns, in `crate::error`.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A task's id: a UUID v7 (time-sortable). It is the idempotency key handlers
/// can rely on: delivery is at-least-once, and every delivery of one task
/// carries the same id.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TaskId(pub uuid::Uuid);

impl TaskId {
    /// A fresh, time-ordered id.
    pub fn new() -> Self {
        TaskId(uuid::Uuid::now_v7())
    }

    /// The 16 raw bytes (used in associated data).
    pub fn as_bytes(&self) -> &[u8; 16] {
        self.0.as_bytes()
    }
}

impl Default for TaskId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl fmt::Debug for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TaskId({})", self.0)
    }
}

/// A keyed hash (HMAC-SHA-256) of a subject id. Lets the broker find a
/// subject's tasks without learning who the subject is.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SubjectTag(pub [u8; 32]);

impl SubjectTag {
    /// Lowercase hex, for storage and display.
    pub fn to_hex(&self) -> String {
        crate::model::hex::encode(self.0)
    }

    /// Parse from 64 hex characters.
    pub fn from_hex(s: &str) -> Option<Self> {
        let v = hex::decode(s).ok()?;
        Some(SubjectTag(v.try_into().ok()?))
    }
}

impl fmt::Debug for SubjectTag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SubjectTag({}…)", &self.to_hex()[..12])
    }
}

/// `host:pid`, used as default producer and worker id.
pub fn default_process_id() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|s| s.trim().to_owned())
        })
        .unwrap_or_else(|| "localhost".to_owned());
    format!("{host}:{}", std::process::id())
}
