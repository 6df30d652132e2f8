//! Tests of the schema: query plans, opcodes, caches, migrations.

use super::*;

/// Column `col` of every row of `sql` (parameters left unbound).
fn column(conn: &Connection, sql: &str, col: usize) -> Vec<String> {
    let mut stmt = conn.prepare(sql).unwrap();
    let mut rows = stmt.raw_query();
    let mut out = Vec::new();
    while let Some(row) = rows.next().unwrap() {
        out.push(row.get(col).unwrap());
    }
    out
}

/// The operations (`opcode` column) of `EXPLAIN sql`.
fn opcodes(conn: &Connection, sql: &str) -> Vec<String> {
    column(conn, &format!("EXPLAIN {sql}"), 1)
}

fn writer() -> (tempfile::TempDir, Connection) {
    let dir = tempfile::tempdir().unwrap();
    let conn = open_writer(
        &dir.path().join("q.db"),
        Synchronous::Full,
        Duration::from_secs(1),
        NEW_DATABASE_PAGE_SIZE,
    )
    .unwrap();
    (dir, conn)
}

/// Issue 22, bulk enqueue: inserting a task, and changing its state,
/// evaluate the partial indexes' conditions without building a
/// temporary b-tree per statement run (what `state IN (three
/// constants)` cost on every row).
#[test]
fn bulk_enqueue_task_writes_build_no_temporary_btree() {
    let (_dir, conn) = writer();
    for sql in [
        "INSERT INTO tasks (id, queue, kind, subject_tag, max_retries, retention_ms, \
         state, attempts, run_at, updated_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 0, ?8, ?9) ON CONFLICT (id) DO NOTHING",
        "UPDATE tasks SET state = 'active', attempts = attempts + 1 WHERE seq = ?1",
        "UPDATE tasks SET state = 'completed' WHERE seq = ?1 AND state = 'active'",
        "UPDATE tasks SET state = 'retry', run_at = ?2 WHERE seq = ?1",
    ] {
        let ops = opcodes(&conn, sql);
        assert!(ops.iter().any(|o| o == "IdxInsert"), "{sql}: {ops:?}");
        assert!(
            !ops.iter().any(|o| o == "OpenEphemeral"),
            "{sql} builds a temporary b-tree: {ops:?}"
        );
    }
}

/// Issue 22: with `tasks_ready`'s condition as comparisons, dequeue's
/// query still reads the ready tasks through that index, in order.
#[test]
fn bulk_enqueue_dequeue_still_reads_through_tasks_ready() {
    let (_dir, conn) = writer();
    let plan = column(
        &conn,
        &format!("EXPLAIN QUERY PLAN {}", *crate::ops::READY_SQL),
        3,
    );
    assert_eq!(
        plan,
        // Covering since migration 6 (the state is in the index).
        ["SEARCH tasks USING COVERING INDEX tasks_ready (queue=? AND run_at<?)"],
        "no sort, no other index"
    );
}

/// Issue 22, bulk enqueue: with `tasks_queue_state` leaving pending
/// tasks out (migration 6), stats and the capped queues' count still
/// read covering index scans, without sorting.
#[test]
fn bulk_enqueue_stats_and_room_read_through_partial_indexes() {
    let (_dir, conn) = writer();
    let plan = |sql: &str| column(&conn, &format!("EXPLAIN QUERY PLAN {sql}"), 3);
    assert_eq!(
        plan(&crate::read::STATS_NOT_PENDING_SQL),
        ["SCAN tasks USING COVERING INDEX tasks_queue_state"]
    );
    assert_eq!(
        plan(&crate::read::STATS_PENDING_SQL),
        ["SCAN tasks USING COVERING INDEX tasks_ready"]
    );
    assert_eq!(
        plan(&crate::enqueue::WAITING_SQL),
        ["SEARCH tasks USING COVERING INDEX tasks_ready (queue=?)"]
    );
    let listed = plan(&format!(
        "SELECT id FROM tasks t WHERE t.queue = ?1 AND t.state = ?2 AND {NOT_PENDING} \
         ORDER BY t.id"
    ));
    assert!(
        listed[0].contains("USING INDEX tasks_queue_state (queue=? AND state=?)"),
        "{listed:?}"
    );
}

fn cache_size(conn: &Connection) -> i64 {
    conn.query_row("PRAGMA cache_size", [], |r| r.get(0))
        .unwrap()
}

/// Issue 22, "worker RSS at most 16 MiB": the page caches of the write
/// and read connections are bounded below SQLite's 2,000 KiB default.
#[test]
fn worker_rss_page_caches_of_writer_and_readers_are_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q.db");
    let writer = open_writer(
        &path,
        Synchronous::Full,
        Duration::from_secs(5),
        NEW_DATABASE_PAGE_SIZE,
    )
    .unwrap();
    assert_eq!(cache_size(&writer), -i64::from(WRITER_CACHE_KIB));
    let reader = open_reader(&path).unwrap();
    assert_eq!(cache_size(&reader), -i64::from(READER_CACHE_KIB));
}

/// Every row of `sql`, each column as a value.
fn rows(conn: &Connection, sql: &str) -> Vec<Vec<rusqlite::types::Value>> {
    let mut stmt = conn.prepare(sql).unwrap();
    let n = stmt.column_count();
    stmt.query_map([], |r| (0..n).map(|i| r.get(i)).collect())
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// The schema's objects as SQLite keeps them.
fn objects(conn: &Connection) -> Vec<Vec<rusqlite::types::Value>> {
    rows(
        conn,
        "SELECT type, name, tbl_name, sql FROM sqlite_schema ORDER BY type, name",
    )
}

/// Issue 22, bulk enqueue: a version 6 store migrates to `tasks` without
/// the `CHECK` (migration 7, a rebuild of the table) keeping every row,
/// `seq` and body, and ends with the schema of a new store: the same
/// indexes, and the trigger that deletes a body with its task.
#[test]
fn bulk_enqueue_a_version_6_store_rebuilds_tasks_without_the_check() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v6.db");
    {
        let raw = Connection::open(&path).unwrap();
        for m in &MIGRATIONS[..6] {
            raw.execute_batch(m).unwrap();
        }
        raw.execute_batch(&format!(
            "PRAGMA user_version = 6; PRAGMA application_id = {APPLICATION_ID};
             INSERT INTO tasks (seq, id, queue, kind, subject_tag, max_retries, retention_ms,
                                state, attempts, run_at, lease_token, lease_expires_at, worker,
                                purge_at, finished_at, result, updated_at)
             VALUES (5, x'00000000000000000000000000000005', 'q', 'k', NULL, 3, 60000,
                     'pending', 0, 100, NULL, NULL, NULL, NULL, NULL, NULL, 100),
                    (9, x'00000000000000000000000000000009', 'q', 'k', x'0707', 3, 60000,
                     'active', 1, 100, 77, 5000, 'w1', NULL, NULL, NULL, 200),
                    (12, x'0000000000000000000000000000000c', 'r', 'k2', NULL, 0, 10,
                     'completed', 1, 100, NULL, NULL, NULL, 900, 300, x'01', 300);
             INSERT INTO task_bodies (seq, envelope, meta)
             VALUES (5, x'aa', x'80'), (9, x'bb', x'80'), (12, x'cc', x'80');"
        ))
        .unwrap();
    }
    let before = Connection::open(&path).unwrap();
    let tasks_before = rows(&before, "SELECT * FROM tasks ORDER BY seq");
    let bodies_before = rows(&before, "SELECT * FROM task_bodies ORDER BY seq");
    drop(before);

    let conn = open_writer(
        &path,
        Synchronous::Full,
        Duration::from_secs(5),
        NEW_DATABASE_PAGE_SIZE,
    )
    .unwrap();
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, 7);
    let table: String = conn
        .query_row(
            "SELECT sql FROM sqlite_schema WHERE type = 'table' AND name = 'tasks'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(!table.contains("CHECK"), "{table}");
    assert!(
        table.contains("id               BLOB UNIQUE NOT NULL"),
        "{table}"
    );
    assert_eq!(
        rows(&conn, "SELECT * FROM tasks ORDER BY seq"),
        tasks_before
    );
    assert_eq!(
        rows(&conn, "SELECT * FROM task_bodies ORDER BY seq"),
        bodies_before
    );

    let (_fresh_dir, fresh) = writer();
    assert_eq!(objects(&conn), objects(&fresh), "the schema of a new store");
    let names: Vec<String> = column(
        &conn,
        "SELECT name FROM sqlite_schema WHERE tbl_name = 'tasks' ORDER BY name",
        0,
    );
    assert_eq!(
        names,
        [
            "sqlite_autoindex_tasks_1",
            "tasks",
            "tasks_delete_body",
            "tasks_due",
            "tasks_lease",
            "tasks_purge",
            "tasks_queue_state",
            "tasks_ready",
            "tasks_subject"
        ]
    );
    // The id is still unique, the trigger still deletes the body, and the
    // next row takes the next `seq`.
    assert!(
        conn.execute(
            "INSERT INTO tasks (id, queue, kind, max_retries, retention_ms, state, run_at, \
             updated_at) VALUES (x'00000000000000000000000000000005', 'q', 'k', 0, 0, \
             'pending', 0, 0)",
            [],
        )
        .is_err()
    );
    conn.execute("DELETE FROM tasks WHERE seq = 9", []).unwrap();
    assert_eq!(
        column(
            &conn,
            "SELECT CAST(seq AS TEXT) FROM task_bodies ORDER BY seq",
            0
        ),
        ["5", "12"].map(String::from)
    );
    conn.execute(
        "INSERT INTO tasks (id, queue, kind, max_retries, retention_ms, state, run_at, \
         updated_at) VALUES (x'000000000000000000000000000000ff', 'q', 'k', 0, 0, \
         'pending', 0, 0)",
        [],
    )
    .unwrap();
    assert_eq!(conn.last_insert_rowid(), 13);
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
}
