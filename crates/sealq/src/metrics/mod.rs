//! Metrics: what sealq counts, under which names, and how to export them.
//!
//! The library emits through the [`metrics`](https://docs.rs/metrics)
//! facade and installs no recorder: without one, every recording is a
//! no-op. Install any `metrics` recorder to collect them, or, with the
//! `prometheus` feature, call `install_prometheus` to get a Prometheus
//! recorder served on `GET /metrics` in one call:
//!
#![cfg_attr(feature = "prometheus", doc = "```no_run")]
#![cfg_attr(not(feature = "prometheus"), doc = "```ignore")]
//! # async fn f() -> sealq::Result<()> {
//! let server = sealq::metrics::install_prometheus("127.0.0.1:9464".parse().unwrap()).await?;
//! println!("metrics on http://{}/metrics", server.local_addr());
//! # Ok(()) }
//! ```
//!
//! Every name is in [`names`] and described in `docs/metrics.md`. Labels
//! are `queue`, `task_type`, and an outcome, reason, rule or state: never a
//! task id, a subject tag or anything from a payload. Queues and task types
//! are capped at [`labels::MAX_DISTINCT`] distinct values each (the rest
//! are reported as `other`), so the number of series stays bounded.
//!
//! Install the recorder before the worker runs its first task: the
//! per-attempt metrics of each queue and task type are registered once, on
//! first use, with the recorder installed then (`install_prometheus`
//! starts afresh when it installs its own).
//!
//! Counters are counted where the event is decided: a worker counts an
//! outcome before its ack is sent (an ack the broker then refuses, a lost
//! lease, is not taken back). Queue depths are not counted per task: each
//! worker samples [`Broker::stats`](crate::store::broker::Broker::stats)
//! every [`WorkerBuilder::queue_metrics_interval`](crate::worker::WorkerBuilder::queue_metrics_interval)
//! (15 s by default), so with several workers aggregate them with `max`, not
//! `sum`.

mod describe;
pub mod labels;
pub mod names;
#[cfg(feature = "prometheus")]
mod prometheus;
pub(crate) mod record;

pub use describe::describe;
#[cfg(feature = "prometheus")]
pub use prometheus::{MetricsEndpoint, MetricsServer, install_prometheus, prometheus_recorder};

/// Count a broker connection restored after it was lost (`backend`:
/// `redis`, `postgres`, …): for backends, which alone see their connections.
pub fn broker_reconnected(backend: &'static str) {
    ::metrics::counter!(names::BROKER_RECONNECTS, "backend" => backend).increment(1);
}
