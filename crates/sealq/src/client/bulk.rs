//! [`Client::enqueue_bulk`]: many tasks in batches, sealed on blocking
//! threads while earlier batches are stored, with up to the broker's
//! `Broker::bulk_in_flight` batches sent and not yet answered.

use std::pin::pin;
use std::sync::{Arc, OnceLock};

use futures::StreamExt as _;
use futures::future::Either;
use futures::stream::FuturesOrdered;

use super::{Client, Prepared, RawTask};
use crate::error::{BrokerError, BrokerErrorKind, Error, Result};
use crate::model::id::TaskId;

/// The fewest tasks a sealing thread is given: a smaller batch is sealed on
/// one thread, where splitting it would cost more than it saves.
const MIN_PER_SEALER: usize = 64;

/// The most threads one batch is sealed on.
const MAX_SEALERS: usize = 4;

impl Client {
    /// Check, seal and enqueue a large number of tasks, sending them in
    /// batches of `batch` tasks while the next batch is being sealed (a
    /// batch of 128 tasks or more on one blocking thread per core, up to
    /// four), so that sealing (this process' CPU) and storing (the broker's)
    /// overlap, and with the next batch sent before the previous one is
    /// answered.
    /// Batches are at most the broker's [`Broker::bulk_batch_limit`] (256 on
    /// Redis, where one call holds the server: smaller calls keep workers
    /// sharing it fed, at the same enqueue rate). Each is sent with
    /// [`Broker::enqueue_bulk_batch`]: one broker call, applied atomically
    /// and durable (as the broker makes an enqueue durable) before it is
    /// answered, stored off this call's task where the broker would
    /// otherwise store it in place (SQLite's writer thread), so that the
    /// task goes on sealing the next batch.
    ///
    /// Unlike [`Client::enqueue_batch`] this is not atomic: each batch is
    /// applied on its own. The results are per task, in order. If a batch
    /// fails (the broker is unavailable, say), its tasks and every later one
    /// not yet sent get the error and are not sent; the batches already
    /// sent behind it (at most [`Broker::bulk_in_flight`] less one: one on
    /// Redis and Postgres, three on SQLite) are reported as they ended, each
    /// stored whole or not at all. Tasks reported `Ok`
    /// are stored; every task reported with a broker error was not stored
    /// and can be sent again, so nothing accepted is lost or unaccounted
    /// for.
    ///
    /// [`Broker::bulk_batch_limit`]: crate::store::broker::Broker::bulk_batch_limit
    /// [`Broker::enqueue_bulk_batch`]: crate::store::broker::Broker::enqueue_bulk_batch
    /// [`Broker::bulk_in_flight`]: crate::store::broker::Broker::bulk_in_flight
    pub async fn enqueue_bulk<I>(&self, tasks: I, batch: usize) -> Vec<Result<TaskId>>
    where
        I: IntoIterator<Item = RawTask>,
        I::IntoIter: Send,
    {
        let batch = self
            .broker()
            .bulk_batch_limit()
            .map_or(batch, |limit| batch.min(limit))
            .max(1);
        // Batches sent and not yet answered: the broker's
        // `bulk_in_flight` (two keep a server busy: while it stores one
        // batch, the next is already on the connection behind it, so it
        // never waits for this process to turn a reply around; on Redis
        // that wait was a tenth to a quarter of a batch's time,
        // docs/benchmarks.md, "Redis enqueue (issue 20 cost)").
        let in_flight = self.broker().bulk_in_flight().max(1);
        let mut rest = tasks.into_iter();
        let mut out: Vec<Result<TaskId>> = Vec::with_capacity(rest.size_hint().0);
        // Sent batches, oldest first: each yields its size and outcome.
        let mut sent = FuturesOrdered::new();
        let mut failure: Option<Error> = None;
        let record = |out: &mut Vec<Result<TaskId>>,
                      failure: &mut Option<Error>,
                      (n, r): (usize, Result<Vec<Result<TaskId>>>)| match r {
            Ok(results) => out.extend(results),
            Err(e) => {
                out.extend((0..n).map(|_| Err(unsent(&e))));
                failure.get_or_insert(e);
            }
        };
        while failure.is_none() {
            let chunk: Vec<RawTask> = rest.by_ref().take(batch).collect();
            let n = chunk.len();
            if n == 0 {
                break;
            }
            // Seal this batch while the sent ones are stored (and their
            // calls driven: a call is sent when first polled).
            let mut prepare = pin!(self.prepare_apart(chunk));
            let prepared = loop {
                if sent.is_empty() {
                    break prepare.as_mut().await;
                }
                match futures::future::select(prepare.as_mut(), sent.next()).await {
                    Either::Left((p, _)) => break p,
                    Either::Right((Some(done), _)) => record(&mut out, &mut failure, done),
                    Either::Right((None, _)) => {}
                }
            };
            let p = match (prepared, &failure) {
                (Ok(p), None) => p,
                // A batch sent before failed meanwhile: this one is not sent.
                (Ok(_), Some(e)) => {
                    out.extend((0..n).map(|_| Err(unsent(e))));
                    break;
                }
                (Err(e), _) => {
                    out.extend((0..n).map(|_| Err(unsent(&e))));
                    failure.get_or_insert(e);
                    break;
                }
            };
            sent.push_back(async move { (n, self.submit(p, true).await) });
            // At most `in_flight` sent: wait for the oldest (this also
            // sends the one just added).
            while sent.len() >= in_flight {
                if let Some(done) = sent.next().await {
                    record(&mut out, &mut failure, done);
                }
            }
        }
        // What was sent is reported as it ended.
        while let Some(done) = sent.next().await {
            record(&mut out, &mut failure, done);
        }
        if let Some(e) = failure {
            out.extend(rest.map(|_| Err(unsent(&e))));
        }
        out
    }
}

impl Client {
    /// As [`Client::prepare`], sealing on blocking threads: a bulk enqueue
    /// seals one batch while the runtime's threads store the previous one.
    /// (Sealing on the runtime thread would hold up the broker connection's
    /// own task, which the scheduler keeps on the same thread.) A large
    /// batch is split over up to one thread per core ([`MAX_SEALERS`] at
    /// most): sealing is this process' largest cost, and one thread leaves
    /// the other cores idle while the broker stores.
    async fn prepare_apart(&self, tasks: Vec<RawTask>) -> Result<Prepared> {
        let data_keys = Arc::new(self.data_keys_for(&tasks).await?);
        let sealers = sealers_for(tasks.len());
        let per = tasks.len().div_ceil(sealers).max(1);
        let mut rest = tasks.into_iter();
        let mut handles = Vec::with_capacity(sealers);
        loop {
            let part: Vec<RawTask> = rest.by_ref().take(per).collect();
            if part.is_empty() {
                break;
            }
            let client = self.clone();
            let keys = Arc::clone(&data_keys);
            handles.push(tokio::task::spawn_blocking(move || {
                client.seal_all(part, &keys)
            }));
        }
        let mut batch = Prepared {
            out: Vec::new(),
            sealed: Vec::new(),
            slots: Vec::new(),
        };
        for handle in handles {
            let part = handle
                .await
                .map_err(|e| Error::Config(format!("sealing thread failed: {e}")))?;
            let at = batch.out.len();
            batch.out.extend(part.out);
            batch.sealed.extend(part.sealed);
            batch.slots.extend(part.slots.into_iter().map(|s| s + at));
        }
        self.offload(batch, &data_keys).await
    }
}

/// How many threads seal a batch of `n` tasks: one per core, each with at
/// least [`MIN_PER_SEALER`] tasks, at most [`MAX_SEALERS`].
fn sealers_for(n: usize) -> usize {
    static CORES: OnceLock<usize> = OnceLock::new();
    let cores = *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |c| c.get()));
    cores.min(MAX_SEALERS).min(n / MIN_PER_SEALER).max(1)
}

/// The error a bulk enqueue reports for a task it did not store, because its
/// batch (or an earlier one) failed with `e`. Says so, and that it may be sent again.
fn unsent(e: &Error) -> Error {
    let kind = match e {
        Error::Broker(b) => b.kind,
        _ => BrokerErrorKind::Other,
    };
    Error::Broker(BrokerError::new(
        kind,
        format!("not stored (bulk enqueue stopped: {e}); it can be sent again"),
    ))
}
