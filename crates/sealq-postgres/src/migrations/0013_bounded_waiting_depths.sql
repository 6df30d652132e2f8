-- sealq-postgres migration 13: the queue gauges read at most about 10,000
-- waiting tasks a queue (issue 23, operations; measured in
-- docs/benchmarks.md, "The queue gauges under a large backlog").
--
-- Migration 11 counted waiting tasks (pending, scheduled, retry) exactly,
-- through `tasks_ready`, whose entries do not hold `state`: every waiting
-- task's row was visited, 278-296 ms at 500,000 pending tasks, by every
-- worker every `queue_metrics_interval`, and most at the moment a backlog
-- is largest. Now the waiting tasks are counted queue by queue (the queues
-- found by a skip scan of `tasks_ready`, one probe each): exactly while a
-- queue holds at most 10,000 of them, and above that ESTIMATED like the
-- completed tasks (the table's row count at its last ANALYZE times the
-- share of (queue, state) in the MCV statistics `sealq.tasks_queue_state`;
-- `r_estimated` says so). A queue above 10,000 that the statistics do not
-- know yet (a backlog loaded since the last ANALYZE) shows what the probe
-- saw, 10,001 tasks split by state, flagged estimated too: a lower bound.
-- Active, archived and completed tasks are counted as in migration 11.
-- `Broker::stats` and `sealq queues` stay exact (`sealq.task_counts`).

-- Depths by queue and state as the statistics estimate them: the
-- table's row count at its last ANALYZE times the share of each (queue,
-- state) in the MCV list of `sealq.tasks_queue_state` (migration 11). Only
-- `sealq.queue_depths` calls it (as the schema owner): no role is granted it.
CREATE FUNCTION sealq.queue_depth_estimates()
RETURNS TABLE (r_queue text, r_state text, r_count bigint)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT m.queue, m.state, round(m.freq * greatest(c.reltuples, 0))::bigint
    FROM (SELECT s.most_common_vals[i][1] AS queue, s.most_common_vals[i][2] AS state,
                 s.most_common_freqs[i] AS freq
          FROM pg_stats_ext s,
               generate_subscripts(s.most_common_freqs, 1) AS i
          WHERE s.statistics_schemaname = 'sealq'
            AND s.statistics_name = 'tasks_queue_state'
            AND NOT s.inherited) m,
         pg_class c
    WHERE c.oid = 'sealq.tasks'::regclass
$$;
REVOKE ALL ON FUNCTION sealq.queue_depth_estimates() FROM PUBLIC;

CREATE OR REPLACE FUNCTION sealq.queue_depths()
RETURNS TABLE (r_queue text, r_state text, r_count bigint, r_estimated boolean)
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET enable_seqscan = off
SET enable_bitmapscan = off
AS $$
DECLARE
    v_queue text;
    v_waiting bigint;
    v_completed bigint;
BEGIN
    SELECT t.queue INTO v_queue FROM sealq.tasks t
        WHERE t.state IN ('pending', 'scheduled', 'retry')
        ORDER BY t.queue LIMIT 1;
    WHILE v_queue IS NOT NULL LOOP
        SELECT count(*) INTO v_waiting FROM (
            SELECT 1 FROM sealq.tasks t
            WHERE t.queue = v_queue AND t.state IN ('pending', 'scheduled', 'retry')
            LIMIT 10001) w;
        IF v_waiting <= 10000 THEN
            RETURN QUERY
            SELECT t.queue, t.state, count(*), false FROM sealq.tasks t
            WHERE t.queue = v_queue AND t.state IN ('pending', 'scheduled', 'retry')
            GROUP BY t.queue, t.state;
        ELSE
            RETURN QUERY
            SELECT e.r_queue, e.r_state, e.r_count, true FROM sealq.queue_depth_estimates() e
            WHERE e.r_queue = v_queue AND e.r_state IN ('pending', 'scheduled', 'retry');
            IF NOT FOUND THEN
                RETURN QUERY
                SELECT v_queue, w.state, count(*), true FROM (
                    SELECT t.state FROM sealq.tasks t
                    WHERE t.queue = v_queue AND t.state IN ('pending', 'scheduled', 'retry')
                    LIMIT 10001) w
                GROUP BY w.state;
            END IF;
        END IF;
        SELECT t.queue INTO v_queue FROM sealq.tasks t
            WHERE t.state IN ('pending', 'scheduled', 'retry') AND t.queue > v_queue
            ORDER BY t.queue LIMIT 1;
        IF NOT FOUND THEN
            v_queue := NULL;
        END IF;
    END LOOP;

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
        SELECT e.r_queue, e.r_state, e.r_count, true FROM sealq.queue_depth_estimates() e
        WHERE e.r_state = 'completed';
    END IF;
END
$$;
