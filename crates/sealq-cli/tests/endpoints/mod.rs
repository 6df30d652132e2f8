//! Test support for `sealq worker --metrics-addr/--health-addr`: start the
//! real binary, read the addresses it prints, GET its endpoints over TCP,
//! and read values out of the Prometheus text it serves.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A worker started by a test, with the URLs it said it serves.
pub(crate) struct ServingWorker {
    pub(crate) child: Child,
    /// `host:port` of `/metrics`.
    pub(crate) metrics: String,
    /// `host:port` of `/livez` and `/readyz`.
    pub(crate) health: String,
    /// Stderr lines read so far (the rest is drained in the background).
    pub(crate) stderr: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl ServingWorker {
    /// Spawn `cmd` (a `sealq worker ... --metrics-addr 127.0.0.1:0
    /// --health-addr 127.0.0.1:0`) and wait for it to print both addresses.
    pub(crate) fn spawn(mut cmd: Command) -> Self {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn sealq worker");
        let stderr = child.stderr.take().unwrap();
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let keep = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line.clone());
                keep.lock().unwrap().push(line);
            }
        });
        let (mut metrics, mut health) = (None, None);
        let deadline = Instant::now() + Duration::from_secs(60);
        while metrics.is_none() || health.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = match rx.recv_timeout(left) {
                Ok(l) => l,
                Err(_) => {
                    let _ = child.kill();
                    panic!(
                        "the worker never said where it serves; stderr:\n{}",
                        lines.lock().unwrap().join("\n")
                    );
                }
            };
            if let Some(rest) = line.strip_prefix("sealq worker: serving ") {
                for url in rest.split(' ') {
                    let hostport = url
                        .strip_prefix("http://")
                        .and_then(|u| u.split_once('/'))
                        .map(|(h, _)| h.to_owned())
                        .unwrap_or_else(|| panic!("a URL: {url}"));
                    if url.ends_with("/metrics") {
                        metrics = Some(hostport);
                    } else if url.ends_with("/livez") {
                        health = Some(hostport);
                    }
                }
            }
        }
        ServingWorker {
            child,
            metrics: metrics.unwrap(),
            health: health.unwrap(),
            stderr: lines,
        }
    }

    /// The scrape text of `/metrics`.
    pub(crate) fn scrape(&self) -> String {
        let (status, body) = get(&self.metrics, "/metrics");
        assert_eq!(status, 200, "{body}");
        body
    }

    /// Status and JSON body of a health path.
    pub(crate) fn probe(&self, path: &str) -> (u16, serde_json::Value) {
        let (status, body) = get(&self.health, path);
        let v = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"));
        (status, v)
    }

    /// SIGTERM, then wait; returns the exit code.
    pub(crate) fn stop(mut self) -> Option<i32> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Everything printed on stderr so far.
    pub(crate) fn stderr_text(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }
}

impl Drop for ServingWorker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// GET `path` from `hostport`: status and body.
pub(crate) fn get(hostport: &str, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(hostport).unwrap_or_else(|e| panic!("connect {hostport}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: {hostport}\r\n\r\n").unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("a status line: {head}"));
    (status, body.to_owned())
}

/// The sum of every sample of metric `name` whose labels include all of
/// `labels` (`None` when there is none).
pub(crate) fn value(scrape: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut found = None;
    for line in scrape.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, v)) = line.rsplit_once(' ') else {
            continue;
        };
        let (n, set) = match series.split_once('{') {
            Some((n, rest)) => (n, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        if n != name {
            continue;
        }
        let has = |k: &str, v: &str| {
            set.split("\",")
                .map(|p| p.trim_end_matches('"'))
                .any(|p| p == format!("{k}=\"{v}"))
        };
        if labels.iter().all(|(k, v)| has(k, v)) {
            *found.get_or_insert(0.0) += v.parse::<f64>().unwrap_or(0.0);
        }
    }
    found
}

/// Poll `check` every 100 ms for up to `secs` seconds.
pub(crate) fn eventually(secs: u64, mut check: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < end {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

/// The failing checks' names in a health answer.
pub(crate) fn failing(v: &serde_json::Value) -> Vec<String> {
    v["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .filter(|c| c["ok"] == false)
        .map(|c| c["name"].as_str().unwrap().to_owned())
        .collect()
}
