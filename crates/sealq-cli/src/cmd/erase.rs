//! `sealq erase --subject S`: erasure by crypto-shredding, with a receipt;
//! `sealq erase --finalize`: make erasures final against restored copies of
//! the subject key store (`finalise.rs`).

use sealq::{Client, EraseOptions};

use super::Global;
use crate::args::EraseArgs;
use crate::error::CliResult;
use crate::output::safe;

/// Erase one subject (`--subject`) and print the receipt; then finalise
/// (`--finalize`) if asked.
pub(crate) async fn run(global: &Global, args: EraseArgs) -> CliResult {
    if let Some(subject) = &args.subject {
        erase_subject(global, &args, subject).await?;
    }
    if args.finalize {
        super::finalise::run(global, &args).await?;
    }
    Ok(())
}

async fn erase_subject(global: &Global, args: &EraseArgs, subject: &str) -> CliResult {
    let keyring = global.full_keyring("erase a subject (it computes the subject tag)")?;
    let opened = global.open_broker()?;
    let auditor = super::audit::start(opened.audit_home(), args.audit, &keyring)?;
    let mut builder = Client::from_stores(opened.conn.stores(), keyring);
    if let Some(a) = &auditor {
        builder = builder.audit(a.clone());
    }
    let operator = args.operator.clone().unwrap_or_else(default_operator);
    let options = if args.full_scan {
        EraseOptions::full_scan()
    } else {
        EraseOptions::default()
    };
    let result = builder
        .build()
        .erase_subject_with(subject, &operator, options)
        .await;
    super::audit::finish(auditor).await?;
    let receipt = result?;
    if args.json {
        crate::stdout::outln!(
            "{}",
            serde_json::to_string_pretty(&receipt).unwrap_or_default()
        );
        return Ok(());
    }
    let c = &receipt.counts;
    crate::stdout::outln!("erased subject tag {}", receipt.subject_tag);
    crate::stdout::outln!(
        "  tasks removed: {} (scheduled {}, pending {}, active {} archived as erased, retry {}, completed {}, archived {})",
        c.total(),
        c.scheduled,
        c.pending,
        c.active,
        c.retry,
        c.completed,
        c.archived
    );
    if receipt.full_scan {
        crate::stdout::outln!(
            "  found by the full scan (clear tag removed): {}",
            receipt.untagged_found
        );
    }
    crate::stdout::outln!(
        "  data key destroyed: {}",
        if receipt.key_destroyed {
            "yes"
        } else {
            "no (none existed)"
        }
    );
    for (ids, what) in [
        (
            &receipt.tag_mismatch,
            "carry the tag but are not the subject's (tag mismatch: their envelope does not \
             authenticate with the subject's key and tag); NOT erased",
        ),
        (
            &receipt.unverified,
            "carry the tag but could not be checked (the subject's key is gone, or a key this \
             keyring lacks sealed them); NOT erased",
        ),
    ] {
        if !ids.is_empty() {
            crate::stdout::outln!("  {} task(s) {what}:", ids.len());
            for id in ids {
                crate::stdout::outln!("    {}", safe(id));
            }
        }
    }
    crate::stdout::outln!("  operator: {}", safe(&receipt.operator));
    crate::stdout::outln!(
        "  final against restored copies of the subject key store once `sealq erase --finalize` \
         has run"
    );
    Ok(())
}

/// `$USER@host`, or `cli`.
pub(crate) fn default_operator() -> String {
    let user = std::env::var("USER").unwrap_or_else(|_| "cli".to_owned());
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_default();
    if host.is_empty() {
        user
    } else {
        format!("{user}@{host}")
    }
}
