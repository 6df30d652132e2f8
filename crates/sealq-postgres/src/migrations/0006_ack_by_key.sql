-- sealq-postgres migration 6: acks and lease extensions find their tasks
-- by primary key, whatever the statistics say (issue 23; measured in
-- docs/benchmarks.md, "Postgres latency (issue 23), 2026-12-07 later").
--
-- `sealq.ack` runs as a plpgsql statement whose plan is cached for the
-- session, and after five calls that is a generic plan: one made without
-- the arrays' contents, assuming ten ids. Its `t.state = 'active'` let the
-- planner reach the acked tasks through `tasks_lease`, the partial index
-- of every active task, and with statistics taken while few tasks were
-- active (a new schema, before autovacuum's first analyze) it did: a
-- bitmap scan of every active task per call, kept for the session however
-- many tasks were then in flight (EXPLAIN of the generic plan, 1,000 to
-- 8,000 active tasks). Now the tasks come by primary key (`id = ANY(ids)`,
-- joined on id), and the state is compared with a column of a
-- materialized CTE, which proves nothing about `tasks_lease`'s predicate,
-- so that index is never a candidate. On a table of a few pages the
-- planner may still read the table itself, which costs those few pages.
-- Same signature, results and grants as in migration 5.
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
        WHERE t.id = ANY (p_ids) AND t.id = f.id AND t.state = f.want
          AND t.lease_token = f.token
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

-- Lease extensions: the same, for the same reason (a SQL function's
-- statement is planned with its arguments as parameters). Same
-- signature, results and grants as in migration 3.
CREATE OR REPLACE FUNCTION sealq.extend_leases(p_ids uuid[], p_tokens bigint[], p_expires bigint)
RETURNS TABLE (r_id uuid, r_token bigint)
LANGUAGE sql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    WITH l AS MATERIALIZED (
        SELECT u.id, u.token, 'active'::text AS want FROM unnest(p_ids, p_tokens) AS u(id, token)
    )
    UPDATE sealq.tasks t SET lease_expires_at = p_expires
    FROM l
    WHERE t.id = ANY (p_ids) AND t.id = l.id AND t.state = l.want AND t.lease_token = l.token
    RETURNING t.id, t.lease_token
$$;
