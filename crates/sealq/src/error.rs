//! The one error type of the `sealq` library.
//!
//! Variants are grouped by who is at fault, so a caller can decide what to do
//! without parsing messages: bad input from the caller, an integrity failure
//! (someone or something changed stored bytes), an unavailable or failing
//! broker, or a misuse of the API / configuration. Messages say what was wrong
//! and what to do about it; they never contain a payload, a result or a key.

use crate::model::id::TaskId;

/// Errors returned by sealq.
///
/// `Debug` writes the same helpful message as `Display`, so a program whose
/// `main` returns `sealq::Result<()>` (or a boxed error) prints
/// `Error: no keyring configured: pass --keyring PATH, ...` rather than
/// `Error: NoKeyring`. Neither form holds a payload, a result or a key.
#[derive(thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    // ---- bad input -------------------------------------------------------
    /// The serialized payload is larger than the queue's budget.
    #[error(
        "payload of {size} bytes exceeds the {limit}-byte limit of queue `{queue}`; \
         put an identifier in the payload and fetch the data in the handler (see sealq::Ref)"
    )]
    PayloadTooLarge {
        /// Queue the task was meant for.
        queue: String,
        /// Serialized payload size in bytes.
        size: usize,
        /// The queue's limit in bytes.
        limit: usize,
    },
    /// The payload policy found sensitive data. Names the rule and the field, never the value.
    ///
    /// The message and `path` reach logs and the append-only audit log, so
    /// they carry no data: a map key is shown only when it is shaped like a
    /// field name, any other (an e-mail address, a phone number, an id ...)
    /// as `<key#i>`, its position in its map (see `sealq::policy`, "Field
    /// paths never carry data").
    #[error("payload rejected by policy rule `{rule}` at field `{path}`{detail}")]
    PolicyViolation {
        /// The rule that matched (for example `card_number`).
        rule: String,
        /// Path of the offending field inside the payload (for example
        /// `customer.card`, or `by_user.<key#0>.card` when the key under
        /// `by_user` is not shaped like a field name).
        path: String,
        /// Extra non-secret detail (for example `, card ending 4242`); may be empty.
        detail: String,
    },
    /// A payload or result could not be encoded or decoded.
    #[error("cannot encode or decode {what}: {reason}")]
    Codec {
        /// What was being encoded (payload, result ...).
        what: &'static str,
        /// The serializer's message (never contains the value).
        reason: String,
    },
    /// An argument was invalid (queue name, option value, URL ...).
    #[error("invalid {what}: {reason}")]
    InvalidArgument {
        /// What was invalid.
        what: &'static str,
        /// Why, and how to fix it.
        reason: String,
    },
    /// A task with this unique key already exists; carries the existing id.
    #[error("a task with unique key `{key}` already exists: {existing}")]
    Duplicate {
        /// The unique key that collided.
        key: String,
        /// The id of the task that holds the key.
        existing: TaskId,
    },
    /// A task with this id already exists (or already completed: replay).
    #[error("task id {0} already exists")]
    IdExists(TaskId),
    /// The queue holds its maximum of waiting tasks; the task was not stored.
    #[error(
        "queue `{queue}` is full: it holds its maximum of {max_depth} waiting tasks; \
         try again later (or raise the cap: `sealq queues limit`)"
    )]
    QueueFull {
        /// The queue.
        queue: String,
        /// Its cap on waiting tasks.
        max_depth: u64,
    },
    /// No task with this id.
    #[error("task {0} not found")]
    NotFound(TaskId),

    // ---- integrity -------------------------------------------------------
    /// A sealed envelope failed to open or verify.
    #[error("integrity failure: {0}")]
    Integrity(#[from] IntegrityError),

    // ---- keys and configuration -------------------------------------------
    /// No keyring was configured. sealq never falls back to plaintext.
    #[error(
        "no keyring configured: pass --keyring PATH, set SEALQ_KEYRING=PATH or SEALQ_KEYRING_TOML; \
         create one with `sealq keys generate > keyring.toml` (sealq never runs without encryption)"
    )]
    NoKeyring,
    /// The keyring could not be loaded or is invalid.
    #[error("invalid keyring: {0}")]
    Keyring(String),
    /// Invalid configuration.
    #[error("invalid configuration: {0}")]
    Config(String),

    // ---- broker ----------------------------------------------------------
    /// The broker failed or is unavailable.
    #[error("broker error: {0}")]
    Broker(#[from] BrokerError),

    // ---- audit -----------------------------------------------------------
    /// The audit log could not be written; what it was about still happened.
    #[error("audit log: {0}")]
    Audit(String),

    // ---- runtime ---------------------------------------------------------
    /// The worker or client was shut down.
    #[error("shut down")]
    Shutdown,
    /// A wait for a task's outcome (`Client::wait_result`) ended before the
    /// task finished (completed or archived). It may still finish: wait
    /// again, or read it later with `Client::result`.
    #[error("task {task} did not finish in {waited_ms} ms: it is still {state}")]
    WaitTimedOut {
        /// The task.
        task: TaskId,
        /// Its state when the wait ended (`pending`, `active`, `retry` …).
        state: &'static str,
        /// How long the wait lasted, ms.
        waited_ms: u64,
    },
}

impl std::fmt::Debug for Error {
    /// The `Display` message, then each cause it does not already say (see
    /// [`Error`]).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        fmt_with_causes(self, f)
    }
}

/// Write `error`'s message, then `: cause` for each error of its
/// [`source`](std::error::Error::source) chain whose text the message so
/// far does not already contain: the `Debug` form of sealq's errors, so
/// that `fn main() -> Result<(), E>` prints the helpful message and its
/// causes (`Error: broker error: broker unavailable: cannot connect:
/// Connection refused`) rather than a variant name. Other crates of the
/// workspace use it for their error types too.
#[doc(hidden)]
pub fn fmt_with_causes(
    error: &dyn std::error::Error,
    f: &mut std::fmt::Formatter<'_>,
) -> std::fmt::Result {
    let mut said = error.to_string();
    f.write_str(&said)?;
    let mut cause = error.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !text.is_empty() && !said.contains(&text) {
            write!(f, ": {text}")?;
            said.push_str(": ");
            said.push_str(&text);
        }
        cause = c.source();
    }
    Ok(())
}

/// Why a sealed envelope could not be opened. Never carries plaintext.
///
/// `Debug` writes the `Display` message, as [`Error`]'s does.
#[derive(Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IntegrityError {
    /// Shorter than the fixed header, or a length field points past the end.
    #[error("envelope truncated ({len} bytes)")]
    Truncated {
        /// Length of the bytes seen.
        len: usize,
    },
    /// Unknown format version byte.
    #[error("unsupported envelope version {0}")]
    UnsupportedVersion(u8),
    /// Unknown algorithm byte.
    #[error("unsupported envelope algorithm {0}")]
    UnsupportedAlgorithm(u8),
    /// The header names a key id the keyring does not hold.
    #[error(
        "envelope sealed with unknown key id `{0}`; add that key to the keyring (open-only) to read it"
    )]
    UnknownKey(String),
    /// Authentication failed: wrong key, edited bytes, or the task's identity
    /// (id, queue, type, producer, times, subject) does not match what was sealed.
    #[error("authentication failed (wrong key, tampered bytes, or task moved/renamed)")]
    Tampered,
    /// The envelope is past its not-after time.
    #[error("envelope expired")]
    Expired,
    /// A task id that already completed came back.
    #[error("task already completed (replay)")]
    Replay,
}

/// A broker failure, without backend types in the signature.
///
/// `Debug` writes the `Display` message and its causes, as [`Error`]'s does.
#[derive(thiserror::Error)]
#[error("{kind}: {message}")]
pub struct BrokerError {
    /// Class of the failure.
    pub kind: BrokerErrorKind,
    /// What happened and, where possible, what to do.
    pub message: String,
    /// The underlying error, if any.
    #[source]
    pub source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

impl std::fmt::Debug for IntegrityError {
    /// The `Display` message.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

impl std::fmt::Debug for BrokerError {
    /// The `Display` message, then its causes.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        fmt_with_causes(self, f)
    }
}

/// Class of a [`BrokerError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum BrokerErrorKind {
    /// The broker cannot be reached or is busy; retrying later may succeed.
    Unavailable,
    /// Stored data is corrupt or not a sealq store.
    Corrupt,
    /// Permission denied by the backend.
    PermissionDenied,
    /// The backend was configured wrongly (URL, options, schema version).
    Config,
    /// This backend does not offer the operation (yet): nothing was done.
    Unsupported,
    /// Anything else.
    Other,
}

impl std::fmt::Display for BrokerErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Unavailable => "broker unavailable",
            Self::Corrupt => "broker data corrupt",
            Self::PermissionDenied => "permission denied",
            Self::Config => "broker misconfigured",
            Self::Unsupported => "not supported by this broker",
            Self::Other => "broker failure",
        })
    }
}

impl BrokerError {
    /// A new error of `kind` with a message.
    pub fn new(kind: BrokerErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            source: None,
        }
    }

    /// Attach the underlying cause.
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }
}

/// Result alias for sealq.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Parsing a task id from its text form; lives here so that `model::id`
/// needs nothing of the error type.
impl std::str::FromStr for TaskId {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        uuid::Uuid::parse_str(s)
            .map(TaskId)
            .map_err(|e| Error::InvalidArgument {
                what: "task id",
                reason: format!("`{s}` is not a UUID: {e}"),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_says_what_display_says() {
        // What `fn main() -> sealq::Result<()>` prints after `Error: `.
        let debug = format!("{:?}", Error::NoKeyring);
        assert_eq!(debug, Error::NoKeyring.to_string());
        assert!(debug.contains("SEALQ_KEYRING") && debug.contains("--keyring"));
        assert!(!debug.contains("NoKeyring"));
    }

    /// One value of every variant. The match has no wildcard: a new variant
    /// does not compile until it is added here.
    fn every_variant() -> Vec<Error> {
        let id = TaskId(uuid::Uuid::nil());
        let all = vec![
            Error::PayloadTooLarge {
                queue: "q".into(),
                size: 70_000,
                limit: 65_536,
            },
            Error::PolicyViolation {
                rule: "card_number".into(),
                path: "customer.card".into(),
                detail: ", card ending 4242".into(),
            },
            Error::Codec {
                what: "payload",
                reason: "invalid type".into(),
            },
            Error::InvalidArgument {
                what: "queue name",
                reason: "`a b` has a space".into(),
            },
            Error::Duplicate {
                key: "k".into(),
                existing: id,
            },
            Error::IdExists(id),
            Error::QueueFull {
                queue: "q".into(),
                max_depth: 10,
            },
            Error::NotFound(id),
            Error::Integrity(IntegrityError::Tampered),
            Error::NoKeyring,
            Error::Keyring("bad key".into()),
            Error::Config("bad option".into()),
            Error::Broker(
                BrokerError::new(BrokerErrorKind::Unavailable, "cannot connect")
                    .with_source(std::io::Error::other("Connection refused")),
            ),
            Error::Audit("disk full".into()),
            Error::Shutdown,
            Error::WaitTimedOut {
                task: id,
                state: "pending",
                waited_ms: 100,
            },
        ];
        for e in &all {
            match e {
                Error::PayloadTooLarge { .. }
                | Error::PolicyViolation { .. }
                | Error::Codec { .. }
                | Error::InvalidArgument { .. }
                | Error::Duplicate { .. }
                | Error::IdExists(_)
                | Error::QueueFull { .. }
                | Error::NotFound(_)
                | Error::Integrity(_)
                | Error::NoKeyring
                | Error::Keyring(_)
                | Error::Config(_)
                | Error::Broker(_)
                | Error::Audit(_)
                | Error::Shutdown
                | Error::WaitTimedOut { .. } => {}
            }
        }
        all
    }

    #[test]
    fn rough_edge_main_prints_the_message_of_every_variant() {
        // `fn main() -> Result<(), sealq::Error>` prints `Error: {:?}`.
        for e in every_variant() {
            let printed = format!("Error: {e:?}");
            let message = e.to_string();
            assert!(
                printed.starts_with(&format!("Error: {message}")),
                "{printed}"
            );
            // No variant or field names: the text a user reads.
            for name in [
                "PayloadTooLarge",
                "PolicyViolation",
                "Codec {",
                "InvalidArgument",
                "Duplicate {",
                "IdExists(",
                "QueueFull",
                "NotFound(",
                "Integrity(",
                "Tampered",
                "NoKeyring",
                "Keyring(",
                "Config(",
                "Broker(",
                "BrokerError",
                "Unavailable",
                "Audit(",
                "Shutdown",
                "WaitTimedOut",
                "waited_ms",
                "kind:",
                "message:",
            ] {
                assert!(!printed.contains(name), "`{name}` in {printed}");
            }
        }
    }

    #[test]
    fn rough_edge_debug_adds_causes_once() {
        let e = Error::Broker(
            BrokerError::new(BrokerErrorKind::Unavailable, "cannot connect")
                .with_source(std::io::Error::other("Connection refused")),
        );
        assert_eq!(
            format!("{e:?}"),
            "broker error: broker unavailable: cannot connect: Connection refused"
        );
        // The integrity error's text is the message already: not repeated.
        let e = Error::Integrity(IntegrityError::Expired);
        assert_eq!(format!("{e:?}"), "integrity failure: envelope expired");
        assert_eq!(
            format!("{:?}", IntegrityError::Replay),
            "task already completed (replay)"
        );
    }
}
