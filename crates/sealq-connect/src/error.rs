//! [`ConnectError`]: why a URL could not be turned into stores.

/// Why a URL could not be turned into stores. Messages name the URL only
/// redacted and say what to do.
#[derive(Debug, thiserror::Error)]
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
