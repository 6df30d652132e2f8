//! Regression tests for the findings of the CLI security review, one test
//! per finding, named after it. Each runs the real `sealq` binary, always
//! under `umask 022` (a common default) through `sh -c`, so the file modes
//! it checks do not depend on the umask of whoever runs the tests.

#[path = "../../sealq-redis/tests/support/mod.rs"]
mod support;

use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_sealq");

/// A temporary directory with a 0600 keyring and an SQLite broker in it.
struct Sandbox {
    dir: tempfile::TempDir,
    keyring: PathBuf,
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Sandbox {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let keyring = dir.path().join("keyring.toml");
        let sb = Sandbox { dir, keyring };
        // `keys generate > keyring.toml` under umask 022: the command makes
        // the file 0600 itself (finding 2).
        let status = Command::new("sh")
            .arg("-c")
            .arg("umask 022 && exec \"$0\" keys generate > keyring.toml")
            .arg(BIN)
            .current_dir(sb.path())
            .status()
            .expect("run sealq keys generate");
        assert!(status.success());
        sb
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn broker_url(&self) -> String {
        format!(
            "sqlite://{}?synchronous=normal",
            self.path().join("q.db").display()
        )
    }

    /// `sealq ARGS` under `umask 022`, with this sandbox's broker and keyring.
    fn cmd<S: AsRef<OsStr>>(&self, args: &[S]) -> Command {
        let mut c = Command::new("sh");
        c.arg("-c")
            .arg("umask 022 && exec \"$0\" \"$@\"")
            .arg(BIN)
            .args(args)
            .current_dir(self.path())
            .env_remove("SEALQ_KEYRING_TOML")
            .env_remove("SEALQ_AUDIT")
            .env_remove("RUST_LOG")
            .env("SEALQ_BROKER", self.broker_url())
            .env("SEALQ_KEYRING", &self.keyring)
            .stdin(Stdio::null());
        c
    }

    fn run<S: AsRef<OsStr>>(&self, args: &[S]) -> Run {
        finished(self.cmd(args).output().expect("run sealq"))
    }

    fn ok<S: AsRef<OsStr>>(&self, args: &[S]) -> Run {
        let out = self.run(args);
        assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
        out
    }
}

fn finished(o: std::process::Output) -> Run {
    Run {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

/// Poll `check` every 50 ms for up to `secs` seconds.
fn eventually(secs: u64, mut check: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < end {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// SIGTERM via `kill`, then wait.
fn terminate(child: Child) -> Run {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());
    finished(child.wait_with_output().expect("wait for the worker"))
}

/// The base64 secrets of a keyring TOML (`secret`, `subject_tag_key`,
/// `audit_signing_key` values).
fn secrets_of(toml: &str) -> Vec<String> {
    toml.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .filter(|(k, _)| {
            let k = k.trim();
            k == "secret" || k == "subject_tag_key" || k == "audit_signing_key"
        })
        .map(|(_, v)| v.trim().trim_matches('"').to_owned())
        .collect()
}

#[test]
fn finding_1_exec_children_get_no_secrets() {
    const PASSWORD: &str = "hunter2-broker-password";
    let server = support::RedisServer::start_with(&["--requirepass", PASSWORD]);
    let url = format!("redis://:{PASSWORD}@127.0.0.1:{}", server.port);
    let sb = Sandbox::new();
    let keyring_toml = std::fs::read_to_string(&sb.keyring).unwrap();
    let secrets = secrets_of(&keyring_toml);
    assert!(secrets.len() >= 3, "{keyring_toml}");
    let dump = sb.path().join("child-env.txt");

    // The worker's environment as the finding had it: the keyring itself in
    // SEALQ_KEYRING_TOML, the broker URL with its password in SEALQ_BROKER,
    // and other secrets beside them.
    let with_secrets = |c: &mut Command| {
        c.env_remove("SEALQ_KEYRING")
            .env("SEALQ_KEYRING_TOML", &keyring_toml)
            .env("SEALQ_BROKER", &url)
            .env("REDIS_PASSWORD", PASSWORD)
            .env("APP_DB_PASSWORD", PASSWORD)
            .env("APP_MODE", "visible-by-choice")
            .env("TZ", "UTC");
    };
    let run = |args: &[&str]| {
        let mut c = sb.cmd(args);
        with_secrets(&mut c);
        finished(c.output().unwrap())
    };
    let out = run(&["redis", "install"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let out = run(&["enqueue", "-t", "t.env", "--payload", "{}"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let id = out.stdout.trim().to_owned();

    // Passing the keyring or the broker on is refused outright.
    for name in ["SEALQ_KEYRING_TOML", "SEALQ_BROKER"] {
        let out = run(&["worker", "--exec", "true", "--exec-env", name]);
        assert_eq!(out.code, 2, "--exec-env {name}: {}", out.stderr);
        assert!(out.stderr.contains(name), "{}", out.stderr);
    }

    let exec = format!("env > '{}'", dump.display());
    let mut c = sb.cmd(&["worker", "--exec", &exec, "--exec-env", "APP_MODE"]);
    with_secrets(&mut c);
    let worker = c
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let dumped = eventually(30, || {
        std::fs::read_to_string(&dump).is_ok_and(|t| t.contains("SEALQ_ATTEMPT="))
    });
    let out = terminate(worker);
    assert!(dumped, "the command never ran: {}", out.stderr);
    let env = std::fs::read_to_string(&dump).unwrap();

    assert!(
        !env.contains(PASSWORD),
        "the broker password leaked:\n{env}"
    );
    for s in &secrets {
        assert!(!env.contains(s.as_str()), "key material leaked:\n{env}");
    }
    for name in ["SEALQ_KEYRING", "SEALQ_BROKER", "REDIS_", "PASSWORD"] {
        assert!(!env.contains(name), "{name} reached the command:\n{env}");
    }
    for line in [
        format!("SEALQ_TASK_ID={id}"),
        "SEALQ_TASK_TYPE=t.env".to_owned(),
        "SEALQ_QUEUE=default".to_owned(),
        "SEALQ_ATTEMPT=1".to_owned(),
        "APP_MODE=visible-by-choice".to_owned(),
        "TZ=UTC".to_owned(),
    ] {
        assert!(env.lines().any(|l| l == line), "{line} missing:\n{env}");
    }
    assert!(env.lines().any(|l| l.starts_with("PATH=")), "{env}");
}
