//! The Prometheus exporter (feature `prometheus`): a recorder with sealq's
//! histogram buckets, served on `GET /metrics` by [`crate::http`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::error::{Error, Result};
use crate::http::{Endpoint, Responding, Response, Server, serve};

/// Histogram buckets, seconds: from a millisecond (a handler that does
/// little) to an hour (a task that waited behind a long backlog).
const BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    300.0, 900.0, 3600.0,
];

/// How often histograms and idle series are tidied when nobody scrapes.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// Install a Prometheus recorder as the process' global `metrics` recorder,
/// with sealq's histogram buckets, every metric described
/// ([`super::describe`]) and `sealq_build_info` set. Returns the handle
/// that renders the scrape text. Serve it yourself with [`MetricsEndpoint`],
/// or use [`install_prometheus`].
///
/// Fails when the process already has a global recorder (there can be
/// one only).
pub fn prometheus_recorder() -> Result<PrometheusHandle> {
    let handle = PrometheusBuilder::new()
        .set_buckets(BUCKETS)
        .map_err(|e| Error::Config(format!("prometheus buckets: {e}")))?
        .install_recorder()
        .map_err(|e| {
            Error::Config(format!(
                "cannot install the Prometheus metrics recorder: {e} (a process has one global \
                 metrics recorder; install_prometheus was called twice, or another recorder is set)"
            ))
        })?;
    super::record::forget_handles();
    super::describe();
    ::metrics::gauge!(super::names::BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    Ok(handle)
}

/// `GET /metrics`: the Prometheus text exposition of a recorder.
#[derive(Clone)]
pub struct MetricsEndpoint {
    handle: PrometheusHandle,
}

impl std::fmt::Debug for MetricsEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MetricsEndpoint")
    }
}

impl MetricsEndpoint {
    /// Serve what `handle`'s recorder holds.
    pub fn new(handle: PrometheusHandle) -> Self {
        MetricsEndpoint { handle }
    }

    /// Tidy histograms and idle series every few seconds until the process
    /// ends (the exporter needs it when scrapes are rare). Call once.
    pub fn spawn_upkeep(&self) {
        let handle = self.handle.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(UPKEEP_EVERY);
            loop {
                every.tick().await;
                handle.run_upkeep();
            }
        });
    }
}

impl Endpoint for MetricsEndpoint {
    fn respond<'a>(&'a self, path: &'a str) -> Responding<'a> {
        Box::pin(async move {
            (path == "/metrics").then(|| Response {
                status: 200,
                content_type: "text/plain; version=0.0.4; charset=utf-8",
                body: self.handle.render().into_bytes(),
            })
        })
    }
}

/// A Prometheus recorder served on `GET /metrics` at an address.
#[derive(Debug)]
pub struct MetricsServer {
    server: Server,
    endpoint: MetricsEndpoint,
}

impl MetricsServer {
    /// The address served (the port chosen when asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    /// The endpoint, to serve on another [`crate::http`] server too.
    pub fn endpoint(&self) -> &MetricsEndpoint {
        &self.endpoint
    }

    /// Stop serving (the recorder stays installed).
    pub async fn shutdown(self) {
        self.server.shutdown().await;
    }
}

/// One call for a library user: install the Prometheus recorder
/// ([`prometheus_recorder`]) and serve it on `GET /metrics` at `addr`
/// (port 0 picks a free port: see [`MetricsServer::local_addr`]). Call it
/// inside a tokio runtime, once per process.
pub async fn install_prometheus(addr: SocketAddr) -> Result<MetricsServer> {
    let endpoint = MetricsEndpoint::new(prometheus_recorder()?);
    let server = serve(addr, vec![Arc::new(endpoint.clone())])
        .await
        .map_err(|e| Error::Config(format!("cannot serve metrics on {addr}: {e}")))?;
    endpoint.spawn_upkeep();
    Ok(MetricsServer { server, endpoint })
}
