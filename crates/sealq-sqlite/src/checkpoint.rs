//! WAL checkpoints off the writer thread.
//!
//! SQLite normally checkpoints inside the committing connection once the WAL
//! passes 1000 pages, which would stall the one writer thread (and every
//! group waiting behind it) while pages are copied into the database file.
//! Instead the writer's WAL hook notes the WAL size after each commit and,
//! past [`CHECKPOINT_PAGES`], nudges a checkpointer thread that runs a
//! `PASSIVE` checkpoint on its own connection, concurrently with the writer.
//! The thread sleeps on a channel: no polling. It ends when the writer
//! connection (and with it the hook and the sender) is dropped.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};

use rusqlite::Connection;
use sealq::{BrokerError, BrokerErrorKind};

use crate::error::map_err;

/// WAL size (pages) after which a checkpoint is requested.
pub(crate) const CHECKPOINT_PAGES: i32 = 1000;

/// Install the WAL hook on the writer connection and start the checkpointer.
pub(crate) fn install(conn: &mut Connection, path: &Path) -> Result<(), BrokerError> {
    let (tx, rx): (SyncSender<()>, Receiver<()>) = sync_channel(1);
    let thread_path = path.to_path_buf();
    std::thread::Builder::new()
        .name("sealq-sqlite-ckpt".into())
        .spawn(move || checkpointer(thread_path, rx))
        .map_err(|e| {
            BrokerError::new(
                BrokerErrorKind::Other,
                "cannot start the SQLite checkpoint thread",
            )
            .with_source(e)
        })?;
    // Replaces SQLite's automatic checkpoint (which is itself a WAL hook).
    conn.wal_hook(Some(move |_wal: &mut rusqlite::hooks::Wal, pages: i32| {
        if pages >= CHECKPOINT_PAGES {
            // Full means a request is already pending: nothing to add.
            if let Err(TrySendError::Disconnected(())) = tx.try_send(()) {
                tracing::warn!("SQLite checkpoint thread is gone; the WAL will grow");
            }
        }
        Ok(())
    }))
    .map_err(|e| map_err(path, "installing the WAL hook", e))
}

fn checkpointer(path: PathBuf, rx: Receiver<()>) {
    let conn = match Connection::open(&path) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "checkpoint connection failed; the WAL will grow");
            return;
        }
    };
    let _ = conn.busy_timeout(std::time::Duration::from_millis(100));
    while rx.recv().is_ok() {
        // PASSIVE never blocks the writer or readers; pages still in use
        // are left for the next round.
        if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
            tracing::debug!(path = %path.display(), error = %e, "passive checkpoint skipped");
        }
    }
}
