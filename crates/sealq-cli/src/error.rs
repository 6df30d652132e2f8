//! The CLI's error: a cause chain plus the documented exit code.

use std::error::Error as StdError;
use std::fmt;
use std::process::ExitCode;

/// Boxed error with its cause chain.
pub(crate) type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// Which documented exit code an error maps to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Exit 1: the command was well-formed but failed while running.
    Runtime,
    /// Exit 2: bad flags, bad input or missing configuration.
    Usage,
    /// Exit 3: `audit verify` found only writers whose records are MACed
    /// with an unknown audit key; the rest of the log verified.
    UnknownKey,
}

/// An error that ends the command.
#[derive(Debug)]
pub(crate) struct CliError {
    kind: Kind,
    error: BoxError,
}

/// Result of a command.
pub(crate) type CliResult<T = ()> = Result<T, CliError>;

impl CliError {
    /// A runtime failure (exit 1).
    pub(crate) fn runtime(error: impl Into<BoxError>) -> Self {
        CliError {
            kind: Kind::Runtime,
            error: error.into(),
        }
    }

    /// A usage or configuration error (exit 2).
    pub(crate) fn usage(error: impl Into<BoxError>) -> Self {
        CliError {
            kind: Kind::Usage,
            error: error.into(),
        }
    }

    /// `audit verify`'s partial failure (exit 3): see [`Kind::UnknownKey`].
    pub(crate) fn unknown_key(error: impl Into<BoxError>) -> Self {
        CliError {
            kind: Kind::UnknownKey,
            error: error.into(),
        }
    }

    /// The process exit code.
    pub(crate) fn exit_code(&self) -> ExitCode {
        match self.kind {
            Kind::Runtime => ExitCode::from(1),
            Kind::Usage => ExitCode::from(2),
            Kind::UnknownKey => ExitCode::from(3),
        }
    }

    /// `error: <message>` and one `  caused by: <source>` line per cause.
    /// A cause whose text the previous line already contains is skipped
    /// (wrappers such as `broker error: {0}` repeat their source). Messages
    /// may quote what the broker or a file holds, so each goes through
    /// [`crate::output::safe`].
    pub(crate) fn render(&self) -> String {
        let mut last = self.error.to_string();
        let mut out = format!("error: {}", crate::output::safe(&last));
        let mut source = self.error.source();
        while let Some(s) = source {
            let text = s.to_string();
            if !last.contains(&text) {
                out.push_str("\n  caused by: ");
                out.push_str(&crate::output::safe(&text));
            }
            last = text;
            source = s.source();
        }
        out
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.error, f)
    }
}

impl From<sealq::Error> for CliError {
    /// Configuration and argument errors exit 2, everything else 1.
    fn from(e: sealq::Error) -> Self {
        let usage = match &e {
            sealq::Error::NoKeyring
            | sealq::Error::Keyring(_)
            | sealq::Error::Config(_)
            | sealq::Error::InvalidArgument { .. } => true,
            sealq::Error::Broker(b) => b.kind == sealq::BrokerErrorKind::Config,
            _ => false,
        };
        CliError {
            kind: if usage { Kind::Usage } else { Kind::Runtime },
            error: Box::new(e),
        }
    }
}

impl From<sealq::BrokerError> for CliError {
    fn from(e: sealq::BrokerError) -> Self {
        sealq::Error::Broker(e).into()
    }
}

/// A plain message as an error (for `CliError::usage(msg(..))`).
pub(crate) fn msg(text: impl Into<String>) -> BoxError {
    text.into().into()
}

/// Wrap `source` under a context message, keeping it in the cause chain.
pub(crate) fn context(message: impl Into<String>, source: impl Into<BoxError>) -> BoxError {
    Box::new(Context {
        message: message.into(),
        source: source.into(),
    })
}

#[derive(Debug)]
struct Context {
    message: String,
    source: BoxError,
}

impl fmt::Display for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl StdError for Context {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        Some(&*self.source)
    }
}

impl From<sealq_connect::ConnectError> for CliError {
    /// A wrong URL or refused configuration exits 2; anything else 1.
    fn from(e: sealq_connect::ConnectError) -> Self {
        crate::broker_url::connect_error(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_chain_without_repeats() {
        let io = std::io::Error::other("disk full");
        let e = CliError::runtime(context("cannot write summary", io));
        assert_eq!(
            e.render(),
            "error: cannot write summary\n  caused by: disk full"
        );
        let b = sealq::BrokerError::new(sealq::BrokerErrorKind::Unavailable, "locked");
        let e: CliError = sealq::Error::Broker(b).into();
        assert_eq!(
            e.render(),
            "error: broker error: broker unavailable: locked"
        );
        assert_eq!(e.exit_code(), ExitCode::from(1));
    }

    #[test]
    fn config_errors_exit_2() {
        let e: CliError = sealq::Error::NoKeyring.into();
        assert_eq!(e.exit_code(), ExitCode::from(2));
        assert!(e.render().contains("sealq keys generate"));
    }
}
