//! The walk over a decoded payload: which rule looks at which value, the path
//! stack, and allow-listed fields.

use std::ops::ControlFlow;

use rmpv::ValueRef;

use super::path::{KeyRef, PathPattern, PathSeg, render};
use super::rules::{Rule, RuleSet};
use super::{Finding, card, card_text, secrets, tokens};

/// A rule allowed at one field path of a queue's payloads.
#[derive(Debug, Clone)]
pub(super) struct AllowedField {
    pub(super) rule: Rule,
    pub(super) pattern: PathPattern,
}

/// Walks one decoded payload and hands each finding to `sink`, which decides
/// whether to go on.
pub(super) struct Walker<'a, 'p, F> {
    /// Rules to look for (every rule minus those allowed for the whole queue).
    enabled: RuleSet,
    /// Rules allowed at particular fields.
    allowed_fields: &'p [AllowedField],
    /// Path from the root to the value being looked at.
    stack: Vec<PathSeg<'a>>,
    /// Whether the value being looked at is (inside) a map key rather than
    /// a map value: findings there say so in their detail.
    in_key: bool,
    sink: F,
}

impl<'a, 'p, F> Walker<'a, 'p, F>
where
    F: FnMut(Finding) -> ControlFlow<()>,
{
    pub(super) fn new(enabled: RuleSet, allowed_fields: &'p [AllowedField], sink: F) -> Self {
        Walker {
            enabled,
            allowed_fields,
            stack: Vec::with_capacity(16),
            in_key: false,
            sink,
        }
    }

    /// Walk `value` and everything below it.
    pub(super) fn walk(&mut self, value: &'a ValueRef<'a>) -> ControlFlow<()> {
        match value {
            ValueRef::String(s) => self.scan_str(s.as_bytes()),
            ValueRef::Integer(i) => match i.as_u64() {
                Some(u) => self.scan_card(card::find_in_u64(u)),
                None => ControlFlow::Continue(()),
            },
            ValueRef::F64(f) => self.scan_card(card::find_in_f64(*f)),
            ValueRef::F32(f) => self.scan_card(card::find_in_f64(f64::from(*f))),
            ValueRef::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    self.stack.push(PathSeg::Index(i));
                    let flow = self.walk(item);
                    self.stack.pop();
                    flow?;
                }
                ControlFlow::Continue(())
            }
            ValueRef::Map(entries) => {
                for (pos, (key, item)) in entries.iter().enumerate() {
                    self.stack.push(PathSeg::Key(KeyRef::of(key), pos));
                    let flow = self.walk_entry(key, item);
                    self.stack.pop();
                    flow?;
                }
                ControlFlow::Continue(())
            }
            // Binary and extension values are opaque bytes, not text.
            ValueRef::Nil | ValueRef::Boolean(_) | ValueRef::Binary(_) | ValueRef::Ext(..) => {
                ControlFlow::Continue(())
            }
        }
    }

    /// A map entry whose key is already on the stack: the key is scanned
    /// like a value (a card number or a token used as a map key is as
    /// exposed as one stored under it), then the value.
    fn walk_entry(&mut self, key: &'a ValueRef<'a>, value: &'a ValueRef<'a>) -> ControlFlow<()> {
        let was_in_key = std::mem::replace(&mut self.in_key, true);
        let flow = self.walk(key);
        self.in_key = was_in_key;
        flow?;
        self.walk(value)?;
        if self.enabled.contains(Rule::CardField)
            && let ValueRef::String(k) = key
            && let Some(kind) = card::field_kind(k.as_bytes())
            && card::field_value_is_sensitive(kind, value)
        {
            self.report(Rule::CardField, String::new)?;
        }
        ControlFlow::Continue(())
    }

    /// Every string rule over one string's bytes (UTF-8 or not).
    fn scan_str(&mut self, s: &[u8]) -> ControlFlow<()> {
        // No string rule matches fewer bytes than a 13-digit card number
        // (AWS key ids, PuTTY headers, JWTs and every token are longer):
        // most map keys and short values stop here.
        if s.len() < card::MIN_PAN_DIGITS {
            return ControlFlow::Continue(());
        }
        if self.enabled.contains(Rule::CardNumber) {
            self.scan_card(card_text::find_in_str(s))?;
        }
        // PEM armour, the PuTTY header and most token prefixes hold a `-`,
        // `_` or `/`: one pass over a string without decides for all of them.
        let punctuated = tokens::needs_punctuation(s);
        if punctuated
            && self.enabled.contains(Rule::PrivateKey)
            && let Some(label) = secrets::find_private_key(s)
        {
            let label = String::from_utf8_lossy(label);
            self.report(Rule::PrivateKey, || format!(", {label} block"))?;
        }
        if self.enabled.contains(Rule::AwsAccessKey)
            && let Some(prefix) = secrets::find_aws_access_key(s)
        {
            self.report(Rule::AwsAccessKey, || format!(", {prefix} key id"))?;
        }
        if self.enabled.contains(Rule::Jwt) && secrets::find_jwt(s) {
            self.report(Rule::Jwt, String::new)?;
        }
        if punctuated {
            self.scan_punctuated_tokens(s)?;
        }
        if self.enabled.contains(Rule::GoogleApiKey) && tokens::find_google_api_key(s) {
            self.report(Rule::GoogleApiKey, String::new)?;
        }
        ControlFlow::Continue(())
    }

    /// The token rules whose prefixes hold a `_`, `-` or `/`.
    fn scan_punctuated_tokens(&mut self, s: &[u8]) -> ControlFlow<()> {
        if self.enabled.contains(Rule::GithubToken)
            && let Some(prefix) = tokens::find_github_token(s)
        {
            self.report(Rule::GithubToken, || format!(", {prefix} token"))?;
        }
        let (live, test) = (
            self.enabled.contains(Rule::StripeKey),
            self.enabled.contains(Rule::StripeTestKey),
        );
        if let Some(key) = tokens::find_stripe_key(s, live, test) {
            let rule = if key.test {
                Rule::StripeTestKey
            } else {
                Rule::StripeKey
            };
            self.report(rule, || format!(", {} key", key.prefix))?;
        }
        if self.enabled.contains(Rule::SlackToken)
            && let Some(prefix) = tokens::find_slack_token(s)
        {
            self.report(Rule::SlackToken, || format!(", {prefix} token"))?;
        }
        if self.enabled.contains(Rule::SlackWebhook) && tokens::find_slack_webhook(s) {
            self.report(Rule::SlackWebhook, String::new)?;
        }
        ControlFlow::Continue(())
    }

    fn scan_card(&mut self, hit: Option<card::CardHit>) -> ControlFlow<()> {
        match hit {
            Some(hit) if self.enabled.contains(Rule::CardNumber) => self
                .report(Rule::CardNumber, || {
                    format!(", card ending {}", hit.last4())
                }),
            _ => ControlFlow::Continue(()),
        }
    }

    /// Hand a finding at the current path to the sink, unless the rule is
    /// allowed there. The path and detail are only built here. A finding in
    /// a map key has the path of its entry and says so in its detail.
    fn report(&mut self, rule: Rule, detail: impl FnOnce() -> String) -> ControlFlow<()> {
        let allowed = self
            .allowed_fields
            .iter()
            .any(|a| a.rule == rule && a.pattern.matches(&self.stack));
        if allowed {
            return ControlFlow::Continue(());
        }
        let mut detail = detail();
        if self.in_key {
            detail.push_str(", in a map key");
        }
        let finding = Finding {
            rule,
            path: render(&self.stack, looks_sensitive),
            detail,
        };
        (self.sink)(finding)
    }
}

/// Whether bytes would trip any string rule, allowed or not: such map keys
/// are never shown in a path, whatever their shape.
fn looks_sensitive(s: &[u8]) -> bool {
    card_text::find_in_str(s).is_some()
        || secrets::find_private_key(s).is_some()
        || secrets::find_aws_access_key(s).is_some()
        || secrets::find_jwt(s)
        || tokens::find_github_token(s).is_some()
        || tokens::find_stripe_key(s, true, true).is_some()
        || tokens::find_slack_token(s).is_some()
        || tokens::find_slack_webhook(s)
        || tokens::find_google_api_key(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn findings(value: &ValueRef<'_>, enabled: RuleSet, allowed: &[AllowedField]) -> Vec<Finding> {
        let mut out = Vec::new();
        let _ = Walker::new(enabled, allowed, |f| {
            out.push(f);
            ControlFlow::Continue(())
        })
        .walk(value);
        out
    }

    fn map<'a>(entries: Vec<(&'a str, ValueRef<'a>)>) -> ValueRef<'a> {
        ValueRef::Map(
            entries
                .into_iter()
                .map(|(k, v)| (ValueRef::from(k), v))
                .collect(),
        )
    }

    #[test]
    fn walks_nested_values_with_paths() {
        let value = map(vec![
            ("id", ValueRef::from("ord_1")),
            (
                "customer",
                map(vec![(
                    "cards",
                    ValueRef::Array(vec![
                        ValueRef::Nil,
                        map(vec![("number", ValueRef::from(4_242_424_242_424_242u64))]),
                        map(vec![("number", ValueRef::from("5555 5555 5555 4444"))]),
                    ]),
                )]),
            ),
        ]);
        let found = findings(&value, RuleSet::all(), &[]);
        let paths: Vec<_> = found.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(
            paths,
            ["customer.cards[1].number", "customer.cards[2].number"]
        );
        assert_eq!(found[1].detail, ", card ending 4444");
    }

    #[test]
    fn stops_when_the_sink_says_so() {
        let value = ValueRef::Array(vec![
            ValueRef::from("4242424242424242"),
            ValueRef::from("4242424242424242"),
        ]);
        let mut seen = 0;
        let flow = Walker::new(RuleSet::all(), &[], |_| {
            seen += 1;
            ControlFlow::Break(())
        })
        .walk(&value);
        assert_eq!(flow, ControlFlow::Break(()));
        assert_eq!(seen, 1);
    }

    #[test]
    fn disabled_rules_are_not_run() {
        let value = ValueRef::from("AKIAIOSFODNN7EXAMPLE 4242424242424242");
        let only_card = RuleSet::default().with(Rule::CardNumber);
        let found = findings(&value, only_card, &[]);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].rule, Rule::CardNumber);
        assert_eq!(found[0].path, "$");
    }

    #[test]
    fn allowed_fields_are_skipped_for_their_rule_only() {
        let value = map(vec![(
            "ref",
            ValueRef::from("4242424242424242 AKIAIOSFODNN7EXAMPLE"),
        )]);
        let allowed = [AllowedField {
            rule: Rule::CardNumber,
            pattern: PathPattern::parse("ref").unwrap(),
        }];
        let found = findings(&value, RuleSet::all(), &allowed);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].rule, Rule::AwsAccessKey);
        assert_eq!(found[0].detail, ", AKIA key id");
    }

    #[test]
    fn card_field_reported_after_value_rules() {
        let value = map(vec![
            ("cvv", ValueRef::from("123")),
            ("card_number", ValueRef::from("4242424242424242")),
            ("cvv_result", ValueRef::from("123")),
        ]);
        let found = findings(&value, RuleSet::all(), &[]);
        let got: Vec<_> = found.iter().map(|f| (f.rule, f.path.as_str())).collect();
        assert_eq!(
            got,
            [
                (Rule::CardField, "cvv"),
                (Rule::CardNumber, "card_number"),
                (Rule::CardField, "card_number"),
            ]
        );
    }

    #[test]
    fn secret_map_keys_do_not_leak_into_paths() {
        let value = map(vec![(
            "4242424242424242",
            map(vec![("cvc", ValueRef::from(123))]),
        )]);
        let found = findings(&value, RuleSet::all(), &[]);
        let got: Vec<_> = found
            .iter()
            .map(|f| (f.rule, f.path.as_str(), f.detail.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                (
                    Rule::CardNumber,
                    "<key#0>",
                    ", card ending 4242, in a map key"
                ),
                (Rule::CardField, "<key#0>.cvc", ""),
            ]
        );
    }

    #[test]
    fn binary_values_are_skipped() {
        let value = ValueRef::Binary(b"4242424242424242");
        assert!(findings(&value, RuleSet::all(), &[]).is_empty());
    }
}
