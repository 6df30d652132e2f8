//! Subject data keys at run time: fetched from or created in the
//! [`SubjectKeyStore`], unwrapped with the keyring's KEKs
//! ([`crate::seal::data_key`]), cached briefly and dropped when an erasure
//! bumps the store's epoch.
//!
//! Erasing a subject deletes its tasks and destroys its wrapped key. Copies
//! of the task store made earlier then hold ciphertext nobody can open; see
//! `docs/compliance.md`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::error::{Error, IntegrityError};
use crate::model::id::SubjectTag;
use crate::model::record::TaskRecord;
use crate::seal::data_key::Keks;
use crate::seal::keyring::Keyring;
use crate::seal::opener::{KeyNeeded, key_needed};

// Paths of the items that lived here before the layers were drawn.
pub use crate::model::counts::{ErasureCounts, ErasureReceipt};
pub use crate::seal::data_key::{DataKey, SUBJECT_KEY_ID, WrappedUnder, is_subject_sealed};
pub use crate::store::subject_keys::SubjectKeyStore;

/// The key that opens a stored record's sealed parts (payload, result,
/// error and claim-check blob alike), once fetched: what
/// [`SubjectKeys::key_for_record`] returns.
#[derive(Debug)]
pub enum RecordKey {
    /// A key of the keyring (the envelope header names which).
    Keyring,
    /// The data key of the record's subject.
    Subject(Arc<DataKey>),
    /// The record was sealed with its subject's data key, which was
    /// destroyed: the subject was erased, nothing will open it again.
    Erased,
}

/// Why [`record_key`] found no key.
#[derive(Debug)]
pub(crate) enum RecordKeyError {
    /// The envelope can never open here (it names a subject key but the
    /// record has no subject, or there is no subject key store).
    Integrity(IntegrityError),
    /// The subject's key is wrapped under a KEK this keyring does not hold
    /// (a retired KEK epoch, a removed key: an outdated keyring, or a key
    /// store restored from before `sealq erase --finalize`). Named: hold
    /// the task, never archive it for this.
    UnknownKek(String),
    /// The subject key store failed: try again later.
    Unavailable(Error),
}

/// Fetch the key `record` opens with: the one place that turns
/// [`key_needed`]'s answer into a key (worker, reveal,
/// [`SubjectKeys::key_for_record`]).
pub(crate) async fn record_key(
    keys: Option<&SubjectKeys>,
    record: &TaskRecord,
) -> Result<RecordKey, RecordKeyError> {
    let tag = match key_needed(&record.envelope, record.meta.subject_tag.as_ref()) {
        Ok(KeyNeeded::Keyring) => return Ok(RecordKey::Keyring),
        Ok(KeyNeeded::Subject(tag)) => tag,
        Err(e) => return Err(RecordKeyError::Integrity(e)),
    };
    let Some(keys) = keys else {
        return Err(RecordKeyError::Integrity(IntegrityError::UnknownKey(
            SUBJECT_KEY_ID.to_owned(),
        )));
    };
    match keys.for_open(&tag).await {
        Ok(Some(key)) => Ok(RecordKey::Subject(key)),
        Ok(None) => Ok(RecordKey::Erased),
        Err(Error::Integrity(IntegrityError::UnknownKey(kek))) => {
            Err(RecordKeyError::UnknownKek(kek))
        }
        Err(e) => Err(RecordKeyError::Unavailable(e)),
    }
}

/// What [`SubjectKeys::rewrap_all`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct RewrapReport {
    /// What wraps them now: the keyring's current KEK epoch id, or, for a
    /// keyring without KEK epochs, its primary key id.
    pub to_key: String,
    /// Wrapped keys re-wrapped under it (or, with `dry_run`, that would be).
    pub rewrapped: u64,
    /// Already wrapped under it.
    pub current: u64,
    /// Changed or destroyed (an erasure) between reading and replacing:
    /// left as they are; run again.
    pub changed: u64,
    /// Wrapped keys that could not be unwrapped, by subject tag (hex) with
    /// the reason (a key this keyring lacks, or bytes that do not open).
    pub failed: Vec<(String, String)>,
    /// Wrapped keys left under another key after this run (failed, changed,
    /// or not selected), by the key that wraps them ([`WrappedUnder`]'s
    /// text; `unknown format` for bytes in none).
    pub remaining: std::collections::BTreeMap<String, u64>,
}

/// Data keys for sealing and opening, with a short in-process cache.
///
/// Cached keys are dropped when the store's erasure epoch changes (checked
/// at most once per `epoch_check` interval, and on every [`SubjectKeys::refresh`])
/// or after the cache TTL.
pub struct SubjectKeys {
    store: Arc<dyn SubjectKeyStore>,
    /// The key-encryption keys derived from the keyring.
    keks: Keks,
    cache: Mutex<HashMap<SubjectTag, (Arc<DataKey>, Instant)>>,
    ttl: Duration,
    epoch: AtomicU64,
    epoch_checked: Mutex<Instant>,
    epoch_check: Duration,
}

impl std::fmt::Debug for SubjectKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SubjectKeys")
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

impl SubjectKeys {
    /// Data keys from `store`, wrapped under KEKs derived from `keyring`'s
    /// keys (new ones under its primary key's).
    pub fn new(store: Arc<dyn SubjectKeyStore>, keyring: &Keyring) -> Self {
        SubjectKeys {
            store,
            keks: Keks::from_keyring(keyring),
            cache: Mutex::new(HashMap::new()),
            ttl: Duration::from_secs(30),
            epoch: AtomicU64::new(0),
            epoch_checked: Mutex::new(Instant::now() - Duration::from_secs(3600)),
            epoch_check: Duration::from_secs(1),
        }
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn SubjectKeyStore> {
        &self.store
    }

    /// The key `record`'s sealed parts open with, by the one rule the worker
    /// and the admin actions use ([`crate::seal::opener::key_needed`]): the
    /// keyring, or the record's subject's data key fetched from the store
    /// ([`RecordKey::Erased`] once the subject was erased).
    ///
    /// # Errors
    ///
    /// [`Error::Integrity`] when the envelope can never open (it names the
    /// subject key id but the record has no subject tag); the store's error
    /// when the key cannot be read (try again later).
    ///
    /// ```no_run
    /// # async fn f(keys: &sealq::subject_keys::SubjectKeys, keyring: &sealq::Keyring,
    /// #            record: &sealq::broker::TaskRecord) -> Result<(), sealq::Error> {
    /// use sealq::envelope::{Aad, Purpose};
    /// use sealq::subject_keys::RecordKey;
    ///
    /// let aad = Aad::for_record(record, Purpose::Payload);
    /// let payload = match keys.key_for_record(record).await? {
    ///     RecordKey::Keyring => Some(keyring.open(&aad, &record.envelope)?),
    ///     RecordKey::Subject(key) => Some(key.open(&aad, &record.envelope)?),
    ///     RecordKey::Erased => None,
    /// };
    /// # Ok(()) }
    /// ```
    pub async fn key_for_record(&self, record: &TaskRecord) -> Result<RecordKey, Error> {
        match record_key(Some(self), record).await {
            Ok(key) => Ok(key),
            Err(RecordKeyError::Integrity(e)) => Err(Error::Integrity(e)),
            Err(RecordKeyError::UnknownKek(k)) => {
                Err(Error::Integrity(IntegrityError::UnknownKey(k)))
            }
            Err(RecordKeyError::Unavailable(e)) => Err(e),
        }
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, HashMap<SubjectTag, (Arc<DataKey>, Instant)>> {
        // Plain map of immutable values: usable even after a panic elsewhere.
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn cached(&self, tag: &SubjectTag) -> Option<Arc<DataKey>> {
        let cache = self.cache();
        cache
            .get(tag)
            .filter(|(_, at)| at.elapsed() < self.ttl)
            .map(|(k, _)| k.clone())
    }

    /// A key already fetched, whatever its age (to seal the result of a task
    /// opened with it). Erasure empties the cache, so an erased key is gone.
    pub(crate) fn cached_any_age(&self, tag: &SubjectTag) -> Option<Arc<DataKey>> {
        self.cache().get(tag).map(|(k, _)| k.clone())
    }

    /// Drop cached keys if the store's erasure epoch moved.
    pub async fn refresh(&self) -> Result<(), Error> {
        let epoch = self.store.epoch().await?;
        if self.epoch.swap(epoch, Ordering::SeqCst) != epoch {
            self.cache().clear();
        }
        *self.epoch_checked.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
        Ok(())
    }

    async fn refresh_if_due(&self) -> Result<(), Error> {
        let due = self
            .epoch_checked
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .elapsed()
            >= self.epoch_check;
        if due { self.refresh().await } else { Ok(()) }
    }

    /// The key to seal a new task of `tag` with; created on first use.
    pub async fn for_seal(&self, tag: &SubjectTag) -> Result<Arc<DataKey>, Error> {
        self.refresh_if_due().await?;
        if let Some(k) = self.cached(tag) {
            return Ok(k);
        }
        let stored = match self.store.get(tag).await? {
            Some(w) => w,
            None => {
                let fresh = DataKey::generate()?;
                let wrapped = self.keks.wrap(tag, &fresh)?;
                self.store.put_if_absent(tag, wrapped).await?
            }
        };
        let key = Arc::new(self.keks.unwrap(tag, &stored)?);
        self.cache().insert(*tag, (key.clone(), Instant::now()));
        Ok(key)
    }

    /// The keys to seal new tasks of every subject in `tags`, created where
    /// missing: one store read and at most one store write for the lot.
    pub async fn for_seal_many(
        &self,
        tags: &[SubjectTag],
    ) -> Result<HashMap<SubjectTag, Arc<DataKey>>, Error> {
        self.refresh_if_due().await?;
        let mut out = HashMap::with_capacity(tags.len());
        let mut wanted: Vec<SubjectTag> = Vec::new();
        for tag in tags {
            if out.contains_key(tag) || wanted.contains(tag) {
                continue;
            }
            match self.cached(tag) {
                Some(k) => {
                    out.insert(*tag, k);
                }
                None => wanted.push(*tag),
            }
        }
        if wanted.is_empty() {
            return Ok(out);
        }
        let stored = self.store.get_many(&wanted).await?;
        let mut fresh = Vec::new();
        let mut found = Vec::new();
        for (tag, wrapped) in wanted.into_iter().zip(stored) {
            match wrapped {
                Some(w) => found.push((tag, w)),
                None => {
                    let key = DataKey::generate()?;
                    fresh.push((tag, self.keks.wrap(&tag, &key)?));
                }
            }
        }
        if !fresh.is_empty() {
            let tags: Vec<SubjectTag> = fresh.iter().map(|(t, _)| *t).collect();
            // The store keeps the first key written per subject: use what it returns.
            let kept = self.store.put_many_if_absent(fresh).await?;
            found.extend(tags.into_iter().zip(kept));
        }
        let now = Instant::now();
        let mut cache = self.cache();
        for (tag, wrapped) in found {
            let key = Arc::new(self.keks.unwrap(&tag, &wrapped)?);
            cache.insert(tag, (key.clone(), now));
            out.insert(tag, key);
        }
        Ok(out)
    }

    /// The key to open tasks of `tag`; `None` once the subject was erased.
    pub async fn for_open(&self, tag: &SubjectTag) -> Result<Option<Arc<DataKey>>, Error> {
        self.refresh_if_due().await?;
        if let Some(k) = self.cached(tag) {
            return Ok(Some(k));
        }
        let Some(stored) = self.store.get(tag).await? else {
            return Ok(None);
        };
        let key = Arc::new(self.keks.unwrap(tag, &stored)?);
        self.cache().insert(*tag, (key.clone(), Instant::now()));
        Ok(Some(key))
    }

    /// Destroy `tag`'s key and forget it locally.
    pub async fn destroy(&self, tag: &SubjectTag) -> Result<bool, Error> {
        self.cache().remove(tag);
        Ok(self.store.destroy(tag).await?)
    }

    /// Re-wrap every stored key that is not wrapped under what wraps new
    /// keys (the keyring's current KEK epoch, or without epochs the primary
    /// key's KEK: after `keys rotate` or `erase --finalize`; format-1 keys
    /// too), or with `from`, only those wrapped under key or epoch `from`. Each is a compare-and-swap, so a key
    /// destroyed or replaced meanwhile is left alone. With `dry_run`, count
    /// only. The data keys themselves do not change: nothing sealed with
    /// them needs re-sealing.
    pub async fn rewrap_all(
        &self,
        from: Option<&str>,
        dry_run: bool,
    ) -> Result<RewrapReport, Error> {
        let primary = self.keks.wraps().clone();
        let mut report = RewrapReport {
            to_key: match &primary {
                WrappedUnder::Key(id) | WrappedUnder::Epoch(id) => id.clone(),
                WrappedUnder::TagKey => String::new(),
            },
            ..RewrapReport::default()
        };
        for (tag, wrapped) in self.store.list().await? {
            let under = WrappedUnder::of(&wrapped);
            if under.as_ref() == Some(&primary) {
                report.current += 1;
                continue;
            }
            let label = under
                .as_ref()
                .map_or_else(|| "unknown format".to_owned(), ToString::to_string);
            let selected = match (from, &under) {
                (None, _) => true,
                (Some(f), Some(WrappedUnder::Key(id) | WrappedUnder::Epoch(id))) => f == id,
                (Some(_), _) => false,
            };
            if !selected {
                *report.remaining.entry(label).or_default() += 1;
                continue;
            }
            let key = match self.keks.unwrap(&tag, &wrapped) {
                Ok(k) => k,
                Err(e) => {
                    report.failed.push((tag.to_hex(), e.to_string()));
                    *report.remaining.entry(label).or_default() += 1;
                    continue;
                }
            };
            if dry_run {
                report.rewrapped += 1;
                continue;
            }
            let fresh = self.keks.wrap(&tag, &key)?;
            if self.store.replace(&tag, &wrapped, fresh).await? {
                report.rewrapped += 1;
            } else {
                report.changed += 1;
            }
        }
        Ok(report)
    }

    /// How many stored keys each KEK wraps (malformed ones under `None`).
    pub async fn count_by_wrapping_key(
        &self,
    ) -> Result<std::collections::BTreeMap<Option<WrappedUnder>, u64>, Error> {
        let mut out = std::collections::BTreeMap::new();
        for (_, wrapped) in self.store.list().await? {
            *out.entry(WrappedUnder::of(&wrapped)).or_insert(0) += 1;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_trait::async_trait;

    use crate::seal::envelope::Aad;
    use crate::store::broker::BrokerResult;

    #[derive(Debug, Default)]
    struct Mem {
        keys: Mutex<HashMap<SubjectTag, Vec<u8>>>,
        epoch: AtomicU64,
    }

    #[async_trait]
    impl SubjectKeyStore for Mem {
        async fn get(&self, tag: &SubjectTag) -> BrokerResult<Option<Vec<u8>>> {
            Ok(self.keys.lock().unwrap().get(tag).cloned())
        }
        async fn put_if_absent(&self, tag: &SubjectTag, wrapped: Vec<u8>) -> BrokerResult<Vec<u8>> {
            Ok(self
                .keys
                .lock()
                .unwrap()
                .entry(*tag)
                .or_insert(wrapped)
                .clone())
        }
        async fn destroy(&self, tag: &SubjectTag) -> BrokerResult<bool> {
            self.epoch.fetch_add(1, Ordering::SeqCst);
            Ok(self.keys.lock().unwrap().remove(tag).is_some())
        }
        async fn epoch(&self) -> BrokerResult<u64> {
            Ok(self.epoch.load(Ordering::SeqCst))
        }
        async fn list(&self) -> BrokerResult<Vec<(SubjectTag, Vec<u8>)>> {
            let keys = self.keys.lock().unwrap();
            Ok(keys.iter().map(|(t, w)| (*t, w.clone())).collect())
        }
        async fn replace(&self, tag: &SubjectTag, old: &[u8], new: Vec<u8>) -> BrokerResult<bool> {
            let mut keys = self.keys.lock().unwrap();
            match keys.get_mut(tag) {
                Some(w) if w.as_slice() == old => {
                    *w = new;
                    Ok(true)
                }
                _ => Ok(false),
            }
        }
    }

    #[tokio::test]
    async fn the_kek_rotates_with_the_keyring_and_rewrap_moves_every_key() {
        let mut keyring = Keyring::generate();
        let first = keyring.primary_key_id().to_owned();
        let store = Arc::new(Mem::default());
        let before = SubjectKeys::new(store.clone(), &keyring);
        let (t1, t2, t3) = (
            keyring.subject_tag("a"),
            keyring.subject_tag("b"),
            keyring.subject_tag("c"),
        );
        let (ad1, ad3) = (aad(t1), aad(t3));
        let sealed1 = before
            .for_seal(&t1)
            .await
            .unwrap()
            .seal(&ad1, b"one")
            .unwrap();
        let w1 = store.get(&t1).await.unwrap().unwrap();
        assert_eq!(
            WrappedUnder::of(&w1),
            Some(WrappedUnder::Key(first.clone()))
        );
        // A key stored by an earlier version (format 1) still opens.
        let legacy = DataKey::generate().unwrap();
        let sealed3 = legacy.seal(&ad3, b"three").unwrap();
        store
            .put_if_absent(&t3, crate::seal::data_key::wrap_v1(&keyring, &t3, &legacy))
            .await
            .unwrap();

        let second = keyring.rotate();
        let after = SubjectKeys::new(store.clone(), &keyring);
        after.for_seal(&t2).await.unwrap();
        let w2 = store.get(&t2).await.unwrap().unwrap();
        assert_eq!(
            WrappedUnder::of(&w2),
            Some(WrappedUnder::Key(second.clone()))
        );
        let counts = after.count_by_wrapping_key().await.unwrap();
        assert_eq!(counts[&Some(WrappedUnder::Key(first.clone()))], 1);
        assert_eq!(counts[&Some(WrappedUnder::Key(second.clone()))], 1);
        assert_eq!(counts[&Some(WrappedUnder::TagKey)], 1);

        let dry = after.rewrap_all(None, true).await.unwrap();
        assert_eq!((dry.rewrapped, dry.current, dry.changed), (2, 1, 0));
        assert_eq!(
            store.get(&t1).await.unwrap().unwrap(),
            w1,
            "a dry run changes nothing"
        );
        let only_first = after.rewrap_all(Some("no-such-key"), true).await.unwrap();
        assert_eq!(only_first.rewrapped, 0);
        assert_eq!(only_first.remaining.values().sum::<u64>(), 2);
        let report = after.rewrap_all(None, false).await.unwrap();
        assert_eq!(report.to_key, second);
        assert_eq!(
            (report.rewrapped, report.current, report.changed),
            (2, 1, 0)
        );
        assert!(report.failed.is_empty(), "{:?}", report.failed);
        let counts = after.count_by_wrapping_key().await.unwrap();
        assert_eq!(counts.len(), 1);
        assert_eq!(counts[&Some(WrappedUnder::Key(second.clone()))], 3);

        // The first key can go now: every data key still opens what it sealed.
        keyring.remove_key(&first).unwrap();
        let fresh = SubjectKeys::new(store.clone(), &keyring);
        let k1 = fresh.for_open(&t1).await.unwrap().unwrap();
        assert_eq!(&k1.open(&ad1, &sealed1).unwrap()[..], b"one");
        let k3 = fresh.for_open(&t3).await.unwrap().unwrap();
        assert_eq!(&k3.open(&ad3, &sealed3).unwrap()[..], b"three");
        // Without rewrapping, a removed key's wrapped keys would not open: say so.
        let mut other = Keyring::generate();
        let old = other.primary_key_id().to_owned();
        let s2 = Arc::new(Mem::default());
        SubjectKeys::new(s2.clone(), &other)
            .for_seal(&t1)
            .await
            .unwrap();
        other.rotate();
        other.remove_key(&old).unwrap();
        let err = SubjectKeys::new(s2, &other)
            .for_open(&t1)
            .await
            .unwrap_err();
        assert!(err.to_string().contains(&old), "{err}");
    }

    #[tokio::test]
    async fn rewrap_never_resurrects_or_overwrites_a_key_that_changed() {
        let mut keyring = Keyring::generate();
        let store = Arc::new(Mem::default());
        let t = keyring.subject_tag("a");
        SubjectKeys::new(store.clone(), &keyring)
            .for_seal(&t)
            .await
            .unwrap();
        let old = store.get(&t).await.unwrap().unwrap();
        keyring.rotate();
        let keys = SubjectKeys::new(store.clone(), &keyring);
        // Erased, then a new key for the subject: the old bytes are not it.
        store.destroy(&t).await.unwrap();
        let newer = keys.for_seal(&t).await.unwrap();
        let stored = store.get(&t).await.unwrap().unwrap();
        assert!(!store.replace(&t, &old, b"x".to_vec()).await.unwrap());
        assert_eq!(store.get(&t).await.unwrap().unwrap(), stored);
        // And a destroyed key stays destroyed.
        store.destroy(&t).await.unwrap();
        assert!(!store.replace(&t, &stored, b"x".to_vec()).await.unwrap());
        assert!(store.get(&t).await.unwrap().is_none());
        drop(newer);
    }

    fn aad(tag: SubjectTag) -> Aad<'static> {
        Aad {
            purpose: crate::seal::envelope::Purpose::Payload,
            task_id: crate::model::id::TaskId::new(),
            queue: "q",
            kind: "k",
            producer: "p",
            created_at_ms: 1,
            not_after_ms: None,
            subject_tag: Some(tag),
            policy: crate::model::task::TaskPolicy {
                not_before_ms: None,
                deadline_ms: None,
                timeout_ms: None,
                max_retries: 0,
                backoff: crate::model::backoff::Backoff::Fixed { delay_ms: 0 },
                retention_ms: 0,
            },
        }
    }

    #[tokio::test]
    async fn keys_are_per_subject_shared_and_shredded() {
        let keyring = Keyring::generate();
        let store: Arc<dyn SubjectKeyStore> = Arc::new(Mem::default());
        let a = SubjectKeys::new(store.clone(), &keyring);
        let b = SubjectKeys::new(store.clone(), &keyring);
        let t42 = keyring.subject_tag("user-42");
        let t7 = keyring.subject_tag("user-7");
        let ad = aad(t42);
        let sealed = a.for_seal(&t42).await.unwrap().seal(&ad, b"hello").unwrap();
        assert!(is_subject_sealed(&sealed));
        // Another process opens it with the stored key.
        let opened = b
            .for_open(&t42)
            .await
            .unwrap()
            .unwrap()
            .open(&ad, &sealed)
            .unwrap();
        assert_eq!(&opened[..], b"hello");
        // Another subject's key does not open it.
        let other = a.for_seal(&t7).await.unwrap();
        assert!(other.open(&ad, &sealed).is_err());
        // The keyring's own keys do not open it either.
        assert!(keyring.open(&ad, &sealed).is_err());

        assert!(a.destroy(&t42).await.unwrap());
        b.refresh().await.unwrap();
        assert!(
            b.for_open(&t42).await.unwrap().is_none(),
            "erased key still served"
        );
        // A later enqueue for the subject gets a new key, which cannot open old data.
        let fresh = a.for_seal(&t42).await.unwrap();
        assert!(fresh.open(&ad, &sealed).is_err());
        // Subject 7 is untouched.
        assert!(b.for_open(&t7).await.unwrap().is_some());
    }

    #[tokio::test]
    async fn batch_fetch_creates_one_key_per_subject_and_agrees_with_single_fetch() {
        let keyring = Keyring::generate();
        let store: Arc<dyn SubjectKeyStore> = Arc::new(Mem::default());
        let a = SubjectKeys::new(store.clone(), &keyring);
        let (t1, t2) = (keyring.subject_tag("a"), keyring.subject_tag("b"));
        // An existing key for t2 must be reused, not replaced.
        let k2 = a.for_seal(&t2).await.unwrap();
        let b = SubjectKeys::new(store.clone(), &keyring);
        let keys = b.for_seal_many(&[t1, t2, t1]).await.unwrap();
        assert_eq!(keys.len(), 2);
        let ad = aad(t2);
        let sealed = k2.seal(&ad, b"x").unwrap();
        assert_eq!(&keys[&t2].open(&ad, &sealed).unwrap()[..], b"x");
        let ad1 = aad(t1);
        let sealed1 = keys[&t1].seal(&ad1, b"y").unwrap();
        let fresh = SubjectKeys::new(store, &keyring);
        let k1 = fresh.for_open(&t1).await.unwrap().expect("stored");
        assert_eq!(&k1.open(&ad1, &sealed1).unwrap()[..], b"y");
    }

    /// Finalising erasures (finding 6): after a new KEK epoch, a re-wrap
    /// and the retirement of the older epochs and legacy formats, every
    /// live key still opens what it sealed, while the bytes of a key store
    /// copied before (format 2 and an older epoch alike) name a KEK the
    /// keyring no longer holds: `UnknownKey`, never a data key.
    #[tokio::test]
    async fn finding_6_retired_kek_epochs_open_no_copy_of_the_key_store() {
        let mut keyring = Keyring::generate();
        let store = Arc::new(Mem::default());
        let (ta, tb) = (keyring.subject_tag("a"), keyring.subject_tag("b"));
        let ad = aad(ta);
        let sealed = SubjectKeys::new(store.clone(), &keyring)
            .for_seal(&ta)
            .await
            .unwrap()
            .seal(&ad, b"kept")
            .unwrap();
        let copy_v2 = store.list().await.unwrap();
        let first = keyring.add_kek_epoch();
        let keys = SubjectKeys::new(store.clone(), &keyring);
        keys.for_seal(&tb).await.unwrap();
        assert_eq!(
            WrappedUnder::of(&store.get(&tb).await.unwrap().unwrap()),
            Some(WrappedUnder::Epoch(first.clone()))
        );
        let r = keys.rewrap_all(None, false).await.unwrap();
        assert_eq!(
            (r.to_key.as_str(), r.rewrapped, r.current),
            (first.as_str(), 1, 1)
        );
        assert!(keyring.retire_kek_epochs().unwrap().is_empty());
        let copy_first = store.list().await.unwrap();
        let second = keyring.add_kek_epoch();
        let r = SubjectKeys::new(store.clone(), &keyring)
            .rewrap_all(None, false)
            .await
            .unwrap();
        assert_eq!((r.rewrapped, r.current, r.failed.len()), (2, 0, 0));
        assert_eq!(keyring.retire_kek_epochs().unwrap(), vec![first.clone()]);
        let now = SubjectKeys::new(store.clone(), &keyring);
        let k = now.for_open(&ta).await.unwrap().unwrap();
        assert_eq!(&k.open(&ad, &sealed).unwrap()[..], b"kept");
        // Restore either copy of the key store: nothing opens.
        for (copy, named) in [(copy_v2, "subject-kek-v2"), (copy_first, first.as_str())] {
            let restored = Arc::new(Mem::default());
            for (t, w) in copy {
                restored.put_if_absent(&t, w).await.unwrap();
            }
            let keys = SubjectKeys::new(restored, &keyring);
            match keys.for_open(&ta).await {
                Err(Error::Integrity(IntegrityError::UnknownKey(k))) => {
                    assert!(k.contains(named), "{k}");
                }
                other => panic!("a restored copy opened or failed otherwise: {other:?}"),
            }
        }
        assert_ne!(first, second);
    }

    #[tokio::test]
    async fn a_wrapped_key_is_bound_to_its_subject_and_keyring() {
        let keyring = Keyring::generate();
        let store = Arc::new(Mem::default());
        let keys = SubjectKeys::new(store.clone(), &keyring);
        let t1 = keyring.subject_tag("a");
        let t2 = keyring.subject_tag("b");
        keys.for_seal(&t1).await.unwrap();
        let wrapped = store.get(&t1).await.unwrap().unwrap();
        // Moved to another subject: refused.
        store.keys.lock().unwrap().insert(t2, wrapped.clone());
        let fresh = SubjectKeys::new(store.clone(), &keyring);
        assert!(fresh.for_open(&t2).await.is_err());
        // Another keyring cannot unwrap it.
        let stranger = SubjectKeys::new(store.clone(), &Keyring::generate());
        assert!(stranger.for_open(&t1).await.is_err());
    }
}
