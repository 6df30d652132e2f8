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
    id       uuid PRIMARY KEY,
    envelope bytea NOT NULL,
    meta     bytea NOT NULL
);

-- A body goes with its task. One statement-level trigger, set-based,
-- instead of a foreign key (whose checks and cascades run row by row).
CREATE FUNCTION sealq.drop_bodies() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    DELETE FROM sealq.task_bodies b USING gone g WHERE b.id = g.id;
    RETURN NULL;
END
$$;
CREATE TRIGGER tasks_drop_bodies AFTER DELETE ON sealq.tasks
    REFERENCING OLD TABLE AS gone
    FOR EACH STATEMENT EXECUTE FUNCTION sealq.drop_bodies();

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

-- The hot operations, one round trip each. Every function pins its
-- search_path and names every object with its schema. Wake-ups: one
-- `pg_notify('sealq_wake', queue)` per queue made ready; Postgres folds
-- identical notifications of one transaction into one, and the payload is
-- the queue name only (any role may NOTIFY: it is a hint, never trusted).

-- Enqueue a batch. One result row per task (1-based `idx`): `enqueued`,
-- `id_exists`, `duplicate` (with the holder in `existing`) or `queue_full`
-- (with the cap in `max_depth`).
CREATE FUNCTION sealq.enqueue(
    p_now bigint, p_ids uuid[], p_queues text[], p_kinds text[], p_subjects bytea[],
    p_max_retries integer[], p_retention_ms bigint[], p_run_at bigint[], p_envelopes bytea[],
    p_metas bytea[], p_unique_keys text[], p_unique_ttl_ms bigint[])
RETURNS TABLE (idx integer, outcome text, existing uuid, max_depth bigint)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
    i integer;
    v_cap bigint;
    v_left jsonb := '{}'::jsonb;  -- queue -> room left (capped queues only)
    v_room bigint;
    v_holder uuid;
    v_state text;
BEGIN
    -- Fast path, set-based: a batch of distinct ids without unique keys
    -- into queues without a depth cap (the common case) is three
    -- statements whatever its size.
    IF NOT EXISTS (SELECT 1 FROM unnest(p_unique_keys) AS k WHERE k IS NOT NULL)
       AND NOT EXISTS (SELECT 1 FROM sealq.queue_limits l WHERE l.queue = ANY (p_queues))
       AND (SELECT count(DISTINCT d) FROM unnest(p_ids) AS d)
           = coalesce(array_length(p_ids, 1), 0) THEN
        RETURN QUERY
        WITH input AS (
            SELECT u.*, u.ord::integer AS pos
            FROM unnest(p_ids, p_queues, p_kinds, p_subjects, p_max_retries, p_retention_ms,
                        p_run_at, p_envelopes, p_metas)
                 WITH ORDINALITY AS u(id, queue, kind, subject, max_retries, retention_ms,
                                      run_at, envelope, meta, ord)
        ), first AS (
            SELECT i.* FROM input i
            WHERE NOT EXISTS (SELECT 1 FROM sealq.completed_ids c WHERE c.id = i.id)
        ), ins AS (
            INSERT INTO sealq.tasks (id, queue, kind, subject_tag, max_retries, retention_ms,
                                     state, attempts, run_at, updated_at)
            SELECT f.id, f.queue, f.kind, f.subject, f.max_retries, f.retention_ms,
                   CASE WHEN f.run_at <= p_now THEN 'pending' ELSE 'scheduled' END,
                   0, f.run_at, p_now
            FROM first f
            ON CONFLICT (id) DO NOTHING
            RETURNING sealq.tasks.id, sealq.tasks.queue, sealq.tasks.state
        ), bodies AS (
            INSERT INTO sealq.task_bodies (id, envelope, meta)
            SELECT f.id, f.envelope, f.meta FROM first f JOIN ins ON ins.id = f.id
            RETURNING sealq.task_bodies.id
        ), woken AS (
            SELECT count(pg_notify('sealq_wake', w.queue)::text) AS n
            FROM (SELECT DISTINCT ins.queue FROM ins WHERE ins.state = 'pending') w
        ), stored AS (
            SELECT f.pos FROM first f JOIN bodies b ON b.id = f.id
        )
        SELECT i.pos,
               CASE WHEN s.pos IS NULL THEN 'id_exists' ELSE 'enqueued' END,
               NULL::uuid, NULL::bigint
        FROM input i LEFT JOIN stored s ON s.pos = i.pos CROSS JOIN woken;
        RETURN;
    END IF;
    -- Take every lock this batch needs up front, in one order, so that
    -- concurrent batches never deadlock: the unique keys' advisory locks,
    -- then the capped queues' rows.
    PERFORM pg_advisory_xact_lock(k.h) FROM (
        SELECT DISTINCT hashtextextended('sealq.unique:' || u, 0) AS h
        FROM unnest(p_unique_keys) AS u WHERE u IS NOT NULL ORDER BY 1) k;
    PERFORM 1 FROM sealq.queue_limits l WHERE l.queue = ANY (p_queues)
        ORDER BY l.queue FOR UPDATE;
    FOR i IN 1 .. coalesce(array_length(p_ids, 1), 0) LOOP
        idx := i; existing := NULL; max_depth := NULL;
        IF NOT v_left ? p_queues[i] THEN
            -- The cap row is locked (above): enqueues into one capped queue
            -- take turns.
            SELECT l.max_depth INTO v_cap FROM sealq.queue_limits l
                WHERE l.queue = p_queues[i];
            IF FOUND THEN
                SELECT v_cap - count(*) INTO v_room FROM sealq.tasks t
                    WHERE t.queue = p_queues[i] AND t.state IN ('scheduled', 'pending', 'retry');
                v_left := v_left || jsonb_build_object(p_queues[i], jsonb_build_array(v_cap, v_room));
            ELSE
                v_left := v_left || jsonb_build_object(p_queues[i], NULL);
            END IF;
        END IF;
        IF EXISTS (SELECT 1 FROM sealq.completed_ids c WHERE c.id = p_ids[i]) THEN
            outcome := 'id_exists'; RETURN NEXT; CONTINUE;
        END IF;
        IF p_unique_keys[i] IS NOT NULL THEN
            SELECT u.task_id INTO v_holder FROM sealq.unique_keys u
                JOIN sealq.tasks t ON t.id = u.task_id
                WHERE u.key = p_unique_keys[i] AND u.expires_at > p_now
                  AND t.state NOT IN ('completed', 'archived');
            IF FOUND THEN
                outcome := 'duplicate'; existing := v_holder; RETURN NEXT; CONTINUE;
            END IF;
        END IF;
        IF jsonb_typeof(v_left -> p_queues[i]) = 'array'
           AND (v_left -> p_queues[i] ->> 1)::bigint <= 0 THEN
            outcome := 'queue_full';
            max_depth := (v_left -> p_queues[i] ->> 0)::bigint;
            RETURN NEXT; CONTINUE;
        END IF;
        v_state := CASE WHEN p_run_at[i] <= p_now THEN 'pending' ELSE 'scheduled' END;
        INSERT INTO sealq.tasks AS t (id, queue, kind, subject_tag, max_retries, retention_ms,
                                      state, attempts, run_at, updated_at)
            VALUES (p_ids[i], p_queues[i], p_kinds[i], p_subjects[i], p_max_retries[i],
                    p_retention_ms[i], v_state, 0, p_run_at[i], p_now)
            ON CONFLICT (id) DO NOTHING;
        IF NOT FOUND THEN
            outcome := 'id_exists'; RETURN NEXT; CONTINUE;
        END IF;
        INSERT INTO sealq.task_bodies (id, envelope, meta)
            VALUES (p_ids[i], p_envelopes[i], p_metas[i]);
        IF p_unique_keys[i] IS NOT NULL THEN
            INSERT INTO sealq.unique_keys AS u (key, task_id, expires_at)
                VALUES (p_unique_keys[i], p_ids[i], p_now + p_unique_ttl_ms[i])
                ON CONFLICT (key) DO UPDATE SET task_id = excluded.task_id,
                                                expires_at = excluded.expires_at;
        END IF;
        IF jsonb_typeof(v_left -> p_queues[i]) = 'array' THEN
            v_left := jsonb_set(v_left, ARRAY[p_queues[i], '1'],
                                to_jsonb((v_left -> p_queues[i] ->> 1)::bigint - 1));
        END IF;
        IF v_state = 'pending' THEN
            PERFORM pg_notify('sealq_wake', p_queues[i]);
        END IF;
        outcome := 'enqueued'; RETURN NEXT;
    END LOOP;
END
$$;

-- Lease up to p_max ready tasks, queue by queue in the order given,
-- skipping paused queues and taking no more than a rate-limited queue's
-- bucket holds. Rows come back unordered; `ord` is the queue's 1-based
-- position. One statement per queue, `FOR UPDATE SKIP LOCKED`: concurrent
-- workers never wait for each other nor take the same task.
CREATE FUNCTION sealq.dequeue(
    p_queues text[], p_max integer, p_now bigint, p_lease_ms bigint, p_worker text,
    p_token bigint)
RETURNS TABLE (id uuid, queue text, kind text, envelope bytea, meta bytea, state text,
               attempts integer, run_at bigint, last_error bytea, result bytea,
               archive_reason text, lease_expires_at bigint, finished_at bigint,
               updated_at bigint, replayed boolean, ord integer)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
    v_queue text;
    v_ord integer := 0;
    v_left integer := p_max;
    v_want integer;
    v_n integer;
    v_rate record;
    v_limited boolean;
    v_tokens double precision;
BEGIN
    -- Lock the buckets of every rate-limited queue asked for, in one order
    -- (two workers asking for the same queues in different orders must
    -- not deadlock).
    PERFORM 1 FROM sealq.queue_rates r WHERE r.queue = ANY (p_queues)
        ORDER BY r.queue FOR UPDATE;
    FOREACH v_queue IN ARRAY p_queues LOOP
        v_ord := v_ord + 1;
        EXIT WHEN v_left <= 0;
        CONTINUE WHEN EXISTS (SELECT 1 FROM sealq.paused_queues p WHERE p.queue = v_queue);
        v_want := v_left;
        SELECT r.rate_limit, r.period_ms, r.tokens, r.updated_at INTO v_rate
            FROM sealq.queue_rates r WHERE r.queue = v_queue FOR UPDATE;
        v_limited := FOUND;
        IF v_limited THEN
            v_tokens := least(v_rate.tokens + greatest(p_now - v_rate.updated_at, 0)::double precision
                                  * v_rate.rate_limit / v_rate.period_ms,
                              v_rate.rate_limit::double precision);
            v_want := least(v_want, greatest(floor(v_tokens), 0)::integer);
            CONTINUE WHEN v_want <= 0;
        END IF;
        RETURN QUERY
        WITH picked AS (
            SELECT t.id FROM sealq.tasks t
            WHERE t.queue = v_queue AND t.state IN ('pending', 'scheduled', 'retry')
              AND t.run_at <= p_now
            ORDER BY t.run_at, t.id
            LIMIT v_want
            FOR UPDATE SKIP LOCKED
        ), leased AS (
            UPDATE sealq.tasks t
            SET state = 'active', attempts = t.attempts + 1, lease_token = p_token,
                lease_expires_at = p_now + p_lease_ms, worker = p_worker, updated_at = p_now
            FROM picked WHERE t.id = picked.id
            RETURNING t.*
        )
        SELECT l.id, l.queue, l.kind, b.envelope, b.meta, l.state, l.attempts, l.run_at,
               l.last_error, l.result, l.archive_reason, l.lease_expires_at, l.finished_at,
               l.updated_at,
               EXISTS (SELECT 1 FROM sealq.completed_ids c WHERE c.id = l.id),
               v_ord
        FROM leased l LEFT JOIN sealq.task_bodies b ON b.id = l.id;
        GET DIAGNOSTICS v_n = ROW_COUNT;
        v_left := v_left - v_n;
        IF v_limited THEN
            UPDATE sealq.queue_rates r SET tokens = v_tokens - v_n,
                                           updated_at = greatest(v_rate.updated_at, p_now)
                WHERE r.queue = v_queue;
        END IF;
    END LOOP;
END
$$;

-- Apply a batch of acks, set-based; one row per ack (1-based `idx`).
-- p_kinds: `complete`, `retry`, `archive`, `requeue`. An ack applies only
-- to an `active` task holding its lease token; an id acked twice in one
-- batch is applied once (the first). `repeated`: a completion of an id the
-- replay memory already held (a second success).
CREATE FUNCTION sealq.ack(
    p_now bigint, p_ids uuid[], p_tokens bigint[], p_kinds text[], p_at bigint[],
    p_data bytea[], p_reasons text[])
RETURNS TABLE (idx integer, applied boolean, repeated boolean)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY
    WITH input AS (
        SELECT u.id, u.token, u.kind, u.at, u.data, u.reason, u.ord::integer AS pos
        FROM unnest(p_ids, p_tokens, p_kinds, p_at, p_data, p_reasons)
             WITH ORDINALITY AS u(id, token, kind, at, data, reason, ord)
    ), first AS (
        SELECT DISTINCT ON (i.id) i.* FROM input i ORDER BY i.id, i.pos
    ), done AS (
        UPDATE sealq.tasks t SET
            state = CASE f.kind WHEN 'complete' THEN 'completed' WHEN 'retry' THEN 'retry'
                                WHEN 'archive' THEN 'archived' ELSE 'pending' END,
            result = CASE WHEN f.kind = 'complete' THEN f.data ELSE t.result END,
            run_at = CASE WHEN f.kind = 'retry' THEN f.at ELSE t.run_at END,
            last_error = CASE WHEN f.kind IN ('retry', 'archive')
                              THEN coalesce(f.data, t.last_error) ELSE t.last_error END,
            archive_reason = CASE WHEN f.kind = 'archive' THEN f.reason
                                  ELSE t.archive_reason END,
            attempts = CASE WHEN f.kind = 'requeue' THEN greatest(t.attempts - 1, 0)
                            ELSE t.attempts END,
            lease_token = NULL, lease_expires_at = NULL, worker = NULL,
            finished_at = CASE WHEN f.kind IN ('complete', 'archive') THEN p_now
                               ELSE t.finished_at END,
            purge_at = CASE WHEN f.kind = 'complete' THEN p_now + t.retention_ms
                            ELSE t.purge_at END,
            updated_at = p_now
        FROM first f
        WHERE t.id = f.id AND t.state = 'active' AND t.lease_token = f.token
        RETURNING t.id, t.queue, f.kind, f.at, f.pos
    ), remembered AS (
        INSERT INTO sealq.completed_ids AS c (id, completed_at)
        SELECT d.id, p_now FROM done d WHERE d.kind = 'complete'
        ON CONFLICT (id) DO UPDATE
            SET completed_at = greatest(c.completed_at, excluded.completed_at)
        RETURNING c.id, (c.xmax::text <> '0') AS again
    ), woken AS (
        SELECT count(pg_notify('sealq_wake', w.queue)::text) AS n
        FROM (SELECT DISTINCT d.queue FROM done d
              WHERE d.kind = 'requeue' OR (d.kind = 'retry' AND d.at <= p_now)) w
    )
    SELECT i.pos, d.pos IS NOT NULL, coalesce(r.again, false)
    FROM input i
    LEFT JOIN done d ON d.pos = i.pos
    LEFT JOIN remembered r ON r.id = d.id
    CROSS JOIN woken;
END
$$;
