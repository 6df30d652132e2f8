//! A queue's settings: paused, maximum depth (the cap) and rate limit
//! (`sealq_pause`, `sealq_limit`, `sealq_rate`, kept in the queue's `flags`
//! hash), and reading the rate limits back.

use redis::{Cmd, Value};
use sealq::broker::{BrokerResult, RateLimit};

use crate::codec::{array, bytes};
use crate::{RedisBroker, keys};

/// `[rl, rp]` from a queue's flags (`HMGET`): its rate limit, if both are
/// positive numbers.
pub(crate) fn rate_limit_of(pair: &[Value]) -> Option<RateLimit> {
    let num = |v: &Value| -> Option<u64> {
        bytes(v.clone())
            .ok()
            .and_then(|b| std::str::from_utf8(&b).ok()?.parse().ok())
    };
    match pair {
        [l, p] => match (num(l), num(p)) {
            (Some(limit), Some(period_ms)) if limit > 0 && period_ms > 0 => {
                Some(RateLimit { limit, period_ms })
            }
            _ => None,
        },
        _ => None,
    }
}

impl RedisBroker {
    /// [`sealq::Broker::rate_limits`]: one `HMGET` of the queue flags per
    /// queue (pipelined).
    pub(crate) async fn read_rate_limits(
        &self,
        queues: &[String],
    ) -> BrokerResult<Vec<Option<RateLimit>>> {
        let what = "reading rate limits";
        let cmds = queues
            .iter()
            .map(|q| {
                keys::validate_queue(q)?;
                let mut c = redis::cmd("HMGET");
                c.arg(format!("{}flags", self.queue_key_prefix(q)))
                    .arg("rl")
                    .arg("rp");
                Ok(c)
            })
            .collect::<BrokerResult<Vec<Cmd>>>()?;
        let replies = self.run_per_queue(what, cmds).await?;
        replies
            .into_iter()
            .map(|r| {
                Ok(rate_limit_of(
                    &array(r).map_err(|e| self.corrupt_reply(what, e))?,
                ))
            })
            .collect()
    }

    /// [`sealq::Broker::set_rate_limit`] (`None` removes it).
    pub(crate) async fn set_queue_rate_limit(
        &self,
        queue: &str,
        limit: Option<RateLimit>,
    ) -> BrokerResult<()> {
        let (n, p) = limit.map_or((String::new(), String::new()), |l| {
            (l.limit.to_string(), l.period_ms.to_string())
        });
        let register = limit.is_some().then_some(&b""[..]);
        self.queue_setting(
            "sealq_rate",
            queue,
            &[&n, &p],
            "setting a queue's rate limit",
            register,
        )
        .await
    }

    /// [`sealq::Broker::set_max_depth`] (`None` removes the cap).
    pub(crate) async fn set_queue_max_depth(
        &self,
        queue: &str,
        max_depth: Option<u64>,
    ) -> BrokerResult<()> {
        let cap = max_depth.map(|n| n.to_string()).unwrap_or_default();
        let register = max_depth.is_some().then_some(&b""[..]);
        self.queue_setting(
            "sealq_limit",
            queue,
            &[&cap],
            "setting a queue's maximum depth",
            register,
        )
        .await
    }

    /// [`sealq::Broker::pause`] and [`sealq::Broker::resume`].
    pub(crate) async fn set_paused(&self, queue: &str, paused: bool) -> BrokerResult<()> {
        let what = if paused {
            "pausing a queue"
        } else {
            "resuming a queue"
        };
        let flag = if paused { "1" } else { "0" };
        self.queue_setting("sealq_pause", queue, &[flag], what, Some(flag.as_bytes()))
            .await
    }

    /// Call the queue-setting function `function` (`sealq_pause`,
    /// `sealq_limit`, `sealq_rate`: KEYS the queue base and, on a single
    /// node, the global base; ARGV the queue then `args`). On a Cluster,
    /// where the function cannot reach the global registry, `register`
    /// (the registry's paused flag, or empty) registers the queue there.
    async fn queue_setting(
        &self,
        function: &str,
        queue: &str,
        args: &[&str],
        what: &str,
        register: Option<&[u8]>,
    ) -> BrokerResult<()> {
        keys::validate_queue(queue)?;
        let mut c = self.queue_call(function, queue, true);
        c.arg(queue);
        for a in args {
            c.arg(*a);
        }
        let _: Value = self
            .inner
            .conn
            .query(&c)
            .await
            .map_err(|e| self.err(what, e))?;
        if !self.single_node()
            && let Some(flag) = register
        {
            self.registry(&[b"queue", queue.as_bytes(), flag]).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(x: &str) -> Value {
        Value::BulkString(x.as_bytes().to_vec())
    }

    #[test]
    fn rate_limit_needs_two_positive_numbers() {
        assert_eq!(
            rate_limit_of(&[s("10"), s("1000")]),
            Some(RateLimit {
                limit: 10,
                period_ms: 1000
            })
        );
        assert_eq!(
            rate_limit_of(&[Value::Int(3), Value::Int(50)]),
            Some(RateLimit {
                limit: 3,
                period_ms: 50
            })
        );
        // Unset (nil), cleared (empty), zero, negative or junk: no limit.
        for pair in [
            [Value::Nil, Value::Nil],
            [s(""), s("")],
            [s("0"), s("1000")],
            [s("10"), s("0")],
            [s("-1"), s("1000")],
            [s("ten"), s("1000")],
            [Value::Array(vec![]), s("1000")],
        ] {
            assert_eq!(rate_limit_of(&pair), None, "{pair:?}");
        }
        assert_eq!(rate_limit_of(&[s("10")]), None);
        assert_eq!(rate_limit_of(&[s("10"), s("1000"), s("1")]), None);
    }
}
