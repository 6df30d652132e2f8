//! Running statements: cached named prepared statements, or unnamed ones
//! (`query_typed`) for PgBouncer in transaction mode, which cannot keep a
//! named statement between transactions.

use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Error, Row};

/// One parameter.
pub(crate) type Param<'a> = &'a (dyn ToSql + Sync);

/// A statement and the types of its parameters.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Stmt {
    /// The SQL.
    pub(crate) sql: &'static str,
    /// The parameter types, in order.
    pub(crate) types: &'static [Type],
}

/// Where a statement runs: a pooled connection or a transaction on one.
pub(crate) enum Conn<'a, 'b> {
    /// Autocommit.
    Client(&'a deadpool_postgres::ClientWrapper),
    /// Inside a transaction.
    Tx(&'a deadpool_postgres::Transaction<'b>),
}

impl Conn<'_, '_> {
    /// Run `s` with `params`; `unnamed` skips the statement cache.
    pub(crate) async fn query(
        &self,
        unnamed: bool,
        s: &Stmt,
        params: &[Param<'_>],
    ) -> Result<Vec<Row>, Error> {
        debug_assert_eq!(params.len(), s.types.len(), "{}", s.sql);
        if unnamed {
            let typed: Vec<(Param<'_>, Type)> = params
                .iter()
                .zip(s.types)
                .map(|(p, t)| (*p, t.clone()))
                .collect();
            return match self {
                Conn::Client(c) => c.query_typed(s.sql, &typed).await,
                Conn::Tx(t) => t.query_typed(s.sql, &typed).await,
            };
        }
        match self {
            Conn::Client(c) => {
                let st = c.prepare_typed_cached(s.sql, s.types).await?;
                c.query(&st, params).await
            }
            Conn::Tx(t) => {
                let st = t.prepare_typed_cached(s.sql, s.types).await?;
                t.query(&st, params).await
            }
        }
    }

    /// Run `s`, returning how many rows it returned (statements here end
    /// in `RETURNING` when their count matters).
    pub(crate) async fn count(
        &self,
        unnamed: bool,
        s: &Stmt,
        params: &[Param<'_>],
    ) -> Result<u64, Error> {
        Ok(self.query(unnamed, s, params).await?.len() as u64)
    }
}
