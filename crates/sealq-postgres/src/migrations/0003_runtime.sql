-- sealq-postgres migration 3: the rest of the runtime behind definer
-- functions, and the registry of live workers.
--
-- A worker's whole loop (claim, ack, extend, quarantine, forward due tasks,
-- recover expired leases, purge, key checks, its live-worker registration)
-- now runs through `SECURITY DEFINER` functions, so a login role with no
-- table privilege at all can run a worker (docs/postgres-roles.md). Each
-- function is one statement the broker used to send as plain SQL; each
-- pins its search_path and names every object with its schema.

-- The hot functions of migration 1 run with the owner's rights too.
ALTER FUNCTION sealq.enqueue(bigint, uuid[], text[], text[], bytea[], integer[], bigint[],
    bigint[], bytea[], bytea[], text[], bigint[]) SECURITY DEFINER;
ALTER FUNCTION sealq.dequeue(text[], integer, bigint, bigint, text, bigint) SECURITY DEFINER;
ALTER FUNCTION sealq.ack(bigint, uuid[], bigint[], text[], bigint[], bytea[], text[])
    SECURITY DEFINER;

-- Extend held leases to `p_expires`; the (id, token) pairs still held.
CREATE FUNCTION sealq.extend_leases(p_ids uuid[], p_tokens bigint[], p_expires bigint)
RETURNS TABLE (r_id uuid, r_token bigint)
LANGUAGE sql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    UPDATE sealq.tasks t SET lease_expires_at = p_expires
    FROM unnest(p_ids, p_tokens) AS l(id, token)
    WHERE t.id = l.id AND t.state = 'active' AND t.lease_token = l.token
    RETURNING t.id, t.lease_token
$$;

-- Archive undecodable tasks as `integrity` (a worker meets them at claim).
CREATE FUNCTION sealq.quarantine(p_ids uuid[], p_now bigint)
RETURNS SETOF uuid
LANGUAGE sql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    UPDATE sealq.tasks SET state = 'archived', archive_reason = 'integrity',
        lease_token = NULL, lease_expires_at = NULL, worker = NULL, purge_at = NULL,
        attempts = greatest(attempts, 0), finished_at = p_now, updated_at = p_now
    WHERE id = ANY(p_ids) RETURNING id
$$;

-- The keyring's check values (never a key).
CREATE FUNCTION sealq.key_checks_read()
RETURNS TABLE (r_key_id text, r_check_value text)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT key_id, check_value FROM sealq.key_checks ORDER BY key_id
$$;

-- Record check values, keeping the first one recorded for a key id.
CREATE FUNCTION sealq.key_checks_record(p_ids text[], p_values text[], p_now bigint)
RETURNS SETOF text
LANGUAGE sql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    INSERT INTO sealq.key_checks (key_id, check_value, recorded_at)
    SELECT k.id, k.v, p_now FROM unnest(p_ids, p_values) AS k(id, v)
    ON CONFLICT (key_id) DO NOTHING RETURNING key_id
$$;

-- Move due scheduled/retry tasks to pending; the queues of the moved rows.
CREATE FUNCTION sealq.forward_due(p_now bigint)
RETURNS SETOF text
LANGUAGE sql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    UPDATE sealq.tasks SET state = 'pending', updated_at = p_now
    WHERE id IN (SELECT id FROM sealq.tasks
                 WHERE state IN ('scheduled', 'retry') AND run_at <= p_now
                 FOR UPDATE SKIP LOCKED)
    RETURNING queue
$$;

-- The earliest run_at of a scheduled or retrying task.
CREATE FUNCTION sealq.next_due()
RETURNS bigint
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT min(run_at) FROM sealq.tasks WHERE state IN ('scheduled', 'retry')
$$;

-- Archive expired leases of tasks with no attempt left.
CREATE FUNCTION sealq.recover_archive(p_now bigint)
RETURNS SETOF text
LANGUAGE sql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    UPDATE sealq.tasks SET state = 'archived', archive_reason = 'exhausted',
        lease_token = NULL, lease_expires_at = NULL, worker = NULL,
        finished_at = p_now, updated_at = p_now
    WHERE id IN (SELECT id FROM sealq.tasks WHERE state = 'active'
                 AND lease_expires_at <= p_now AND attempts > max_retries
                 FOR UPDATE SKIP LOCKED)
    RETURNING queue
$$;

-- Return the other expired leases to retry; the queues made ready.
CREATE FUNCTION sealq.recover_retry(p_now bigint)
RETURNS SETOF text
LANGUAGE sql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    UPDATE sealq.tasks SET state = 'retry', run_at = p_now,
        lease_token = NULL, lease_expires_at = NULL, worker = NULL, updated_at = p_now
    WHERE id IN (SELECT id FROM sealq.tasks WHERE state = 'active'
                 AND lease_expires_at <= p_now FOR UPDATE SKIP LOCKED)
    RETURNING queue
$$;

-- Delete up to p_limit completed tasks past retention.
CREATE FUNCTION sealq.purge_completed(p_now bigint, p_limit bigint)
RETURNS SETOF uuid
LANGUAGE sql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    DELETE FROM sealq.tasks WHERE id IN (
        SELECT id FROM sealq.tasks WHERE state = 'completed' AND purge_at <= p_now
        LIMIT p_limit FOR UPDATE SKIP LOCKED)
    RETURNING id
$$;

-- Forget up to p_limit remembered ids older than the replay horizon.
CREATE FUNCTION sealq.prune_replay(p_before bigint, p_limit bigint)
RETURNS SETOF uuid
LANGUAGE sql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    DELETE FROM sealq.completed_ids c WHERE c.id IN (
        SELECT c2.id FROM sealq.completed_ids c2 WHERE c2.completed_at < p_before
        AND NOT EXISTS (SELECT 1 FROM sealq.tasks t WHERE t.id = c2.id) LIMIT p_limit)
    RETURNING c.id
$$;

-- Drop up to p_limit expired unique keys.
CREATE FUNCTION sealq.prune_unique_keys(p_now bigint, p_limit bigint)
RETURNS SETOF text
LANGUAGE sql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    DELETE FROM sealq.unique_keys WHERE key IN (
        SELECT key FROM sealq.unique_keys WHERE expires_at <= p_now LIMIT p_limit)
    RETURNING key
$$;

-- The registry of live workers: one row per worker run, with when its
-- registration expires (`Broker::register_worker`).
CREATE TABLE sealq.live_workers (
    run_id            text PRIMARY KEY,
    worker_id         text NOT NULL,
    host              text NOT NULL,
    pid               bigint NOT NULL,
    queues            text[] NOT NULL,
    concurrency       bigint NOT NULL,
    started_at        bigint NOT NULL,
    last_heartbeat_at bigint NOT NULL,
    expires_at        bigint NOT NULL,
    in_flight         bigint NOT NULL
);

-- Insert or refresh one run's row: last heartbeat now, expiring p_ttl_ms later.
CREATE FUNCTION sealq.worker_register(
    p_run_id text, p_worker_id text, p_host text, p_pid bigint, p_queues text[],
    p_concurrency bigint, p_started_at bigint, p_in_flight bigint, p_now bigint,
    p_ttl_ms bigint)
RETURNS void
LANGUAGE sql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    INSERT INTO sealq.live_workers (run_id, worker_id, host, pid, queues, concurrency,
        started_at, last_heartbeat_at, expires_at, in_flight)
    VALUES (p_run_id, p_worker_id, p_host, p_pid, p_queues, p_concurrency, p_started_at,
        p_now, p_now + p_ttl_ms, p_in_flight)
    ON CONFLICT (run_id) DO UPDATE SET worker_id = excluded.worker_id,
        host = excluded.host, pid = excluded.pid, queues = excluded.queues,
        concurrency = excluded.concurrency, started_at = excluded.started_at,
        last_heartbeat_at = excluded.last_heartbeat_at,
        expires_at = excluded.expires_at, in_flight = excluded.in_flight
$$;

-- Forget one run (a worker stopping); an unknown run is harmless.
CREATE FUNCTION sealq.worker_deregister(p_run_id text)
RETURNS void
LANGUAGE sql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    DELETE FROM sealq.live_workers WHERE run_id = p_run_id
$$;

-- Delete the expired rows, then return every live one, oldest start first.
CREATE FUNCTION sealq.worker_list(p_now bigint)
RETURNS TABLE (r_run_id text, r_worker_id text, r_host text, r_pid bigint,
               r_queues text[], r_concurrency bigint, r_started_at bigint,
               r_last_heartbeat_at bigint, r_in_flight bigint)
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    DELETE FROM sealq.live_workers WHERE expires_at <= p_now;
    RETURN QUERY
    SELECT w.run_id, w.worker_id, w.host, w.pid, w.queues, w.concurrency, w.started_at,
           w.last_heartbeat_at, w.in_flight
    FROM sealq.live_workers w ORDER BY w.started_at, w.run_id;
END
$$;
