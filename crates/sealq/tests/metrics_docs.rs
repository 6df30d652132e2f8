//! Issue 21, Prometheus: `docs/metrics.md` lists exactly the metrics sealq
//! emits (`sealq::metrics::names::ALL`), each of them is recorded
//! somewhere in the crates' code, and the Grafana dashboard
//! (`docs/grafana-sealq.json`) is valid JSON that queries only those.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `sealq_*` names in `text` (a histogram's `_bucket`, `_count` and `_sum`
/// series count as the histogram).
fn names_in(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let b = text.as_bytes();
    let mut i = 0;
    while let Some(at) = text[i..].find("sealq_") {
        let start = i + at;
        let boundary =
            start == 0 || !(b[start - 1].is_ascii_alphanumeric() || b[start - 1] == b'_');
        let mut end = start;
        while end < b.len()
            && (b[end].is_ascii_lowercase() || b[end].is_ascii_digit() || b[end] == b'_')
        {
            end += 1;
        }
        if boundary {
            let mut name = &text[start..end];
            for suffix in ["_bucket", "_count", "_sum"] {
                if let Some(base) = name.strip_suffix(suffix)
                    && base.ends_with("_seconds")
                {
                    name = base;
                }
            }
            out.insert(name.to_owned());
        }
        i = end.max(start + 1);
    }
    out
}

fn all() -> BTreeSet<String> {
    sealq::metrics::names::ALL
        .iter()
        .map(|s| (*s).to_owned())
        .collect()
}

#[test]
fn prometheus_docs_metrics_md_lists_exactly_the_emitted_metrics() {
    let doc = std::fs::read_to_string(repo().join("docs/metrics.md")).unwrap();
    // The names in the tables' first column.
    let documented: BTreeSet<String> = doc
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split_once('`').map(|(n, _)| n.to_owned()))
        .filter(|n| n.starts_with("sealq_"))
        .collect();
    let all = all();
    assert_eq!(
        documented.difference(&all).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "documented but not in metrics::names::ALL"
    );
    assert_eq!(
        all.difference(&documented).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "emitted but not documented in docs/metrics.md"
    );
}

/// Every name in `ALL` is recorded by code: through its constant in
/// `metrics::record` (or elsewhere), or as a literal in a backend.
#[test]
fn prometheus_every_listed_metric_is_recorded_somewhere() {
    let mut code = String::new();
    let mut constants = String::new();
    for dir in [
        "crates/sealq/src",
        "crates/sealq-sqlite/src",
        "crates/sealq-redis/src",
    ] {
        walk(&repo().join(dir), &mut |path, text| {
            let name = path.file_name().unwrap().to_string_lossy();
            if path.parent().is_some_and(|p| p.ends_with("metrics"))
                && (name == "names.rs" || name == "describe.rs")
            {
                if name == "names.rs" {
                    constants.push_str(text);
                }
                return;
            }
            code.push_str(text);
        });
    }
    for name in sealq::metrics::names::ALL {
        // The constant's name in names.rs: `pub const X: &str = "name";`.
        let constant = constants
            .lines()
            .find(|l| l.contains(&format!("\"{name}\"")))
            .and_then(|l| l.strip_prefix("pub const "))
            .and_then(|l| l.split_once(':'))
            .map(|(c, _)| c.to_owned())
            .unwrap_or_else(|| panic!("{name} has a constant in names.rs"));
        assert!(
            code.contains(&format!("names::{constant}"))
                || code.contains(&format!("n::{constant}"))
                || code.contains(&format!("\"{name}\"")),
            "{name} ({constant}) is never recorded"
        );
    }
}

fn walk(dir: &Path, f: &mut impl FnMut(&Path, &str)) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            walk(&path, f);
        } else if path.extension().is_some_and(|e| e == "rs") {
            f(&path, &std::fs::read_to_string(&path).unwrap());
        }
    }
}

#[test]
fn prometheus_grafana_dashboard_is_json_and_queries_only_documented_metrics() {
    let text = std::fs::read_to_string(repo().join("docs/grafana-sealq.json")).unwrap();
    let dash: serde_json::Value =
        serde_json::from_str(&text).expect("docs/grafana-sealq.json is JSON");
    let panels = dash["panels"].as_array().expect("panels");
    assert!(panels.len() >= 10, "a dashboard worth importing");
    let mut queried = BTreeSet::new();
    for p in panels {
        let targets = p["targets"]
            .as_array()
            .unwrap_or_else(|| panic!("targets in {}", p["title"]));
        assert!(!targets.is_empty(), "{}", p["title"]);
        for t in targets {
            let expr = t["expr"].as_str().expect("a PromQL expr");
            let found = names_in(expr);
            assert!(!found.is_empty(), "{expr}");
            queried.extend(found);
        }
    }
    for v in dash["templating"]["list"].as_array().unwrap() {
        if let Some(q) = v["definition"].as_str() {
            queried.extend(names_in(q));
        }
    }
    let all = all();
    let unknown: Vec<_> = queried.difference(&all).collect();
    assert!(
        unknown.is_empty(),
        "the dashboard queries metrics sealq does not emit: {unknown:?}"
    );
    for core in [
        "sealq_tasks_succeeded_total",
        "sealq_tasks_archived_total",
        "sealq_queue_depth",
        "sealq_task_start_delay_seconds",
        "sealq_broker_errors_total",
        "sealq_policy_rejections_total",
    ] {
        assert!(queried.contains(core), "the dashboard shows {core}");
    }
}
