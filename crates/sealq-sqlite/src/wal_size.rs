//! The WAL file at its working size from a process's first busy moments.
//!
//! While the WAL file grows, every commit's fdatasync must also record the
//! file's new size, which commits the file system's journal: one more wait
//! per commit. SQLite overwrites a WAL in place once it restarts, so a busy
//! process pays this only during the WAL's first pass; but that first
//! pass is the first 8,000 frames (about 32 MiB) after every process
//! start, since the last connection to close deletes the WAL. Measured
//! (`docs/benchmarks.md`, "SQLite: 8 producers against 1, and the length of
//! the run"): 8 one-call producers ran at 12,340-14,090 tasks/s on a new
//! WAL and 18,175-21,294/s on one already at its size.
//!
//! So once the WAL holds [`GROW_AFTER_PAGES`] frames (a one-shot command
//! never gets there) and small commits run (a few in a row; see
//! `WalState::grow_due` in the `checkpoint` module: a bulk enqueue's large
//! commits never grow it, as zeroing the file ahead would write their
//! first pass of the WAL twice), the writer extends the file with zeros to the size
//! of the restart's frames ([`crate::checkpoint::RESTART_PAGES`], counted
//! in bytes of 4 KiB pages whatever the page size), once per process. It does so holding the
//! database's write lock (`BEGIN IMMEDIATE`; no frame is being written by
//! any connection, in any process) and only past the file's current end,
//! so no frame is touched. SQLite never reads past the last valid frame:
//! recovery stops at the first frame whose salt and checksum do not match,
//! which a zeroed frame never does. The zeros are written, not allocated
//! (`fallocate` leaves extents that the first write must convert, which
//! is the same journal commit again). `journal_size_limit` (64 MiB) stays
//! above this size, so SQLite keeps it.

use std::fs::OpenOptions;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use rusqlite::Connection;

use crate::checkpoint::{Frames, REFERENCE_PAGE_SIZE};

/// Frames (of [`crate::checkpoint::REFERENCE_PAGE_SIZE`]) in the WAL after
/// which the writer grows the file.
pub(crate) const GROW_AFTER_PAGES: i32 = 256;

/// A WAL frame's header, in bytes (before each page).
const FRAME_HEADER: u64 = 24;

/// The WAL file's own header, in bytes.
const WAL_HEADER: u64 = 32;

/// The WAL file of the database at `db`.
fn wal_path(db: &Path) -> PathBuf {
    let mut p = db.as_os_str().to_owned();
    p.push("-wal");
    PathBuf::from(p)
}

/// The WAL's working size for pages of `page_size` bytes: the restart's
/// frames and one checkpoint's more (a restart comes after the commit that
/// crossed it; [`Frames`]).
pub(crate) fn working_size(page_size: u64) -> u64 {
    let f = Frames::for_page_size(u32::try_from(page_size).unwrap_or(REFERENCE_PAGE_SIZE));
    WAL_HEADER + u64::from((f.restart + f.checkpoint).unsigned_abs()) * (page_size + FRAME_HEADER)
}

/// Grow the WAL of `conn`'s database (at `db`) to its working size, under
/// the write lock. Returns the file's size after, or why not.
pub(crate) fn grow(conn: &Connection, db: &Path) -> Result<u64, String> {
    let page_size: i64 = conn
        .query_row("PRAGMA page_size", [], |r| r.get(0))
        .map_err(|e| format!("reading the page size: {e}"))?;
    let target = working_size(page_size.unsigned_abs());
    conn.execute_batch("BEGIN IMMEDIATE")
        .map_err(|e| format!("taking the write lock: {e}"))?;
    let grown = zero_fill(&wal_path(db), target).map_err(|e| format!("writing zeros: {e}"));
    conn.execute_batch("COMMIT")
        .map_err(|e| format!("releasing the write lock: {e}"))?;
    grown
}

/// Extend the existing file at `path` with zeros up to `target` bytes;
/// nothing before its current end is written.
fn zero_fill(path: &Path, target: u64) -> io::Result<u64> {
    let f = OpenOptions::new().write(true).open(path)?;
    let mut at = f.metadata()?.len();
    let zeros = vec![0u8; 1 << 20];
    while at < target {
        let n = zeros
            .len()
            .min(usize::try_from(target - at).unwrap_or(usize::MAX));
        f.write_all_at(&zeros[..n], at)?;
        at += n as u64;
    }
    Ok(at)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_working_size_holds_a_full_pass_of_frames() {
        // 9,000 frames of 4 KiB pages and their headers, plus the file's header.
        assert_eq!(working_size(4096), 32 + 9000 * 4120);
        // The same bytes of pages in larger frames.
        assert_eq!(working_size(16384), 32 + 2250 * (16384 + 24));
        assert!(working_size(65536) < 64 * 1024 * 1024);
        assert!(
            working_size(4096) < 64 * 1024 * 1024,
            "below journal_size_limit"
        );
    }

    #[test]
    fn zero_fill_never_writes_before_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x-wal");
        std::fs::write(&p, b"frames").unwrap();
        assert_eq!(zero_fill(&p, 3 << 20).unwrap(), 3 << 20);
        let bytes = std::fs::read(&p).unwrap();
        assert_eq!(&bytes[..6], b"frames");
        assert!(bytes[6..].iter().all(|&b| b == 0));
        // Already large enough: untouched.
        assert_eq!(zero_fill(&p, 10).unwrap(), 3 << 20);
        assert!(
            zero_fill(&dir.path().join("missing-wal"), 10).is_err(),
            "never created"
        );
    }
}
