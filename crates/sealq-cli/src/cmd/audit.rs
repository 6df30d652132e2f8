//! `sealq audit verify | show | public-key`, and the audit sinks the other
//! commands write to.
//!
//! For the SQLite broker at `DB`, the default audit log is two JSON-lines
//! files next to it: `DB.audit.jsonl` and `DB.audit.checkpoints.jsonl`
//! (`--audit file`); `--audit sqlite` writes the `audit_records` and
//! `audit_checkpoints` tables of `DB` instead. For a Redis broker the log is
//! always the broker's streams `PREFIX:audit:records` and
//! `PREFIX:audit:checkpoints` (`--audit file`, the default, and `--audit
//! redis` both mean them; `sqlite` is refused). `audit verify --broker URL`
//! and `audit show` read the same place (`--sink file|sqlite|redis`).

use std::path::PathBuf;
use std::sync::Arc;

use sealq::audit::{
    AuditKeys, AuditSink, Auditor, Fault, JsonLinesSink, VerifyOptions, VerifyReport, verify_sink,
};
use sealq::{Keyring, TaskId};
use sealq_redis::RedisAuditSink;
use sealq_sqlite::SqliteAuditSink;

use super::Global;
use crate::args::{AuditShowArgs, AuditSinkKind, AuditSource, AuditVerifyArgs};
use crate::broker_url::{BrokerUrl, block_on, connect_error};
use crate::error::{CliError, CliResult, context, msg};
use crate::output::safe;
use sealq_connect::{AuditPlace, Connection};

pub(crate) use sealq_connect::jsonl_path_for;

/// The SQLite file the global broker URL names.
fn broker_db(global: &Global) -> CliResult<PathBuf> {
    match crate::broker_url::parse(global.broker_url())? {
        BrokerUrl::Sqlite { path } => Ok(path),
        #[allow(unreachable_patterns)]
        _ => Err(CliError::usage(msg(
            "no audit log at this broker URL; verify a JSON-lines log with --file PATH",
        ))),
    }
}

fn sink_error(e: sealq::audit::AuditError) -> CliError {
    CliError::runtime(e)
}

/// Where `kind` puts the log, or `None` for `off`.
fn place(kind: AuditSinkKind) -> Option<AuditPlace> {
    match kind {
        AuditSinkKind::Off => None,
        AuditSinkKind::File => Some(AuditPlace::File),
        AuditSinkKind::Sqlite => Some(AuditPlace::Sqlite),
        AuditSinkKind::Redis => Some(AuditPlace::Redis),
        AuditSinkKind::Postgres => Some(AuditPlace::Postgres),
    }
}

/// Start an auditor writing to the log of the broker at `home`. A
/// keyring without `audit_signing_key` is a configuration error (exit 2)
/// that says how to fix it.
pub(crate) fn start(
    home: &Connection,
    kind: AuditSinkKind,
    keyring: &Keyring,
) -> CliResult<Option<Auditor>> {
    let Some(place) = place(kind) else {
        return Ok(None);
    };
    let sink = block_on(home.audit_sink(place)).map_err(connect_error)?;
    if keyring.audit_verifying_key().is_none() {
        return Err(CliError::usage(msg(
            "the keyring has no `audit_signing_key`, which the audit log needs to sign its \
             checkpoints: add one (`sealq keys generate` prints a keyring with one), or pass \
             --audit off",
        )));
    }
    Ok(Some(Auditor::start(sink, keyring)?))
}

/// Append what is queued and write the final checkpoint.
pub(crate) async fn finish(auditor: Option<Auditor>) -> CliResult {
    if let Some(a) = auditor {
        a.close().await.map_err(sink_error)?;
    }
    Ok(())
}

/// The log `source` names, for reading; and what its positions are called.
pub(crate) fn read_sink(
    global: &Global,
    source: &AuditSource,
) -> CliResult<(Arc<dyn AuditSink>, &'static str)> {
    if let Some(file) = &source.file {
        return Ok((Arc::new(JsonLinesSink::at(file)), "line"));
    }
    if crate::broker_url::parse(global.broker_url())? == BrokerUrl::Redis {
        if source.sink == AuditSinkKind::Sqlite {
            return Err(CliError::usage(msg(
                "--sink sqlite needs the SQLite broker; a Redis broker keeps its audit log in \
                 Redis streams",
            )));
        }
        let redis = crate::broker_url::open_redis(global.broker_url(), true)?;
        return Ok((Arc::new(RedisAuditSink::reader(&redis)), "entry"));
    }
    if crate::broker_url::parse(global.broker_url())? == BrokerUrl::Postgres {
        if matches!(source.sink, AuditSinkKind::Sqlite | AuditSinkKind::Redis) {
            return Err(CliError::usage(msg(
                "a Postgres broker keeps its audit log in its tables (--sink postgres, or the \
                 default --sink file)",
            )));
        }
        let url = global.broker_url();
        let sink =
            block_on(sealq_postgres::PostgresAuditSink::connect_existing(url)).map_err(|e| {
                CliError::runtime(crate::error::context(
                    format!(
                        "cannot open the audit log of {}",
                        crate::broker_url::redact(url)
                    ),
                    e,
                ))
            })?;
        return Ok((Arc::new(sink), "row"));
    }
    let db = broker_db(global)?;
    if !db.exists() {
        return Err(CliError::usage(msg(format!(
            "no broker database at {}: pass --broker URL or --file PATH",
            db.display()
        ))));
    }
    match source.sink {
        AuditSinkKind::Sqlite => Ok((
            Arc::new(SqliteAuditSink::open(&db).map_err(sink_error)?),
            "row",
        )),
        AuditSinkKind::Redis => Err(CliError::usage(msg(
            "--sink redis needs a Redis broker (--broker redis://…)",
        ))),
        AuditSinkKind::Postgres => Err(CliError::usage(msg(
            "--sink postgres needs a Postgres broker (--broker postgres://…)",
        ))),
        AuditSinkKind::File | AuditSinkKind::Off => {
            Ok((Arc::new(JsonLinesSink::at(jsonl_path_for(&db))), "line"))
        }
    }
}

/// The one-line summary of a clean report.
pub(crate) fn summary_line(r: &VerifyReport) -> String {
    if r.macs_checked {
        format!(
            "audit: {} records from {} writers verified (chains + {} checkpoints)",
            r.records, r.writers, r.checkpoints
        )
    } else {
        let uncovered: u64 = r.uncovered.iter().map(|(_, n)| n).sum();
        format!(
            "audit: {} of {} records from {} writers verified with the public key ({} \
             checkpoints); {uncovered} after the last checkpoints need the keyring",
            r.verified_records, r.records, r.writers, r.checkpoints
        )
    }
}

/// What a report cannot say, in words: writers without a genesis head and,
/// without an anchor, what is not detected.
pub(crate) fn notes(r: &VerifyReport) -> Vec<String> {
    let mut out = Vec::new();
    if !r.without_genesis.is_empty() {
        out.push(format!(
            "{} writer(s) have no genesis record (written before sealq recorded the log's head \
             at each writer's start), e.g. {}: the removal of writers before them is not \
             detected through them",
            r.without_genesis.len(),
            r.without_genesis[0]
        ));
    }
    if !r.anchor_checked {
        out.push(
            "no --anchor given: the removal of the newest records and checkpoints (written \
             after the last writer started), or a replaced or emptied log, cannot be detected; \
             keep anchors from `sealq audit anchor` and verify with --anchor"
                .to_owned(),
        );
    }
    out
}

/// Verify the log `start` wrote for `home` (`None` for `off`).
pub(crate) async fn verify_broker_log(
    home: &Connection,
    kind: AuditSinkKind,
    keyring: &Keyring,
) -> CliResult<Option<VerifyReport>> {
    let Some(place) = place(kind) else {
        return Ok(None);
    };
    let sink = home.audit_reader(place).map_err(connect_error)?;
    verify_with(&*sink, keyring).await.map(Some)
}

/// Read and verify a sink with a keyring's audit keys.
pub(crate) async fn verify_with(
    sink: &dyn AuditSink,
    keyring: &Keyring,
) -> CliResult<VerifyReport> {
    let keys = AuditKeys::from_keyring(keyring)?;
    verify_sink(sink, &keys, &VerifyOptions::default())
        .await
        .map_err(sink_error)
}

/// `sealq audit verify`.
pub(crate) async fn verify(global: &Global, args: AuditVerifyArgs) -> CliResult {
    let keys = match &args.public_key {
        Some(pk) => AuditKeys::public_only_base64(pk)?,
        None => AuditKeys::from_keyring(&global.keyring()?)?,
    };
    let (sink, position) = read_sink(global, &args.source)?;
    let anchor = match &args.anchor {
        Some(path) => Some(super::audit_anchor::read_anchor(path)?),
        None => None,
    };
    let options = VerifyOptions {
        checkpoint_every: args.checkpoint_every.max(1),
        anchor,
    };
    let report = verify_sink(&*sink, &keys, &options)
        .await
        .map_err(|e| CliError::runtime(context("cannot read the audit log", e)))?;
    if args.json {
        crate::output::print_json(&report)?;
    } else {
        if report.is_ok() {
            crate::stdout::outln!("{}", summary_line(&report));
        } else {
            crate::stdout::outln!("audit log {}:", safe(&sink.describe()));
            for f in &report.faults {
                crate::stdout::outln!("  FAULT {}", safe(&f.describe(position)));
            }
        }
        for line in notes(&report) {
            crate::stdout::outln!("  note: {}", safe(&line));
        }
    }
    if report.is_ok() {
        Ok(())
    } else if report.only_unknown_keys() {
        Err(CliError::unknown_key(msg(format!(
            "audit verification incomplete: {} writer(s) wrote with an audit key this keyring \
             does not hold (this keyring's key id is {}); everything else verified",
            report.faults.len(),
            report.key_id.as_deref().unwrap_or("unknown")
        ))))
    } else {
        Err(CliError::runtime(msg(format!(
            "audit verification failed: {} fault(s) in {} records from {} writers",
            report.faults.len(),
            report.records,
            report.writers
        ))))
    }
}

/// `sealq audit show --task ID`: the task's records, each checked against
/// the log's MAC chain and checkpoints when a keyring with an audit key is
/// configured. A record that does not verify is followed by a
/// `  !! NOT VERIFIED: <why>` line (on stderr with `--json`, whose stdout
/// stays the records as stored), and the command exits 1 when any fault
/// was found in the log, shown or not. Without a keyring nothing can be
/// verified: a note on stderr says so and the exit code is 0.
pub(crate) async fn show(global: &Global, args: AuditShowArgs) -> CliResult {
    let id: TaskId = args.task.trim().parse()?;
    let (sink, position) = read_sink(global, &args.source)?;
    let records = sink
        .read_records()
        .await
        .map_err(|e| CliError::runtime(context("cannot read the audit log", e)))?;
    let report = verify_for_show(global, &*sink, &records).await?;
    let mut mine: Vec<(u64, &sealq::audit::AuditRecord)> = records
        .iter()
        .filter_map(|l| l.item.as_ref().ok().map(|r| (l.position, r)))
        .filter(|(_, r)| r.event.is_about(id))
        .collect();
    // In the order things happened to this task: a batch entry's own time
    // (`started_batch`) before the record's.
    let at = |r: &sealq::audit::AuditRecord| r.event.time_for_task(id).unwrap_or(r.time_ms);
    mine.sort_by(|(_, a), (_, b)| (at(a), &a.writer, a.seq).cmp(&(at(b), &b.writer, b.seq)));
    let unverified = |pos: u64, r: &sealq::audit::AuditRecord| -> Vec<String> {
        report.as_ref().map_or_else(Vec::new, |rep| {
            rep.faults
                .iter()
                .filter(|f| fault_names_record(f, &r.writer, r.seq, pos))
                .map(|f| safe(&f.describe(position)).into_owned())
                .collect()
        })
    };
    let mut marked = 0usize;
    if args.json {
        let stored: Vec<&sealq::audit::AuditRecord> = mine.iter().map(|(_, r)| *r).collect();
        crate::output::print_json(&stored)?;
        for (pos, r) in &mine {
            let why = unverified(*pos, r);
            marked += usize::from(!why.is_empty());
            for w in why {
                eprintln!("!! NOT VERIFIED: {w}");
            }
        }
    } else if mine.is_empty() {
        crate::stdout::outln!("no audit records for task {id}");
    } else {
        for (pos, r) in &mine {
            let time = jiff::Timestamp::from_millisecond(at(r))
                .map_or_else(|_| at(r).to_string(), |t| t.to_string());
            // A batch record (`leased_batch`, …) shows as this task's entry.
            let Some(event) = r.event.for_task(id) else {
                continue;
            };
            let mut details = Vec::new();
            let batch = r.event.tasks().len();
            if r.event.task().is_none() && batch > 1 {
                details.push(format!("batch={batch}"));
            }
            if let Ok(serde_json::Value::Object(map)) = serde_json::to_value(&event) {
                for (k, v) in map {
                    if k == "type" || k == "task" || v.is_null() {
                        continue;
                    }
                    match v {
                        serde_json::Value::String(s) => details.push(format!("{k}={s}")),
                        other => details.push(format!("{k}={other}")),
                    }
                }
            }
            // Writers and details come from the log: escaped.
            let line = format!(
                "{time}  {:<16} {}#{}  {}",
                event.name(),
                r.writer,
                r.seq,
                details.join(" ")
            );
            crate::stdout::outln!("{}", safe(&line));
            let why = unverified(*pos, r);
            marked += usize::from(!why.is_empty());
            for w in why {
                crate::stdout::outln!("  !! NOT VERIFIED: {w}");
            }
        }
    }
    match report {
        None => Ok(()),
        Some(r) if r.is_ok() => Ok(()),
        Some(r) => Err(CliError::runtime(msg(format!(
            "the audit log does not verify: {marked} of the {} record(s) shown are not \
             verified, and the log has {} fault(s) in all; `sealq audit verify` lists them",
            mine.len(),
            r.faults.len()
        )))),
    }
}

/// Verify the log `sink` holds (its `records` as read) with the configured
/// keyring's audit keys; `None`, with a note on stderr, when no keyring is
/// configured or it has no audit key. A keyring that is configured but does
/// not load is an error, as for every other command.
async fn verify_for_show(
    global: &Global,
    sink: &dyn AuditSink,
    records: &[sealq::audit::Loaded<sealq::audit::AuditRecord>],
) -> CliResult<Option<VerifyReport>> {
    let keyring = match global.keyring() {
        Ok(k) => k,
        Err(_) if global.keyring_configured() => return global.keyring().map(|_| None),
        Err(_) => {
            eprintln!(
                "note: not verified: no keyring configured (--keyring, SEALQ_KEYRING or \
                 SEALQ_KEYRING_TOML); the records are shown as stored"
            );
            return Ok(None);
        }
    };
    let Ok(keys) = AuditKeys::from_keyring(&keyring) else {
        eprintln!(
            "note: not verified: the keyring has no `audit_signing_key`; the records are shown \
             as stored"
        );
        return Ok(None);
    };
    let checkpoints = sink
        .read_checkpoints()
        .await
        .map_err(|e| CliError::runtime(context("cannot read the audit checkpoints", e)))?;
    Ok(Some(sealq::audit::verify(
        records,
        checkpoints.as_deref(),
        &keys,
        &VerifyOptions::default(),
    )))
}

/// Whether `fault` says that the record of `writer` at `seq`, stored at
/// `position`, did not verify (as opposed to a fault elsewhere in the log).
fn fault_names_record(fault: &Fault, writer: &str, seq: u64, position: u64) -> bool {
    match fault {
        Fault::Edited {
            writer: w,
            position: p,
            ..
        }
        | Fault::Inserted {
            writer: w,
            position: p,
            ..
        }
        | Fault::Reordered {
            writer: w,
            position: p,
            ..
        } => w == writer && *p == position,
        // The record right after a gap: its MAC chains to a deleted one.
        Fault::Deleted {
            writer: w,
            before_position,
            ..
        } => w == writer && *before_position == position,
        Fault::CheckpointMismatch {
            writer: w, seq: s, ..
        } => w == writer && *s == seq,
        Fault::ChangedSinceCheckpoint {
            writer: w,
            after_seq,
            through_seq,
            ..
        } => w == writer && after_seq.is_none_or(|a| seq > a) && seq <= *through_seq,
        Fault::WrongKey { writer: Some(w) } | Fault::UnknownKey { writer: w, .. } => w == writer,
        Fault::WrongKey { writer: None } => true,
        _ => false,
    }
}

/// `sealq audit public-key`.
pub(crate) fn public_key(global: &Global) -> CliResult {
    let keyring = global.keyring()?;
    match keyring.audit_public_key_base64() {
        Some(k) => {
            crate::stdout::outln!("{k}");
            Ok(())
        }
        None => Err(CliError::usage(msg(
            "the keyring has no `audit_signing_key`; generate a new keyring with \
             `sealq keys generate` or add one (32 random bytes, base64)",
        ))),
    }
}
