//! Broker URLs, for the commands: `sealq_connect` opens them; this module
//! gives its errors the CLI's exit codes (a wrong URL or refused
//! configuration exits 2).

use std::sync::Arc;

use sealq::Broker;
use sealq_connect::{ConnectError, ConnectOptions, Connection};

use crate::error::CliError;
use crate::error::CliResult;

pub(crate) use sealq_connect::Scheme as BrokerUrl;
pub(crate) use sealq_connect::redact;

/// An opened broker: its connection (stores, audit places) and the broker.
#[derive(Debug, Clone)]
pub(crate) struct Opened {
    /// The broker.
    pub(crate) broker: Arc<dyn Broker>,
    /// The connection it came from.
    pub(crate) conn: Connection,
}

impl Opened {
    /// Where this broker's audit log lives.
    pub(crate) fn audit_home(&self) -> &Connection {
        &self.conn
    }

    /// The Redis broker, when the URL named Redis.
    pub(crate) fn redis(&self) -> Option<&sealq_redis::RedisBroker> {
        self.conn.redis()
    }
}

/// A connection error with the CLI's exit code.
pub(crate) fn connect_error(e: ConnectError) -> CliError {
    if e.is_usage() {
        CliError::usage(e)
    } else {
        CliError::runtime(e)
    }
}

/// Run a future to completion from synchronous command code (commands open
/// brokers synchronously from inside the multi-threaded runtime).
pub(crate) fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(f))
}

/// Open the broker a URL names.
pub(crate) fn open(url: &str) -> CliResult<Opened> {
    let conn =
        block_on(sealq_connect::connect(url, &ConnectOptions::default())).map_err(connect_error)?;
    Ok(Opened {
        broker: conn.broker(),
        conn,
    })
}

/// Open the broker a URL names for a read-only command: a SQLite file that
/// does not exist is refused (exit 2) with a message naming the path and how
/// to point at a broker, and nothing is created.
pub(crate) fn open_existing(url: &str) -> CliResult<Opened> {
    let options = ConnectOptions {
        existing_only: true,
        ..ConnectOptions::default()
    };
    let conn = block_on(sealq_connect::connect(url, &options)).map_err(|e| match e {
        ConnectError::Missing { path } => CliError::usage(crate::error::msg(format!(
            "no broker database at {}: this command only reads, so it creates none; \
             pass --broker URL or set SEALQ_BROKER (e.g. sqlite:///path/to/sealq.db or \
             redis://host:6379), or run it in the directory that holds the store",
            path.display()
        ))),
        e => connect_error(e),
    })?;
    Ok(Opened {
        broker: conn.broker(),
        conn,
    })
}

/// Connect to the Redis broker a URL names; with `check`, refuse to run
/// unless the loaded functions library is this build's version.
pub(crate) fn open_redis(url: &str, check: bool) -> CliResult<sealq_redis::RedisBroker> {
    let options = ConnectOptions {
        check_redis_library: check,
        ..ConnectOptions::default()
    };
    block_on(sealq_connect::connect_redis(url, &options)).map_err(connect_error)
}

/// Parse a URL into the backend it names (exit 2 when it names none).
pub(crate) fn parse(url: &str) -> CliResult<BrokerUrl> {
    BrokerUrl::parse(url).map_err(connect_error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wrong_url_exits_2_and_hides_the_password() {
        let e = parse("mongodb://user:secret@host:27017").unwrap_err();
        let text = e.render();
        assert!(text.contains("sqlite://"), "{text}");
        assert!(!text.contains("secret"), "{text}");
        assert_eq!(e.exit_code(), std::process::ExitCode::from(2));
    }

    #[test]
    fn redacts_credentials() {
        assert_eq!(redact("redis://u:p@h:1"), "redis://u:***@h:1");
        assert_eq!(redact("sqlite://./a.db"), "sqlite://./a.db");
    }
}
