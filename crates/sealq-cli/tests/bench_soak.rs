//! `sealq bench --segment N --retention DURATION` (issue 23, soak): the
//! processing rate is reported per N completed tasks, and the retention is
//! applied to the tasks (and reported).

use std::process::Command;

#[test]
fn soak_bench_reports_segments_and_retention() {
    let out = Command::new(env!("CARGO_BIN_EXE_sealq"))
        .args([
            "bench",
            "--tasks",
            "300",
            "--batch",
            "50",
            "--mode",
            "pipelined",
            "--segment",
            "100",
            "--retention",
            "2s",
            "--json",
        ])
        .output()
        .expect("run sealq bench");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(v["retention_seconds"], 2.0, "{v}");
    let segments = v["segments"].as_array().expect("segments");
    assert!(
        (2..=3).contains(&segments.len()),
        "one segment per 100 completed tasks: {v}"
    );
    let mut last = 0;
    for s in segments {
        let through = s["through"].as_u64().unwrap();
        assert!(through >= last + 100, "{v}");
        assert!(s["per_second"].as_f64().unwrap() > 0.0, "{v}");
        last = through;
    }
}

#[test]
fn soak_bench_refuses_a_zero_segment() {
    let out = Command::new(env!("CARGO_BIN_EXE_sealq"))
        .args(["bench", "--tasks", "10", "--segment", "0"])
        .output()
        .expect("run sealq bench");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--segment"));
}
