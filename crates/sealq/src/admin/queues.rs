//! Pausing and resuming queues, and their depth caps and rate limits,
//! audited.

use crate::client::Client;
use crate::error::Result;
use crate::model::audit_event::AuditEvent;

impl Client {
    /// Stop workers from taking tasks of `queue` (audited).
    pub async fn pause_queue(&self, queue: &str, operator: &str) -> Result<()> {
        self.broker().pause(queue).await?;
        self.audit_now(AuditEvent::QueuePaused {
            queue: queue.to_owned(),
            operator: operator.to_owned(),
        })
        .await
    }

    /// Cap `queue` at `max_depth` waiting tasks, or remove its cap with
    /// `None` ([`crate::Broker::set_max_depth`]; audited as `queue_limited`).
    /// Enqueues into a full queue then fail with [`crate::Error::QueueFull`].
    pub async fn set_queue_max_depth(
        &self,
        queue: &str,
        max_depth: Option<u64>,
        operator: &str,
    ) -> Result<()> {
        crate::model::options::validate_queue_name(queue)?;
        self.broker().set_max_depth(queue, max_depth).await?;
        self.audit_now(AuditEvent::QueueLimited {
            queue: queue.to_owned(),
            max_depth,
            operator: operator.to_owned(),
        })
        .await
    }

    /// Limit how fast `queue`'s tasks are leased, across every worker, or
    /// remove its limit with `None` ([`crate::Broker::set_rate_limit`];
    /// audited as `queue_rate_limited`).
    pub async fn set_queue_rate_limit(
        &self,
        queue: &str,
        limit: Option<crate::store::broker::RateLimit>,
        operator: &str,
    ) -> Result<()> {
        crate::model::options::validate_queue_name(queue)?;
        self.broker().set_rate_limit(queue, limit).await?;
        self.audit_now(AuditEvent::QueueRateLimited {
            queue: queue.to_owned(),
            limit: limit.map(|l| l.limit),
            period_ms: limit.map(|l| l.period_ms),
            operator: operator.to_owned(),
        })
        .await
    }

    /// Undo [`Client::pause_queue`] (audited).
    pub async fn resume_queue(&self, queue: &str, operator: &str) -> Result<()> {
        self.broker().resume(queue).await?;
        self.audit_now(AuditEvent::QueueResumed {
            queue: queue.to_owned(),
            operator: operator.to_owned(),
        })
        .await
    }
}
