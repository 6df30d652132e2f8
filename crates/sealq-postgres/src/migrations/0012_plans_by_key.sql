-- sealq-postgres migration 12: the hot path reaches rows by key whatever
-- the table's size was when a session planned it (issue 23, p99
-- enqueue-to-start; measured in docs/benchmarks.md, "Postgres plans kept
-- from a small table (session 9)").
--
-- A plpgsql function plans each statement on its first calls and then
-- keeps a generic plan for the life of the session when it looks no
-- dearer. A worker that starts on an empty or freshly created table plans
-- while the tables are tiny, and there a sequential scan is the cheapest
-- way to read anything: the claim's join to `sealq.task_bodies` became a
-- hash of the whole body table, built again at every claim, and stayed so
-- while the table grew, until autovacuum's next ANALYZE of it. A run of
-- 20,000 tasks at 1,000 a second on a fresh table read 19.9 million body
-- rows in 1,998 scans (one per claim), and the claim grew slower with
-- every task stored. On a busy store whose autovacuum lags, the same can
-- last for as long as the lag.
--
-- The claim now reads each leased task's body with one primary-key probe
-- (`LATERAL … LIMIT 1`, as for the replay memory since migration 9), and
-- sequential scans are off inside every function that reaches task rows by id
-- (claim, ack, enqueue, lease extension, quarantine, purge, the body
-- trigger): each has an index for every row it reads, and with
-- sequential scans off the planner takes it at any estimate. Same
-- signatures, results and grants as before.

CREATE OR REPLACE FUNCTION sealq.dequeue(
    p_queues text[], p_max integer, p_now bigint, p_lease_ms bigint, p_worker text,
    p_token bigint)
RETURNS TABLE (id uuid, queue text, kind text, envelope bytea, meta bytea, state text,
               attempts integer, run_at bigint, last_error bytea, result bytea,
               archive_reason text, lease_expires_at bigint, finished_at bigint,
               updated_at bigint, replayed boolean, ord integer)
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET enable_seqscan = off
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
    -- This transaction's commit does not wait for the disk (migration 7).
    -- Local to the transaction: the session's setting is back when it ends.
    PERFORM pg_catalog.set_config('synchronous_commit', 'off', true);
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
            -- By primary key, one probe per id: the ids come as an array
            -- the planner cannot see into, so it never hashes the whole
            -- table to join them (migration 9).
            UPDATE sealq.tasks t
            SET state = 'active', attempts = t.attempts + 1, lease_token = p_token,
                lease_expires_at = p_now + p_lease_ms, worker = p_worker, updated_at = p_now
            WHERE t.id = ANY (ARRAY(SELECT p.id FROM picked p))
            RETURNING t.*
        )
        SELECT l.id, l.queue, l.kind, b.envelope, b.meta, l.state, l.attempts, l.run_at,
               l.last_error, l.result, l.archive_reason, l.lease_expires_at, l.finished_at,
               l.updated_at,
               r.id IS NOT NULL,
               v_ord
        FROM leased l
        -- The body by primary key, one probe per leased task (migration
        -- 12): a plain join was planned, and the plan kept for the
        -- session, as a hash of the whole body table while it was small.
        LEFT JOIN LATERAL (SELECT b1.envelope, b1.meta FROM sealq.task_bodies b1
                           WHERE b1.id = l.id LIMIT 1) b ON true
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

-- The others keep their bodies; only the setting is added.
ALTER FUNCTION sealq.ack(bigint, uuid[], bigint[], text[], bigint[], bytea[], text[])
    SET enable_seqscan = off;
ALTER FUNCTION sealq.enqueue(bigint, uuid[], text[], text[], bytea[], integer[], bigint[],
                             bigint[], bytea[], bytea[], text[], bigint[])
    SET enable_seqscan = off;
ALTER FUNCTION sealq.extend_leases(uuid[], bigint[], bigint) SET enable_seqscan = off;
ALTER FUNCTION sealq.quarantine(uuid[], bigint) SET enable_seqscan = off;
ALTER FUNCTION sealq.purge_completed(bigint, bigint) SET enable_seqscan = off;
ALTER FUNCTION sealq.prune_replay(bigint, bigint) SET enable_seqscan = off;
ALTER FUNCTION sealq.drop_bodies() SET enable_seqscan = off;
