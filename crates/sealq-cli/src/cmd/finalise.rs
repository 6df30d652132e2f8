//! `sealq erase --finalize`: make every erasure so far final against
//! restored copies of the subject key store (finding 6 of the security
//! review). See `sealq::admin::finalise` for the steps.

use sealq::{Client, Keyring};

use super::Global;
use super::keys::{keyring_path, write_keyring};
use crate::args::EraseArgs;
use crate::error::{CliError, CliResult, msg};
use crate::output::safe;

/// Add a KEK epoch to the keyring file, re-wrap every subject key under it,
/// drop the older epochs (only when every key moved, or `--force`), audit.
pub(crate) async fn run(global: &Global, args: &EraseArgs) -> CliResult {
    let path = keyring_path(global, "erase --finalize")?;
    let mut keyring = Keyring::from_file(&path)?;
    keyring.require_sealing_keys("finalise erasures (it re-wraps subject keys)")?;
    let epoch = keyring.add_kek_epoch();
    // Saved before anything is wrapped under it: a key wrapped under an
    // epoch whose secret was never written would be lost.
    write_keyring(&path, &keyring)?;
    let opened = global.open_broker()?;
    let auditor = super::audit::start(opened.audit_home(), args.audit, &keyring)?;
    let mut builder = Client::from_stores(opened.conn.stores(), Keyring::from_file(&path)?);
    if let Some(a) = &auditor {
        builder = builder.audit(a.clone());
    }
    let client = builder.build();
    let operator = args
        .operator
        .clone()
        .unwrap_or_else(super::erase::default_operator);
    let result = async {
        let report = client.rewrap_subject_keys_for_finalise().await?;
        if !report.is_complete() && !args.force {
            let left: Vec<String> = report
                .remaining
                .iter()
                .map(|(k, n)| format!("{n} under {k}"))
                .collect();
            return Err(CliError::runtime(msg(format!(
                "not finalised: {} subject key(s) could not be re-wrapped under the new KEK epoch \
                 `{epoch}` ({}); the older epochs stay in {} (the new one is current). Run \
                 `sealq erase --finalize` again with a keyring that holds what wraps them, or \
                 add --force to drop them anyway (those keys are then lost for good)",
                report
                    .failed
                    .len()
                    .max(report.remaining.values().sum::<u64>() as usize),
                left.join(", "),
                path.display()
            ))));
        }
        let legacy = keyring.kek_opens_legacy();
        let retired = keyring.retire_kek_epochs()?;
        write_keyring(&path, &keyring)?;
        client
            .record_erasure_finalised(&report, &retired, legacy, &operator)
            .await?;
        Ok((report, retired, legacy))
    }
    .await;
    super::audit::finish(auditor).await?;
    let (report, retired, legacy) = result?;
    if args.json {
        let out = serde_json::json!({
            "kek_epoch": report.kek_epoch,
            "rewrapped": report.rewrapped,
            "retired": retired,
            "legacy_closed": legacy,
            "failed": report.failed.len(),
        });
        crate::stdout::outln!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
    } else {
        crate::stdout::outln!(
            "finalised erasures: every subject key is wrapped under KEK epoch `{}` ({} re-wrapped)",
            report.kek_epoch,
            report.rewrapped
        );
        if !retired.is_empty() || legacy {
            crate::stdout::outln!(
                "  dropped from {}: {}{}",
                path.display(),
                retired.join(", "),
                if legacy {
                    " and the legacy KEKs (derived from the sealing keys)"
                } else {
                    ""
                }
            );
        }
        if !report.failed.is_empty() {
            crate::stdout::outln!(
                "  {} subject key(s) could not be re-wrapped and are lost (--force)",
                report.failed.len()
            );
        }
        crate::stdout::outln!("  operator: {}", safe(&operator));
        crate::stdout::outln!(
            "next: deploy {} to every worker and producer and restart them (a worker with the old \
             keyring holds subject tasks instead of running them); destroy every copy of the \
             keyring file from before",
            path.display()
        );
    }
    Ok(())
}
