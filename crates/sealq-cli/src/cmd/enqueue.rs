//! `sealq enqueue`: seal and enqueue one task, print its id.

use std::io::Read;

use sealq::{Client, EnqueueOptions, RawTask};

use super::Global;
use crate::args::EnqueueArgs;
use crate::error::{CliError, CliResult, context, msg};

/// Read and parse the payload, seal it, enqueue it, print the id.
pub(crate) async fn run(global: &Global, args: EnqueueArgs) -> CliResult {
    let keyring = global.full_keyring("enqueue (it seals the payload)")?;
    let value = read_payload(&args)?;
    let audit = args.audit;

    let mut options = EnqueueOptions::new().queue(args.queue);
    if let Some(s) = args.subject {
        options = options.subject(s);
    }
    if let Some(d) = args.delay {
        options = options.delay(d);
    }
    if let Some(n) = args.max_retries {
        options = options.max_retries(n);
    }
    if let (Some(key), Some(ttl)) = (args.unique, args.unique_ttl) {
        options = options.unique(key, ttl);
    }
    if let Some(t) = args.timeout {
        options = options.timeout(t);
    }
    let task = RawTask::from_json(args.kind, &value, options)?;

    let opened = global.open_broker()?;
    let auditor = super::audit::start(opened.audit_home(), audit, &keyring)?;
    let mut builder = Client::from_stores(opened.conn.stores(), keyring)
        .accept_new_keyring(args.accept_new_keyring);
    if let Some(a) = &auditor {
        builder = builder.audit(a.clone());
    }
    let result = builder.build().enqueue_raw(task).await;
    // A policy refusal is audited too: close the log before reporting it.
    super::audit::finish(auditor).await?;
    let id = result?;
    crate::stdout::outln!("{id}");
    Ok(())
}

/// The payload JSON from `--payload` or `--payload-file` (`-` is stdin).
/// Parse errors name the position, never the text.
fn read_payload(args: &EnqueueArgs) -> CliResult<serde_json::Value> {
    let (text, origin) = match (&args.payload, &args.payload_file) {
        (Some(text), _) => (text.clone(), "--payload".to_owned()),
        (None, Some(path)) if path.as_os_str() == "-" => {
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .map_err(|e| CliError::usage(context("cannot read the payload from stdin", e)))?;
            (s, "stdin".to_owned())
        }
        (None, Some(path)) => {
            let s = std::fs::read_to_string(path).map_err(|e| {
                CliError::usage(context(
                    format!("cannot read payload file {}", path.display()),
                    e,
                ))
            })?;
            (s, path.display().to_string())
        }
        (None, None) => {
            return Err(CliError::usage(msg(
                "a payload is required: --payload JSON or --payload-file FILE",
            )));
        }
    };
    serde_json::from_str(&text).map_err(|e| {
        CliError::usage(msg(format!(
            "invalid JSON payload in {origin}: {} at line {} column {}",
            describe_json_error(&e),
            e.line(),
            e.column()
        )))
    })
}

/// The kind of a JSON error, without serde_json's position suffix.
pub(crate) fn describe_json_error(e: &serde_json::Error) -> String {
    let text = e.to_string();
    match text.rfind(" at line ") {
        Some(i) => text[..i].to_owned(),
        None => text,
    }
}
