-- sealq-postgres migration 1: tasks, their bodies, and the queue settings.
-- Every sealq object lives in the schema `sealq`. Times are Unix
-- milliseconds from the broker's clock (passed in by the caller; `now()` is
-- never used), so tests can drive time.

-- One row per task: the columns that change with its state. Kept narrow (no
-- payload bytes) and with room on each page (fillfactor) so that the state
-- updates of a claim or an ack can be HOT updates.
CREATE TABLE sealq.tasks (
    id               uuid PRIMARY KEY,
    queue            text NOT NULL,
    kind             text NOT NULL,
    subject_tag      bytea,
    max_retries      integer NOT NULL,
    retention_ms     bigint NOT NULL,
    state            text NOT NULL CHECK (state IN ('scheduled', 'pending', 'active',
                                                    'retry', 'completed', 'archived')),
    attempts         integer NOT NULL DEFAULT 0,
    run_at           bigint NOT NULL,
    last_error       bytea,
    result           bytea,
    archive_reason   text,
    lease_token      bigint,
    lease_expires_at bigint,
    worker           text,
    finished_at      bigint,
    purge_at         bigint,
    updated_at       bigint NOT NULL
) WITH (fillfactor = 80);

-- The immutable part of a task, written once at enqueue: the sealed
-- envelope and the metadata (named MessagePack). State changes never
-- rewrite these bytes.
CREATE TABLE sealq.task_bodies (
    id       uuid PRIMARY KEY REFERENCES sealq.tasks (id) ON DELETE CASCADE,
    envelope bytea NOT NULL,
    meta     bytea NOT NULL
);

-- Claim order: exactly the rows dequeue may take.
CREATE INDEX tasks_ready ON sealq.tasks (queue, run_at, id)
    WHERE state IN ('pending', 'scheduled', 'retry');
CREATE INDEX tasks_due ON sealq.tasks (run_at) WHERE state IN ('scheduled', 'retry');
CREATE INDEX tasks_lease ON sealq.tasks (lease_expires_at) WHERE state = 'active';
CREATE INDEX tasks_purge ON sealq.tasks (purge_at) WHERE state = 'completed';
CREATE INDEX tasks_queue_state ON sealq.tasks (queue, state);
CREATE INDEX tasks_subject ON sealq.tasks (subject_tag) WHERE subject_tag IS NOT NULL;

-- Unique keys: key -> holding task and expiry.
CREATE TABLE sealq.unique_keys (
    key        text PRIMARY KEY,
    task_id    uuid NOT NULL,
    expires_at bigint NOT NULL
);
CREATE INDEX unique_keys_expiry ON sealq.unique_keys (expires_at);
CREATE INDEX unique_keys_task ON sealq.unique_keys (task_id);

-- Replay memory: ids that completed, or were deleted or erased.
CREATE TABLE sealq.completed_ids (
    id           uuid PRIMARY KEY,
    completed_at bigint NOT NULL
);
CREATE INDEX completed_ids_at ON sealq.completed_ids (completed_at);

CREATE TABLE sealq.paused_queues (
    queue     text PRIMARY KEY,
    paused_at bigint NOT NULL
);

CREATE TABLE sealq.queue_limits (
    queue     text PRIMARY KEY,
    max_depth bigint NOT NULL CHECK (max_depth >= 0)
);

-- Token buckets: `rate_limit` per `period_ms`, `tokens` left at `updated_at`.
CREATE TABLE sealq.queue_rates (
    queue      text PRIMARY KEY,
    rate_limit bigint NOT NULL CHECK (rate_limit > 0),
    period_ms  bigint NOT NULL CHECK (period_ms > 0),
    tokens     double precision NOT NULL,
    updated_at bigint NOT NULL
);

-- Check values of the sealing keys in use (never a key); first one per id kept.
CREATE TABLE sealq.key_checks (
    key_id      text PRIMARY KEY,
    check_value text NOT NULL,
    recorded_at bigint NOT NULL
);
