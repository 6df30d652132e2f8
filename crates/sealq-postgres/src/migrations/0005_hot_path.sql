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

-- Enqueue: one task per call gets a path of its own (same signature,
-- results and grants as in migration 1).
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

