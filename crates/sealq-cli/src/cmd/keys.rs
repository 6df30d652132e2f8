//! `sealq keys generate`: a new keyring on stdout; `sealq keys rotate`: a
//! new primary key in the keyring file.

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
