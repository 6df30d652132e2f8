//! `sealq postgres …`: operations on a Postgres broker. Self-contained: it
//! connects with `sealq_postgres` directly (schema and roles only, no
//! broker).

use clap::{Args, Subcommand};

use crate::broker_url::redact;
use crate::cmd::Global;
use crate::error::{CliError, CliResult, msg};

/// `sealq postgres` subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum PostgresCommand {
    /// Create or upgrade the schema `sealq` (versioned, forward-only
    /// migrations) as the role of --broker, which owns the schema; then
    /// print (--print-roles) or apply (--apply-roles) the role setup:
    /// sealq_producer, sealq_worker, sealq_operator and sealq_admin, with
    /// EXECUTE on the functions each needs and no table privileges
    /// (docs/postgres-roles.md). `--print-roles` without --broker prints
    /// the SQL and connects to nothing.
    Install(InstallArgs),
}

/// `sealq postgres install` options.
#[derive(Debug, Args)]
pub(crate) struct InstallArgs {
    /// Print the role setup SQL (to review, or to run with psql).
    #[arg(long)]
    pub(crate) print_roles: bool,
    /// Apply the role setup (creates missing roles: needs CREATEROLE).
    #[arg(long)]
    pub(crate) apply_roles: bool,
}

/// Run a `sealq postgres` subcommand.
pub(crate) async fn run(global: &Global, command: PostgresCommand) -> CliResult {
    match command {
        PostgresCommand::Install(a) => install(global, a).await,
    }
}

async fn install(global: &Global, args: InstallArgs) -> CliResult {
    let url = match global.broker.as_deref() {
        Some(url) => url,
        None if args.print_roles && !args.apply_roles => {
            crate::stdout::out!("{}", sealq_postgres::roles::role_sql());
            return Ok(());
        }
        None => {
            return Err(CliError::usage(msg(
                "`sealq postgres install` needs --broker postgres://OWNER@HOST/DB (or \
                 SEALQ_BROKER), naming the role that owns (or will own) the schema sealq",
            )));
        }
    };
    if !sealq_postgres::is_postgres_url(url) {
        return Err(CliError::usage(msg(format!(
            "`sealq postgres install` needs a Postgres broker URL (postgres:// or \
             postgresql://), not `{}`",
            redact(url)
        ))));
    }
    let installed = sealq_postgres::roles::install(url)
        .await
        .map_err(install_error)?;
    if installed.from == installed.to {
        crate::stdout::outln!(
            "the sealq schema on {} is at version {}: nothing to migrate",
            redact(url),
            installed.to
        );
    } else {
        crate::stdout::outln!(
            "migrated the sealq schema on {} from version {} to {}",
            redact(url),
            installed.from,
            installed.to
        );
    }
    if args.apply_roles {
        sealq_postgres::roles::apply_roles(url)
            .await
            .map_err(install_error)?;
        crate::stdout::outln!(
            "applied the sealq roles (sealq_producer, sealq_worker, sealq_operator, \
             sealq_admin); grant login roles into them, e.g. GRANT sealq_worker TO billing_worker"
        );
    }
    if args.print_roles {
        crate::stdout::out!("{}", sealq_postgres::roles::role_sql());
    }
    Ok(())
}

/// A bad URL is a usage error (exit 2); anything else a runtime error.
fn install_error(e: sealq::BrokerError) -> CliError {
    if e.kind == sealq::BrokerErrorKind::Config && e.to_string().contains("broker URL `") {
        CliError::usage(e)
    } else {
        CliError::runtime(e)
    }
}
