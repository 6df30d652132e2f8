//! Versioned, forward-only schema migrations, checked at every start.
//!
//! The version lives in `sealq.schema_version` (one row per applied
//! migration). At start the broker reads it: the current version starts
//! at once; an older schema is brought up to date in one transaction under
//! an advisory lock (so two processes starting together migrate once); a
//! schema newer than this build is refused with an error naming both
//! versions (never downgrade a store in use).
//!
//! Each migration is one SQL file under `src/migrations/`, applied whole.
//! A migration is never edited once released; changes come as new files.

use sealq::{BrokerError, BrokerErrorKind};
use tokio_postgres::Client;

use crate::error::map;

/// One migration: its version, a short name, and its SQL.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Migration {
    /// Applied in ascending order; the schema's version after it.
    pub(crate) version: i32,
    /// What it adds (for `sealq.schema_version` and logs).
    pub(crate) name: &'static str,
    /// The SQL, run as one batch inside the migration transaction.
    pub(crate) sql: &'static str,
}

/// Every migration, in order.
pub(crate) const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "tasks",
        sql: include_str!("migrations/0001_tasks.sql"),
    },
    Migration {
        version: 2,
        name: "stores",
        sql: include_str!("migrations/0002_stores.sql"),
    },
    Migration {
        version: 3,
        name: "runtime",
        sql: include_str!("migrations/0003_runtime.sql"),
    },
    Migration {
        version: 4,
        name: "operator",
        sql: include_str!("migrations/0004_operator.sql"),
    },
    Migration {
        version: 5,
        name: "hot path",
        sql: include_str!("migrations/0005_hot_path.sql"),
    },
    Migration {
        version: 6,
        name: "ack by key",
        sql: include_str!("migrations/0006_ack_by_key.sql"),
    },
    Migration {
        version: 7,
        name: "claim without a flush wait",
        sql: include_str!("migrations/0007_claim_without_flush_wait.sql"),
    },
    Migration {
        version: 8,
        name: "enqueue without speculative insertion",
        sql: include_str!("migrations/0008_enqueue_plain_insert.sql"),
    },
    Migration {
        version: 9,
        name: "claim and ack by key",
        sql: include_str!("migrations/0009_claim_and_ack_by_key.sql"),
    },
    Migration {
        version: 10,
        name: "sample waiting tasks",
        sql: include_str!("migrations/0010_sample_waiting.sql"),
    },
    Migration {
        version: 11,
        name: "queue depths",
        sql: include_str!("migrations/0011_queue_depths.sql"),
    },
    Migration {
        version: 12,
        name: "plans by key",
        sql: include_str!("migrations/0012_plans_by_key.sql"),
    },
    Migration {
        version: 13,
        name: "bounded waiting depths",
        sql: include_str!("migrations/0013_bounded_waiting_depths.sql"),
    },
    Migration {
        version: 14,
        name: "replay memory at removal",
        sql: include_str!("migrations/0014_replay_memory_at_removal.sql"),
    },
    Migration {
        version: 15,
        name: "cheaper enqueue",
        sql: include_str!("migrations/0015_cheaper_enqueue.sql"),
    },
];

/// The schema version this build writes and expects.
pub const SCHEMA_VERSION: i32 = MIGRATIONS[MIGRATIONS.len() - 1].version;

/// Key of the advisory lock that serialises migrations ("sealqmig").
const MIGRATION_LOCK: i64 = 0x7365_616c_716d_6967;

/// The schema version stored in the database (0: none).
pub(crate) async fn stored_version(client: &Client, target: &str) -> Result<i32, BrokerError> {
    let row = client
        .query_one(
            "SELECT to_regclass('sealq.schema_version') IS NOT NULL, \
             to_regprocedure('sealq.schema_version_number()') IS NOT NULL",
            &[],
        )
        .await
        .map_err(|e| map(target, "reading the schema version", e))?;
    if !row.get::<_, bool>(0) {
        return Ok(0);
    }
    // From version 2 on, through the function every sealq role may call
    // (the runtime roles have no privilege on the table).
    let sql = if row.get::<_, bool>(1) {
        "SELECT sealq.schema_version_number()"
    } else {
        "SELECT coalesce(max(version), 0) FROM sealq.schema_version"
    };
    let row = client
        .query_one(sql, &[])
        .await
        .map_err(|e| map(target, "reading the schema version", e))?;
    Ok(row.get(0))
}

fn too_new(target: &str, found: i32) -> BrokerError {
    BrokerError::new(
        BrokerErrorKind::Config,
        format!(
            "the sealq schema in {target} is version {found}, newer than version \
             {SCHEMA_VERSION} that this sealq understands; upgrade sealq (never downgrade a \
             store in use)"
        ),
    )
}

/// Check the schema version, applying missing migrations when `migrate`
/// is set (else an older schema is refused, naming both versions).
/// Returns the version found before migrating.
pub(crate) async fn check_and_migrate(
    client: &mut Client,
    target: &str,
    migrate: bool,
) -> Result<i32, BrokerError> {
    let found = stored_version(client, target).await?;
    if found == SCHEMA_VERSION {
        return Ok(found);
    }
    if found > SCHEMA_VERSION {
        return Err(too_new(target, found));
    }
    if !migrate {
        return Err(BrokerError::new(
            BrokerErrorKind::Config,
            format!(
                "the sealq schema in {target} is version {found}, but this sealq needs version \
                 {SCHEMA_VERSION}; connect once with migrations enabled (the default) as the \
                 role that owns the schema"
            ),
        ));
    }
    let err = |e| map(target, "migrating the schema", e);
    let tx = client.transaction().await.map_err(err)?;
    tx.batch_execute(&format!(
        "SELECT pg_advisory_xact_lock({MIGRATION_LOCK}); \
         CREATE SCHEMA IF NOT EXISTS sealq; \
         CREATE TABLE IF NOT EXISTS sealq.schema_version ( \
             version    integer PRIMARY KEY, \
             name       text NOT NULL, \
             applied_at timestamptz NOT NULL DEFAULT now())"
    ))
    .await
    .map_err(err)?;
    // Read again under the lock: another process may have migrated meanwhile.
    let current: i32 = tx
        .query_one(
            "SELECT coalesce(max(version), 0) FROM sealq.schema_version",
            &[],
        )
        .await
        .map_err(err)?
        .get(0);
    if current > SCHEMA_VERSION {
        return Err(too_new(target, current));
    }
    for m in MIGRATIONS.iter().filter(|m| m.version > current) {
        tx.batch_execute(m.sql).await.map_err(|e| {
            map(
                target,
                &format!("applying schema migration {} ({})", m.version, m.name),
                e,
            )
        })?;
        tx.execute(
            "INSERT INTO sealq.schema_version (version, name) VALUES ($1, $2)",
            &[&m.version, &m.name],
        )
        .await
        .map_err(err)?;
        tracing::info!(
            version = m.version,
            name = m.name,
            "sealq: applied a Postgres schema migration"
        );
    }
    // New functions are executable by PUBLIC until revoked: revoke inside the
    // migration's transaction, so none is ever callable by everyone (the
    // roles get theirs from `sealq postgres install --apply-roles`).
    tx.batch_execute("REVOKE ALL ON ALL FUNCTIONS IN SCHEMA sealq FROM PUBLIC")
        .await
        .map_err(err)?;
    tx.commit().await.map_err(err)?;
    Ok(found)
}
