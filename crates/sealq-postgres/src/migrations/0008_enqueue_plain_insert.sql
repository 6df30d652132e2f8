-- sealq-postgres migration 8: a batch enqueue's fast path inserts without
-- `ON CONFLICT` (issue 23; measured in docs/benchmarks.md, "Postgres batch
-- enqueue without speculative insertion").
--
-- `INSERT … ON CONFLICT DO NOTHING` is a speculative insertion: per row an
-- extra probe of the primary key and an extra WAL record (the insertion's
-- confirmation). The fast path (no unique keys, no depth cap, no id in
-- the replay memory) now inserts plainly inside a block that catches
-- `unique_violation`: an id already stored, twice in the batch, or stored
-- by a concurrent call rolls back the block's subtransaction, and the
-- general path gives each task its own result, as before. The batch's
-- distinct-ids count and its per-id probe of `sealq.tasks` go too: the
-- primary key itself now does that check. Same signature, results and
-- grants as in migration 5.
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
    -- primary-key probe per id (`LATERAL … LIMIT 1`).
    IF NOT EXISTS (SELECT 1 FROM unnest(p_unique_keys) AS k WHERE k IS NOT NULL)
       AND NOT EXISTS (SELECT 1 FROM sealq.queue_limits l WHERE l.queue = ANY (p_queues))
       AND NOT EXISTS (SELECT 1 FROM unnest(p_ids) AS d(id) CROSS JOIN LATERAL
                       (SELECT 1 FROM sealq.completed_ids c WHERE c.id = d.id LIMIT 1) AS x) THEN
        BEGIN
            INSERT INTO sealq.tasks (id, queue, kind, subject_tag, max_retries, retention_ms,
                                     state, attempts, run_at, updated_at)
            SELECT u.id, u.queue, u.kind, u.subject, u.max_retries, u.retention_ms,
                   CASE WHEN u.run_at <= p_now THEN 'pending' ELSE 'scheduled' END,
                   0, u.run_at, p_now
            FROM unnest(p_ids, p_queues, p_kinds, p_subjects, p_max_retries, p_retention_ms,
                        p_run_at)
                 AS u(id, queue, kind, subject, max_retries, retention_ms, run_at);
            INSERT INTO sealq.task_bodies (id, envelope, meta)
                SELECT u.id, u.envelope, u.meta
                FROM unnest(p_ids, p_envelopes, p_metas) AS u(id, envelope, meta);
            PERFORM pg_notify('sealq_wake', w.q) FROM (
                SELECT DISTINCT u.q FROM unnest(p_queues, p_run_at) AS u(q, r)
                WHERE u.r <= p_now) AS w;
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
