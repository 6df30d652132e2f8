-- sealq-postgres migration 4: the operator's task actions behind definer
-- functions (list, get, stats, delete, rerun, pause and resume, depth and
-- rate limits, re-sealing, erasure), so an operator login needs no table
-- privilege either. Each function is one statement the broker used to send
-- as plain SQL (same parameters, `$n`); multi-statement actions still run
-- in one transaction of the caller. Rate limits are read by workers too.

-- Delete tasks in any state; their ids join the replay memory.
CREATE FUNCTION sealq.delete_tasks(uuid[], bigint)
RETURNS SETOF uuid
LANGUAGE sql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    WITH d AS (DELETE FROM sealq.tasks WHERE id = ANY($1) RETURNING id)
    INSERT INTO sealq.completed_ids AS c (id, completed_at) SELECT id, $2 FROM d
    ON CONFLICT (id) DO UPDATE SET completed_at = greatest(c.completed_at, excluded.completed_at)
    RETURNING c.id
$$;

-- Archived tasks back to pending with attempts reset; their queues.
CREATE FUNCTION sealq.rerun_archived(uuid[], bigint)
RETURNS SETOF text
LANGUAGE sql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    UPDATE sealq.tasks SET state = 'pending', attempts = 0, run_at = $2,
        archive_reason = NULL, finished_at = NULL, updated_at = $2
    WHERE id = ANY($1) AND state = 'archived' RETURNING queue
$$;

-- Pause a queue.
CREATE FUNCTION sealq.pause_queue(text, bigint)
RETURNS SETOF text
LANGUAGE sql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    INSERT INTO sealq.paused_queues (queue, paused_at) VALUES ($1, $2)
    ON CONFLICT DO NOTHING RETURNING queue
$$;

-- Resume a queue.
CREATE FUNCTION sealq.resume_queue(text)
RETURNS SETOF text
LANGUAGE sql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    DELETE FROM sealq.paused_queues WHERE queue = $1 RETURNING queue
$$;

-- Set a queue's cap on waiting tasks.
CREATE FUNCTION sealq.set_max_depth(text, bigint)
RETURNS SETOF text
LANGUAGE sql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    INSERT INTO sealq.queue_limits (queue, max_depth) VALUES ($1, $2)
    ON CONFLICT (queue) DO UPDATE SET max_depth = excluded.max_depth RETURNING queue
$$;

-- Remove a queue's cap.
CREATE FUNCTION sealq.clear_max_depth(text)
RETURNS SETOF text
LANGUAGE sql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    DELETE FROM sealq.queue_limits WHERE queue = $1 RETURNING queue
$$;

-- Set a queue's rate limit (a full bucket).
CREATE FUNCTION sealq.set_rate_limit(text, bigint, bigint, bigint)
RETURNS SETOF text
LANGUAGE sql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    INSERT INTO sealq.queue_rates (queue, rate_limit, period_ms, tokens, updated_at)
    VALUES ($1, $2, $3, $2::float8, $4)
    ON CONFLICT (queue) DO UPDATE SET rate_limit = excluded.rate_limit,
        period_ms = excluded.period_ms, tokens = excluded.tokens,
        updated_at = excluded.updated_at RETURNING queue
$$;

-- Remove a queue's rate limit.
CREATE FUNCTION sealq.clear_rate_limit(text)
RETURNS SETOF text
LANGUAGE sql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    DELETE FROM sealq.queue_rates WHERE queue = $1 RETURNING queue
$$;

-- Compare-and-swap a task's sealed payload (re-sealing).
CREATE FUNCTION sealq.swap_payload(uuid, text, bytea, bytea)
RETURNS SETOF uuid
LANGUAGE sql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    UPDATE sealq.task_bodies b SET envelope = $3 FROM sealq.tasks t
    WHERE b.id = t.id AND t.id = $1 AND t.queue = $2 AND b.envelope = $4 RETURNING b.id
$$;

-- Compare-and-swap a task's sealed result.
CREATE FUNCTION sealq.swap_result(uuid, text, bytea, bytea)
RETURNS SETOF uuid
LANGUAGE sql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    UPDATE sealq.tasks SET result = $3 WHERE id = $1 AND queue = $2 AND result = $4
    RETURNING id
$$;

-- Compare-and-swap a task's sealed error.
CREATE FUNCTION sealq.swap_error(uuid, text, bytea, bytea)
RETURNS SETOF uuid
LANGUAGE sql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    UPDATE sealq.tasks SET last_error = $3 WHERE id = $1 AND queue = $2
    AND last_error = $4 RETURNING id
$$;

-- Erasure: the states of the given tasks, counted.
CREATE FUNCTION sealq.erase_states(uuid[])
RETURNS TABLE (r_state text, r_count bigint)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT state, count(*) FROM sealq.tasks WHERE id = ANY($1) GROUP BY state
$$;

-- Erasure: release the tasks' unique keys.
CREATE FUNCTION sealq.erase_unique_keys(uuid[])
RETURNS SETOF text
LANGUAGE sql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    DELETE FROM sealq.unique_keys WHERE task_id = ANY($1) RETURNING key
$$;

-- Erasure: remember the ids of the tasks about to be deleted.
CREATE FUNCTION sealq.erase_remember(uuid[], bigint)
RETURNS SETOF uuid
LANGUAGE sql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    INSERT INTO sealq.completed_ids AS c (id, completed_at)
    SELECT id, $2 FROM sealq.tasks WHERE id = ANY($1) AND state <> 'active'
    ON CONFLICT (id) DO UPDATE SET completed_at = greatest(c.completed_at, excluded.completed_at)
    RETURNING c.id
$$;

-- Erasure: delete the tasks not running.
CREATE FUNCTION sealq.erase_delete(uuid[])
RETURNS SETOF uuid
LANGUAGE sql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    DELETE FROM sealq.tasks WHERE id = ANY($1) AND state <> 'active' RETURNING id
$$;

-- Erasure: wipe the payload of the running ones.
CREATE FUNCTION sealq.erase_wipe(uuid[])
RETURNS SETOF uuid
LANGUAGE sql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    UPDATE sealq.task_bodies b SET envelope = '\x'::bytea FROM sealq.tasks t
    WHERE b.id = t.id AND t.id = ANY($1) AND t.state = 'active' RETURNING b.id
$$;

-- Erasure: archive the running ones as erased (their leases revoked).
CREATE FUNCTION sealq.erase_archive(uuid[], bigint)
RETURNS SETOF uuid
LANGUAGE sql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    UPDATE sealq.tasks SET state = 'archived', archive_reason = 'erased', result = NULL,
        last_error = NULL, lease_token = NULL, lease_expires_at = NULL, worker = NULL,
        finished_at = $2, updated_at = $2
    WHERE id = ANY($1) AND state = 'active' RETURNING id
$$;

-- Erasure: lock the given tasks for the rest of the transaction.
CREATE FUNCTION sealq.lock_tasks(uuid[])
RETURNS SETOF uuid
LANGUAGE sql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT id FROM sealq.tasks WHERE id = ANY($1) FOR UPDATE
$$;

-- Erasure: lock and list a subject's tasks.
CREATE FUNCTION sealq.subject_task_ids(bytea)
RETURNS SETOF uuid
LANGUAGE sql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT id FROM sealq.tasks WHERE subject_tag = $1 FOR UPDATE
$$;

-- One task by id.
CREATE FUNCTION sealq.get_task(uuid)
RETURNS TABLE (r_id uuid, r_queue text, r_kind text, r_envelope bytea, r_meta bytea, r_state text, r_attempts integer, r_run_at bigint, r_last_error bytea, r_result bytea, r_archive_reason text, r_lease_expires_at bigint, r_finished_at bigint, r_updated_at bigint)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT t.id, t.queue, t.kind, b.envelope, b.meta, t.state, t.attempts, t.run_at, t.last_error, t.result, t.archive_reason, t.lease_expires_at, t.finished_at, t.updated_at FROM sealq.tasks t LEFT JOIN sealq.task_bodies b ON b.id = t.id WHERE t.id = $1
$$;

-- Task counts by queue and state.
CREATE FUNCTION sealq.task_counts()
RETURNS TABLE (r_queue text, r_state text, r_count bigint)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT queue, state, count(*) FROM sealq.tasks GROUP BY queue, state
$$;

-- Every queue with a setting: paused, depth cap, rate limit.
CREATE FUNCTION sealq.queue_settings()
RETURNS TABLE (r_queue text, r_paused boolean, r_max_depth bigint, r_rate_limit bigint, r_period_ms bigint)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT q.queue, p.queue IS NOT NULL, l.max_depth, r.rate_limit, r.period_ms
    FROM (SELECT queue FROM sealq.paused_queues UNION SELECT queue FROM sealq.queue_limits
          UNION SELECT queue FROM sealq.queue_rates) q
    LEFT JOIN sealq.paused_queues p ON p.queue = q.queue
    LEFT JOIN sealq.queue_limits l ON l.queue = q.queue
    LEFT JOIN sealq.queue_rates r ON r.queue = q.queue
$$;

-- The rate limits of the given queues.
CREATE FUNCTION sealq.queue_rate_limits(text[])
RETURNS TABLE (r_queue text, r_rate_limit bigint, r_period_ms bigint)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT queue, rate_limit, period_ms FROM sealq.queue_rates WHERE queue = ANY($1)
$$;

-- Tasks matching the filters (NULL: any), by id after `p_after`, at most
-- `p_limit`. Dynamic SQL from fixed fragments only (values are parameters),
-- so each call is planned with its filters and uses the matching index.
CREATE FUNCTION sealq.list_tasks(
    p_queue text, p_state text, p_subject bytea, p_after uuid, p_limit bigint)
RETURNS TABLE (r_id uuid, r_queue text, r_kind text, r_envelope bytea, r_meta bytea, r_state text, r_attempts integer, r_run_at bigint, r_last_error bytea, r_result bytea, r_archive_reason text, r_lease_expires_at bigint, r_finished_at bigint, r_updated_at bigint)
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_sql text := 'SELECT t.id, t.queue, t.kind, b.envelope, b.meta, t.state, t.attempts, t.run_at, t.last_error, t.result, t.archive_reason, t.lease_expires_at, t.finished_at, t.updated_at FROM sealq.tasks t LEFT JOIN sealq.task_bodies b ON b.id = t.id WHERE true';
BEGIN
    IF p_queue IS NOT NULL THEN v_sql := v_sql || ' AND t.queue = $1'; END IF;
    IF p_state IS NOT NULL THEN v_sql := v_sql || ' AND t.state = $2'; END IF;
    IF p_subject IS NOT NULL THEN v_sql := v_sql || ' AND t.subject_tag = $3'; END IF;
    IF p_after IS NOT NULL THEN v_sql := v_sql || ' AND t.id > $4'; END IF;
    v_sql := v_sql || ' ORDER BY t.id LIMIT $5';
    RETURN QUERY EXECUTE v_sql USING p_queue, p_state, p_subject, p_after, p_limit;
END
$$;

-- The waiting tasks only (pending, scheduled, retry): what a worker samples
-- at start to check that its keyring opens them (`sealq::keyring_check`),
-- no more than it could claim. Other states are refused.
CREATE FUNCTION sealq.list_waiting(
    p_queue text, p_state text, p_subject bytea, p_after uuid, p_limit bigint)
RETURNS TABLE (r_id uuid, r_queue text, r_kind text, r_envelope bytea, r_meta bytea,
               r_state text, r_attempts integer, r_run_at bigint, r_last_error bytea,
               r_result bytea, r_archive_reason text, r_lease_expires_at bigint,
               r_finished_at bigint, r_updated_at bigint)
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF p_state IS NULL OR p_state NOT IN ('pending', 'scheduled', 'retry') THEN
        RAISE EXCEPTION 'sealq.list_waiting lists pending, scheduled or retry tasks only'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN QUERY SELECT * FROM sealq.list_tasks(p_queue, p_state, p_subject, p_after, p_limit);
END
$$;
