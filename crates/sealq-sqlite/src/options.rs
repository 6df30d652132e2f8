//! Options for opening an [`crate::SqliteBroker`].

use std::time::Duration;

use sealq::clock::{SharedClock, system_clock};

/// How hard SQLite works to make each commit durable (`PRAGMA synchronous`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Synchronous {
    /// Every commit is on disk before it is acknowledged (fsync of the WAL per
    /// commit). The default: an acknowledged enqueue survives a power cut.
    #[default]
    Full,
    /// Commits are durable at WAL checkpoints only. Still safe against a
    /// process crash and never corrupts the file, but the last commits may be
    /// lost on power failure or an OS crash. Faster on slow disks.
    Normal,
}

impl Synchronous {
    /// The `PRAGMA synchronous` value.
    pub fn as_pragma(&self) -> &'static str {
        match self {
            Synchronous::Full => "FULL",
            Synchronous::Normal => "NORMAL",
        }
    }
}

/// Everything [`crate::SqliteBroker::open_with`] can be told.
///
/// ```
/// use sealq_sqlite::{SqliteOptions, Synchronous};
/// let opts = SqliteOptions {
///     synchronous: Synchronous::Normal,
///     ..SqliteOptions::default()
/// };
/// # let _ = opts;
/// ```
#[derive(Debug, Clone)]
pub struct SqliteOptions {
    /// Durability of commits (default [`Synchronous::Full`]).
    pub synchronous: Synchronous,
    /// The broker's clock (default: the system clock). Tests pass a
    /// [`sealq::clock::ManualClock`].
    pub clock: SharedClock,
    /// How long an operation keeps retrying while another connection (another
    /// process) holds the write lock before it fails as `Unavailable`
    /// (default 30 s).
    pub busy_timeout: Duration,
    /// How often the background watcher checks the file for commits made by
    /// other processes, to wake waiting workers (default 50 ms).
    pub watch_interval: Duration,
    /// At most this many queued operations share one transaction (default 512).
    pub max_group: usize,
    /// How long the ids of completed and deleted tasks are remembered after
    /// they completed or were deleted (and always while the task's row is
    /// stored), to refuse their replay even once the task was purged
    /// (default 7 days). Keep it longer than the sealed expiry of your
    /// tasks: past its expiry a replayed task is refused anyway, so a
    /// horizon at least that long leaves no window where it could run.
    pub replay_horizon: Duration,
    /// Idle read connections kept for `get`, `list` and `stats` (default 4).
    pub read_connections: usize,
    /// The file holding wrapped per-subject data keys (default: the database
    /// path with `.subject-keys` appended). Kept apart from the database so
    /// that copies of the database do not carry the keys; see
    /// `docs/compliance.md`.
    pub subject_keys: Option<std::path::PathBuf>,
    /// The page size, in bytes, of a database this open creates (default
    /// 8192; a power of two from 512 to 65536). An existing database keeps
    /// its own (SQLite cannot change it in WAL mode). 8 KiB pages halve the
    /// WAL frames, and so the file system's work, per task of a bulk
    /// enqueue; 4096 suits a store that only ever enqueues one task per
    /// call, whose commits then write half the bytes (`docs/benchmarks.md`,
    /// "SQLite bulk writer at session 8").
    pub page_size: u32,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        Self {
            synchronous: Synchronous::Full,
            clock: system_clock(),
            busy_timeout: Duration::from_secs(30),
            watch_interval: Duration::from_millis(50),
            max_group: 512,
            replay_horizon: Duration::from_secs(7 * 24 * 3600),
            read_connections: 4,
            subject_keys: None,
            page_size: crate::schema::NEW_DATABASE_PAGE_SIZE,
        }
    }
}

impl SqliteOptions {
    /// Default options with the given clock.
    pub fn with_clock(clock: SharedClock) -> Self {
        Self {
            clock,
            ..Self::default()
        }
    }
}
