//! The `sealq` command. Thin: parse arguments, set up logging, run one
//! command from [`cmd`], map its error to the documented exit code.
//!
//! Exit codes: 0 success, 1 runtime failure, 2 usage or configuration error.

mod args;
mod broker_url;
mod cmd;
mod duration;
mod error;
mod output;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches};
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let matches = args::Cli::command().get_matches();
    let cli = args::Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    init_tracing(cli.verbose);
    let broker_on_command_line = cmd::given_on_command_line(&matches, "broker");

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
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

/// Logs to stderr: `RUST_LOG` if set, else warn / info / debug / trace by `-v` count.
fn init_tracing(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}
