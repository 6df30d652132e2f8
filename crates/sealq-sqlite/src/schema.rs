//! The database schema, its migrations, and opening connections.
//!
//! Migrations are keyed by `PRAGMA user_version` and applied in one
//! `BEGIN IMMEDIATE` transaction at open, so two processes opening a new file
//! at once apply them exactly once. The file is stamped with an
//! `application_id` ("SEAL") so another application's SQLite file is refused
//! rather than written into.
//!
//! Tables:
//! - `tasks`: one row per task, a column per mutable [`sealq::broker::TaskRecord`]
//!   field. `id` is the 16-byte UUID (so `ORDER BY id` is id order; since
//!   migration 7 no `CHECK` on its length, which cost every bulk insert a
//!   statement journal), `seq` a stable integer key; the fields of [`sealq::TaskMeta`] the broker queries
//!   on (`subject_tag`, `max_retries`, `retention_ms`) are copied into
//!   columns; `lease_token` is the current lease's token; `purge_at` is when a
//!   completed task may be purged.
//! - `task_bodies`: the immutable part, keyed by `seq`: the sealed `envelope`
//!   and `meta` (the whole [`sealq::TaskMeta`] as named MessagePack). Kept
//!   apart so the frequent state changes rewrite small rows, not envelopes;
//!   a trigger deletes the body with its task.
//! - `unique_keys`: unique key → holding task id and expiry.
//! - `paused_queues`: queues dequeue skips.
//! - `queue_limits`: per-queue cap on waiting tasks (`Broker::set_max_depth`;
//!   migration 2).
//! - `queue_rates`: per-queue rate limits as token buckets (`limit` per
//!   `period_ms`, `tokens` left at `updated_at`; `Broker::set_rate_limit`;
//!   migration 2).
//! - `key_checks`: the check value of each sealing key in use, by key id
//!   (hex; the first recorded per id is kept; `Broker::record_key_checks`;
//!   migration 3). Never a key.
//! - `live_workers`: the registry of live workers, one row per worker run
//!   (`run_id`) with what it serves, its last heartbeat and when its
//!   registration expires (`Broker::register_worker`; migration 4).
//! - `completed_ids`: replay memory, ids that completed or were deleted
//!   (`completed_at`: when the id was last remembered; kept for
//!   [`crate::SqliteOptions::replay_horizon`] after that, and while the
//!   task's row is stored).
//!
//! Indexes serve one query each: `tasks_ready` (partial, ready-ish states
//! only, ordered as dequeue takes them, the state as a last column since
//! migration 6) lets dequeue read exactly the rows it leases (its condition is written as comparisons, not `IN`: migration 5); `tasks_due` serves `forward_due`, `tasks_lease` lease recovery,
//! `tasks_purge` purging, `tasks_queue_state` (every task but pending ones:
//! migration 6) stats and listing by queue and state with `tasks_ready`,
//! `tasks_subject` erasure lookups.

use std::io::Read;
use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};
use sealq::{BrokerError, BrokerErrorKind};

use crate::error::{map_err, retry_busy};
use crate::options::Synchronous;

/// "SEAL" in ASCII: marks a sealq database (`PRAGMA application_id`).
pub(crate) const APPLICATION_ID: i32 = 0x5345_414C;

/// Migrations in order; migration `i` brings the schema to version `i + 1`.
pub(crate) const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE tasks (
    seq              INTEGER PRIMARY KEY,
    id               BLOB UNIQUE NOT NULL CHECK (length(id) = 16),
    queue            TEXT NOT NULL,
    kind             TEXT NOT NULL,
    subject_tag      BLOB,
    max_retries      INTEGER NOT NULL,
    retention_ms     INTEGER NOT NULL,
    state            TEXT NOT NULL,
    attempts         INTEGER NOT NULL DEFAULT 0,
    run_at           INTEGER NOT NULL,
    last_error       BLOB,
    result           BLOB,
    archive_reason   TEXT,
    lease_token      INTEGER,
    lease_expires_at INTEGER,
    worker           TEXT,
    finished_at      INTEGER,
    purge_at         INTEGER,
    updated_at       INTEGER NOT NULL
);
CREATE TABLE task_bodies (
    seq      INTEGER PRIMARY KEY,
    envelope BLOB NOT NULL,
    meta     BLOB NOT NULL
);
CREATE TRIGGER tasks_delete_body AFTER DELETE ON tasks BEGIN
    DELETE FROM task_bodies WHERE seq = OLD.seq;
END;
CREATE INDEX tasks_ready ON tasks (queue, run_at, id)
    WHERE state IN ('pending', 'scheduled', 'retry');
CREATE INDEX tasks_due ON tasks (run_at) WHERE state IN ('scheduled', 'retry');
CREATE INDEX tasks_lease ON tasks (lease_expires_at) WHERE state = 'active';
CREATE INDEX tasks_purge ON tasks (purge_at) WHERE purge_at IS NOT NULL;
CREATE INDEX tasks_queue_state ON tasks (queue, state);
CREATE INDEX tasks_subject ON tasks (subject_tag) WHERE subject_tag IS NOT NULL;

CREATE TABLE unique_keys (
    key        TEXT PRIMARY KEY NOT NULL,
    task_id    BLOB NOT NULL,
    expires_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX unique_keys_expiry ON unique_keys (expires_at);

CREATE TABLE paused_queues (
    queue     TEXT PRIMARY KEY NOT NULL,
    paused_at INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE completed_ids (
    id           BLOB PRIMARY KEY NOT NULL,
    completed_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX completed_ids_at ON completed_ids (completed_at);
"#,
    r#"
CREATE TABLE queue_limits (
    queue     TEXT PRIMARY KEY NOT NULL,
    max_depth INTEGER NOT NULL CHECK (max_depth >= 0)
) WITHOUT ROWID;
CREATE TABLE queue_rates (
    queue      TEXT PRIMARY KEY NOT NULL,
    rate_limit INTEGER NOT NULL CHECK (rate_limit > 0),
    period_ms  INTEGER NOT NULL CHECK (period_ms > 0),
    tokens     REAL NOT NULL,
    updated_at INTEGER NOT NULL
) WITHOUT ROWID;
"#,
    r#"
CREATE TABLE key_checks (
    key_id      TEXT PRIMARY KEY NOT NULL,
    check_value TEXT NOT NULL,
    recorded_at INTEGER NOT NULL
) WITHOUT ROWID;
"#,
    r#"
CREATE TABLE live_workers (
    run_id            TEXT PRIMARY KEY NOT NULL,
    worker_id         TEXT NOT NULL,
    host              TEXT NOT NULL,
    pid               INTEGER NOT NULL,
    queues            TEXT NOT NULL,
    concurrency       INTEGER NOT NULL,
    started_at        INTEGER NOT NULL,
    last_heartbeat_at INTEGER NOT NULL,
    expires_at        INTEGER NOT NULL,
    in_flight         INTEGER NOT NULL
) WITHOUT ROWID;
"#,
    // Migration 5: `tasks_ready`'s condition as comparisons. SQLite evaluates
    // a partial index's condition on every insert and on every update of
    // `state`, and compiles `IN` over three or more constants to a temporary
    // b-tree built for each statement run: that was a third of the
    // instructions of a bulk enqueue (issue 22). The same rows are indexed.
    // Dequeue's query repeats this condition word for word
    // (`READY_CONDITION`), which is what lets SQLite use the index.
    r#"
DROP INDEX tasks_ready;
CREATE INDEX tasks_ready ON tasks (queue, run_at, id)
    WHERE (state = 'pending' OR state = 'scheduled' OR state = 'retry');
"#,
    // Migration 6: `tasks_queue_state` leaves out pending tasks, the ones
    // an enqueue writes (issue 22: it cost a tenth of the writer's
    // instructions per task of a bulk enqueue). `tasks_ready`, which holds
    // every pending task, carries the state as a last column instead, so
    // stats count pending tasks by queue from it alone: both of stats'
    // reads stay covering index scans in queue order. A query must repeat
    // an index's condition word for word (`NOT_PENDING`, `READY_CONDITION`)
    // for SQLite to use it.
    r#"
DROP INDEX tasks_queue_state;
CREATE INDEX tasks_queue_state ON tasks (queue, state) WHERE state != 'pending';
DROP INDEX tasks_ready;
CREATE INDEX tasks_ready ON tasks (queue, run_at, id, state)
    WHERE (state = 'pending' OR state = 'scheduled' OR state = 'retry');
"#,
    // Migration 7: `tasks` without `CHECK (length(id) = 16)`. A function
    // call in a table's constraints makes every multi-row insert into it
    // keep a statement journal (a copy of each page it changes that
    // existed before it), which the bulk enqueue's chunk statements are
    // written to need no longer (issue 22; `enqueue::chunk`). Every id is
    // bound from a 16-byte array, and a row whose id is not 16 bytes is
    // quarantined when read, as before. SQLite cannot drop a constraint in
    // place: the table is rebuilt (same columns in the same order, same
    // `seq`s), and its indexes and trigger made again as migrations 1, 5
    // and 6 left them. Dropping the old table drops its trigger before
    // deleting its rows, so no body is deleted.
    r#"
CREATE TABLE tasks_v7 (
    seq              INTEGER PRIMARY KEY,
    id               BLOB UNIQUE NOT NULL,
    queue            TEXT NOT NULL,
    kind             TEXT NOT NULL,
    subject_tag      BLOB,
    max_retries      INTEGER NOT NULL,
    retention_ms     INTEGER NOT NULL,
    state            TEXT NOT NULL,
    attempts         INTEGER NOT NULL DEFAULT 0,
    run_at           INTEGER NOT NULL,
    last_error       BLOB,
    result           BLOB,
    archive_reason   TEXT,
    lease_token      INTEGER,
    lease_expires_at INTEGER,
    worker           TEXT,
    finished_at      INTEGER,
    purge_at         INTEGER,
    updated_at       INTEGER NOT NULL
);
INSERT INTO tasks_v7 SELECT * FROM tasks;
DROP TABLE tasks;
ALTER TABLE tasks_v7 RENAME TO tasks;
CREATE TRIGGER tasks_delete_body AFTER DELETE ON tasks BEGIN
    DELETE FROM task_bodies WHERE seq = OLD.seq;
END;
CREATE INDEX tasks_ready ON tasks (queue, run_at, id, state)
    WHERE (state = 'pending' OR state = 'scheduled' OR state = 'retry');
CREATE INDEX tasks_due ON tasks (run_at) WHERE state IN ('scheduled', 'retry');
CREATE INDEX tasks_lease ON tasks (lease_expires_at) WHERE state = 'active';
CREATE INDEX tasks_purge ON tasks (purge_at) WHERE purge_at IS NOT NULL;
CREATE INDEX tasks_queue_state ON tasks (queue, state) WHERE state != 'pending';
CREATE INDEX tasks_subject ON tasks (subject_tag) WHERE subject_tag IS NOT NULL;
"#,
];

/// The condition of the `tasks_queue_state` index (migration 6), word for
/// word: a query must repeat it for SQLite to use the index.
pub(crate) const NOT_PENDING: &str = "state != 'pending'";

/// The condition of the `tasks_ready` index (migration 5), word for word: a
/// query must repeat it for SQLite to use the index.
pub(crate) const READY_CONDITION: &str =
    "(state = 'pending' OR state = 'scheduled' OR state = 'retry')";

/// The schema version this build writes.
pub(crate) const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Per-attempt wait inside SQLite's busy handler; [`retry_busy`] loops around it.
const BUSY_SLICE: Duration = Duration::from_millis(250);

/// Refuse a non-empty file that does not start with the SQLite header,
/// without letting SQLite touch it.
fn check_header(path: &Path) -> Result<(), BrokerError> {
    let Ok(mut f) = std::fs::File::open(path) else {
        return Ok(()); // missing (created below) or unreadable (reported by SQLite)
    };
    let mut head = [0u8; 16];
    let mut n = 0;
    while n < head.len() {
        match f.read(&mut head[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(_) => return Ok(()),
        }
    }
    if n == 0 || (n == head.len() && &head == b"SQLite format 3\0") {
        return Ok(());
    }
    Err(BrokerError::new(
        BrokerErrorKind::Corrupt,
        format!(
            "`{}` is not an SQLite database (bad header); it was left untouched. \
             Point sealq at a new path or restore the file from a backup",
            path.display()
        ),
    ))
}

/// The write connection's page cache, in KiB (`PRAGMA cache_size = -N`;
/// SQLite's default is 2,000 KiB a connection). Leases and acks walk the
/// ready rows in order, so a larger cache holds little that is read again;
/// a page it misses is read from the OS page cache (docs/benchmarks.md,
/// "The embedded worker's memory" and "SQLite worker memory and
/// quiet-machine ratios"). 64 pages of 8 KiB (128 of 4 KiB in an older
/// database): more than a lease or ack group of a few hundred tasks dirties.
pub(crate) const WRITER_CACHE_KIB: u32 = 512;

/// The page size of a new database, in bytes (SQLite's default is 4096). A
/// task is about 1.3 KiB across its rows (the sealed envelope, its metadata,
/// the task row and its index entries), and each WAL frame costs the file
/// system two writes (the frame header, then the page) and the checkpoint a
/// read and a write: with 8 KiB pages a bulk enqueue makes half the system
/// calls per task and spent 27% less system time (measured in
/// `docs/benchmarks.md`, "SQLite bulk writer at session 8"). The small
/// commits pay for it: a one-call enqueue dirties about four pages whatever
/// their size, so its fdatasync writes twice the bytes (7-14% slower,
/// measured). Larger pages saved little more for the bulk enqueue and
/// cost the small commits more: 16 KiB pages passed 1.05 fsync calls per
/// one-call enqueue.
/// An existing database keeps its page size (SQLite cannot change it in WAL
/// mode); the WAL thresholds follow each database's own
/// (`checkpoint::Frames`). [`crate::SqliteOptions::page_size`] overrides it.
pub(crate) const NEW_DATABASE_PAGE_SIZE: u32 = 8192;

/// Whether SQLite accepts `n` as a page size: a power of two from 512 to
/// 65536.
pub(crate) fn valid_page_size(n: u32) -> bool {
    n.is_power_of_two() && (512..=65536).contains(&n)
}

/// Each read connection's page cache, in KiB: `get`, `list`, `stats` and
/// the commit watcher read little, and idle pooled connections keep their
/// cache for as long as they live.
const READER_CACHE_KIB: u32 = 256;

fn open_raw(path: &Path, flags: OpenFlags) -> Result<Connection, BrokerError> {
    let conn = Connection::open_with_flags(path, flags)
        .map_err(|e| map_err(path, "opening the database", e))?;
    conn.busy_timeout(BUSY_SLICE)
        .map_err(|e| map_err(path, "configuring the connection", e))?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

/// Open the write connection: check the file, switch to WAL, set
/// `synchronous`, and bring the schema up to date.
pub(crate) fn open_writer(
    path: &Path,
    synchronous: Synchronous,
    busy: Duration,
    page_size: u32,
) -> Result<Connection, BrokerError> {
    check_header(path)?;
    let conn = open_raw(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    // Reading the header first: a damaged file fails here, before any write.
    let (app_id, version): (i32, i64) =
        retry_busy(path, "reading the schema version", busy, || {
            Ok((
                conn.query_row("PRAGMA application_id", [], |r| r.get(0))?,
                conn.query_row("PRAGMA user_version", [], |r| r.get(0))?,
            ))
        })?;
    check_identity(path, app_id, version)?;
    // A new, empty file: the page size must be set before switching to WAL
    // writes the first page. On a database that has pages SQLite would
    // ignore it; it is not issued there.
    let pages: i64 = retry_busy(path, "reading the page count", busy, || {
        conn.query_row("PRAGMA page_count", [], |r| r.get(0))
    })?;
    if pages == 0 {
        if !valid_page_size(page_size) {
            return Err(BrokerError::new(
                BrokerErrorKind::Config,
                format!(
                    "page size {page_size} for the new database `{}`: expected a power of two \
                     from 512 to 65536 (bytes)",
                    path.display()
                ),
            ));
        }
        conn.execute_batch(&format!("PRAGMA page_size = {page_size}"))
            .map_err(|e| map_err(path, "setting the page size", e))?;
    }

    let mode: String = retry_busy(path, "switching to WAL", busy, || {
        conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
    })?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(BrokerError::new(
            BrokerErrorKind::Config,
            format!(
                "`{}` cannot use WAL mode (got `{mode}`); put it on a local file system",
                path.display()
            ),
        ));
    }
    conn.execute_batch(&format!(
        // temp_store: savepoint sub-journals stay in memory instead of
        // creating a temp file per group.
        "PRAGMA synchronous = {}; PRAGMA journal_size_limit = 67108864; \
         PRAGMA temp_store = MEMORY; PRAGMA cache_size = -{WRITER_CACHE_KIB};",
        synchronous.as_pragma()
    ))
    .map_err(|e| map_err(path, "configuring the connection", e))?;
    migrate(path, &conn, busy)?;
    Ok(conn)
}

/// Open a connection for reading (`get`, `list`, `stats`, the watcher).
pub(crate) fn open_reader(path: &Path) -> Result<Connection, BrokerError> {
    let conn = open_raw(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.execute_batch(&format!(
        "PRAGMA query_only = 1; PRAGMA cache_size = -{READER_CACHE_KIB};"
    ))
    .map_err(|e| map_err(path, "configuring the connection", e))?;
    Ok(conn)
}

fn check_identity(path: &Path, app_id: i32, version: i64) -> Result<(), BrokerError> {
    if app_id != 0 && app_id != APPLICATION_ID {
        return Err(BrokerError::new(
            BrokerErrorKind::Corrupt,
            format!(
                "`{}` is another application's SQLite database (application_id {app_id:#x}), \
                 not a sealq store; point sealq at another path",
                path.display()
            ),
        ));
    }
    if version > SCHEMA_VERSION {
        return Err(BrokerError::new(
            BrokerErrorKind::Config,
            format!(
                "`{}` has schema version {version}, newer than the {SCHEMA_VERSION} this sealq \
                 understands; upgrade sealq (never downgrade a store in use)",
                path.display()
            ),
        ));
    }
    Ok(())
}

fn migrate(path: &Path, conn: &Connection, busy: Duration) -> Result<(), BrokerError> {
    let err = |e| map_err(path, "migrating the schema", e);
    retry_busy(path, "migrating the schema", busy, || {
        conn.execute_batch("BEGIN IMMEDIATE")
    })?;
    let result = (|| {
        let app_id: i32 = conn
            .query_row("PRAGMA application_id", [], |r| r.get(0))
            .map_err(err)?;
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(err)?;
        check_identity(path, app_id, version)?;
        if version == 0 {
            let foreign: i64 = conn
                .query_row(
                    "SELECT count(*) FROM sqlite_schema WHERE name NOT LIKE 'sqlite_%'",
                    [],
                    |r| r.get(0),
                )
                .map_err(err)?;
            if foreign > 0 {
                return Err(BrokerError::new(
                    BrokerErrorKind::Corrupt,
                    format!(
                        "`{}` is an SQLite database with other tables, not a sealq store; \
                         point sealq at another path",
                        path.display()
                    ),
                ));
            }
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            conn.execute_batch(sql).map_err(err)?;
            conn.execute_batch(&format!("PRAGMA user_version = {}", i + 1))
                .map_err(err)?;
        }
        conn.execute_batch(&format!("PRAGMA application_id = {APPLICATION_ID}"))
            .map_err(err)?;
        Ok(())
    })();
    match result {
        Ok(()) => retry_busy(path, "migrating the schema", busy, || {
            conn.execute_batch("COMMIT")
        }),
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK");
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests;
