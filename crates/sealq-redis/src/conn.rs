//! Connections: one multiplexed connection per broker (auto-reconnecting,
//! cloned for every call), plus dedicated connections for blocking pops.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::sentinel::{SentinelClient, SentinelNodeConnectionInfo, SentinelServerType};
use redis::{
    AsyncConnectionConfig, Client, ClientTlsConfig, Cmd, FromRedisValue, Pipeline, RedisResult,
    TlsCertificates,
};
use sealq::BrokerError;
use tokio::sync::{Mutex, RwLock};

use crate::spin_wait::Spin;
use crate::url::{Parsed, Topology};

/// PEM material for TLS (custom CA, client certificate for mTLS).
#[derive(Clone, Default)]
pub struct TlsFiles {
    /// PEM of the CA that signed the server's certificate (instead of the system roots).
    pub ca_pem: Option<Vec<u8>>,
    /// PEM client certificate and private key, for servers that require client certificates.
    pub client_cert_key_pem: Option<(Vec<u8>, Vec<u8>)>,
}

impl std::fmt::Debug for TlsFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsFiles")
            .field("ca", &self.ca_pem.is_some())
            .field("client_cert", &self.client_cert_key_pem.is_some())
            .finish()
    }
}

impl TlsFiles {
    fn is_set(&self) -> bool {
        self.ca_pem.is_some() || self.client_cert_key_pem.is_some()
    }

    fn certificates(&self) -> TlsCertificates {
        TlsCertificates {
            client_tls: self
                .client_cert_key_pem
                .as_ref()
                .map(|(c, k)| ClientTlsConfig {
                    client_cert: c.clone(),
                    client_key: k.clone(),
                }),
            root_cert: self.ca_pem.clone(),
        }
    }
}

/// A broker's way to reach Redis, and how its calls wait for their replies.
pub(crate) struct Conn {
    link: Link,
    spin: Spin,
    /// A call failed for want of a connection, and none has succeeded
    /// since: the next success is a reconnect (`sealq_broker_reconnects_total`).
    lost: AtomicBool,
}

/// How Redis is reached. One value per broker, so variant sizes do not matter.
#[allow(clippy::large_enum_variant)]
enum Link {
    Single {
        mgr: ConnectionManager,
        client: Client,
    },
    Cluster {
        conn: ClusterConnection,
        blocking: ClusterClient,
    },
    Sentinel {
        current: RwLock<(ConnectionManager, Client)>,
        sentinel: Mutex<SentinelClient>,
        cfg: ConnectionManagerConfig,
    },
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self.link {
            Link::Single { .. } => "Single",
            Link::Cluster { .. } => "Cluster",
            Link::Sentinel { .. } => "Sentinel",
        })
    }
}

/// A connection for blocking commands.
pub(crate) enum Blocking {
    Single(MultiplexedConnection),
    Cluster(ClusterConnection),
}

fn client_for(url: &str, tls: &TlsFiles) -> RedisResult<Client> {
    if tls.is_set() {
        Client::build_with_tls(url, tls.certificates())
    } else {
        Client::open(url)
    }
}

fn manager_config(response_timeout: Duration) -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_response_timeout(Some(response_timeout))
        .set_connection_timeout(Some(Duration::from_secs(5)))
        .set_number_of_retries(2)
        .set_max_delay(Duration::from_secs(2))
}

fn redis_err<'a>(target: &'a str, what: &str) -> impl Fn(redis::RedisError) -> BrokerError + 'a {
    let what = what.to_owned();
    move |e| crate::error::map(target, &what, e)
}

impl Conn {
    fn new(link: Link, spin: Duration) -> Conn {
        Conn {
            link,
            spin: Spin::new(spin),
            lost: AtomicBool::new(false),
        }
    }

    /// Connect (fails fast on refused connections, bad credentials, TLS
    /// errors). Calls that run alone spin up to `spin` for their reply
    /// (see [`Spin`]; zero turns it off).
    pub(crate) async fn open(
        parsed: &Parsed,
        tls: &TlsFiles,
        response_timeout: Duration,
        spin: Duration,
    ) -> Result<Conn, BrokerError> {
        let target = parsed.redacted.as_str();
        let err = redis_err(target, "connecting");
        if parsed.tls {
            // rustls needs a process-wide crypto provider; keep one already installed.
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        match &parsed.topology {
            Topology::Standalone(url) => {
                let client = client_for(url, tls).map_err(&err)?;
                let mgr = client
                    .get_connection_manager_with_config(manager_config(response_timeout))
                    .await
                    .map_err(&err)?;
                Ok(Conn::new(Link::Single { mgr, client }, spin))
            }
            Topology::Cluster(nodes) => {
                let build = |timeout: Duration| {
                    let mut b = ClusterClient::builder(nodes.clone())
                        .response_timeout(timeout)
                        .connection_timeout(Duration::from_secs(5))
                        .retries(3);
                    if tls.is_set() {
                        b = b.certs(tls.certificates());
                    }
                    b.build()
                };
                let client = build(response_timeout).map_err(&err)?;
                let conn = client.get_async_connection().await.map_err(&err)?;
                let blocking = build(Duration::from_secs(24 * 3600)).map_err(&err)?;
                Ok(Conn::new(Link::Cluster { conn, blocking }, spin))
            }
            Topology::Sentinel {
                sentinels,
                master,
                db,
            } => {
                let mut info = redis::RedisConnectionInfo::default();
                if let Some(u) = &parsed.username {
                    info = info.set_username(u);
                }
                if let Some(p) = &parsed.password {
                    info = info.set_password(p);
                }
                info = info.set_db(*db);
                let mut node =
                    SentinelNodeConnectionInfo::default().set_redis_connection_info(info);
                if parsed.tls {
                    node = node.set_tls_mode(redis::TlsMode::Secure);
                }
                let mut sentinel = SentinelClient::build(
                    sentinels.clone(),
                    master.clone(),
                    Some(node),
                    SentinelServerType::Master,
                )
                .map_err(&err)?;
                let cfg = manager_config(response_timeout);
                let client = sentinel.async_get_client().await.map_err(&err)?;
                let client = if tls.is_set() {
                    let info = client.get_connection_info().clone();
                    Client::build_with_tls(info, tls.certificates()).map_err(&err)?
                } else {
                    client
                };
                let mgr = client
                    .get_connection_manager_with_config(cfg.clone())
                    .await
                    .map_err(&err)?;
                Ok(Conn::new(
                    Link::Sentinel {
                        current: RwLock::new((mgr, client)),
                        sentinel: Mutex::new(sentinel),
                        cfg,
                    },
                    spin,
                ))
            }
        }
    }

    /// Whether calls may touch keys of several slots (not a cluster).
    pub(crate) fn single_node(&self) -> bool {
        !matches!(self.link, Link::Cluster { .. })
    }

    /// Run one command.
    pub(crate) async fn query<T: FromRedisValue>(&self, cmd: &Cmd) -> RedisResult<T> {
        let r = self.spin.wait(self.query_once(cmd)).await;
        self.note(&r);
        r
    }

    /// Note whether the connection was lost or came back (the connection
    /// manager reconnects by itself; this only counts and logs it).
    fn note<T>(&self, r: &RedisResult<T>) {
        match r {
            Ok(_) => {
                if self.lost.load(Ordering::Relaxed) && self.lost.swap(false, Ordering::Relaxed) {
                    sealq::metrics::broker_reconnected("redis");
                    tracing::info!("sealq: connection to Redis restored");
                }
            }
            Err(e)
                if e.is_io_error()
                    || e.is_connection_dropped()
                    || e.is_connection_refusal()
                    || e.is_timeout() =>
            {
                self.lost.store(true, Ordering::Relaxed);
            }
            Err(_) => {}
        }
    }

    async fn query_once<T: FromRedisValue>(&self, cmd: &Cmd) -> RedisResult<T> {
        match &self.link {
            Link::Single { mgr, .. } => cmd.query_async(&mut mgr.clone()).await,
            Link::Cluster { conn, .. } => cmd.query_async(&mut conn.clone()).await,
            Link::Sentinel { current, .. } => {
                let mut mgr = current.read().await.0.clone();
                let r = cmd.query_async(&mut mgr).await;
                self.after(&r).await;
                r
            }
        }
    }

    /// Every key matching `pattern` (a `SCAN … MATCH` glob), by `SCAN` on
    /// the node, or on each master of a Cluster (found with `CLUSTER
    /// SLOTS`, which every sealq role may run). Keys created or deleted
    /// meanwhile may or may not be seen, as `SCAN` promises.
    pub(crate) async fn scan_keys(&self, pattern: &str) -> RedisResult<Vec<String>> {
        let page = |cursor: u64| {
            let mut c = redis::cmd("SCAN");
            c.arg(cursor)
                .arg("MATCH")
                .arg(pattern)
                .arg("COUNT")
                .arg(1000);
            c
        };
        let mut out = Vec::new();
        match &self.link {
            Link::Cluster { conn, .. } => {
                use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
                let mut conn = conn.clone();
                let slots = conn
                    .route_command(
                        redis::cmd("CLUSTER").arg("SLOTS").clone(),
                        RoutingInfo::SingleNode(SingleNodeRoutingInfo::RandomPrimary),
                    )
                    .await?;
                let mut masters: Vec<(String, u16)> = Vec::new();
                for range in Vec::<redis::Value>::from_redis_value(slots)? {
                    // [start, end, [host, port, id, …], replicas…]
                    let parts = Vec::<redis::Value>::from_redis_value(range)?;
                    let Some(node) = parts.into_iter().nth(2) else {
                        continue;
                    };
                    let node = Vec::<redis::Value>::from_redis_value(node)?;
                    let mut it = node.into_iter();
                    let (Some(host), Some(port)) = (it.next(), it.next()) else {
                        continue;
                    };
                    let addr = (
                        String::from_redis_value(host)?,
                        u16::from_redis_value(port)?,
                    );
                    if !masters.contains(&addr) {
                        masters.push(addr);
                    }
                }
                for (host, port) in masters {
                    let mut cursor = 0u64;
                    loop {
                        let v = conn
                            .route_command(
                                page(cursor),
                                RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
                                    host: host.clone(),
                                    port,
                                }),
                            )
                            .await?;
                        let (next, keys): (u64, Vec<String>) = FromRedisValue::from_redis_value(v)?;
                        out.extend(keys);
                        if next == 0 {
                            break;
                        }
                        cursor = next;
                    }
                }
            }
            _ => {
                let mut cursor = 0u64;
                loop {
                    let (next, keys): (u64, Vec<String>) = self.query(&page(cursor)).await?;
                    out.extend(keys);
                    if next == 0 {
                        break;
                    }
                    cursor = next;
                }
            }
        }
        Ok(out)
    }

    /// Run a pipeline (one round trip on a single node).
    pub(crate) async fn pipe<T: FromRedisValue>(&self, p: &Pipeline) -> RedisResult<T> {
        let r = self.spin.wait(self.pipe_once(p)).await;
        self.note(&r);
        r
    }

    async fn pipe_once<T: FromRedisValue>(&self, p: &Pipeline) -> RedisResult<T> {
        match &self.link {
            Link::Single { mgr, .. } => p.query_async(&mut mgr.clone()).await,
            Link::Cluster { conn, .. } => p.query_async(&mut conn.clone()).await,
            Link::Sentinel { current, .. } => {
                let mut mgr = current.read().await.0.clone();
                let r = p.query_async(&mut mgr).await;
                self.after(&r).await;
                r
            }
        }
    }

    /// Sentinel: after a connection-level failure or READONLY (the master
    /// was demoted), ask the Sentinels for the master again.
    async fn after<T>(&self, r: &RedisResult<T>) {
        let Link::Sentinel {
            current,
            sentinel,
            cfg,
        } = &self.link
        else {
            return;
        };
        let Err(e) = r else { return };
        let failover = e.is_io_error()
            || e.is_connection_dropped()
            || e.is_connection_refusal()
            || e.is_timeout()
            || e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::ReadOnly);
        if !failover {
            return;
        }
        let mut s = sentinel.lock().await;
        match s.async_get_client().await {
            Ok(client) => {
                let same = client.get_connection_info().addr()
                    == current.read().await.1.get_connection_info().addr();
                if same && e.kind() != redis::ErrorKind::Server(redis::ServerErrorKind::ReadOnly) {
                    return; // same master: the manager reconnects by itself
                }
                match client.get_connection_manager_with_config(cfg.clone()).await {
                    Ok(mgr) => {
                        tracing::info!(master = ?client.get_connection_info().addr(), "sealq: Sentinel gave a new Redis master");
                        *current.write().await = (mgr, client);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "sealq: cannot connect to the master Sentinel named")
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "sealq: Sentinels did not name a master"),
        }
    }

    /// A new connection for blocking commands (no response timeout).
    pub(crate) async fn blocking(&self) -> RedisResult<Blocking> {
        let cfg = AsyncConnectionConfig::new()
            .set_response_timeout(None)
            .set_connection_timeout(Some(Duration::from_secs(5)));
        match &self.link {
            Link::Single { client, .. } => Ok(Blocking::Single(
                client
                    .get_multiplexed_async_connection_with_config(&cfg)
                    .await?,
            )),
            Link::Cluster { blocking, .. } => {
                Ok(Blocking::Cluster(blocking.get_async_connection().await?))
            }
            Link::Sentinel { current, .. } => {
                let client = current.read().await.1.clone();
                Ok(Blocking::Single(
                    client
                        .get_multiplexed_async_connection_with_config(&cfg)
                        .await?,
                ))
            }
        }
    }
}

impl Blocking {
    pub(crate) async fn query<T: FromRedisValue>(&mut self, cmd: &Cmd) -> RedisResult<T> {
        match self {
            Blocking::Single(c) => cmd.query_async(c).await,
            Blocking::Cluster(c) => cmd.query_async(c).await,
        }
    }
}
