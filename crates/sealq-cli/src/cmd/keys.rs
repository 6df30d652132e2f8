//! `sealq keys generate`: a new keyring on stdout; `sealq keys rotate`: a
//! new primary key in the keyring file; `sealq keys reseal`: stored tasks
//! re-sealed under the primary key.

use std::io::Write;

use sealq::Keyring;

use crate::error::{CliError, CliResult, context};
use crate::output::safe;

/// Print a fresh keyring TOML (with secrets) to stdout, after a comment
/// header on how to use it; a regular file as stdout is made 0600 first.
/// Nothing is logged. With `--role operator`, the operator keyring of the
/// full keyring `--from` names (else the configured one).
pub(crate) fn generate(global: &super::Global, args: crate::args::KeysGenerateArgs) -> CliResult {
    if args.role == crate::args::KeyringRoleArg::Operator {
        return generate_operator(global, args.from.as_deref());
    }
    if args.from.is_some() {
        return Err(CliError::usage(crate::error::msg(
            "--from is for --role operator: a full keyring is generated afresh",
        )));
    }
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
    restrict_stdout_file()?;
    let mut out = std::io::stdout().lock();
    out.write_all(header.as_bytes())
        .and_then(|()| out.write_all(secret.as_bytes()))
        .and_then(|()| out.flush())
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                crate::stdout::failed(&e); // the reader has gone: end quietly
            }
            CliError::runtime(context("cannot write the keyring to stdout", e))
        })
}

/// `sealq keys generate --role operator --from FULL.toml`.
fn generate_operator(global: &super::Global, from: Option<&std::path::Path>) -> CliResult {
    let full = match from {
        Some(path) => Keyring::from_file(path)?,
        None if global.keyring_configured() => global.keyring()?,
        None => {
            return Err(CliError::usage(crate::error::msg(
                "--role operator makes an operator keyring from a full one: pass --from FULL.toml",
            )));
        }
    };
    if full.role() == sealq::keyring::KeyringRole::Operator {
        return Err(CliError::usage(crate::error::msg(
            "--from names an operator keyring already: give the full keyring it was made from",
        )));
    }
    let operator = full.operator_keyring()?;
    let secret = operator.to_toml_secret();
    let header = format!(
        "# sealq operator keyring generated {now} from a full keyring — SECRET: anyone holding\n\
         # it can write audit records that verify. It opens no task and seals none: it runs\n\
         # queues pause/resume/limit/rate, tasks list/stats/delete/rerun and audit verify/show.\n\
         # Store it readable only by the operator: (umask 077; sealq keys generate --role operator \\\n\
         #   --from keyring.toml > operator.toml)\n",
        now = jiff::Timestamp::now()
            .round(jiff::Unit::Second)
            .unwrap_or_else(|_| jiff::Timestamp::now()),
    );
    restrict_stdout_file()?;
    let mut out = std::io::stdout().lock();
    out.write_all(header.as_bytes())
        .and_then(|()| out.write_all(secret.as_bytes()))
        .and_then(|()| out.flush())
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                crate::stdout::failed(&e); // the reader has gone: end quietly
            }
            CliError::runtime(context("cannot write the keyring to stdout", e))
        })
}

/// When stdout is a regular file (`sealq keys generate > keyring.toml`),
/// make it mode 0600 before any secret is written to it: the shell created
/// it with its umask, usually 0644, and `Keyring::from_file` refuses a
/// keyring others can read. A file that cannot be restricted gets nothing.
fn restrict_stdout_file() -> CliResult {
    use std::os::fd::AsFd as _;
    use std::os::unix::fs::PermissionsExt as _;
    let Ok(fd) = std::io::stdout().as_fd().try_clone_to_owned() else {
        return Ok(()); // no usable stdout: the write below reports it
    };
    let file = std::fs::File::from(fd);
    let Ok(meta) = file.metadata() else {
        return Ok(());
    };
    if !meta.is_file() || meta.permissions().mode() & 0o077 == 0 {
        return Ok(());
    }
    file.set_permissions(std::fs::Permissions::from_mode(0o600))
        .map_err(|e| {
            CliError::runtime(context(
                format!(
                    "stdout is a file others can read (mode {:04o}) and it cannot be made \
                     0600, so no keyring was written to it; run \
                     `(umask 077; sealq keys generate > keyring.toml)`",
                    meta.permissions().mode() & 0o7777
                ),
                e,
            ))
        })
}

/// Replace the keyring file at `path` with `keyring`: written to a new
/// temporary file beside it (random name, created exclusively with mode
/// 0600, so nothing already at a predictable name, such as a symlink
/// planted there, is followed or reused), synced, then renamed over `path`.
pub(crate) fn write_keyring(path: &std::path::Path, keyring: &Keyring) -> CliResult {
    use std::os::unix::fs::PermissionsExt as _;
    let secret = keyring.to_toml_secret();
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => std::path::Path::new("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "keyring".to_owned());
    let failed = |what: &str, e: std::io::Error| {
        CliError::runtime(context(format!("cannot {what} {}", path.display()), e))
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".tmp")
        .permissions(std::fs::Permissions::from_mode(0o600))
        .tempfile_in(dir)
        .map_err(|e| failed("create a temporary file to replace", e))?;
    tmp.write_all(secret.as_bytes())
        .and_then(|()| tmp.as_file().sync_all())
        .map_err(|e| failed("write the new keyring for", e))?;
    // On failure the temporary file is removed when dropped.
    tmp.persist(path).map_err(|e| failed("replace", e.error))?;
    // The rename itself is durable once the directory is synced.
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// The keyring file `--keyring` names (commands that rewrite it need one).
pub(crate) fn keyring_path(global: &super::Global, what: &str) -> CliResult<std::path::PathBuf> {
    global
        .keyring
        .clone()
        .filter(|p| !p.as_os_str().is_empty())
        .ok_or_else(|| {
            CliError::usage(crate::error::msg(format!(
                "{what} rewrites a keyring file: pass --keyring PATH or set SEALQ_KEYRING"
            )))
        })
}

/// Rotate the keyring file named by `--keyring` / `SEALQ_KEYRING`: a new
/// random primary key; every older key stays, open-only. The file is
/// replaced atomically with mode 0600. Audited as `key_rotated`.
pub(crate) async fn rotate(global: &super::Global, args: crate::args::KeysRotateArgs) -> CliResult {
    let path = keyring_path(global, "keys rotate")?;
    let mut keyring = Keyring::from_file(&path)?;
    keyring.require_sealing_keys("rotate keys")?;
    let previous = keyring.primary_key_id().to_owned();
    let new_id = keyring.rotate();
    write_keyring(&path, &keyring)?;

    let opened = global.open_broker()?;
    // Record the new key's check value, so processes started with the
    // rotated keyring are known to this broker (best effort: the keyring
    // file is already rotated; `keys reseal` records it too).
    let record = sealq::keyring_check::stored::RecordOptions {
        accept_new_keyring: false,
        record: true,
    };
    if let Err(e) =
        sealq::keyring_check::stored::check_recorded_keys(&*opened.broker, &keyring, record).await
    {
        eprintln!("warning: the new key's check value was not recorded in the broker: {e}");
    }
    let auditor = super::audit::start(opened.audit_home(), args.op.audit, &keyring)?;
    if let Some(a) = &auditor {
        a.record(sealq::audit::AuditEvent::KeyRotated {
            previous_key_id: Some(previous.clone()),
            new_key_id: new_id.clone(),
            operator: super::operator::operator(&args.op),
        });
    }
    super::audit::finish(auditor).await?;
    crate::stdout::outln!(
        "rotated {}: new primary `{new_id}` (was `{previous}`, kept for opening)",
        path.display()
    );
    crate::stdout::outln!(
        "next: deploy the keyring to every worker, then to every producer; then \
         `sealq keys reseal` and, once it reports nothing left under `{previous}`, \
         `sealq keys remove --key {previous}`"
    );
    Ok(())
}

/// The claim-check store `--blob-dir` or `--blob-url` names, if any.
/// `writes`: the command may write blobs (a Redis store then needs the TTL
/// to write them with). A `--blob-url` store is reached once here, so an
/// unreachable one stops the command before it reads any task.
pub(crate) async fn blob_store(
    args: &crate::args::BlobStoreArgs,
    writes: bool,
) -> CliResult<Option<std::sync::Arc<dyn sealq::blob::BlobStore>>> {
    if let Some(dir) = &args.blob_dir {
        if !dir.is_dir() {
            return Err(CliError::usage(crate::error::msg(format!(
                "--blob-dir {}: no such directory",
                dir.display()
            ))));
        }
        return Ok(Some(std::sync::Arc::new(sealq::blob::FsBlobStore::open(
            dir,
        )?)));
    }
    let Some(url) = &args.blob_url else {
        return Ok(None);
    };
    let shown = crate::broker_url::redact(url);
    let usage =
        |what: String| CliError::usage(crate::error::msg(format!("--blob-url {shown}: {what}")));
    let unreachable = |e: sealq::BrokerError| {
        CliError::runtime(crate::error::context(
            format!("cannot reach the blob store --blob-url {shown}"),
            e,
        ))
    };
    let store: std::sync::Arc<dyn sealq::blob::BlobStore> =
        match crate::broker_url::BrokerUrl::parse(url).map_err(|e| usage(e.to_string()))? {
            crate::broker_url::BrokerUrl::Sqlite { path } => {
                if !path.is_file() {
                    return Err(usage(format!("no such database file {}", path.display())));
                }
                std::sync::Arc::new(
                    sealq_sqlite::SqliteBlobStore::open(&path).map_err(unreachable)?,
                )
            }
            crate::broker_url::BrokerUrl::Postgres => std::sync::Arc::new(
                sealq_postgres::PostgresBlobStore::connect(url)
                    .await
                    .map_err(unreachable)?,
            ),
            crate::broker_url::BrokerUrl::Redis => {
                // Only re-sealing writes; a check reads, and any TTL will do.
                let ttl = match (args.blob_ttl, writes) {
                    (Some(ttl), _) => ttl,
                    (None, false) => std::time::Duration::from_secs(1),
                    (None, true) => {
                        return Err(usage(
                            "a Redis blob store needs --blob-ttl: re-sealed blobs are written \
                             anew and expire that long after; give the TTL the application uses \
                             (longer than any task's life)"
                                .to_owned(),
                        ));
                    }
                };
                std::sync::Arc::new(
                    sealq_redis::RedisBlobStore::new(
                        url,
                        &args.blob_prefix,
                        ttl,
                        Default::default(),
                    )
                    .map_err(|e| usage(e.to_string()))?,
                )
            }
        };
    store.list_tasks(None, 1).await.map_err(unreachable)?;
    Ok(Some(store))
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
    let keyring = std::sync::Arc::new(global.full_keyring("re-seal tasks")?);
    let blobs = blob_store(&args.blobs, !args.dry_run).await?;
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
    if let Some(store) = blobs {
        // The threshold only matters for enqueues, which this client makes none of.
        builder = builder.blob_store(store, usize::MAX);
    }
    let client = builder.build();
    let options = sealq::reseal::ResealOptions {
        queue: args.queue.clone(),
        from_key: args.from_key.clone(),
        batch: args.batch,
        dry_run: args.dry_run,
    };
    let operator = super::operator::operator(&args.op);
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
            "subject_keys": r.subject_keys.as_ref().map(|k| serde_json::json!({
                "rewrapped": k.rewrapped,
                "current": k.current,
                "changed": k.changed,
                "failed": k.failed.len(),
                "remaining": k.remaining,
            })),
            "subject_keys_error": r.subject_keys_error,
        });
        crate::stdout::outln!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
        return Ok(());
    }
    let verb = if args.dry_run {
        "would re-seal"
    } else {
        "re-sealed"
    };
    crate::stdout::outln!(
        "{verb} {} part(s) of {} task(s) under `{}` ({} claim-check blob(s)); scanned {} task(s)",
        r.resealed,
        r.tasks,
        r.to_key,
        r.blobs,
        r.scanned
    );
    crate::stdout::outln!(
        "  already under `{}`: {}; sealed with a subject's data key (untouched): {}; changed meanwhile (run again): {}",
        r.to_key,
        r.current,
        r.subject_sealed,
        r.changed
    );
    if !r.failed.is_empty() {
        crate::stdout::outln!("  did not open (left as they are): {}", r.failed.len());
        for f in &r.failed {
            crate::stdout::outln!("    {} {}: {}", f.task, safe(f.part), safe(&f.reason));
        }
    }
    let keys_left = match (&r.subject_keys, &r.subject_keys_error) {
        (Some(k), _) => {
            let verb = if args.dry_run {
                "would re-wrap"
            } else {
                "re-wrapped"
            };
            crate::stdout::outln!(
                "{verb} {} subject data key(s) under `{}`'s key-encryption key; already under it: {}; changed meanwhile (run again): {}",
                k.rewrapped,
                k.to_key,
                k.current,
                k.changed
            );
            for (tag, reason) in &k.failed {
                crate::stdout::outln!(
                    "    subject key {}: {}",
                    safe(&tag.to_string()),
                    safe(reason)
                );
            }
            if !k.remaining.is_empty() {
                let left: Vec<String> = k
                    .remaining
                    .iter()
                    .map(|(key, n)| format!("`{key}`: {n}"))
                    .collect();
                crate::stdout::outln!(
                    "  subject keys still wrapped under other keys: {}",
                    safe(&left.join(", "))
                );
            }
            !k.remaining.is_empty()
        }
        (None, Some(e)) => {
            crate::stdout::outln!("  subject keys not re-wrapped: {}", safe(&e.to_string()));
            true
        }
        (None, None) => false,
    };
    if r.remaining.is_empty() && r.failed.is_empty() && !keys_left {
        if !args.dry_run {
            let others: Vec<&str> = keyring.key_ids().filter(|k| *k != r.to_key).collect();
            if !others.is_empty() {
                crate::stdout::outln!(
                    "no stored task or subject key names {} any more{}: remove it once every producer seals with `{}`",
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
        crate::stdout::outln!("  still sealed with other keys: {}", safe(&left.join(", ")));
    }
    Ok(())
}
