//! [`PostgresTxClient`]: transactional enqueue through a sealq client. The
//! tasks are sealed by the client (policy, subject keys, claim-check) and
//! stored, with their `enqueued` audit record, inside the application's own
//! transaction: both exist if it commits, neither if it rolls back.
//!
//! The record cannot go through the client's [`sealq::Auditor`]: its chain
//! numbers records in order, and a rolled-back one would leave a gap that
//! `sealq audit verify` reports as a deletion. Each call writes a chain of
//! its own instead ([`sealq::audit::standalone_chain`]: a genesis, the
//! record, a signed checkpoint), under the writer id
//! `<auditor's writer>:tx:<16 hex digits>`, with one statement in the
//! transaction.

use std::sync::Arc;

use sealq::audit::AuditKeys;
use sealq::broker::NewTask;
use sealq::client::{EnqueueCall, settle_enqueue};
use sealq::{Client, EnqueueOptions, Error, RawTask, Result, Task, TaskId};
use tokio_postgres::types::Type;

use crate::PostgresBroker;
use crate::audit_sink::{AppendRows, PostgresAuditSink};

/// Why a transactional chain's genesis names no checkpoint-store head.
const NO_HEAD: &str = "transactional enqueue: this chain commits with the application's \
                       transaction, so it names no checkpoint-store head";

/// A [`sealq::Client`] that enqueues inside the caller's Postgres
/// transactions, with the audit record in the same transaction. Cheap to
/// clone.
///
/// ```no_run
/// # async fn demo(
/// #     broker: sealq_postgres::PostgresBroker,
/// #     client: sealq::Client,
/// #     pg: &mut tokio_postgres::Client,
/// # ) -> Result<(), Box<dyn std::error::Error>> {
/// use sealq::RawTask;
/// let txq = sealq_postgres::PostgresTxClient::new(client, broker)?;
/// let raw = RawTask::from_json("invoice.send", &serde_json::json!({"order": 42}), Default::default())?;
/// let tx = pg.transaction().await?;
/// tx.execute("INSERT INTO orders (id) VALUES (42)", &[]).await?;
/// let id = txq.enqueue_raw_in(&tx, raw).await?; // sealed, stored and audited in tx
/// tx.commit().await?; // the task and its audit record exist from here on
/// # let _ = id; Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct PostgresTxClient {
    client: Client,
    broker: PostgresBroker,
    /// The audit keys and the auditor's writer id, when the client audits.
    audit: Option<(Arc<AuditKeys>, String)>,
}

impl PostgresTxClient {
    /// Transactional enqueue for `client`, whose broker is `broker`.
    ///
    /// When the client audits ([`sealq::ClientBuilder::audit`]), its
    /// auditor must write to the [`PostgresAuditSink`] of `broker`'s
    /// database (`PostgresAuditSink::from_broker`, `--audit postgres`):
    /// the records go in the caller's transaction, where a log kept
    /// elsewhere would not see them, so any other sink is refused
    /// ([`Error::Config`]). A client without an auditor writes no record,
    /// as [`Client::enqueue`] does.
    pub fn new(client: Client, broker: PostgresBroker) -> Result<Self> {
        let ours = sealq::Broker::describe(&broker);
        let its = client.broker().describe();
        if its != ours {
            return Err(Error::Config(format!(
                "transactional enqueue: the client writes to {its}, not to {ours}; build the \
                 client over the same PostgresBroker"
            )));
        }
        let audit = match client.auditor() {
            None => None,
            Some(a) => {
                let sink = a
                    .sink()
                    .postgres_sink()
                    .filter(|s| s.same_database_as(&broker));
                if sink.is_none() {
                    return Err(Error::Config(format!(
                        "transactional enqueue writes its audit records in the caller's \
                         transaction, so the client's audit log must be the Postgres one in \
                         {ours} (PostgresAuditSink::from_broker, or --audit postgres), not {}",
                        a.sink().describe()
                    )));
                }
                Some((a.keys().clone(), a.writer().to_owned()))
            }
        };
        Ok(Self {
            client,
            broker,
            audit,
        })
    }

    /// The client this seals with.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Check, seal and enqueue one typed task in `tx`; returns its id. The
    /// task (and its audit record) exist only if `tx` commits. Errors as
    /// [`Client::enqueue`]; after an error from the database `tx` is
    /// aborted and must be rolled back.
    pub async fn enqueue_in<C, T>(
        &self,
        tx: &C,
        task: &T,
        options: EnqueueOptions,
    ) -> Result<TaskId>
    where
        C: tokio_postgres::GenericClient + Sync,
        T: Task,
    {
        self.enqueue_raw_in(tx, RawTask::typed(task, options)?)
            .await
    }

    /// Check, seal and enqueue one raw task in `tx`; returns its id.
    pub async fn enqueue_raw_in<C>(&self, tx: &C, task: RawTask) -> Result<TaskId>
    where
        C: tokio_postgres::GenericClient + Sync,
    {
        let mut results = self.enqueue_batch_in(tx, vec![task]).await?;
        results.pop().unwrap_or(Err(Error::Shutdown))
    }

    /// Check, seal and enqueue many tasks in `tx` with one enqueue
    /// statement and (when audited) one audit statement. The outer error is
    /// a failure of the database or of sealing (`tx` must then be rolled
    /// back); the inner results are per task, in order, as
    /// [`Client::enqueue_batch`]'s.
    pub async fn enqueue_batch_in<C>(
        &self,
        tx: &C,
        tasks: Vec<RawTask>,
    ) -> Result<Vec<Result<TaskId>>>
    where
        C: tokio_postgres::GenericClient + Sync,
    {
        let mut out: Vec<Result<TaskId>> = Vec::with_capacity(tasks.len());
        let mut sealed: Vec<NewTask> = Vec::with_capacity(tasks.len());
        let mut slots = Vec::with_capacity(tasks.len());
        for r in self.client.seal_batch(tasks).await? {
            match r {
                Ok(t) => {
                    slots.push(out.len());
                    out.push(Ok(t.id));
                    sealed.push(t);
                }
                Err(e) => out.push(Err(e)),
            }
        }
        if sealed.is_empty() {
            return Ok(out);
        }
        // Counted, refused and audited as `Client::enqueue_batch` does:
        // one function for both (`sealq::client::settle_enqueue`).
        let call = EnqueueCall::new(&sealed, &slots, self.audit.is_some());
        let results = self.broker.enqueue_in(tx, sealed).await?;
        let accepted = settle_enqueue(
            call,
            results,
            &mut out,
            self.client.producer(),
            self.client.auditor(),
        );
        if let Some((keys, writer)) = &self.audit
            && let Some(event) = sealq::audit::enqueued_event(self.client.producer(), accepted)
        {
            let writer = format!("{writer}:tx:{:016x}", rand::random::<u64>());
            let chain = sealq::audit::standalone_chain(keys, &writer, vec![event], NO_HEAD)?;
            write_chain(&self.broker, tx, &chain).await?;
        }
        Ok(out)
    }
}

/// Store a whole chain (its records and its checkpoint) in `tx`, with one
/// statement.
async fn write_chain<C>(
    broker: &PostgresBroker,
    tx: &C,
    chain: &sealq::audit::StandaloneChain,
) -> Result<()>
where
    C: tokio_postgres::GenericClient + Sync,
{
    let rows = AppendRows::of(&chain.records);
    let seq = i64::try_from(chain.checkpoint.seq).unwrap_or(i64::MAX);
    let line = sealq::audit::checkpoint_line(&chain.checkpoint);
    let [a, b, c, d, e] = rows.params();
    tx.query_typed(
        "SELECT sealq.audit_append($1, $2, $3, $4, $5), \
                sealq.audit_append_checkpoint($6, $7, $8)",
        &[
            a,
            b,
            c,
            d,
            e,
            (&chain.checkpoint.writer, Type::TEXT),
            (&seq, Type::INT8),
            (&line, Type::TEXT),
        ],
    )
    .await
    .map_err(|e| {
        Error::Broker(crate::error::map(
            &broker.inner.target,
            "writing the audit record of a transactional enqueue",
            e,
        ))
    })?;
    Ok(())
}

/// Whether a sink is this crate's Postgres sink.
trait AsPostgresSink {
    fn postgres_sink(&self) -> Option<&PostgresAuditSink>;
}

impl AsPostgresSink for Arc<dyn sealq::AuditSink> {
    fn postgres_sink(&self) -> Option<&PostgresAuditSink> {
        self.as_any()?.downcast_ref::<PostgresAuditSink>()
    }
}
