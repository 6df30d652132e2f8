-- sealq-postgres migration 15: a cheaper enqueue, one call per task and in
-- batches (issue 23; measured in docs/benchmarks.md, "Postgres enqueue at
-- session 10").
--
-- Batches: the fast path's two inserts read the argument arrays with
-- `unnest` in the select list (a ProjectSet node, row by row) instead of
-- `unnest(a, b, …)` in FROM, which is a function scan that first copies
-- every row, sealed envelopes included, into a tuple store. The replay
-- memory is first probed once for the batch's id range, and by primary
-- key per id only when that range holds a remembered id (1,000 fresh ids
-- against 100,000 remembered ones: 0.25-0.34 ms instead of 1.2-1.3), and
-- a batch into one queue notifies without a query. Same checks, same
-- results.
--
-- One task: `sealq.enqueue_one` takes the task as plain values, not as
-- twelve one-element arrays (plpgsql turns every array argument into an
-- expanded array on entry, a memory context each), and stores the task
-- and its body in one statement that checks the queue's depth cap and the
-- replay memory itself. When it stores nothing (a capped queue, an id in
-- the replay memory or already stored) it hands the task to
-- `sealq.enqueue`, which gives the outcome exactly as before. The one-task
-- path inside `sealq.enqueue` (unique keys aside) is the same single
-- statement. The producer and admin roles get EXECUTE on `enqueue_one`
-- here already, copied from `sealq.enqueue`'s grants, so a role setup
-- applied before this migration keeps enqueueing.
--
-- Both functions plan their statements generically from the first call
-- (`plan_cache_mode`): a custom plan of the batch statements copies the
-- batch's arrays into the plan as constants, 0.4-0.7 ms for 1,000 tasks,
-- which plpgsql paid on a session's first five calls and again whenever
-- the generic plan looked dearer.
CREATE OR REPLACE FUNCTION sealq.enqueue(
    p_now bigint, p_ids uuid[], p_queues text[], p_kinds text[], p_subjects bytea[],
    p_max_retries integer[], p_retention_ms bigint[], p_run_at bigint[], p_envelopes bytea[],
    p_metas bytea[], p_unique_keys text[], p_unique_ttl_ms bigint[])
RETURNS TABLE (idx integer, outcome text, existing uuid, max_depth bigint)
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET enable_seqscan = off
SET plan_cache_mode = force_generic_plan
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
BEGIN
    -- One task without a unique key (a one-call enqueue): one statement
    -- stores the task and its body, unless its queue has a depth cap, its
    -- id is in the replay memory, or a task holds the id already. Then
    -- nothing is stored and the general path below gives the outcome.
    IF v_n = 1 AND p_unique_keys[1] IS NULL THEN
        v_state := CASE WHEN p_run_at[1] <= p_now THEN 'pending' ELSE 'scheduled' END;
        WITH t AS (
            INSERT INTO sealq.tasks AS t (id, queue, kind, subject_tag, max_retries,
                                          retention_ms, state, attempts, run_at, updated_at)
            SELECT p_ids[1], p_queues[1], p_kinds[1], p_subjects[1], p_max_retries[1],
                   p_retention_ms[1], v_state, 0, p_run_at[1], p_now
            WHERE NOT EXISTS (SELECT 1 FROM sealq.queue_limits l WHERE l.queue = p_queues[1])
              AND NOT EXISTS (SELECT 1 FROM sealq.completed_ids c WHERE c.id = p_ids[1])
            ON CONFLICT (id) DO NOTHING
            RETURNING t.id
        )
        INSERT INTO sealq.task_bodies (id, envelope, meta)
            SELECT t.id, p_envelopes[1], p_metas[1] FROM t;
        IF FOUND THEN
            IF v_state = 'pending' THEN
                PERFORM pg_notify('sealq_wake', p_queues[1]);
            END IF;
            idx := 1; outcome := 'enqueued'; existing := NULL; max_depth := NULL;
            RETURN NEXT; RETURN;
        END IF;
    END IF;
    -- Fast path, set-based: a batch without unique keys, into queues
    -- without a depth cap, none of whose ids the replay memory holds (the
    -- common case). Plain inserts, no `ON CONFLICT`: a speculative
    -- insertion costs an extra WAL record and index probe per row. An id
    -- that is already stored, or twice in the batch, or stored by a
    -- concurrent call, raises `unique_violation`; the block's
    -- subtransaction then undoes this path's rows and the general path
    -- below gives each task its own result. No join between rows of the
    -- batch (the planner cannot see how long array parameters are, and
    -- joined them by nested loops); the replay memory is checked with one
    -- primary-key probe per id (`LATERAL … LIMIT 1`). The inserts read the
    -- arrays with `unnest` in the select list: row by row, without the
    -- tuple store a function scan fills first (migration 15). One task
    -- that the statement above did not store goes straight to the general
    -- path.
    IF v_n > 1 AND NOT EXISTS (SELECT 1 FROM unnest(p_unique_keys) AS k WHERE k IS NOT NULL)
       AND NOT EXISTS (SELECT 1 FROM sealq.queue_limits l WHERE l.queue = ANY (p_queues))
       -- The replay memory: first one range probe between the batch's
       -- least and greatest id (fresh UUID v7 ids are newer than any
       -- completed one, so it finds nothing), then, only if it finds
       -- something, one primary-key probe per id.
       AND (NOT EXISTS (SELECT 1 FROM sealq.completed_ids c
                        WHERE c.id >= (SELECT d FROM unnest(p_ids) AS d ORDER BY d LIMIT 1)
                          AND c.id <= (SELECT d FROM unnest(p_ids) AS d
                                       ORDER BY d DESC LIMIT 1))
            OR NOT EXISTS (SELECT 1 FROM unnest(p_ids) AS d(id) CROSS JOIN LATERAL
                           (SELECT 1 FROM sealq.completed_ids c WHERE c.id = d.id LIMIT 1) AS x))
       THEN
        BEGIN
            INSERT INTO sealq.tasks (id, queue, kind, subject_tag, max_retries, retention_ms,
                                     state, attempts, run_at, updated_at)
            SELECT u.id, u.queue, u.kind, u.subject, u.max_retries, u.retention_ms,
                   CASE WHEN u.run_at <= p_now THEN 'pending' ELSE 'scheduled' END,
                   0, u.run_at, p_now
            FROM (SELECT unnest(p_ids) AS id, unnest(p_queues) AS queue,
                         unnest(p_kinds) AS kind, unnest(p_subjects) AS subject,
                         unnest(p_max_retries) AS max_retries,
                         unnest(p_retention_ms) AS retention_ms,
                         unnest(p_run_at) AS run_at) AS u;
            INSERT INTO sealq.task_bodies (id, envelope, meta)
                SELECT unnest(p_ids), unnest(p_envelopes), unnest(p_metas);
            -- One notification per queue that got ready work; a batch
            -- into one queue (the common case) without a query.
            IF p_queues[1] = ALL (p_queues) THEN
                IF p_now >= ANY (p_run_at) THEN
                    PERFORM pg_notify('sealq_wake', p_queues[1]);
                END IF;
            ELSE
                PERFORM pg_notify('sealq_wake', w.q) FROM (
                    SELECT DISTINCT u.q FROM unnest(p_queues, p_run_at) AS u(q, r)
                    WHERE u.r <= p_now) AS w;
            END IF;
            RETURN QUERY SELECT g, 'enqueued'::text, NULL::uuid, NULL::bigint
                FROM generate_series(1, v_n) AS g;
            RETURN;
        EXCEPTION WHEN unique_violation THEN
            NULL;  -- some id is taken: the general path below
        END;
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


-- One task, its fields as plain values; the outcome as `sealq.enqueue`
-- gives it (`enqueued`, `id_exists`, `queue_full` with the cap). Unique
-- keys go through `sealq.enqueue`.
CREATE FUNCTION sealq.enqueue_one(
    p_now bigint, p_id uuid, p_queue text, p_kind text, p_subject bytea,
    p_max_retries integer, p_retention_ms bigint, p_run_at bigint, p_envelope bytea,
    p_meta bytea,
    OUT outcome text, OUT existing uuid, OUT max_depth bigint)
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET enable_seqscan = off
SET plan_cache_mode = force_generic_plan
AS $$
#variable_conflict use_variable
DECLARE
    v_state text := CASE WHEN p_run_at <= p_now THEN 'pending' ELSE 'scheduled' END;
BEGIN
    WITH t AS (
        INSERT INTO sealq.tasks AS t (id, queue, kind, subject_tag, max_retries,
                                      retention_ms, state, attempts, run_at, updated_at)
        SELECT p_id, p_queue, p_kind, p_subject, p_max_retries, p_retention_ms, v_state, 0,
               p_run_at, p_now
        WHERE NOT EXISTS (SELECT 1 FROM sealq.queue_limits l WHERE l.queue = p_queue)
          AND NOT EXISTS (SELECT 1 FROM sealq.completed_ids c WHERE c.id = p_id)
        ON CONFLICT (id) DO NOTHING
        RETURNING t.id
    )
    INSERT INTO sealq.task_bodies (id, envelope, meta)
        SELECT t.id, p_envelope, p_meta FROM t;
    IF FOUND THEN
        IF v_state = 'pending' THEN
            PERFORM pg_notify('sealq_wake', p_queue);
        END IF;
        outcome := 'enqueued';
        RETURN;
    END IF;
    -- Nothing stored: the general path says why.
    SELECT e.outcome, e.existing, e.max_depth INTO outcome, existing, max_depth
    FROM sealq.enqueue(p_now, ARRAY[p_id], ARRAY[p_queue], ARRAY[p_kind], ARRAY[p_subject],
                       ARRAY[p_max_retries], ARRAY[p_retention_ms], ARRAY[p_run_at],
                       ARRAY[p_envelope], ARRAY[p_meta], ARRAY[NULL::text],
                       ARRAY[NULL::bigint]) AS e;
END
$$;
REVOKE ALL ON FUNCTION sealq.enqueue_one(bigint, uuid, text, text, bytea, integer, bigint,
                                         bigint, bytea, bytea) FROM PUBLIC;

-- Whoever may call `sealq.enqueue` may call `sealq.enqueue_one`.
DO $$
DECLARE
    r record;
BEGIN
    FOR r IN
        SELECT DISTINCT a.grantee::regrole AS grantee
        FROM pg_catalog.pg_proc p, pg_catalog.aclexplode(p.proacl) a
        WHERE p.oid = 'sealq.enqueue(bigint, uuid[], text[], text[], bytea[], integer[],
                                     bigint[], bigint[], bytea[], bytea[], text[],
                                     bigint[])'::regprocedure
          AND a.privilege_type = 'EXECUTE' AND a.grantee <> 0 AND a.grantee <> p.proowner
    LOOP
        EXECUTE format('GRANT EXECUTE ON FUNCTION sealq.enqueue_one(bigint, uuid, text, text, '
                       'bytea, integer, bigint, bigint, bytea, bytea) TO %s', r.grantee);
    END LOOP;
END
$$;
