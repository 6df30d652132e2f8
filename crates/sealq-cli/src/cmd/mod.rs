//! One module per command, and what they share: global options, keyring
//! loading, broker opening.

mod audit;
mod audit_anchor;
mod bench;
mod bulk;
mod cron;
mod demo;
mod enqueue;
mod erase;
mod exec;
mod exec_env;
mod finalise;
mod keys;
mod keys_remove;
mod operator;
mod payloads;
pub(crate) mod postgres;
mod queues;
pub(crate) mod redis;
mod tasks;
mod worker;
mod workers;

use std::path::PathBuf;

use clap::ArgMatches;
use clap::parser::ValueSource;
use sealq::Keyring;

use crate::args::{
    AuditCommand, Command, DEFAULT_BROKER, KeysCommand, PayloadsCommand, TasksCommand,
};
use crate::broker_url::{self, Opened};
use crate::error::CliResult;

/// Options every command sees.
#[derive(Debug, Clone)]
pub(crate) struct Global {
    /// `--broker` / `SEALQ_BROKER`.
    pub(crate) broker: Option<String>,
    /// Whether `--broker` was typed on the command line (not taken from the
    /// environment): `demo` and `bench` only leave their throw-away store then.
    pub(crate) broker_on_command_line: bool,
    /// `--keyring` / `SEALQ_KEYRING`.
    pub(crate) keyring: Option<PathBuf>,
}

impl Global {
    /// The broker URL, or the default.
    fn broker_url(&self) -> &str {
        self.broker.as_deref().unwrap_or(DEFAULT_BROKER)
    }

    /// Open the configured broker.
    pub(crate) fn open_broker(&self) -> CliResult<Opened> {
        broker_url::open(self.broker_url())
    }

    /// Open the configured broker for a read-only command: a SQLite file
    /// that does not exist is refused (exit 2) and none is created.
    pub(crate) fn open_existing_broker(&self) -> CliResult<Opened> {
        broker_url::open_existing(self.broker_url())
    }

    /// Whether a keyring is configured at all (`--keyring`, `SEALQ_KEYRING`
    /// or `SEALQ_KEYRING_TOML`), loadable or not.
    pub(crate) fn keyring_configured(&self) -> bool {
        self.keyring
            .as_ref()
            .is_some_and(|p| !p.as_os_str().is_empty())
            || [
                sealq::keyring::ENV_KEYRING_PATH,
                sealq::keyring::ENV_KEYRING_TOML,
            ]
            .iter()
            .any(|v| std::env::var_os(v).is_some_and(|x| !x.is_empty()))
    }

    /// A full keyring, for a command that seals or opens (`to` says what it
    /// does): an operator keyring is refused with a message saying so
    /// (exit 2).
    pub(crate) fn full_keyring(&self, to: &str) -> CliResult<Keyring> {
        let keyring = self.keyring()?;
        keyring.require_sealing_keys(to)?;
        Ok(keyring)
    }

    /// The keyring, full or operator: `--keyring`/`SEALQ_KEYRING`, else
    /// `SEALQ_KEYRING_TOML`; neither is [`sealq::Error::NoKeyring`] (exit 2).
    /// Commands that seal or open use [`Global::full_keyring`].
    pub(crate) fn keyring(&self) -> CliResult<Keyring> {
        match &self.keyring {
            Some(path) if !path.as_os_str().is_empty() => Ok(Keyring::from_file(path)?),
            _ => Ok(Keyring::from_env()?),
        }
    }
}

/// Run one command.
pub(crate) async fn run(global: Global, command: Command) -> CliResult {
    match command {
        Command::Demo(a) => demo::run(&global, a).await,
        Command::Keys(KeysCommand::Generate(a)) => keys::generate(&global, a),
        Command::Keys(KeysCommand::Rotate(a)) => keys::rotate(&global, a).await,
        Command::Keys(KeysCommand::Reseal(a)) => keys::reseal(&global, a).await,
        Command::Keys(KeysCommand::Remove(a)) => keys_remove::remove(&global, a).await,
        Command::Enqueue(a) => enqueue::run(&global, a).await,
        Command::Worker(a) => worker::run(&global, a).await,
        Command::Workers(a) => workers::list(&global, a).await,
        Command::Tasks(TasksCommand::List(a)) => tasks::list(&global, a).await,
        Command::Tasks(TasksCommand::Stats(a)) => tasks::stats(&global, a).await,
        Command::Tasks(TasksCommand::Reveal(a)) => operator::reveal(&global, a).await,
        Command::Tasks(TasksCommand::Delete(a)) => operator::delete(&global, a).await,
        Command::Tasks(TasksCommand::Rerun(a)) => operator::rerun(&global, a).await,
        Command::Queues(c) => operator::queues(&global, c).await,
        Command::Bench(a) => bench::run(&global, a).await,
        Command::Payloads(PayloadsCommand::Report(a)) => payloads::report(&global, a).await,
        Command::Audit(AuditCommand::Verify(a)) => audit::verify(&global, a).await,
        Command::Audit(AuditCommand::Show(a)) => audit::show(&global, a).await,
        Command::Audit(AuditCommand::Anchor(a)) => audit_anchor::anchor(&global, a).await,
        Command::Audit(AuditCommand::PublicKey) => audit::public_key(&global),
        Command::Redis(c) => redis::run(&global, c).await,
        Command::Postgres(c) => postgres::run(&global, c).await,
        Command::Erase(a) => erase::run(&global, a).await,
        Command::Cron(crate::args::CronCommand::Run(a)) => cron::run(&global, a).await,
        Command::Cron(crate::args::CronCommand::Next(a)) => cron::next(a),
    }
}

/// Whether argument `id` was given on the command line, at the top level or
/// after any subcommand (global arguments may appear in either place).
pub(crate) fn given_on_command_line(matches: &ArgMatches, id: &str) -> bool {
    let mut m = Some(matches);
    while let Some(cur) = m {
        if matches!(cur.try_contains_id(id), Ok(true))
            && cur.value_source(id) == Some(ValueSource::CommandLine)
        {
            return true;
        }
        m = cur.subcommand().map(|(_, sub)| sub);
    }
    false
}
