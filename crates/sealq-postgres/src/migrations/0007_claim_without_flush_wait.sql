-- sealq-postgres migration 7: a claim's commit does not wait for the
-- disk (issue 23; measured in docs/benchmarks.md, "Postgres claims
-- without a flush wait").
--
-- `sealq.dequeue` sets `synchronous_commit = off` for its own transaction
-- (`set_config(..., true)`, which ends with the transaction; the worker
-- calls it alone, in autocommit). A claim records a lease: which worker
-- holds the task, until when, and one more attempt. Nothing that depends
-- on it can be durable without it: an ack, a retry or a lease extension
-- is a later, durable commit, and its WAL flush writes every earlier
-- record, the claim's included. So the claim need not wait for its own
-- flush, one of the two a task waited for between enqueue and start.
-- What a Postgres crash can now forget is a claim made in the last
-- moments before it (at most `wal_writer_delay` x 3, 600 ms by default)
-- and not yet followed by a durable commit: that task is ready again, as
-- if its lease had expired, and runs again (at-least-once, as on a lease
-- expiry), with that attempt not counted. A rate-limited queue's tokens
-- taken by such a claim come back the same way. Enqueues, acks, retries,
-- lease extensions and every operator action keep durable commits.
-- Same signature, results and grants as in migration 5.
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
    -- This transaction's commit does not wait for the disk (see above).
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
