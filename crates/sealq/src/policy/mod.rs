//! Payload policy: size budgets and a scanner for sensitive data, applied in
//! the producer before sealing.
//!
//! # Why
//!
//! Sealing keeps a payload secret from the broker, but not from everyone who
//! may open it later: every worker of the queue, dead-letter tooling, anyone
//! who reveals a payload while debugging, and every backup of the broker for
//! as long as the key lives. Data that does not need to travel should not:
//! PCI DSS forbids storing card verification codes after authorisation at all
//! and requires card numbers (PANs) to be kept out of systems not built for
//! them, and credentials copied into a queue leak with it. So a task should
//! carry an identifier (see `sealq::Ref`) and the handler fetch the data.
//!
//! # What is checked
//!
//! [`PayloadPolicy::check`] runs on the serialized MessagePack payload
//! (rmp-serde, named/map mode), before it is sealed:
//!
//! 1. **Size budget**: the serialized size against the queue's limit
//!    ([`DEFAULT_MAX_PAYLOAD_BYTES`] unless configured). Over the limit is
//!    [`Error::PayloadTooLarge`], or a warning and a metric when the queue's
//!    [`PolicyMode`] is [`PolicyMode::Warn`].
//! 2. **Decoding**: a payload that is not exactly one MessagePack value, or
//!    nests deeper than about 125 levels, is [`Error::Codec`]; nothing
//!    unscanned gets through.
//! 3. **Scanner**: every value of the payload is visited; each [`Rule`] looks
//!    at the values it understands:
//!    - strings (their bytes, valid UTF-8 or not): card numbers, PEM private
//!      keys, AWS access key ids, JWTs;
//!    - non-negative integers and integral floats of 13-19 digits: card numbers;
//!    - map keys that name card data (`cvv`, `card_number`, `pan` ...) whose
//!      value is shaped like that data.
//!
//!    Binary and extension values are opaque and skipped; map keys are only
//!    compared with card-data field names. A finding is
//!    [`Error::PolicyViolation`] naming the rule and the field path
//!    (`customer.cards[2].number`), never the value: the detail is at most the
//!    last four digits of a card, which PCI DSS lets anyone see.
//!
//! Scanner rules always reject unless allowed, for a whole queue
//! ([`PayloadPolicy::allow_in_queue`]) or for one field of a queue's payloads
//! ([`PayloadPolicy::allow_field`]).
//!
//! ```
//! use sealq::policy::{PayloadPolicy, PolicyMode, Rule};
//!
//! let policy = PayloadPolicy::default()
//!     .max_bytes(128 * 1024)
//!     .queue_max_bytes("reports", 1 << 20)
//!     .queue_size_mode("reports", PolicyMode::Warn)
//!     .allow_in_queue(Rule::Jwt, "auth")
//!     .allow_field("billing", "invoice.card_last_charge_id", Rule::CardNumber);
//!
//! let payload = rmp_serde::to_vec_named(&serde_json::json!({
//!     "customer": { "cards": [{ "number": "4242 4242 4242 4242" }] }
//! }))?;
//! let err = policy.check("emails", &payload).unwrap_err();
//! assert_eq!(
//!     err.to_string(),
//!     "payload rejected by policy rule `card_number` at field \
//!      `customer.cards[0].number`, card ending 4242"
//! );
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # What is not detected
//!
//! Card numbers whose digits are split other than by single spaces or dashes,
//! spelled out, encoded (base64, hex, binary values) or glued to letters;
//! 12-digit Maestro numbers; AWS secret access keys and other cloud or API
//! tokens; unsigned (`alg: none`) JWTs; personal data in general (names,
//! e-mail addresses). The scanner is a safety net, not a data-loss-prevention
//! system: keep sensitive data out of payloads by design.

mod card;
mod card_text;
mod path;
mod rules;
mod scan;
mod secrets;
mod tokens;

use std::collections::HashMap;
use std::fmt;
use std::ops::ControlFlow;

use crate::error::Error;

pub use rules::Rule;

use path::PathPattern;
use rules::RuleSet;
use scan::{AllowedField, Walker};

/// Default maximum serialized payload size per queue.
pub const DEFAULT_MAX_PAYLOAD_BYTES: usize = 64 * 1024;

/// Decoder recursion budget: each level of arrays or maps uses two, so
/// payloads nest up to about 125 levels. Deeper payloads are refused as
/// [`Error::Codec`] rather than risking the producer's stack.
const MAX_DECODE_DEPTH: usize = 256;

/// What happens when a payload is over its queue's size budget.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PolicyMode {
    /// Refuse the payload with [`Error::PayloadTooLarge`] (the default).
    #[default]
    Reject,
    /// Accept it, log a warning (queue, size and limit; never the payload)
    /// and count it in `sealq_payload_over_budget_total{queue}`.
    Warn,
}

/// One piece of sensitive data the scanner found. Never holds the value.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct Finding {
    /// The rule that matched.
    pub rule: Rule,
    /// Where in the payload: map keys joined with `.`, array elements as
    /// `[i]` (`customer.cards[2].number`); `$` is the payload root.
    pub path: String,
    /// Extra non-secret detail, starting with `, ` (`, card ending 4242`), or
    /// empty.
    pub detail: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}` at field `{}`{}", self.rule, self.path, self.detail)
    }
}

impl From<Finding> for Error {
    fn from(f: Finding) -> Self {
        Error::PolicyViolation {
            rule: f.rule.as_str().to_owned(),
            path: f.path,
            detail: f.detail,
        }
    }
}

/// Settings of one queue that differ from the defaults.
#[derive(Debug, Clone, Default)]
struct QueuePolicy {
    max_bytes: Option<usize>,
    size_mode: Option<PolicyMode>,
    allowed_rules: RuleSet,
    allowed_fields: Vec<AllowedField>,
}

/// What a producer checks before sealing: the size budget of the payload's
/// queue, then the scanner rules. See the [module documentation](self).
///
/// Built with chained methods from [`PayloadPolicy::default`]; cheap to clone
/// and to share between tasks (checking takes `&self`).
#[derive(Debug, Clone)]
pub struct PayloadPolicy {
    max_bytes: usize,
    size_mode: PolicyMode,
    queues: HashMap<String, QueuePolicy>,
}

impl Default for PayloadPolicy {
    /// A 64 KiB budget rejected when exceeded, every rule on, in every queue.
    fn default() -> Self {
        PayloadPolicy {
            max_bytes: DEFAULT_MAX_PAYLOAD_BYTES,
            size_mode: PolicyMode::Reject,
            queues: HashMap::new(),
        }
    }
}

impl PayloadPolicy {
    fn queue_mut(&mut self, queue: &str) -> &mut QueuePolicy {
        self.queues.entry(queue.to_owned()).or_default()
    }

    /// Size budget in serialized bytes for queues without their own.
    #[must_use]
    pub fn max_bytes(mut self, limit: usize) -> Self {
        self.max_bytes = limit;
        self
    }

    /// Size budget in serialized bytes for `queue`.
    #[must_use]
    pub fn queue_max_bytes(mut self, queue: &str, limit: usize) -> Self {
        self.queue_mut(queue).max_bytes = Some(limit);
        self
    }

    /// What to do with over-budget payloads in queues without their own mode.
    #[must_use]
    pub fn size_mode(mut self, mode: PolicyMode) -> Self {
        self.size_mode = mode;
        self
    }

    /// What to do with over-budget payloads in `queue`.
    #[must_use]
    pub fn queue_size_mode(mut self, queue: &str, mode: PolicyMode) -> Self {
        self.queue_mut(queue).size_mode = Some(mode);
        self
    }

    /// Allow `rule` anywhere in payloads of `queue` (for example JWTs in an
    /// `auth` queue whose tasks exist to refresh tokens).
    #[must_use]
    pub fn allow_in_queue(mut self, rule: Rule, queue: &str) -> Self {
        let q = self.queue_mut(queue);
        q.allowed_rules = q.allowed_rules.with(rule);
        self
    }

    /// Allow `rule` at one field path of `queue`'s payloads.
    ///
    /// The path uses the syntax of findings: map keys joined with `.`, `[i]`
    /// for array element `i`; `*` matches any one map key and `[*]` any array
    /// element (`customer.cards[*].token`, `lines.*.ref`); `$` is the root. It
    /// matches exactly that field, not fields below it.
    ///
    /// A malformed path (`a..b`, `a[x]`) allows nothing and logs a warning:
    /// use [`PayloadPolicy::try_allow_field`] to get an error instead.
    #[must_use]
    pub fn allow_field(self, queue: &str, path: &str, rule: Rule) -> Self {
        match PathPattern::parse(path) {
            Ok(pattern) => self.with_allowed_field(queue, pattern, rule),
            Err(reason) => {
                tracing::warn!(
                    queue,
                    rule = rule.as_str(),
                    reason,
                    "ignoring malformed allow-listed field path"
                );
                self
            }
        }
    }

    /// Like [`PayloadPolicy::allow_field`], but a malformed path is an
    /// [`Error::InvalidArgument`] (for policies loaded from configuration).
    pub fn try_allow_field(self, queue: &str, path: &str, rule: Rule) -> Result<Self, Error> {
        let pattern = PathPattern::parse(path).map_err(|reason| Error::InvalidArgument {
            what: "policy field path",
            reason: format!("`{path}`: {reason}"),
        })?;
        Ok(self.with_allowed_field(queue, pattern, rule))
    }

    fn with_allowed_field(mut self, queue: &str, pattern: PathPattern, rule: Rule) -> Self {
        self.queue_mut(queue)
            .allowed_fields
            .push(AllowedField { rule, pattern });
        self
    }

    /// The size budget of `queue` in serialized bytes.
    pub fn max_bytes_for(&self, queue: &str) -> usize {
        self.queues
            .get(queue)
            .and_then(|q| q.max_bytes)
            .unwrap_or(self.max_bytes)
    }

    /// What happens to over-budget payloads of `queue`.
    pub fn size_mode_for(&self, queue: &str) -> PolicyMode {
        self.queues
            .get(queue)
            .and_then(|q| q.size_mode)
            .unwrap_or(self.size_mode)
    }

    /// Check a serialized (MessagePack) payload bound for `queue`.
    ///
    /// In order: the size budget (before decoding, so an oversized payload
    /// costs nothing more), decoding ([`Error::Codec`] if the bytes are not
    /// exactly one MessagePack value), then the scanner rules, stopping at the
    /// first finding, returned as [`Error::PolicyViolation`].
    pub fn check(&self, queue: &str, payload: &[u8]) -> Result<(), Error> {
        self.check_size(queue, payload.len())?;
        let mut first = None;
        self.walk(queue, payload, |finding| {
            first = Some(finding);
            ControlFlow::Break(())
        })?;
        match first {
            Some(finding) => Err(finding.into()),
            None => Ok(()),
        }
    }

    /// Every scanner finding in a payload bound for `queue`, for reports
    /// (rules and fields allowed for the queue are left out; the size budget
    /// is not looked at). At most one finding per rule and value.
    ///
    /// A payload that is not valid MessagePack has no findings: [`check`]
    /// rejects it, and [`try_scan`] reports why.
    ///
    /// [`check`]: PayloadPolicy::check
    /// [`try_scan`]: PayloadPolicy::try_scan
    pub fn scan(&self, queue: &str, payload: &[u8]) -> Vec<Finding> {
        self.try_scan(queue, payload).unwrap_or_default()
    }

    /// Like [`PayloadPolicy::scan`], but a payload that cannot be decoded is
    /// an [`Error::Codec`].
    pub fn try_scan(&self, queue: &str, payload: &[u8]) -> Result<Vec<Finding>, Error> {
        let mut findings = Vec::new();
        self.walk(queue, payload, |finding| {
            findings.push(finding);
            ControlFlow::Continue(())
        })?;
        Ok(findings)
    }

    fn check_size(&self, queue: &str, size: usize) -> Result<(), Error> {
        let limit = self.max_bytes_for(queue);
        if size <= limit {
            return Ok(());
        }
        match self.size_mode_for(queue) {
            PolicyMode::Reject => Err(Error::PayloadTooLarge {
                queue: queue.to_owned(),
                size,
                limit,
            }),
            PolicyMode::Warn => {
                tracing::warn!(
                    queue,
                    size,
                    limit,
                    "payload exceeds the queue's size budget (policy mode: warn)"
                );
                metrics::counter!("sealq_payload_over_budget_total", "queue" => queue.to_owned())
                    .increment(1);
                Ok(())
            }
        }
    }

    /// Decode `payload` and hand each finding to `sink`.
    fn walk(
        &self,
        queue: &str,
        payload: &[u8],
        sink: impl FnMut(Finding) -> ControlFlow<()>,
    ) -> Result<(), Error> {
        let mut rest = payload;
        let value = rmpv::decode::read_value_ref_with_max_depth(&mut rest, MAX_DECODE_DEPTH)
            .map_err(|e| Error::Codec {
                what: "payload",
                reason: e.to_string(),
            })?;
        if !rest.is_empty() {
            return Err(Error::Codec {
                what: "payload",
                reason: format!("{} trailing bytes after the MessagePack value", rest.len()),
            });
        }
        let (enabled, allowed_fields) = match self.queues.get(queue) {
            Some(q) => (
                RuleSet::all().without_all(q.allowed_rules),
                q.allowed_fields.as_slice(),
            ),
            None => (RuleSet::all(), &[][..]),
        };
        if enabled.is_empty() {
            return Ok(());
        }
        let _ = Walker::new(enabled, allowed_fields, sink).walk(&value);
        Ok(())
    }
}

#[cfg(test)]
mod tests;
