//! `sealq erase --subject S`: erasure by crypto-shredding, with a receipt.

use sealq::Client;

use super::Global;
use crate::args::EraseArgs;
use crate::error::CliResult;

/// Erase one subject's tasks and destroy its data key; print the receipt.
pub(crate) async fn run(global: &Global, args: EraseArgs) -> CliResult {
    let keyring = global.full_keyring("erase a subject (it computes the subject tag)")?;
    let opened = global.open_broker()?;
    let auditor = super::audit::start(opened.audit_home(), args.audit, &keyring)?;
    let mut builder = Client::from_stores(opened.conn.stores(), keyring);
    if let Some(a) = &auditor {
        builder = builder.audit(a.clone());
    }
    let operator = args.operator.unwrap_or_else(default_operator);
    let result = builder
        .build()
        .erase_subject(&args.subject, &operator)
        .await;
    super::audit::finish(auditor).await?;
    let receipt = result?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&receipt).unwrap_or_default()
        );
    } else {
        let c = &receipt.counts;
        println!("erased subject tag {}", receipt.subject_tag);
        println!(
            "  tasks removed: {} (scheduled {}, pending {}, active {} archived as erased, retry {}, completed {}, archived {})",
            c.total(),
            c.scheduled,
            c.pending,
            c.active,
            c.retry,
            c.completed,
            c.archived
        );
        println!(
            "  data key destroyed: {}",
            if receipt.key_destroyed {
                "yes"
            } else {
                "no (none existed)"
            }
        );
        println!("  operator: {}", crate::output::safe(&receipt.operator));
    }
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
