-- sealq-postgres migration 10: a cheap sample of waiting tasks for the
-- keyring check at worker start (issue 23; measured in docs/benchmarks.md,
-- "Postgres at session 8").
--
-- The check sampled each queue with three `sealq.list_waiting` calls, one
-- per waiting state, each the first tasks by id. No index has waiting
-- tasks in id order, so each call read every waiting task of the queue
-- through `tasks_ready` and sorted them: on a table loaded moments before
-- (no statistics yet) 25-80 ms per call at 20,000-100,000 tasks, once per
-- worker start and per readiness check. A sample does not need id order:
-- this one is the first waiting tasks in claim order, read from
-- `tasks_ready` in its own order, so it reads as many index entries as it
-- returns whatever the backlog. They are also the tasks the worker would
-- claim first.
--
-- Without statistics the planner takes a queue's waiting tasks for a few
-- and prefers reading them all through a bitmap and sorting them (the plan
-- the by-id lists got): sorts and bitmap scans are off for this function
-- only, which leaves the ordered scan of `tasks_ready` as its one plan.
-- A sort can never be cheaper here: the index holds waiting tasks only,
-- in the order asked for.
CREATE FUNCTION sealq.sample_waiting(p_queue text, p_limit bigint)
RETURNS TABLE (r_id uuid, r_queue text, r_kind text, r_envelope bytea, r_meta bytea,
               r_state text, r_attempts integer, r_run_at bigint, r_last_error bytea,
               r_result bytea, r_archive_reason text, r_lease_expires_at bigint,
               r_finished_at bigint, r_updated_at bigint)
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET enable_sort = off
SET enable_bitmapscan = off
AS $$
BEGIN
    RETURN QUERY
    SELECT t.id, t.queue, t.kind, b.envelope, b.meta, t.state, t.attempts, t.run_at,
           t.last_error, t.result, t.archive_reason, t.lease_expires_at, t.finished_at,
           t.updated_at
    FROM (SELECT w.* FROM sealq.tasks w
          WHERE w.queue = p_queue AND w.state IN ('pending', 'scheduled', 'retry')
          ORDER BY w.run_at, w.id
          LIMIT greatest(p_limit, 0)) t
    LEFT JOIN sealq.task_bodies b ON b.id = t.id
    ORDER BY t.run_at, t.id;
END
$$;

-- Nobody but the owner until the role setup grants it (workers,
-- operators, admins: `sealq postgres install --apply-roles`).
REVOKE ALL ON FUNCTION sealq.sample_waiting(text, bigint) FROM PUBLIC;
