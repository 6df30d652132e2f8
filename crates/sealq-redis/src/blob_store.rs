//! [`RedisBlobStore`]: claim-check blobs in Redis, with a time to live.
//!
//! Keys (`B` is the blob prefix, by default `PREFIX-blobs`):
//!
//! - `B:{<task id>}`: hash, field = the blob's digest (hex), value = the sealed
//!   blob; expires after the store's TTL so a forgotten blob cannot outlive
//!   its usefulness;
//! - `B:index`: sorted set of task ids that have a blob (for
//!   `sweep_orphans`); entries whose hash expired are harmless (deleting them
//!   is a no-op).
//!
//! Blobs are sealed and bound to their task before they arrive here, so the
//! store only ever holds ciphertext.

use std::time::Duration;

use async_trait::async_trait;
use sealq::blob::{BlobKey, BlobStore};
use sealq::broker::BrokerResult;
use sealq::{BrokerError, TaskId};
use tokio::sync::OnceCell;

use crate::conn::{Conn, TlsFiles};
use crate::url::Parsed;

/// Sealed claim-check blobs in Redis.
pub struct RedisBlobStore {
    parsed: Parsed,
    tls: TlsFiles,
    prefix: String,
    ttl: Duration,
    conn: OnceCell<Conn>,
}

impl std::fmt::Debug for RedisBlobStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBlobStore")
            .field("target", &self.parsed.redacted)
            .field("prefix", &self.prefix)
            .field("ttl", &self.ttl)
            .finish()
    }
}

impl RedisBlobStore {
    /// A store at the Redis `url` (TLS parameters of the URL apply) under
    /// `prefix`, each blob expiring `ttl` after it was written. Connects on
    /// first use.
    pub fn new(url: &str, prefix: &str, ttl: Duration, tls: TlsFiles) -> Result<Self, BrokerError> {
        crate::keys::validate_prefix(prefix)?;
        if ttl.as_millis() == 0 {
            return Err(BrokerError::new(
                sealq::BrokerErrorKind::Config,
                "the blob TTL must be positive: blobs must outlive the tasks that claim them",
            ));
        }
        Ok(RedisBlobStore {
            parsed: crate::url::parse(url)?,
            tls,
            prefix: prefix.to_owned(),
            ttl,
            conn: OnceCell::new(),
        })
    }

    fn hash_key(&self, task: &TaskId) -> String {
        format!("{}:{{{task}}}", self.prefix)
    }

    fn index_key(&self) -> String {
        format!("{}:index", self.prefix)
    }

    async fn query<T: redis::FromRedisValue>(
        &self,
        what: &str,
        cmd: &redis::Cmd,
    ) -> BrokerResult<T> {
        let conn = self
            .conn
            .get_or_try_init(|| {
                Conn::open(
                    &self.parsed,
                    &self.tls,
                    std::time::Duration::from_secs(30),
                    self.parsed.spin_wait(crate::DEFAULT_SPIN_WAIT),
                )
            })
            .await?;
        conn.query(cmd)
            .await
            .map_err(|e| crate::error::map(&self.parsed.redacted, what, e))
    }
}

fn digest_field(key: &BlobKey) -> String {
    hex::encode(key.digest)
}

#[async_trait]
impl BlobStore for RedisBlobStore {
    async fn put(&self, key: &BlobKey, sealed: Vec<u8>) -> BrokerResult<()> {
        let what = "storing a blob";
        let hash = self.hash_key(&key.task);
        let mut set = redis::cmd("HSET");
        set.arg(&hash).arg(digest_field(key)).arg(sealed.as_slice());
        let _: i64 = self.query(what, &set).await?;
        let mut exp = redis::cmd("PEXPIRE");
        exp.arg(&hash)
            .arg(u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX));
        let _: i64 = self.query(what, &exp).await?;
        let mut idx = redis::cmd("ZADD");
        idx.arg(self.index_key()).arg(0).arg(key.task.to_string());
        let _: i64 = self.query(what, &idx).await?;
        Ok(())
    }

    async fn get(&self, key: &BlobKey) -> BrokerResult<Option<Vec<u8>>> {
        let mut c = redis::cmd("HGET");
        c.arg(self.hash_key(&key.task)).arg(digest_field(key));
        self.query("reading a blob", &c).await
    }

    async fn delete_tasks(&self, ids: &[TaskId]) -> BrokerResult<u64> {
        let what = "deleting blobs";
        let mut n = 0u64;
        for id in ids {
            let mut len = redis::cmd("HLEN");
            len.arg(self.hash_key(id));
            let k: i64 = self.query(what, &len).await?;
            let mut del = redis::cmd("DEL");
            del.arg(self.hash_key(id));
            let _: i64 = self.query(what, &del).await?;
            let mut rem = redis::cmd("ZREM");
            rem.arg(self.index_key()).arg(id.to_string());
            let _: i64 = self.query(what, &rem).await?;
            n += k.max(0) as u64;
        }
        Ok(n)
    }

    async fn list_tasks(&self, after: Option<TaskId>, limit: usize) -> BrokerResult<Vec<TaskId>> {
        let what = "listing blobs";
        let min = match after {
            Some(a) => format!("({a}"),
            None => "-".to_owned(),
        };
        let mut c = redis::cmd("ZRANGE");
        c.arg(self.index_key())
            .arg(min)
            .arg("+")
            .arg("BYLEX")
            .arg("LIMIT")
            .arg(0)
            .arg(limit.max(1));
        let ids: Vec<String> = self.query(what, &c).await?;
        ids.iter()
            .map(|s| {
                s.parse::<TaskId>().map_err(|_| {
                    crate::error::corrupt(
                        &self.parsed.redacted,
                        what,
                        "a blob index entry is not a task id",
                    )
                })
            })
            .collect()
    }

    fn describe(&self) -> String {
        format!("{} (blobs under {})", self.parsed.redacted, self.prefix)
    }
}
