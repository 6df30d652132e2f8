//! Test support: `redis-server` processes the tests start and own.
//!
//! Every server runs on a free loopback port with its data in a temp dir and
//! is stopped when its [`RedisServer`] guard drops, or, for servers kept in a
//! `static`, when the test process exits (the server runs under a tiny shell
//! wrapper that stops it when its stdin, a pipe from this process, closes).
//! Tests never touch a Redis they did not start.
#![allow(dead_code, unreachable_pub)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sealq::clock::SharedClock;
use sealq_redis::{RedisBroker, RedisOptions};

/// A free TCP port on 127.0.0.1 (bound, then released).
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    l.local_addr().expect("local addr").port()
}

fn require(bin: &str) {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(bin).is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "{bin} not found: run `apt-get install -y redis-server` (or bash scripts/test.sh)"
    );
}

/// A `redis-server` this test started.
pub struct RedisServer {
    child: Option<Child>,
    /// Its port (the TLS port for TLS servers).
    pub port: u16,
    /// Its data directory (owned by `_dir` unless given).
    pub dir: PathBuf,
    args: Vec<String>,
    tls: bool,
    _dir: Option<tempfile::TempDir>,
}

impl RedisServer {
    /// A plain server with persistence off.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// A plain server with extra arguments.
    pub fn start_with(extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().to_path_buf();
        let port = free_port();
        let mut s = Self::spawn(port, &path, extra, false);
        s._dir = Some(dir);
        s
    }

    /// A server on `port` with data in `dir` (for restarts).
    pub fn start_in(port: u16, dir: &Path, extra: &[&str]) -> Self {
        Self::spawn(port, dir, extra, false)
    }

    /// A TLS-only server: `extra` carries the `--tls-*` arguments.
    pub fn start_tls(dir: &Path, extra: &[&str]) -> Self {
        let port = free_port();
        let mut args = vec!["--port", "0"];
        let p = port.to_string();
        args.extend(["--tls-port", p.as_str()]);
        args.extend(extra);
        Self::spawn_raw(port, dir, &args, true)
    }

    fn spawn(port: u16, dir: &Path, extra: &[&str], tls: bool) -> Self {
        let p = port.to_string();
        let mut args = vec!["--port", p.as_str()];
        args.extend(extra);
        Self::spawn_raw(port, dir, &args, tls)
    }

    fn spawn_raw(port: u16, dir: &Path, extra: &[&str], tls: bool) -> Self {
        require("redis-server");
        let mut args: Vec<String> = vec![
            "--bind".into(),
            "127.0.0.1".into(),
            "--dir".into(),
            dir.display().to_string(),
            "--logfile".into(),
            dir.join("redis.log").display().to_string(),
        ];
        if !extra.contains(&"--appendonly") {
            args.extend([
                "--save".into(),
                "".into(),
                "--appendonly".into(),
                "no".into(),
            ]);
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut s = Self {
            child: None,
            port,
            dir: dir.to_path_buf(),
            args,
            tls,
            _dir: None,
        };
        s.launch();
        s
    }

    fn launch(&mut self) {
        // The wrapper stops redis-server when our end of its stdin closes,
        // which also happens when this process dies.
        let child = Command::new("sh")
            .arg("-c")
            .arg(r#"redis-server "$@" & pid=$!; read _ignored; kill $pid 2>/dev/null; wait $pid"#)
            .arg("sealq-test-redis")
            .args(&self.args)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start redis-server");
        self.child = Some(child);
        self.wait_ready();
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if self.ping() {
                return;
            }
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(st)) = c.try_wait()
            {
                let log = std::fs::read_to_string(self.dir.join("redis.log")).unwrap_or_default();
                panic!("redis-server exited ({st}) before it was ready; log:\n{log}");
            }
            assert!(
                Instant::now() < deadline,
                "redis-server on port {} not ready after 20 s",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn ping(&self) -> bool {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        if self.tls {
            return true;
        }
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        if s.write_all(b"PING\r\n").is_err() {
            return false;
        }
        let mut buf = [0u8; 64];
        match s.read(&mut buf) {
            // +PONG, or -NOAUTH / -LOADING: the server is up and answering.
            Ok(n) if n > 0 => {
                buf.starts_with(b"+PONG") || buf.starts_with(b"-NOAUTH") || buf.starts_with(b"-ERR")
            }
            _ => false,
        }
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Stop the server and wait for it to exit.
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

    /// Start it again on the same port with the same data directory.
    pub fn restart(&mut self) {
        self.stop();
        self.launch();
    }

    /// Run `redis-cli` against this server (plain servers only).
    /// Load the sealq functions library (`FUNCTION LOAD REPLACE`), as
    /// `sealq redis install` would; panics if Redis refuses.
    pub fn load_library(&self) {
        let out = self.cli(&[
            "FUNCTION",
            "LOAD",
            "REPLACE",
            &sealq_redis::library_source(),
        ]);
        assert!(out.contains("sealq"), "FUNCTION LOAD failed: {out}");
    }

    pub fn cli(&self, args: &[&str]) -> String {
        require("redis-cli");
        let out = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(args)
            .output()
            .expect("run redis-cli");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

static PREFIX: AtomicU64 = AtomicU64::new(0);

/// A prefix no other case of this process uses.
pub fn unique_prefix() -> String {
    let n = PREFIX.fetch_add(1, Ordering::SeqCst);
    format!("t{}x{n}", std::process::id())
}

/// The server shared by the cases of one test binary (functions installed).
pub fn shared() -> &'static RedisServer {
    static SHARED: std::sync::OnceLock<RedisServer> = std::sync::OnceLock::new();
    SHARED.get_or_init(|| {
        let s = RedisServer::start();
        s.load_library();
        s
    })
}

/// A broker on the shared server with a fresh prefix.
pub async fn shared_broker(clock: SharedClock) -> RedisBroker {
    let s = shared();
    RedisBroker::connect_with(
        &s.url(),
        RedisOptions::with_clock(clock).prefix(unique_prefix()),
    )
    .await
    .expect("connect to the test redis-server")
}

/// Another broker (as another process would have) on the shared server with `prefix`.
pub async fn shared_broker_with_prefix(prefix: &str) -> RedisBroker {
    RedisBroker::connect_with(&shared().url(), RedisOptions::default().prefix(prefix))
        .await
        .expect("connect to the test redis-server")
}

/// `redis-cli` against `s` as `user`, stdout and stderr together.
pub fn cli_as(s: &RedisServer, user: &str, pw: &str, args: &[&str]) -> String {
    require("redis-cli");
    let out = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &s.port.to_string()])
        .args(["--user", user, "--pass", pw, "--no-auth-warning"])
        .args(args)
        .output()
        .expect("run redis-cli");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The arguments of one `ACL SETUSER` line: split at spaces, except inside
/// a selector `( … )`, which is one argument (as a shell's quotes would make it).
pub fn acl_args(line: &str) -> Vec<String> {
    let mut args = Vec::new();
    let mut cur = String::new();
    let mut depth = 0usize;
    for ch in line.chars() {
        match ch {
            '(' => {
                depth += 1;
                cur.push(ch);
            }
            ')' => {
                depth = depth.saturating_sub(1);
                cur.push(ch);
            }
            ' ' if depth == 0 => {
                if !cur.is_empty() {
                    args.push(std::mem::take(&mut cur));
                }
            }
            _ => cur.push(ch),
        }
    }
    if !cur.is_empty() {
        args.push(cur);
    }
    args
}

/// The `ACL SETUSER` lines of docs/redis-acl.md (admin, producer, worker),
/// read from the document itself, with the passwords `apw`, `ppw`, `wpw`.
pub fn acl_lines() -> Vec<String> {
    let doc = include_str!("../../../../docs/redis-acl.md");
    let lines: Vec<String> = doc
        .lines()
        .filter(|l| l.starts_with("ACL SETUSER "))
        .map(|l| {
            l.replace("ADMIN_PASSWORD", "apw")
                .replace("PRODUCER_PASSWORD", "ppw")
                .replace("WORKER_PASSWORD", "wpw")
        })
        .collect();
    assert_eq!(lines.len(), 3, "three roles in docs/redis-acl.md");
    lines
}
