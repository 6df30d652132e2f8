//! The payload budgets report: which task types carry the largest payloads,
//! against their queue's budget. "Refactor the largest first": the top rows
//! are the payloads to turn into [`Ref`](super::Ref)s.
//!
//! Sizes come from the stored envelopes, without opening them: the payload
//! size is the envelope minus its header (which names the key, so its length
//! is known) and the 16-byte tag, which is exactly the serialized size the
//! [`PayloadPolicy`] budget is checked against at enqueue.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::error::Result;
use crate::policy::{PayloadPolicy, PolicyMode};
use crate::seal::envelope::{TAG_LEN, parse_header};
use crate::store::broker::{Broker, ListQuery};

/// Sizes of one task type in one queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct PayloadStats {
    /// Queue.
    pub queue: String,
    /// Task type.
    #[serde(rename = "type")]
    pub kind: String,
    /// Stored tasks of this type in this queue (every state).
    pub count: u64,
    /// Median sealed envelope size, bytes.
    pub sealed_p50: u64,
    /// 99th percentile sealed envelope size, bytes.
    pub sealed_p99: u64,
    /// Largest sealed envelope, bytes.
    pub sealed_max: u64,
    /// Largest serialized payload (envelope minus header and tag), bytes:
    /// what the budget is checked against.
    pub payload_max: u64,
    /// The queue's budget for serialized payloads, bytes.
    pub budget: u64,
    /// What the queue's policy does with over-budget payloads: `reject` or `warn`.
    pub budget_mode: &'static str,
    /// Tasks whose payload is over the budget (possible in `warn` mode or if
    /// the budget was lowered after they were enqueued).
    pub over_budget: u64,
    /// The type's largest payload as a share of the budget, percent rounded up.
    pub budget_used_percent: u64,
}

impl PayloadStats {
    /// Whether any task of this type is over its queue's budget.
    pub fn is_over_budget(&self) -> bool {
        self.over_budget > 0
    }
}

/// Page size used to walk the broker.
const PAGE: usize = 1000;

/// Walk every stored task (any state, paginated by id) and aggregate sealed
/// sizes per queue and task type, with each queue's budget from `policy`.
///
/// Ranked largest first: by 99th percentile sealed size, then largest size,
/// then queue and type names. Never opens an envelope: no keyring needed.
pub async fn payload_report(
    broker: &dyn Broker,
    policy: &PayloadPolicy,
) -> Result<Vec<PayloadStats>> {
    // (queue, kind) → (sealed sizes, payload sizes)
    let mut groups: BTreeMap<(String, String), (Vec<u64>, Vec<u64>)> = BTreeMap::new();
    let mut after = None;
    loop {
        let page = broker
            .list(&ListQuery {
                after,
                limit: PAGE,
                ..ListQuery::default()
            })
            .await?;
        for r in &page {
            let sealed = r.envelope.len();
            let payload = match parse_header(&r.envelope) {
                Ok(h) => sealed.saturating_sub(h.encoded_len() + TAG_LEN),
                // Unparseable (tampered) envelopes count with their full size.
                Err(_) => sealed,
            };
            let (s, p) = groups.entry((r.queue.clone(), r.kind.clone())).or_default();
            s.push(sealed as u64);
            p.push(payload as u64);
        }
        match page.last() {
            Some(last) if page.len() == PAGE => after = Some(last.id),
            _ => break,
        }
    }
    let mut out: Vec<PayloadStats> = groups
        .into_iter()
        .map(|((queue, kind), (mut sealed, payload))| {
            sealed.sort_unstable();
            let budget = policy.max_bytes_for(&queue) as u64;
            let budget_mode = match policy.size_mode_for(&queue) {
                PolicyMode::Warn => "warn",
                _ => "reject",
            };
            let payload_max = payload.iter().copied().max().unwrap_or(0);
            PayloadStats {
                count: sealed.len() as u64,
                sealed_p50: percentile(&sealed, 50.0),
                sealed_p99: percentile(&sealed, 99.0),
                sealed_max: sealed.last().copied().unwrap_or(0),
                payload_max,
                over_budget: payload.iter().filter(|&&p| p > budget).count() as u64,
                budget_used_percent: if budget == 0 {
                    u64::from(payload_max > 0) * 100
                } else {
                    (payload_max * 100).div_ceil(budget)
                },
                budget,
                budget_mode,
                queue,
                kind,
            }
        })
        .collect();
    out.sort_by(|a, b| {
        b.sealed_p99
            .cmp(&a.sealed_p99)
            .then(b.sealed_max.cmp(&a.sealed_max))
            .then_with(|| a.queue.cmp(&b.queue))
            .then_with(|| a.kind.cmp(&b.kind))
    });
    Ok(out)
}

/// Nearest-rank percentile of sorted values (0 when empty).
fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::percentile;

    #[test]
    fn nearest_rank() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 50.0), 50);
        assert_eq!(percentile(&v, 99.0), 99);
        assert_eq!(percentile(&[7], 99.0), 7);
        assert_eq!(percentile(&[], 50.0), 0);
    }
}
