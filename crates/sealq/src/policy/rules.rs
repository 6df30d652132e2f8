//! The scanner rules and small sets of them.

use std::fmt;
use std::str::FromStr;

use crate::error::Error;

/// One kind of sensitive data the payload scanner looks for.
///
/// Every rule rejects by default; a rule can be allowed for a whole queue
/// ([`PayloadPolicy::allow_in_queue`](super::PayloadPolicy::allow_in_queue)) or
/// for one field of a queue's payloads
/// ([`PayloadPolicy::allow_field`](super::PayloadPolicy::allow_field)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Rule {
    /// A payment card number (PAN): 13-19 digits, optionally grouped by single
    /// spaces or dashes, that pass the Luhn check and start with the issuer
    /// prefix of a real card network. Found in strings and in integers.
    CardNumber,
    /// A map key that names card data (`cvv`, `cvc2`, `cid`, `card_number`,
    /// `pan`, `security_code` ...) holding a value shaped like that data.
    CardField,
    /// A PEM private key header (`-----BEGIN ... PRIVATE KEY-----`) or a PuTTY
    /// private key file.
    PrivateKey,
    /// An AWS access key id (`AKIA`, `ASIA`, `ABIA` or `ACCA` followed by 16
    /// upper-case letters or digits).
    AwsAccessKey,
    /// A JSON Web Token: `eyJ<header>.eyJ<claims>.<signature>`.
    Jwt,
    /// A GitHub token: `ghp_`, `gho_`, `ghu_`, `ghs_` or `ghr_` followed by
    /// 36 or more letters and digits, or a fine-grained personal access token
    /// (`github_pat_` and 70 or more letters, digits and `_`).
    GithubToken,
    /// A live-mode Stripe secret or restricted API key: `sk_live_` or
    /// `rk_live_` followed by 24 or more letters and digits. Publishable keys
    /// (`pk_live_`) are public by design and not reported.
    StripeKey,
    /// A test-mode Stripe secret or restricted key (`sk_test_`, `rk_test_`).
    /// It moves no money, but it opens the account's test data and API, and
    /// a payload that carries test keys usually carries live ones in
    /// production: rejected like every rule, and a separate rule so a
    /// development queue can allow test keys while live keys stay refused.
    StripeTestKey,
    /// A Slack token: `xoxb-` (bot), `xoxp-` (user), `xoxa-`, `xoxr-`
    /// (refresh) or `xoxs-` followed by 20 or more letters, digits and dashes,
    /// among them a dash and a digit.
    SlackToken,
    /// A Slack webhook URL (`hooks.slack.com/services/...`, `/workflows/`,
    /// `/triggers/`): whoever has the URL can post to the channel.
    SlackWebhook,
    /// A Google API key: `AIza` followed by exactly 35 letters, digits, `_`
    /// or `-`.
    GoogleApiKey,
}

impl Rule {
    /// Every rule, in the order the scanner reports them for one value.
    pub const ALL: [Rule; 11] = [
        Rule::CardNumber,
        Rule::CardField,
        Rule::PrivateKey,
        Rule::AwsAccessKey,
        Rule::Jwt,
        Rule::GithubToken,
        Rule::StripeKey,
        Rule::StripeTestKey,
        Rule::SlackToken,
        Rule::SlackWebhook,
        Rule::GoogleApiKey,
    ];

    /// The stable name of the rule, as used in errors, metrics and
    /// configuration: `card_number`, `card_field`, `private_key`,
    /// `aws_access_key`, `jwt`, `github_token`, `stripe_key`,
    /// `stripe_test_key`, `slack_token`, `slack_webhook`, `google_api_key`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Rule::CardNumber => "card_number",
            Rule::CardField => "card_field",
            Rule::PrivateKey => "private_key",
            Rule::AwsAccessKey => "aws_access_key",
            Rule::Jwt => "jwt",
            Rule::GithubToken => "github_token",
            Rule::StripeKey => "stripe_key",
            Rule::StripeTestKey => "stripe_test_key",
            Rule::SlackToken => "slack_token",
            Rule::SlackWebhook => "slack_webhook",
            Rule::GoogleApiKey => "google_api_key",
        }
    }

    const fn bit(self) -> u16 {
        1 << (self as u8)
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Rule {
    type Err = Error;

    /// Parse a rule from its [`Rule::as_str`] name.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Rule::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| Error::InvalidArgument {
                what: "policy rule",
                reason: format!(
                    "unknown rule `{s}`; expected one of {}",
                    Rule::ALL.map(Rule::as_str).join(", ")
                ),
            })
    }
}

impl serde::Serialize for Rule {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// A set of rules, as a bit mask.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct RuleSet(u16);

impl RuleSet {
    /// Every rule.
    pub(super) fn all() -> Self {
        Rule::ALL.into_iter().fold(RuleSet(0), |s, r| s.with(r))
    }

    /// This set plus `rule`.
    pub(super) fn with(self, rule: Rule) -> Self {
        RuleSet(self.0 | rule.bit())
    }

    /// This set minus every rule of `other`.
    pub(super) fn without_all(self, other: RuleSet) -> Self {
        RuleSet(self.0 & !other.0)
    }

    /// Whether `rule` is in the set.
    pub(super) fn contains(self, rule: Rule) -> bool {
        self.0 & rule.bit() != 0
    }

    /// Whether the set is empty.
    pub(super) fn is_empty(self) -> bool {
        self.0 == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for rule in Rule::ALL {
            assert_eq!(rule.as_str().parse::<Rule>().ok(), Some(rule));
            assert_eq!(rule.to_string(), rule.as_str());
        }
        match "cvv".parse::<Rule>() {
            Err(Error::InvalidArgument { reason, .. }) => {
                assert!(reason.contains("jwt, github_token"), "{reason}");
                assert!(reason.ends_with("google_api_key"), "{reason}");
            }
            other => panic!("expected InvalidArgument, got {other:?}"),
        }
    }

    #[test]
    fn names_are_the_documented_ones() {
        let names: Vec<_> = Rule::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(
            names,
            [
                "card_number",
                "card_field",
                "private_key",
                "aws_access_key",
                "jwt",
                "github_token",
                "stripe_key",
                "stripe_test_key",
                "slack_token",
                "slack_webhook",
                "google_api_key",
            ]
        );
    }

    #[test]
    fn rule_set_operations() {
        let all = RuleSet::all();
        for rule in Rule::ALL {
            assert!(all.contains(rule));
            assert!(!RuleSet::default().contains(rule));
        }
        let some = RuleSet::default().with(Rule::Jwt).with(Rule::CardField);
        let rest = all.without_all(some);
        assert!(!rest.contains(Rule::Jwt));
        assert!(!rest.contains(Rule::CardField));
        assert!(rest.contains(Rule::CardNumber));
        assert!(all.without_all(all).is_empty());
    }

    #[test]
    fn serializes_as_name() {
        assert_eq!(
            serde_json::to_string(&Rule::AwsAccessKey).ok().as_deref(),
            Some("\"aws_access_key\"")
        );
    }
}
