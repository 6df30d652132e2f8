//! `sealq keys remove --key ID --store URL...`: drop an open-only key from
//! the keyring file once no store the keyring is used with needs it.
//!
//! A keyring is often shared by several stores (a SQLite file for one
//! service, Redis for another). A key is safe to drop only when none of
//! them holds a task, blob or subject key sealed with it, and sealq cannot
//! know which stores those are. So the command refuses to guess: it checks
//! exactly the stores named with `--store` (repeatable; `--broker`, when
//! typed on the command line, is one more), refuses to run without one
//! (exit 2, the message says how to name them all), opens each without
//! creating anything (a mistyped SQLite path is refused, not checked as an
//! empty store), and removes the key only if every one of them is clear of
//! it, unless `--force`. The removal is audited in each store's audit log
//! (`key_removed`).

use std::sync::Arc;

use sealq::Keyring;

use super::keys::{blob_store, keyring_path, write_keyring};
use crate::broker_url::{Opened, open_existing, redact};
use crate::error::{CliError, CliResult, msg};

/// One store checked, with what still needs the key there.
struct Checked {
    url: String,
    opened: Opened,
    usage: sealq::KeyUsage,
}

/// `sealq keys remove`: see the module docs.
pub(crate) async fn remove(global: &super::Global, args: crate::args::KeysRemoveArgs) -> CliResult {
    let stores = stores_named(global, &args.stores, &args.key)?;
    let path = keyring_path(global, "keys remove")?;
    let mut keyring = Keyring::from_file(&path)?;
    keyring.require_sealing_keys("remove keys")?;
    if args.key == keyring.primary_key_id() {
        return Err(CliError::usage(msg(format!(
            "`{}` is the primary key: rotate first (`sealq keys rotate`), then re-seal",
            args.key
        ))));
    }
    if !keyring.contains_key(&args.key) {
        return Err(CliError::usage(msg(format!(
            "the keyring {} has no key `{}`",
            path.display(),
            args.key
        ))));
    }
    let keyring_arc = Arc::new(Keyring::from_toml(&keyring.to_toml_secret())?);
    let blobs = blob_store(&args.blobs, false).await?;

    // Every store is opened and checked before anything changes.
    let mut checked: Vec<Checked> = Vec::with_capacity(stores.len());
    for url in &stores {
        let opened = open_existing(url)?;
        let mut checker = sealq::Client::builder(opened.broker.clone(), keyring_arc.clone());
        if let Some(store) = &blobs {
            checker = checker.blob_store(store.clone(), usize::MAX);
        }
        let usage = checker.build().key_usage(&args.key).await?;
        checked.push(Checked {
            url: redact(url),
            opened,
            usage,
        });
    }
    let unchecked: Vec<String> = checked
        .iter()
        .filter_map(|c| {
            c.usage
                .could_not_check
                .as_ref()
                .map(|e| format!("{}: {e}", c.url))
        })
        .collect();
    if !unchecked.is_empty() && !args.force {
        return Err(CliError::runtime(msg(format!(
            "cannot check whether subject data keys are still wrapped under `{}` in {}; \
             --force removes it anyway",
            args.key,
            unchecked.join("; ")
        ))));
    }
    let still: u64 = checked.iter().map(|c| c.usage.still_sealed()).sum();
    let in_use: Vec<String> = checked
        .iter()
        .filter(|c| c.usage.still_sealed() > 0)
        .map(|c| {
            format!(
                "{}: {} part(s) ({} subject key(s))",
                c.url,
                c.usage.still_sealed(),
                c.usage.subject_keys_wrapped
            )
        })
        .collect();
    if still > 0 && !args.force {
        return Err(CliError::runtime(msg(format!(
            "`{}` is still needed by stored tasks or subject data keys in {}: run `sealq keys \
             reseal --from-key {}` against each of those stores first; --force removes it \
             anyway, and they can then never be opened",
            args.key,
            in_use.join("; "),
            args.key
        ))));
    }

    keyring.remove_key(&args.key)?;
    write_keyring(&path, &keyring)?;
    let operator = super::operator::operator(&args.op);
    for c in &checked {
        let auditor = super::audit::start(c.opened.audit_home(), args.op.audit, &keyring)?;
        if let Some(a) = &auditor {
            sealq::Client::builder(c.opened.broker.clone(), keyring_arc.clone())
                .audit(a.clone())
                .build()
                .record_key_removed(&args.key, c.usage.still_sealed(), &operator)
                .await?;
        }
        super::audit::finish(auditor).await?;
    }
    let names: Vec<&str> = checked.iter().map(|c| c.url.as_str()).collect();
    if still > 0 {
        crate::stdout::outln!(
            "removed `{}` from {} although {still} stored part(s) still named it ({}): \
             they can no longer be opened",
            args.key,
            path.display(),
            in_use.join("; ")
        );
    } else {
        crate::stdout::outln!(
            "removed `{}` from {}: no stored task or subject key names it in the {} store(s) \
             checked ({}); deploy the keyring everywhere",
            args.key,
            path.display(),
            checked.len(),
            names.join(", ")
        );
    }
    Ok(())
}

/// The stores to check: each `--store`, and `--broker` when it was typed on
/// the command line (not taken from `SEALQ_BROKER` or the default). None
/// named: refused, since a store left out is a store whose tasks would be
/// lost.
fn stores_named(global: &super::Global, stores: &[String], key: &str) -> CliResult<Vec<String>> {
    let mut all: Vec<String> = Vec::new();
    if global.broker_on_command_line
        && let Some(b) = &global.broker
    {
        all.push(b.clone());
    }
    if stores.is_empty() {
        return Err(CliError::usage(msg(format!(
            "keys remove drops `{key}` for good, so it must check every store whose tasks or \
             subject keys this keyring seals, and it does not guess which those are: name each \
             with --store URL (repeat it), e.g. `sealq keys remove --key {key} --store \
             sqlite:///srv/app/sealq.db --store redis://cache:6379`{}",
            if all.is_empty() {
                String::new()
            } else {
                " (--broker counts as one of them)".to_owned()
            }
        ))));
    }
    for s in stores {
        if !all.contains(s) {
            all.push(s.clone());
        }
    }
    Ok(all)
}
