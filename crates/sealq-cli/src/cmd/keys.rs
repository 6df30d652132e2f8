//! `sealq keys generate`: a new keyring on stdout.

use std::io::Write;

use sealq::Keyring;

use crate::error::{CliError, CliResult, context};

/// Print a fresh keyring TOML (with secrets) to stdout, after a comment
/// header on how to use it. Nothing is logged.
pub(crate) fn generate() -> CliResult {
    let keyring = Keyring::generate();
    let secret = keyring.to_toml_secret();
    let header = format!(
        "# sealq keyring generated {now} — SECRET: anyone holding it can read and forge tasks.\n\
         # Store it readable only by the services that need it, e.g.\n\
         #   (umask 077; sealq keys generate > keyring.toml)\n\
         # and use it with one of\n\
         #   sealq --keyring keyring.toml ...\n\
         #   SEALQ_KEYRING=/path/to/keyring.toml\n\
         #   SEALQ_KEYRING_TOML=\"$(cat keyring.toml)\"\n\
         # Losing it makes every task sealed with it unreadable; keep a backup.\n",
        now = jiff::Timestamp::now()
            .round(jiff::Unit::Second)
            .unwrap_or_else(|_| jiff::Timestamp::now()),
    );
    let mut out = std::io::stdout().lock();
    out.write_all(header.as_bytes())
        .and_then(|()| out.write_all(secret.as_bytes()))
        .and_then(|()| out.flush())
        .map_err(|e| CliError::runtime(context("cannot write the keyring to stdout", e)))
}
