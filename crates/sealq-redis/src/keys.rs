//! The Redis key schema: the key prefix, a queue's keys and the global
//! registry's keys (`docs/redis.md` lists every key).
//!
//! Every key of a queue starts `PREFIX:{queue}:`: the braces are a Cluster
//! hash tag, so a queue's keys share one slot and each function call touches
//! one slot. The global index (id → queue), the queue registry and the
//! paused registry start `PREFIX:{~}:g:`.

use sealq::{BrokerError, BrokerErrorKind};

use crate::RedisBroker;

/// Refuse a key prefix that would break the key schema (`{`, `}` delimit
/// the hash tag, `:` the key's parts).
pub(crate) fn validate_prefix(prefix: &str) -> Result<(), BrokerError> {
    if prefix.is_empty() || prefix.contains(['{', '}', ':']) {
        return Err(BrokerError::new(
            BrokerErrorKind::Config,
            format!(
                "invalid Redis key prefix `{prefix}`: it must be non-empty and contain no `{{`, `}}` or `:`"
            ),
        ));
    }
    Ok(())
}

/// Refuse a queue name that cannot be a hash tag.
pub(crate) fn validate_queue(queue: &str) -> Result<(), BrokerError> {
    if queue.is_empty() || queue.contains(['{', '}']) {
        return Err(BrokerError::new(
            BrokerErrorKind::Config,
            format!(
                "queue name `{queue}` cannot be used with Redis: it must be non-empty and contain \
                 no `{{` or `}}` (they delimit the Cluster hash tag)"
            ),
        ));
    }
    Ok(())
}

/// `PREFIX:{~}:g:`, what every key of the global registry starts with.
pub(crate) fn global_key_prefix(prefix: &str) -> String {
    format!("{prefix}:{{~}}:g:")
}

/// `PREFIX:{queue}:`, what every key of `queue` starts with.
fn queue_key_prefix_of(prefix: &str, queue: &str) -> String {
    format!("{prefix}:{{{queue}}}:")
}

impl RedisBroker {
    /// `PREFIX:{queue}:`, what every key of `queue` starts with (the
    /// functions take it as their first key and append the rest).
    pub(crate) fn queue_key_prefix(&self, queue: &str) -> String {
        queue_key_prefix_of(&self.inner.prefix, queue)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_prefixes_keep_the_schema() {
        // The Lua library and existing data depend on these exact forms.
        assert_eq!(queue_key_prefix_of("sealq", "emails"), "sealq:{emails}:");
        assert_eq!(global_key_prefix("sealq"), "sealq:{~}:g:");
        assert_eq!(queue_key_prefix_of("p-2", "a:b c"), "p-2:{a:b c}:");
    }

    #[test]
    fn prefixes_that_break_the_schema_are_refused() {
        assert!(validate_prefix("sealq").is_ok());
        assert!(validate_prefix("team-a_1").is_ok());
        for p in ["", "a:b", "{x", "x}", "a{b}c"] {
            let e = validate_prefix(p).unwrap_err();
            assert_eq!(e.kind, BrokerErrorKind::Config, "{p:?}");
            assert!(e.message.contains("invalid Redis key prefix"), "{e}");
        }
    }

    #[test]
    fn queue_names_that_cannot_be_a_hash_tag_are_refused() {
        assert!(validate_queue("default").is_ok());
        // A colon is fine inside the hash tag.
        assert!(validate_queue("mail:high").is_ok());
        for q in ["", "a{b", "a}b", "{~}"] {
            let e = validate_queue(q).unwrap_err();
            assert_eq!(e.kind, BrokerErrorKind::Config, "{q:?}");
            assert!(e.message.contains("Cluster hash tag"), "{e}");
        }
    }
}
