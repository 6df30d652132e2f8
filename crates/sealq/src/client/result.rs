//! The producer reads its task's outcome: [`Client::result`] now, and
//! [`Client::wait_result`] until it finishes or a timeout passes.
//!
//! The result and the last error are opened with the client's own keyring
//! (or the subject's data key), which sealed the payload: no operator
//! reveal is involved and no `payload_revealed` record is written. Reading
//! an outcome needs a full keyring (an operator keyring holds no key that
//! opens anything) and, on Redis, a broker credential that may read task
//! hashes (the documented producer ACL user may not: see
//! `docs/threat-model.md`, section 3).

use std::time::Duration;

use serde::de::DeserializeOwned;
use zeroize::Zeroizing;

use super::Client;
use crate::error::{Error, IntegrityError, Result};
use crate::model::id::TaskId;
use crate::model::record::TaskRecord;
use crate::model::state::{ArchiveReason, TaskState};
use crate::seal::data_key::DataKey;
use crate::seal::envelope::{Aad, Purpose};
use crate::subject_keys::{RecordKey, RecordKeyError, record_key};

/// Where a task is and, once it has them, its opened result and last
/// error. `Debug` shows states and sizes only, never the opened bytes.
pub struct TaskOutcome {
    /// The task.
    pub id: TaskId,
    /// Its state now. [`TaskOutcome::is_finished`] once `completed` or
    /// `archived`.
    pub state: TaskState,
    /// How many times it has been leased.
    pub attempts: u32,
    /// Why it was archived, when it was.
    pub archive_reason: Option<ArchiveReason>,
    /// When it completed or was archived, Unix ms.
    pub finished_at_ms: Option<i64>,
    result: Option<Zeroizing<Vec<u8>>>,
    error: Option<Zeroizing<Vec<u8>>>,
}

impl std::fmt::Debug for TaskOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskOutcome")
            .field("id", &self.id)
            .field("state", &self.state)
            .field("attempts", &self.attempts)
            .field("archive_reason", &self.archive_reason)
            .field("result_len", &self.result.as_ref().map(|r| r.len()))
            .field("error_len", &self.error.as_ref().map(|e| e.len()))
            .finish()
    }
}

impl TaskOutcome {
    /// Whether the task has finished: `completed` or `archived` (it will
    /// not run again unless an operator re-runs it).
    pub fn is_finished(&self) -> bool {
        matches!(self.state, TaskState::Completed | TaskState::Archived)
    }

    /// Whether it completed (the handler succeeded).
    pub fn succeeded(&self) -> bool {
        self.state == TaskState::Completed
    }

    /// The result the handler set (`TaskContext::set_result`), decoded as
    /// `T`; `None` when it set none or the task has not completed.
    pub fn result<T: DeserializeOwned>(&self) -> Result<Option<T>> {
        self.result
            .as_deref()
            .map(|bytes| {
                rmp_serde::from_slice(bytes).map_err(|e| Error::Codec {
                    what: "result",
                    reason: e.to_string(),
                })
            })
            .transpose()
    }

    /// The opened result bytes (MessagePack), if any.
    pub fn result_bytes(&self) -> Option<&[u8]> {
        self.result.as_deref().map(Vec::as_slice)
    }

    /// The error message of the last failed attempt, if any (a retried or
    /// archived task; a task that failed and then completed keeps it too).
    pub fn error_message(&self) -> Option<String> {
        self.error
            .as_deref()
            .map(|e| String::from_utf8_lossy(e).into_owned())
    }
}

/// The first pause between polls of [`Client::wait_result`]; it doubles up
/// to [`MAX_POLL`].
const FIRST_POLL: Duration = Duration::from_millis(5);
/// The longest pause between polls.
const MAX_POLL: Duration = Duration::from_millis(250);

impl Client {
    /// The outcome of task `id` as it stands: its state and, once it has
    /// them, its result and last error opened with this client's keyring
    /// (or the task's subject data key). Not audited: the producer opens
    /// what its own keyring sealed, as the worker does; an operator reads
    /// it through [`Client::reveal`], which is audited.
    ///
    /// Errors: [`Error::NotFound`] for an id the broker does not hold (never
    /// enqueued, deleted, erased, or completed and purged after its
    /// retention); [`Error::Integrity`] when the stored result or error
    /// does not open (tampered, or sealed with a key this keyring lacks);
    /// [`Error::Keyring`] for an operator keyring. A task whose subject was
    /// erased has nothing left to open: its outcome carries neither.
    ///
    /// ```no_run
    /// # async fn f(client: sealq::Client, id: sealq::TaskId) -> sealq::Result<()> {
    /// let outcome = client.result(id).await?;
    /// if outcome.succeeded() {
    ///     let greeting: Option<String> = outcome.result()?;
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn result(&self, id: TaskId) -> Result<TaskOutcome> {
        self.keyring()
            .require_sealing_keys("open a task's result (Client::result)")?;
        let record = self.broker().get(id).await?.ok_or(Error::NotFound(id))?;
        self.outcome_of(record).await
    }

    /// Wait until task `id` finishes (completed or archived) and return its
    /// outcome as [`Client::result`] does, or fail with
    /// [`Error::WaitTimedOut`] (naming the state it is still in) once
    /// `timeout` has passed. Polls the broker with backoff, from 5 ms up
    /// to 250 ms between reads (brokers wake workers, not producers), so a
    /// quick task is seen within milliseconds and a slow one costs a few
    /// reads a second.
    ///
    /// ```no_run
    /// # async fn f(client: sealq::Client, id: sealq::TaskId) -> sealq::Result<()> {
    /// use std::time::Duration;
    /// let outcome = client.wait_result(id, Duration::from_secs(30)).await?;
    /// match outcome.result::<String>()? {
    ///     Some(text) => println!("{text}"),
    ///     None => eprintln!("finished {} without a result", outcome.state),
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn wait_result(&self, id: TaskId, timeout: Duration) -> Result<TaskOutcome> {
        self.keyring()
            .require_sealing_keys("open a task's result (Client::wait_result)")?;
        let started = tokio::time::Instant::now();
        let deadline = started + timeout;
        let mut pause = FIRST_POLL;
        loop {
            let record = self.broker().get(id).await?.ok_or(Error::NotFound(id))?;
            if matches!(record.state, TaskState::Completed | TaskState::Archived) {
                return self.outcome_of(record).await;
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Err(Error::WaitTimedOut {
                    task: id,
                    state: record.state.as_str(),
                    waited_ms: u64::try_from(now.duration_since(started).as_millis())
                        .unwrap_or(u64::MAX),
                });
            }
            tokio::time::sleep(pause.min(deadline - now)).await;
            pause = (pause * 2).min(MAX_POLL);
        }
    }

    /// Open `record`'s result and error, if it has either.
    async fn outcome_of(&self, record: TaskRecord) -> Result<TaskOutcome> {
        let erased = record.archive_reason == Some(ArchiveReason::Erased);
        let (result, error) = if erased || (record.result.is_none() && record.last_error.is_none())
        {
            (None, None)
        } else {
            match self.key_of(&record).await? {
                None => (None, None),
                Some(key) => (
                    open(&key, &record, Purpose::Result, record.result.as_deref())?,
                    open(&key, &record, Purpose::Error, record.last_error.as_deref())?,
                ),
            }
        };
        Ok(TaskOutcome {
            id: record.id,
            state: record.state,
            attempts: record.attempts,
            archive_reason: record.archive_reason,
            finished_at_ms: record.finished_at_ms,
            result,
            error,
        })
    }

    /// The key that opens `record`'s parts; `None` when its subject was
    /// erased (its data key is gone).
    async fn key_of(&self, record: &TaskRecord) -> Result<Option<Opener<'_>>> {
        match record_key(self.subject_keys().map(|k| &**k), record).await {
            Ok(RecordKey::Keyring) => Ok(Some(Opener::Keyring(self))),
            Ok(RecordKey::Subject(key)) => Ok(Some(Opener::Subject(key))),
            Ok(RecordKey::Erased) => Ok(None),
            Err(RecordKeyError::Integrity(e)) => Err(Error::Integrity(e)),
            Err(RecordKeyError::Unavailable(e)) => Err(e),
            Err(RecordKeyError::UnknownKek(k)) => {
                Err(Error::Integrity(IntegrityError::UnknownKey(k)))
            }
        }
    }
}

/// What opens a record's parts: the client's keyring or a subject's key.
enum Opener<'a> {
    Keyring(&'a Client),
    Subject(std::sync::Arc<DataKey>),
}

/// Open one sealed part of `record`, bound to its purpose.
fn open(
    key: &Opener<'_>,
    record: &TaskRecord,
    purpose: Purpose,
    sealed: Option<&[u8]>,
) -> Result<Option<Zeroizing<Vec<u8>>>> {
    let Some(bytes) = sealed else { return Ok(None) };
    let aad = Aad::for_record(record, purpose);
    Ok(Some(match key {
        Opener::Keyring(client) => client.keyring().open(&aad, bytes)?,
        Opener::Subject(k) => k.open(&aad, bytes)?,
    }))
}
