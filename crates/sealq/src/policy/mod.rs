//! Payload policy: size budgets and a scanner for sensitive data, applied in
//! the producer before sealing.
//!
//! STUB: API fixed, implementation pending (helper H2 fills this module).

use crate::error::Error;

/// Default maximum serialized payload size per queue.
pub const DEFAULT_MAX_PAYLOAD_BYTES: usize = 64 * 1024;

/// What a producer checks before sealing.
#[derive(Debug, Clone)]
pub struct PayloadPolicy {
    max_bytes: usize,
}

impl Default for PayloadPolicy {
    fn default() -> Self {
        PayloadPolicy {
            max_bytes: DEFAULT_MAX_PAYLOAD_BYTES,
        }
    }
}

impl PayloadPolicy {
    /// Check a serialized (MessagePack) payload bound for `queue`.
    pub fn check(&self, queue: &str, payload: &[u8]) -> Result<(), Error> {
        if payload.len() > self.max_bytes {
            return Err(Error::PayloadTooLarge {
                queue: queue.to_owned(),
                size: payload.len(),
                limit: self.max_bytes,
            });
        }
        Ok(())
    }
}
