-- sealq-postgres migration 2: the subject key store, the audit log and the
-- claim-check blob store, and the SECURITY DEFINER functions that are the
-- only way the runtime roles reach them (see docs/postgres-roles.md).
--
-- Every function below:
-- - is SECURITY DEFINER (runs with the schema owner's rights, so the runtime
--   roles need EXECUTE on it and no table privilege at all);
-- - pins `search_path = pg_catalog, pg_temp` and names every sealq object
--   with its schema, so a caller cannot shadow a table, function or operator
--   with one of its own ("Writing SECURITY DEFINER Functions Safely" in the
--   PostgreSQL manual);
-- - is revoked from PUBLIC at the end of this migration (Postgres grants
--   EXECUTE on a new function to PUBLIC by default).
-- Which role may call which function is `sealq_postgres::roles::FUNCTIONS`.

-- The schema version, for roles that cannot read sealq.schema_version.
CREATE FUNCTION sealq.schema_version_number() RETURNS integer
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$ SELECT coalesce(max(version), 0) FROM sealq.schema_version $$;

-- ---------------------------------------------------------------------------
-- Subject keys: one wrapped data key per subject tag (32 bytes), in a table
-- of their own. Nothing else references it, so destroying a key deletes its
-- only row. A deleted row stays in its heap page until VACUUM reclaims it
-- (and in WAL, replicas and backups until those roll over): the table is
-- vacuumed after every change (the thresholds below), and `sealq erase
-- --finalize` makes the old copies useless (see docs/postgres-roles.md).
CREATE TABLE sealq.subject_keys (
    tag        bytea PRIMARY KEY CHECK (length(tag) = 32),
    wrapped    bytea NOT NULL,
    created_at bigint NOT NULL
) WITH (autovacuum_vacuum_threshold = 0, autovacuum_vacuum_scale_factor = 0,
        autovacuum_vacuum_insert_threshold = 1000);

-- The erasure epoch, bumped by every destroy (one row).
CREATE TABLE sealq.subject_key_epoch (
    one   integer PRIMARY KEY CHECK (one = 1),
    epoch bigint NOT NULL
);
INSERT INTO sealq.subject_key_epoch (one, epoch) VALUES (1, 0);

-- The stored keys of `tags` that exist (absent ones are left out).
CREATE FUNCTION sealq.subject_key_get(tags bytea[])
    RETURNS TABLE (tag bytea, wrapped bytea)
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT k.tag, k.wrapped FROM sealq.subject_keys k WHERE k.tag = ANY (tags)
$$;

-- Store each (tags[i], keys[i]) unless the tag has a key; return the
-- stored key of every tag (the first writer's, so concurrent producers agree).
CREATE FUNCTION sealq.subject_key_put(tags bytea[], keys bytea[], now_ms bigint)
    RETURNS TABLE (tag bytea, wrapped bytea)
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF cardinality(tags) IS DISTINCT FROM cardinality(keys) THEN
        RAISE EXCEPTION 'sealq.subject_key_put: % tags but % keys',
            cardinality(tags), cardinality(keys) USING ERRCODE = '22023';
    END IF;
    INSERT INTO sealq.subject_keys AS k (tag, wrapped, created_at)
        SELECT u.t, u.w, now_ms FROM unnest(tags, keys) AS u (t, w)
        ON CONFLICT ON CONSTRAINT subject_keys_pkey DO NOTHING;
    -- A new statement, a new snapshot: sees a concurrent writer's key that
    -- the INSERT waited for.
    RETURN QUERY SELECT k.tag, k.wrapped FROM sealq.subject_keys k WHERE k.tag = ANY (tags);
END
$$;

-- Delete the key of `tag_in` and bump the epoch; true if a key existed.
CREATE FUNCTION sealq.subject_key_destroy(tag_in bytea) RETURNS boolean
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n bigint;
BEGIN
    DELETE FROM sealq.subject_keys k WHERE k.tag = tag_in;
    GET DIAGNOSTICS n = ROW_COUNT;
    UPDATE sealq.subject_key_epoch e SET epoch = e.epoch OPERATOR(pg_catalog.+) 1
        WHERE e.one = 1;
    RETURN n > 0;
END
$$;

-- Every stored key, in tag order (for re-wrapping after a key rotation).
CREATE FUNCTION sealq.subject_key_list()
    RETURNS TABLE (tag bytea, wrapped bytea)
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$ SELECT k.tag, k.wrapped FROM sealq.subject_keys k ORDER BY k.tag $$;

-- Replace the key of `tag_in` with `new_key` only while it is `old_key`.
CREATE FUNCTION sealq.subject_key_replace(tag_in bytea, old_key bytea, new_key bytea)
    RETURNS boolean
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n bigint;
BEGIN
    UPDATE sealq.subject_keys k SET wrapped = new_key
        WHERE k.tag = tag_in AND k.wrapped = old_key;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n = 1;
END
$$;

CREATE FUNCTION sealq.subject_key_epoch() RETURNS bigint
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$ SELECT e.epoch FROM sealq.subject_key_epoch e WHERE e.one = 1 $$;

-- ---------------------------------------------------------------------------
-- The audit log: records and signed checkpoints in two tables, one row per
-- item holding its JSON text (`line`, what sealq::audit::JsonLinesSink
-- writes). `task_id` is the task of a per-task event; a batch event
-- (`leased_batch` …) names its tasks in `batch_tasks` instead. Rows are
-- only ever inserted: no runtime role can update or delete them, and the
-- triggers refuse UPDATE and TRUNCATE even to the owner. Only
-- sealq.audit_prune (granted to sealq_admin) deletes.
CREATE TABLE sealq.audit_records (
    pos         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    writer      text NOT NULL,
    seq         bigint NOT NULL,
    task_id     uuid,
    batch_tasks uuid[],
    line        text NOT NULL
);
CREATE INDEX audit_records_task ON sealq.audit_records (task_id) WHERE task_id IS NOT NULL;
CREATE INDEX audit_records_batch ON sealq.audit_records USING gin (batch_tasks)
    WHERE batch_tasks IS NOT NULL;

CREATE TABLE sealq.audit_checkpoints (
    pos    bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    writer text NOT NULL,
    seq    bigint NOT NULL,
    line   text NOT NULL
);

CREATE FUNCTION sealq.audit_refuse_change() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RAISE EXCEPTION 'the sealq audit log is append-only: % on % refused', TG_OP, TG_TABLE_NAME
        USING ERRCODE = '42501';
END
$$;
CREATE TRIGGER audit_records_append_only BEFORE UPDATE ON sealq.audit_records
    FOR EACH ROW EXECUTE FUNCTION sealq.audit_refuse_change();
CREATE TRIGGER audit_records_no_truncate BEFORE TRUNCATE ON sealq.audit_records
    FOR EACH STATEMENT EXECUTE FUNCTION sealq.audit_refuse_change();
CREATE TRIGGER audit_checkpoints_append_only BEFORE UPDATE ON sealq.audit_checkpoints
    FOR EACH ROW EXECUTE FUNCTION sealq.audit_refuse_change();
CREATE TRIGGER audit_checkpoints_no_truncate BEFORE TRUNCATE ON sealq.audit_checkpoints
    FOR EACH STATEMENT EXECUTE FUNCTION sealq.audit_refuse_change();

-- Append records in order (arrays of equal length; `batch_tasks[i]` is the
-- comma-separated task ids of a batch event, else NULL).
CREATE FUNCTION sealq.audit_append(writers text[], seqs bigint[], task_ids uuid[],
                                   batch_tasks text[], lines text[])
    RETURNS void
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF cardinality(writers) IS DISTINCT FROM cardinality(lines)
       OR cardinality(seqs) IS DISTINCT FROM cardinality(lines)
       OR cardinality(task_ids) IS DISTINCT FROM cardinality(lines)
       OR cardinality(batch_tasks) IS DISTINCT FROM cardinality(lines) THEN
        RAISE EXCEPTION 'sealq.audit_append: arrays of different lengths' USING ERRCODE = '22023';
    END IF;
    INSERT INTO sealq.audit_records (writer, seq, task_id, batch_tasks, line)
        SELECT u.w, u.s, u.t,
               pg_catalog.string_to_array(u.b, ',')::pg_catalog.uuid[], u.l
        FROM unnest(writers, seqs, task_ids, batch_tasks, lines)
             WITH ORDINALITY AS u (w, s, t, b, l, ord)
        ORDER BY u.ord;
END
$$;

CREATE FUNCTION sealq.audit_append_checkpoint(writer_in text, seq_in bigint, line_in text)
    RETURNS void
    LANGUAGE sql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
    INSERT INTO sealq.audit_checkpoints (writer, seq, line) VALUES (writer_in, seq_in, line_in)
$$;

-- Records after position `after_pos`, at most `lim`, in storage order.
CREATE FUNCTION sealq.audit_read_records(after_pos bigint, lim integer)
    RETURNS TABLE (pos bigint, line text)
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT r.pos, r.line FROM sealq.audit_records r
    WHERE r.pos > after_pos ORDER BY r.pos LIMIT lim
$$;

-- Checkpoints after position `after_pos`, at most `lim`, in storage order.
CREATE FUNCTION sealq.audit_read_checkpoints(after_pos bigint, lim integer)
    RETURNS TABLE (pos bigint, line text)
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT c.pos, c.line FROM sealq.audit_checkpoints c
    WHERE c.pos > after_pos ORDER BY c.pos LIMIT lim
$$;

-- Whether the checkpoint table exists (a missing one is reported by
-- verification, not hidden by an error).
CREATE FUNCTION sealq.audit_has_checkpoints() RETURNS boolean
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$ SELECT pg_catalog.to_regclass('sealq.audit_checkpoints') IS NOT NULL $$;

-- The records about one task (its own and the batch events naming it).
CREATE FUNCTION sealq.audit_records_for_task(task uuid)
    RETURNS TABLE (pos bigint, line text)
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT r.pos, r.line FROM sealq.audit_records r WHERE r.task_id = task
    UNION ALL
    SELECT r.pos, r.line FROM sealq.audit_records r
    WHERE r.batch_tasks OPERATOR(pg_catalog.@>) ARRAY[task]
    ORDER BY 1
$$;

-- Delete records and checkpoints up to and including the given positions
-- (after exporting them); returns how many rows went. Admin only.
CREATE FUNCTION sealq.audit_prune(records_through bigint, checkpoints_through bigint)
    RETURNS bigint
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    a bigint;
    b bigint;
BEGIN
    DELETE FROM sealq.audit_records r WHERE r.pos <= records_through;
    GET DIAGNOSTICS a = ROW_COUNT;
    DELETE FROM sealq.audit_checkpoints c WHERE c.pos <= checkpoints_through;
    GET DIAGNOSTICS b = ROW_COUNT;
    RETURN a + b;
END
$$;

-- ---------------------------------------------------------------------------
-- Claim-check blobs: sealed bytes only, keyed by task and SHA-256 digest.
CREATE TABLE sealq.blobs (
    task_id    uuid NOT NULL,
    digest     bytea NOT NULL CHECK (length(digest) = 32),
    bytes      bytea NOT NULL,
    created_at bigint NOT NULL,
    PRIMARY KEY (task_id, digest)
);
-- The bytes are ciphertext: compressing them gains nothing.
ALTER TABLE sealq.blobs ALTER COLUMN bytes SET STORAGE EXTERNAL;

-- Store a blob (same key, same digest: the same bytes; a repeat is a no-op).
CREATE FUNCTION sealq.blob_put(task uuid, digest_in bytea, bytes_in bytea, now_ms bigint)
    RETURNS void
    LANGUAGE sql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
    INSERT INTO sealq.blobs (task_id, digest, bytes, created_at)
    VALUES (task, digest_in, bytes_in, now_ms)
    ON CONFLICT ON CONSTRAINT blobs_pkey DO NOTHING
$$;

CREATE FUNCTION sealq.blob_get(task uuid, digest_in bytea) RETURNS bytea
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$ SELECT b.bytes FROM sealq.blobs b WHERE b.task_id = task AND b.digest = digest_in $$;

-- Delete every blob of the tasks `ids`; returns how many existed.
CREATE FUNCTION sealq.blob_delete_tasks(ids uuid[]) RETURNS bigint
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n bigint;
BEGIN
    DELETE FROM sealq.blobs b WHERE b.task_id = ANY (ids);
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$;

-- Distinct task ids with a blob, in order, after `after_id` (NULL: from the
-- start), at most `lim`.
CREATE FUNCTION sealq.blob_list_tasks(after_id uuid, lim integer) RETURNS SETOF uuid
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT DISTINCT b.task_id FROM sealq.blobs b
    WHERE after_id IS NULL OR b.task_id > after_id
    ORDER BY b.task_id LIMIT lim
$$;

-- Nothing in the schema is anyone's by default: the roles get EXECUTE on
-- the functions they need from `sealq postgres install --apply-roles`.
REVOKE ALL ON ALL TABLES IN SCHEMA sealq FROM PUBLIC;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA sealq FROM PUBLIC;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA sealq FROM PUBLIC;
