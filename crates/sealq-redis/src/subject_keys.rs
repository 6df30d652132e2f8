//! [`RedisSubjectKeyStore`]: wrapped per-subject data keys in Redis, under a
//! key prefix of their own, optionally on a Redis of their own.
//!
//! Keys (`K` is the subject key prefix, by default `PREFIX-keys`):
//!
//! - `K:<tag hex>`: string, one wrapped data key (75 bytes plus the wrapping
//!   key id; see `sealq::subject_keys`), written once with `SETNX` (then read
//!   back with `GET`), replaced only by `sealq keys reseal` re-wrapping it
//!   after a key rotation (`FCALL sealq_key_swap`, a compare-and-swap);
//! - `K:epoch`: string counter, the erasure epoch, `INCR`ed by every destroy.
//!
//! Destroying a key is `DEL` then `INCR`. Crypto-shredding only shreds the
//! copies of the task store (RDB, AOF, replicas, `DUMP`s) if the wrapped keys
//! are **not** in those copies too: put the key prefix on a Redis without
//! persistence and outside the backup plan
//! ([`crate::RedisOptions::subject_keys_url`]), see `docs/compliance.md`.

use async_trait::async_trait;
use redis::Value;
use sealq::broker::BrokerResult;
use sealq::subject_keys::SubjectKeyStore;
use sealq::{BrokerError, SubjectTag};
use tokio::sync::OnceCell;

use crate::conn::{Conn, TlsFiles};
use crate::url::Parsed;

/// Wrapped subject keys in Redis. Returned by
/// [`sealq::Broker::subject_key_store`] of a [`crate::RedisBroker`]; its
/// connection is opened on first use.
pub struct RedisSubjectKeyStore {
    parsed: Parsed,
    tls: TlsFiles,
    timeout: std::time::Duration,
    prefix: String,
    conn: OnceCell<Conn>,
}

impl std::fmt::Debug for RedisSubjectKeyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisSubjectKeyStore")
            .field("target", &self.parsed.redacted)
            .field("prefix", &self.prefix)
            .finish()
    }
}

impl RedisSubjectKeyStore {
    /// A store at the Redis `url` under `prefix` (connects on first use).
    /// The URL's TLS parameters apply; its `prefix` parameter does not.
    pub fn new(url: &str, prefix: &str, tls: TlsFiles) -> Result<Self, BrokerError> {
        crate::keys::validate_prefix(prefix)?;
        let parsed = crate::url::parse(url)?;
        Ok(Self::with_parsed(
            parsed,
            prefix.to_owned(),
            tls,
            std::time::Duration::from_secs(30),
        ))
    }

    pub(crate) fn with_parsed(
        parsed: Parsed,
        prefix: String,
        tls: TlsFiles,
        timeout: std::time::Duration,
    ) -> Self {
        RedisSubjectKeyStore {
            parsed,
            tls,
            timeout,
            prefix,
            conn: OnceCell::new(),
        }
    }

    /// The subject key prefix (`K` above).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The Redis the keys live in, without credentials.
    pub fn target(&self) -> &str {
        &self.parsed.redacted
    }

    /// The Redis key holding `tag`'s wrapped key.
    pub fn key_of(&self, tag: &SubjectTag) -> String {
        format!("{}:{}", self.prefix, tag.to_hex())
    }

    fn epoch_key(&self) -> String {
        format!("{}:epoch", self.prefix)
    }

    async fn conn(&self) -> BrokerResult<&Conn> {
        self.conn
            .get_or_try_init(|| {
                Conn::open(
                    &self.parsed,
                    &self.tls,
                    self.timeout,
                    self.parsed.spin_wait(crate::DEFAULT_SPIN_WAIT),
                )
            })
            .await
    }

    async fn query<T: redis::FromRedisValue>(
        &self,
        what: &str,
        cmd: &redis::Cmd,
    ) -> BrokerResult<T> {
        self.conn()
            .await?
            .query(cmd)
            .await
            .map_err(|e| crate::error::map(&self.parsed.redacted, what, e))
    }

    fn corrupt_reply(&self, what: &str, detail: impl std::fmt::Display) -> BrokerError {
        crate::error::corrupt(&self.parsed.redacted, what, detail)
    }
}

#[async_trait]
impl SubjectKeyStore for RedisSubjectKeyStore {
    async fn get(&self, tag: &SubjectTag) -> BrokerResult<Option<Vec<u8>>> {
        let mut c = redis::cmd("GET");
        c.arg(self.key_of(tag));
        self.query("reading a subject key", &c).await
    }

    async fn put_if_absent(&self, tag: &SubjectTag, wrapped: Vec<u8>) -> BrokerResult<Vec<u8>> {
        let what = "storing a subject key";
        let key = self.key_of(tag);
        // `SETNX` then `GET`, pipelined (one round trip), rather than
        // `SET … NX GET`: a producer's ACL grants `SETNX` and `GET` on the
        // key prefix but not `SET`, which could overwrite (and so destroy)
        // an existing key (docs/redis-acl.md). A key destroyed between the
        // two commands (an erasure running at the same time) leaves `GET`
        // nothing: try again, which creates a fresh key.
        for _ in 0..3 {
            let mut p = redis::pipe();
            p.cmd("SETNX").arg(&key).arg(wrapped.as_slice());
            p.cmd("GET").arg(&key);
            let (set, stored): (i64, Value) = self
                .conn()
                .await?
                .pipe(&p)
                .await
                .map_err(|e| crate::error::map(&self.parsed.redacted, what, e))?;
            if set == 1 {
                return Ok(wrapped);
            }
            if let Some(stored) =
                crate::codec::opt_bytes(stored).map_err(|e| self.corrupt_reply(what, e))?
            {
                return Ok(stored);
            }
        }
        Err(self.corrupt_reply(
            what,
            "the key was destroyed three times while being created (erasures running at the same time)",
        ))
    }

    async fn destroy(&self, tag: &SubjectTag) -> BrokerResult<bool> {
        let mut del = redis::cmd("DEL");
        del.arg(self.key_of(tag));
        let n: i64 = self.query("destroying a subject key", &del).await?;
        let mut incr = redis::cmd("INCR");
        incr.arg(self.epoch_key());
        let _: i64 = self.query("bumping the erasure epoch", &incr).await?;
        Ok(n > 0)
    }

    /// `SCAN` of the key prefix (on every master of a Cluster), then `MGET`
    /// in pages of 500 keys.
    async fn list(&self) -> BrokerResult<Vec<(SubjectTag, Vec<u8>)>> {
        let what = "listing subject keys";
        let conn = self.conn().await?;
        // The prefix holds no `{`, `}` or `:`, but may hold glob characters.
        let mut pattern = String::new();
        for ch in self.prefix.chars() {
            if matches!(ch, '*' | '?' | '[' | ']' | '\\') {
                pattern.push('\\');
            }
            pattern.push(ch);
        }
        pattern.push_str(":*");
        let head = self.prefix.len() + 1;
        let found: Vec<(SubjectTag, String)> = conn
            .scan_keys(&pattern)
            .await
            .map_err(|e| crate::error::map(&self.parsed.redacted, what, e))?
            .into_iter()
            .filter_map(|k| {
                let tag = SubjectTag::from_hex(k.get(head..)?)?;
                Some((tag, k))
            })
            .collect();
        let mut out = Vec::with_capacity(found.len());
        for chunk in found.chunks(500) {
            let mut mget = redis::cmd("MGET");
            for (_, k) in chunk {
                mget.arg(k);
            }
            let values: Vec<Option<Vec<u8>>> = conn
                .query(&mget)
                .await
                .map_err(|e| crate::error::map(&self.parsed.redacted, what, e))?;
            // A key destroyed between SCAN and MGET is simply gone.
            out.extend(
                chunk
                    .iter()
                    .zip(values)
                    .filter_map(|((tag, _), v)| Some((*tag, v?))),
            );
        }
        Ok(out)
    }

    /// `FCALL sealq_key_swap` (a compare-and-swap in the functions library,
    /// which must be installed on the Redis holding the keys).
    async fn replace(&self, tag: &SubjectTag, old: &[u8], new: Vec<u8>) -> BrokerResult<bool> {
        let mut c = redis::cmd("FCALL");
        c.arg("sealq_key_swap")
            .arg(1)
            .arg(self.key_of(tag))
            .arg(old)
            .arg(new);
        let n: i64 = self.query("replacing a subject key", &c).await?;
        Ok(n == 1)
    }

    async fn epoch(&self) -> BrokerResult<u64> {
        let what = "reading the erasure epoch";
        let mut c = redis::cmd("GET");
        c.arg(self.epoch_key());
        let v: Option<Vec<u8>> = self.query(what, &c).await?;
        match v {
            None => Ok(0),
            Some(b) => std::str::from_utf8(&b)
                .ok()
                .and_then(|s| s.parse::<u64>().ok())
                .ok_or_else(|| self.corrupt_reply(what, "the epoch is not a number")),
        }
    }
}

/// The store a broker connected with `parsed` and `options` uses.
pub(crate) fn for_broker(
    parsed: &Parsed,
    options: &crate::RedisOptions,
) -> Result<RedisSubjectKeyStore, BrokerError> {
    let prefix = options
        .subject_keys_prefix
        .clone()
        .unwrap_or_else(|| format!("{}-keys", options.prefix));
    crate::keys::validate_prefix(&prefix)?;
    if prefix == options.prefix {
        return Err(BrokerError::new(
            sealq::BrokerErrorKind::Config,
            format!(
                "the subject key prefix `{prefix}` must differ from the task key prefix: \
                 the keys must be kept apart from the tasks they open"
            ),
        ));
    }
    let parsed = match &options.subject_keys_url {
        Some(url) => crate::url::parse(url)?,
        None => parsed.clone(),
    };
    Ok(RedisSubjectKeyStore::with_parsed(
        parsed,
        prefix,
        options.tls.clone(),
        options.response_timeout,
    ))
}
