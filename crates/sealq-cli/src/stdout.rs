//! Writing to stdout without panicking when its reader has gone.
//!
//! `println!` panics when stdout is a pipe whose reader closed
//! (`sealq tasks list | head -1`). Every command writes through [`out!`]
//! and [`outln!`] instead: when the write fails because the reader has
//! gone (`BrokenPipe`), the process ends quietly with exit 0, as a
//! command killed by `SIGPIPE` would have ended without a message; any
//! other write error ends it with exit 1 and one line on stderr.

use std::io::Write as _;

/// Write `args` to stdout, ending the process as the module says on failure.
pub(crate) fn write(args: std::fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_fmt(args).and_then(|()| out.flush()) {
        failed(&e);
    }
}

/// End the process after a failed write to stdout: quietly with exit 0
/// when the reader has gone, else with exit 1 and a message on stderr.
pub(crate) fn failed(e: &std::io::Error) -> ! {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        std::process::exit(0);
    }
    eprintln!("error: cannot write to stdout: {e}");
    std::process::exit(1);
}

/// `print!` that does not panic on a closed stdout (see the module).
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::stdout::write(format_args!($($arg)*))
    };
}

/// `println!` that does not panic on a closed stdout (see the module).
macro_rules! outln {
    () => {
        $crate::stdout::write(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::stdout::write(format_args!("{}\n", format_args!($($arg)*)))
    };
}

pub(crate) use {out, outln};
