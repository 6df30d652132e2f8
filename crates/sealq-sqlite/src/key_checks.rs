//! Check values of the sealing keys in use (`Broker::key_checks`,
//! `Broker::record_key_checks`): table `key_checks` (migration 3), one row
//! per key id, the first value recorded for an id kept.

use rusqlite::params;
use sealq::broker::BrokerResult;
use sealq::model::key_check::KeyCheck;

use crate::error::map_err;
use crate::writer::OpCtx;

/// Every recorded check value, by key id. A row whose value is not 32 hex
/// digits (an edited file) is left out and logged.
pub(crate) fn read(ctx: &mut OpCtx<'_>) -> BrokerResult<Vec<KeyCheck>> {
    let err = |e| map_err(&ctx.env.path, "reading the keyring's check values", e);
    let mut stmt = ctx
        .conn
        .prepare_cached("SELECT key_id, check_value FROM key_checks ORDER BY key_id")
        .map_err(err)?;
    let mut rows = stmt.query([]).map_err(err)?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().map_err(err)? {
        let (id, value) = (row.get::<_, String>(0).ok(), row.get::<_, String>(1).ok());
        match (id.as_deref(), value.as_deref()) {
            (Some(id), Some(v)) if KeyCheck::from_hex(id, v).is_some() => {
                out.extend(KeyCheck::from_hex(id, v));
            }
            _ => tracing::warn!(
                key_id = id.as_deref().unwrap_or("?"),
                "sealq: a recorded key check value does not decode (an edited file); left out"
            ),
        }
    }
    Ok(out)
}

/// Record `checks`, keeping the value already recorded for a key id.
pub(crate) fn record(ctx: &mut OpCtx<'_>, checks: &[KeyCheck]) -> BrokerResult<()> {
    let err = |e| map_err(&ctx.env.path, "recording the keyring's check values", e);
    let mut stmt = ctx
        .conn
        .prepare_cached(
            "INSERT INTO key_checks (key_id, check_value, recorded_at) VALUES (?1, ?2, ?3) \
             ON CONFLICT (key_id) DO NOTHING",
        )
        .map_err(err)?;
    for c in checks {
        stmt.execute(params![c.key_id, c.value_hex(), ctx.now])
            .map_err(err)?;
    }
    Ok(())
}
