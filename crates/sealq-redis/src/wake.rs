//! Wake-ups instead of polling: enqueue, retry-due, requeue, forward and
//! resume push a token onto `PREFIX:{queue}:wake` (capped at one element);
//! an idle worker blocks on it with `BLPOP` on a connection of its own,
//! taken from a small pool.

use std::time::Duration;

use redis::Value;
use sealq::broker::BrokerResult;

use crate::conn::Blocking;
use crate::{RedisBroker, keys};

impl RedisBroker {
    /// [`sealq::Broker::wait_for_work`]: `BLPOP` on the queues' wake lists
    /// (on a Cluster, the first queue's only) for at most `timeout`.
    pub(crate) async fn wait_for_wake_up(
        &self,
        queues: &[String],
        timeout: Duration,
    ) -> BrokerResult<()> {
        if queues.is_empty() || timeout < Duration::from_millis(1) {
            tokio::time::sleep(timeout).await;
            return Ok(());
        }
        for q in queues {
            keys::validate_queue(q)?;
        }
        let mut conn = self.take_blocking().await?;
        let mut c = redis::cmd("BLPOP");
        if self.single_node() {
            for q in queues {
                c.arg(format!("{}wake", self.queue_key_prefix(q)));
            }
        } else {
            // One slot per call on a Cluster: wait on the first (highest-priority) queue.
            c.arg(format!("{}wake", self.queue_key_prefix(&queues[0])));
        }
        c.arg(format!("{:.3}", timeout.as_secs_f64()));
        let guard = timeout + Duration::from_secs(5);
        match tokio::time::timeout(guard, conn.query::<Value>(&c)).await {
            Ok(Ok(_)) => {
                self.inner
                    .blocking
                    .lock()
                    .expect("blocking pool")
                    .push(conn);
                Ok(())
            }
            Ok(Err(e)) => Err(self.err("waiting for work", e)),
            Err(_) => Ok(()), // connection dropped silently: discard it
        }
    }

    /// An idle blocking connection from the pool, or a new one.
    async fn take_blocking(&self) -> BrokerResult<Blocking> {
        if let Some(c) = self.inner.blocking.lock().expect("blocking pool").pop() {
            return Ok(c);
        }
        self.inner
            .conn
            .blocking()
            .await
            .map_err(|e| self.err("opening a connection for wake-ups", e))
    }
}
