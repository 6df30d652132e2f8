//! [`Broker`] for [`PostgresBroker`]: each call one pooled connection, one
//! round trip on the hot path (see [`crate::ops`]).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sealq::broker::{
    Ack, AckResult, Broker, BrokerResult, DequeueRequest, EnqueueResult, Forwarded, Lease,
    LeasedTask, ListQuery, NewTask, QueueStats, RateLimit, Recovered, SealedSwap, TaskRecord,
};
use sealq::model::key_check::KeyCheck;
use sealq::model::live_worker::LiveWorker;
use sealq::subject_keys::ErasureCounts;
use sealq::{BrokerError, BrokerErrorKind, SubjectTag, TaskId};

use crate::{PostgresBroker, live_workers, maintenance, ops, read};

#[async_trait]
impl Broker for PostgresBroker {
    async fn enqueue(&self, tasks: Vec<NewTask>) -> BrokerResult<Vec<EnqueueResult>> {
        if tasks.is_empty() {
            return Ok(Vec::new());
        }
        ops::enqueue(&self.inner, tasks).await
    }

    async fn dequeue(&self, req: &DequeueRequest) -> BrokerResult<Vec<LeasedTask>> {
        if req.max == 0 || req.queues.is_empty() {
            return Ok(Vec::new());
        }
        ops::dequeue(&self.inner, req).await
    }

    async fn ack(&self, acks: Vec<Ack>) -> BrokerResult<Vec<AckResult>> {
        if acks.is_empty() {
            return Ok(Vec::new());
        }
        ops::ack(&self.inner, &acks).await
    }

    async fn extend_leases(&self, leases: &[Lease], lease: Duration) -> BrokerResult<Vec<bool>> {
        if leases.is_empty() {
            return Ok(Vec::new());
        }
        ops::extend(&self.inner, leases, lease).await
    }

    async fn forward_due(&self) -> BrokerResult<Forwarded> {
        maintenance::forward_due(&self.inner).await
    }

    async fn recover_expired(&self) -> BrokerResult<Recovered> {
        maintenance::recover_expired(&self.inner).await
    }

    async fn purge_completed(&self) -> BrokerResult<u64> {
        maintenance::purge_completed(&self.inner).await
    }

    async fn stats(&self) -> BrokerResult<Vec<QueueStats>> {
        read::stats(&self.inner).await
    }

    async fn queue_depths(&self) -> BrokerResult<Vec<QueueStats>> {
        use std::sync::atomic::Ordering;
        let denied = &self.inner.depths_denied;
        if !denied.load(Ordering::Relaxed) {
            match read::queue_depths(&self.inner).await? {
                Some(depths) => return Ok(depths),
                // A login the role setup has not granted migration 11's
                // function yet: the exact counts it may call, from now on.
                None => denied.store(true, Ordering::Relaxed),
            }
        }
        read::stats(&self.inner).await
    }

    async fn list(&self, query: &ListQuery) -> BrokerResult<Vec<TaskRecord>> {
        read::list(&self.inner, query).await
    }

    async fn sample_waiting(&self, queue: &str, limit: usize) -> BrokerResult<Vec<TaskRecord>> {
        match read::sample_waiting(&self.inner, queue, limit).await? {
            Some(sample) => Ok(sample),
            // A login the role setup has not granted migration 10's
            // function yet: the by-id lists it may call.
            None => sealq::broker::sample_waiting_by_state(self, queue, limit).await,
        }
    }

    async fn get(&self, id: TaskId) -> BrokerResult<Option<TaskRecord>> {
        read::get(&self.inner, id).await
    }

    async fn delete(&self, ids: &[TaskId]) -> BrokerResult<u64> {
        if ids.is_empty() {
            return Ok(0);
        }
        maintenance::delete(&self.inner, ids).await
    }

    async fn rerun(&self, ids: &[TaskId]) -> BrokerResult<u64> {
        if ids.is_empty() {
            return Ok(0);
        }
        maintenance::rerun(&self.inner, ids).await
    }

    async fn pause(&self, queue: &str) -> BrokerResult<()> {
        maintenance::set_paused(&self.inner, queue, true).await
    }

    async fn resume(&self, queue: &str) -> BrokerResult<()> {
        maintenance::set_paused(&self.inner, queue, false).await
    }

    async fn set_max_depth(&self, queue: &str, max_depth: Option<u64>) -> BrokerResult<()> {
        maintenance::set_max_depth(&self.inner, queue, max_depth).await
    }

    async fn set_rate_limit(&self, queue: &str, limit: Option<RateLimit>) -> BrokerResult<()> {
        maintenance::set_rate_limit(&self.inner, queue, limit).await
    }

    async fn rate_limits(&self, queues: &[String]) -> BrokerResult<Vec<Option<RateLimit>>> {
        read::rate_limits(&self.inner, queues).await
    }

    async fn wait_for_work(&self, queues: &[String], timeout: Duration) -> BrokerResult<()> {
        let inner = &self.inner;
        if !inner.options.poll_only {
            inner
                .wake
                .ensure_listener(&inner.config, inner.tls.clone(), &inner.target);
        }
        // The poll interval bounds the wait: a lost notification (or none,
        // in poll-only mode) costs at most one interval.
        inner
            .wake
            .wait(queues, timeout.min(inner.options.poll_interval))
            .await;
        Ok(())
    }

    fn describe(&self) -> String {
        self.inner.target.clone()
    }

    async fn erase_subject(&self, tag: &SubjectTag) -> BrokerResult<ErasureCounts> {
        maintenance::erase_subject(&self.inner, tag).await
    }

    async fn erase_tasks(&self, ids: &[TaskId]) -> BrokerResult<ErasureCounts> {
        if ids.is_empty() {
            return Ok(ErasureCounts::default());
        }
        maintenance::erase_tasks(&self.inner, ids).await
    }

    async fn swap_sealed(&self, swaps: &[SealedSwap]) -> BrokerResult<Vec<bool>> {
        if swaps.is_empty() {
            return Ok(Vec::new());
        }
        maintenance::swap_sealed(&self.inner, swaps).await
    }

    async fn key_checks(&self) -> BrokerResult<Option<Vec<KeyCheck>>> {
        read::key_checks(&self.inner).await.map(Some)
    }

    async fn record_key_checks(&self, checks: &[KeyCheck]) -> BrokerResult<bool> {
        if !checks.is_empty() {
            read::record_key_checks(&self.inner, checks).await?;
        }
        Ok(true)
    }

    fn subject_key_store(&self) -> Option<Arc<dyn sealq::subject_keys::SubjectKeyStore>> {
        Some(Arc::new(crate::PostgresSubjectKeyStore::from_broker(self)))
    }

    async fn check_version(&self) -> BrokerResult<()> {
        let found = self.schema_version().await?;
        if found == crate::SCHEMA_VERSION {
            return Ok(());
        }
        Err(BrokerError::new(
            BrokerErrorKind::Config,
            format!(
                "the sealq schema in {} is version {found}, this sealq needs version {}: run \
                 `sealq postgres install` with the sealq that matches (as the schema owner)",
                self.inner.target,
                crate::SCHEMA_VERSION
            ),
        ))
    }

    async fn register_worker(&self, worker: &LiveWorker, ttl: Duration) -> BrokerResult<()> {
        live_workers::register(&self.inner, worker, ttl).await
    }

    async fn list_workers(&self) -> BrokerResult<Vec<LiveWorker>> {
        live_workers::list(&self.inner).await
    }

    async fn deregister_worker(&self, run_id: &str) -> BrokerResult<()> {
        live_workers::deregister(&self.inner, run_id).await
    }
}
