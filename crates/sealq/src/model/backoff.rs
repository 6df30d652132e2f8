//! Retry backoff policy: how long to wait before attempt `n + 1`.

use serde::{Deserialize, Serialize};

/// How the delay before a retry grows with the attempt number.
///
/// The policy travels with the task (it is part of [`crate::TaskMeta`]), so a
/// producer decides it and every worker applies the same one.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Backoff {
    /// `base * 2^(attempt-1)`, capped at `max`, with up to `jitter` (0.0..=1.0)
    /// of the delay randomised away ("equal jitter" when 0.5).
    Exponential {
        /// Delay before the first retry, in milliseconds.
        base_ms: u64,
        /// Upper bound for any delay, in milliseconds.
        max_ms: u64,
        /// Fraction of the delay that is randomised, 0.0 to 1.0.
        jitter: f64,
    },
    /// The same delay before every retry.
    Fixed {
        /// Delay in milliseconds.
        delay_ms: u64,
    },
}

impl Default for Backoff {
    /// Exponential from 1 s up to 1 h, half of each delay jittered.
    fn default() -> Self {
        Backoff::Exponential {
            base_ms: 1_000,
            max_ms: 3_600_000,
            jitter: 0.5,
        }
    }
}

impl Backoff {
    /// Delay in milliseconds before the retry that follows failed attempt
    /// `attempt` (1-based), with `random` a uniform sample in `[0, 1)`.
    ///
    /// Always within `[(1 - jitter) * d, d]` where `d` is the un-jittered delay,
    /// and never above `max_ms`.
    pub fn delay_ms(&self, attempt: u32, random: f64) -> u64 {
        match *self {
            Backoff::Fixed { delay_ms } => delay_ms,
            Backoff::Exponential {
                base_ms,
                max_ms,
                jitter,
            } => {
                let exp = attempt.saturating_sub(1).min(62);
                let raw = base_ms.saturating_mul(1u64 << exp).min(max_ms);
                let jitter = jitter.clamp(0.0, 1.0);
                let random = random.clamp(0.0, 1.0);
                let cut = (raw as f64 * jitter * random) as u64;
                raw - cut.min(raw)
            }
        }
    }

    /// Delay for `attempt` with a fresh random sample.
    pub fn next_delay_ms(&self, attempt: u32) -> u64 {
        self.delay_ms(attempt, rand::random::<f64>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn exponential_doubles_until_cap() {
        let b = Backoff::Exponential {
            base_ms: 100,
            max_ms: 1_000,
            jitter: 0.0,
        };
        assert_eq!(b.delay_ms(1, 0.9), 100);
        assert_eq!(b.delay_ms(2, 0.9), 200);
        assert_eq!(b.delay_ms(4, 0.9), 800);
        assert_eq!(b.delay_ms(5, 0.9), 1_000);
        assert_eq!(b.delay_ms(400, 0.9), 1_000);
    }

    proptest! {
        #[test]
        fn delay_is_bounded_and_monotone_without_jitter(
            base in 1u64..10_000, max in 1u64..10_000_000, a in 1u32..200, jitter in 0.0f64..=1.0, r in 0.0f64..1.0
        ) {
            let b = Backoff::Exponential { base_ms: base, max_ms: max, jitter };
            let d = b.delay_ms(a, r);
            let raw = Backoff::Exponential { base_ms: base, max_ms: max, jitter: 0.0 }.delay_ms(a, 0.0);
            prop_assert!(d <= max);
            prop_assert!(d <= raw);
            prop_assert!(d as f64 >= (raw as f64) * (1.0 - jitter) - 1.0);
            let next = Backoff::Exponential { base_ms: base, max_ms: max, jitter: 0.0 }.delay_ms(a + 1, 0.0);
            prop_assert!(next >= raw);
        }
    }
}
