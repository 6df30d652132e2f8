//! Turning `tokio-postgres` and pool failures into [`BrokerError`]s whose
//! messages say what to do. Only the server's primary message is quoted,
//! never its `DETAIL` (which may echo stored values).

use sealq::{BrokerError, BrokerErrorKind};
use tokio_postgres::error::SqlState;

/// Map a Postgres error met while doing `what` against `target` (a
/// redacted URL).
pub(crate) fn map(target: &str, what: &str, e: tokio_postgres::Error) -> BrokerError {
    let (kind, message) = match e.code() {
        Some(code) => {
            let server = e
                .as_db_error()
                .map(|d| d.message().to_owned())
                .unwrap_or_default();
            classify(target, what, code, &server)
        }
        None if e.is_closed() => (
            BrokerErrorKind::Unavailable,
            format!("{what}: the connection to {target} closed; retrying later may succeed"),
        ),
        None => {
            // The driver's own errors (not the server's) name their cause
            // apart: "authentication error" alone says too little. Its
            // causes are fixed texts, TLS and I/O errors: no secret.
            let mut text = e.to_string();
            let mut cause = std::error::Error::source(&e);
            while let Some(c) = cause {
                text.push_str(&format!(": {c}"));
                cause = c.source();
            }
            let lower = text.to_ascii_lowercase();
            if lower.contains("channel binding") {
                (
                    BrokerErrorKind::Config,
                    format!(
                        "{what}: channel_binding=require, and {target} did not bind the login \
                         to the TLS connection ({text}); the server must authenticate this user \
                         with scram-sha-256 on a hostssl line of pg_hba.conf (SCRAM-SHA-256-PLUS)"
                    ),
                )
            } else if lower.contains("certificate")
                || lower.contains("tls")
                || lower.contains("ssl")
            {
                (
                    BrokerErrorKind::Config,
                    format!(
                        "{what}: TLS with {target} failed ({text}); check sslmode, and that \
                         sslrootcert names the CA that signed the server's certificate"
                    ),
                )
            } else {
                (
                    BrokerErrorKind::Unavailable,
                    format!("{what}: cannot reach Postgres at {target} ({text})"),
                )
            }
        }
    };
    BrokerError::new(kind, message).with_source(e)
}

fn classify(target: &str, what: &str, code: &SqlState, server: &str) -> (BrokerErrorKind, String) {
    if *code == SqlState::INSUFFICIENT_PRIVILEGE {
        (
            BrokerErrorKind::PermissionDenied,
            format!(
                "{what}: the Postgres role lacks a privilege on {target} ({server}); grant the \
                 role's privileges from docs/postgres.md"
            ),
        )
    } else if *code == SqlState::INVALID_PASSWORD
        || *code == SqlState::INVALID_AUTHORIZATION_SPECIFICATION
    {
        (
            BrokerErrorKind::PermissionDenied,
            format!(
                "{what}: Postgres at {target} refused the credentials ({server}); fix the user \
                 and password in the broker URL"
            ),
        )
    } else if *code == SqlState::INVALID_CATALOG_NAME {
        (
            BrokerErrorKind::Config,
            format!("{what}: {server} at {target}; create the database or fix the URL"),
        )
    } else if *code == SqlState::UNDEFINED_TABLE
        || *code == SqlState::UNDEFINED_FUNCTION
        || *code == SqlState::INVALID_SCHEMA_NAME
    {
        (
            BrokerErrorKind::Config,
            format!(
                "{what}: the sealq schema in {target} is missing or incomplete ({server}); \
                 connect once with migrations enabled as the role that owns the schema"
            ),
        )
    } else if *code == SqlState::T_R_SERIALIZATION_FAILURE
        || *code == SqlState::T_R_DEADLOCK_DETECTED
        || *code == SqlState::LOCK_NOT_AVAILABLE
        || *code == SqlState::TOO_MANY_CONNECTIONS
        || *code == SqlState::ADMIN_SHUTDOWN
        || *code == SqlState::CRASH_SHUTDOWN
        || *code == SqlState::CANNOT_CONNECT_NOW
        || *code == SqlState::READ_ONLY_SQL_TRANSACTION
        || *code == SqlState::QUERY_CANCELED
        || code.code().starts_with("08")
        || code.code().starts_with("53")
    {
        (
            BrokerErrorKind::Unavailable,
            format!("{what}: Postgres at {target} is unavailable or busy ({server}); retry later"),
        )
    } else if code.code().starts_with("XX") {
        (
            BrokerErrorKind::Corrupt,
            format!("{what}: Postgres at {target} reported an internal error ({server})"),
        )
    } else {
        (
            BrokerErrorKind::Other,
            format!(
                "{what}: Postgres at {target} failed ({server}, SQLSTATE {})",
                code.code()
            ),
        )
    }
}

/// Map a failure to get a pooled connection.
pub(crate) fn pool(target: &str, what: &str, e: deadpool_postgres::PoolError) -> BrokerError {
    match e {
        deadpool_postgres::PoolError::Backend(e) => map(target, what, e),
        deadpool_postgres::PoolError::Timeout(_) => BrokerError::new(
            BrokerErrorKind::Unavailable,
            format!(
                "{what}: timed out waiting for a connection to {target}; the pool is exhausted \
                 or the server is slow"
            ),
        ),
        other => BrokerError::new(
            BrokerErrorKind::Unavailable,
            format!("{what}: no connection to {target} ({other})"),
        ),
    }
}
