//! Redis' own command counters (`INFO commandstats`), for measurements such
//! as `sealq bench`: how many commands, and how much of Redis' time, a task
//! costs.

use std::collections::BTreeMap;

use sealq::broker::BrokerResult;

use crate::RedisBroker;

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
    /// A snapshot of the server's `INFO commandstats`. `None` on a Cluster
    /// (each master counts its own). Needs the `INFO` permission (the
    /// documented admin role has it; producers and workers do not).
    pub async fn command_stats(&self) -> BrokerResult<Option<CommandStats>> {
        if !self.single() {
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
