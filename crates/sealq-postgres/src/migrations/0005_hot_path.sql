-- sealq-postgres migration 5: a cheaper hot path (issue 23, measured in
-- docs/benchmarks.md, "Postgres speed (issue 23)").
--
-- Every state change of a task is an update that is not HOT (the state is
-- a predicate of the partial indexes), so each one adds an entry to every
-- index of `sealq.tasks` whose predicate the new row matches. The index on
-- (queue, state) matched every row: one more index entry (and WAL record)
-- per enqueue, per claim and per ack. It goes; the queries it served are
-- served by the partial indexes (ready work by `tasks_ready`, leases by
-- `tasks_lease`, completed tasks by `tasks_purge`), and archived tasks, the
-- ones an operator lists by queue, get a partial index of their own, which
-- the hot path never touches. `task_counts` reads the table.
DROP INDEX sealq.tasks_queue_state;
CREATE INDEX tasks_archived ON sealq.tasks (queue, id) WHERE state = 'archived';

-- Acks: the replay memory is written with a plain insert plus an update of
-- the ids it already held, instead of an upsert. Same signature, result
-- and grants as in migration 1.
CREATE OR REPLACE FUNCTION sealq.ack(
    p_now bigint, p_ids uuid[], p_tokens bigint[], p_kinds text[], p_at bigint[],
    p_data bytea[], p_reasons text[])
RETURNS TABLE (idx integer, applied boolean, repeated boolean)
LANGUAGE plpgsql SECURITY DEFINER
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
    ), again AS (
        -- A second success of a remembered id: refresh the memory.
        UPDATE sealq.completed_ids c SET completed_at = greatest(c.completed_at, p_now)
        FROM done d WHERE d.kind = 'complete' AND c.id = d.id
        RETURNING c.id
    ), remembered AS (
        -- A plain insert, not an upsert (which costs a speculative
        -- insertion and one more WAL record per row): the task row's lock,
        -- taken by `done`, keeps any other writer of this id out.
        INSERT INTO sealq.completed_ids (id, completed_at)
        SELECT d.id, p_now FROM done d
        WHERE d.kind = 'complete'
          AND NOT EXISTS (SELECT 1 FROM sealq.completed_ids c WHERE c.id = d.id)
    ), woken AS (
        SELECT count(pg_notify('sealq_wake', w.queue)::text) AS n
        FROM (SELECT DISTINCT d.queue FROM done d
              WHERE d.kind = 'requeue' OR (d.kind = 'retry' AND d.at <= p_now)) w
    )
    SELECT i.pos, d.pos IS NOT NULL, (a.id IS NOT NULL)
    FROM input i
    LEFT JOIN done d ON d.pos = i.pos
    LEFT JOIN again a ON a.id = d.id
    CROSS JOIN woken;
END
$$;

-- Enqueue: one task per call gets a path of its own, and the set-based path
-- joins no rows of the batch with each other (same signature, results and
-- grants as in migration 1).
CREATE OR REPLACE FUNCTION sealq.enqueue(
    p_now bigint, p_ids uuid[], p_queues text[], p_kinds text[], p_subjects bytea[],
    p_max_retries integer[], p_retention_ms bigint[], p_run_at bigint[], p_envelopes bytea[],
    p_metas bytea[], p_unique_keys text[], p_unique_ttl_ms bigint[])
RETURNS TABLE (idx integer, outcome text, existing uuid, max_depth bigint)
LANGUAGE plpgsql SECURITY DEFINER
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
    v_n integer := coalesce(array_length(p_ids, 1), 0);
    v_stored uuid[];
BEGIN
    -- One task, no unique key, a queue without a depth cap (a one-call
    -- enqueue): a few plain statements, without the set-based machinery
    -- below, which costs more than the insert itself for one row.
    IF coalesce(array_length(p_ids, 1), 0) = 1 AND p_unique_keys[1] IS NULL
       AND NOT EXISTS (SELECT 1 FROM sealq.queue_limits l WHERE l.queue = p_queues[1]) THEN
        idx := 1; existing := NULL; max_depth := NULL; outcome := 'id_exists';
        IF EXISTS (SELECT 1 FROM sealq.completed_ids c WHERE c.id = p_ids[1]) THEN
            RETURN NEXT; RETURN;
        END IF;
        v_state := CASE WHEN p_run_at[1] <= p_now THEN 'pending' ELSE 'scheduled' END;
        INSERT INTO sealq.tasks AS t (id, queue, kind, subject_tag, max_retries, retention_ms,
                                      state, attempts, run_at, updated_at)
            VALUES (p_ids[1], p_queues[1], p_kinds[1], p_subjects[1], p_max_retries[1],
                    p_retention_ms[1], v_state, 0, p_run_at[1], p_now)
            ON CONFLICT (id) DO NOTHING;
        IF FOUND THEN
            INSERT INTO sealq.task_bodies (id, envelope, meta)
                VALUES (p_ids[1], p_envelopes[1], p_metas[1]);
            IF v_state = 'pending' THEN
                PERFORM pg_notify('sealq_wake', p_queues[1]);
            END IF;
            outcome := 'enqueued';
        END IF;
        RETURN NEXT; RETURN;
    END IF;
    -- Fast path, set-based: a batch of distinct ids, none stored or
    -- remembered yet, without unique keys, into queues without a depth cap
    -- (the common case). No join between rows of the batch: the planner
    -- cannot see how long array parameters are, joined them by nested
    -- loops, and a batch of 1,000 compared a million pairs twice. The ids
    -- are checked with one primary-key probe each (`LATERAL … LIMIT 1`:
    -- never a scan of the table, whatever the statistics say).
    IF NOT EXISTS (SELECT 1 FROM unnest(p_unique_keys) AS k WHERE k IS NOT NULL)
       AND NOT EXISTS (SELECT 1 FROM sealq.queue_limits l WHERE l.queue = ANY (p_queues))
       AND (SELECT count(DISTINCT d) FROM unnest(p_ids) AS d) = v_n
       AND NOT EXISTS (SELECT 1 FROM unnest(p_ids) AS d(id) CROSS JOIN LATERAL
                       (SELECT 1 FROM sealq.tasks t WHERE t.id = d.id LIMIT 1) AS x)
       AND NOT EXISTS (SELECT 1 FROM unnest(p_ids) AS d(id) CROSS JOIN LATERAL
                       (SELECT 1 FROM sealq.completed_ids c WHERE c.id = d.id LIMIT 1) AS x) THEN
        WITH ins AS (
            INSERT INTO sealq.tasks (id, queue, kind, subject_tag, max_retries, retention_ms,
                                     state, attempts, run_at, updated_at)
            SELECT u.id, u.queue, u.kind, u.subject, u.max_retries, u.retention_ms,
                   CASE WHEN u.run_at <= p_now THEN 'pending' ELSE 'scheduled' END,
                   0, u.run_at, p_now
            FROM unnest(p_ids, p_queues, p_kinds, p_subjects, p_max_retries, p_retention_ms,
                        p_run_at)
                 AS u(id, queue, kind, subject, max_retries, retention_ms, run_at)
            ON CONFLICT (id) DO NOTHING
            RETURNING sealq.tasks.id
        )
        SELECT array_agg(ins.id) INTO v_stored FROM ins;
        IF coalesce(cardinality(v_stored), 0) = v_n THEN
            INSERT INTO sealq.task_bodies (id, envelope, meta)
                SELECT u.id, u.envelope, u.meta
                FROM unnest(p_ids, p_envelopes, p_metas) AS u(id, envelope, meta);
            PERFORM pg_notify('sealq_wake', w.q) FROM (
                SELECT DISTINCT u.q FROM unnest(p_queues, p_run_at) AS u(q, r)
                WHERE u.r <= p_now) AS w;
            RETURN QUERY SELECT g, 'enqueued'::text, NULL::uuid, NULL::bigint
                FROM generate_series(1, v_n) AS g;
            RETURN;
        END IF;
        -- A concurrent call stored some of these ids after the check (a
        -- client retrying a batch): bodies and wake-ups for this call's
        -- rows only. Rare, so a plain scan of the array is fine here.
        INSERT INTO sealq.task_bodies (id, envelope, meta)
            SELECT u.id, u.envelope, u.meta
            FROM unnest(p_ids, p_envelopes, p_metas) AS u(id, envelope, meta)
            WHERE u.id = ANY (v_stored);
        PERFORM pg_notify('sealq_wake', w.q) FROM (
            SELECT DISTINCT u.q FROM unnest(p_ids, p_queues, p_run_at) AS u(id, q, r)
            WHERE u.r <= p_now AND u.id = ANY (v_stored)) AS w;
        RETURN QUERY SELECT u.ord::integer,
                            CASE WHEN u.id = ANY (v_stored) THEN 'enqueued' ELSE 'id_exists' END,
                            NULL::uuid, NULL::bigint
            FROM unnest(p_ids) WITH ORDINALITY AS u(id, ord);
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


-- Dequeue: the replay-memory check of each leased task is a primary-key
-- probe (same signature, results and grants as in migration 1).
CREATE OR REPLACE FUNCTION sealq.dequeue(
    p_queues text[], p_max integer, p_now bigint, p_lease_ms bigint, p_worker text,
    p_token bigint)
RETURNS TABLE (id uuid, queue text, kind text, envelope bytea, meta bytea, state text,
               attempts integer, run_at bigint, last_error bytea, result bytea,
               archive_reason text, lease_expires_at bigint, finished_at bigint,
               updated_at bigint, replayed boolean, ord integer)
LANGUAGE plpgsql SECURITY DEFINER
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
               r.id IS NOT NULL,
               v_ord
        FROM leased l LEFT JOIN sealq.task_bodies b ON b.id = l.id
        -- One primary-key probe per leased task, whatever the planner
        -- thinks of the table's size: an EXISTS here may be planned (and
        -- the plan kept for the session) as a hashed scan of the whole
        -- replay memory, once per call.
        LEFT JOIN LATERAL (SELECT c.id FROM sealq.completed_ids c WHERE c.id = l.id LIMIT 1) r
            ON true;
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

