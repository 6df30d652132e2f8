//! `sealq keys generate`: a new keyring on stdout; `sealq keys rotate`: a
//! new primary key in the keyring file; `sealq keys reseal`: stored tasks
//! re-sealed under the primary key.

use std::io::Write;

use sealq::Keyring;

use crate::error::{CliError, CliResult, context};

/// Print a fresh keyring TOML (with secrets) to stdout, after a comment
/// header on how to use it. Nothing is logged.
pub(crate) fn generate() -> CliResult {
    let keyring = Keyring::generate();
    let secret = keyring.to_toml_secret();
    let header = format!(
        "# sealq keyring generated {now} — SECRET: anyone holding it can read and forge tasks.\n\
         # Store it readable only by the services that need it, e.g.\n\
         #   (umask 077; sealq keys generate > keyring.toml)\n\
         # and use it with one of\n\
         #   sealq --keyring keyring.toml ...\n\
         #   SEALQ_KEYRING=/path/to/keyring.toml\n\
         #   SEALQ_KEYRING_TOML=\"$(cat keyring.toml)\"\n\
         # Losing it makes every task sealed with it unreadable; keep a backup.\n",
        now = jiff::Timestamp::now()
            .round(jiff::Unit::Second)
            .unwrap_or_else(|_| jiff::Timestamp::now()),
    );
    let mut out = std::io::stdout().lock();
    out.write_all(header.as_bytes())
        .and_then(|()| out.write_all(secret.as_bytes()))
        .and_then(|()| out.flush())
        .map_err(|e| CliError::runtime(context("cannot write the keyring to stdout", e)))
}

/// Rotate the keyring file named by `--keyring` / `SEALQ_KEYRING`: a new
/// random primary key; every older key stays, open-only. The file is
/// replaced atomically with mode 0600. Audited as `key_rotated`.
pub(crate) async fn rotate(global: &super::Global, args: crate::args::KeysRotateArgs) -> CliResult {
    let Some(path) = global.keyring.clone().filter(|p| !p.as_os_str().is_empty()) else {
        return Err(CliError::usage(crate::error::msg(
            "keys rotate rewrites a keyring file: pass --keyring PATH or set SEALQ_KEYRING",
        )));
    };
    let mut keyring = Keyring::from_file(&path)?;
    let previous = keyring.primary_key_id().to_owned();
    let new_id = keyring.rotate();
    let secret = keyring.to_toml_secret();
    let tmp = path.with_extension("toml.tmp");
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| {
                CliError::runtime(context(format!("cannot write {}", tmp.display()), e))
            })?;
        f.write_all(secret.as_bytes())
            .and_then(|()| f.sync_all())
            .map_err(|e| {
                CliError::runtime(context(format!("cannot write {}", tmp.display()), e))
            })?;
    }
    std::fs::rename(&tmp, &path)
        .map_err(|e| CliError::runtime(context(format!("cannot replace {}", path.display()), e)))?;

    let opened = global.open_broker()?;
    let auditor = super::audit::start(opened.audit_home(), args.op.audit, &keyring)?;
    if let Some(a) = &auditor {
        a.record(sealq::audit::AuditEvent::KeyRotated {
            previous_key_id: Some(previous.clone()),
            new_key_id: new_id.clone(),
            operator: args
                .op
                .operator
                .clone()
                .unwrap_or_else(super::erase::default_operator),
        });
    }
    super::audit::finish(auditor).await?;
    println!(
        "rotated {}: new primary `{new_id}` (was `{previous}`, kept for opening)",
        path.display()
    );
    Ok(())
}

/// `sealq keys reseal`: re-seal stored tasks under the primary key of
/// `--keyring`, audited per replaced part; prints what it did and which
/// keys stored tasks still name.
pub(crate) async fn reseal(global: &super::Global, args: crate::args::KeysResealArgs) -> CliResult {
    if args.batch == 0 {
        return Err(CliError::usage(crate::error::msg(
            "--batch must be at least 1",
        )));
    }
    let keyring = std::sync::Arc::new(global.keyring()?);
    let opened = global.open_broker()?;
    let auditor = if args.dry_run {
        None
    } else {
        super::audit::start(opened.audit_home(), args.op.audit, &keyring)?
    };
    let mut builder = sealq::Client::builder(opened.broker, keyring.clone());
    if let Some(a) = &auditor {
        builder = builder.audit(a.clone());
    }
    let client = builder.build();
    let options = sealq::reseal::ResealOptions {
        queue: args.queue.clone(),
        from_key: args.from_key.clone(),
        batch: args.batch,
        dry_run: args.dry_run,
    };
    let operator = args
        .op
        .operator
        .clone()
        .unwrap_or_else(super::erase::default_operator);
    let result = client.reseal(&options, &operator).await;
    super::audit::finish(auditor).await?;
    let r = result?;
    if args.json {
        let out = serde_json::json!({
            "dry_run": args.dry_run,
            "to_key": r.to_key,
            "scanned": r.scanned,
            "resealed": r.resealed,
            "blobs": r.blobs,
            "tasks": r.tasks,
            "current": r.current,
            "subject_sealed": r.subject_sealed,
            "changed": r.changed,
            "failed": r.failed.iter().map(|f| serde_json::json!({
                "task": f.task.to_string(), "part": f.part, "reason": f.reason,
            })).collect::<Vec<_>>(),
            "remaining": r.remaining,
        });
        println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
        return Ok(());
    }
    let verb = if args.dry_run {
        "would re-seal"
    } else {
        "re-sealed"
    };
    println!(
        "{verb} {} part(s) of {} task(s) under `{}` ({} claim-check blob(s)); scanned {} task(s)",
        r.resealed, r.tasks, r.to_key, r.blobs, r.scanned
    );
    println!(
        "  already under `{}`: {}; sealed with a subject's data key (untouched): {}; changed meanwhile (run again): {}",
        r.to_key, r.current, r.subject_sealed, r.changed
    );
    if !r.failed.is_empty() {
        println!("  did not open (left as they are): {}", r.failed.len());
        for f in &r.failed {
            println!("    {} {}: {}", f.task, f.part, f.reason);
        }
    }
    if r.remaining.is_empty() && r.failed.is_empty() {
        if !args.dry_run {
            let others: Vec<&str> = keyring.key_ids().filter(|k| *k != r.to_key).collect();
            if !others.is_empty() {
                println!(
                    "no stored task names {} any more{}: remove it once every producer seals with `{}`",
                    others
                        .iter()
                        .map(|k| format!("`{k}`"))
                        .collect::<Vec<_>>()
                        .join(", "),
                    options
                        .queue
                        .as_ref()
                        .map(|q| format!(" in queue `{q}`"))
                        .unwrap_or_default(),
                    r.to_key
                );
            }
        }
    } else if !r.remaining.is_empty() {
        let left: Vec<String> = r
            .remaining
            .iter()
            .map(|(k, n)| format!("`{k}`: {n}"))
            .collect();
        println!("  still sealed with other keys: {}", left.join(", "));
    }
    Ok(())
}
