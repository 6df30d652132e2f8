//! [`sealq::Broker::erase_tasks`]: erase exactly the tasks the client
//! checked belong to the subject (finding 6 of the security review: the
//! clear subject tag alone is not trusted). One statement run per id, in the
//! writer's transaction for the whole batch.

use rusqlite::{OptionalExtension, params};
use sealq::TaskId;
use sealq::broker::BrokerResult;
use sealq::subject_keys::ErasureCounts;

use crate::codec::id_blob;
use crate::error::map_err;
use crate::writer::OpCtx;

/// Delete the given tasks in every state but active (with their bodies,
/// results and unique keys; ids remembered against replay), archive
/// active ones as `erased` with the envelope wiped and the lease revoked.
/// Ids not stored are skipped.
pub(crate) fn erase_tasks(ctx: &mut OpCtx<'_>, ids: &[TaskId]) -> BrokerResult<ErasureCounts> {
    let (conn, now, env) = (ctx.conn, ctx.now, ctx.env);
    let err = |e| map_err(&env.path, "erasing tasks", e);
    let mut state = conn
        .prepare_cached("SELECT CAST(state AS BLOB) FROM tasks WHERE id = ?1")
        .map_err(err)?;
    let mut counts = ErasureCounts::default();
    for id in ids {
        let blob = id_blob(id);
        let st: Option<Option<Vec<u8>>> = state
            .query_row([blob], |r| r.get::<_, Option<Vec<u8>>>(0))
            .optional()
            .map_err(err)?;
        let Some(st) = st else { continue };
        conn.prepare_cached("DELETE FROM unique_keys WHERE task_id = ?1")
            .map_err(err)?
            .execute([blob])
            .map_err(err)?;
        match st.as_deref() {
            Some(b"active") => {
                counts.active += 1;
                conn.prepare_cached(
                    "UPDATE task_bodies SET envelope = X'' \
                     WHERE seq = (SELECT seq FROM tasks WHERE id = ?1)",
                )
                .map_err(err)?
                .execute([blob])
                .map_err(err)?;
                conn.prepare_cached(
                    "UPDATE tasks SET state = 'archived', archive_reason = 'erased', \
                     result = NULL, last_error = NULL, lease_token = NULL, \
                     lease_expires_at = NULL, worker = NULL, finished_at = ?2, updated_at = ?2 \
                     WHERE id = ?1",
                )
                .map_err(err)?
                .execute(params![blob, now])
                .map_err(err)?;
            }
            other => {
                match other {
                    Some(b"scheduled") => counts.scheduled += 1,
                    Some(b"pending") => counts.pending += 1,
                    Some(b"retry") => counts.retry += 1,
                    Some(b"completed") => counts.completed += 1,
                    // A state that is not one (an edited row) counts as archived.
                    _ => counts.archived += 1,
                }
                conn.prepare_cached(
                    "INSERT INTO completed_ids (id, completed_at) VALUES (?1, ?2) \
                     ON CONFLICT (id) DO UPDATE SET \
                     completed_at = max(completed_at, excluded.completed_at)",
                )
                .map_err(err)?
                .execute(params![blob, now])
                .map_err(err)?;
                conn.prepare_cached("DELETE FROM tasks WHERE id = ?1")
                    .map_err(err)?
                    .execute([blob])
                    .map_err(err)?;
            }
        }
    }
    Ok(counts)
}
