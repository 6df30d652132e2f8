//! Test support for Sentinel: a `redis-sentinel` process this test starts
//! and owns, plus helpers to crash a `redis-server` and to wait on what
//! Redis reports.
//!
//! Like the servers of `support`, the Sentinel runs under a tiny shell
//! wrapper that stops it when its stdin, a pipe from this process, closes:
//! dropping [`Sentinel`] (or this process dying) stops it.
#![allow(dead_code, unreachable_pub)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn on_path(bin: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(bin).is_file()))
        .unwrap_or(false)
}

/// `redis-cli -h 127.0.0.1 -p PORT ARGS…`, stdout as text ("" if it fails).
pub fn cli(port: u16, args: &[&str]) -> String {
    assert!(
        on_path("redis-cli"),
        "redis-cli not found: run `apt-get install -y redis-server` (or bash scripts/test.sh)"
    );
    Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

/// Poll `probe` every 50 ms until it returns `Ok`, for at most `limit`;
/// panics with `what` (and the last `Err`, a description of what it saw)
/// after that.
pub fn wait_for<T>(what: &str, limit: Duration, mut probe: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        match probe() {
            Ok(v) => return v,
            Err(last) => assert!(
                Instant::now() < deadline,
                "{what}: not reached after {limit:?}; last seen: {last}"
            ),
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The value of `field` in an `INFO` reply (`field:value` lines).
pub fn info_field(info: &str, field: &str) -> Option<String> {
    info.lines().find_map(|l| {
        l.trim()
            .strip_prefix(&format!("{field}:"))
            .map(str::to_owned)
    })
}

/// Crash the `redis-server` on `port` (SIGKILL to the pid it reports): no
/// shutdown, no goodbye to replicas or clients, as in a host failure.
/// Waits (bounded) until the port refuses connections.
pub fn crash_server(port: u16) {
    let info = cli(port, &["INFO", "server"]);
    let pid = info_field(&info, "process_id")
        .unwrap_or_else(|| panic!("no process_id in INFO server of port {port}: {info}"));
    let st = Command::new("kill")
        .args(["-KILL", &pid])
        .status()
        .expect("run kill");
    assert!(st.success(), "kill -KILL {pid} failed: {st}");
    wait_for(
        "the killed master stops answering",
        Duration::from_secs(10),
        || match std::net::TcpStream::connect(("127.0.0.1", port)) {
            Err(_) => Ok(()),
            Ok(_) => Err(format!("port {port} still accepts connections")),
        },
    );
}

/// A `redis-sentinel` this test started, monitoring one master.
pub struct Sentinel {
    child: Option<Child>,
    /// Its port.
    pub port: u16,
    /// The name it monitors the master under.
    pub master: String,
    dir: tempfile::TempDir,
}

impl Sentinel {
    /// A Sentinel on a free port monitoring `127.0.0.1:master_port` as
    /// `name`, quorum 1, down after 1 s, failover timeout 5 s.
    pub fn start(name: &str, master_port: u16) -> Self {
        assert!(
            on_path("redis-sentinel"),
            "redis-sentinel not found: run `apt-get install -y redis-sentinel` \
             (or bash scripts/test.sh)"
        );
        let dir = tempfile::tempdir().expect("temp dir");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("bind an ephemeral port")
            .port();
        let conf = format!(
            "port {port}\n\
             bind 127.0.0.1\n\
             daemonize no\n\
             dir {dir}\n\
             logfile {log}\n\
             sentinel monitor {name} 127.0.0.1 {master_port} 1\n\
             sentinel down-after-milliseconds {name} 1000\n\
             sentinel failover-timeout {name} 5000\n\
             sentinel parallel-syncs {name} 1\n",
            dir = dir.path().display(),
            log = dir.path().join("sentinel.log").display(),
        );
        // Sentinel rewrites its config file: it must be writable.
        std::fs::write(dir.path().join("sentinel.conf"), conf).expect("write sentinel.conf");
        let child = Command::new("sh")
            .arg("-c")
            .arg(r#"redis-sentinel "$1" & pid=$!; read _ignored; kill $pid 2>/dev/null; wait $pid"#)
            .arg("sealq-test-sentinel")
            .arg(dir.path().join("sentinel.conf"))
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start redis-sentinel");
        let mut s = Self {
            child: Some(child),
            port,
            master: name.to_owned(),
            dir,
        };
        s.wait_ready();
        s
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if self.cli(&["PING"]).trim() == "PONG" {
                return;
            }
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(st)) = c.try_wait()
            {
                panic!(
                    "redis-sentinel exited ({st}) before it was ready; log:\n{}",
                    self.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "redis-sentinel on port {} not ready after 20 s; log:\n{}",
                self.port,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Its log so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("sentinel.log")
    }

    /// `redis-cli` against this Sentinel.
    pub fn cli(&self, args: &[&str]) -> String {
        cli(self.port, args)
    }

    /// The port of the master it names now (`SENTINEL get-master-addr-by-name`).
    pub fn master_port(&self) -> Option<u16> {
        let out = self.cli(&["SENTINEL", "get-master-addr-by-name", &self.master]);
        let mut lines = out.lines().map(str::trim).filter(|l| !l.is_empty());
        let _host = lines.next()?;
        lines.next()?.parse().ok()
    }

    /// Wait (bounded) until it knows the replica on `replica_port` as a
    /// healthy replica of its master, so a failover has a candidate.
    pub fn wait_replica_known(&self, replica_port: u16, limit: Duration) {
        wait_for("Sentinel knows the replica", limit, || {
            let out = self.cli(&["SENTINEL", "replicas", &self.master]);
            // Flat field/value lines per replica: find ours, check its flags.
            let lines: Vec<&str> = out.lines().map(str::trim).collect();
            let ours = lines
                .iter()
                .position(|l| *l == format!("127.0.0.1:{replica_port}"));
            let flags = ours.and_then(|i| {
                lines[i..]
                    .windows(2)
                    .find(|w| w[0] == "flags")
                    .map(|w| w[1].to_owned())
            });
            match flags.as_deref() {
                Some("slave") => Ok(()),
                _ => Err(out.clone()),
            }
        });
    }

    /// Wait (bounded) until it names a master other than `old_port`;
    /// returns the new master's port.
    pub fn wait_failover(&self, old_port: u16, limit: Duration) -> u16 {
        let deadline = Instant::now() + limit;
        loop {
            match self.master_port() {
                Some(p) if p != old_port => return p,
                other => assert!(
                    Instant::now() < deadline,
                    "Sentinel still names {other:?} as master after {limit:?}; log:\n{}",
                    self.log()
                ),
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stop it and wait for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            drop(c.stdin.take());
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                match c.try_wait() {
                    Ok(Some(_)) => break,
                    _ if Instant::now() > deadline => {
                        let _ = c.kill();
                        let _ = c.wait();
                        break;
                    }
                    _ => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        }
    }
}

impl Drop for Sentinel {
    fn drop(&mut self) {
        self.stop();
    }
}
