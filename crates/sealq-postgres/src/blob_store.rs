//! [`PostgresBlobStore`]: claim-check blobs (see [`sealq::blob`]) in the
//! table `sealq.blobs`, one row per blob keyed by task id and digest,
//! holding sealed bytes only (stored uncompressed: ciphertext does not
//! compress). Reached only through `SECURITY DEFINER` functions
//! (`sealq.blob_put`, `_get`, `_delete_tasks`, `_list_tasks`; see
//! `docs/postgres-roles.md`).

use async_trait::async_trait;
use sealq::blob::{BlobKey, BlobStore};
use sealq::broker::BrokerResult;
use sealq::{BrokerError, BrokerErrorKind, TaskId};
use tokio_postgres::types::{ToSql, Type};

use crate::PostgresBroker;
use crate::store_conn::StoreConn;

/// Sealed claim-check blobs in `sealq.blobs`. Cheap to clone.
#[derive(Clone)]
pub struct PostgresBlobStore {
    conn: StoreConn,
}

impl std::fmt::Debug for PostgresBlobStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresBlobStore")
            .field("target", &self.conn.target)
            .finish()
    }
}

impl PostgresBlobStore {
    /// The blob store in `broker`'s database, on its pool.
    pub fn from_broker(broker: &PostgresBroker) -> Self {
        Self {
            conn: StoreConn::of_broker(broker),
        }
    }

    /// The blob store at `url`, on a pool of its own; creates or upgrades the
    /// schema there if needed (as the broker does at connect).
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), sealq::BrokerError> {
    /// use sealq::blob::BlobStore;
    /// let blobs = sealq_postgres::PostgresBlobStore::connect(
    ///     "postgres://billing_worker@db.internal/app?sslmode=verify-full",
    /// )
    /// .await?;
    /// println!("{}", blobs.describe());
    /// # Ok(()) }
    /// ```
    pub async fn connect(url: &str) -> BrokerResult<Self> {
        Ok(Self {
            conn: StoreConn::connect(url, true).await?.0,
        })
    }

    async fn call(
        &self,
        what: &str,
        sql: &str,
        params: &[(&(dyn ToSql + Sync), Type)],
    ) -> BrokerResult<Vec<tokio_postgres::Row>> {
        let client = self.conn.client(what).await?;
        client
            .query_typed(sql, params)
            .await
            .map_err(|e| self.conn.err(what, e))
    }
}

#[async_trait]
impl BlobStore for PostgresBlobStore {
    async fn put(&self, key: &BlobKey, sealed: Vec<u8>) -> BrokerResult<()> {
        let digest = &key.digest[..];
        let now = sealq::clock::wall_clock_ms();
        self.call(
            "storing a blob",
            "SELECT sealq.blob_put($1, $2, $3, $4)",
            &[
                (&key.task.0, Type::UUID),
                (&digest, Type::BYTEA),
                (&sealed, Type::BYTEA),
                (&now, Type::INT8),
            ],
        )
        .await
        .map(drop)
    }

    async fn get(&self, key: &BlobKey) -> BrokerResult<Option<Vec<u8>>> {
        let digest = &key.digest[..];
        let rows = self
            .call(
                "reading a blob",
                "SELECT sealq.blob_get($1, $2)",
                &[(&key.task.0, Type::UUID), (&digest, Type::BYTEA)],
            )
            .await?;
        Ok(rows.into_iter().next().and_then(|r| r.get(0)))
    }

    async fn delete_tasks(&self, ids: &[TaskId]) -> BrokerResult<u64> {
        if ids.is_empty() {
            return Ok(0);
        }
        let ids: Vec<uuid::Uuid> = ids.iter().map(|t| t.0).collect();
        let rows = self
            .call(
                "deleting blobs",
                "SELECT sealq.blob_delete_tasks($1)",
                &[(&ids, Type::UUID_ARRAY)],
            )
            .await?;
        Ok(rows
            .first()
            .map(|r| r.get::<_, i64>(0).max(0) as u64)
            .unwrap_or(0))
    }

    async fn list_tasks(&self, after: Option<TaskId>, limit: usize) -> BrokerResult<Vec<TaskId>> {
        let after = after.map(|t| t.0);
        let limit = i32::try_from(limit.max(1)).map_err(|_| {
            BrokerError::new(
                BrokerErrorKind::Config,
                format!("listing blobs: a page of {limit} ids is too large"),
            )
        })?;
        let rows = self
            .call(
                "listing blobs",
                "SELECT sealq.blob_list_tasks($1, $2)",
                &[(&after, Type::UUID), (&limit, Type::INT4)],
            )
            .await?;
        Ok(rows
            .into_iter()
            .map(|r| TaskId(r.get::<_, uuid::Uuid>(0)))
            .collect())
    }

    fn describe(&self) -> String {
        format!("table sealq.blobs in {}", self.conn.target)
    }
}
