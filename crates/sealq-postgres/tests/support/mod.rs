//! Test support: a PostgreSQL server this test binary starts and owns.
//!
//! One server per test binary ([`shared`]), started on first use: `initdb`
//! into a temp dir and `postgres` listening on a free 127.0.0.1 port (as the
//! `postgres` user through `runuser` when the tests run as root, since
//! Postgres refuses to run as root). Every test gets its own database
//! ([`fresh_db`], `CREATE DATABASE … TEMPLATE template0`).
//!
//! The server runs under a small shell wrapper that stops it (by pid, fast
//! shutdown) and removes its data directory when its stdin, a pipe from
//! this process, closes: when the test binary exits, also after a panic.
//! Tests never touch a Postgres they did not start.
#![allow(dead_code, unreachable_pub)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

const INSTALL: &str = "install the Debian postgresql package (`apt-get install -y postgresql`, \
                       or run `bash scripts/test.sh`, which does)";

/// A free TCP port on 127.0.0.1 (bound, then released).
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    l.local_addr().expect("local addr").port()
}

/// The directory holding `initdb` and `postgres`: the newest
/// `/usr/lib/postgresql/*/bin`, else one on PATH.
pub fn bin_dir() -> PathBuf {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            (bin.join("initdb").is_file() && bin.join("postgres").is_file()).then_some((v, bin))
        })
        .collect();
    found.sort();
    if let Some((_, bin)) = found.pop() {
        return bin;
    }
    std::env::var_os("PATH")
        .and_then(|p| {
            std::env::split_paths(&p)
                .find(|d| d.join("initdb").is_file() && d.join("postgres").is_file())
        })
        .unwrap_or_else(|| panic!("PostgreSQL's initdb and postgres not found: {INSTALL}"))
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// `program args…`, as the `postgres` user when we are root.
fn as_postgres(program: &Path) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

/// A running server.
pub struct PgServer {
    child: Option<Child>,
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// The temp dir holding the data directory and socket.
    pub dir: PathBuf,
}

impl PgServer {
    /// `initdb` and start a server with `extra` `-c` settings.
    pub fn start(extra: &[(&str, &str)]) -> Self {
        Self::start_with(extra, &[])
    }

    /// [`PgServer::start`] with `files` (name, contents) written into the
    /// server's directory first, mode 0600 (TLS keys and certificates;
    /// settings name them relative to the data directory, `../NAME`, or
    /// as `{dir}/NAME`, `{dir}` standing for the server's directory).
    pub fn start_with(extra: &[(&str, &str)], files: &[(&str, &[u8])]) -> Self {
        let bin = bin_dir();
        let dir = tempfile::Builder::new()
            .prefix("sealq-pg-")
            .tempdir()
            .expect("temp dir")
            .keep();
        for (name, bytes) in files {
            use std::os::unix::fs::PermissionsExt;
            let path = dir.join(name);
            std::fs::write(&path, bytes).expect("write a server file");
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                .expect("chmod a server file");
        }
        if is_root() {
            let out = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&dir)
                .output()
                .expect("run chown");
            assert!(
                out.status.success(),
                "chown postgres {}: {}; the `postgres` user comes with {INSTALL}",
                dir.display(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let data = dir.join("data");
        let out = as_postgres(&bin.join("initdb"))
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                "postgres",
                "-A",
                "trust",
                "-N",
                "--locale=C",
                "-E",
                "UTF8",
            ])
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run initdb ({e}): {INSTALL}"));
        assert!(
            out.status.success(),
            "initdb failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let port = free_port();
        let mut settings = vec![
            ("listen_addresses", "127.0.0.1".to_owned()),
            ("port", port.to_string()),
            ("unix_socket_directories", dir.display().to_string()),
            ("fsync", "off".to_owned()),
            ("synchronous_commit", "off".to_owned()),
            ("full_page_writes", "off".to_owned()),
            ("max_connections", "200".to_owned()),
            ("shared_buffers", "64MB".to_owned()),
        ];
        for (k, v) in extra {
            settings.retain(|(s, _)| s != k);
            settings.push((k, v.replace("{dir}", &dir.display().to_string())));
        }
        let mut script = String::from(r#""$0" -D "$1""#);
        for (k, v) in &settings {
            script.push_str(&format!(" -c '{k}={v}'"));
        }
        // Stop by pid when our end of stdin closes (also when this process
        // dies), then remove the data.
        script.push_str(
            r#" >"$1.log" 2>&1 & pid=$!; read _ignored; kill -INT $pid 2>/dev/null; wait $pid; rm -rf "$2""#,
        );
        let child = as_postgres(Path::new("sh"))
            .arg("-c")
            .arg(&script)
            .arg(bin.join("postgres"))
            .arg(&data)
            .arg(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start postgres ({e}): {INSTALL}"));
        let mut s = Self {
            child: Some(child),
            port,
            dir: dir.clone(),
        };
        s.wait_ready(&bin, &data);
        s
    }

    fn wait_ready(&mut self, bin: &Path, data: &Path) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ok = Command::new(bin.join("pg_isready"))
                .args(["-q", "-h", "127.0.0.1", "-p", &self.port.to_string()])
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if ok {
                return;
            }
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(st)) = c.try_wait()
            {
                let log = std::fs::read_to_string(data.with_extension("log")).unwrap_or_default();
                panic!("postgres exited ({st}) before it was ready; log:\n{log}");
            }
            assert!(
                Instant::now() < deadline,
                "postgres on port {} not ready after 30 s",
                self.port
            );
            std::thread::sleep(Duration::from_millis(30));
        }
    }

    /// A URL for database `db` as the superuser.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// Stop the server (by pid, fast shutdown) and wait for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            drop(c.stdin.take());
            let deadline = Instant::now() + Duration::from_secs(20);
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

impl Drop for PgServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The server shared by the tests of one test binary.
pub fn shared() -> &'static PgServer {
    static SHARED: OnceLock<PgServer> = OnceLock::new();
    SHARED.get_or_init(|| PgServer::start(&[]))
}

/// A fresh database on `server`; returns its URL.
pub async fn fresh_db_on(server: &PgServer) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let name = format!(
        "t{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    );
    let (client, conn) = tokio_postgres::connect(&server.url("postgres"), tokio_postgres::NoTls)
        .await
        .expect("connect to the test server");
    let task = tokio::spawn(conn);
    // Template copies are serialised by Postgres: retry while the template is busy.
    let mut tries = 0;
    loop {
        match client
            .batch_execute(&format!("CREATE DATABASE {name} TEMPLATE template0"))
            .await
        {
            Ok(()) => break,
            Err(e) if tries < 50 && e.to_string().contains("being accessed") => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("CREATE DATABASE {name}: {e}"),
        }
    }
    drop(client);
    let _ = task.await;
    server.url(&name)
}

/// A plain client of `url` (no TLS), its connection driven by a task.
pub async fn client(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    client
}

/// One row of statistics counters (`pg_stat_user_tables`,
/// `pg_stat_user_indexes`) as `query` selects them, after flushing this
/// session's own counters (other sessions report theirs when they end).
pub async fn flushed_stats(
    client: &tokio_postgres::Client,
    query: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> tokio_postgres::Row {
    client
        .batch_execute("SELECT pg_stat_force_next_flush()")
        .await
        .unwrap();
    client.query_one(query, params).await.unwrap()
}

/// A fresh database on the shared server; returns its URL.
pub async fn fresh_db() -> String {
    fresh_db_on(shared()).await
}
