//! `sealq worker --metrics-addr ADDR --health-addr ADDR`: the Prometheus
//! endpoint (`GET /metrics`) and the probes (`/livez`, `/readyz`,
//! `/healthz`), served by the library's small HTTP server
//! ([`sealq::http`]). Given the same address, both share one listener.
//! Each bound address is printed to stderr at start (port 0 picks one).

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use sealq::health::{Health, HealthEndpoint};
use sealq::http::{Endpoint, Server};
use sealq::metrics::MetricsEndpoint;

use crate::duration::parse_duration;
use crate::error::{CliError, CliResult, msg};

/// The endpoint flags of `sealq worker`.
#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// Serve Prometheus metrics on `GET /metrics` at ADDR (for example
    /// 0.0.0.0:9464; port 0 picks a free port, printed at start). Names in
    /// docs/metrics.md.
    #[arg(long, value_name = "ADDR", value_parser = parse_listen_addr, env = "SEALQ_METRICS_ADDR")]
    pub(crate) metrics_addr: Option<SocketAddr>,
    /// How often queue depths are sampled into `sealq_queue_depth` (one
    /// broker call each time).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "15s")]
    pub(crate) metrics_interval: Duration,
    /// Serve liveness (`/livez`: the process' runtime is not stalled) and
    /// readiness (`/readyz`, alias `/healthz`: broker reachable, schema or
    /// functions version right, keyring opens the waiting tasks) at ADDR, as
    /// JSON naming each check; 200 or 503. May equal --metrics-addr.
    #[arg(long, value_name = "ADDR", value_parser = parse_listen_addr, env = "SEALQ_HEALTH_ADDR")]
    pub(crate) health_addr: Option<SocketAddr>,
}

/// `127.0.0.1:9464`, `[::]:9464`, or `localhost:9464` (its first address).
pub(crate) fn parse_listen_addr(text: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = text.parse() {
        return Ok(addr);
    }
    let mut addrs = text.to_socket_addrs().map_err(|e| {
        format!("`{text}` is not an address to listen on ({e}); use HOST:PORT, e.g. 127.0.0.1:9464")
    })?;
    addrs
        .next()
        .ok_or_else(|| format!("`{text}` resolves to no address"))
}

/// The servers started; [`Serving::stop`] ends them.
pub(crate) struct Serving {
    servers: Vec<Server>,
}

impl Serving {
    /// Stop every server.
    pub(crate) async fn stop(self) {
        for s in self.servers {
            s.shutdown().await;
        }
    }
}

/// Install the Prometheus recorder, when metrics are asked for. Call
/// before the worker is built, so that everything it does is counted.
pub(crate) fn install_recorder(args: &ServeArgs) -> CliResult<Option<MetricsEndpoint>> {
    let Some(_) = args.metrics_addr else {
        return Ok(None);
    };
    let endpoint = MetricsEndpoint::new(sealq::metrics::prometheus_recorder()?);
    endpoint.spawn_upkeep();
    Ok(Some(endpoint))
}

/// One address to listen on: what it serves, and the paths to print.
type Listener = (SocketAddr, Vec<Arc<dyn Endpoint>>, Vec<&'static str>);

/// Start the servers `args` ask for and say on stderr where they listen.
pub(crate) async fn start(
    args: &ServeArgs,
    metrics: Option<MetricsEndpoint>,
    health: impl FnOnce() -> Health,
) -> CliResult<Serving> {
    let metrics = args.metrics_addr.zip(metrics);
    let health = args
        .health_addr
        .map(|addr| (addr, HealthEndpoint::new(health())));
    let mut servers = Vec::new();
    let mut endpoints: Vec<Listener> = Vec::new();
    if let Some((addr, m)) = metrics {
        endpoints.push((addr, vec![Arc::new(m)], vec!["/metrics"]));
    }
    if let Some((addr, h)) = health {
        let paths = ["/livez", "/readyz", "/healthz"];
        // The same address as the metrics (port 0 aside): one listener.
        match endpoints
            .iter_mut()
            .find(|(a, _, _)| *a == addr && addr.port() != 0)
        {
            Some((_, list, shown)) => {
                list.push(Arc::new(h));
                shown.extend(paths);
            }
            None => endpoints.push((addr, vec![Arc::new(h)], paths.to_vec())),
        }
    }
    for (addr, list, paths) in endpoints {
        let server = sealq::http::serve(addr, list).await.map_err(|e| {
            CliError::usage(msg(format!(
                "cannot listen on {addr} ({e}): pick another address or port"
            )))
        })?;
        let bound = server.local_addr();
        let urls: Vec<String> = paths.iter().map(|p| format!("http://{bound}{p}")).collect();
        eprintln!("sealq worker: serving {}", urls.join(" "));
        servers.push(server);
    }
    Ok(Serving { servers })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addresses_parse_or_say_what_to_write() {
        assert_eq!(
            parse_listen_addr("127.0.0.1:9464").unwrap(),
            "127.0.0.1:9464".parse::<SocketAddr>().unwrap()
        );
        assert!(parse_listen_addr("localhost:0").unwrap().ip().is_loopback());
        let e = parse_listen_addr("nine").unwrap_err();
        assert!(e.contains("HOST:PORT"), "{e}");
    }
}
