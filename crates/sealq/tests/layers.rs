//! The layering of `crates/sealq/src`, checked on its sources.
//!
//! Each top-level module sits in one layer and may import only from layers
//! below its own (and from itself), so no import circle can form between
//! modules and a newcomer can tell from the folder listing what may import
//! what. Every path names the module that owns the item: importing through
//! the crate root (`crate::Error`, `crate::{..}`, or a kept-for-users path
//! such as `crate::task`) is refused. `docs/internals.md` draws the same
//! picture.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Top-level modules, bottom up. A module may import from strictly lower
/// layers and from itself.
const LAYERS: &[&[&str]] = &[
    // The error type: its variants name task ids (`model::id`, see below);
    // the small HTTP server of the operational endpoints (imports nothing).
    &["error", "http"],
    // Metric names and the recording calls every layer above makes.
    &["metrics"],
    // What a task is: ids, task, options, states, records, counts.
    &["model"],
    // Keys and sealed bytes; payload policy. Know no store.
    &["seal", "policy"],
    // The storage traits and the `Stores` bundle.
    &["store"],
    // Services over the stores.
    &[
        "audit",
        "blob",
        "subject_keys",
        "keyring_check",
        "reference",
    ],
    // Readiness and liveness checks, over the stores and the keyring check.
    &["health"],
    // The producer.
    &["client"],
    // The worker runtime.
    &["worker"],
    // Built on the client: cron and the operator actions.
    &["scheduler", "admin"],
    // The conformance kit and shared scenarios.
    &["testkit"],
];

/// The only import from a higher layer: the error type names `TaskId`, so
/// `error` may import `model::id`, which imports nothing of sealq.
const EXCEPTIONS: &[(&str, &str)] = &[("error", "model::id")];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&module))
}

/// Source text with comments, string literals and char literals blanked, so
/// only code is searched (`redis://` in a string is not a path).
fn code_only(src: &str) -> String {
    let b = src.as_bytes();
    let mut out = String::with_capacity(src.len());
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == b'/' && b.get(i + 1) == Some(&b'/') {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if c == b'/' && b.get(i + 1) == Some(&b'*') {
            let mut depth = 0;
            while i < b.len() {
                if b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
                    depth += 1;
                    i += 2;
                } else if b[i] == b'*' && b.get(i + 1) == Some(&b'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
        } else if c == b'r' && matches!(b.get(i + 1), Some(b'#') | Some(b'"')) {
            // Raw string: r"..." or r#"..."#.
            let mut j = i + 1;
            let mut hashes = 0;
            while b.get(j) == Some(&b'#') {
                hashes += 1;
                j += 1;
            }
            if b.get(j) != Some(&b'"') {
                out.push(c as char);
                i += 1;
                continue;
            }
            j += 1;
            loop {
                if j >= b.len() {
                    break;
                }
                if b[j] == b'"' && b[j + 1..].iter().take(hashes).all(|&h| h == b'#') {
                    j += 1 + hashes;
                    break;
                }
                j += 1;
            }
            out.push_str("\"\"");
            i = j;
        } else if c == b'"' {
            i += 1;
            while i < b.len() && b[i] != b'"' {
                i += if b[i] == b'\\' { 2 } else { 1 };
            }
            i += 1;
            out.push_str("\"\"");
        } else if c == b'\'' && (b.get(i + 2) == Some(&b'\'') || b.get(i + 1) == Some(&b'\\')) {
            // A char literal ('x' or an escape); a lifetime has no closing quote.
            i += 1;
            while i < b.len() && b[i] != b'\'' {
                i += if b[i] == b'\\' { 2 } else { 1 };
            }
            i += 1;
            out.push_str("' '");
        } else {
            // Keep multi-byte characters whole.
            let ch = src[i..].chars().next().expect("in bounds");
            out.push(ch);
            i += ch.len_utf8();
        }
    }
    out
}

/// Every path that starts at `crate::` in `code`, as its `::`-separated
/// names (a `{..}` group at any level is expanded).
fn crate_paths(code: &str) -> Vec<Vec<String>> {
    let mut paths = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate") {
        let before = rest[..at].chars().next_back();
        rest = &rest[at + "crate".len()..];
        // `$crate::` (macros) and identifiers ending in `crate` are not ours.
        if matches!(before, Some(c) if c == '$' || c == '_' || c.is_alphanumeric()) {
            continue;
        }
        let t = rest.trim_start();
        if let Some(after) = t.strip_prefix("::") {
            let (found, _) = tree(after, Vec::new());
            paths.extend(found);
        }
    }
    paths
}

/// Parse a use-tree at `s` (after a `::`) with `prefix`, returning the full
/// paths and the text after the tree.
fn tree(s: &str, prefix: Vec<String>) -> (Vec<Vec<String>>, &str) {
    let s = s.trim_start();
    if let Some(mut inner) = s.strip_prefix('{') {
        let mut out = Vec::new();
        loop {
            inner = inner.trim_start();
            if let Some(r) = inner.strip_prefix('}') {
                return (out, r);
            }
            if let Some(r) = inner.strip_prefix(',') {
                inner = r;
                continue;
            }
            if inner.is_empty() {
                return (out, inner);
            }
            let (found, r) = tree(inner, prefix.clone());
            if r.len() == inner.len() {
                // Nothing parsed (an unexpected token): skip a character.
                inner = &inner[inner.chars().next().map_or(1, char::len_utf8)..];
            } else {
                inner = r;
            }
            out.extend(found);
        }
    }
    let end = s
        .find(|c: char| !(c.is_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    if end == 0 {
        return (vec![prefix], s);
    }
    let mut path = prefix;
    path.push(s[..end].to_owned());
    let r = &s[end..];
    match r.trim_start().strip_prefix("::") {
        Some(next) => tree(next, path),
        None => (vec![path], r),
    }
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The violations in `src`: file, then what is wrong.
fn violations(src: &Path) -> Vec<(String, String)> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    files.sort();
    let is_module =
        |name: &str| src.join(name).is_dir() || src.join(format!("{name}.rs")).is_file();
    let mut found = Vec::new();
    for file in files {
        let rel = file.strip_prefix(src).expect("under src");
        let rel_text = rel.display().to_string();
        let Some(first) = rel.components().next() else {
            continue;
        };
        let from = first
            .as_os_str()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_owned();
        if from == "lib" {
            continue;
        }
        let Some(from_layer) = layer_of(&from) else {
            found.push((
                rel_text,
                format!("module `{from}` is in no layer of tests/layers.rs"),
            ));
            continue;
        };
        let code = code_only(&std::fs::read_to_string(&file).expect("read source"));
        for path in crate_paths(&code) {
            let Some(to) = path.first() else { continue };
            let shown = format!("crate::{}", path.join("::"));
            if !is_module(to) {
                found.push((
                    rel_text.clone(),
                    format!(
                        "`{shown}` imports through the crate root: name the module that owns it"
                    ),
                ));
                continue;
            }
            if *to == from {
                continue;
            }
            let Some(to_layer) = layer_of(to) else {
                found.push((
                    rel_text.clone(),
                    format!("`{shown}`: module `{to}` is in no layer"),
                ));
                continue;
            };
            let excepted = EXCEPTIONS.iter().any(|(f, t)| {
                let owner: Vec<&str> = t.split("::").collect();
                *f == from && path.len() >= owner.len() && path[..owner.len()] == owner[..]
            });
            if to_layer >= from_layer && !excepted {
                found.push((
                    rel_text.clone(),
                    format!(
                        "`{shown}`: `{from}` (layer {from_layer}) may not import `{to}` (layer {to_layer})"
                    ),
                ));
            }
        }
    }
    found
}

#[test]
fn every_module_imports_only_from_layers_below_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let found = violations(&src);
    let mut by_file: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (file, what) in &found {
        by_file.entry(file).or_default().push(what);
    }
    let report: Vec<String> = by_file
        .iter()
        .map(|(f, w)| format!("{f}:\n  {}", w.join("\n  ")))
        .collect();
    assert!(
        found.is_empty(),
        "layering violations:\n{}",
        report.join("\n")
    );
}

#[test]
fn the_model_id_module_imports_nothing_but_hex_and_hex_nothing() {
    // The one exception above is sound only while `model::id` is a leaf
    // (but for the hex encoder, itself a leaf).
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/model");
    let read = |f: &str| code_only(&std::fs::read_to_string(src.join(f)).expect("read"));
    for path in crate_paths(&read("id.rs")) {
        assert_eq!(path[..2], ["model", "hex"], "model/id.rs imports {path:?}");
    }
    assert_eq!(crate_paths(&read("hex.rs")), Vec::<Vec<String>>::new());
}

#[test]
fn every_top_level_module_is_in_a_layer() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    for entry in std::fs::read_dir(&src).expect("read src") {
        let path = entry.expect("entry").path();
        let name = path
            .file_stem()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        if name == "lib" {
            continue;
        }
        assert!(
            layer_of(&name).is_some(),
            "`{name}` is in no layer of tests/layers.rs"
        );
    }
}

// The checker itself: it must see what it is meant to refuse.

#[test]
fn the_checker_sees_grouped_nested_and_inline_paths_but_not_comments_or_strings() {
    let code = code_only(
        "use crate::{a::b, c::{d, e::F}};\n// crate::hidden::x\nlet u = \"crate::nope\";\n\
         fn f() { crate::g::h(); let c = 'x'; let l: &'static str = \"\"; }\n\
         macro_rules! m { () => { $crate::skip::me } }",
    );
    let paths: Vec<String> = crate_paths(&code).iter().map(|p| p.join("::")).collect();
    assert_eq!(paths, ["a::b", "c::d", "c::e::F", "g::h"]);
}

#[test]
fn the_checker_refuses_an_upward_import_and_a_crate_root_import() {
    let dir = tempfile_dir();
    std::fs::create_dir_all(dir.join("model")).unwrap();
    std::fs::create_dir_all(dir.join("client")).unwrap();
    std::fs::write(
        dir.join("model/mod.rs"),
        "use crate::client::Client;\nuse crate::Error;\n",
    )
    .unwrap();
    std::fs::write(dir.join("client/mod.rs"), "use crate::model::Task;\n").unwrap();
    let found = violations(&dir);
    std::fs::remove_dir_all(&dir).unwrap();
    let text: Vec<&str> = found.iter().map(|(_, w)| w.as_str()).collect();
    assert_eq!(found.len(), 2, "{text:?}");
    assert!(text[0].contains("may not import `client`"), "{text:?}");
    assert!(text[1].contains("through the crate root"), "{text:?}");
}

fn tempfile_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "sealq-layers-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
