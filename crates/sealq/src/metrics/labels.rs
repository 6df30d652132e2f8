//! Label values with a bounded number of distinct values.
//!
//! A queue name or a task type becomes a label value, and each distinct
//! value is one more time series in every metric it labels. Both come from
//! code and configuration, not from task data, but a producer can still
//! make up new types at will; past [`MAX_DISTINCT`] distinct values of one
//! label, later new values are reported as [`OTHER`] (and a warning says so
//! once), so a runaway producer cannot blow up the metrics store.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

/// Distinct values kept per label (queues, task types).
pub const MAX_DISTINCT: usize = 200;
/// The value reported for values past [`MAX_DISTINCT`].
pub const OTHER: &str = "other";

/// The values one label has had, up to a cap.
pub(crate) struct Bounded {
    label: &'static str,
    cap: usize,
    seen: RwLock<BTreeSet<Arc<str>>>,
    warned: AtomicBool,
}

impl Bounded {
    pub(crate) const fn new(label: &'static str, cap: usize) -> Self {
        Bounded {
            label,
            cap,
            seen: RwLock::new(BTreeSet::new()),
            warned: AtomicBool::new(false),
        }
    }

    /// `value` as a label value: itself while fewer than the cap have been
    /// seen (or it was seen before), else [`OTHER`].
    pub(crate) fn get(&self, value: &str) -> Arc<str> {
        // The sets hold plain values; a poisoned lock is still consistent.
        if let Some(v) = self
            .seen
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(value)
        {
            return v.clone();
        }
        let mut seen = self.seen.write().unwrap_or_else(|p| p.into_inner());
        if let Some(v) = seen.get(value) {
            return v.clone();
        }
        if seen.len() >= self.cap {
            if !self.warned.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    label = self.label,
                    cap = self.cap,
                    "more distinct values of this metrics label than the cap; reporting the rest as `other`"
                );
            }
            return Arc::from(OTHER);
        }
        let v: Arc<str> = Arc::from(value);
        seen.insert(v.clone());
        v
    }
}

/// Queue names as label values.
pub(crate) static QUEUES: Bounded = Bounded::new("queue", MAX_DISTINCT);
/// Task types as label values.
pub(crate) static TASK_TYPES: Bounded = Bounded::new("task_type", MAX_DISTINCT);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_past_the_cap_are_reported_as_other() {
        let b = Bounded::new("t", 2);
        assert_eq!(&*b.get("a"), "a");
        assert_eq!(&*b.get("b"), "b");
        assert_eq!(&*b.get("c"), OTHER, "the third distinct value");
        assert_eq!(&*b.get("a"), "a", "values seen before stay themselves");
        assert_eq!(&*b.get("d"), OTHER);
    }
}
