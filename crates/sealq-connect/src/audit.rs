//! Where a backend's audit log lives: [`AuditPlace`] and
//! [`Connection::audit_sink`].

use std::path::{Path, PathBuf};
use std::sync::Arc;

use sealq::audit::{AuditSink, JsonLinesSink};
use sealq_postgres::PostgresAuditSink;
use sealq_redis::RedisAuditSink;
use sealq_sqlite::SqliteAuditSink;

use crate::error::ConnectError;
use crate::{Backend, Connection};

/// Where the audit log is kept, relative to the backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AuditPlace {
    /// The backend's own default: a JSON-lines file beside an SQLite
    /// database (`DB.audit.jsonl`), the prefix's streams on Redis, the
    /// tables `sealq.audit_records` and `sealq.audit_checkpoints` on
    /// Postgres.
    #[default]
    Default,
    /// A JSON-lines file beside the SQLite database (on Redis: the streams).
    File,
    /// Tables in the SQLite database.
    Sqlite,
    /// The Redis prefix's audit streams.
    Redis,
    /// The Postgres broker's audit tables (`PostgresAuditSink`).
    Postgres,
}

/// `DB` → `DB.audit.jsonl`: where the default audit log of an SQLite
/// database lives.
pub fn jsonl_path_for(db: &Path) -> PathBuf {
    let mut s = db.as_os_str().to_owned();
    s.push(".audit.jsonl");
    PathBuf::from(s)
}

/// A Postgres broker keeps its audit log in its own tables only.
fn postgres_audit_only() -> ConnectError {
    ConnectError::Usage(
        "a Postgres broker keeps its audit log in its tables (--audit postgres, or the default \
         --audit file); --audit sqlite and --audit redis need that broker"
            .into(),
    )
}

/// A place only a Postgres broker has.
fn needs_postgres() -> ConnectError {
    ConnectError::Usage("--audit postgres needs a Postgres broker (--broker postgres://…)".into())
}

impl Connection {
    /// The audit sink at `place` for writing (tables or streams are created
    /// if needed). A place the backend does not have is a
    /// [`ConnectError::Usage`] that says which it has.
    pub async fn audit_sink(&self, place: AuditPlace) -> Result<Arc<dyn AuditSink>, ConnectError> {
        match (&self.backend, place) {
            (Backend::Sqlite(b), AuditPlace::Default | AuditPlace::File) => {
                Ok(Arc::new(JsonLinesSink::open(jsonl_path_for(b.path()))?))
            }
            (Backend::Sqlite(b), AuditPlace::Sqlite) => {
                Ok(Arc::new(SqliteAuditSink::open(b.path())?))
            }
            (Backend::Sqlite(_), AuditPlace::Redis) => Err(ConnectError::Usage(
                "--audit redis needs a Redis broker (--broker redis://…)".into(),
            )),
            (Backend::Redis(r), AuditPlace::Default | AuditPlace::File | AuditPlace::Redis) => {
                Ok(Arc::new(RedisAuditSink::open(r).await?))
            }
            (Backend::Redis(_), AuditPlace::Sqlite) => Err(ConnectError::Usage(
                "--audit sqlite needs the SQLite broker; a Redis broker keeps its audit log in \
                 Redis streams (--audit redis, the default)"
                    .into(),
            )),
            (Backend::Sqlite(_) | Backend::Redis(_), AuditPlace::Postgres) => Err(needs_postgres()),
            (
                Backend::Postgres(p),
                AuditPlace::Default | AuditPlace::File | AuditPlace::Postgres,
            ) => Ok(Arc::new(PostgresAuditSink::from_broker(p))),
            (Backend::Postgres(_), AuditPlace::Sqlite | AuditPlace::Redis) => {
                Err(postgres_audit_only())
            }
        }
    }

    /// The audit sink at `place` for reading only (verification): creates
    /// nothing on Redis; on SQLite the file log is read where it is.
    pub fn audit_reader(&self, place: AuditPlace) -> Result<Arc<dyn AuditSink>, ConnectError> {
        match (&self.backend, place) {
            (Backend::Sqlite(_), AuditPlace::Postgres) => Err(needs_postgres()),
            (Backend::Sqlite(b), AuditPlace::Default | AuditPlace::File | AuditPlace::Redis) => {
                Ok(Arc::new(JsonLinesSink::at(jsonl_path_for(b.path()))))
            }
            (Backend::Sqlite(b), AuditPlace::Sqlite) => {
                Ok(Arc::new(SqliteAuditSink::open(b.path())?))
            }
            (Backend::Redis(r), _) => Ok(Arc::new(RedisAuditSink::reader(r))),
            (Backend::Postgres(_), AuditPlace::Sqlite | AuditPlace::Redis) => {
                Err(postgres_audit_only())
            }
            (Backend::Postgres(p), _) => Ok(Arc::new(PostgresAuditSink::from_broker(p))),
        }
    }

    /// [`Connection::stores`] with the audit sink at `place` in the bundle.
    pub async fn stores_with_audit(
        &self,
        place: AuditPlace,
    ) -> Result<sealq::Stores, ConnectError> {
        let sink = self.audit_sink(place).await?;
        Ok(self.stores.clone().with_audit(sink))
    }
}
