-- sealq-postgres migration 14: the replay memory is written when a completed
-- row goes, not at every completion (issue 23, processing rate; measured in
-- docs/benchmarks.md, "Postgres replay memory at removal (session 10)").
--
-- Until now every completion inserted its id into `sealq.completed_ids`
-- (a heap row and two index entries, a quarter of an ack's WAL), although
-- the completed task's own row, kept for its retention (24 h by default),
-- already refuses the id at enqueue (`IdExists`, by primary key) and can
-- never be claimed. The memory is needed only once that row goes or stops
-- being completed, and from that moment on it is now written by triggers,
-- whoever changes the row:
--
-- - a completed row deleted, by any statement (retention's purge, an
--   operator's delete, erasure, or someone with write access to the table):
--   one statement-level trigger, set-based;
-- - a completed row whose state is changed to anything else (a tamper that
--   flips it back to pending, say): a row trigger whose condition every
--   other update fails before it queues anything;
-- - the table truncated: its completed ids are copied first.
--
-- The trigger functions run as whoever changes the row (like
-- `sealq.drop_bodies`, migration 1): the definer functions' owner, or a
-- login with its own table privileges, which then also needs to be able to
-- write the memory, or its change of a completed row fails.
--
-- Each id keeps its completion time (`finished_at`), so the replay horizon
-- still counts from the completion. An ack of an id the memory already
-- holds (a second success) refreshes it and reports it, as before.
-- Dequeue, enqueue and pruning read the memory as before.

-- Acks: as in migration 9, without the insert into the replay memory.
CREATE OR REPLACE FUNCTION sealq.ack(
    p_now bigint, p_ids uuid[], p_tokens bigint[], p_kinds text[], p_at bigint[],
    p_data bytea[], p_reasons text[])
RETURNS TABLE (idx integer, applied boolean, repeated boolean)
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET enable_seqscan = off
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
        -- A second success of a remembered id: refresh the memory. A
        -- first completion writes nothing here: its completed row is the
        -- memory while it is kept, and the triggers below copy its id here
        -- when the row goes or stops being completed.
        UPDATE sealq.completed_ids c SET completed_at = greatest(c.completed_at, p_now)
        FROM done d WHERE d.kind = 'complete' AND c.id = d.id
        RETURNING c.id
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


-- The ids of completed rows deleted by one statement, in one insert.
CREATE FUNCTION sealq.remember_deleted_completed() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET enable_seqscan = off
AS $$
BEGIN
    INSERT INTO sealq.completed_ids AS c (id, completed_at)
    SELECT g.id, coalesce(g.finished_at, g.updated_at) FROM gone g
    WHERE g.state = 'completed'
    ON CONFLICT (id) DO UPDATE SET completed_at = greatest(c.completed_at, excluded.completed_at);
    RETURN NULL;
END
$$;
CREATE TRIGGER tasks_remember_deleted_completed AFTER DELETE ON sealq.tasks
    REFERENCING OLD TABLE AS gone
    FOR EACH STATEMENT EXECUTE FUNCTION sealq.remember_deleted_completed();

-- The id of a completed row whose state changed to anything else.
CREATE FUNCTION sealq.remember_reopened_completed() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET enable_seqscan = off
AS $$
BEGIN
    INSERT INTO sealq.completed_ids AS c (id, completed_at)
    VALUES (OLD.id, coalesce(OLD.finished_at, OLD.updated_at))
    ON CONFLICT (id) DO UPDATE SET completed_at = greatest(c.completed_at, excluded.completed_at);
    RETURN NULL;
END
$$;
CREATE TRIGGER tasks_remember_reopened_completed AFTER UPDATE ON sealq.tasks
    FOR EACH ROW WHEN (OLD.state = 'completed' AND NEW.state IS DISTINCT FROM 'completed')
    EXECUTE FUNCTION sealq.remember_reopened_completed();

-- The completed ids of a table about to be truncated.
CREATE FUNCTION sealq.remember_truncated_completed() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    INSERT INTO sealq.completed_ids AS c (id, completed_at)
    SELECT t.id, coalesce(t.finished_at, t.updated_at) FROM sealq.tasks t
    WHERE t.state = 'completed'
    ON CONFLICT (id) DO UPDATE SET completed_at = greatest(c.completed_at, excluded.completed_at);
    RETURN NULL;
END
$$;
CREATE TRIGGER tasks_remember_truncated_completed BEFORE TRUNCATE ON sealq.tasks
    FOR EACH STATEMENT EXECUTE FUNCTION sealq.remember_truncated_completed();

REVOKE ALL ON FUNCTION sealq.remember_deleted_completed() FROM PUBLIC;
REVOKE ALL ON FUNCTION sealq.remember_reopened_completed() FROM PUBLIC;
REVOKE ALL ON FUNCTION sealq.remember_truncated_completed() FROM PUBLIC;
