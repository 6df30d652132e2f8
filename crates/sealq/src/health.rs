//! Liveness and readiness: what a process supervisor (Kubernetes probes, a
//! load balancer, systemd) asks a worker.
//!
//! - **Liveness** ([`Health::liveness`], `GET /livez`): the process runs and
//!   its tokio runtime is not stalled. A ticker task on the runtime notes
//!   the time every second; when it has not run for [`Health::stall_after`]
//!   (10 s by default), something blocks the runtime's threads and the
//!   process should be restarted. A stopped broker never fails liveness:
//!   restarting the worker would not bring the broker back.
//! - **Readiness** ([`Health::readiness`], `GET /readyz`, alias
//!   `/healthz`): the worker can do its work. Three checks, each named in
//!   the answer: `broker` (reachable: [`Broker::stats`] answers), `schema`
//!   (the stored schema or Redis functions library is the version this
//!   build needs: [`Broker::check_version`]) and `keyring` (the keyring
//!   fits the check values the broker recorded, and holds the key of every
//!   waiting task sampled from the worker's queues: see
//!   [`crate::keyring_check`]). Each check has [`Health::check_timeout`]
//!   (5 s); answers are reused for a second, so probes cannot load the
//!   broker.
//!
//! Answers are JSON, `{"status":"ok"|"fail","checks":[{"name","ok","detail"}]}`,
//! with status 200 or 503. Details name key ids, queues and the broker's
//! secret-free description, never a key, a URL password or a payload.
//!
//! ```no_run
//! # async fn f(broker: std::sync::Arc<dyn sealq::Broker>) -> sealq::Result<()> {
//! let keyring = std::sync::Arc::new(sealq::Keyring::from_env()?);
//! let health = sealq::health::Health::new(broker, keyring).queues(["default"]);
//! let server = sealq::health::serve("127.0.0.1:8080".parse().unwrap(), health).await?;
//! println!("probes on http://{}/readyz", server.local_addr());
//! # Ok(()) }
//! ```

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::error::{BrokerErrorKind, Error, Result};
use crate::http::{Endpoint, Responding, Response, Server, serve as serve_http};
use crate::keyring_check::check_keyring;
use crate::keyring_check::stored::{RecordOptions, StoredKeyCheck};
use crate::seal::keyring::Keyring;
use crate::store::broker::Broker;

/// How long readiness answers are reused.
const CACHE_FOR: Duration = Duration::from_secs(1);
/// How often the liveness ticker runs.
const TICK: Duration = Duration::from_secs(1);

/// One named check and what it found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// `runtime`, `broker`, `schema` or `keyring`.
    pub name: &'static str,
    /// Whether it passed.
    pub ok: bool,
    /// What it found, for an operator (never a secret).
    pub detail: String,
}

/// The answer to a probe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    /// `ok` when every check passed, else `fail`.
    pub status: &'static str,
    /// Every check, in order.
    pub checks: Vec<Check>,
}

impl Report {
    fn of(checks: Vec<Check>) -> Self {
        let ok = checks.iter().all(|c| c.ok);
        Report {
            status: if ok { "ok" } else { "fail" },
            checks,
        }
    }

    /// Whether every check passed.
    pub fn is_ok(&self) -> bool {
        self.status == "ok"
    }

    /// The checks that failed.
    pub fn failed(&self) -> impl Iterator<Item = &Check> {
        self.checks.iter().filter(|c| !c.ok)
    }

    /// As an HTTP answer: 200 when ok, else 503, with the report as JSON.
    pub fn to_response(&self) -> Response {
        let value = serde_json::to_value(self).unwrap_or_default();
        Response::json(if self.is_ok() { 200 } else { 503 }, &value)
    }
}

/// The liveness ticker's last run, ms since `base`.
struct Ticker {
    base: Instant,
    last_ms: AtomicU64,
}

impl Ticker {
    fn age(&self) -> Duration {
        let now = self.base.elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.last_ms.load(Ordering::Relaxed)))
    }
}

/// The checks of one process. Build it inside a tokio runtime (it starts
/// the liveness ticker there; the ticker ends when the `Health` is dropped).
pub struct Health {
    broker: Arc<dyn Broker>,
    keyring: Arc<Keyring>,
    queues: Option<Vec<String>>,
    accept_new_keyring: bool,
    check_timeout: Duration,
    stall_after: Duration,
    ticker: Option<Arc<Ticker>>,
    cached: Mutex<Option<(Instant, Report)>>,
}

impl std::fmt::Debug for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Health")
            .field("broker", &self.broker.describe())
            .field("queues", &self.queues)
            .finish_non_exhaustive()
    }
}

impl Health {
    /// Checks over `broker`, with the keyring a worker opens tasks with.
    pub fn new(broker: Arc<dyn Broker>, keyring: Arc<Keyring>) -> Self {
        let ticker = tokio::runtime::Handle::try_current().ok().map(|rt| {
            let ticker = Arc::new(Ticker {
                base: Instant::now(),
                last_ms: AtomicU64::new(0),
            });
            rt.spawn(tick(Arc::downgrade(&ticker)));
            ticker
        });
        Health {
            broker,
            keyring,
            queues: None,
            accept_new_keyring: false,
            check_timeout: Duration::from_secs(5),
            stall_after: Duration::from_secs(10),
            ticker,
            cached: Mutex::new(None),
        }
    }

    /// The queues whose waiting tasks the keyring check samples (default:
    /// every queue the broker knows). Give a worker's queues.
    pub fn queues<I, S>(mut self, queues: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.queues = Some(queues.into_iter().map(Into::into).collect());
        self
    }

    /// Do not fail readiness for a keyring that holds none of the keys the
    /// broker recorded, nor for waiting tasks sealed with keys it lacks (a
    /// worker started with `accept_new_keyring`: those tasks are held by
    /// design). A key id recorded with another secret still fails.
    pub fn accept_new_keyring(mut self, accept: bool) -> Self {
        self.accept_new_keyring = accept;
        self
    }

    /// How long each readiness check may take before it fails (default 5 s).
    pub fn check_timeout(mut self, t: Duration) -> Self {
        self.check_timeout = t;
        self
    }

    /// How long the runtime may go without running the liveness ticker
    /// before liveness fails (default 10 s).
    pub fn stall_after(mut self, t: Duration) -> Self {
        self.stall_after = t.max(TICK * 2);
        self
    }

    /// The liveness check: the runtime ran the ticker recently.
    pub fn liveness(&self) -> Report {
        Report::of(vec![runtime_check(
            self.ticker.as_deref(),
            self.stall_after,
        )])
    }

    /// The readiness checks (`broker`, `schema`, `keyring`), reused for a
    /// second.
    pub async fn readiness(&self) -> Report {
        if let Some((at, report)) = &*self.cached.lock().unwrap_or_else(|p| p.into_inner())
            && at.elapsed() < CACHE_FOR
        {
            return report.clone();
        }
        let report = Report::of(self.run_checks().await);
        *self.cached.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((Instant::now(), report.clone()));
        report
    }

    /// The schema check first: its answer also says whether the broker
    /// answers at all (an unavailable broker, or no answer in time), which
    /// a backend whose every call needs the right schema (Redis functions)
    /// could not tell apart otherwise.
    async fn run_checks(&self) -> Vec<Check> {
        let not_checked = |name, why: &str| Check {
            name,
            ok: false,
            detail: format!("not checked: {why}"),
        };
        let version = tokio::time::timeout(self.check_timeout, self.broker.check_version()).await;
        let unreachable = |detail: String| {
            vec![
                Check {
                    name: "broker",
                    ok: false,
                    detail,
                },
                not_checked("schema", "the broker is unreachable"),
                not_checked("keyring", "the broker is unreachable"),
            ]
        };
        match version {
            Err(_) => unreachable(format!(
                "no answer from {} within {} ms",
                self.broker.describe(),
                self.check_timeout.as_millis()
            )),
            Ok(Err(e)) if e.kind == BrokerErrorKind::Unavailable => unreachable(e.to_string()),
            Ok(Err(e)) => vec![
                Check {
                    name: "broker",
                    ok: true,
                    detail: format!("{} answers", self.broker.describe()),
                },
                Check {
                    name: "schema",
                    ok: false,
                    detail: e.to_string(),
                },
                not_checked(
                    "keyring",
                    "the stored schema is not the one this sealq needs",
                ),
            ],
            Ok(Ok(())) => {
                let broker = self
                    .timed("broker", async {
                        let queues = self.broker.stats().await?.len();
                        Ok(format!(
                            "{} answers ({queues} queues)",
                            self.broker.describe()
                        ))
                    })
                    .await;
                let schema = Check {
                    name: "schema",
                    ok: true,
                    detail: "the stored schema is the version this sealq needs".into(),
                };
                let keyring = self.timed("keyring", self.check_keyring()).await;
                vec![broker, schema, keyring]
            }
        }
    }

    async fn check_keyring(&self) -> Result<String> {
        let recorded = self.broker.key_checks().await?;
        let stored = StoredKeyCheck::compare(recorded.as_deref(), &self.keyring);
        let options = RecordOptions {
            accept_new_keyring: self.accept_new_keyring,
            record: false,
        };
        if let Some(refusal) = stored.refusal(&self.broker.describe(), options) {
            return Err(Error::Keyring(refusal));
        }
        let sample = check_keyring(&*self.broker, &self.keyring, self.queues.as_deref()).await?;
        if !sample.missing_key_ids.is_empty() && !self.accept_new_keyring {
            let named: Vec<&str> = sample.missing_key_ids.iter().map(String::as_str).collect();
            let held: Vec<&str> = self.keyring.key_ids().collect();
            return Err(Error::Keyring(format!(
                "waiting tasks name key(s) {} that this keyring lacks (it holds {}): they are \
                 held, not run; deploy the keyring that holds them",
                named.join(", "),
                held.join(", ")
            )));
        }
        Ok(format!(
            "the keyring fits the keys the broker recorded and opens the {} waiting tasks sampled",
            sample.sampled
        ))
    }

    /// Run `check` under the check timeout, as a [`Check`] named `name`.
    async fn timed(
        &self,
        name: &'static str,
        check: impl std::future::Future<Output = Result<String>>,
    ) -> Check {
        match tokio::time::timeout(self.check_timeout, check).await {
            Ok(Ok(detail)) => Check {
                name,
                ok: true,
                detail,
            },
            Ok(Err(e)) => Check {
                name,
                ok: false,
                detail: e.to_string(),
            },
            Err(_) => Check {
                name,
                ok: false,
                detail: format!("no answer within {} ms", self.check_timeout.as_millis()),
            },
        }
    }
}

/// `runtime`: whether `ticker` ran within `stall_after`.
fn runtime_check(ticker: Option<&Ticker>, stall_after: Duration) -> Check {
    let Some(t) = ticker else {
        return Check {
            name: "runtime",
            ok: false,
            detail: "no tokio runtime was running when the checks were built".into(),
        };
    };
    let age = t.age();
    let ok = age < stall_after;
    Check {
        name: "runtime",
        ok,
        detail: if ok {
            format!("the runtime ran {} ms ago", age.as_millis())
        } else {
            format!(
                "the runtime has not run the liveness ticker for {} s (limit {} s): something \
                 blocks its threads",
                age.as_secs(),
                stall_after.as_secs()
            )
        },
    }
}

async fn tick(ticker: Weak<Ticker>) {
    let mut every = tokio::time::interval(TICK);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let Some(t) = ticker.upgrade() else { return };
        t.last_ms
            .store(t.base.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
}

/// `/livez`, `/readyz` and `/healthz` (readiness) over a [`Health`].
#[derive(Debug, Clone)]
pub struct HealthEndpoint {
    health: Arc<Health>,
}

impl HealthEndpoint {
    /// Serve `health`'s checks.
    pub fn new(health: Health) -> Self {
        HealthEndpoint {
            health: Arc::new(health),
        }
    }
}

impl Endpoint for HealthEndpoint {
    fn respond<'a>(&'a self, path: &'a str) -> Responding<'a> {
        Box::pin(async move {
            match path {
                "/livez" => Some(self.health.liveness().to_response()),
                "/readyz" | "/healthz" => Some(self.health.readiness().await.to_response()),
                _ => None,
            }
        })
    }
}

/// Serve `health` on `addr` (`/livez`, `/readyz`, `/healthz`); port 0 picks
/// a free port ([`Server::local_addr`]).
pub async fn serve(addr: std::net::SocketAddr, health: Health) -> Result<Server> {
    serve_http(addr, vec![Arc::new(HealthEndpoint::new(health))])
        .await
        .map_err(|e| Error::Config(format!("cannot serve health checks on {addr}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_fails_when_any_check_fails_and_answers_503() {
        let ok = Check {
            name: "broker",
            ok: true,
            detail: "fine".into(),
        };
        let bad = Check {
            name: "keyring",
            ok: false,
            detail: "wrong".into(),
        };
        let good = Report::of(vec![ok.clone()]);
        assert!(good.is_ok());
        assert_eq!(good.to_response().status, 200);
        let failing = Report::of(vec![ok, bad]);
        assert!(!failing.is_ok());
        let r = failing.to_response();
        assert_eq!(r.status, 503);
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(v["status"], "fail");
        assert_eq!(v["checks"][1]["name"], "keyring");
        assert_eq!(
            failing.failed().map(|c| c.name).collect::<Vec<_>>(),
            ["keyring"]
        );
    }

    #[test]
    fn liveness_fails_while_the_runtime_is_blocked_and_recovers() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let ticker = Arc::new(Ticker {
            base: Instant::now(),
            last_ms: AtomicU64::new(0),
        });
        rt.spawn(tick(Arc::downgrade(&ticker)));
        let stall_after = Duration::from_secs(2);
        let healthy = || {
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if runtime_check(Some(&ticker), stall_after).ok {
                    return true;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            false
        };
        assert!(healthy(), "a running runtime is live");
        // Block the runtime's only worker thread (a handler calling blocking
        // code, say) for longer than `stall_after`.
        rt.spawn(async { std::thread::sleep(Duration::from_millis(3_500)) });
        std::thread::sleep(Duration::from_millis(3_000));
        let stalled = runtime_check(Some(&ticker), stall_after);
        assert!(!stalled.ok, "{stalled:?}");
        assert!(stalled.detail.contains("blocks its threads"), "{stalled:?}");
        assert!(healthy(), "live again once the runtime runs");
        assert!(!runtime_check(None, stall_after).ok, "no runtime, not live");
    }
}
