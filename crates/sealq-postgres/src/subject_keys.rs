//! [`PostgresSubjectKeyStore`]: wrapped per-subject data keys in the table
//! `sealq.subject_keys`, reached only through `SECURITY DEFINER` functions
//! (`sealq.subject_key_get`, `_put`, `_destroy`, `_list`, `_replace`,
//! `_epoch`; see `docs/postgres-roles.md` for who may call which).
//!
//! # What destroying a key leaves behind
//!
//! Crypto-shredding works only if no copy of the wrapped key survives. The
//! table is its own (no task row refers to it), so `destroy` deletes the only
//! row. Postgres, though, keeps more than the live rows:
//!
//! - the deleted tuple stays in its heap page (and the index entry in the
//!   primary key) until VACUUM reclaims it. The table is created with
//!   `autovacuum_vacuum_threshold = 0` and `autovacuum_vacuum_scale_factor = 0`,
//!   so autovacuum visits it on its next round (`autovacuum_naptime`, 1 min
//!   by default) after any destroy; even then the bytes may stay on the page
//!   until the space is reused;
//! - the WAL holds the inserted row until its segments are recycled, and WAL
//!   archives, streaming replicas' WAL and base backups keep it as long as
//!   they are kept.
//!
//! So a destroy is final against the live database at once (the key can no
//! longer be read through any sealq function), and final against every other
//! copy once `sealq erase --finalize` has moved every remaining key to a new
//! KEK epoch and dropped the old one: a wrapped key restored from a backup
//! or WAL can then no longer be unwrapped. For a shorter window, open the
//! store on a database of its own ([`PostgresSubjectKeyStore::connect`]),
//! without WAL archiving and outside the backup plan of the task database
//! (see `docs/compliance.md` and `docs/postgres-roles.md`).

use std::collections::HashMap;

use async_trait::async_trait;
use sealq::broker::BrokerResult;
use sealq::subject_keys::SubjectKeyStore;
use sealq::{BrokerError, BrokerErrorKind, SubjectTag};
use tokio_postgres::types::Type;

use crate::PostgresBroker;
use crate::store_conn::StoreConn;

/// Wrapped subject keys in `sealq.subject_keys`. Cheap to clone.
#[derive(Clone)]
pub struct PostgresSubjectKeyStore {
    conn: StoreConn,
}

impl std::fmt::Debug for PostgresSubjectKeyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresSubjectKeyStore")
            .field("target", &self.conn.target)
            .finish()
    }
}

impl PostgresSubjectKeyStore {
    /// The store in `broker`'s database, on its pool.
    pub fn from_broker(broker: &PostgresBroker) -> Self {
        Self {
            conn: StoreConn::of_broker(broker),
        }
    }

    /// The store at `url` (which may name another database than the tasks'),
    /// on a pool of its own; creates or upgrades the schema there if needed
    /// (as the broker does at connect).
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), sealq::BrokerError> {
    /// use sealq::subject_keys::SubjectKeyStore;
    /// let keys = sealq_postgres::PostgresSubjectKeyStore::connect(
    ///     "postgres://billing_api@keys.internal/sealq_keys?sslmode=verify-full",
    /// )
    /// .await?;
    /// let epoch = keys.epoch().await?;
    /// # let _ = epoch; Ok(()) }
    /// ```
    pub async fn connect(url: &str) -> BrokerResult<Self> {
        Ok(Self {
            conn: StoreConn::connect(url, true).await?.0,
        })
    }

    async fn rows(
        &self,
        what: &str,
        sql: &str,
        params: &[(&(dyn tokio_postgres::types::ToSql + Sync), Type)],
    ) -> BrokerResult<Vec<tokio_postgres::Row>> {
        let client = self.conn.client(what).await?;
        client
            .query_typed(sql, params)
            .await
            .map_err(|e| self.conn.err(what, e))
    }

    /// Rows of `(tag, wrapped)` as a map.
    fn by_tag(
        &self,
        what: &str,
        rows: Vec<tokio_postgres::Row>,
    ) -> BrokerResult<HashMap<[u8; 32], Vec<u8>>> {
        rows.into_iter()
            .map(|r| {
                let tag: Vec<u8> = r.get(0);
                let tag = <[u8; 32]>::try_from(tag.as_slice()).map_err(|_| self.corrupt(what))?;
                Ok((tag, r.get::<_, Vec<u8>>(1)))
            })
            .collect()
    }

    fn corrupt(&self, what: &str) -> BrokerError {
        // The table's CHECK keeps tags at 32 bytes; anything else is damage.
        BrokerError::new(
            BrokerErrorKind::Corrupt,
            format!(
                "{what}: a subject tag in {} is not 32 bytes",
                self.conn.target
            ),
        )
    }
}

fn tags_param(tags: &[SubjectTag]) -> Vec<&[u8]> {
    tags.iter().map(|t| &t.0[..]).collect()
}

#[async_trait]
impl SubjectKeyStore for PostgresSubjectKeyStore {
    async fn get(&self, tag: &SubjectTag) -> BrokerResult<Option<Vec<u8>>> {
        Ok(self
            .get_many(std::slice::from_ref(tag))
            .await?
            .pop()
            .flatten())
    }

    async fn put_if_absent(&self, tag: &SubjectTag, wrapped: Vec<u8>) -> BrokerResult<Vec<u8>> {
        let what = "storing a subject key";
        self.put_many_if_absent(vec![(*tag, wrapped)])
            .await?
            .pop()
            .ok_or_else(|| {
                BrokerError::new(
                    BrokerErrorKind::Other,
                    format!("{what}: {} returned no key", self.conn.target),
                )
            })
    }

    async fn get_many(&self, tags: &[SubjectTag]) -> BrokerResult<Vec<Option<Vec<u8>>>> {
        if tags.is_empty() {
            return Ok(Vec::new());
        }
        let what = "reading subject keys";
        let param = tags_param(tags);
        let rows = self
            .rows(
                what,
                "SELECT tag, wrapped FROM sealq.subject_key_get($1)",
                &[(&param, Type::BYTEA_ARRAY)],
            )
            .await?;
        let found = self.by_tag(what, rows)?;
        Ok(tags.iter().map(|t| found.get(&t.0).cloned()).collect())
    }

    async fn put_many_if_absent(
        &self,
        items: Vec<(SubjectTag, Vec<u8>)>,
    ) -> BrokerResult<Vec<Vec<u8>>> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        let what = "storing subject keys";
        let tags: Vec<SubjectTag> = items.iter().map(|(t, _)| *t).collect();
        let param = tags_param(&tags);
        let keys: Vec<&[u8]> = items.iter().map(|(_, k)| k.as_slice()).collect();
        let now = sealq::clock::wall_clock_ms();
        // One statement, so one transaction and one durable commit.
        let rows = self
            .rows(
                what,
                "SELECT tag, wrapped FROM sealq.subject_key_put($1, $2, $3)",
                &[
                    (&param, Type::BYTEA_ARRAY),
                    (&keys, Type::BYTEA_ARRAY),
                    (&now, Type::INT8),
                ],
            )
            .await?;
        let found = self.by_tag(what, rows)?;
        tags.iter()
            .map(|t| {
                found.get(&t.0).cloned().ok_or_else(|| {
                    BrokerError::new(
                        BrokerErrorKind::Other,
                        format!(
                            "{what}: {} stored no key for a subject (destroyed meanwhile?); \
                             retry",
                            self.conn.target
                        ),
                    )
                })
            })
            .collect()
    }

    async fn destroy(&self, tag: &SubjectTag) -> BrokerResult<bool> {
        let what = "destroying a subject key";
        let tag = &tag.0[..];
        let rows = self
            .rows(
                what,
                "SELECT sealq.subject_key_destroy($1)",
                &[(&tag, Type::BYTEA)],
            )
            .await?;
        Ok(rows.first().is_some_and(|r| r.get::<_, bool>(0)))
    }

    async fn list(&self) -> BrokerResult<Vec<(SubjectTag, Vec<u8>)>> {
        let what = "listing subject keys";
        let rows = self
            .rows(
                what,
                "SELECT tag, wrapped FROM sealq.subject_key_list()",
                &[],
            )
            .await?;
        rows.into_iter()
            .map(|r| {
                let tag: Vec<u8> = r.get(0);
                let tag = <[u8; 32]>::try_from(tag.as_slice()).map_err(|_| self.corrupt(what))?;
                Ok((SubjectTag(tag), r.get::<_, Vec<u8>>(1)))
            })
            .collect()
    }

    async fn replace(&self, tag: &SubjectTag, old: &[u8], new: Vec<u8>) -> BrokerResult<bool> {
        let what = "replacing a subject key";
        let tag = &tag.0[..];
        let rows = self
            .rows(
                what,
                "SELECT sealq.subject_key_replace($1, $2, $3)",
                &[
                    (&tag, Type::BYTEA),
                    (&old, Type::BYTEA),
                    (&new, Type::BYTEA),
                ],
            )
            .await?;
        Ok(rows.first().is_some_and(|r| r.get::<_, bool>(0)))
    }

    async fn epoch(&self) -> BrokerResult<u64> {
        let what = "reading the erasure epoch";
        let rows = self
            .rows(what, "SELECT sealq.subject_key_epoch()", &[])
            .await?;
        let epoch: Option<i64> = rows.first().and_then(|r| r.get(0));
        Ok(epoch.unwrap_or(0).max(0) as u64)
    }
}
