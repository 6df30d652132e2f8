//! The chunk path of [`super::enqueue`]: [`CHUNK`] (or [`SMALL_CHUNK`])
//! tasks without a unique key, for uncapped queues, stored with two
//! multi-row statements, one for their `tasks` rows and one for their
//! bodies.
//!
//! **No statement journal.** SQLite keeps a statement journal for a
//! statement that writes several rows and may abort in the middle (so that
//! it can undo that statement alone): it copies every page the statement
//! changes that existed before it, and every page of the transaction it
//! spills from its cache meanwhile. Both statements here are written so
//! that they cannot abort part way: `INSERT OR FAIL` (a `NOT NULL` failure
//! stops the statement where it is instead of undoing it), no explicit
//! `seq` (SQLite gives each row the largest stored plus one, as
//! `OP_NewRowid`, where an explicit one compiles to a conversion that may
//! abort), and no function call (migration 7 dropped the `tasks` table's
//! `CHECK (length(id) = 16)`, which called one). A statement that fails
//! still fails the enqueue, and the writer rolls back the whole transaction
//! (`crate::writer`), so nothing relies on undoing one statement alone.
//! This took a fifth off the writer's instructions per task
//! (`docs/benchmarks.md`, "SQLite bulk writer at session 9").
//!
//! **Which rows went in.** The chunk knows the `seq` its first row gets
//! (`first`: the largest stored plus one, looked up once per enqueue and
//! then followed) and reads how many rows went in and the last row's `seq`
//! (`last_insert_rowid`): when every row went in, their `seq`s are `first`,
//! `first + 1`, …. The bodies then take the same `seq`s by the same rule
//! when `task_bodies` ends where `tasks` does (every task has its body),
//! which the chunk checks first and again after; otherwise each body is
//! stored with its `seq` given. When some ids were remembered or stored
//! (skipped by the statement), the rows that went in are read back by `seq`.
//!
//! **Per chunk, not per row.** When every task of the chunk has the same
//! queue, kind, subject tag, retry limit and retention (a bulk enqueue's
//! usual case), these are bound once for the chunk; only the id and
//! `run_at` are bound per row.

use std::sync::LazyLock;

use rusqlite::{CachedStatement, Connection};
use sealq::broker::{EnqueueResult, NewTask};

use super::{INSERT_BODY_SQL, Store, stmt};
use crate::codec::{id_blob, ms_to_sql};

/// Tasks per multi-row statement of the chunk path.
pub(crate) const CHUNK: usize = 50;

/// Rows per statement for a run of tasks shorter than [`CHUNK`] (a batch's
/// tail, or a run cut short by a task with a unique key): such runs go
/// [`SMALL_CHUNK`] rows at a time, and what is left of them row at a time.
pub(crate) const SMALL_CHUNK: usize = 20;

/// `(?a, ?a+1, …), (…), …`: `rows` rows of `cols` parameters each, the
/// first numbered `from`.
fn values(rows: usize, cols: usize, from: usize) -> String {
    let mut out = String::with_capacity(rows * cols * 6);
    for r in 0..rows {
        if r > 0 {
            out.push_str(", ");
        }
        out.push('(');
        for c in 0..cols {
            if c > 0 {
                out.push_str(", ");
            }
            out.push_str(&format!("?{}", from + r * cols + c));
        }
        out.push(')');
    }
    out
}

/// Per-row columns of [`ChunkSql::uniform`]: id, run_at.
const UNIFORM_COLS: usize = 2;

/// Per-row columns of [`ChunkSql::mixed`]: id, queue, kind, subject_tag,
/// max_retries, retention_ms, run_at.
const MIXED_COLS: usize = 7;

/// Parameters bound once per statement of [`ChunkSql::uniform`], before the
/// rows: now, queue, kind, subject_tag, max_retries, retention_ms.
const UNIFORM_HEAD: usize = 6;

/// The chunk path's statements for one number of rows. The time (`?1`)
/// decides each row's state (`pending`, or `scheduled` when `run_at` is
/// later, as `super::state_at` does) and is its `updated_at`. A row whose id
/// is in the replay memory (`NOT EXISTS` in `completed_ids`) or already
/// stored (`ON CONFLICT (id) DO NOTHING`) is skipped.
struct ChunkSql {
    /// Rows per statement.
    rows: usize,
    /// The `tasks` insert when the chunk's tasks share everything but their
    /// id and `run_at`: `?1` now, `?2`..`?6` queue, kind, subject_tag,
    /// max_retries, retention_ms, then the rows' (id, run_at).
    uniform: String,
    /// The `tasks` insert for any chunk: `?1` now, then the rows' (id,
    /// queue, kind, subject_tag, max_retries, retention_ms, run_at).
    mixed: String,
    /// The `task_bodies` insert taking SQLite's next `seq`s: the rows'
    /// (envelope, meta).
    bodies_next: String,
    /// The `task_bodies` insert with `seq` given: the rows' (seq, envelope,
    /// meta). Keeps a statement journal.
    bodies_given: String,
}

impl ChunkSql {
    fn new(rows: usize) -> Self {
        let tasks = |cols: &str, from: usize, per_row: usize| {
            format!(
                "INSERT OR FAIL INTO tasks (id, queue, kind, subject_tag, max_retries, \
                                            retention_ms, state, run_at, updated_at) \
                 SELECT {cols} \
                 FROM (VALUES {}) \
                 WHERE NOT EXISTS (SELECT 1 FROM completed_ids c WHERE c.id = column1) \
                 ON CONFLICT (id) DO NOTHING",
                values(rows, per_row, from)
            )
        };
        Self {
            rows,
            uniform: tasks(
                "column1, ?2, ?3, ?4, ?5, ?6, \
                 CASE WHEN column2 <= ?1 THEN 'pending' ELSE 'scheduled' END, column2, ?1",
                UNIFORM_HEAD + 1,
                UNIFORM_COLS,
            ),
            mixed: tasks(
                "column1, column2, column3, column4, column5, column6, \
                 CASE WHEN column7 <= ?1 THEN 'pending' ELSE 'scheduled' END, column7, ?1",
                2,
                MIXED_COLS,
            ),
            bodies_next: format!(
                "INSERT OR FAIL INTO task_bodies (envelope, meta) VALUES {}",
                values(rows, 2, 1)
            ),
            bodies_given: format!(
                "INSERT INTO task_bodies (seq, envelope, meta) VALUES {}",
                values(rows, 3, 1)
            ),
        }
    }
}

/// The chunk path's statements for [`CHUNK`] rows.
static CHUNK_SQL: LazyLock<ChunkSql> = LazyLock::new(|| ChunkSql::new(CHUNK));

/// The chunk path's statements for [`SMALL_CHUNK`] rows.
static SMALL_CHUNK_SQL: LazyLock<ChunkSql> = LazyLock::new(|| ChunkSql::new(SMALL_CHUNK));

/// The chunk path's prepared statements for one number of rows, taken from
/// the connection's cache when first used.
#[derive(Default)]
pub(super) struct ChunkStmts<'c> {
    uniform: Option<CachedStatement<'c>>,
    mixed: Option<CachedStatement<'c>>,
    bodies_next: Option<CachedStatement<'c>>,
    bodies_given: Option<CachedStatement<'c>>,
}

/// Where the next chunk's rows go: the `seq` `tasks` gives its next row, and
/// the one `task_bodies` gives its next (the largest stored plus one, each).
#[derive(Clone, Copy)]
pub(super) struct NextSeq {
    tasks: i64,
    bodies: i64,
}

/// [`NextSeq`] as stored now.
fn next_seq(conn: &Connection) -> rusqlite::Result<NextSeq> {
    conn.prepare_cached(
        "SELECT (SELECT coalesce(max(seq), 0) FROM tasks), \
                (SELECT coalesce(max(seq), 0) FROM task_bodies)",
    )?
    .query_row([], |r| {
        Ok(NextSeq {
            tasks: r.get::<_, i64>(0)?.saturating_add(1),
            bodies: r.get::<_, i64>(1)?.saturating_add(1),
        })
    })
}

/// Whether every task of `tasks` has the first's queue, kind, subject tag,
/// retry limit and retention.
fn uniform(tasks: &[NewTask]) -> bool {
    let first = &tasks[0];
    tasks[1..].iter().all(|t| {
        t.queue == first.queue
            && t.kind == first.kind
            && t.meta.subject_tag == first.meta.subject_tag
            && t.meta.max_retries == first.meta.max_retries
            && t.meta.retention_ms == first.meta.retention_ms
    })
}

/// An internal error: the rows did not get the `seq`s they were meant to
/// (the transaction is rolled back).
fn seq_mismatch(what: &str) -> rusqlite::Error {
    rusqlite::Error::SqliteFailure(
        rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_INTERNAL),
        Some(format!(
            "internal error: {what} did not get the seq values expected; nothing was stored"
        )),
    )
}

impl Store<'_> {
    /// Store [`CHUNK`] or [`SMALL_CHUNK`] tasks without unique keys, for
    /// uncapped queues, with two statements; their results are appended to
    /// `out`.
    pub(super) fn chunk(
        &mut self,
        tasks: &[NewTask],
        metas: &[Vec<u8>],
        out: &mut Vec<EnqueueResult>,
    ) -> rusqlite::Result<()> {
        let (sql, slot) = match tasks.len() {
            CHUNK => (&*CHUNK_SQL, 0),
            _ => (&*SMALL_CHUNK_SQL, 1),
        };
        let rows = sql.rows;
        debug_assert_eq!(tasks.len(), rows);
        let (conn, now) = (self.conn, self.now);
        let next = match self.next_seq {
            Some(next) => next,
            None => next_seq(conn)?,
        };
        let first = next.tasks;
        // Near the end of the `seq` range (SQLite then picks free values
        // at random), or an id twice in the chunk (the first must win, as
        // row at a time): store the chunk row at a time.
        let ascending = tasks.windows(2).all(|w| w[0].id < w[1].id);
        if first > i64::MAX - rows as i64 || !ascending && super::has_repeated_id(tasks) {
            for (t, meta) in tasks.iter().zip(metas) {
                let r = self.one(t, meta, None)?;
                out.push(r);
            }
            return Ok(());
        }
        let s = &mut self.stmts.chunk[slot];
        let stored = if uniform(tasks) {
            let insert = stmt(&mut s.uniform, conn, &sql.uniform)?;
            let t = &tasks[0];
            insert.raw_bind_parameter(1, now)?;
            insert.raw_bind_parameter(2, &t.queue)?;
            insert.raw_bind_parameter(3, &t.kind)?;
            insert.raw_bind_parameter(4, t.meta.subject_tag.as_ref().map(|s| s.0))?;
            insert.raw_bind_parameter(5, i64::from(t.meta.max_retries))?;
            insert.raw_bind_parameter(6, ms_to_sql(t.meta.retention_ms))?;
            for (j, t) in tasks.iter().enumerate() {
                let at = UNIFORM_HEAD + 1 + j * UNIFORM_COLS;
                insert.raw_bind_parameter(at, id_blob(&t.id))?;
                insert.raw_bind_parameter(at + 1, t.run_at_ms)?;
            }
            insert.raw_execute()?
        } else {
            let insert = stmt(&mut s.mixed, conn, &sql.mixed)?;
            insert.raw_bind_parameter(1, now)?;
            for (j, t) in tasks.iter().enumerate() {
                let at = 2 + j * MIXED_COLS;
                insert.raw_bind_parameter(at, id_blob(&t.id))?;
                insert.raw_bind_parameter(at + 1, &t.queue)?;
                insert.raw_bind_parameter(at + 2, &t.kind)?;
                insert.raw_bind_parameter(at + 3, t.meta.subject_tag.as_ref().map(|s| s.0))?;
                insert.raw_bind_parameter(at + 4, i64::from(t.meta.max_retries))?;
                insert.raw_bind_parameter(at + 5, ms_to_sql(t.meta.retention_ms))?;
                insert.raw_bind_parameter(at + 6, t.run_at_ms)?;
            }
            insert.raw_execute()?
        };
        let end = first + stored as i64;
        if stored > 0 && conn.last_insert_rowid() != end - 1 {
            return Err(seq_mismatch("the chunk's tasks"));
        }
        let mut present = [true; CHUNK];
        let present = &mut present[..rows];
        if stored == rows && next.bodies == first {
            let bodies = stmt(&mut s.bodies_next, conn, &sql.bodies_next)?;
            for (j, (t, meta)) in tasks.iter().zip(metas).enumerate() {
                bodies.raw_bind_parameter(2 * j + 1, &t.envelope)?;
                bodies.raw_bind_parameter(2 * j + 2, meta)?;
            }
            bodies.raw_execute()?;
            if conn.last_insert_rowid() != end - 1 {
                return Err(seq_mismatch("the chunk's bodies"));
            }
        } else if stored == rows {
            let bodies = stmt(&mut s.bodies_given, conn, &sql.bodies_given)?;
            for (j, (t, meta)) in tasks.iter().zip(metas).enumerate() {
                bodies.raw_bind_parameter(3 * j + 1, first + j as i64)?;
                bodies.raw_bind_parameter(3 * j + 2, &t.envelope)?;
                bodies.raw_bind_parameter(3 * j + 3, meta)?;
            }
            bodies.raw_execute()?;
        } else {
            // Some ids were remembered or stored: the rows that went in
            // are those stored from `first` on, in the chunk's order.
            present.fill(false);
            let mut seqs = conn.prepare_cached("SELECT seq, id FROM tasks WHERE seq >= ?1")?;
            let found = seqs.query_map([first], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, [u8; 16]>(1)?))
            })?;
            let body = stmt(&mut self.stmts.body, conn, INSERT_BODY_SQL)?;
            for row in found {
                let (seq, id) = row?;
                let Some(j) = tasks.iter().position(|t| *id_blob(&t.id) == id) else {
                    return Err(seq_mismatch("a task of the chunk"));
                };
                present[j] = true;
                body.execute(rusqlite::params![seq, tasks[j].envelope, metas[j]])?;
            }
        }
        // The bodies stored took `seq`s from `first` to `end - 1`.
        self.next_seq = Some(NextSeq {
            tasks: end,
            bodies: if stored > 0 {
                next.bodies.max(end)
            } else {
                next.bodies
            },
        });
        for (t, stored) in tasks.iter().zip(present.iter().copied()) {
            out.push(if stored {
                self.ready |= t.run_at_ms <= now;
                EnqueueResult::Enqueued
            } else {
                EnqueueResult::IdExists
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::options::Synchronous;
    use crate::schema::{MIGRATIONS, NEW_DATABASE_PAGE_SIZE, open_writer};

    /// `EXPLAIN sql`'s rows: (opcode, p2).
    fn program(conn: &Connection, sql: &str) -> Vec<(String, i64)> {
        let mut stmt = conn.prepare(&format!("EXPLAIN {sql}")).unwrap();
        let mut rows = stmt.raw_query();
        let mut out = Vec::new();
        while let Some(r) = rows.next().unwrap() {
            out.push((r.get(1).unwrap(), r.get(3).unwrap()));
        }
        out
    }

    /// What makes SQLite keep a statement journal for a multi-row insert
    /// (`sqlite3MayAbort`): a function call, an explicit rowid's
    /// conversion, or a constraint that aborts (`OE_Abort`, 2).
    fn may_abort(conn: &Connection, sql: &str) -> Vec<(String, i64)> {
        program(conn, sql)
            .into_iter()
            .filter(|(op, p2)| {
                matches!(op.as_str(), "Function" | "PureFunc" | "MustBeInt")
                    || matches!(op.as_str(), "Halt" | "HaltIfNull") && *p2 == 2
            })
            .collect()
    }

    /// Issue 22, bulk enqueue: on the current schema the chunk statements
    /// that take SQLite's `seq`s cannot abort part way, so SQLite keeps no
    /// statement journal for them; on a version 6 store (the `CHECK` that
    /// calls `length`) the same `tasks` statements could.
    #[test]
    fn bulk_enqueue_chunk_statements_need_no_statement_journal() {
        let dir = tempfile::tempdir().unwrap();
        let conn = open_writer(
            &dir.path().join("q.db"),
            Synchronous::Full,
            Duration::from_secs(5),
            NEW_DATABASE_PAGE_SIZE,
        )
        .unwrap();
        for sql in [&*CHUNK_SQL, &*SMALL_CHUNK_SQL] {
            for s in [&sql.uniform, &sql.mixed, &sql.bodies_next] {
                assert_eq!(may_abort(&conn, s), [], "{s}");
            }
            // The bodies with their `seq` given convert it: journaled.
            assert!(!may_abort(&conn, &sql.bodies_given).is_empty());
        }

        let old = Connection::open_in_memory().unwrap();
        for m in &MIGRATIONS[..6] {
            old.execute_batch(m).unwrap();
        }
        for s in [&CHUNK_SQL.uniform, &CHUNK_SQL.mixed] {
            let found = may_abort(&old, s);
            assert!(
                found
                    .iter()
                    .any(|(op, _)| op.ends_with("Func") || op == "Function"),
                "{found:?}"
            );
        }
    }

    /// Issue 22, bulk enqueue: a chunk whose tasks share everything but
    /// their ids and times binds those once, else per task.
    #[test]
    fn bulk_enqueue_chunk_is_uniform_only_when_all_shared_values_match() {
        let now = 1_000;
        let base: Vec<NewTask> = (0..4)
            .map(|_| sealq::testkit::fixtures::task_at("q", now, now))
            .collect();
        let mut later = base.clone();
        later[3].run_at_ms = now + 5;
        assert!(
            uniform(&base) && uniform(&later),
            "ids and run_at may differ"
        );
        let edits: [fn(&mut NewTask); 5] = [
            |t| t.queue = "other".into(),
            |t| t.kind = "other".into(),
            |t| t.meta.subject_tag = Some(sealq::testkit::fixtures::subject(3)),
            |t| t.meta.max_retries += 1,
            |t| t.meta.retention_ms += 1,
        ];
        for edit in edits {
            let mut tasks = base.clone();
            edit(&mut tasks[2]);
            assert!(!uniform(&tasks));
        }
    }
}
