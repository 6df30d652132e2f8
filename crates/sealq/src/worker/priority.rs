//! Queue priorities: which queues a fetch asks for, in which order.

/// How queues are ordered for each fetch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Priority {
    /// Higher weight first, always: a lower queue runs only when every higher one is empty.
    Strict,
    /// Each fetch orders queues by a weighted random draw, so a queue of weight
    /// 6 is asked first about twice as often as one of weight 3 and none starves.
    #[default]
    Weighted,
}

/// The queue order for one fetch. `random` yields uniform samples in `[0, 1)`.
pub(crate) fn fetch_order(
    queues: &[(String, u32)],
    priority: Priority,
    mut random: impl FnMut() -> f64,
) -> Vec<String> {
    let mut pool: Vec<(String, u32)> = queues.to_vec();
    match priority {
        Priority::Strict => {
            pool.sort_by_key(|q| std::cmp::Reverse(q.1));
            pool.into_iter().map(|(q, _)| q).collect()
        }
        Priority::Weighted => {
            let mut out = Vec::with_capacity(pool.len());
            while !pool.is_empty() {
                let total: u64 = pool.iter().map(|(_, w)| u64::from((*w).max(1))).sum();
                let mut pick = (random() * total as f64) as u64;
                let mut idx = pool.len() - 1;
                for (i, (_, w)) in pool.iter().enumerate() {
                    let w = u64::from((*w).max(1));
                    if pick < w {
                        idx = i;
                        break;
                    }
                    pick -= w;
                }
                out.push(pool.remove(idx).0);
            }
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn qs() -> Vec<(String, u32)> {
        vec![
            ("low".into(), 1),
            ("critical".into(), 6),
            ("default".into(), 3),
        ]
    }

    #[test]
    fn strict_orders_by_weight() {
        assert_eq!(
            fetch_order(&qs(), Priority::Strict, || 0.5),
            ["critical", "default", "low"]
        );
    }

    #[test]
    fn weighted_first_choice_follows_weights() {
        let mut state = 12345u64;
        let mut rnd = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 11) as f64 / (1u64 << 53) as f64
        };
        let mut first = std::collections::HashMap::new();
        for _ in 0..10_000 {
            let order = fetch_order(&qs(), Priority::Weighted, &mut rnd);
            assert_eq!(order.len(), 3);
            *first.entry(order[0].clone()).or_insert(0u32) += 1;
        }
        let c = first["critical"] as f64;
        let d = first["default"] as f64;
        let l = first["low"] as f64;
        // Expected shares 6/10, 3/10, 1/10.
        assert!((c / 10_000.0 - 0.6).abs() < 0.03, "critical {c}");
        assert!((d / 10_000.0 - 0.3).abs() < 0.03, "default {d}");
        assert!((l / 10_000.0 - 0.1).abs() < 0.03, "low {l}");
    }
}
