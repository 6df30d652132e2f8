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
//!
//! A wake-up is never lost between a dequeue and the wait after it: a
//! worker that found nothing starts waiting only after its dequeue
//! returned, and the notification of a task committed while that dequeue
//! ran (too late for its snapshot) may arrive before the wait. So each
//! wake-up also leaves a flag on its queue ([`Wake::note`]); a dequeue
//! clears the flags of the queues it asks for as it starts
//! ([`Wake::dequeuing`]: it sees every task committed before), and a wait
//! returns at once while one of its queues is flagged. Flags are kept only
//! for queues this process dequeues from, so notifications for other
//! queues (any role can NOTIFY any payload) cost no memory.

use std::collections::HashSet;
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
    /// Wake-ups not yet seen by a dequeue, per queue.
    flags: Arc<Mutex<Flags>>,
    /// The listener task, once started; dropping the sender stops it.
    listener: Mutex<Option<watch::Sender<()>>>,
}

/// Which queues had a wake-up since a dequeue last asked for them.
#[derive(Default)]
struct Flags {
    /// The queues this process dequeues from: the only ones flagged.
    interest: HashSet<Arc<str>>,
    /// Queues woken since their last dequeue started.
    woken: HashSet<Arc<str>>,
}

impl Flags {
    /// Flag `queue` (every queue of interest for `""`, which says that
    /// notifications may have been missed), then tell the waiters.
    fn note(flags: &Mutex<Flags>, tx: &broadcast::Sender<Arc<str>>, queue: Arc<str>) {
        {
            let mut f = flags.lock().unwrap_or_else(|p| p.into_inner());
            let f = &mut *f;
            if queue.is_empty() {
                f.woken.extend(f.interest.iter().cloned());
            } else if let Some(q) = f.interest.get(&queue) {
                f.woken.insert(q.clone());
            }
        }
        // After the flag: a waiter that subscribed and then found no flag
        // receives this.
        let _ = tx.send(queue);
    }
}

impl Wake {
    pub(crate) fn new() -> Self {
        Self {
            tx: broadcast::channel(1024).0,
            flags: Arc::new(Mutex::new(Flags::default())),
            listener: Mutex::new(None),
        }
    }

    /// Work became ready in `queue`, made by this process.
    pub(crate) fn local(&self, queue: &str) {
        Flags::note(&self.flags, &self.tx, Arc::from(queue));
    }

    /// A dequeue of `queues` is about to start: it will see every task
    /// committed so far, so their flags are cleared (and these queues are
    /// flagged from now on).
    pub(crate) fn dequeuing(&self, queues: &[String]) {
        let mut f = self.flags.lock().unwrap_or_else(|p| p.into_inner());
        for q in queues {
            if !f.woken.is_empty() {
                f.woken.remove(q.as_str());
            }
            if !f.interest.contains(q.as_str()) {
                f.interest.insert(Arc::from(q.as_str()));
            }
        }
    }

    /// Whether one of `queues` was woken since its last dequeue started.
    fn flagged(&self, queues: &[String]) -> bool {
        let f = self.flags.lock().unwrap_or_else(|p| p.into_inner());
        !f.woken.is_empty() && queues.iter().any(|q| f.woken.contains(q.as_str()))
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
        let flags = self.flags.clone();
        let target = target.to_owned();
        tokio::spawn(async move {
            let mut backoff = Duration::from_millis(100);
            let mut again = false;
            loop {
                let mut stop = stop_rx.clone();
                let run = async {
                    match tls.clone() {
                        Some(t) => listen(&config, t, &flags, &tx, again).await,
                        None => listen(&config, tokio_postgres::NoTls, &flags, &tx, again).await,
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
                Flags::note(&flags, &tx, Arc::from(""));
            }
        });
    }

    /// Wait until one of `queues` gets work, or `timeout`; at once if one
    /// was woken since its last dequeue started.
    pub(crate) async fn wait(&self, queues: &[String], timeout: Duration) {
        // Subscribe before looking at the flags: a wake-up after the look
        // is then received.
        let mut rx = self.tx.subscribe();
        if self.flagged(queues) {
            return;
        }
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
    flags: &Mutex<Flags>,
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
                    Flags::note(flags, tx, Arc::from(""));
                }
            }
            m = messages.next() => match m {
                Some(Ok(AsyncMessage::Notification(n))) => {
                    Flags::note(flags, tx, Arc::from(n.payload()));
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e),
                None => return Ok(()),
            }
        }
    }
}
