//! A bounded LRU map with a time to live per entry.
//!
//! Time is `tokio::time::Instant`, so tests drive it with
//! `tokio::time::pause` and `advance`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

struct Entry<T> {
    value: Arc<T>,
    expires_at: Instant,
    /// Position in `order`: larger is more recently used.
    tick: u64,
}

/// Values by id, evicting the least recently used beyond `max_entries` and
/// dropping entries older than `ttl` when they are next looked at.
pub(crate) struct LruTtl<T> {
    ttl: Duration,
    max_entries: usize,
    entries: HashMap<String, Entry<T>>,
    order: BTreeMap<u64, String>,
    next_tick: u64,
}

impl<T> LruTtl<T> {
    pub(crate) fn new(ttl: Duration, max_entries: usize) -> Self {
        LruTtl {
            ttl,
            max_entries: max_entries.max(1),
            entries: HashMap::new(),
            order: BTreeMap::new(),
            next_tick: 0,
        }
    }

    fn tick(&mut self) -> u64 {
        self.next_tick += 1;
        self.next_tick
    }

    /// The live value for `id`, marking it used; an expired one is removed.
    pub(crate) fn get(&mut self, id: &str, now: Instant) -> Option<Arc<T>> {
        let tick = self.tick();
        let entry = self.entries.get_mut(id)?;
        if now >= entry.expires_at {
            let old = entry.tick;
            self.entries.remove(id);
            self.order.remove(&old);
            return None;
        }
        let old = std::mem::replace(&mut entry.tick, tick);
        let value = entry.value.clone();
        if let Some(key) = self.order.remove(&old) {
            self.order.insert(tick, key);
        }
        Some(value)
    }

    /// Store `value` for `id` from `now`, evicting the least recently used
    /// entries beyond the bound.
    pub(crate) fn insert(&mut self, id: &str, value: Arc<T>, now: Instant) {
        let tick = self.tick();
        let expires_at = now + self.ttl;
        if let Some(old) = self.entries.insert(
            id.to_owned(),
            Entry {
                value,
                expires_at,
                tick,
            },
        ) {
            self.order.remove(&old.tick);
        }
        self.order.insert(tick, id.to_owned());
        while self.entries.len() > self.max_entries {
            let Some((_, victim)) = self.order.pop_first() else {
                break;
            };
            self.entries.remove(&victim);
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn ttl_and_lru() {
        let mut c = LruTtl::new(Duration::from_secs(10), 2);
        let t0 = Instant::now();
        c.insert("a", Arc::new(1), t0);
        c.insert("b", Arc::new(2), t0);
        assert_eq!(c.get("a", t0).as_deref(), Some(&1)); // a is now most recent
        c.insert("c", Arc::new(3), t0); // evicts b
        assert!(c.get("b", t0).is_none());
        assert_eq!(c.len(), 2);
        let later = t0 + Duration::from_secs(10);
        assert!(c.get("a", later).is_none());
        assert_eq!(c.len(), 1);
        c.insert("c", Arc::new(4), later); // refresh
        assert_eq!(c.get("c", later).as_deref(), Some(&4));
        assert_eq!(c.order.len(), c.entries.len());
    }
}
