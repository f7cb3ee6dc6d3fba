//! `hexdispatch simulate` as a user runs it: the JSON of SPEC §12 on stdout, a CSV with `--out`,
//! the same figures for the same seed, and bad options refused with their name.

use std::process::{Command, Output};

use serde_json::Value;

fn simulate(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hexdispatch"))
        .arg("simulate")
        .args(args)
        .env_remove("HEXDISPATCH__MATCHING__BATCH_SIZE")
        .output()
        .expect("the binary runs")
}

const SMALL: [&str; 8] = [
    "--drivers",
    "200",
    "--requests-per-min",
    "10",
    "--minutes",
    "20",
    "--seed",
    "3",
];

#[test]
fn simulate_prints_the_spec_fields_and_writes_a_csv_per_request() {
    let dir = std::env::temp_dir().join(format!("hx-sim-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(&dir).unwrap();
    let csv = dir.join("trips.csv");
    let mut args = vec!["--mode", "batched", "--window-ms", "1000"];
    args.extend(SMALL);
    args.extend(["--out", csv.to_str().unwrap()]);
    let out = simulate(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    for field in [
        "mode",
        "requests",
        "matched",
        "mean_pickup_m",
        "p95_pickup_m",
        "mean_wait_s",
        "p95_wait_s",
    ] {
        assert!(report.get(field).is_some(), "{field} missing: {report}");
    }
    assert_eq!(report["mode"], "batched");
    assert_eq!(report["window_ms"], 1000);
    let requests = report["requests"].as_u64().unwrap();
    assert!(requests > 100, "{report}");
    assert!(report["matched"].as_u64().unwrap() <= requests);
    let text = std::fs::read_to_string(&csv).unwrap();
    assert_eq!(
        text.lines().count() as u64,
        requests + 1,
        "a header and a line each"
    );
    std::fs::remove_dir_all(&dir).unwrap();

    // The same seed, the same figures (but for the wall time).
    let again: Value = serde_json::from_slice(&simulate(&args[..args.len() - 2]).stdout).unwrap();
    for field in [
        "requests",
        "matched",
        "mean_pickup_m",
        "p95_wait_s",
        "offers",
    ] {
        assert_eq!(again[field], report[field], "{field}");
    }
}

#[test]
fn greedy_uses_the_configured_matching_policy() {
    let mut args = vec!["--mode", "greedy"];
    args.extend(SMALL);
    let five: Value = serde_json::from_slice(&simulate(&args).stdout).unwrap();
    let one = Command::new(env!("CARGO_BIN_EXE_hexdispatch"))
        .arg("simulate")
        .args(&args)
        .env("HEXDISPATCH__MATCHING__BATCH_SIZE", "1")
        .output()
        .unwrap();
    let one: Value = serde_json::from_slice(&one.stdout).unwrap();
    let per_request = |r: &Value| r["offers"].as_f64().unwrap() / r["requests"].as_f64().unwrap();
    assert!(per_request(&five) > 4.0, "{five}");
    assert!(per_request(&one) < 1.5, "{one}");
}

#[test]
fn bad_simulate_options_are_refused_with_their_name() {
    for (args, named) in [
        (vec!["--mode", "fastest"], "--mode"),
        (vec!["--mode", "greedy", "--drivers", "0"], "--drivers"),
        (vec!["--mode", "greedy", "--drivers=-5"], "--drivers"),
        (vec!["--mode", "greedy", "--minutes", "abc"], "--minutes"),
        (vec!["--mode", "batched", "--window-ms", "0"], "--window-ms"),
        (
            vec!["--mode", "greedy", "--accept-probability", "1.5"],
            "--accept-probability",
        ),
        (
            vec!["--mode", "greedy", "--requests-per-min", "NaN"],
            "--requests-per-min",
        ),
        (vec!["--drivers", "10"], "--mode"),
    ] {
        let out = simulate(&args);
        assert!(!out.status.success(), "{args:?} was accepted");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(named), "{args:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{args:?} printed a report");
    }
}
