-- The replay memory's prune query on a churned table, btree against BRIN on completed_at
-- (issue 23): psql -d SCRATCH_DB -f brin-prune.sql, then ANALYZE both tables and repeat the
-- last two EXPLAINs with enable_seqscan off, as the planner chooses on a larger table.
CREATE TABLE cb (id uuid PRIMARY KEY, completed_at bigint NOT NULL);
CREATE TABLE cr (id uuid PRIMARY KEY, completed_at bigint NOT NULL);
CREATE INDEX cb_at ON cb USING brin (completed_at);
CREATE INDEX cr_at ON cr (completed_at);
-- 1M completions, time 1..1M
INSERT INTO cb SELECT gen_random_uuid(), g FROM generate_series(1, 1000000) g;
INSERT INTO cr SELECT id, completed_at FROM cb;
-- churn: prune the oldest 600k, vacuum, then 600k more completions reuse the space
DELETE FROM cb WHERE completed_at <= 600000; DELETE FROM cr WHERE completed_at <= 600000;
VACUUM cb; VACUUM cr;
INSERT INTO cb SELECT gen_random_uuid(), g FROM generate_series(1000001, 1600000) g;
INSERT INTO cr SELECT id, completed_at FROM cb WHERE completed_at > 1000000;
VACUUM ANALYZE cb; VACUUM ANALYZE cr;
SELECT 'cb pages', pg_relation_size('cb')/8192, 'cr pages', pg_relation_size('cr')/8192;
-- prune query (as sealq.prune_replay, without the tasks probe): horizon 1,100,000 (100k qualify), then 1,000,000 (nothing qualifies but the older ones already pruned)
EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) SELECT id FROM cb WHERE completed_at < 1100000 LIMIT 1000;
EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) SELECT id FROM cr WHERE completed_at < 1100000 LIMIT 1000;
DELETE FROM cb WHERE completed_at < 1100000; DELETE FROM cr WHERE completed_at < 1100000;
EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) SELECT id FROM cb WHERE completed_at < 1100000 LIMIT 1000;
EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) SELECT id FROM cr WHERE completed_at < 1100000 LIMIT 1000;
