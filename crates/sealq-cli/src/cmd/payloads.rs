//! `sealq payloads report`: which task types carry the largest payloads,
//! against their queue's budget, largest first. Sizes only: no payload is
//! opened, so no keyring is needed.

use sealq::{PayloadPolicy, PayloadStats};

use super::Global;
use crate::args::PayloadReportArgs;
use crate::error::{CliError, CliResult, msg};
use crate::output::{print_json, table};

/// `sealq payloads report`.
pub(crate) async fn report(global: &Global, args: PayloadReportArgs) -> CliResult {
    let policy = policy(&args)?;
    let broker = global.open_existing_broker()?.broker;
    let stats = sealq::payload_report(&*broker, &policy).await?;
    let over = stats.iter().filter(|s| s.is_over_budget()).count();
    if args.json {
        print_json(&stats)?;
    } else {
        print_report(&stats, over);
    }
    crate::skipped::print_summary();
    if args.check && over > 0 {
        return Err(CliError::runtime(msg(format!(
            "{over} task type(s) over their payload budget"
        ))));
    }
    Ok(())
}

/// The policy whose budgets the report compares against: the library's
/// default, with `--budget` and `--queue-budget` applied.
fn policy(args: &PayloadReportArgs) -> CliResult<PayloadPolicy> {
    let mut policy = PayloadPolicy::default();
    if let Some(b) = args.budget {
        policy = policy.max_bytes(b);
    }
    for spec in &args.queue_budget {
        let bad = || {
            CliError::usage(msg(format!(
                "--queue-budget `{spec}`: expected QUEUE=BYTES (for example reports=1048576)"
            )))
        };
        let (queue, bytes) = spec.split_once('=').ok_or_else(bad)?;
        sealq::options::validate_queue_name(queue)?;
        let bytes: usize = bytes.trim().parse().map_err(|_| bad())?;
        policy = policy.queue_max_bytes(queue, bytes);
    }
    Ok(policy)
}

fn print_report(stats: &[PayloadStats], over: usize) {
    if stats.is_empty() {
        crate::stdout::outln!("no tasks");
        return;
    }
    let cells: Vec<Vec<String>> = stats
        .iter()
        .enumerate()
        .map(|(i, s)| {
            vec![
                (i + 1).to_string(),
                s.queue.clone(),
                s.kind.clone(),
                s.count.to_string(),
                size(s.sealed_p50),
                size(s.sealed_p99),
                size(s.sealed_max),
                format!("{} ({})", size(s.budget), s.budget_mode),
                format!("{}%", s.budget_used_percent),
                if s.is_over_budget() {
                    format!("OVER BUDGET ({} tasks)", s.over_budget)
                } else {
                    "ok".to_owned()
                },
            ]
        })
        .collect();
    crate::stdout::out!(
        "{}",
        table(
            &[
                "#", "QUEUE", "TYPE", "COUNT", "P50", "P99", "MAX", "BUDGET", "USED", "STATUS",
            ],
            &cells,
        )
    );
    crate::stdout::outln!();
    crate::stdout::outln!(
        "sizes are sealed envelopes; USED is the largest serialized payload against the budget."
    );
    if over > 0 {
        crate::stdout::outln!(
            "{over} type(s) over budget. Refactor the largest first: put identifiers in the \
             payload (sealq::Ref<T>) and fetch the data in the handler (ctx.resolve)."
        );
    } else {
        crate::stdout::outln!("every type is within its budget; the largest are listed first.");
    }
}

/// Bytes, with KiB/MiB beyond 10 KiB.
fn size(bytes: u64) -> String {
    const KIB: u64 = 1024;
    if bytes < 10 * KIB {
        format!("{bytes} B")
    } else if bytes < 10 * KIB * KIB {
        format!("{:.1} KiB", bytes as f64 / KIB as f64)
    } else {
        format!("{:.1} MiB", bytes as f64 / (KIB * KIB) as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::size;

    #[test]
    fn sizes() {
        assert_eq!(size(512), "512 B");
        assert_eq!(size(65_536), "64.0 KiB");
        assert_eq!(size(20 * 1024 * 1024), "20.0 MiB");
    }
}
