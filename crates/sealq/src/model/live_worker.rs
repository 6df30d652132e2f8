//! A live worker as the broker's worker registry keeps it
//! (`Broker::register_worker`, `Broker::list_workers`): who it is, where it
//! runs, what it serves and how busy it is. `sealq workers` lists them.
//!
//! A worker registers at start and again at every heartbeat with a time to
//! live of a few heartbeats; one that stops gracefully deregisters, and one
//! that died stops being listed once its time to live passed (the broker
//! then deletes its entry). Nothing here is secret: no payload, no key.

use serde::{Deserialize, Serialize};

/// One worker run, as registered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiveWorker {
    /// This run of the worker, unique (a UUID v7 chosen at start): the
    /// registry's key, so two workers with the same [`LiveWorker::id`]
    /// (two in one process, or a restart) are two entries.
    pub run_id: String,
    /// The worker id (`WorkerBuilder::id`, default `HOST:PID`).
    pub id: String,
    /// The host it runs on.
    pub host: String,
    /// Its process id on that host.
    pub pid: u32,
    /// The queues it takes tasks from, in its configured order.
    pub queues: Vec<String>,
    /// Handlers it runs at once.
    pub concurrency: u32,
    /// When it started, Unix ms.
    pub started_at_ms: i64,
    /// When it last registered (its last heartbeat), Unix ms of the
    /// broker's clock (set by the broker, whatever the worker sent).
    pub last_heartbeat_ms: i64,
    /// Tasks it held leased at that heartbeat: running or prefetched.
    pub in_flight: u64,
}

/// The host name: `HOSTNAME`, else `/etc/hostname`, else `localhost`.
pub fn host_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|s| s.trim().to_owned())
                .filter(|h| !h.is_empty())
        })
        .unwrap_or_else(|| "localhost".to_owned())
}
