//! Issue 21: a handler can use `?` on an `anyhow::Error`, a boxed error
//! (with or without `Send + Sync`) and any `std::error::Error`, sent or not;
//! the message keeps the error's text and, for anyhow, its context chain.

use anyhow::Context;
use sealq::{Failure, HandlerResult, TaskError};

fn anyhow_failure() -> anyhow::Result<()> {
    Err(anyhow::anyhow!("connection refused")).context("calling the mail API")
}

fn with_anyhow() -> HandlerResult {
    anyhow_failure()?;
    Ok(())
}

fn with_boxed_send_sync() -> HandlerResult {
    let e: Box<dyn std::error::Error + Send + Sync> = "boxed send sync".into();
    Err(e)?;
    Ok(())
}

fn with_boxed() -> HandlerResult {
    let e: Box<dyn std::error::Error> = "boxed".into();
    Err(e)?;
    Ok(())
}

fn with_std_error() -> HandlerResult {
    let _: u8 = "300".parse()?;
    Ok(())
}

fn with_io_error() -> HandlerResult {
    Err(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        "upstream slow",
    ))?;
    Ok(())
}

/// A `PoisonError<MutexGuard>` is neither `Send` nor `'static`.
fn with_unsendable_error() -> HandlerResult {
    let m = std::sync::Mutex::new(0);
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _g = m.lock().unwrap();
        panic!("poison it");
    }));
    let _g = m.lock()?;
    Ok(())
}

fn with_text() -> HandlerResult {
    Err("plain text")?;
    Ok(())
}

fn check(result: HandlerResult, want: &str) {
    let e: TaskError = result.expect_err("it failed");
    assert_eq!(e.failure, Failure::Retry, "{want}");
    assert_eq!(e.message(), want);
}

#[test]
fn rough_edge_handler_question_mark_converts_every_error() {
    check(with_anyhow(), "calling the mail API: connection refused");
    check(with_boxed_send_sync(), "boxed send sync");
    check(with_boxed(), "boxed");
    check(with_std_error(), "number too large to fit in target type");
    check(with_io_error(), "upstream slow");
    check(
        with_unsendable_error(),
        "poisoned lock: another task failed inside",
    );
    check(with_text(), "plain text");
}

/// The bounds `WorkerBuilder::handle` puts on a handler.
fn assert_handler<T, F, Fut>(_f: F)
where
    T: sealq::Task,
    F: Fn(T, sealq::TaskContext) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = HandlerResult> + Send + 'static,
{
}

/// A typed handler's async body uses `?` on anyhow and on a boxed error:
/// this compiles, which is the point.
#[test]
fn rough_edge_handler_async_body_uses_anyhow() {
    #[derive(serde::Serialize, serde::Deserialize)]
    struct Mail {
        to: String,
    }
    impl sealq::Task for Mail {
        const KIND: &'static str = "mail";
    }
    async fn send(m: &Mail) -> anyhow::Result<()> {
        anyhow::bail!("smtp down for {}", m.to.len())
    }
    async fn lookup() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        Ok(())
    }
    assert_handler(|m: Mail, _ctx: sealq::TaskContext| async move {
        lookup().await?;
        send(&m).await.context("sending")?;
        Ok(())
    });
}
