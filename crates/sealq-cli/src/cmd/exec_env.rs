//! The environment of a `sealq worker --exec` command.
//!
//! The worker's own environment holds what opens every task and reaches the
//! broker: `SEALQ_KEYRING_TOML` (every key), `SEALQ_KEYRING`, `SEALQ_BROKER`
//! with its password. A handler command needs none of that: it gets the one
//! opened payload on stdin. So the command starts from an empty environment
//! and gets only:
//!
//! - the task's identity: `SEALQ_TASK_ID`, `SEALQ_TASK_TYPE`, `SEALQ_QUEUE`,
//!   `SEALQ_ATTEMPT` (set per task by the worker);
//! - [`INHERITED`], copied from the worker when set: `PATH` (to find
//!   programs), `HOME` (tools read their configuration there), `LANG` and
//!   `LC_ALL` (text encoding of what the command prints), `TZ` (local
//!   times), `TMPDIR` (where to put temporary files). None of them is a
//!   secret by convention;
//! - the variables the operator names with `--exec-env NAME`, copied when
//!   set. Names starting with `SEALQ_KEYRING` or `SEALQ_BROKER` are refused
//!   (exit 2): passing the keys on would undo the point of this list.

use std::ffi::OsString;

use crate::error::{CliError, CliResult, msg};

/// Variables every `--exec` command inherits from the worker, when set.
pub(crate) const INHERITED: &[&str] = &["PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR"];

/// Prefixes `--exec-env` refuses: the keyring and the broker's URL.
const REFUSED_PREFIXES: &[&str] = &["SEALQ_KEYRING", "SEALQ_BROKER"];

/// What an `--exec` command inherits from the worker, resolved once at start.
#[derive(Debug, Clone, Default)]
pub(crate) struct ExecEnv {
    vars: Vec<(String, OsString)>,
}

impl ExecEnv {
    /// [`INHERITED`] plus `extra` (the `--exec-env` names), read through `var`.
    pub(crate) fn resolve(
        extra: &[String],
        var: impl Fn(&str) -> Option<OsString>,
    ) -> CliResult<Self> {
        for name in extra {
            check_name(name)?;
        }
        let mut vars: Vec<(String, OsString)> = Vec::new();
        for name in INHERITED
            .iter()
            .copied()
            .chain(extra.iter().map(String::as_str))
        {
            if vars.iter().any(|(n, _)| n == name) {
                continue;
            }
            if let Some(value) = var(name) {
                vars.push((name.to_owned(), value));
            }
        }
        Ok(ExecEnv { vars })
    }

    /// The inherited variables, name and value.
    pub(crate) fn vars(&self) -> impl Iterator<Item = (&str, &OsString)> {
        self.vars.iter().map(|(n, v)| (n.as_str(), v))
    }
}

/// A usable `--exec-env` name that is not a secret of the worker's.
fn check_name(name: &str) -> CliResult {
    if name.is_empty() || name.contains('=') || name.contains('\0') {
        return Err(CliError::usage(msg(format!(
            "--exec-env `{name}`: not a variable name"
        ))));
    }
    if let Some(prefix) = REFUSED_PREFIXES.iter().find(|p| name.starts_with(**p)) {
        return Err(CliError::usage(msg(format!(
            "--exec-env {name}: variables starting with {prefix} hold the worker's keys or \
             broker credentials and are never passed to the command; give the command what it \
             needs under another name"
        ))));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<OsString> {
        match name {
            "PATH" => Some("/usr/bin".into()),
            "SEALQ_KEYRING_TOML" => Some("secret".into()),
            "APP_MODE" => Some("prod".into()),
            _ => None,
        }
    }

    #[test]
    fn only_the_allow_list_and_named_variables() {
        let e = ExecEnv::resolve(&["APP_MODE".into(), "UNSET".into()], env).unwrap();
        let names: Vec<&str> = e.vars().map(|(n, _)| n).collect();
        assert_eq!(names, ["PATH", "APP_MODE"]);
        let e = ExecEnv::resolve(&["PATH".into()], env).unwrap();
        assert_eq!(e.vars().count(), 1, "no duplicates");
    }

    #[test]
    fn keyring_and_broker_names_are_refused() {
        for name in [
            "SEALQ_KEYRING",
            "SEALQ_KEYRING_TOML",
            "SEALQ_BROKER",
            "SEALQ_BROKER_URL",
            "",
            "A=B",
        ] {
            assert!(ExecEnv::resolve(&[name.into()], env).is_err(), "{name}");
        }
    }
}
