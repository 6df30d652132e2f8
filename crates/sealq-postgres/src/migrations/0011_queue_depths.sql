-- sealq-postgres migration 11: queue depths for the worker's gauges
-- without a read of the whole task table (issue 23; measured in
-- docs/benchmarks.md, "Postgres queue metrics without a table read
-- (session 8)").
--
-- Every worker samples its queue depths at start and every 15 s
-- (`queue_metrics_interval`). `sealq.task_counts` counts every task by
-- queue and state, which reads the whole table, completed (retained) tasks
-- included: on a store retaining millions of them, a full table read per
-- worker every 15 s. `task_counts` stays as it was (exact: `Broker::stats`,
-- `sealq queues`); the gauges read `sealq.queue_depths`:
--
-- * pending, scheduled, retry, active and archived: exact, each counted
--   through the partial index that holds exactly those rows
--   (`tasks_ready`, `tasks_lease`, `tasks_archived`), so the work follows
--   the live (and archived) tasks, not the retained ones;
-- * completed: exact while there are at most 10,000 of them (counted
--   through `tasks_purge`, at most 10,001 entries read to find out), and
--   above that an ESTIMATE, flagged `r_estimated`: the table's row count
--   from its last ANALYZE times the share of (queue, 'completed') in the
--   multivariate MCV list of the statistics object below (autovacuum keeps
--   both fresh). A queue whose completed tasks are too few to be in that
--   list, or a table never analyzed, gets no completed row then.
--
-- Sequential and bitmap scans are off for this function only: each count
-- has a partial index holding exactly its rows, and on a table loaded
-- moments before (no statistics) the planner would otherwise read the
-- table; a bitmap scan reads every entry of its index before the first
-- row, so the probe's LIMIT would not stop it reading every completed
-- task's entry.
CREATE STATISTICS sealq.tasks_queue_state (mcv) ON queue, state FROM sealq.tasks;

CREATE FUNCTION sealq.queue_depths()
RETURNS TABLE (r_queue text, r_state text, r_count bigint, r_estimated boolean)
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET enable_seqscan = off
SET enable_bitmapscan = off
AS $$
DECLARE
    v_completed bigint;
BEGIN
    RETURN QUERY
    SELECT t.queue, t.state, count(*), false FROM sealq.tasks t
    WHERE t.state IN ('pending', 'scheduled', 'retry')
    GROUP BY t.queue, t.state;
    RETURN QUERY
    SELECT t.queue, t.state, count(*), false FROM sealq.tasks t
    WHERE t.state = 'active'
    GROUP BY t.queue, t.state;
    RETURN QUERY
    SELECT t.queue, t.state, count(*), false FROM sealq.tasks t
    WHERE t.state = 'archived'
    GROUP BY t.queue, t.state;

    SELECT count(*) INTO v_completed
    FROM (SELECT 1 FROM sealq.tasks t WHERE t.state = 'completed' LIMIT 10001) c;
    IF v_completed <= 10000 THEN
        RETURN QUERY
        SELECT t.queue, t.state, count(*), false FROM sealq.tasks t
        WHERE t.state = 'completed'
        GROUP BY t.queue, t.state;
    ELSE
        RETURN QUERY
        SELECT m.queue, 'completed'::text,
               round(m.freq * greatest(c.reltuples, 0))::bigint, true
        FROM (SELECT s.most_common_vals[i][1] AS queue, s.most_common_vals[i][2] AS state,
                     s.most_common_freqs[i] AS freq
              FROM pg_stats_ext s,
                   generate_subscripts(s.most_common_freqs, 1) AS i
              WHERE s.statistics_schemaname = 'sealq'
                AND s.statistics_name = 'tasks_queue_state'
                AND NOT s.inherited) m,
             pg_class c
        WHERE c.oid = 'sealq.tasks'::regclass AND m.state = 'completed';
    END IF;
END
$$;

-- Nobody but the owner until the role setup grants it (workers,
-- operators, admins: `sealq postgres install --apply-roles`).
REVOKE ALL ON FUNCTION sealq.queue_depths() FROM PUBLIC;
