//! Tasks whose stored fields do not decode: set aside, counted, logged,
//! never fatal to the call that met them.
//!
//! The functions library checks what it reads before it writes
//! (`lua/sealq.lua`, "Damaged data"), so a damaged key never leaves a call
//! half applied. What the Rust side cannot decode is handled per task:
//! dequeue and lease recovery **quarantine** it (archived with reason
//! `integrity`), reads skip it (`list`) or name it (`get`), and each is
//! counted in `sealq_quarantined_total{backend="redis",op}` (or
//! `sealq_malformed_tasks_skipped_total` for reads) and logged at WARN
//! with its id and queue, never its bytes.

/// Count and log one task quarantined by `op`.
pub(crate) fn quarantined(task: &str, queue: &str, op: &'static str, why: &str) {
    metrics::counter!("sealq_quarantined_total", "backend" => "redis", "op" => op).increment(1);
    tracing::warn!(
        task = %task,
        queue = %queue,
        op,
        problem = %why,
        "sealq: quarantined a task whose stored fields do not decode (archived, reason integrity)"
    );
}

/// Count and log one task a read (`op`) left out.
pub(crate) fn skipped(task: &str, queue: &str, op: &'static str, why: &str) {
    metrics::counter!("sealq_malformed_tasks_skipped_total", "backend" => "redis", "op" => op)
        .increment(1);
    tracing::warn!(
        task = %task,
        queue = %queue,
        op,
        problem = %why,
        "sealq: skipped a task whose stored fields do not decode; a worker archives it as \
         `integrity` when it leases it, or delete it with `sealq tasks delete`"
    );
}
