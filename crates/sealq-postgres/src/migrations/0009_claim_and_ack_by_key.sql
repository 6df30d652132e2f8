-- sealq-postgres migration 9: claims and acks reach their tasks by
-- primary key whatever the planner estimates, and an ack probes the
-- replay memory once per task (issue 23; measured in docs/benchmarks.md,
-- "Postgres processing cost (issue 23), session 7").
--
-- The claim's `UPDATE … FROM picked WHERE t.id = picked.id` was planned
-- per call (plpgsql's custom plans see `v_want`), and for a claim of a
-- few hundred tasks the planner preferred a hash join: a sequential scan
-- of all of `sealq.tasks` (completed tasks included, until they are
-- purged) hashed to join a few hundred ids (EXPLAIN ANALYZE: 40,000 rows
-- read for 256 claimed, 9-20 ms). The ack's `t.id = ANY (p_ids)` showed
-- the planner the array, and a custom plan for a batch of a few hundred
-- ids read the whole table too (39,744 rows removed by the filter for
-- 256 acked). Both now take their ids as `ARRAY(SELECT …)`, an array the
-- planner cannot see into: always an index scan of the primary key, one
-- probe per id, so the cost of a claim or an ack follows its batch, not
-- the table's size.
--
-- An ack recorded a completion in the replay memory with two probes of
-- `completed_ids` per task (the refresh of an id it already held, then
-- `NOT EXISTS` before the insert); the insert now skips the ids the
-- refresh found. Same result: both read the same snapshot, and the task
-- row's lock keeps any other writer of the id out.
--
-- Same signatures, results and grants as in migrations 6 and 7.

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
    ), first AS MATERIALIZED (
        -- `want` is the state an ack applies to, as a column of a
        -- materialized CTE: a constant the planner cannot see through.
        SELECT DISTINCT ON (i.id) i.*, 'active'::text AS want
        FROM input i ORDER BY i.id, i.pos
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
        WHERE t.id = ANY (ARRAY(SELECT f2.id FROM first f2)) AND t.id = f.id
          AND t.state = f.want AND t.lease_token = f.token
        RETURNING t.id, t.queue, f.kind, f.at, f.pos
    ), again AS (
        -- A second success of a remembered id: refresh the memory.
        UPDATE sealq.completed_ids c SET completed_at = greatest(c.completed_at, p_now)
        FROM done d WHERE d.kind = 'complete' AND c.id = d.id
        RETURNING c.id
    ), remembered AS (
        -- A plain insert, not an upsert (which costs a speculative
        -- insertion and one more WAL record per row): the task row's lock,
        -- taken by `done`, keeps any other writer of this id out. The ids
        -- the memory already held are the ones `again` refreshed: no
        -- second probe of the memory per task.
        INSERT INTO sealq.completed_ids (id, completed_at)
        SELECT d.id, p_now FROM done d
        WHERE d.kind = 'complete'
          AND NOT EXISTS (SELECT 1 FROM again a WHERE a.id = d.id)
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
