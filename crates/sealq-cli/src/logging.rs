//! Where the `sealq` binary's logs go and how they look: stderr, as text
//! (the default) or as one JSON object per line (`--log-format json`,
//! `SEALQ_LOG_FORMAT=json`), for log pipelines that index fields.
//!
//! What is logged is the library's business and follows its rule: ids,
//! types, queues, attempts, reasons, sizes; never a payload, a result or a
//! handler's error text (those are sealed).

use std::io::IsTerminal;

use clap::ValueEnum;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{Layer as _, Registry};

/// `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub(crate) enum LogFormat {
    /// Human-readable lines (colours on a terminal).
    #[default]
    Text,
    /// One JSON object per line: `timestamp`, `level`, `target`, the
    /// event's fields (`message` among them) at the top level, and the
    /// enclosing span's fields under `span`.
    Json,
}

/// The filter used when `RUST_LOG` is not set: warn / info / debug / trace
/// by `-v` count. A worker (`worker_command`) also shows the worker
/// runtime's INFO lines without `-v`: what it serves at start, shutdown,
/// recovered leases; they are few and an operator wants them.
pub(crate) fn default_filter(verbose: u8, worker_command: bool) -> &'static str {
    match verbose {
        0 if worker_command => "warn,sealq::worker=info",
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    }
}

/// Install the subscriber: logs to stderr in `format`, `RUST_LOG` if set,
/// else [`default_filter`]; and, whatever the log shows, the count of the
/// tasks reads skipped ([`crate::skipped`]), which sees WARN and above only.
pub(crate) fn init(verbose: u8, format: LogFormat, worker_command: bool) {
    let default = default_filter(verbose, worker_command);
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let layer = match format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(std::io::stderr().is_terminal())
            .with_filter(filter)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .with_writer(std::io::stderr)
            .with_filter(filter)
            .boxed(),
    };
    let _ = Registry::default()
        .with(layer)
        .with(crate::skipped::Counter.with_filter(LevelFilter::WARN))
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_shows_its_own_info_lines_by_default() {
        assert_eq!(default_filter(0, false), "warn");
        assert_eq!(default_filter(0, true), "warn,sealq::worker=info");
        assert_eq!(default_filter(1, true), "info");
        assert_eq!(default_filter(2, false), "debug");
        assert_eq!(default_filter(9, false), "trace");
    }
}
