//! `sealq audit anchor` and the `--anchor FILE` of `audit verify`
//! (finding 5 of the security review): a small signed statement of the
//! whole log, kept elsewhere, that the log must extend.

use std::io::Write as _;
use std::path::Path;

use sealq::audit::{Anchor, AuditKeys, VerifyOptions, make_anchor, verify};

use super::Global;
use super::audit::read_sink;
use crate::args::AuditAnchorArgs;
use crate::error::{CliError, CliResult, context, msg};
use crate::output::safe;

/// Read an anchor file; a missing or malformed one is a usage error naming it.
pub(crate) fn read_anchor(path: &Path) -> CliResult<Anchor> {
    let text = std::fs::read(path).map_err(|e| {
        CliError::usage(context(
            format!("cannot read the anchor {}", path.display()),
            e,
        ))
    })?;
    serde_json::from_slice(&text).map_err(|e| {
        CliError::usage(msg(format!(
            "{} is not a sealq audit anchor (as `sealq audit anchor` writes): {e}",
            path.display()
        )))
    })
}

/// `sealq audit anchor [--out FILE]`: verify the log with the keyring's
/// audit keys, then write a signed anchor of it.
pub(crate) async fn anchor(global: &Global, args: AuditAnchorArgs) -> CliResult {
    let keys = AuditKeys::from_keyring(&global.keyring()?)?;
    let (sink, position) = read_sink(global, &args.source)?;
    let records = sink
        .read_records()
        .await
        .map_err(|e| CliError::runtime(context("cannot read the audit log", e)))?;
    let checkpoints = sink
        .read_checkpoints()
        .await
        .map_err(|e| CliError::runtime(context("cannot read the audit checkpoints", e)))?;
    let report = verify(
        &records,
        checkpoints.as_deref(),
        &keys,
        &VerifyOptions::default(),
    );
    // Writers with an unknown audit key are snapshotted as they are (their
    // chain hashes are public); anything else wrong refuses the anchor.
    if report.only_unknown_keys() {
        for f in &report.faults {
            eprintln!("  note: {}", safe(&f.describe(position)));
        }
    } else if !report.is_ok() {
        for f in &report.faults {
            eprintln!("  FAULT {}", safe(&f.describe(position)));
        }
        return Err(CliError::runtime(msg(format!(
            "no anchor written: the audit log does not verify ({} fault(s)); an anchor must \
             only vouch for a sound log",
            report.faults.len()
        ))));
    }
    let anchor = make_anchor(&records, checkpoints.as_deref(), &keys)
        .map_err(|e| CliError::runtime(msg(format!("no anchor written: {e}"))))?;
    let mut text = serde_json::to_string_pretty(&anchor)
        .map_err(|e| CliError::runtime(context("cannot encode the anchor", e)))?;
    text.push('\n');
    match &args.out {
        None => crate::stdout::out!("{text}"),
        Some(path) => write_file(path, text.as_bytes())?,
    }
    eprintln!(
        "anchored {} records of {} writers and {} checkpoint entries; keep the anchor where \
         the broker's writers cannot reach it, and pass it to `sealq audit verify --anchor`",
        report.records, report.writers, anchor.checkpoints
    );
    Ok(())
}

/// Write `bytes` to `path` through a new temporary file (mode 0600) renamed
/// over it.
fn write_file(path: &Path, bytes: &[u8]) -> CliResult {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let failed = |what: &str, e: std::io::Error| {
        CliError::runtime(context(format!("cannot {what} {}", path.display()), e))
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".sealq-anchor.")
        .suffix(".tmp")
        .permissions(std::fs::Permissions::from_mode(0o600))
        .tempfile_in(dir)
        .map_err(|e| failed("create a temporary file for", e))?;
    tmp.write_all(bytes)
        .and_then(|()| tmp.as_file().sync_all())
        .map_err(|e| failed("write", e))?;
    tmp.persist(path).map_err(|e| failed("replace", e.error))?;
    Ok(())
}
