//! Turning `redis` errors into [`BrokerError`]s whose messages say what to do.

use redis::{ErrorKind, RedisError, ServerErrorKind};
use sealq::{BrokerError, BrokerErrorKind};

/// Map a Redis error met while doing `what` against `target` (a redacted URL).
pub(crate) fn map(target: &str, what: &str, e: RedisError) -> BrokerError {
    let text = e.to_string();
    let lower = text.to_ascii_lowercase();
    let (kind, message) = if lower.contains("function not found")
        || lower.contains("library not found")
    {
        (
            BrokerErrorKind::Config,
            format!(
                "{what}: the sealq functions library is not loaded on {target}; \
                 run `sealq redis install --broker URL` as an admin user"
            ),
        )
    } else if e.kind() == ErrorKind::AuthenticationFailed
        || lower.contains("wrongpass")
        || lower.contains("invalid username-password")
        || lower.contains("noauth")
    {
        (
            BrokerErrorKind::PermissionDenied,
            format!(
                "{what}: Redis at {target} refused the credentials (wrong user name or password, \
                 or the user is disabled); fix user:password in the broker URL"
            ),
        )
    } else if e.kind() == ErrorKind::Server(ServerErrorKind::NoPerm)
        || lower.contains("noperm")
        || lower.contains("can't run this command")
        || lower.contains("can't access at least one of the keys")
        || lower.contains("no permissions to")
    {
        (
            BrokerErrorKind::PermissionDenied,
            format!(
                "{what}: the Redis user lacks a permission on {target} ({}); grant the role's \
                 ACL from docs/redis-acl.md, and check the key prefix matches its ~PREFIX:* pattern",
                e.detail().unwrap_or(&text)
            ),
        )
    } else if lower.contains("certificate")
        || lower.contains("unknownissuer")
        || lower.contains("invalidcertificate")
        || lower.contains("tls")
        || lower.contains("handshake")
    {
        (
            BrokerErrorKind::Config,
            format!(
                "{what}: TLS verification failed talking to {target} ({text}); pass the CA that \
                 signed the server certificate with ?ca=PATH (and ?cert=PATH&key=PATH when the \
                 server requires client certificates)"
            ),
        )
    } else if e.is_io_error()
        || e.is_connection_refusal()
        || e.is_timeout()
        || e.is_connection_dropped()
        || e.kind() == ErrorKind::ClusterConnectionNotFound
        || matches!(
            e.kind(),
            ErrorKind::Server(
                ServerErrorKind::BusyLoading
                    | ServerErrorKind::TryAgain
                    | ServerErrorKind::ClusterDown
                    | ServerErrorKind::MasterDown
                    | ServerErrorKind::ReadOnly
            )
        )
        || e.kind() == ErrorKind::MasterNameNotFoundBySentinel
    {
        (
            BrokerErrorKind::Unavailable,
            format!(
                "{what}: Redis at {target} is unavailable ({text}); sealq retries, check that the server is up"
            ),
        )
    } else if is_oom(&e) {
        (
            BrokerErrorKind::Unavailable,
            format!(
                "{what}: Redis at {target} is out of memory ({text}); nothing it stored was lost and \
                 sealq retries; raise `maxmemory`, shorten retention or cap the archive \
                 (docs/redis.md, \"Memory\")"
            ),
        )
    } else if e.kind() == ErrorKind::InvalidClientConfig {
        (
            BrokerErrorKind::Config,
            format!("{what}: invalid Redis configuration for {target}: {text}"),
        )
    } else if matches!(e.kind(), ErrorKind::Parse | ErrorKind::UnexpectedReturnType) {
        (
            BrokerErrorKind::Corrupt,
            format!(
                "{what}: unexpected reply from {target} ({text}); is the sealq library version right?"
            ),
        )
    } else {
        (
            BrokerErrorKind::Other,
            format!("{what}: Redis at {target} failed: {text}"),
        )
    };
    BrokerError::new(kind, message).with_source(e)
}

/// Redis refused a write at its `maxmemory` (`OOM`), alone or inside a
/// pipeline (where the error's own code is not set).
fn is_oom(e: &redis::RedisError) -> bool {
    e.code() == Some("OOM")
        || e.clone()
            .into_server_errors()
            .is_some_and(|errs| errs.iter().any(|(_, s)| s.code() == "OOM"))
}

/// A reply that does not have the shape the library returns.
pub(crate) fn corrupt(target: &str, what: &str, detail: impl std::fmt::Display) -> BrokerError {
    BrokerError::new(
        BrokerErrorKind::Corrupt,
        format!("{what}: unexpected data from {target}: {detail}"),
    )
}
