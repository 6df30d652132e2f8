//! Command-line arguments (clap derive). Flag names are part of the CLI's
//! contract: scripts depend on them.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::duration::parse_duration;

/// The broker used when neither `--broker` nor `SEALQ_BROKER` is given.
pub(crate) const DEFAULT_BROKER: &str = "sqlite://./sealq.db";

const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  runtime failure (broker error, policy rejection, duplicate task ...)
  2  usage or configuration error (bad flags, no keyring, invalid JSON ...)

Environment:
  SEALQ_BROKER        broker URL (like --broker)
  SEALQ_KEYRING       path of the keyring TOML (like --keyring)
  SEALQ_KEYRING_TOML  the keyring TOML itself, when no path is given
  SEALQ_LOG_FORMAT    text or json (like --log-format)
  RUST_LOG            log filter, overrides -v (logs go to stderr)";

/// sealq: a task queue whose payloads are sealed (XChaCha20-Poly1305, bound
/// to each task's identity). Brokers only ever store ciphertext.
#[derive(Debug, Parser)]
#[command(name = "sealq", version, after_help = EXIT_CODES)]
pub(crate) struct Cli {
    /// Broker URL: `sqlite://PATH[?synchronous=normal|full]` or
    /// `sqlite:PATH`; `redis://[user:password@]host[:port][/db]`,
    /// `rediss://…[?ca=PEM&cert=PEM&key=PEM]`, `redis+cluster://h:p,h:p` or
    /// `redis+sentinel://h:p,h:p/MASTER` (all with optional `?prefix=P`, and
    /// `?spin_us=N`: how long a lone call busy-waits for its reply, default
    /// 200, 0 off); `postgres://[user[:password]@]host[:port]/DB` or
    /// `postgresql://…` (`?sslmode=disable|require|verify-full&sslrootcert=PEM`,
    /// `&poll_only=true` behind PgBouncer)
    /// [default: sqlite://./sealq.db; `demo` and `bench` use a throw-away
    /// file unless --broker is given on the command line].
    #[arg(long, env = "SEALQ_BROKER", global = true, value_name = "URL")]
    pub(crate) broker: Option<String>,

    /// Keyring TOML file. Without it, SEALQ_KEYRING_TOML is used; without
    /// either, commands that seal or open tasks refuse to run.
    #[arg(long, env = "SEALQ_KEYRING", global = true, value_name = "PATH")]
    pub(crate) keyring: Option<PathBuf>,

    /// More logging to stderr (-v info, -vv debug, -vvv trace; default warn).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub(crate) verbose: u8,

    /// How logs look on stderr: `text`, or `json` (one JSON object per line,
    /// the event's fields at the top level, for log pipelines).
    #[arg(
        long,
        env = "SEALQ_LOG_FORMAT",
        global = true,
        value_enum,
        default_value_t = crate::logging::LogFormat::Text,
        value_name = "FORMAT"
    )]
    pub(crate) log_format: crate::logging::LogFormat,

    /// What to do.
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// See sealq work end to end in a few seconds: no keyring, no server needed.
    Demo(DemoArgs),
    /// Manage keyrings.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Seal and enqueue one task; prints its id.
    Enqueue(EnqueueArgs),
    /// Process tasks by running a shell command for each one.
    Worker(WorkerArgs),
    /// List the live workers on the broker: id, host, pid, queues,
    /// concurrency, started, last heartbeat, tasks in flight.
    Workers(WorkersArgs),
    /// Inspect tasks (ids, types, states and sizes; never payloads).
    #[command(subcommand)]
    Tasks(TasksCommand),
    /// Measure enqueue and processing throughput and latency.
    Bench(BenchArgs),
    /// Payload sizes per queue and task type against the size budgets.
    #[command(subcommand)]
    Payloads(PayloadsCommand),
    /// Verify the tamper-evident audit log, or show one task's history.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Redis broker operations (install the functions library).
    #[command(subcommand)]
    Redis(crate::cmd::redis::RedisCommand),
    /// Postgres broker operations (install or upgrade the schema, print or
    /// apply the least-privilege roles).
    #[command(subcommand)]
    Postgres(crate::cmd::postgres::PostgresCommand),
    /// Erase a data subject: delete its tasks in every state and destroy its
    /// data key, so earlier copies of its tasks cannot be opened; prints a
    /// receipt. Only tasks whose envelope authenticates with the subject's
    /// key and tag are erased; others carrying the tag are named, not
    /// deleted. `--finalize` (say, daily) makes every erasure so far final
    /// against restored copies of the subject key store: a new KEK epoch in
    /// the keyring file, every subject key re-wrapped under it, the older
    /// epochs dropped.
    Erase(EraseArgs),
    /// Pause, resume, cap or rate-limit queues (audited).
    #[command(subcommand)]
    Queues(QueuesCommand),
    /// Run cron schedules (a task enqueued at every tick), or list a
    /// pattern's next ticks.
    #[command(subcommand)]
    Cron(CronCommand),
}

/// `sealq cron ...`.
#[derive(Debug, Subcommand)]
pub(crate) enum CronCommand {
    /// Enqueue a task at every tick of each `--entry` until SIGINT/SIGTERM,
    /// then print the counters as JSON. Run it in as many processes as you
    /// like: each tick is enqueued once (its task id comes from the entry's
    /// name and the tick)
    Run(CronRunArgs),
    /// Print the next ticks of a cron pattern, to check it
    Next(CronNextArgs),
}

/// `sealq cron run`.
#[derive(Debug, Args)]
pub(crate) struct CronRunArgs {
    /// `NAME;PATTERN;TYPE[;JSON]`: the schedule's name (the same in every
    /// process), a cron pattern (five fields, six with seconds
    /// first, or seven with a year last; `@daily` …), the task type, and its JSON payload (default `{}`).
    /// Repeat for more schedules
    #[arg(
        long = "entry",
        required = true,
        value_name = "NAME;PATTERN;TYPE[;JSON]"
    )]
    pub(crate) entries: Vec<String>,
    /// Queue the tasks go to.
    #[arg(long, short = 'q', default_value = "default")]
    pub(crate) queue: String,
    /// IANA time zone the patterns are read in, e.g. `Europe/Paris` (default UTC).
    #[arg(long, value_name = "TZ")]
    pub(crate) time_zone: Option<String>,
    /// Where audit records go (see `sealq audit --help`).
    #[arg(long, value_enum, env = "SEALQ_AUDIT", default_value_t = AuditSinkKind::File)]
    pub(crate) audit: AuditSinkKind,
}

/// `sealq cron next`.
#[derive(Debug, Args)]
pub(crate) struct CronNextArgs {
    /// The cron pattern: five fields (minute hour day-of-month month
    /// day-of-week), six with seconds first, or seven with a year last;
    /// or @hourly, @daily, ….
    #[arg(long, value_name = "PATTERN")]
    pub(crate) pattern: String,
    /// IANA time zone the pattern is read in (default UTC).
    #[arg(long, value_name = "TZ")]
    pub(crate) time_zone: Option<String>,
    /// How many ticks.
    #[arg(long, default_value_t = 5)]
    pub(crate) count: usize,
}

/// `sealq erase`.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("what").required(true).multiple(true)))]
pub(crate) struct EraseArgs {
    /// The subject id given at enqueue (`--subject`), e.g. `user-42`.
    #[arg(long, group = "what")]
    pub(crate) subject: Option<String>,
    /// Also read every stored task, to erase the subject's tasks whose clear
    /// subject tag was removed (each subject-sealed task is tried with the
    /// subject's key and tag). Reads the whole store.
    #[arg(long, requires = "subject")]
    pub(crate) full_scan: bool,
    /// Finalise erasures (after `--subject`, if given): add a key-encryption-key
    /// epoch to the keyring file (`--keyring`), re-wrap every stored subject
    /// key under it and drop the older epochs, so no copy of the subject key
    /// store taken before opens anything with the keyring. Then deploy the
    /// keyring file to every worker and producer and restart them, and
    /// destroy copies of the old keyring file.
    #[arg(long, group = "what")]
    pub(crate) finalize: bool,
    /// With `--finalize`: drop the older epochs even when some subject keys
    /// could not be re-wrapped (those keys are lost for good).
    #[arg(long, requires = "finalize")]
    pub(crate) force: bool,
    /// Who asks for the erasure (recorded in the receipt; default `$USER@host`).
    #[arg(long)]
    pub(crate) operator: Option<String>,
    /// Print the receipt as JSON.
    #[arg(long)]
    pub(crate) json: bool,
    /// Where the receipt's audit record goes.
    #[arg(long, value_enum, env = "SEALQ_AUDIT", default_value_t = AuditSinkKind::File)]
    pub(crate) audit: AuditSinkKind,
}

/// `sealq workers`.
#[derive(Debug, Args)]
pub(crate) struct WorkersArgs {
    /// Print a JSON array (`run_id`, `id`, `host`, `pid`, `queues`,
    /// `concurrency`, `started_at_ms`, `last_heartbeat_ms`, `in_flight`).
    #[arg(long)]
    pub(crate) json: bool,
}

/// `sealq demo`.
#[derive(Debug, Args)]
pub(crate) struct DemoArgs {
    /// How many tasks to enqueue.
    #[arg(long, default_value_t = 5000)]
    pub(crate) tasks: usize,
    /// Print the summary as JSON.
    #[arg(long)]
    pub(crate) json: bool,
    /// Where audit records go (see `sealq audit --help`).
    #[arg(long, value_enum, env = "SEALQ_AUDIT", default_value_t = AuditSinkKind::File)]
    pub(crate) audit: AuditSinkKind,
}

/// `sealq keys ...`.
#[derive(Debug, Subcommand)]
pub(crate) enum KeysCommand {
    /// Print a new keyring (TOML, with secrets) to stdout.
    ///
    /// Redirect it to a file readable only by you:
    /// `(umask 077; sealq keys generate > keyring.toml)`. When stdout is a
    /// regular file, it is made mode 0600 before the keys are written;
    /// keyring files others can read or write are refused when loaded.
    ///
    /// With `--role operator --from FULL.toml`: an operator keyring made
    /// from a full one, holding only the audit keys. It runs `queues
    /// pause/resume/limit/rate`, `tasks list/stats/delete/rerun` and `audit
    /// verify/show`, writing their audit records, and opens no payload
    /// (`tasks reveal`, `worker`, `enqueue`, `erase` and `keys` refuse it).
    Generate(KeysGenerateArgs),
    /// Add a new primary key to the keyring file given with `--keyring`; old
    /// keys stay to open what they sealed. Audited (`key_rotated`).
    Rotate(KeysRotateArgs),
    /// Re-seal stored tasks under the keyring's primary key (after `keys
    /// rotate`), so older keys can be removed. Payloads, results and errors
    /// sealed with another keyring key are opened and sealed again with the
    /// same identity; each replacement is a compare-and-swap (a task that
    /// changes meanwhile is left for the next run) and is audited
    /// (`resealed`). Without `--queue`, subject data keys are re-wrapped
    /// under the primary key's key-encryption key too (audited,
    /// `subject_keys_rewrapped`). Workers may keep running.
    Reseal(KeysResealArgs),
    /// Remove an old (open-only) key from the keyring file given with
    /// `--keyring`, after checking every store named with `--store`
    /// (repeat it for each store the keyring is used with; refused without
    /// one). Refused while any stored task or subject data key in any of
    /// them still names it (run `keys reseal` against each first) unless
    /// `--force`. Audited in each store (`key_removed`).
    Remove(KeysRemoveArgs),
}

/// `sealq keys remove`.
#[derive(Debug, Args)]
pub(crate) struct KeysRemoveArgs {
    /// The key id to remove.
    #[arg(long = "key", value_name = "KEY_ID")]
    pub(crate) key: String,
    /// A store (broker URL, as for `--broker`) whose tasks or subject keys
    /// this keyring seals. Repeat it to name every one: the key is removed
    /// only if none of them needs it, and nothing is guessed (without
    /// `--store` the command refuses; `--broker` on the command line counts
    /// as one more; a SQLite file that does not exist is refused).
    #[arg(long = "store", value_name = "URL")]
    pub(crate) stores: Vec<String>,
    /// Remove it even though stored tasks still name it: they can then never
    /// be opened.
    #[arg(long)]
    pub(crate) force: bool,
    /// The claim-check store, so that the check looks inside offloaded
    /// payloads' blobs too.
    #[command(flatten)]
    pub(crate) blobs: BlobStoreArgs,
    #[command(flatten)]
    pub(crate) op: OperatorArgs,
}

/// Where offloaded payloads' claim-check blobs are (`keys reseal`, `keys
/// remove`): at most one of `--blob-dir` and `--blob-url`.
#[derive(Debug, Args)]
pub(crate) struct BlobStoreArgs {
    /// A filesystem blob store's directory.
    #[arg(long = "blob-dir", value_name = "DIR", conflicts_with = "blob_url")]
    pub(crate) blob_dir: Option<std::path::PathBuf>,
    /// A blob store in Redis (`redis://…`, `rediss://…?ca=PEM`, the cluster
    /// and Sentinel forms of `--broker`) or in a SQLite database's `blobs`
    /// table (`sqlite://PATH`).
    #[arg(long = "blob-url", value_name = "URL")]
    pub(crate) blob_url: Option<String>,
    /// The Redis blob store's key prefix, as the application configured it.
    #[arg(
        long = "blob-prefix",
        value_name = "PREFIX",
        default_value = "sealq-blob"
    )]
    pub(crate) blob_prefix: String,
    /// How long a blob written to Redis lives (re-sealed blobs are written
    /// anew): as long as the application's own setting, longer than any
    /// task's life. Required with a Redis `--blob-url` that re-seals.
    #[arg(long = "blob-ttl", value_parser = parse_duration, value_name = "DURATION")]
    pub(crate) blob_ttl: Option<std::time::Duration>,
}

/// `sealq keys reseal`.
#[derive(Debug, Args)]
pub(crate) struct KeysResealArgs {
    /// Only this queue (default: every queue).
    #[arg(long)]
    pub(crate) queue: Option<String>,
    /// Only what this key sealed (default: every key but the primary).
    #[arg(long = "from-key", value_name = "KEY_ID")]
    pub(crate) from_key: Option<String>,
    /// Tasks read and swapped per broker call.
    #[arg(long, default_value_t = sealq::reseal::DEFAULT_RESEAL_BATCH)]
    pub(crate) batch: usize,
    /// Count what would be re-sealed; change and audit nothing.
    #[arg(long)]
    pub(crate) dry_run: bool,
    /// The claim-check store, so that offloaded payloads' blobs are
    /// re-sealed too. Without one they are listed as not re-sealed.
    #[command(flatten)]
    pub(crate) blobs: BlobStoreArgs,
    /// Print the report as JSON.
    #[arg(long)]
    pub(crate) json: bool,
    #[command(flatten)]
    pub(crate) op: OperatorArgs,
}

/// `sealq keys rotate`.
#[derive(Debug, Args)]
pub(crate) struct KeysRotateArgs {
    #[command(flatten)]
    pub(crate) op: OperatorArgs,
}

/// `sealq keys generate`.
#[derive(Debug, Args)]
pub(crate) struct KeysGenerateArgs {
    /// `full` (a new keyring: sealing keys, subject tag key, audit keys) or
    /// `operator` (the audit keys of the keyring given with --from, nothing
    /// that opens a task).
    #[arg(long, value_enum, default_value_t = KeyringRoleArg::Full)]
    pub(crate) role: KeyringRoleArg,
    /// The full keyring an operator keyring is made from (with --role operator).
    #[arg(long, value_name = "FULL.toml")]
    pub(crate) from: Option<PathBuf>,
}

/// `--role` of `sealq keys generate`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum KeyringRoleArg {
    /// Everything: seals, opens, tags subjects, signs audit records.
    Full,
    /// Audit keys only: operator actions without opening payloads.
    Operator,
}

/// `sealq enqueue`.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("payload_source").required(true)))]
pub(crate) struct EnqueueArgs {
    /// Queue name.
    #[arg(long, short = 'q', default_value = "default")]
    pub(crate) queue: String,
    /// Task type name (e.g. `emails.welcome`).
    #[arg(long = "type", short = 't', value_name = "TYPE")]
    pub(crate) kind: String,
    /// The payload as JSON.
    #[arg(long, value_name = "JSON", group = "payload_source")]
    pub(crate) payload: Option<String>,
    /// Read the JSON payload from a file (`-` for stdin).
    #[arg(long, value_name = "FILE", group = "payload_source")]
    pub(crate) payload_file: Option<PathBuf>,
    /// Data subject (e.g. a user id); only a keyed hash of it is stored.
    #[arg(long)]
    pub(crate) subject: Option<String>,
    /// Run no earlier than this from now (500ms, 30s, 5m, 2h, 1d).
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub(crate) delay: Option<Duration>,
    /// Retries after the first attempt [library default: 25].
    #[arg(long)]
    pub(crate) max_retries: Option<u32>,
    /// At most one live task with this key; needs --unique-ttl (how long
    /// the key holds).
    #[arg(long, value_name = "KEY", requires = "unique_ttl")]
    pub(crate) unique: Option<String>,
    /// How long the --unique key holds (needed with --unique).
    #[arg(long, value_parser = parse_duration, value_name = "DURATION", requires = "unique")]
    pub(crate) unique_ttl: Option<Duration>,
    /// Per-attempt timeout [library default: 30m].
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub(crate) timeout: Option<Duration>,
    /// Where audit records go (see `sealq audit --help`).
    #[arg(long, value_enum, env = "SEALQ_AUDIT", default_value_t = AuditSinkKind::File)]
    pub(crate) audit: AuditSinkKind,
    /// Start although the keyring holds none of the keys the broker has
    /// recorded (a deliberate new deployment on a broker an older keyring
    /// used; tasks that keyring sealed stay unopened). A key id the broker
    /// knows with another secret is refused all the same.
    #[arg(long)]
    pub(crate) accept_new_keyring: bool,
}

/// `sealq worker`.
#[derive(Debug, Args)]
pub(crate) struct WorkerArgs {
    /// Queues with optional weights: `critical:6,default:3,low`.
    #[arg(long, default_value = "default", value_name = "QUEUES")]
    pub(crate) queues: String,
    /// Strict priority: a queue runs only when every heavier queue is empty.
    #[arg(long)]
    pub(crate) strict: bool,
    /// Shell command run for each task (`sh -c CMD`). It gets the payload as
    /// JSON on stdin; exit status 0 means success, any other status
    /// schedules a retry.
    ///
    /// Its stdout (at most 64 KiB; more fails the task without a retry)
    /// becomes the task's result and the last 4 KiB of its stderr the
    /// task's error, both sealed, neither printed by the worker. It runs in
    /// a process group of its own: when it exits, times out or is stopped
    /// by a shutdown, the whole group gets SIGTERM, then SIGKILL 2 s later.
    ///
    /// Its environment is not the worker's: it gets SEALQ_TASK_ID,
    /// SEALQ_TASK_TYPE, SEALQ_QUEUE and SEALQ_ATTEMPT, the worker's PATH,
    /// HOME, LANG, LC_ALL, TZ and TMPDIR (those that are set), and the
    /// variables named with --exec-env; nothing else. The keyring
    /// (SEALQ_KEYRING, SEALQ_KEYRING_TOML) and the broker URL with its
    /// password (SEALQ_BROKER) never reach it.
    #[arg(long, value_name = "CMD")]
    pub(crate) exec: String,
    /// Also pass the worker's variable NAME to the --exec command, if set
    /// (repeatable). SEALQ_KEYRING* and SEALQ_BROKER* are refused: the
    /// command gets the opened payload, never the keys or the broker.
    #[arg(long = "exec-env", value_name = "NAME")]
    pub(crate) exec_env: Vec<String>,
    /// Commands running at once.
    #[arg(long, short = 'c', default_value_t = 16)]
    pub(crate) concurrency: usize,
    /// Tasks leased ahead of free slots, fixed. Without it the prefetch
    /// adapts to the task rate: at least --concurrency, up to 16 ×
    /// --concurrency (4 × on SQLite; at most 4,096) when tasks are short. Prefetched tasks
    /// hold a lease while they wait: keep it small for long tasks.
    #[arg(long, value_name = "N")]
    pub(crate) prefetch: Option<usize>,
    /// On SIGINT/SIGTERM, how long to wait for running commands before
    /// ending them (their process groups: SIGTERM, SIGKILL 2 s later) and
    /// returning their tasks to the queue.
    #[arg(long, value_parser = parse_duration, default_value = "30s", value_name = "DURATION")]
    pub(crate) shutdown_timeout: Duration,
    /// Where audit records go (see `sealq audit --help`).
    #[arg(long, value_enum, env = "SEALQ_AUDIT", default_value_t = AuditSinkKind::File)]
    pub(crate) audit: AuditSinkKind,
    /// Start although the keyring holds none of the keys the broker has
    /// recorded, or the waiting tasks name (a deliberate new deployment on a
    /// broker an older keyring used; tasks that keyring sealed are held,
    /// never archived, and stay unopened). A key id the broker knows with
    /// another secret is refused all the same.
    #[arg(long)]
    pub(crate) accept_new_keyring: bool,
    /// Metrics and health endpoints (docs/metrics.md).
    #[command(flatten)]
    pub(crate) serve: crate::serve::ServeArgs,
}

/// `sealq tasks ...`.
#[derive(Debug, Subcommand)]
pub(crate) enum TasksCommand {
    /// List tasks, oldest first.
    List(ListArgs),
    /// Per-queue counts by state.
    Stats(StatsArgs),
    /// Print one task's opened payload, result and error (audited; the only
    /// command that shows plaintext).
    Reveal(RevealArgs),
    /// Delete tasks in any state (audited), named by `--id`, or every task
    /// a filter chooses (`--queue`, `--state`, `--reason`, `--older-than`,
    /// together; `--dry-run` to see what, `--yes` to do it). Exits 1 ("no
    /// task matched ...") unless every id named existed, or when the
    /// filter chose none.
    Delete(TaskIdsArgs),
    /// Move archived tasks back to pending (audited), named by `--id`, or
    /// every archived task a filter chooses (`--queue`, `--reason`,
    /// `--older-than`; `--dry-run` to see what, `--yes` to do it). Exits 1
    /// ("no task matched ...") unless every id named was an archived task,
    /// or when the filter chose none.
    Rerun(TaskIdsArgs),
}

/// Who acts, and where the audit record goes.
#[derive(Debug, Args)]
pub(crate) struct OperatorArgs {
    /// Who is acting (recorded in the audit log; default `$USER@host`).
    #[arg(long)]
    pub(crate) operator: Option<String>,
    /// Where the audit record goes.
    #[arg(long, value_enum, env = "SEALQ_AUDIT", default_value_t = AuditSinkKind::File)]
    pub(crate) audit: AuditSinkKind,
}

/// `sealq tasks reveal`.
#[derive(Debug, Args)]
pub(crate) struct RevealArgs {
    /// The task id.
    #[arg(long)]
    pub(crate) id: String,
    #[command(flatten)]
    pub(crate) op: OperatorArgs,
}

/// `sealq tasks delete` / `rerun`.
#[derive(Debug, Args)]
pub(crate) struct TaskIdsArgs {
    /// Task ids (repeat or separate with commas). Without ids, a filter
    /// chooses the tasks.
    #[arg(
        long = "id",
        value_delimiter = ',',
        required_unless_present_any = ["queue", "state", "reason", "older_than"],
        conflicts_with_all = ["queue", "state", "reason", "older_than", "dry_run", "max", "json"]
    )]
    pub(crate) ids: Vec<String>,
    #[command(flatten)]
    pub(crate) bulk: BulkFilterArgs,
    #[command(flatten)]
    pub(crate) op: OperatorArgs,
}

/// `sealq tasks delete|rerun` by filter: which tasks, and how to act.
#[derive(Debug, Args)]
pub(crate) struct BulkFilterArgs {
    /// Only tasks of this queue.
    #[arg(long, short = 'q')]
    pub(crate) queue: Option<String>,
    /// Only tasks in this state: scheduled, pending, active, retry,
    /// completed, archived (`rerun`: archived only, the default).
    #[arg(long, short = 's')]
    pub(crate) state: Option<String>,
    /// Only archived tasks archived for this reason (exhausted, integrity,
    /// expired, replay, erased, unknown_type, decode, skip_retry,
    /// cancelled, deadline_exceeded, reference_missing).
    #[arg(long, value_name = "REASON")]
    pub(crate) reason: Option<String>,
    /// Only tasks that entered their current state (enqueued, retried,
    /// completed, archived …) at least this long ago (`30m`, `7d`, …).
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub(crate) older_than: Option<Duration>,
    /// Count and list what would be acted on; change nothing.
    #[arg(long, conflicts_with = "yes")]
    pub(crate) dry_run: bool,
    /// Act on the tasks chosen (a filter run refuses to act without it).
    #[arg(long, short = 'y')]
    pub(crate) yes: bool,
    /// Act on at most this many tasks (run again for the rest).
    #[arg(long, value_name = "N")]
    pub(crate) max: Option<u64>,
    /// Tasks per batch: one listing, one broker call and one audit record
    /// each. An interrupted run has done whole batches; run it again for
    /// what is left.
    #[arg(long, value_name = "N", default_value_t = 500)]
    pub(crate) batch: usize,
    /// Print the report as JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

/// `sealq queues ...`.
#[derive(Debug, Subcommand)]
pub(crate) enum QueuesCommand {
    /// Stop workers from taking tasks of a queue (audited).
    Pause(QueueArgs),
    /// Let workers take tasks of a paused queue again (audited).
    Resume(QueueArgs),
    /// Cap how many tasks may wait in a queue (scheduled, pending and retry
    /// together): while it holds that many, enqueues into it are refused
    /// with "queue is full", for every producer. Tasks already stored are
    /// kept. Audited (`queue_limited`)
    Limit(QueueLimitArgs),
    /// Limit how fast a queue's tasks are started, across every worker: at
    /// most `--limit N` per `--per DURATION` (a token bucket; bursts of up to
    /// N). Audited (`queue_rate_limited`)
    Rate(QueueRateArgs),
    /// One row per queue: tasks by state (scheduled, pending, active, retry,
    /// completed, archived), whether it is paused, its rate limit and its
    /// cap on waiting tasks. Read-only.
    List(QueuesListArgs),
}

/// `sealq queues list`.
#[derive(Debug, Args)]
pub(crate) struct QueuesListArgs {
    /// Print a JSON array, one object per queue.
    #[arg(long)]
    pub(crate) json: bool,
}

/// `sealq queues rate`.
#[derive(Debug, Args)]
pub(crate) struct QueueRateArgs {
    /// The queue.
    #[arg(long, short = 'q')]
    pub(crate) queue: String,
    /// Tasks per period (at least 1).
    #[arg(
        long,
        value_name = "N",
        required_unless_present = "clear",
        conflicts_with = "clear",
        requires = "per"
    )]
    pub(crate) limit: Option<u64>,
    /// The period (`1s`, `500ms`, `1m`, …).
    #[arg(long, value_parser = parse_duration, value_name = "DURATION", conflicts_with = "clear")]
    pub(crate) per: Option<std::time::Duration>,
    /// Remove the queue's rate limit.
    #[arg(long)]
    pub(crate) clear: bool,
    /// Act on a queue this broker has never seen (no tasks, no settings):
    /// without it such a name is refused as a likely misspelling.
    #[arg(long)]
    pub(crate) create: bool,
    #[command(flatten)]
    pub(crate) op: OperatorArgs,
}

/// `sealq queues limit`.
#[derive(Debug, Args)]
pub(crate) struct QueueLimitArgs {
    /// The queue.
    #[arg(long, short = 'q')]
    pub(crate) queue: String,
    /// The most waiting tasks the queue may hold.
    #[arg(
        long,
        value_name = "N",
        required_unless_present = "clear",
        conflicts_with = "clear"
    )]
    pub(crate) max_depth: Option<u64>,
    /// Remove the queue's cap.
    #[arg(long)]
    pub(crate) clear: bool,
    /// Act on a queue this broker has never seen (no tasks, no settings):
    /// without it such a name is refused as a likely misspelling.
    #[arg(long)]
    pub(crate) create: bool,
    #[command(flatten)]
    pub(crate) op: OperatorArgs,
}

/// `sealq queues pause|resume`.
#[derive(Debug, Args)]
pub(crate) struct QueueArgs {
    /// The queue.
    #[arg(long, short = 'q')]
    pub(crate) queue: String,
    /// Act on a queue this broker has never seen (no tasks, no settings):
    /// without it such a name is refused as a likely misspelling.
    #[arg(long)]
    pub(crate) create: bool,
    #[command(flatten)]
    pub(crate) op: OperatorArgs,
}

/// `sealq tasks list`.
#[derive(Debug, Args)]
pub(crate) struct ListArgs {
    /// Only this queue.
    #[arg(long, short = 'q')]
    pub(crate) queue: Option<String>,
    /// Only this state: scheduled, pending, active, retry, completed, archived.
    #[arg(long, short = 's')]
    pub(crate) state: Option<String>,
    /// At most this many tasks (a page). When more exist, the command for
    /// the next page is printed on stderr.
    #[arg(long, default_value_t = 100)]
    pub(crate) limit: usize,
    /// Only tasks whose id sorts after this one: the cursor of the next
    /// page (the last id of the previous page; `next_cursor` in `--json`).
    #[arg(long, value_name = "ID")]
    pub(crate) after: Option<String>,
    /// Print JSON: `{"tasks": [...], "next_cursor": ID or null}`.
    #[arg(long)]
    pub(crate) json: bool,
}

/// `sealq tasks stats`.
#[derive(Debug, Args)]
pub(crate) struct StatsArgs {
    /// Print JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

/// `sealq payloads ...`.
#[derive(Debug, Subcommand)]
pub(crate) enum PayloadsCommand {
    /// Per queue and task type: count, p50/p99/max sealed size, the queue's
    /// budget; over-budget types flagged; largest first (refactor those first:
    /// put a reference in the payload and fetch the data in the handler).
    /// Reads sizes only, never opens a payload: no keyring needed.
    Report(PayloadReportArgs),
}

/// `sealq payloads report`.
#[derive(Debug, Args)]
pub(crate) struct PayloadReportArgs {
    /// Budget for serialized payloads in queues without their own, bytes
    /// [default: 65536, the library's default policy].
    #[arg(long, value_name = "BYTES")]
    pub(crate) budget: Option<usize>,
    /// A queue's own budget, `QUEUE=BYTES`; repeat for several queues.
    #[arg(long, value_name = "QUEUE=BYTES")]
    pub(crate) queue_budget: Vec<String>,
    /// Exit with status 1 when a type is over its budget (for CI).
    #[arg(long)]
    pub(crate) check: bool,
    /// Print JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

/// How `bench` schedules its two phases.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum BenchMode {
    /// Enqueue everything, then process everything; each phase timed alone.
    Phased,
    /// Enqueue and process at the same time; end-to-end rate over the whole run.
    Pipelined,
}

/// SQLite durability for bench's throw-away file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Synchronous {
    /// fsync at checkpoints only (survives process crashes, not power loss).
    Normal,
    /// fsync every commit (the broker's default).
    Full,
}

/// `sealq bench`.
#[derive(Debug, Args)]
pub(crate) struct BenchArgs {
    /// How many tasks.
    #[arg(long, default_value_t = 10_000)]
    pub(crate) tasks: usize,
    /// Approximate size of each sealed payload, bytes.
    #[arg(long, default_value_t = 256)]
    pub(crate) payload_bytes: usize,
    /// Worker concurrency.
    #[arg(long, short = 'c', default_value_t = 64)]
    pub(crate) concurrency: usize,
    /// Tasks the worker leases ahead of free slots, fixed. Without it the
    /// prefetch adapts to the task rate (at least --concurrency, at most 16 ×
    /// --concurrency, 4 × on SQLite, and 4,096), as `worker` does.
    #[arg(long, value_name = "N")]
    pub(crate) prefetch: Option<usize>,
    /// Tasks per enqueue batch (one broker round trip each; with --bulk, at
    /// most the broker's bulk batch limit: 256 on Redis).
    #[arg(long, default_value_t = 1000)]
    pub(crate) batch: usize,
    /// Phased (enqueue, then process) or pipelined (both at once).
    #[arg(long, value_enum, default_value_t = BenchMode::Phased)]
    pub(crate) mode: BenchMode,
    /// Cap the producer at this many tasks per second (0: as fast as it can).
    /// With `--mode pipelined` and a rate below the processing rate, the
    /// latency figures show how late tasks start under a sustained load
    /// rather than how long a backlog takes to drain.
    #[arg(long, default_value_t = 0, value_name = "TASKS_PER_SEC")]
    pub(crate) rate: u64,
    /// SQLite `synchronous` for the throw-away file (ignored with --broker).
    #[arg(long, value_enum, default_value_t = Synchronous::Full)]
    pub(crate) synchronous: Synchronous,
    /// Print the results as JSON.
    #[arg(long)]
    pub(crate) json: bool,
    /// Write audit records while benchmarking, to measure their cost
    /// (`file`: JSON lines next to the database; `sqlite`: audit tables).
    #[arg(long, value_enum, default_value_t = AuditSinkKind::Off)]
    pub(crate) audit: AuditSinkKind,
    /// Concurrent enqueue loops, each sending its own batches (a service
    /// enqueueing from many requests at once). `--rate` is shared among them.
    /// With `--role producer` the process runs one runtime worker thread
    /// per loop, at most one per core (`TOKIO_WORKER_THREADS` overrides).
    #[arg(long, default_value_t = 1)]
    pub(crate) producers: usize,
    /// Enqueue with `Client::enqueue_bulk`: each loop makes one call for all
    /// its tasks, sent in batches of `--batch` while the next batch is sealed
    /// (not atomic across batches). Cannot be combined with `--rate`.
    #[arg(long)]
    pub(crate) bulk: bool,
    /// What this process does: both sides, or one side only, so that a
    /// producer process and a worker process can be measured apart (both
    /// need the same `--broker` and `--keyring`; start the producer first
    /// with `--mode phased`, or both at once with `--mode pipelined`).
    #[arg(long, value_enum, default_value_t = BenchRole::Both)]
    pub(crate) role: BenchRole,
    /// How long each completed task is kept before the worker's maintenance
    /// purges it (default: the task default, 1 day). A soak run sets it
    /// short so that the store reaches a steady size.
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub(crate) retention: Option<Duration>,
    /// Report the processing rate of every N completed tasks too (`segments`
    /// in the JSON): whether throughput holds over a long run.
    #[arg(long, value_name = "N")]
    pub(crate) segment: Option<u64>,
}

/// Which side of the work a `sealq bench` process does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum BenchRole {
    /// Enqueue and process in this process (a throw-away keyring).
    Both,
    /// Only enqueue `--tasks` tasks, then report the enqueue rate.
    Producer,
    /// Only process `--tasks` tasks (waiting for them to arrive), then
    /// report the processing rate, latency and this process's memory.
    Worker,
}

/// Where `worker`, `enqueue`, `demo` and `bench` write audit records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum AuditSinkKind {
    /// No audit records.
    Off,
    /// JSON lines next to the SQLite file: `<db>.audit.jsonl` and
    /// `<db>.audit.checkpoints.jsonl` (the default). For a Redis broker,
    /// which has no file beside it: its audit streams, as `redis`; for a
    /// Postgres broker: its audit tables, as `postgres`.
    File,
    /// Tables `audit_records` and `audit_checkpoints` in the SQLite file.
    Sqlite,
    /// The Redis broker's streams `PREFIX:audit:records` and
    /// `PREFIX:audit:checkpoints` (what `file` means for a Redis broker).
    Redis,
    /// The Postgres broker's tables `sealq.audit_records` and
    /// `sealq.audit_checkpoints` (what `file` means for a Postgres broker).
    Postgres,
}

/// `sealq audit ...`.
#[derive(Debug, Subcommand)]
pub(crate) enum AuditCommand {
    /// Verify every writer's chain and every signed checkpoint. Exit 0 only
    /// when everything verifies; 3 when the only faults are writers whose
    /// records are MACed with an unknown audit key; otherwise print each
    /// fault and exit 1.
    Verify(AuditVerifyArgs),
    /// Write a small signed anchor of the whole log (every writer's last
    /// record and the checkpoint store's head), to keep somewhere the
    /// broker's writers cannot reach; `audit verify --anchor FILE` then
    /// detects a cut tail, a replaced or an emptied log. The log must
    /// verify first.
    Anchor(AuditAnchorArgs),
    /// Print one task's audit history, oldest first, verified.
    ///
    /// The log is checked with the keyring's audit keys first: a record whose
    /// MAC or chain does not verify is followed by `  !! NOT VERIFIED: why`
    /// (on stderr with --json), and the command exits 1 when the log has any
    /// fault. Without a keyring, a note on stderr says nothing was verified.
    Show(AuditShowArgs),
    /// Print the keyring's audit public key (base64), for `verify --public-key`.
    PublicKey,
}

/// Where an audit log is read from.
#[derive(Debug, Args)]
pub(crate) struct AuditSource {
    /// A JSON-lines audit file (its checkpoints are read from
    /// `NAME.checkpoints.jsonl` beside it). Without it, the log of the
    /// --broker is read.
    #[arg(long, value_name = "PATH")]
    pub(crate) file: Option<PathBuf>,
    /// Which log of the --broker: the JSON-lines files next to the database
    /// (default) or its audit tables; for a Redis broker, always its audit
    /// streams.
    #[arg(long, value_enum, default_value_t = AuditSinkKind::File)]
    pub(crate) sink: AuditSinkKind,
}

/// `sealq audit verify`.
#[derive(Debug, Args)]
pub(crate) struct AuditVerifyArgs {
    /// What to verify.
    #[command(flatten)]
    pub(crate) source: AuditSource,
    /// Verify with only the audit public key (base64, from `sealq audit
    /// public-key`) instead of a keyring: checkpoints and every record they
    /// cover are verified; records after a writer's last checkpoint cannot be.
    #[arg(long, value_name = "B64")]
    pub(crate) public_key: Option<String>,
    /// The writers' checkpoint window: more records than this after a
    /// writer's last checkpoint is a fault.
    #[arg(long, default_value_t = 1000, value_name = "N")]
    pub(crate) checkpoint_every: u64,
    /// An anchor from `sealq audit anchor`: fail unless the log extends it
    /// (every writer it names still there through its seq, unchanged, and
    /// the checkpoints it covers still first in their store).
    #[arg(long, value_name = "FILE")]
    pub(crate) anchor: Option<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

/// `sealq audit anchor`.
#[derive(Debug, Args)]
pub(crate) struct AuditAnchorArgs {
    /// What to anchor.
    #[command(flatten)]
    pub(crate) source: AuditSource,
    /// Write the anchor (JSON) to this file instead of stdout (created
    /// 0600; an existing file is replaced).
    #[arg(long, value_name = "FILE")]
    pub(crate) out: Option<PathBuf>,
}

/// `sealq audit show`.
#[derive(Debug, Args)]
pub(crate) struct AuditShowArgs {
    /// The task id.
    #[arg(long, value_name = "ID")]
    pub(crate) task: String,
    /// What to read.
    #[command(flatten)]
    pub(crate) source: AuditSource,
    /// Print a JSON array of the records as stored (a batch record such as
    /// `leased_batch` whole, with the other tasks of its batch), instead of
    /// this task's history as text
    #[arg(long)]
    pub(crate) json: bool,
}
