//! Small output helpers shared by commands: tables, times, percentiles,
//! progress bars, process statistics.

use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

/// Render rows as a left-aligned table with a header line.
pub(crate) fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut s = String::new();
        for (i, (cell, w)) in cells.zip(&widths).enumerate() {
            if i > 0 {
                s.push_str("  ");
            }
            s.push_str(cell);
            if i + 1 < widths.len() {
                s.extend(std::iter::repeat_n(' ', w - cell.chars().count()));
            }
        }
        out.push_str(s.trim_end());
        out.push('\n');
    };
    line(&mut header.iter().copied());
    for row in rows {
        line(&mut row.iter().map(String::as_str));
    }
    out
}

/// Unix milliseconds as RFC 3339 (UTC, millisecond precision).
pub(crate) fn rfc3339_ms(ms: i64) -> String {
    match jiff::Timestamp::from_millisecond(ms) {
        Ok(t) => format!("{t:.3}"),
        Err(_) => ms.to_string(),
    }
}

/// Now, Unix milliseconds.
pub(crate) fn now_ms() -> i64 {
    sealq::clock::wall_clock_ms()
}

/// Lowercase hex of `bytes`, space-separated in pairs.
pub(crate) fn hex_bytes(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Latency samples in milliseconds, recorded from many handlers at once.
#[derive(Debug, Default)]
pub(crate) struct Latencies {
    samples: Mutex<Vec<u32>>,
}

impl Latencies {
    /// An empty recorder with room for `n` samples.
    pub(crate) fn with_capacity(n: usize) -> Self {
        Latencies {
            samples: Mutex::new(Vec::with_capacity(n)),
        }
    }

    /// Record how late a task started: `now - run_at`, clamped at 0.
    pub(crate) fn record_since(&self, run_at_ms: i64) {
        let late = (now_ms() - run_at_ms).clamp(0, i64::from(u32::MAX));
        self.samples
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(late as u32);
    }

    /// Percentiles of what was recorded.
    pub(crate) fn summary(&self) -> LatencySummary {
        let mut v = self
            .samples
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        v.sort_unstable();
        let pct = |p: f64| -> u32 {
            if v.is_empty() {
                return 0;
            }
            let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
            v[rank.clamp(1, v.len()) - 1]
        };
        LatencySummary {
            samples: v.len(),
            p50_ms: pct(50.0),
            p90_ms: pct(90.0),
            p99_ms: pct(99.0),
            max_ms: v.last().copied().unwrap_or(0),
        }
    }
}

/// Percentiles of enqueue-to-start latency, milliseconds.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub(crate) struct LatencySummary {
    /// How many starts were measured.
    pub(crate) samples: usize,
    /// Median.
    pub(crate) p50_ms: u32,
    /// 90th percentile.
    pub(crate) p90_ms: u32,
    /// 99th percentile.
    pub(crate) p99_ms: u32,
    /// Maximum.
    pub(crate) max_ms: u32,
}

/// A progress bar on stdout, hidden when stdout is not a terminal or when
/// `hidden` is set (JSON output).
pub(crate) fn progress_bar(len: u64, hidden: bool) -> ProgressBar {
    if hidden || !std::io::stdout().is_terminal() {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::with_draw_target(Some(len), indicatif::ProgressDrawTarget::stdout());
    if let Ok(style) = ProgressStyle::with_template(
        "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} tasks ({per_sec}) {msg}",
    ) {
        pb.set_style(style);
    }
    pb.enable_steady_tick(Duration::from_millis(100));
    pb
}

/// This process's peak resident set size in KiB (`VmHWM`), where the OS reports it.
pub(crate) fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Per-second rate, 0 for an empty interval.
pub(crate) fn rate(count: usize, elapsed: Duration) -> f64 {
    let s = elapsed.as_secs_f64();
    if s > 0.0 { count as f64 / s } else { 0.0 }
}

/// Print `value` as pretty JSON on stdout.
pub(crate) fn print_json<T: Serialize>(value: &T) -> crate::error::CliResult {
    let text = serde_json::to_string_pretty(value).map_err(|e| {
        crate::error::CliError::runtime(crate::error::context("cannot format JSON", e))
    })?;
    println!("{text}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns() {
        let t = table(
            &["id", "state"],
            &[
                vec!["a".into(), "pending".into()],
                vec!["bbb".into(), "x".into()],
            ],
        );
        assert_eq!(t, "id   state\na    pending\nbbb  x\n");
    }

    #[test]
    fn percentiles() {
        let l = Latencies::default();
        let now = now_ms();
        for _ in 0..100 {
            l.record_since(now + 60_000); // in the future: clamped to 0
        }
        let s = l.summary();
        assert_eq!((s.samples, s.p50_ms, s.max_ms), (100, 0, 0));
        assert_eq!(Latencies::default().summary().p99_ms, 0);
    }

    #[test]
    fn times_and_hex() {
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(hex_bytes(&[1, 0xab]), "01 ab");
        assert!(peak_rss_kib().is_none_or(|k| k > 0));
    }
}
