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
//! 3. **Scanner**: every value of the payload, and every map key, is
//!    visited; each [`Rule`] looks at the values it understands:
//!    - strings (their bytes, valid UTF-8 or not), map values and map keys
//!      alike: card numbers, PEM private keys, AWS access key ids, JWTs,
//!      GitHub, Stripe and Slack tokens, Slack webhook URLs, Google API keys;
//!    - non-negative integers and integral floats of 13-19 digits, values and
//!      keys: card numbers;
//!    - map keys that name card data (`cvv`, `card_number`, `pan` ...) whose
//!      value is shaped like that data.
//!
//!    Binary and extension values are opaque and skipped. A finding is
//!    [`Error::PolicyViolation`] naming the rule and the field path
//!    (`customer.cards[2].number`), never the value: the detail is at most the
//!    last four digits of a card, which PCI DSS lets anyone see, or a token's
//!    public prefix (`, ghp_ token`). A finding in a map key has the path of
//!    the key's entry and a detail ending in `, in a map key`.
//!
//! | Rule name | Finds |
//! |---|---|
//! | `card_number` | 13-19 digits passing Luhn with a card network's prefix and length; groups split by a space (also NBSP, thin and figure spaces), `-`, `.` or `/`; zero-width characters (U+200B, U+200C, U+200D, U+2060, U+FEFF, soft hyphen) ignored |
//! | `card_field` | `cvv`, `cvc2`, `card_number`, `pan` ... keys holding card-shaped values |
//! | `private_key` | `-----BEGIN ... PRIVATE KEY-----` (RSA, EC, DSA, OPENSSH, ENCRYPTED, PGP `PRIVATE KEY BLOCK` ...), PuTTY key files |
//! | `aws_access_key` | `AKIA`/`ASIA`/`ABIA`/`ACCA` + 16 upper-case letters or digits |
//! | `jwt` | signed JSON Web Tokens |
//! | `github_token` | `ghp_`, `gho_`, `ghu_`, `ghs_`, `ghr_` + 36 or more, `github_pat_` + 70 or more |
//! | `stripe_key` | live secret and restricted keys: `sk_live_`, `rk_live_` + 24 or more |
//! | `stripe_test_key` | test-mode keys: `sk_test_`, `rk_test_` + 24 or more |
//! | `slack_token` | `xoxb-`, `xoxp-`, `xoxa-`, `xoxr-`, `xoxs-` tokens |
//! | `slack_webhook` | `hooks.slack.com/services/...` (and `/workflows/`, `/triggers/`) URLs |
//! | `google_api_key` | `AIza` + 35 letters, digits, `_` or `-` |
//!
//! Token rules need the prefix, enough characters of the token's alphabet
//! after it, no word glued before it, and a varied body: the prefix alone
//! (`sk_live_` in prose, a `GITHUB_TOKEN` variable) and placeholders
//! (`sk_live_XXXXXXXXXXXXXXXXXXXXXXXX`) pass. Stripe test keys have a rule of
//! their own, on like every rule, so that a development queue can allow them
//! (`allow_in_queue(Rule::StripeTestKey, ...)`) while live keys stay refused;
//! publishable keys (`pk_live_`) are public by design and never reported.
//!
//! # Field paths never carry data
//!
//! A path is shown in errors, logs and the append-only audit log
//! (`policy_rejected` records), so it must not carry personal data or
//! secrets, and map keys are data as often as they are field names
//! (`{"by_user": {"alice@example.com": ...}}`). A string map key is shown
//! verbatim only if it has the shape of a field name: 1 to 32 ASCII letters,
//! digits, `_` and `-`, starting with a letter or `_`, with at most 4 digits,
//! not 12 or more hex digits alone, and tripping no scanner rule. Integer keys
//! are shown up to four digits. Any other key renders as `<key#i>`, the
//! entry's position in its map counting from 0 in serialized order, so
//! whoever holds the payload can find the field and nobody else learns the
//! key: the example above is rejected at `by_user.<key#0>.card`. E-mail
//! addresses, phone numbers, numeric ids, dates, UUIDs, card numbers, names
//! with spaces or accents and URLs are all hidden; a bare user name used as a
//! key (`alice`) cannot be told from a field name and is shown, so key such
//! maps by id.
//!
//! Allow-lists match the real keys, not their rendering: allow a field under
//! a map with data keys with `*` (`by_user.*.card`); a pattern naming a
//! `<key#i>` placeholder is refused.
//!
//! ```
//! use sealq::policy::{PayloadPolicy, Rule};
//!
//! let payload = rmp_serde::to_vec_named(&serde_json::json!({
//!     "by_user": { "alice@example.com": { "card": "4111 1111 1111 1111" } }
//! }))?;
//! let err = PayloadPolicy::default().check("billing", &payload).unwrap_err();
//! assert_eq!(
//!     err.to_string(),
//!     "payload rejected by policy rule `card_number` at field \
//!      `by_user.<key#0>.card`, card ending 1111"
//! );
//! let allowed = PayloadPolicy::default()
//!     .try_allow_field("billing", "by_user.*.card", Rule::CardNumber)?;
//! assert!(allowed.check("billing", &payload).is_ok());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
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
//! Card numbers split by more than one visible separator between groups, by
//! separators other than those above, into groups that do not look printed
//! (`42 4242 4242 4242 42`), spelled out, encoded (base64, hex, binary
//! values) or glued to letters; 12-digit Maestro numbers; AWS secret access
//! keys (40 characters with no prefix: indistinguishable from other
//! base64) and tokens of services not listed above; Stripe keys shorter than
//! 24 characters after the prefix; unsigned (`alg: none`) JWTs; personal data
//! in general (names, e-mail addresses). The scanner is a safety net, not a
//! data-loss-prevention system: keep sensitive data out of payloads by design.

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
    /// `[i]` (`customer.cards[2].number`); `$` is the payload root. Map keys
    /// that are not shaped like field names appear as `<key#i>`, their
    /// position in their map (`by_user.<key#0>.card`): see
    /// [Field paths never carry data](self#field-paths-never-carry-data).
    pub path: String,
    /// Extra non-secret detail, starting with `, ` (`, card ending 4242`,
    /// `, ghp_ token`), or empty; `, in a map key` is appended when the
    /// finding is in a map key rather than a value.
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
    /// matches exactly that field, not fields below it. Keys are matched as
    /// they are in the payload: where a finding shows `<key#i>` for a key it
    /// does not print, use `*`.
    ///
    /// A malformed path (`a..b`, `a[x]`, `a.<key#0>`) allows nothing and logs
    /// a warning: use [`PayloadPolicy::try_allow_field`] to get an error
    /// instead.
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
                crate::metrics::record::over_budget(queue);
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
