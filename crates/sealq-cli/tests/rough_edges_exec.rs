//! Issue 21, `worker --exec`: the command runs in its own process group,
//! ended as a whole on a timeout or a shutdown; its stdout becomes the
//! sealed result and the tail of its stderr the sealed error. Each through
//! the real binary on SQLite.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_sealq");

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
        let out = sb.run(&["keys", "generate"]);
        assert_eq!(out.code, 0, "keys generate: {}", out.stderr);
        std::fs::write(&sb.keyring, out.stdout.as_bytes()).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&sb.keyring, std::fs::Permissions::from_mode(0o600)).unwrap();
        sb
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.args(args)
            .current_dir(self.path())
            .env_remove("SEALQ_KEYRING_TOML")
            .env_remove("RUST_LOG")
            .env_remove("SEALQ_AUDIT")
            .env(
                "SEALQ_BROKER",
                format!(
                    "sqlite://{}?synchronous=normal",
                    self.path().join("q.db").display()
                ),
            )
            .env("SEALQ_KEYRING", &self.keyring)
            .stdin(Stdio::null());
        c
    }

    fn run(&self, args: &[&str]) -> Run {
        finished(self.cmd(args).output().expect("run sealq"))
    }

    fn enqueue(&self, args: &[&str]) -> String {
        let mut all = vec!["enqueue"];
        all.extend_from_slice(args);
        let out = self.run(&all);
        assert_eq!(out.code, 0, "enqueue failed: {}", out.stderr);
        out.stdout.trim().to_owned()
    }

    fn state_of(&self, id: &str) -> Option<String> {
        let out = self.run(&["tasks", "list", "--json"]);
        assert_eq!(out.code, 0, "tasks list: {}", out.stderr);
        let v: Value = serde_json::from_str(&out.stdout).expect("list --json is JSON");
        v["tasks"]
            .as_array()?
            .iter()
            .find(|t| t["id"] == id)
            .and_then(|t| t["state"].as_str().map(str::to_owned))
    }

    fn reveal(&self, id: &str) -> Value {
        let out = self.run(&["tasks", "reveal", "--id", id]);
        assert_eq!(out.code, 0, "reveal: {}", out.stderr);
        serde_json::from_str(&out.stdout).expect("reveal prints JSON")
    }

    fn spawn_worker(&self, args: &[&str]) -> Child {
        let mut all = vec!["worker"];
        all.extend_from_slice(args);
        self.cmd(&all)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn worker")
    }
}

fn finished(o: Output) -> Run {
    Run {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

fn terminate(child: Child) -> Run {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());
    finished(child.wait_with_output().expect("wait for the worker"))
}

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

/// A pid the command wrote to `file`, once it is there.
fn pid_in(file: &Path) -> u32 {
    let mut pid = None;
    assert!(
        eventually(30, || {
            pid = std::fs::read_to_string(file)
                .ok()
                .and_then(|t| t.trim().parse().ok());
            pid.is_some()
        }),
        "the command never wrote {}",
        file.display()
    );
    pid.unwrap()
}

/// Whether a process runs: in /proc and not a zombie (a killed process
/// whose new parent has not reaped it yet has ended all the same).
fn running(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => false,
        Ok(stat) => {
            // `pid (comm) S ...`: the state follows the last `)`.
            let state = stat.rsplit_once(')').map(|(_, r)| r.trim_start());
            !state.is_some_and(|s| s.starts_with('Z') || s.starts_with('X'))
        }
    }
}

/// The command: records its own pid and a grandchild's that ignores
/// SIGTERM (so only the SIGKILL after the grace ends it), then waits.
const STUBBORN: &str =
    "echo $$ > leader.pid; trap '' TERM; sleep 1000 & echo $! > grandchild.pid; wait";

#[test]
fn rough_edge_exec_timeout_ends_the_whole_process_group() {
    let sb = Sandbox::new();
    let id = sb.enqueue(&[
        "--type",
        "t.hang",
        "--payload",
        "{}",
        "--timeout",
        "1s",
        "--max-retries",
        "0",
    ]);
    let worker = sb.spawn_worker(&["--exec", STUBBORN]);
    let leader = pid_in(&sb.path().join("leader.pid"));
    let grandchild = pid_in(&sb.path().join("grandchild.pid"));
    assert!(running(grandchild), "the grandchild should be running");
    // Timed out after 1 s, SIGTERM ignored, SIGKILL 2 s later.
    let gone = eventually(20, || !running(leader) && !running(grandchild));
    let archived = eventually(20, || sb.state_of(&id).as_deref() == Some("archived"));
    let out = terminate(worker);
    assert!(
        gone,
        "a process of the timed-out command's group is still running \
         (leader {leader}: {}, grandchild {grandchild}: {}); worker stderr: {}",
        running(leader),
        running(grandchild),
        out.stderr
    );
    assert!(archived, "the task was not archived: {}", out.stderr);
    let error = sb.reveal(&id)["error"].as_str().unwrap_or("").to_owned();
    assert!(error.contains("timed out"), "{error}");
}

#[test]
fn rough_edge_exec_shutdown_ends_the_whole_process_group() {
    let sb = Sandbox::new();
    let id = sb.enqueue(&["--type", "t.hang", "--payload", "{}"]);
    let worker = sb.spawn_worker(&["--exec", STUBBORN, "--shutdown-timeout", "1s"]);
    let leader = pid_in(&sb.path().join("leader.pid"));
    let grandchild = pid_in(&sb.path().join("grandchild.pid"));
    assert!(running(leader) && running(grandchild));
    // The worker waits 1 s for the command, gives the task back, ends the
    // group (SIGTERM, 2 s, SIGKILL) and only then exits.
    let out = terminate(worker);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let gone = eventually(3, || !running(leader) && !running(grandchild));
    assert!(
        gone,
        "the worker exited but its command's group lives on (leader {leader}: {}, \
         grandchild {grandchild}: {})",
        running(leader),
        running(grandchild)
    );
    // Given back, not failed: it waits for the next worker.
    assert_eq!(sb.state_of(&id).as_deref(), Some("pending"));
}

/// One command for several task types: what it prints depends on the type.
const BY_TYPE: &str = r#"cat > /dev/null
case "$SEALQ_TASK_TYPE" in
  t.json) echo '{"ok": true, "n": 3}' ;;
  t.text) printf 'plain text, no JSON' ;;
  t.big) head -c 70000 /dev/zero ;;
  t.fail) echo 'first line of stderr' >&2
          head -c 10000 /dev/zero | tr '\0' 'x' >&2
          echo 'LAST LINE of stderr' >&2
          echo 'stdout of a failure' ; exit 3 ;;
  t.quiet) ;;
esac"#;

#[test]
fn rough_edge_exec_stdout_is_the_result_and_stderr_tail_the_error() {
    let sb = Sandbox::new();
    let ids: Vec<(String, &str)> = ["t.json", "t.text", "t.big", "t.fail", "t.quiet"]
        .into_iter()
        .map(|t| {
            let id = sb.enqueue(&[
                "--type",
                t,
                "--payload",
                r#"{"secret":"payload-text"}"#,
                "--max-retries",
                "0",
            ]);
            (id, t)
        })
        .collect();
    let worker = sb.spawn_worker(&["--exec", BY_TYPE]);
    let done = eventually(30, || {
        ids.iter().all(|(id, _)| {
            matches!(
                sb.state_of(id).as_deref(),
                Some("completed") | Some("archived")
            )
        })
    });
    let out = terminate(worker);
    assert!(done, "not every task ended: {}", out.stderr);
    for text in ["LAST LINE", "first line", "no JSON", "payload-text", "xxxx"] {
        assert!(
            !out.stderr.contains(text) && !out.stdout.contains(text),
            "the worker printed the command's output `{text}`: {}{}",
            out.stdout,
            out.stderr
        );
    }
    let get = |ty: &str| {
        let id = &ids.iter().find(|(_, t)| *t == ty).unwrap().0;
        (sb.state_of(id).unwrap(), sb.reveal(id))
    };

    let (state, v) = get("t.json");
    assert_eq!(state, "completed");
    assert_eq!(v["result"], serde_json::json!({"ok": true, "n": 3}));

    let (state, v) = get("t.text");
    assert_eq!(state, "completed");
    assert_eq!(v["result"], "plain text, no JSON");

    let (state, v) = get("t.quiet");
    assert_eq!(state, "completed");
    assert!(v["result"].is_null(), "no output, no result: {v}");

    // Over the 64 KiB bound: failed without a retry, never truncated.
    let (state, v) = get("t.big");
    assert_eq!(state, "archived");
    assert!(v["result"].is_null(), "{v}");
    let error = v["error"].as_str().unwrap();
    assert!(
        error.contains("70000 bytes") && error.contains("65536"),
        "{error}"
    );

    // The tail of stderr, after how it ended; the start is cut.
    let (state, v) = get("t.fail");
    assert_eq!(state, "archived");
    assert!(v["result"].is_null(), "a failure stores no result: {v}");
    let error = v["error"].as_str().unwrap();
    assert!(error.starts_with("command exited with status 3"), "{error}");
    assert!(error.contains("LAST LINE of stderr"), "{error}");
    assert!(!error.contains("first line of stderr"), "{error}");
    assert!(error.len() < 4096 + 200, "bounded: {} bytes", error.len());
}
