//! Statistics: each queue's task counts and settings (`sealq_stats`, for
//! [`sealq::Broker::stats`]), and Redis' own command counters
//! (`INFO commandstats`), for measurements such as `sealq bench`: how many
//! commands, and how much of Redis' time, a task costs.

use std::collections::BTreeMap;

use redis::Value;
use sealq::broker::{BrokerResult, QueueStats};

use crate::RedisBroker;
use crate::codec::{array, bytes, int};
use crate::queue_settings::rate_limit_of;

/// The `sealq_stats` reply for `queue`: `[paused, counts, rate]`, `counts`
/// as name/number pairs (unknown names ignored, negative numbers 0),
/// `rate` the queue's `[rl, rp]` flags. A count that is not a whole number
/// (an edited hash; the next worker call touching it recounts it) reads as
/// 0 and its name is returned, to be reported: one damaged count must not
/// hide every queue's statistics.
fn parse_stats_reply(queue: String, reply: Value) -> Result<(QueueStats, Vec<String>), String> {
    let mut parts = array(reply)?.into_iter();
    let paused = parts.next().map(|v| int(&v)).transpose()?.unwrap_or(0) == 1;
    let mut s = QueueStats {
        queue,
        paused,
        ..Default::default()
    };
    let counts = array(parts.next().unwrap_or(Value::Nil))?;
    let mut it = counts.into_iter();
    let mut damaged = Vec::new();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        let k = bytes(k)?;
        let n = match int(&v) {
            Ok(n) => u64::try_from(n.max(0)).unwrap_or(0),
            Err(_) => {
                damaged.push(String::from_utf8_lossy(&k).into_owned());
                continue;
            }
        };
        match k.as_slice() {
            b"scheduled" => s.scheduled = n,
            b"pending" => s.pending = n,
            b"active" => s.active = n,
            b"retry" => s.retry = n,
            b"completed" => s.completed = n,
            b"archived" => s.archived = n,
            b"maxdepth" => s.max_depth = Some(n),
            _ => {}
        }
    }
    if let Some(rate) = parts.next() {
        s.rate_limit = rate_limit_of(&array(rate)?);
    }
    Ok((s, damaged))
}

/// Whether [`sealq::Broker::stats`] reports a queue: it holds tasks or has
/// a setting.
fn worth_reporting(s: &QueueStats) -> bool {
    let total = s.scheduled + s.pending + s.active + s.retry + s.completed + s.archived;
    total > 0 || s.paused || s.max_depth.is_some() || s.rate_limit.is_some()
}

/// Calls and microseconds per command, as `INFO commandstats` counts them
/// (commands run inside functions are counted too, and their time is also
/// part of the `fcall` time).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommandStats {
    /// Command name (lowercase; subcommands as `config|get`) → (calls, µs).
    pub commands: BTreeMap<String, (u64, u64)>,
}

/// Commands sealq's client sends itself; every other counted command of a
/// sealq workload runs inside the functions library. `set` counts as the
/// functions': on one server the client writes task bytes with `MSETNX`
/// (batches) or passes them to `sealq_enqueue_inline`, which writes them
/// with `SET NX`; functions also drop markers and hold unique keys with
/// `SET`. Only the rare retry of a task whose bytes key already existed,
/// and Cluster enqueues (where `INFO` covers one node and the bench does
/// not report), send `SET` from the client. The time of `exec` is left
/// out of [`CommandStats::client_usec`]: the commands it ran are counted
/// on their own.
const CLIENT_COMMANDS: &[&str] = &[
    "fcall",
    "fcall_ro",
    "msetnx",
    "multi",
    "exec",
    "mget",
    "blpop",
    "xadd",
    "xrange",
    "xrevrange",
    "ping",
    "hello",
    "auth",
    "select",
    "client|setinfo",
    "client|setname",
];

/// Commands that measure or configure rather than do queue work.
const IGNORED: &[&str] = &["info", "config|resetstat", "config|get", "function|load"];

impl CommandStats {
    /// Parse the text of `INFO commandstats`.
    pub fn parse(info: &str) -> Self {
        let mut commands = BTreeMap::new();
        for line in info.lines() {
            let Some(rest) = line.trim().strip_prefix("cmdstat_") else {
                continue;
            };
            let Some((name, fields)) = rest.split_once(':') else {
                continue;
            };
            let field = |key: &str| -> u64 {
                fields
                    .split(',')
                    .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0)
            };
            commands.insert(name.to_owned(), (field("calls"), field("usec")));
        }
        CommandStats { commands }
    }

    /// The counts since `earlier` (a snapshot of the same server).
    pub fn since(&self, earlier: &CommandStats) -> CommandStats {
        let commands = self
            .commands
            .iter()
            .filter(|(name, _)| !IGNORED.contains(&name.as_str()))
            .filter_map(|(name, &(calls, usec))| {
                let (c0, u0) = earlier.commands.get(name).copied().unwrap_or((0, 0));
                let d = (calls.saturating_sub(c0), usec.saturating_sub(u0));
                (d.0 > 0).then(|| (name.clone(), d))
            })
            .collect();
        CommandStats { commands }
    }

    /// Commands the client sent.
    pub fn client_calls(&self) -> u64 {
        self.sum(|name| CLIENT_COMMANDS.contains(&name))
    }

    /// Function calls (`FCALL`, `FCALL_RO`).
    pub fn function_calls(&self) -> u64 {
        self.sum(|name| name == "fcall" || name == "fcall_ro")
    }

    /// Commands run inside functions.
    pub fn calls_in_functions(&self) -> u64 {
        self.sum(|name| !CLIENT_COMMANDS.contains(&name))
    }

    /// Redis' own time for the client's commands, µs (a function's time
    /// includes the commands it ran).
    pub fn client_usec(&self) -> u64 {
        self.total(
            |name| name != "exec" && CLIENT_COMMANDS.contains(&name),
            |(_, usec)| usec,
        )
    }

    /// Calls of the commands `pick` selects.
    fn sum(&self, pick: impl Fn(&str) -> bool) -> u64 {
        self.total(pick, |(calls, _)| calls)
    }

    fn total(&self, pick: impl Fn(&str) -> bool, field: impl Fn((u64, u64)) -> u64) -> u64 {
        self.commands
            .iter()
            .filter(|(name, _)| pick(name))
            .map(|(_, &counts)| field(counts))
            .sum()
    }
}

impl RedisBroker {
    /// [`sealq::Broker::stats`]: one `sealq_stats` per known queue; queues
    /// with no task and no setting are left out.
    pub(crate) async fn queue_stats(&self) -> BrokerResult<Vec<QueueStats>> {
        let what = "reading queue statistics";
        let (queues, _) = self.queues().await?;
        let cmds = queues
            .iter()
            .map(|q| self.queue_call("sealq_stats", q, false))
            .collect();
        let replies = self.run_per_queue(what, cmds).await?;
        let mut out = Vec::new();
        for (q, reply) in queues.into_iter().zip(replies) {
            let (s, damaged) =
                parse_stats_reply(q, reply).map_err(|e| self.corrupt_reply(what, e))?;
            if !damaged.is_empty() {
                tracing::warn!(
                    queue = %s.queue,
                    counts = %damaged.join(", "),
                    "sealq: counts of a queue are not whole numbers (an edited hash); \
                     reported as 0 until a worker's next call recounts them"
                );
            }
            if worth_reporting(&s) {
                out.push(s);
            }
        }
        Ok(out)
    }

    /// A snapshot of the server's `INFO commandstats`. `None` on a Cluster
    /// (each master counts its own). Needs the `INFO` permission (the
    /// documented admin role has it; producers and workers do not).
    pub async fn command_stats(&self) -> BrokerResult<Option<CommandStats>> {
        if !self.single_node() {
            return Ok(None);
        }
        let info: String = self
            .inner
            .conn
            .query(redis::cmd("INFO").arg("commandstats"))
            .await
            .map_err(|e| self.err("reading INFO commandstats", e))?;
        Ok(Some(CommandStats::parse(&info)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::tests::s;
    use sealq::broker::RateLimit;

    fn counts(pairs: &[(&str, i64)]) -> Value {
        Value::Array(
            pairs
                .iter()
                .flat_map(|(k, n)| [s(k), Value::Int(*n)])
                .collect(),
        )
    }

    #[test]
    fn stats_reply_gives_counts_and_settings() {
        let v = Value::Array(vec![
            Value::Int(1),
            counts(&[
                ("scheduled", 1),
                ("pending", 2),
                ("active", 3),
                ("retry", 4),
                ("completed", 5),
                ("archived", 6),
                ("maxdepth", 100),
                ("trimmed", 9),
            ]),
            Value::Array(vec![s("10"), s("1000")]),
        ]);
        let (st, damaged) = parse_stats_reply("q".into(), v).unwrap();
        assert!(damaged.is_empty());
        assert_eq!(
            st,
            QueueStats {
                queue: "q".into(),
                paused: true,
                scheduled: 1,
                pending: 2,
                active: 3,
                retry: 4,
                completed: 5,
                archived: 6,
                max_depth: Some(100),
                rate_limit: Some(RateLimit {
                    limit: 10,
                    period_ms: 1000
                }),
            }
        );
        assert!(worth_reporting(&st));
    }

    #[test]
    fn empty_queue_without_settings_is_not_reported() {
        let v = Value::Array(vec![Value::Int(0), counts(&[("pending", -2)])]);
        let (st, _) = parse_stats_reply("q".into(), v).unwrap();
        assert_eq!((st.paused, st.pending, st.max_depth), (false, 0, None));
        assert!(!worth_reporting(&st));
        let (paused, _) = parse_stats_reply("q".into(), Value::Array(vec![Value::Int(1)])).unwrap();
        assert!(worth_reporting(&paused));
        let (capped, _) = parse_stats_reply(
            "q".into(),
            Value::Array(vec![Value::Int(0), counts(&[("maxdepth", 0)])]),
        )
        .unwrap();
        assert!(worth_reporting(&capped));
    }

    #[test]
    fn malformed_stats_reply_is_an_error() {
        let e = parse_stats_reply("q".into(), Value::Array(vec![s("yes")]))
            .map(|_| ())
            .unwrap_err();
        assert_eq!(e, "expected an integer");
        let v = Value::Array(vec![Value::Int(0), counts(&[]), s("10/1000")]);
        let e = parse_stats_reply("q".into(), v).map(|_| ()).unwrap_err();
        assert!(e.contains("expected an array"), "{e}");
    }

    #[test]
    fn finding_4_a_count_that_is_not_a_number_does_not_stop_stats() {
        let v = Value::Array(vec![
            Value::Int(0),
            Value::Array(vec![s("pending"), s("x"), s("active"), s("2")]),
        ]);
        let (st, damaged) = parse_stats_reply("q".into(), v).unwrap();
        assert_eq!((st.pending, st.active), (0, 2));
        assert_eq!(damaged, ["pending"]);
    }

    #[test]
    fn parses_and_subtracts_commandstats() {
        let before = CommandStats::parse(
            "# Commandstats\r\ncmdstat_fcall:calls=10,usec=500,usec_per_call=50.00,rejected_calls=0,failed_calls=0\r\n\
             cmdstat_hset:calls=4,usec=8,usec_per_call=2.00,rejected_calls=0,failed_calls=0\r\n",
        );
        let after = CommandStats::parse(
            "# Commandstats\r\ncmdstat_fcall:calls=12,usec=700,usec_per_call=58.33,rejected_calls=0,failed_calls=0\r\n\
             cmdstat_hset:calls=10,usec=20,usec_per_call=2.00,rejected_calls=0,failed_calls=0\r\n\
             cmdstat_set:calls=3,usec=9,usec_per_call=3.00,rejected_calls=0,failed_calls=0\r\n\
             cmdstat_info:calls=2,usec=90,usec_per_call=45.00,rejected_calls=0,failed_calls=0\r\n",
        );
        let d = after.since(&before);
        assert_eq!(d.commands.get("fcall"), Some(&(2, 200)));
        assert_eq!(d.commands.get("hset"), Some(&(6, 12)));
        assert_eq!(d.commands.get("set"), Some(&(3, 9)));
        assert!(!d.commands.contains_key("info"), "measuring is not work");
        // `set` counts as the functions' (sealq_enqueue_inline writes bytes).
        assert_eq!(d.client_calls(), 2);
        assert_eq!(d.function_calls(), 2);
        assert_eq!(d.calls_in_functions(), 9);
        assert_eq!(d.client_usec(), 200);
    }
}
