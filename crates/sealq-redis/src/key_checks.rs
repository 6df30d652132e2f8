//! Check values of the sealing keys in use (`Broker::key_checks`,
//! `Broker::record_key_checks`): one hash, `PREFIX:keychecks`, field = key
//! id, value = the check value in hex. Plain commands (`HGETALL`, and
//! `HSETNX` per key id, one pipeline), so every role that records them
//! needs just those two on that one key (`docs/redis-acl.md`).

use redis::Value;
use sealq::broker::BrokerResult;
use sealq::model::key_check::KeyCheck;

use crate::RedisBroker;

/// `PREFIX:keychecks`.
pub(crate) fn key_checks_key(prefix: &str) -> String {
    format!("{prefix}:keychecks")
}

impl RedisBroker {
    /// Every recorded check value, by key id. An entry whose value is not
    /// 32 hex digits (an edited hash) is left out and logged.
    pub(crate) async fn read_key_checks(&self) -> BrokerResult<Vec<KeyCheck>> {
        let what = "reading the keyring's check values";
        let mut c = redis::cmd("HGETALL");
        c.arg(key_checks_key(&self.inner.prefix));
        let v: Value = self
            .inner
            .conn
            .query(&c)
            .await
            .map_err(|e| self.err(what, e))?;
        let pairs: std::collections::BTreeMap<Vec<u8>, Vec<u8>> =
            match redis::FromRedisValue::from_redis_value(v) {
                Ok(p) => p,
                Err(e) => return Err(self.corrupt_reply(what, e)),
            };
        let mut out: Vec<KeyCheck> = Vec::with_capacity(pairs.len());
        for (id, value) in pairs {
            let id = String::from_utf8_lossy(&id).into_owned();
            match KeyCheck::from_hex(id.clone(), &String::from_utf8_lossy(&value)) {
                Some(c) => out.push(c),
                None => tracing::warn!(
                    key_id = %sealq_escape(&id),
                    "sealq: a recorded key check value does not decode (an edited hash); left out"
                ),
            }
        }
        out.sort();
        Ok(out)
    }

    /// Record `checks`, keeping the value already recorded for a key id.
    pub(crate) async fn write_key_checks(&self, checks: &[KeyCheck]) -> BrokerResult<()> {
        if checks.is_empty() {
            return Ok(());
        }
        let key = key_checks_key(&self.inner.prefix);
        let mut p = redis::pipe();
        for c in checks {
            p.cmd("HSETNX")
                .arg(&key)
                .arg(&c.key_id)
                .arg(c.value_hex())
                .ignore();
        }
        self.inner
            .conn
            .pipe::<()>(&p)
            .await
            .map_err(|e| self.err("recording the keyring's check values", e))
    }
}

/// A stored key id for a log line: control characters escaped.
fn sealq_escape(s: &str) -> String {
    s.chars().flat_map(char::escape_default).take(80).collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_key_sits_under_the_prefix_outside_the_queues() {
        assert_eq!(super::key_checks_key("sealq"), "sealq:keychecks");
    }
}
