//! Turning SQLite failures into [`BrokerError`]s, and riding out `SQLITE_BUSY`.
//!
//! Several processes may share one database file. SQLite serialises their
//! writers with a file lock; a connection that finds it taken waits in
//! SQLite's busy handler (`busy_timeout`) and then reports `SQLITE_BUSY`.
//! [`retry_busy`] retries such an operation with backoff for a bounded but
//! generous time, so a busy peer is never surfaced as an error; only when the
//! lock stays taken past the bound does the caller get
//! [`BrokerErrorKind::Unavailable`].

use std::path::Path;
use std::time::{Duration, Instant};

use rusqlite::ErrorCode;
use sealq::{BrokerError, BrokerErrorKind};

/// Whether `e` means "another connection holds the lock, try again".
pub(crate) fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
    )
}

/// Map an SQLite error met while doing `what` on the store at `path`.
pub(crate) fn map_err(path: &Path, what: &str, e: rusqlite::Error) -> BrokerError {
    let p = path.display();
    if matches!(
        e,
        rusqlite::Error::FromSqlConversionFailure(..)
            | rusqlite::Error::InvalidColumnType(..)
            | rusqlite::Error::IntegralValueOutOfRange(..)
    ) {
        return BrokerError::new(
            BrokerErrorKind::Corrupt,
            format!(
                "{what}: `{p}` holds a value sealq cannot read; the file was edited or is damaged"
            ),
        )
        .with_source(e);
    }
    let (kind, message) = match e.sqlite_error_code() {
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => (
            BrokerErrorKind::Unavailable,
            format!(
                "{what}: the database `{p}` stayed locked by another connection; \
                 retry later, or look for a process holding a long write transaction"
            ),
        ),
        Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt) => (
            BrokerErrorKind::Corrupt,
            format!(
                "{what}: `{p}` is not an SQLite database or is corrupt; \
                 restore it from a backup or point sealq at another path"
            ),
        ),
        Some(
            ErrorCode::PermissionDenied
            | ErrorCode::ReadOnly
            | ErrorCode::AuthorizationForStatementDenied,
        ) => (
            BrokerErrorKind::PermissionDenied,
            format!(
                "{what}: no permission to write `{p}` (or its -wal/-shm files or directory); \
                 fix the file permissions"
            ),
        ),
        Some(ErrorCode::CannotOpen) => (
            BrokerErrorKind::Config,
            format!("{what}: cannot open `{p}`; check that the directory exists and is writable"),
        ),
        Some(ErrorCode::DiskFull) => (
            BrokerErrorKind::Unavailable,
            format!("{what}: the disk holding `{p}` is full; free space and retry"),
        ),
        Some(ErrorCode::SystemIoFailure) => (
            BrokerErrorKind::Unavailable,
            format!("{what}: I/O error on `{p}`; check the disk and retry"),
        ),
        _ => (
            BrokerErrorKind::Other,
            format!("{what}: SQLite failed on `{p}`"),
        ),
    };
    BrokerError::new(kind, message).with_source(e)
}

/// Run `f` until it succeeds or fails with something other than busy, waiting
/// with capped exponential backoff between tries. Gives up after `bound` with
/// [`BrokerErrorKind::Unavailable`].
pub(crate) fn retry_busy<T>(
    path: &Path,
    what: &str,
    bound: Duration,
    mut f: impl FnMut() -> rusqlite::Result<T>,
) -> Result<T, BrokerError> {
    let start = Instant::now();
    let mut pause = Duration::from_millis(1);
    loop {
        match f() {
            Ok(v) => return Ok(v),
            Err(e) if is_busy(&e) && start.elapsed() < bound => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(100));
            }
            Err(e) if is_busy(&e) => {
                return Err(BrokerError::new(
                    BrokerErrorKind::Unavailable,
                    format!(
                        "{what}: `{}` stayed locked by another connection for {} s; \
                         look for a process holding a long write transaction, \
                         or raise SqliteOptions::busy_timeout",
                        path.display(),
                        bound.as_secs()
                    ),
                )
                .with_source(e));
            }
            Err(e) => return Err(map_err(path, what, e)),
        }
    }
}

/// Set up a store's own connection and tables: WAL mode, `synchronous =
/// FULL`, then `schema` (idempotent: `CREATE … IF NOT EXISTS`), retried
/// while busy for up to 30 s. Processes that open one new store at once
/// are answered "busy" without waiting when they switch it to WAL mode
/// together, so the retry is what lets each of them open it.
pub(crate) fn set_up_store(
    conn: &rusqlite::Connection,
    path: &Path,
    what: &str,
    schema: &str,
) -> Result<(), BrokerError> {
    retry_busy(path, what, Duration::from_secs(30), || {
        conn.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;")?;
        conn.execute_batch(schema)
    })
}
