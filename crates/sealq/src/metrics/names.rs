//! Every metric sealq emits, by name. `docs/metrics.md` describes each one
//! (type, labels, meaning); a test keeps the two lists equal.

/// Tasks stored by a client (`queue`, `task_type`).
pub const TASKS_ENQUEUED: &str = "sealq_tasks_enqueued_total";
/// Handler calls started (`queue`, `task_type`).
pub const TASKS_STARTED: &str = "sealq_tasks_started_total";
/// Attempts that succeeded (`queue`, `task_type`).
pub const TASKS_SUCCEEDED: &str = "sealq_tasks_succeeded_total";
/// Attempts that failed: an error, a panic or a timeout (`queue`, `task_type`).
pub const TASKS_FAILED: &str = "sealq_tasks_failed_total";
/// Failed attempts scheduled to run again (`queue`, `task_type`).
pub const TASKS_RETRIED: &str = "sealq_tasks_retried_total";
/// Tasks a worker archived (`queue`, `task_type`, `reason`).
pub const TASKS_ARCHIVED: &str = "sealq_tasks_archived_total";
/// Tasks held, not run: a key the keyring lacks, leased before their start
/// (`queue`, `task_type`, `reason`).
pub const TASKS_HELD: &str = "sealq_tasks_held_total";
/// Leased tasks given back unstarted or unfinished at shutdown (`queue`,
/// `task_type`).
pub const TASKS_REQUEUED: &str = "sealq_tasks_requeued_total";
/// Tasks the payload policy or a depth cap refused (`queue`, `rule`).
pub const POLICY_REJECTIONS: &str = "sealq_policy_rejections_total";
/// Payloads over their queue's size budget let through in warn mode (`queue`).
pub const PAYLOAD_OVER_BUDGET: &str = "sealq_payload_over_budget_total";
/// Expired leases recovered by a worker's maintenance (`outcome`: `retry`
/// or `archived`).
pub const LEASE_EXPIRATIONS: &str = "sealq_lease_expirations_total";
/// Seconds from enqueue to the first attempt's start (`queue`, `task_type`).
pub const ENQUEUE_TO_START: &str = "sealq_task_enqueue_to_start_seconds";
/// Seconds from a task's due time to its start, every attempt (`queue`,
/// `task_type`).
pub const START_DELAY: &str = "sealq_task_start_delay_seconds";
/// Seconds a handler ran (`queue`, `task_type`).
pub const TASK_DURATION: &str = "sealq_task_duration_seconds";
/// Tasks in a queue by state, sampled by workers (`queue`, `state`).
pub const QUEUE_DEPTH: &str = "sealq_queue_depth";
/// 1 while a queue is paused, sampled by workers (`queue`).
pub const QUEUE_PAUSED: &str = "sealq_queue_paused";
/// Failed broker calls (`op`, `kind`).
pub const BROKER_ERRORS: &str = "sealq_broker_errors_total";
/// Broker connections restored after being lost (`backend`).
pub const BROKER_RECONNECTS: &str = "sealq_broker_reconnects_total";
/// Audit records accepted and not yet written, sampled.
pub const AUDIT_BACKLOG: &str = "sealq_audit_backlog";
/// Audit appends that failed (and are retried).
pub const AUDIT_APPEND_FAILURES: &str = "sealq_audit_append_failures_total";
/// Payloads moved to the claim-check blob store.
pub const BLOB_OFFLOADED: &str = "sealq_blob_offloaded_total";
/// Reference resolutions served from the cache or not (`type`, `result`).
pub const RESOLVE_CACHE: &str = "sealq_resolve_cache_total";
/// Reference resolutions that joined one already running (`type`).
pub const RESOLVE_COALESCED: &str = "sealq_resolve_coalesced_total";
/// Seconds a resolver call took (`type`).
pub const RESOLVE_DURATION: &str = "sealq_resolve_duration_seconds";
/// Failed reference resolutions (`type`, `class`).
pub const RESOLVE_ERRORS: &str = "sealq_resolve_errors_total";
/// Stored rows a backend could not decode and set aside (`backend`, `op`).
pub const QUARANTINED: &str = "sealq_quarantined_total";
/// Stored rows a backend skipped as malformed (`backend`, `op`).
pub const MALFORMED_SKIPPED: &str = "sealq_malformed_tasks_skipped_total";
/// Successful acks of a task the broker remembered as done (`backend`).
pub const REPLAYED_SUCCESSES: &str = "sealq_replayed_successes_total";
/// Archived tasks trimmed past the archive's cap (`queue`).
pub const ARCHIVE_TRIMMED: &str = "sealq_archive_trimmed_total";
/// Tasks Redis erased (by subject or by id).
pub const REDIS_ERASED: &str = "sealq_redis_erased_tasks_total";
/// Tasks Redis archived `integrity` while leasing them (undecodable).
pub const REDIS_INTEGRITY_ARCHIVED: &str = "sealq_redis_integrity_archived_total";
/// Tasks Redis archived `exhausted` when their lease expired.
pub const REDIS_LEASE_EXHAUSTED: &str = "sealq_redis_lease_exhausted_total";
/// Leases of a task whose type no handler of the worker takes (`queue`,
/// `task_type`): retried until its sealed expiry, then archived `unknown_type`.
pub const UNHANDLED_TYPE: &str = "sealq_unhandled_type_total";
/// Always 1, labelled with this sealq's version (`version`).
pub const BUILD_INFO: &str = "sealq_build_info";

/// Every name above.
pub const ALL: &[&str] = &[
    TASKS_ENQUEUED,
    TASKS_STARTED,
    TASKS_SUCCEEDED,
    TASKS_FAILED,
    TASKS_RETRIED,
    TASKS_ARCHIVED,
    TASKS_HELD,
    TASKS_REQUEUED,
    UNHANDLED_TYPE,
    POLICY_REJECTIONS,
    PAYLOAD_OVER_BUDGET,
    LEASE_EXPIRATIONS,
    ENQUEUE_TO_START,
    START_DELAY,
    TASK_DURATION,
    QUEUE_DEPTH,
    QUEUE_PAUSED,
    BROKER_ERRORS,
    BROKER_RECONNECTS,
    AUDIT_BACKLOG,
    AUDIT_APPEND_FAILURES,
    BLOB_OFFLOADED,
    RESOLVE_CACHE,
    RESOLVE_COALESCED,
    RESOLVE_DURATION,
    RESOLVE_ERRORS,
    QUARANTINED,
    MALFORMED_SKIPPED,
    REPLAYED_SUCCESSES,
    ARCHIVE_TRIMMED,
    REDIS_ERASED,
    REDIS_INTEGRITY_ARCHIVED,
    REDIS_LEASE_EXHAUSTED,
    BUILD_INFO,
];
