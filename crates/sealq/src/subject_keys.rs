//! Per-subject data keys: erasure by crypto-shredding.
//!
//! A task enqueued with a subject (`EnqueueOptions::subject("user-42")`) is
//! sealed with that subject's own random **data key**, not the keyring's
//! primary key. Its result and error messages are sealed with the same key.
//! Data keys are stored wrapped (XChaCha20-Poly1305) under a key-encryption
//! key derived from the keyring (`derive_subkey("sealq-subject-kek-v1")`), in
//! a [`SubjectKeyStore`] that is **separate from the task store**: the
//! embedded broker keeps it in its own file beside the database.
//!
//! Erasing a subject deletes its tasks and destroys its wrapped key. Copies of
//! the task store made earlier (file copies, backups, replicas, AOF/RDB) then
//! hold ciphertext nobody can open: the key that opened it is gone. This only
//! holds if the key store itself is not copied into long-lived backups; see
//! `docs/compliance.md`.
//!
//! Envelopes sealed with a data key name the reserved key id
//! [`SUBJECT_KEY_ID`]; the subject tag in their associated data says which
//! subject's key opens them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chacha20poly1305::aead::AeadInOut;
use chacha20poly1305::{Key, KeyInit, Tag, XChaCha20Poly1305, XNonce};
use zeroize::Zeroizing;

use crate::broker::BrokerResult;
use crate::envelope::{Aad, parse_header};
use crate::error::{Error, IntegrityError};
use crate::keyring::{Keyring, open_with_cipher, random_nonce, seal_with_cipher};
use crate::task::SubjectTag;

/// The key id in the header of envelopes sealed with a subject's data key.
pub const SUBJECT_KEY_ID: &str = "subject";

/// Label of the key-encryption key derived from the keyring.
const KEK_LABEL: &str = "sealq-subject-kek-v1";
/// Domain of the wrapping's associated data.
const WRAP_DOMAIN: &[u8] = b"sealq-subject-key-v1";
/// Wrapped key: version byte, 24-byte nonce, 32-byte key, 16-byte tag.
const WRAPPED_LEN: usize = 1 + 24 + 32 + 16;

/// One subject's data key. Wiped from memory on drop; never printed.
pub struct DataKey {
    secret: Zeroizing<[u8; 32]>,
    cipher: XChaCha20Poly1305,
}

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DataKey(..)")
    }
}

impl DataKey {
    fn from_secret(secret: Zeroizing<[u8; 32]>) -> Self {
        let cipher = XChaCha20Poly1305::new(<&Key>::from(&*secret));
        DataKey { secret, cipher }
    }

    fn generate() -> Result<Self, Error> {
        let mut secret = Zeroizing::new([0u8; 32]);
        getrandom::fill(secret.as_mut()).map_err(|e| {
            Error::Keyring(format!(
                "the operating system's random number generator failed: {e}"
            ))
        })?;
        Ok(Self::from_secret(secret))
    }

    /// Seal `plaintext` for `aad` with this key (header key id [`SUBJECT_KEY_ID`]).
    pub fn seal(&self, aad: &Aad<'_>, plaintext: &[u8]) -> Result<Vec<u8>, Error> {
        seal_with_cipher(
            &self.cipher,
            SUBJECT_KEY_ID,
            aad,
            plaintext,
            random_nonce()?,
        )
    }

    /// Open an envelope sealed with [`DataKey::seal`].
    pub fn open(
        &self,
        aad: &Aad<'_>,
        envelope: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, IntegrityError> {
        open_with_cipher(&self.cipher, aad, envelope)
    }
}

/// `true` when `envelope`'s header names a subject data key.
pub fn is_subject_sealed(envelope: &[u8]) -> bool {
    parse_header(envelope).is_ok_and(|h| h.key_id == SUBJECT_KEY_ID)
}

/// Where wrapped subject keys live. Keep it apart from the task store and
/// out of long-lived backups: destroying a key must destroy every copy.
#[async_trait]
pub trait SubjectKeyStore: Send + Sync + std::fmt::Debug + 'static {
    /// The wrapped key of `tag`, if any.
    async fn get(&self, tag: &SubjectTag) -> BrokerResult<Option<Vec<u8>>>;
    /// Store `wrapped` unless a key exists already; return the stored key
    /// (so concurrent producers agree on one key per subject).
    async fn put_if_absent(&self, tag: &SubjectTag, wrapped: Vec<u8>) -> BrokerResult<Vec<u8>>;
    /// [`SubjectKeyStore::get`] for many subjects (one round trip where the
    /// backend allows; the default asks one by one).
    async fn get_many(&self, tags: &[SubjectTag]) -> BrokerResult<Vec<Option<Vec<u8>>>> {
        let mut out = Vec::with_capacity(tags.len());
        for tag in tags {
            out.push(self.get(tag).await?);
        }
        Ok(out)
    }
    /// [`SubjectKeyStore::put_if_absent`] for many subjects (one round trip /
    /// one durable write where the backend allows; the default goes one by one).
    async fn put_many_if_absent(
        &self,
        items: Vec<(SubjectTag, Vec<u8>)>,
    ) -> BrokerResult<Vec<Vec<u8>>> {
        let mut out = Vec::with_capacity(items.len());
        for (tag, wrapped) in items {
            out.push(self.put_if_absent(&tag, wrapped).await?);
        }
        Ok(out)
    }
    /// Destroy the key of `tag` and bump the erasure epoch; `true` if a key existed.
    async fn destroy(&self, tag: &SubjectTag) -> BrokerResult<bool>;
    /// The erasure epoch: bumped by every [`SubjectKeyStore::destroy`], so
    /// processes caching keys know to drop them.
    async fn epoch(&self) -> BrokerResult<u64>;
}

/// Data keys for sealing and opening, with a short in-process cache.
///
/// Cached keys are dropped when the store's erasure epoch changes (checked
/// at most once per `epoch_check` interval, and on every [`SubjectKeys::refresh`])
/// or after the cache TTL.
pub struct SubjectKeys {
    store: Arc<dyn SubjectKeyStore>,
    kek: XChaCha20Poly1305,
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
    /// Data keys from `store`, wrapped under a key derived from `keyring`.
    pub fn new(store: Arc<dyn SubjectKeyStore>, keyring: &Keyring) -> Self {
        let kek = keyring.derive_subkey(KEK_LABEL);
        SubjectKeys {
            store,
            kek: XChaCha20Poly1305::new(<&Key>::from(&*kek)),
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
                let wrapped = self.wrap(tag, &fresh)?;
                self.store.put_if_absent(tag, wrapped).await?
            }
        };
        let key = Arc::new(self.unwrap(tag, &stored)?);
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
                    fresh.push((tag, self.wrap(&tag, &key)?));
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
            let key = Arc::new(self.unwrap(&tag, &wrapped)?);
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
        let key = Arc::new(self.unwrap(tag, &stored)?);
        self.cache().insert(*tag, (key.clone(), Instant::now()));
        Ok(Some(key))
    }

    /// Destroy `tag`'s key and forget it locally.
    pub async fn destroy(&self, tag: &SubjectTag) -> Result<bool, Error> {
        self.cache().remove(tag);
        Ok(self.store.destroy(tag).await?)
    }

    fn wrap(&self, tag: &SubjectTag, key: &DataKey) -> Result<Vec<u8>, Error> {
        let nonce = random_nonce()?;
        let mut ad = Vec::with_capacity(WRAP_DOMAIN.len() + 32);
        ad.extend_from_slice(WRAP_DOMAIN);
        ad.extend_from_slice(&tag.0);
        let mut out = Vec::with_capacity(WRAPPED_LEN);
        out.push(1);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(key.secret.as_ref());
        let t = self
            .kek
            .encrypt_inout_detached(<&XNonce>::from(&nonce), &ad, (&mut out[25..]).into())
            .map_err(|_| Error::Keyring("wrapping a subject key failed".into()))?;
        out.extend_from_slice(&t);
        Ok(out)
    }

    fn unwrap(&self, tag: &SubjectTag, wrapped: &[u8]) -> Result<DataKey, Error> {
        let bad = || Error::Integrity(IntegrityError::Tampered);
        if wrapped.len() != WRAPPED_LEN || wrapped[0] != 1 {
            return Err(bad());
        }
        let nonce: [u8; 24] = wrapped[1..25].try_into().map_err(|_| bad())?;
        let mut ad = Vec::with_capacity(WRAP_DOMAIN.len() + 32);
        ad.extend_from_slice(WRAP_DOMAIN);
        ad.extend_from_slice(&tag.0);
        let mut secret = Zeroizing::new([0u8; 32]);
        secret.copy_from_slice(&wrapped[25..57]);
        let t = <&Tag>::try_from(&wrapped[57..]).map_err(|_| bad())?;
        self.kek
            .decrypt_inout_detached(
                <&XNonce>::from(&nonce),
                &ad,
                secret.as_mut_slice().into(),
                t,
            )
            .map_err(|_| bad())?;
        Ok(DataKey::from_secret(secret))
    }
}

/// Counts of one subject's tasks removed by an erasure, by state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ErasureCounts {
    /// Scheduled tasks deleted.
    pub scheduled: u64,
    /// Pending tasks deleted.
    pub pending: u64,
    /// Active tasks: archived with reason `erased`, their envelope wiped, lease revoked.
    pub active: u64,
    /// Tasks waiting to retry, deleted.
    pub retry: u64,
    /// Completed tasks (with their results) deleted.
    pub completed: u64,
    /// Archived tasks deleted.
    pub archived: u64,
}

impl ErasureCounts {
    /// All tasks touched.
    pub fn total(&self) -> u64 {
        self.scheduled + self.pending + self.active + self.retry + self.completed + self.archived
    }
}

/// What an erasure did; names no personal data (the subject appears only
/// as its keyed tag).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ErasureReceipt {
    /// Keyed hash of the subject id (hex).
    pub subject_tag: String,
    /// Tasks removed, by state.
    pub counts: ErasureCounts,
    /// Whether a data key existed and was destroyed.
    pub key_destroyed: bool,
    /// When, Unix ms.
    pub time_ms: i64,
    /// Who asked for it.
    pub operator: String,
}

#[cfg(test)]
mod tests {
    use super::*;

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
    }

    fn aad(tag: SubjectTag) -> Aad<'static> {
        Aad {
            purpose: crate::envelope::Purpose::Payload,
            task_id: crate::TaskId::new(),
            queue: "q",
            kind: "k",
            producer: "p",
            created_at_ms: 1,
            not_after_ms: None,
            subject_tag: Some(tag),
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
