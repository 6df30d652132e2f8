//! [`ConnectError`]: why a URL could not be turned into stores.

/// Why a URL could not be turned into stores. Messages name the URL only
/// redacted and say what to do. `Debug` writes the message and its causes
/// (what `fn main() -> Result<(), ConnectError>` prints).
#[derive(thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The URL is wrong (the caller's to fix): an unknown scheme, a missing
    /// file name, a scheme this build does not support.
    #[error("{0}")]
    Usage(String),
    /// The backend refused to open or could not be reached; `source` says
    /// why. A refused configuration or credentials is the caller's to fix
    /// ([`ConnectError::is_usage`]); anything else may pass on a retry.
    #[error("cannot open broker {url}")]
    Open {
        /// The URL, redacted.
        url: String,
        /// Whether the configuration or credentials were refused.
        refused: bool,
        /// The backend's error.
        #[source]
        source: sealq::BrokerError,
    },
    /// The SQLite database file does not exist, and the caller asked to
    /// open an existing one only ([`crate::ConnectOptions::existing_only`]).
    #[error("no SQLite broker database at {}", path.display())]
    Missing {
        /// The file looked for.
        path: std::path::PathBuf,
    },
    /// The audit log could not be opened.
    #[error(transparent)]
    Audit(#[from] sealq::audit::AuditError),
}

impl std::fmt::Debug for ConnectError {
    /// The `Display` message, then each cause it does not already say.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        sealq::fmt_with_causes(self, f)
    }
}

impl ConnectError {
    /// A backend's failure to open `url`.
    pub(crate) fn opening(url: &str, source: sealq::BrokerError) -> Self {
        let refused = matches!(
            source.kind,
            sealq::BrokerErrorKind::Config | sealq::BrokerErrorKind::PermissionDenied
        );
        ConnectError::Open {
            url: crate::redact(url),
            refused,
            source,
        }
    }

    /// `true` for an error the caller's URL or configuration caused.
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            ConnectError::Usage(_)
                | ConnectError::Missing { .. }
                | ConnectError::Open { refused: true, .. }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rough_edge_debug_is_the_message_and_its_causes() {
        let e = ConnectError::opening(
            "redis://user:secret@127.0.0.1:1",
            sealq::BrokerError::new(sealq::BrokerErrorKind::Unavailable, "cannot connect"),
        );
        let printed = format!("Error: {e:?}");
        assert_eq!(
            printed,
            "Error: cannot open broker redis://user:***@127.0.0.1:1: \
             broker unavailable: cannot connect"
        );
        assert!(!printed.contains("secret") && !printed.contains("Open {"));
    }
}
