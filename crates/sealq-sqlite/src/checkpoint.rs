//! WAL checkpoints off the commit path.
//!
//! With `synchronous=FULL` in WAL mode a commit costs one fsync (of the WAL)
//! and a checkpoint two (the WAL, then the database file). SQLite's automatic
//! checkpoint runs inside the committing connection, so the caller whose
//! commit crossed 1000 pages would wait for those two fsyncs and the copy.
//! Instead (SQLite's automatic checkpoint is replaced by this WAL hook):
//!
//! - the writer's WAL hook records the WAL size after each commit and, each
//!   time the WAL has grown by another [`CHECKPOINT_PAGES`] frames, nudges a
//!   checkpointer thread. The thread runs a `PASSIVE` checkpoint on its own
//!   connection, concurrently with the writer: the copy and both fsyncs
//!   happen there, never in a caller's commit. One checkpoint per
//!   [`CHECKPOINT_PAGES`] frames, not one per commit (asking after every
//!   commit past the threshold kept the thread checkpointing back to back,
//!   1.5 extra fsyncs per one-call enqueue, measured).
//! - the thread also checkpoints when it has not been asked for
//!   [`IDLE_CHECKPOINT`], so the WAL is copied back after a burst.
//! - SQLite rewrites the WAL from its start only when a write transaction
//!   begins with every frame copied back. Under a sustained load the writer
//!   always commits while the checkpointer copies, so that never happens on
//!   its own and the WAL would grow without bound. Once it holds
//!   [`RESTART_PAGES`] frames, the writer thread itself runs a `PASSIVE`
//!   checkpoint between two groups (after replying to the one before; a
//!   lone caller that leads its own commits stops leading once the WAL is
//!   due, so its next call is such a group, see the `writer` module): it
//!   copies only the frames committed since the checkpointer's last round,
//!   then the next transaction restarts the WAL. That is the one place a
//!   checkpoint delays queued callers: two fsyncs once per [`RESTART_PAGES`]
//!   frames (about 32 MiB of WAL), never inside a caller's commit.
//! - a lone caller committing small transactions (one-call enqueues) has
//!   the WAL restart at [`LONE_RESTART_PAGES`] instead: while the WAL file
//!   grows, each commit's fdatasync must also record the new file size,
//!   which commits the file system's journal (one more wait per call,
//!   measured: 2.6-2.8 context switches per one-call enqueue against
//!   2.3 once the WAL is overwritten in place). Groups of several callers
//!   and large commits keep [`RESTART_PAGES`]: they restart less often.
//! - on the WAL's first pass in a process (not grown ahead, not restarted
//!   yet) large commits (a bulk enqueue) ask for no checkpoint before
//!   [`RESTART_PAGES`], and the writer restarts the WAL [`CHECKPOINT_PAGES`]
//!   frames later, the checkpointer having copied meanwhile (see
//!   [`WalState::deferring`]): there each commit's fdatasync also commits
//!   the file system's journal, which waits for the checkpointer's writes
//!   to the database file.
//!
//! The thread sleeps on a channel with a timeout. It ends when the writer
//! connection (and with it the hook and the sender) is dropped.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::time::Duration;

use rusqlite::Connection;
use sealq::{BrokerError, BrokerErrorKind};

use crate::error::map_err;
use crate::wal_size::GROW_AFTER_PAGES;

/// The page size the WAL thresholds below are given in frames of: a
/// database with larger pages gets proportionally fewer frames, so the
/// thresholds hold the same bytes of WAL whatever the page size.
pub(crate) const REFERENCE_PAGE_SIZE: u32 = 4096;

/// WAL growth (frames of [`REFERENCE_PAGE_SIZE`]) between two checkpoint
/// requests.
pub(crate) const CHECKPOINT_PAGES: i32 = 1000;

/// WAL size (frames of [`REFERENCE_PAGE_SIZE`]) at which the writer
/// checkpoints the rest itself so the WAL can restart.
pub(crate) const RESTART_PAGES: i32 = 8 * CHECKPOINT_PAGES;

/// WAL size (frames of [`REFERENCE_PAGE_SIZE`]) at which the WAL restarts
/// when commits are small and not shared (see [`WalState::restart_due`]).
pub(crate) const LONE_RESTART_PAGES: i32 = 2 * CHECKPOINT_PAGES;

/// A commit that added at most this many frames (of
/// [`REFERENCE_PAGE_SIZE`]) is small.
const SMALL_COMMIT_PAGES: i32 = 64;

/// The WAL thresholds in frames of a database's own page size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Frames {
    /// [`CHECKPOINT_PAGES`].
    pub(crate) checkpoint: i32,
    /// [`RESTART_PAGES`].
    pub(crate) restart: i32,
    /// [`LONE_RESTART_PAGES`].
    pub(crate) lone_restart: i32,
    /// [`SMALL_COMMIT_PAGES`].
    pub(crate) small_commit: i32,
    /// [`GROW_AFTER_PAGES`].
    pub(crate) grow_after: i32,
}

impl Frames {
    /// The thresholds for pages of `page_size` bytes (at least one frame each).
    pub(crate) fn for_page_size(page_size: u32) -> Self {
        let scale = |frames: i32| {
            let bytes = i64::from(frames) * i64::from(REFERENCE_PAGE_SIZE);
            let own = (bytes / i64::from(page_size.max(512))).max(1);
            i32::try_from(own).unwrap_or(i32::MAX)
        };
        Self {
            checkpoint: scale(CHECKPOINT_PAGES),
            restart: scale(RESTART_PAGES),
            lone_restart: scale(LONE_RESTART_PAGES),
            small_commit: scale(SMALL_COMMIT_PAGES),
            grow_after: scale(GROW_AFTER_PAGES),
        }
    }
}

impl Default for Frames {
    fn default() -> Self {
        Self::for_page_size(REFERENCE_PAGE_SIZE)
    }
}

/// Commits of one operation each, in a row, after which a caller counts as
/// lone. Concurrent callers share groups; a group of one among them now and
/// then must not restart the WAL early (8 producers measured 10-25% slower
/// when one such group was enough).
const LONE_STREAK: u32 = 32;

/// Small commits in a row after which the WAL file is grown ahead (see
/// [`WalState::grow_due`]): a large commit now and then (a bulk enqueue
/// beside one-call producers) restarts the count, and a stray small commit
/// after a bulk enqueue does not zero 37 MB.
const GROW_STREAK: u32 = 16;

/// The checkpointer also runs after this long without a request.
pub(crate) const IDLE_CHECKPOINT: Duration = Duration::from_secs(1);

/// What the writer thread knows about its WAL.
#[derive(Debug, Default)]
pub(crate) struct WalState {
    /// Frames in the WAL after the last commit.
    pages: AtomicI32,
    /// Frames the last commit added.
    added: AtomicI32,
    /// Commits of one operation each in a row (see [`LONE_STREAK`]).
    singles: AtomicU32,
    /// Set while the writer waits to checkpoint the rest itself: the
    /// checkpointer then starts no round of its own (a round in progress
    /// holds SQLite's checkpoint lock, and the writer's attempt would fail).
    restart_wanted: AtomicBool,
    /// Small commits (at most [`SMALL_COMMIT_PAGES`] frames) in a row.
    smalls: AtomicU32,
    /// Set once the WAL has restarted from its start in this process.
    restarted: AtomicBool,
    /// Set once this process has grown the WAL file to its working size
    /// (or tried to): see the `wal_size` module.
    grown: AtomicBool,
    /// The thresholds in frames of this database's page size.
    frames: Frames,
}

impl WalState {
    /// The state of a WAL whose database has pages of `page_size` bytes.
    pub(crate) fn for_page_size(page_size: u32) -> Self {
        Self {
            frames: Frames::for_page_size(page_size),
            ..Self::default()
        }
    }

    /// The thresholds in frames of this database's page size.
    pub(crate) fn frames(&self) -> Frames {
        self.frames
    }

    /// Frames in the WAL after the writer's last commit.
    pub(crate) fn pages(&self) -> i32 {
        self.pages.load(Ordering::Relaxed)
    }

    /// Record a commit after which the WAL holds `pages` frames (the WAL
    /// hook); returns how many frames it added.
    fn after_commit(&self, pages: i32) -> i32 {
        let before = self.pages.swap(pages, Ordering::Relaxed);
        let added = if pages > before {
            pages - before
        } else {
            pages
        };
        if pages < before {
            // The WAL restarted from its start.
            self.restarted.store(true, Ordering::Relaxed);
        }
        self.added.store(added, Ordering::Relaxed);
        if added <= self.frames.small_commit {
            self.smalls.fetch_add(1, Ordering::Relaxed);
        } else {
            self.smalls.store(0, Ordering::Relaxed);
        }
        added
    }

    /// Record a commit of `ops` operations (a caller's own, or a writer
    /// thread group's). A hint, not an invariant: a count that wraps after
    /// 2^32 single commits only delays one early restart.
    pub(crate) fn note_commit(&self, ops: usize) {
        if ops == 1 {
            self.singles.fetch_add(1, Ordering::Relaxed);
        } else {
            self.singles.store(0, Ordering::Relaxed);
        }
    }

    /// Whether the WAL has reached its restart size: [`RESTART_PAGES`]
    /// frames; or [`LONE_RESTART_PAGES`] once [`LONE_STREAK`] commits in a
    /// row held one operation each and the last one was small. While the
    /// WAL file grows, every commit's fdatasync also commits the file
    /// system's journal (the new size): one more wait per commit, which
    /// counts when each call pays its own commit (measured in
    /// `docs/benchmarks.md`, "SQLite worker memory and quiet-machine
    /// ratios"). A restarted WAL is overwritten in place.
    pub(crate) fn restart_due(&self) -> bool {
        let (pages, f) = (self.pages(), &self.frames);
        let restart = if self.deferring() {
            f.restart + f.checkpoint
        } else {
            f.restart
        };
        pages >= restart
            || (pages >= f.lone_restart
                && self.singles.load(Ordering::Relaxed) >= LONE_STREAK
                && self.small_commit())
    }

    /// Whether checkpoints wait for the WAL's restart size: on the WAL's
    /// first pass in this process (a file that grows with every commit:
    /// not grown ahead, not restarted yet) while commits are large (a bulk
    /// enqueue). There each commit's fdatasync also commits the file
    /// system's journal, which then waits for whatever the checkpointer
    /// wrote to the database file meanwhile (ext4 `data=ordered`), and the
    /// checkpointer's copy competes with the bulk enqueue for CPU and disk
    /// (measured in `docs/benchmarks.md`, "SQLite bulk at session 10"). So
    /// the checkpointer is asked once the WAL holds [`RESTART_PAGES`]
    /// frames, and copies them while the writer goes on; the writer copies
    /// what is left itself [`CHECKPOINT_PAGES`] frames later (the WAL
    /// file's working size, `wal_size`), and the WAL restarts. A burst that
    /// ends before gets its copy from the idle checkpoint
    /// ([`IDLE_CHECKPOINT`]) or the next small commit's request.
    fn deferring(&self) -> bool {
        !self.restarted.load(Ordering::Relaxed)
            && !self.grown.load(Ordering::Relaxed)
            && !self.small_commit()
    }

    /// Whether the last commit added at most [`SMALL_COMMIT_PAGES`] frames.
    fn small_commit(&self) -> bool {
        self.added.load(Ordering::Relaxed) <= self.frames.small_commit
    }

    /// Whether the WAL file is due to grow to its working size (the
    /// `wal_size` module): once per process, when the WAL holds
    /// [`GROW_AFTER_PAGES`] frames and the last [`GROW_STREAK`] commits
    /// were small. Small commits are the ones that gain: each pays its own
    /// fdatasync, which a growing file makes also commit the file system's
    /// journal. Large ones (a bulk enqueue's batches) do not wait for it:
    /// their fdatasync writes far more than the journal's few blocks, and
    /// zeroing the file would write the whole first pass of the WAL twice,
    /// the zeros first, in the middle of the bulk enqueue (40 ms of a
    /// 190 ms bulk enqueue of 20,000 tasks, measured in
    /// `docs/benchmarks.md`, "SQLite bulk at session 10").
    fn grow_due(&self) -> bool {
        !self.grown.load(Ordering::Relaxed)
            && self.pages() >= self.frames.grow_after
            && self.smalls.load(Ordering::Relaxed) >= GROW_STREAK
    }

    /// Whether the writer thread has WAL work to do between two groups: a
    /// restart ([`Self::restart_due`]), or growing the WAL file once
    /// ([`Self::grow_due`]).
    pub(crate) fn work_due(&self) -> bool {
        self.restart_due() || self.grow_due()
    }

    /// The writer thread's WAL work between two groups ([`Self::work_due`]).
    pub(crate) fn do_work(&self, conn: &Connection, path: &Path) {
        if self.grow_due() && !self.grown.swap(true, Ordering::Relaxed) {
            match crate::wal_size::grow(conn, path) {
                Ok(bytes) => {
                    tracing::debug!(path = %path.display(), bytes, "WAL file grown ahead")
                }
                Err(e) => tracing::debug!(
                    path = %path.display(),
                    error = %e,
                    "WAL file not grown ahead; it grows with its frames"
                ),
            }
        }
        self.restart_if_large(conn, path);
    }

    /// Called by the writer thread between two groups: once the WAL holds
    /// [`RESTART_PAGES`] frames (see [`Self::restart_due`]), copy what is left so that the next
    /// transaction restarts the WAL. Retried after every group until a
    /// checkpoint copied everything.
    pub(crate) fn restart_if_large(&self, conn: &Connection, path: &Path) {
        if !self.restart_due() {
            return;
        }
        self.restart_wanted.store(true, Ordering::Relaxed);
        if passive(conn, path) {
            self.restarted.store(true, Ordering::Relaxed);
            self.restart_wanted.store(false, Ordering::Relaxed);
            self.pages.store(0, Ordering::Relaxed);
        }
    }
}

/// Install the WAL hook on the writer connection and start the checkpointer.
pub(crate) fn install(conn: &mut Connection, path: &Path) -> Result<Arc<WalState>, BrokerError> {
    let (tx, rx): (SyncSender<()>, Receiver<()>) = sync_channel(1);
    let thread_path = path.to_path_buf();
    let page_size: i64 = conn
        .query_row("PRAGMA page_size", [], |r| r.get(0))
        .map_err(|e| map_err(path, "reading the page size", e))?;
    let page_size = u32::try_from(page_size).unwrap_or(REFERENCE_PAGE_SIZE);
    let state = Arc::new(WalState::for_page_size(page_size));
    let every = state.frames().checkpoint;
    std::thread::Builder::new()
        .name("sealq-sqlite-ckpt".into())
        .spawn({
            let state = Arc::clone(&state);
            move || checkpointer(thread_path, rx, &state)
        })
        .map_err(|e| {
            BrokerError::new(
                BrokerErrorKind::Other,
                "cannot start the SQLite checkpoint thread",
            )
            .with_source(e)
        })?;
    let hook_state = Arc::clone(&state);
    // The WAL size at which the next request is sent.
    let mut next_request = every;
    // Replaces SQLite's automatic checkpoint (which is itself a WAL hook).
    conn.wal_hook(Some(move |_wal: &mut rusqlite::hooks::Wal, pages: i32| {
        hook_state.after_commit(pages);
        if pages < next_request - every {
            // The WAL restarted from its start.
            next_request = every;
            hook_state.restarted.store(true, Ordering::Relaxed);
        }
        let due = if hook_state.deferring() {
            next_request.max(hook_state.frames.restart)
        } else {
            next_request
        };
        if pages >= due {
            next_request = pages + every;
            // Full means a request is already pending: nothing to add.
            if let Err(TrySendError::Disconnected(())) = tx.try_send(()) {
                tracing::warn!("SQLite checkpoint thread is gone; the WAL will grow");
            }
        }
        Ok(())
    }))
    .map_err(|e| map_err(path, "installing the WAL hook", e))?;
    Ok(state)
}

/// Run a `PASSIVE` checkpoint on `conn` (never blocks writers or readers;
/// frames still in use are left for the next round). `true` when every
/// frame of the WAL is now copied into the database.
fn passive(conn: &Connection, path: &Path) -> bool {
    let row = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, i64>(1)?,
            r.get::<_, i64>(2)?,
        ))
    });
    match row {
        Ok((busy, log, copied)) => busy == 0 && log >= 0 && log == copied,
        Err(e) => {
            tracing::debug!(path = %path.display(), error = %e, "passive checkpoint skipped");
            false
        }
    }
}

fn checkpointer(path: PathBuf, rx: Receiver<()>, state: &WalState) {
    let conn = match Connection::open(&path) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "checkpoint connection failed; the WAL will grow");
            return;
        }
    };
    let _ = conn.busy_timeout(Duration::from_millis(100));
    // Until the writer is gone (Disconnected). A checkpoint with nothing new
    // to copy writes and syncs nothing.
    while let Ok(()) | Err(RecvTimeoutError::Timeout) = rx.recv_timeout(IDLE_CHECKPOINT) {
        if !state.restart_wanted.load(Ordering::Relaxed) {
            passive(&conn, &path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wal(pages: i32, added: i32, singles: u32) -> WalState {
        let w = WalState::default();
        w.pages.store(pages, Ordering::Relaxed);
        w.added.store(added, Ordering::Relaxed);
        w.singles.store(singles, Ordering::Relaxed);
        w
    }

    /// Issue 22 (bulk enqueue): the thresholds hold the same bytes of WAL
    /// whatever the page size.
    #[test]
    fn bulk_enqueue_wal_thresholds_scale_with_the_page_size() {
        assert_eq!(
            Frames::default(),
            Frames {
                checkpoint: CHECKPOINT_PAGES,
                restart: RESTART_PAGES,
                lone_restart: LONE_RESTART_PAGES,
                small_commit: SMALL_COMMIT_PAGES,
                grow_after: GROW_AFTER_PAGES,
            }
        );
        let f = Frames::for_page_size(16384);
        assert_eq!(
            (
                f.checkpoint,
                f.restart,
                f.lone_restart,
                f.small_commit,
                f.grow_after
            ),
            (250, 2000, 500, 16, 64)
        );
        let w = WalState::for_page_size(16384);
        w.pages.store(2000, Ordering::Relaxed);
        assert!(w.restart_due(), "8000 frames of 4 KiB are 2000 of 16 KiB");
        assert_eq!(Frames::for_page_size(65536).small_commit, 4);
    }

    /// Issue 22 (bulk enqueue), session 10: the WAL file is grown ahead once
    /// small commits run (GROW_STREAK in a row, the WAL past
    /// GROW_AFTER_PAGES), never after a bulk enqueue's large commits, and
    /// only once.
    #[test]
    fn bulk_enqueue_large_commits_never_grow_the_wal_file() {
        let w = WalState::default();
        for n in 1..=3 {
            assert_eq!(w.after_commit(n * 400), 400);
        }
        assert!(!w.work_due(), "large commits past GROW_AFTER_PAGES");
        let mut pages = 1200;
        for _ in 1..GROW_STREAK {
            pages += 3;
            w.after_commit(pages);
        }
        assert!(!w.work_due(), "a short streak of small commits");
        pages += SMALL_COMMIT_PAGES;
        assert_eq!(w.after_commit(pages), SMALL_COMMIT_PAGES);
        assert!(w.work_due(), "GROW_STREAK small commits in a row");
        pages += SMALL_COMMIT_PAGES + 1;
        w.after_commit(pages);
        assert!(!w.work_due(), "a large commit restarts the streak");
        for _ in 0..GROW_STREAK {
            pages += 1;
            w.after_commit(pages);
        }
        assert!(w.work_due());
        w.grown.store(true, Ordering::Relaxed);
        assert!(!w.work_due(), "grown once per process");

        let small = WalState::default();
        for n in 1..=2 * GROW_STREAK {
            small.after_commit(i32::try_from(n).unwrap());
        }
        assert!(!small.work_due(), "small commits of a small WAL");
        small.after_commit(GROW_AFTER_PAGES);
        assert!(!small.work_due(), "that commit was large");
    }

    /// Issue 22 (bulk enqueue), session 10: on the WAL's first pass, large
    /// commits ask for no checkpoint before RESTART_PAGES, and the writer
    /// restarts the WAL CHECKPOINT_PAGES later (the checkpointer copies
    /// meanwhile); small commits, a grown file or a restarted WAL restart
    /// at RESTART_PAGES as before.
    #[test]
    fn bulk_enqueue_first_pass_large_commits_leave_checkpoints_to_the_restart() {
        let w = WalState::default();
        w.after_commit(RESTART_PAGES - 500);
        assert!(w.deferring(), "first pass, large commits");
        w.after_commit(RESTART_PAGES);
        assert!(!w.restart_due(), "the checkpointer copies first");
        w.after_commit(RESTART_PAGES + CHECKPOINT_PAGES);
        assert!(w.restart_due(), "the writer restarts at the working size");

        let small = wal(RESTART_PAGES, 3, 0);
        assert!(!small.deferring());
        assert!(small.restart_due(), "a small commit at RESTART_PAGES");

        let grown = WalState::default();
        grown.grown.store(true, Ordering::Relaxed);
        grown.after_commit(RESTART_PAGES);
        assert!(!grown.deferring());
        assert!(grown.restart_due(), "a grown WAL file");

        let again = WalState::default();
        again.after_commit(RESTART_PAGES + CHECKPOINT_PAGES);
        again.after_commit(600);
        assert!(
            again.restarted.load(Ordering::Relaxed),
            "the WAL shrank: restarted"
        );
        again.after_commit(RESTART_PAGES);
        assert!(!again.deferring(), "second pass: the file has its size");
        assert!(again.restart_due());
    }

    /// Issue 22: a lone caller's small commits restart the WAL at
    /// LONE_RESTART_PAGES; shared groups, large commits and short streaks
    /// wait for RESTART_PAGES.
    #[test]
    fn one_call_enqueue_a_lone_callers_wal_restarts_early() {
        assert!(!wal(LONE_RESTART_PAGES - 1, 3, LONE_STREAK).restart_due());
        assert!(wal(LONE_RESTART_PAGES, 3, LONE_STREAK).restart_due());
        assert!(
            !wal(LONE_RESTART_PAGES, 3, LONE_STREAK - 1).restart_due(),
            "a short streak of single commits"
        );
        assert!(
            !wal(LONE_RESTART_PAGES, SMALL_COMMIT_PAGES + 1, LONE_STREAK).restart_due(),
            "a large commit"
        );
        let second_pass = wal(RESTART_PAGES, 500, 0);
        second_pass.restarted.store(true, Ordering::Relaxed);
        assert!(
            second_pass.restart_due(),
            "any commit at 8000 once the WAL has restarted (first pass: \
             bulk_enqueue_first_pass_large_commits_leave_checkpoints_to_the_restart)"
        );

        let w = wal(LONE_RESTART_PAGES, 3, 0);
        for _ in 0..LONE_STREAK {
            w.note_commit(1);
        }
        assert!(w.restart_due());
        w.note_commit(2);
        assert!(!w.restart_due(), "a shared group ends the streak");
    }
}
