//! Units and help texts for every metric, for exporters that show them
//! (Prometheus' `# HELP` lines).

use ::metrics::{Unit, describe_counter, describe_gauge, describe_histogram};

use super::names as n;

/// Register the unit and a one-line description of every sealq metric with
/// the installed recorder. [`super::install_prometheus`] calls it; call it
/// yourself after installing another recorder.
pub fn describe() {
    describe_counter!(n::TASKS_ENQUEUED, Unit::Count, "Tasks stored by a client.");
    describe_counter!(n::TASKS_STARTED, Unit::Count, "Handler calls started.");
    describe_counter!(n::TASKS_SUCCEEDED, Unit::Count, "Attempts that succeeded.");
    describe_counter!(
        n::TASKS_FAILED,
        Unit::Count,
        "Attempts that failed (error, panic or timeout), retried or not."
    );
    describe_counter!(
        n::TASKS_RETRIED,
        Unit::Count,
        "Failed attempts scheduled to run again."
    );
    describe_counter!(
        n::TASKS_ARCHIVED,
        Unit::Count,
        "Tasks a worker archived, by reason."
    );
    describe_counter!(
        n::TASKS_HELD,
        Unit::Count,
        "Tasks held back, not run, by reason."
    );
    describe_counter!(
        n::TASKS_REQUEUED,
        Unit::Count,
        "Leased tasks given back at shutdown (the attempt does not count)."
    );
    describe_counter!(
        n::POLICY_REJECTIONS,
        Unit::Count,
        "Tasks refused before sealing by the payload policy or a depth cap, by rule."
    );
    describe_counter!(
        n::PAYLOAD_OVER_BUDGET,
        Unit::Count,
        "Payloads over the queue's size budget let through (warn mode)."
    );
    describe_counter!(
        n::LEASE_EXPIRATIONS,
        Unit::Count,
        "Expired leases recovered by worker maintenance."
    );
    describe_histogram!(
        n::ENQUEUE_TO_START,
        Unit::Seconds,
        "From enqueue to the start of the first attempt (includes requested delays)."
    );
    describe_histogram!(
        n::START_DELAY,
        Unit::Seconds,
        "From the time a task was due to its start, every attempt."
    );
    describe_histogram!(n::TASK_DURATION, Unit::Seconds, "How long handlers ran.");
    describe_gauge!(
        n::QUEUE_DEPTH,
        Unit::Count,
        "Tasks in a queue by state (sampled)."
    );
    describe_gauge!(
        n::QUEUE_PAUSED,
        Unit::Count,
        "1 while the queue is paused (sampled)."
    );
    describe_counter!(n::BROKER_ERRORS, Unit::Count, "Broker calls that failed.");
    describe_counter!(
        n::BROKER_RECONNECTS,
        Unit::Count,
        "Broker connections restored after being lost."
    );
    describe_gauge!(
        n::AUDIT_BACKLOG,
        Unit::Count,
        "Audit records accepted and not yet written (sampled)."
    );
    describe_counter!(
        n::AUDIT_APPEND_FAILURES,
        Unit::Count,
        "Audit appends that failed."
    );
    describe_counter!(
        n::BLOB_OFFLOADED,
        Unit::Count,
        "Payloads offloaded to the blob store."
    );
    describe_counter!(
        n::RESOLVE_CACHE,
        Unit::Count,
        "Reference resolutions: cache hits and misses."
    );
    describe_counter!(
        n::RESOLVE_COALESCED,
        Unit::Count,
        "Reference resolutions that joined one in flight."
    );
    describe_histogram!(
        n::RESOLVE_DURATION,
        Unit::Seconds,
        "Resolver call duration."
    );
    describe_counter!(
        n::RESOLVE_ERRORS,
        Unit::Count,
        "Failed reference resolutions."
    );
    describe_counter!(
        n::QUARANTINED,
        Unit::Count,
        "Stored rows that did not decode, set aside by the backend."
    );
    describe_counter!(
        n::MALFORMED_SKIPPED,
        Unit::Count,
        "Malformed stored rows skipped."
    );
    describe_counter!(
        n::REPLAYED_SUCCESSES,
        Unit::Count,
        "Successes acked for a task the broker remembered as done."
    );
    describe_counter!(
        n::ARCHIVE_TRIMMED,
        Unit::Count,
        "Archived tasks trimmed past the cap."
    );
    describe_counter!(n::REDIS_ERASED, Unit::Count, "Tasks Redis erased.");
    describe_counter!(
        n::REDIS_INTEGRITY_ARCHIVED,
        Unit::Count,
        "Tasks Redis archived as integrity failures while leasing."
    );
    describe_counter!(
        n::REDIS_LEASE_EXHAUSTED,
        Unit::Count,
        "Tasks Redis archived exhausted when their lease expired."
    );
    describe_gauge!(
        n::BUILD_INFO,
        "Always 1; the `version` label names this sealq."
    );
}
