//! Waking idle workers when work appears, without polling for tasks.
//!
//! - **Same process:** the writer thread calls [`Wake::signal`] after a commit
//!   that made work ready (a pending task enqueued, a retry or requeue, a
//!   rerun, a resume, tasks forwarded). Waiters in
//!   [`sealq::Broker::wait_for_work`] wait on a `tokio::sync::Notify`.
//! - **Other processes** sharing the file: a watcher thread with its own
//!   connection reads `PRAGMA data_version` every
//!   [`crate::SqliteOptions::watch_interval`] (a few microseconds: it reads a
//!   counter in the shared-memory WAL index, no table is touched). The value
//!   changes whenever another connection commits; the watcher then signals.
//!   It also changes on this process's own commits, which at worst causes one
//!   extra, harmless wake-up.
//!
//! A signal wakes every current waiter and leaves one permit, so a worker that
//! found nothing and is about to wait does not miss work enqueued in between
//! (it wakes at once and looks again).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::Connection;
use tokio::sync::Notify;

use crate::schema::open_reader;

/// The wake-up signal shared by the writer, the watcher and waiters.
#[derive(Debug, Default)]
pub(crate) struct Wake {
    notify: Notify,
}

impl Wake {
    /// Work may be ready: wake all waiters and the next one to come.
    pub(crate) fn signal(&self) {
        self.notify.notify_waiters();
        self.notify.notify_one();
    }

    /// Wait for a signal or `timeout`, whichever comes first.
    pub(crate) async fn wait(&self, timeout: Duration) {
        let _ = tokio::time::timeout(timeout, self.notify.notified()).await;
    }
}

/// The cross-process watcher thread; stops when dropped.
#[derive(Debug)]
pub(crate) struct Watcher {
    stop: Option<Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Watcher {
    /// Start watching `path` for commits by other connections.
    pub(crate) fn start(
        path: PathBuf,
        interval: Duration,
        wake: Arc<Wake>,
    ) -> Result<Self, sealq::BrokerError> {
        let conn = open_reader(&path)?;
        let (stop, stopped) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("sealq-sqlite-watch".into())
            .spawn(move || watch(conn, interval, wake, stopped))
            .map_err(|e| {
                sealq::BrokerError::new(
                    sealq::BrokerErrorKind::Other,
                    "cannot start the SQLite watcher thread",
                )
                .with_source(e)
            })?;
        Ok(Self {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn data_version(conn: &Connection) -> Option<i64> {
    conn.query_row("PRAGMA data_version", [], |r| r.get(0)).ok()
}

fn watch(conn: Connection, interval: Duration, wake: Arc<Wake>, stopped: Receiver<()>) {
    let mut last = data_version(&conn);
    loop {
        // The stop channel doubles as the sleep: it ends at once on drop.
        match stopped.recv_timeout(interval) {
            Err(RecvTimeoutError::Timeout) => {}
            _ => return,
        }
        let now = data_version(&conn);
        if now.is_some() && now != last {
            last = now;
            wake.signal();
        }
    }
}
