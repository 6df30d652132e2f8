//! Waking idle workers: LISTEN/NOTIFY as a hint, polling as the fallback.
//!
//! Writers that make work ready call `pg_notify('sealq_wake', queue)` in
//! their transaction (the payload is the queue name and nothing else; any
//! role can NOTIFY, so a notification is only ever a hint to look). One
//! dedicated connection per broker, opened on the first
//! [`sealq::Broker::wait_for_work`], LISTENs and fans notifications out to
//! the waiters of this process; it reconnects with backoff when it drops.
//! Waiters also wake after the poll interval whatever happens, so a lost
//! notification costs at most one interval. With `poll_only` (PgBouncer in
//! transaction mode) there is no listener: waiters wake on the interval,
//! or at once for work this process made ready itself.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::{broadcast, watch};
use tokio_postgres::AsyncMessage;
use tokio_postgres::tls::MakeTlsConnect;

/// The channel every notification goes to.
pub(crate) const CHANNEL: &str = "sealq_wake";

/// Fan-out of wake-ups to this process's waiters.
pub(crate) struct Wake {
    tx: broadcast::Sender<Arc<str>>,
    /// The listener task, once started; dropping the sender stops it.
    listener: Mutex<Option<watch::Sender<()>>>,
}

impl Wake {
    pub(crate) fn new() -> Self {
        Self {
            tx: broadcast::channel(1024).0,
            listener: Mutex::new(None),
        }
    }

    /// Work became ready in `queue`, made by this process.
    pub(crate) fn local(&self, queue: &str) {
        let _ = self.tx.send(Arc::from(queue));
    }

    /// Start the listener if it is not running.
    pub(crate) fn ensure_listener(
        &self,
        config: &tokio_postgres::Config,
        tls: Option<tokio_postgres_rustls::MakeRustlsConnect>,
        target: &str,
    ) {
        let mut slot = self.listener.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_some() {
            return;
        }
        let (stop_tx, stop_rx) = watch::channel(());
        *slot = Some(stop_tx);
        let config = config.clone();
        let tx = self.tx.clone();
        let target = target.to_owned();
        tokio::spawn(async move {
            let mut backoff = Duration::from_millis(100);
            let mut again = false;
            loop {
                let mut stop = stop_rx.clone();
                let run = async {
                    match tls.clone() {
                        Some(t) => listen(&config, t, &tx, again).await,
                        None => listen(&config, tokio_postgres::NoTls, &tx, again).await,
                    }
                };
                tokio::select! {
                    _ = stop.changed() => return,
                    r = run => {
                        if let Err(e) = r {
                            tracing::debug!(target = %target, error = %e, "sealq: the LISTEN connection failed; polling until it is back");
                        }
                    }
                }
                tokio::select! {
                    _ = stop.changed() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
                again = true;
                // Work may have arrived while no one listened.
                let _ = tx.send(Arc::from(""));
            }
        });
    }

    /// Wait until one of `queues` gets work, or `timeout`.
    pub(crate) async fn wait(&self, queues: &[String], timeout: Duration) {
        let mut rx = self.tx.subscribe();
        let _ = tokio::time::timeout(timeout, async {
            loop {
                match rx.recv().await {
                    Ok(q) if q.is_empty() || queues.iter().any(|w| **w == *q) => return,
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(_)) => return,
                    Err(broadcast::error::RecvError::Closed) => std::future::pending::<()>().await,
                }
            }
        })
        .await;
    }
}

/// Connect, LISTEN, and forward notifications until the connection ends.
async fn listen<T>(
    config: &tokio_postgres::Config,
    tls: T,
    tx: &broadcast::Sender<Arc<str>>,
    again: bool,
) -> Result<(), tokio_postgres::Error>
where
    T: MakeTlsConnect<tokio_postgres::Socket>,
    T::Stream: Send + 'static,
{
    let (client, mut conn) = config.connect(tls).await?;
    let mut messages = futures::stream::poll_fn(move |cx| conn.poll_message(cx));
    let sql = format!("LISTEN {CHANNEL}");
    let listen = client.batch_execute(&sql);
    tokio::pin!(listen);
    // Drive the connection while LISTEN runs, then forward notifications.
    let mut listening = false;
    loop {
        tokio::select! {
            r = &mut listen, if !listening => {
                r?;
                listening = true;
                if again {
                    // Work may have arrived while no one listened.
                    let _ = tx.send(Arc::from(""));
                }
            }
            m = messages.next() => match m {
                Some(Ok(AsyncMessage::Notification(n))) => {
                    let _ = tx.send(Arc::from(n.payload()));
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e),
                None => return Ok(()),
            }
        }
    }
}
