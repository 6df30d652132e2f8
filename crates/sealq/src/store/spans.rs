//! `tracing` spans around the broker calls a task goes through: enqueue
//! (`sealq.enqueue`), lease (`sealq.lease`) and ack (`sealq.ack`). The
//! worker's per-task span (`sealq.task`: id, type, queue, attempt) covers
//! opening and the handler between lease and ack.
//!
//! A call that carries one task names it (`task_id`, `task_type`,
//! `queue`); a batch names its size and, when every task shares one, the
//! queue. Never a payload: the spans see ids, names and counts only.
//! Subscribe with any `tracing` subscriber (`tracing-opentelemetry` turns
//! them into OpenTelemetry spans).

use tracing::{Span, field, info_span};

use crate::model::record::NewTask;
use crate::store::broker::{Ack, DequeueRequest};

/// The span of one `Broker::enqueue` call.
pub(crate) fn enqueue(tasks: &[NewTask]) -> Span {
    let span = info_span!(
        "sealq.enqueue",
        tasks = tasks.len(),
        queue = field::Empty,
        task_id = field::Empty,
        task_type = field::Empty,
    );
    if let Some(first) = tasks.first() {
        if tasks.iter().all(|t| t.queue == first.queue) {
            span.record("queue", first.queue.as_str());
        }
        if tasks.len() == 1 {
            span.record("task_id", field::display(first.id));
            span.record("task_type", first.kind.as_str());
        }
    }
    span
}

/// The span of one `Broker::dequeue` call; record how many tasks it
/// leased with [`leased`].
pub(crate) fn lease(req: &DequeueRequest) -> Span {
    info_span!(
        "sealq.lease",
        worker = %req.worker,
        queues = ?req.queues,
        max = req.max,
        leased = field::Empty,
    )
}

/// Record on a [`lease`] span how many tasks the call leased.
pub(crate) fn leased(span: &Span, n: usize) {
    span.record("leased", n);
}

/// The span of one `Broker::ack` call.
pub(crate) fn ack(acks: &[Ack]) -> Span {
    let span = info_span!("sealq.ack", acks = acks.len(), task_id = field::Empty);
    if let [one] = acks {
        span.record("task_id", field::display(one.lease.task_id));
    }
    span
}
