//! The registry of live workers (`Broker::register_worker`,
//! `Broker::list_workers`, `Broker::deregister_worker`): two keys in the
//! global slot, `G workers` (hash: run id → the [`LiveWorker`] as named
//! MessagePack, its last heartbeat set from the broker's clock) and
//! `G workers:expiry` (zset: run id → when its registration expires, Unix
//! ms). Plain commands
//! in `MULTI` (no function: the library version does not change), which
//! the worker and admin ACL lines already allow (`docs/redis-acl.md`).
//!
//! Listing reads both keys in one round trip and deletes the expired runs
//! in a second (only when there are some). A run that re-registers between
//! the two may be deleted as expired: it is listed again at its next
//! heartbeat.

use std::collections::HashMap;
use std::time::Duration;

use sealq::broker::BrokerResult;
use sealq::model::live_worker::LiveWorker;

use crate::RedisBroker;

/// The two keys as read: the entries by run id, and each run's expiry.
type Registry = (HashMap<String, Vec<u8>>, Vec<(String, f64)>);

impl RedisBroker {
    fn workers_key(&self) -> String {
        format!("{}workers", self.inner.global_key_prefix)
    }

    fn workers_expiry_key(&self) -> String {
        format!("{}workers:expiry", self.inner.global_key_prefix)
    }

    /// Insert or refresh one run: last heartbeat now, expiring `ttl` later.
    pub(crate) async fn register_worker_impl(
        &self,
        w: &LiveWorker,
        ttl: Duration,
    ) -> BrokerResult<()> {
        let now = self.now();
        let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
        let entry = LiveWorker {
            last_heartbeat_ms: now,
            ..w.clone()
        };
        let bytes = rmp_serde::to_vec_named(&entry)
            .map_err(|e| self.corrupt_reply("encoding a live worker", e))?;
        let mut p = redis::pipe();
        p.atomic()
            .cmd("HSET")
            .arg(self.workers_key())
            .arg(&w.run_id)
            .arg(bytes)
            .ignore()
            .cmd("ZADD")
            .arg(self.workers_expiry_key())
            .arg(now.saturating_add(ttl_ms))
            .arg(&w.run_id)
            .ignore();
        self.inner
            .conn
            .pipe::<()>(&p)
            .await
            .map_err(|e| self.err("registering a live worker", e))
    }

    /// Forget one run (or several); unknown runs are harmless.
    pub(crate) async fn deregister_workers(&self, run_ids: &[String]) -> BrokerResult<()> {
        if run_ids.is_empty() {
            return Ok(());
        }
        let mut p = redis::pipe();
        p.atomic()
            .cmd("HDEL")
            .arg(self.workers_key())
            .arg(run_ids)
            .ignore()
            .cmd("ZREM")
            .arg(self.workers_expiry_key())
            .arg(run_ids)
            .ignore();
        self.inner
            .conn
            .pipe::<()>(&p)
            .await
            .map_err(|e| self.err("deregistering live workers", e))
    }

    /// The live runs, oldest start first; the expired ones are deleted.
    pub(crate) async fn list_workers_impl(&self) -> BrokerResult<Vec<LiveWorker>> {
        let what = "listing live workers";
        let now = self.now();
        let mut p = redis::pipe();
        p.cmd("HGETALL")
            .arg(self.workers_key())
            .cmd("ZRANGE")
            .arg(self.workers_expiry_key())
            .arg(0)
            .arg(-1)
            .arg("WITHSCORES");
        let (entries, expiry): Registry = self
            .inner
            .conn
            .pipe(&p)
            .await
            .map_err(|e| self.err(what, e))?;
        let expiry: HashMap<String, f64> = expiry.into_iter().collect();
        let mut live = Vec::new();
        let mut dead: Vec<String> = Vec::new();
        for (run_id, bytes) in entries {
            // No expiry (half an edit) counts as expired.
            if !expiry.get(&run_id).is_some_and(|&e| e > now as f64) {
                dead.push(run_id);
                continue;
            }
            match rmp_serde::from_slice::<LiveWorker>(&bytes) {
                Ok(w) => live.push(w),
                Err(_) => tracing::warn!(
                    "sealq: a live worker entry does not decode (an edited key); left out"
                ),
            }
        }
        // Expiry entries whose hash entry is gone (half an edit) go too.
        for (run_id, e) in &expiry {
            if *e <= now as f64 && !dead.contains(run_id) {
                dead.push(run_id.clone());
            }
        }
        self.deregister_workers(&dead).await?;
        live.sort_by(|a, b| (a.started_at_ms, &a.run_id).cmp(&(b.started_at_ms, &b.run_id)));
        Ok(live)
    }
}
