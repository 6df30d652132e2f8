//! Small output helpers shared by commands: tables, times, percentiles,
//! progress bars, process statistics, and [`safe`], through which every
//! text read from storage passes before it reaches a terminal.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

/// `text` made safe to print: control characters escaped.
///
/// Task types, queue names, error texts, writers and anything else read
/// from the broker or the audit log are written by whoever could write
/// there, not by the operator reading the output. Printed raw, an escape
/// sequence in them could recolour or rewrite the terminal, hide lines or
/// (with some terminals) answer back; a bidirectional override could make
/// `evil` read as `live`. So every such text goes through this function
/// (tables do it for every cell): C0 controls, DEL, C1 controls and the
/// bidirectional controls (U+061C, U+200E, U+200F, U+202A–U+202E,
/// U+2066–U+2069) are written as `\n`, `\r`, `\t` or `\u{hex}`; the
/// rest is unchanged. JSON output needs none of it: serde_json escapes
/// control characters itself.
pub(crate) fn safe(text: &str) -> Cow<'_, str> {
    if !text.chars().any(needs_escape) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if needs_escape(c) => {
                let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// Whether [`safe`] escapes `c`.
fn needs_escape(c: char) -> bool {
    c.is_control() // C0, DEL and C1
        || matches!(
            c,
            '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
        )
}

/// Render rows as a left-aligned table with a header line. Every cell goes
/// through [`safe`].
pub(crate) fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let header: Vec<Cow<'_, str>> = header.iter().map(|h| safe(h)).collect();
    let rows: Vec<Vec<Cow<'_, str>>> = rows
        .iter()
        .map(|r| r.iter().map(|c| safe(c)).collect())
        .collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
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
    line(&mut header.iter().map(|h| h.as_ref()));
    for row in &rows {
        line(&mut row.iter().map(|c| c.as_ref()));
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
    crate::stdout::outln!("{text}");
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
    fn control_characters_are_escaped() {
        assert!(matches!(safe("reports.render"), Cow::Borrowed(_)));
        assert_eq!(safe("a\x1b[31mb"), "a\\u{1b}[31mb");
        assert_eq!(safe("x\u{202e}y\u{2066}"), "x\\u{202e}y\\u{2066}");
        assert_eq!(safe("\u{9b}\u{7f}\0"), "\\u{9b}\\u{7f}\\u{0}");
        assert_eq!(safe("1\n2\t3\r"), "1\\n2\\t3\\r");
        assert_eq!(safe("café ✓"), "café ✓");
        let t = table(&["type"], &[vec!["a\x1bb".into()]]);
        assert_eq!(t, "type\na\\u{1b}b\n");
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
