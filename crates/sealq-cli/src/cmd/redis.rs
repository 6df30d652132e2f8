//! `sealq redis …`: operations on a Redis broker.

use clap::Subcommand;

use crate::broker_url::{self, BrokerUrl, redact};
use crate::cmd::Global;
use crate::error::{CliError, CliResult, msg};

/// `sealq redis` subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum RedisCommand {
    /// Load (or upgrade) sealq's Redis Functions library with FUNCTION LOAD
    /// REPLACE (on every master of a cluster). Run as an admin user; workers
    /// and producers refuse to start until the library matches their version.
    Install,
}

/// Run a `sealq redis` subcommand.
pub(crate) async fn run(global: &Global, command: RedisCommand) -> CliResult {
    match command {
        RedisCommand::Install => install(global).await,
    }
}

async fn install(global: &Global) -> CliResult {
    let Some(url) = global.broker.as_deref() else {
        return Err(CliError::usage(msg(
            "`sealq redis install` needs --broker redis://admin:PASSWORD@HOST:PORT (or SEALQ_BROKER)",
        )));
    };
    if BrokerUrl::parse(url)? != BrokerUrl::Redis {
        return Err(CliError::usage(msg(format!(
            "`sealq redis install` needs a Redis broker URL, not `{}`",
            redact(url)
        ))));
    }
    let broker = broker_url::open_redis(url, false)?;
    let version = broker.install().await.map_err(CliError::runtime)?;
    crate::stdout::outln!(
        "installed the sealq functions library (version {version}) on {}",
        redact(url)
    );
    Ok(())
}
