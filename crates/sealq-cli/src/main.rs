//! The `sealq` command. Thin: parse arguments, set up logging, run one
//! command from [`cmd`], map its error to the documented exit code.
//!
//! Exit codes: 0 success, 1 runtime failure, 2 usage or configuration error.

mod arenas;
mod args;
mod broker_url;
mod cmd;
mod duration;
mod error;
mod logging;
mod output;
mod serve;
mod skipped;
mod stdout;
mod text_pages;

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches};

/// Runtime worker threads for commands that size them to their work
/// (`None`: tokio's default, one per core, or `TOKIO_WORKER_THREADS`).
///
/// A benchmark producer process runs exactly `--producers` loops, so it
/// gets one worker per loop (at most one per core). With more workers than
/// loops, an idle worker sits parked in the I/O driver, and every reply has
/// to wake it, even while the loop's call spins for its reply (Redis
/// `spin_wait`): one sequential loop measured 9,193 enqueues/s on two
/// workers and 11,742/s on one (docs/benchmarks.md, "Spin-then-park").
/// Batch enqueues ran at the same rate either way. `TOKIO_WORKER_THREADS`
/// still decides when set.
fn runtime_workers(command: &args::Command) -> Option<usize> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    workers_for(
        command,
        std::env::var_os("TOKIO_WORKER_THREADS").is_some(),
        cores,
    )
}

/// [`runtime_workers`] given whether `TOKIO_WORKER_THREADS` is set and the cores.
fn workers_for(command: &args::Command, env_set: bool, cores: usize) -> Option<usize> {
    match command {
        args::Command::Bench(a) if !env_set && a.role == args::BenchRole::Producer => {
            Some(a.producers.clamp(1, cores.max(1)))
        }
        _ => None,
    }
}

fn main() -> ExitCode {
    // Before anything allocates on another thread (see the module).
    arenas::limit();
    let matches = args::Cli::command().get_matches();
    let cli = args::Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    logging::init(
        cli.verbose,
        cli.log_format,
        matches!(cli.command, args::Command::Worker(_)),
    );
    let broker_on_command_line = cmd::given_on_command_line(&matches, "broker");

    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = runtime_workers(&cli.command) {
        builder.worker_threads(n);
    }
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let global = cmd::Global {
        broker: cli.broker,
        broker_on_command_line,
        keyring: cli.keyring,
    };
    // Run the command as a task on the runtime's workers rather than on this
    // thread: awaits on the broker connections then wake a worker thread
    // instead of bouncing between this thread and the workers (sequential
    // enqueue against Redis measured ~5.1k/s before, see docs/benchmarks.md).
    let outcome = runtime.block_on(async move {
        tokio::spawn(cmd::run(global, cli.command))
            .await
            .unwrap_or_else(|e| {
                Err(error::CliError::runtime(format!(
                    "the command panicked: {e}"
                )))
            })
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{}", e.render());
            e.exit_code()
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    fn command(argv: &[&str]) -> args::Command {
        let mut all = vec!["sealq"];
        all.extend_from_slice(argv);
        args::Cli::try_parse_from(all).unwrap().command
    }

    #[test]
    fn a_bench_producer_gets_one_runtime_worker_per_loop() {
        let one = command(&["--broker", "redis://h", "bench", "--role", "producer"]);
        assert_eq!(workers_for(&one, false, 2), Some(1));
        let four = command(&["bench", "--role", "producer", "--producers", "4"]);
        assert_eq!(
            workers_for(&four, false, 2),
            Some(2),
            "at most one per core"
        );
        assert_eq!(workers_for(&four, false, 8), Some(4));
        assert_eq!(
            workers_for(&one, true, 2),
            None,
            "TOKIO_WORKER_THREADS decides"
        );
        let both = command(&["bench"]);
        assert_eq!(workers_for(&both, false, 2), None);
        let worker = command(&["bench", "--role", "worker"]);
        assert_eq!(workers_for(&worker, false, 2), None);
    }
}
