//! The Redis Functions library (`lua/sealq.lua`), its installation, its
//! version check, and moving tasks stored by an older layout.

use redis::Value;
use sealq::broker::BrokerResult;
use sealq::{BrokerError, BrokerErrorKind};

use crate::RedisBroker;
use crate::calls::{QueueBatch, fcall};
use crate::codec::{array, int, opt_bytes};

/// Version of the functions library this build needs. Bumped whenever a
/// function's keys, arguments or replies change.
pub const LIBRARY_VERSION: &str = "15";

/// Name of the library (`#!lua name=sealq`).
pub const LIBRARY_NAME: &str = "sealq";

const SOURCE: &str = include_str!("../lua/sealq.lua");

/// The library source as loaded by `FUNCTION LOAD` (version filled in).
pub fn library_source() -> String {
    SOURCE.replace("__SEALQ_VERSION__", LIBRARY_VERSION)
}

/// Refuse a loaded library version `loaded` other than [`LIBRARY_VERSION`]
/// (on the Redis at `target`), telling how to fix it.
fn check_version(target: &str, loaded: &str) -> Result<(), BrokerError> {
    if loaded != LIBRARY_VERSION {
        return Err(BrokerError::new(
            BrokerErrorKind::Config,
            format!(
                "Redis at {target} has sealq functions library version {loaded}, this sealq needs \
                 version {LIBRARY_VERSION}: run `sealq redis install --broker URL` (as an admin \
                 user) with this sealq's version"
            ),
        ));
    }
    Ok(())
}

/// The `sealq_migrate` reply: `[scanned, migrated, last id]` (missing or
/// negative counts are 0; no last id is empty).
fn parse_migrate_reply(reply: Value) -> Result<(u64, u64, Vec<u8>), String> {
    let mut parts = array(reply)?.into_iter();
    let mut n = || -> Result<u64, String> {
        let v = parts.next().unwrap_or(Value::Int(0));
        Ok(u64::try_from(int(&v)?.max(0)).unwrap_or(0))
    };
    let (scanned, migrated) = (n()?, n()?);
    let last = opt_bytes(parts.next().unwrap_or(Value::Nil))?.unwrap_or_default();
    Ok((scanned, migrated, last))
}

impl RedisBroker {
    /// Load (or upgrade) the functions library: `FUNCTION LOAD REPLACE`, on
    /// every master of a Cluster, then move tasks stored by an older layout
    /// to the current one ([`Self::migrate`]). Needs an admin user. Returns
    /// the version.
    pub async fn install(&self) -> Result<String, BrokerError> {
        let mut cmd = redis::cmd("FUNCTION");
        cmd.arg("LOAD").arg("REPLACE").arg(library_source());
        let _: Value = self
            .inner
            .conn
            .query(&cmd)
            .await
            .map_err(|e| self.err("loading the functions library", e))?;
        self.check_library().await?;
        self.migrate().await?;
        Ok(LIBRARY_VERSION.to_owned())
    }

    /// Move tasks stored by library version 4 (bytes inside the task hash)
    /// to this version's layout, every queue, in batches of
    /// [`crate::RedisOptions::maintenance_batch`] (each atomic). Harmless to run
    /// again; [`Self::install`] runs it. Returns how many tasks it moved.
    pub async fn migrate(&self) -> BrokerResult<u64> {
        let what = "migrating stored tasks to the current layout";
        let limit = self.inner.opts.maintenance_batch.max(1);
        let (queues, _) = self.queues().await?;
        let todo: Vec<(String, String)> = queues.into_iter().map(|q| (q, String::new())).collect();
        let mut moved = 0u64;
        self.drain_queues(
            what,
            todo,
            |todo| {
                todo.iter()
                    .map(|(q, after)| {
                        let mut c = self.queue_call("sealq_migrate", q, false);
                        c.arg(after).arg(limit);
                        c
                    })
                    .collect()
            },
            |(q, _), reply| {
                let (scanned, migrated, last) =
                    parse_migrate_reply(reply).map_err(|e| self.corrupt_reply(what, e))?;
                moved += migrated;
                let more = scanned as usize >= limit && !last.is_empty();
                Ok(QueueBatch::more(
                    more.then(|| (q, String::from_utf8_lossy(&last).into_owned())),
                ))
            },
        )
        .await?;
        if moved > 0 {
            tracing::info!(
                moved,
                "sealq: moved tasks stored by library version 4 to the current layout"
            );
        }
        Ok(moved)
    }

    /// Check that the loaded functions library is the version this build needs.
    pub async fn check_library(&self) -> Result<(), BrokerError> {
        let mut cmd = fcall("sealq_version");
        cmd.arg(1).arg(&self.inner.global_key_prefix);
        let v: String = self
            .inner
            .conn
            .query(&cmd)
            .await
            .map_err(|e| self.err("checking the sealq functions library version", e))?;
        check_version(&self.inner.target, &v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_carries_the_version_and_name() {
        let src = library_source();
        assert!(
            src.starts_with(&format!("#!lua name={LIBRARY_NAME}")),
            "{}",
            &src[..40]
        );
        assert!(!src.contains("__SEALQ_VERSION__"));
        assert!(src.contains(&format!("local VERSION = '{LIBRARY_VERSION}'")));
    }

    #[test]
    fn another_library_version_is_refused_with_the_fix() {
        assert!(check_version("h:6379", LIBRARY_VERSION).is_ok());
        for loaded in ["14", "16", "", "15 "] {
            let e = check_version("h:6379", loaded).unwrap_err();
            assert_eq!(e.kind, BrokerErrorKind::Config);
            assert!(e.message.contains(&format!("version {loaded},")), "{e}");
            assert!(e.message.contains("sealq redis install"), "{e}");
            assert!(e.message.contains("h:6379"), "{e}");
        }
    }

    #[test]
    fn migrate_reply_gives_counts_and_cursor() {
        let v = Value::Array(vec![
            Value::Int(1000),
            Value::Int(7),
            Value::BulkString(b"00ff".to_vec()),
        ]);
        assert_eq!(parse_migrate_reply(v).unwrap(), (1000, 7, b"00ff".to_vec()));
        // Nothing left: short reply, negative counts are 0.
        let v = Value::Array(vec![Value::Int(-3)]);
        assert_eq!(parse_migrate_reply(v).unwrap(), (0, 0, Vec::new()));
        let e = parse_migrate_reply(Value::Array(vec![Value::Array(vec![])])).unwrap_err();
        assert!(e.contains("expected an integer"), "{e}");
        let e = parse_migrate_reply(Value::Int(1)).unwrap_err();
        assert!(e.contains("expected an array"), "{e}");
    }
}
