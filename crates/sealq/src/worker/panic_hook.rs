//! Keeping a handler panic's message off stderr
//! ([`WorkerBuilder::quiet_handler_panics`](super::WorkerBuilder::quiet_handler_panics)).
//!
//! A panic's message may hold payload data (`panic!("bad card {card}")`),
//! and Rust's default panic hook prints it to stderr before the worker's
//! `catch_unwind` sees it. The worker seals that message as the task's
//! error (`outcome::outcome_of`), so printing it would be the one place it
//! leaks. The panic hook is process-wide, so the worker installs one only
//! when asked: [`install`] sets, once per process, a hook that stays silent
//! for a panic raised while a handler future is being polled on this thread
//! ([`QuietPanics`] marks those polls) and hands every other panic to the
//! hook that was there before (by default, the one that prints it).
//!
//! What counts as the handler's: the code that runs inside its future's
//! `poll`. A thread or tokio task the handler spawns is not inside that
//! poll: its panics go to the previous hook and are printed.

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::sync::Once;
use std::task::{Context, Poll};

thread_local! {
    /// Whether this thread is polling a handler future of a worker that
    /// asked for quiet panics.
    static IN_HANDLER: Cell<bool> = const { Cell::new(false) };
}

/// Install the quiet hook, once per process, chained to the hook set
/// before the first call. Later calls do nothing, so several workers in
/// one process install it once (and never chain it to itself).
pub(crate) fn install() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if IN_HANDLER.with(Cell::get) {
                // A handler's panic: its message is sealed as the task's
                // error and the worker logs the failure (detail `panic`)
                // with the task id; print nothing of it here.
                return;
            }
            previous(info);
        }));
    });
}

/// Whether a panic raised on this thread now would be a quiet handler
/// panic (tests).
#[cfg(test)]
pub(crate) fn in_handler() -> bool {
    IN_HANDLER.with(Cell::get)
}

/// A handler future whose polls are marked as the handler's, so the quiet
/// hook stays silent for panics raised in them. The mark is set around each
/// `poll` (a future may move between tokio's worker threads between polls)
/// and restored on the way out, unwinding included.
pub(crate) struct QuietPanics<F> {
    inner: F,
    quiet: bool,
}

impl<F> QuietPanics<F> {
    /// Wrap `inner`; with `quiet` false the polls are not marked (the worker
    /// did not ask for quiet panics, so its handlers' panics are printed
    /// even if another worker in the process installed the hook).
    pub(crate) fn new(inner: F, quiet: bool) -> Self {
        Self { inner, quiet }
    }
}

/// Restores the previous mark when dropped, also while a panic unwinds out
/// of the poll.
struct Restore(bool);

impl Drop for Restore {
    fn drop(&mut self) {
        IN_HANDLER.with(|f| f.set(self.0));
    }
}

impl<F: Future + Unpin> Future for QuietPanics<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        if !self.quiet {
            return Pin::new(&mut self.inner).poll(cx);
        }
        let _restore = Restore(IN_HANDLER.with(|f| f.replace(true)));
        Pin::new(&mut self.inner).poll(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mark_is_set_only_inside_a_quiet_poll_and_restored_after_a_panic() {
        let mut seen = Vec::new();
        let fut = QuietPanics::new(
            Box::pin(async {
                assert!(in_handler());
            }),
            true,
        );
        futures::executor::block_on(fut);
        seen.push(in_handler());
        let loud = QuietPanics::new(Box::pin(async { in_handler() }), false);
        seen.push(futures::executor::block_on(loud));
        let panicking = QuietPanics::new(Box::pin(async { panic!("inside") }), true);
        install();
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            futures::executor::block_on(panicking)
        }));
        assert!(caught.is_err());
        seen.push(in_handler());
        assert_eq!(seen, [false, false, false]);
    }
}
