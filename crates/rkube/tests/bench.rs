//! `rkube bench` in CI: the short version (`--quick`) of every scenario runs and produces
//! finite figures; `rkube bench compare` reads two real reports and flags a regression. Only
//! presence and sign are checked, never a timing.
//!
//! Scenarios that need root (real containers, the kernel's packet filter) are skipped, with a
//! message, when the tests do not run as root; CI runs as root.

use std::collections::HashSet;
use std::path::Path;
use std::process::{Command, Output};

use bench::Scenario;
use serde_json::Value;

/// Figures each scenario must produce, for the scenarios whose keys are settled; every
/// scenario must produce at least one figure.
const KEY_FIGURES: &[&str] = &[
    "store.embedded.writes_per_s.1",
    "store.embedded.write_p99_ms.1",
    "store.embedded.writes_per_s.16",
    "store.embedded.write_p99_ms.16",
    "store.embedded.watch_p99_ms",
    "api.get_p99_ms",
    "api.create_p99_ms",
    "api.update_p99_ms",
    "api.watch_p99_ms",
    "api.list_ms",
    "startup.warm_ready_ms",
    "startup.idle_rss_bytes",
    "startup.binary_bytes",
    "memory.rss_over_stored",
    "memory.rss_bytes",
    "dns.queries_per_s",
    "dns.p50_ms",
    "dns.p99_ms",
    "footprint.binary_bytes",
    "footprint.server_rss_bytes",
    "footprint.server_cpu_percent",
    "footprint.server_agent_rss_bytes",
    "footprint.server_agent_cpu_percent",
    "footprint.agent_idle_rss_bytes",
    "footprint.agent_idle_cpu_percent",
    "footprint.agent_rss_bytes.2",
    "footprint.node_rss_bytes.2",
    "footprint.agent_cpu_percent.2",
    "footprint.agent_rss_bytes.5",
    "footprint.node_rss_bytes.5",
    "footprint.agent_cpu_percent.5",
    "footprint.sim_server_rss_bytes",
    "footprint.sim_server_cpu_percent",
];

fn rkube(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rkube"))
        .args(args)
        .current_dir(dir)
        .env("RKUBE_LOG", "warn")
        .output()
        .expect("run rkube")
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|l| l.split_whitespace().next().map(|u| u == "0"))
        })
        .unwrap_or(false)
}

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).expect("report written"))
        .expect("report is JSON")
}

/// Runs `rkube bench <what> --quick --json <json>`; returns its table (stdout) and report.
fn quick(what: &str, json: &Path, dir: &Path) -> (String, Value) {
    let out = rkube(
        &["bench", what, "--quick", "--json", json.to_str().unwrap()],
        dir,
    );
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "rkube bench {what} --quick failed:\nstdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.starts_with("figure"), "a table on stdout: {stdout}");
    let report = read_json(json);
    assert_eq!(report["quick"], true);
    assert!(
        report["command"]
            .as_str()
            .unwrap()
            .contains(&format!("bench {what} --quick"))
    );
    assert!(report["machine"]["cores"].as_u64().unwrap() >= 1);
    // Every row of the table is a figure of the report.
    let figures = report["figures"].as_array().expect("figures").len();
    assert_eq!(stdout.lines().count(), figures + 1, "{stdout}");
    (stdout, report)
}

/// Every figure is a finite number, positive unless it is a share of a core or a ratio (an
/// idle process may use no CPU in a 1 s window); references are positive.
fn check_figures(figures: &[Value]) {
    let mut keys = HashSet::new();
    for figure in figures {
        let key = figure["key"].as_str().expect("a key");
        assert!(keys.insert(key), "{key} appears twice");
        let value = figure["value"].as_f64().expect("a number");
        assert!(value.is_finite() && value >= 0.0, "{key} = {value}");
        if figure["unit"] != "ratio" {
            assert!(value > 0.0, "{key} = {value}");
        }
        if let Some(reference) = figure.get("reference") {
            let r = reference["value"].as_f64().unwrap();
            assert!(r.is_finite() && r > 0.0, "{key} reference = {r}");
        }
    }
}

#[test]
fn bench_quick_runs_every_scenario_and_compare_flags_regressions() {
    let dir = tempfile::tempdir().expect("temp dir");
    let root = is_root();
    let runnable: Vec<Scenario> = Scenario::ALL
        .into_iter()
        .filter(|s| root || !s.needs_root())
        .collect();
    let json = dir.path().join("quick.json");
    let report = if root {
        quick("all", &json, dir.path()).1
    } else {
        let skipped: Vec<&str> = Scenario::ALL
            .into_iter()
            .filter(|s| s.needs_root())
            .map(Scenario::name)
            .collect();
        eprintln!(
            "not root: skipping the bench scenarios {} (they run containers or program the packet filter; CI runs as root)",
            skipped.join(", ")
        );
        // One report with the figures of every scenario run one by one.
        let mut merged: Option<Value> = None;
        for scenario in &runnable {
            let path = dir.path().join(format!("{}.json", scenario.name()));
            let (_, one) = quick(scenario.name(), &path, dir.path());
            match merged.as_mut() {
                None => merged = Some(one),
                Some(all) => {
                    let figures = one["figures"].as_array().unwrap().clone();
                    all["figures"].as_array_mut().unwrap().extend(figures);
                }
            }
        }
        let merged = merged.expect("some scenario runs without root");
        std::fs::write(&json, merged.to_string()).unwrap();
        merged
    };
    // --quick writes no document unless asked.
    assert!(!dir.path().join("docs").exists());

    let figures = report["figures"].as_array().expect("figures");
    check_figures(figures);
    for scenario in &runnable {
        let n = figures
            .iter()
            .filter(|f| f["scenario"] == scenario.name())
            .count();
        assert!(n > 0, "scenario {} produced no figure", scenario.name());
    }
    for key in KEY_FIGURES {
        let scenario = key.split('.').next().unwrap();
        if runnable.iter().any(|s| s.name() == scenario) {
            assert!(
                figures.iter().any(|f| f["key"] == *key),
                "figure {key} missing from {json:?}"
            );
        }
    }

    // The same report against itself: nothing got worse.
    let same = rkube(
        &[
            "bench",
            "compare",
            json.to_str().unwrap(),
            json.to_str().unwrap(),
        ],
        dir.path(),
    );
    let text = String::from_utf8_lossy(&same.stdout);
    assert!(same.status.success(), "{text}");
    assert!(text.contains("no figure got worse"), "{text}");

    // Halve the embedded store's throughput and double the DNS p99: both are flagged.
    let mut worse = report.clone();
    for figure in worse["figures"].as_array_mut().unwrap() {
        let key = figure["key"].as_str().unwrap().to_string();
        let value = figure["value"].as_f64().unwrap();
        if key == "store.embedded.writes_per_s.16" {
            figure["value"] = (value / 2.0).into();
        } else if key == "dns.p99_ms" {
            figure["value"] = (value * 2.0 + 1.0).into();
        }
    }
    let worse_path = dir.path().join("worse.json");
    std::fs::write(&worse_path, worse.to_string()).unwrap();
    let flagged = rkube(
        &[
            "bench",
            "compare",
            json.to_str().unwrap(),
            worse_path.to_str().unwrap(),
        ],
        dir.path(),
    );
    let text = String::from_utf8_lossy(&flagged.stdout);
    assert_eq!(flagged.status.code(), Some(1), "{text}");
    assert!(text.contains("2 figure(s) got worse"), "{text}");
    assert!(
        text.contains("store.embedded.writes_per_s.16") && text.contains("dns.p99_ms"),
        "{text}"
    );
}

/// Two real runs of one scenario: compare lists every figure of both with a verdict, and a
/// figure the new run lacks; its exit status says whether any got worse.
#[test]
fn bench_compare_reads_two_real_runs() {
    let dir = tempfile::tempdir().expect("temp dir");
    let old = dir.path().join("old.json");
    let new = dir.path().join("new.json");
    let (_, old_report) = quick("dns", &old, dir.path());
    let (_, mut new_report) = quick("dns", &new, dir.path());
    let keys: Vec<String> = old_report["figures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["key"].as_str().unwrap().to_string())
        .collect();
    assert!(keys.len() >= 3, "{keys:?}");

    let out = rkube(
        &[
            "bench",
            "compare",
            old.to_str().unwrap(),
            new.to_str().unwrap(),
        ],
        dir.path(),
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let worse = text
        .lines()
        .filter(|l| l.trim_end().ends_with("WORSE"))
        .count();
    // Two runs on a shared machine may differ beyond noise: the status must say so.
    assert_eq!(out.status.code(), Some(i32::from(worse > 0)), "{text}");
    for key in &keys {
        let row = text
            .lines()
            .find(|l| l.starts_with(key.as_str()))
            .unwrap_or_else(|| panic!("no row for {key}: {text}"));
        assert!(
            row.trim_end().ends_with("ok") || row.trim_end().ends_with("WORSE"),
            "{row}"
        );
    }
    assert!(text.contains("noise: "), "{text}");

    // A figure gone from the new run is named.
    new_report["figures"].as_array_mut().unwrap().pop();
    let gone = keys.last().unwrap();
    std::fs::write(&new, new_report.to_string()).unwrap();
    let out = rkube(
        &[
            "bench",
            "compare",
            old.to_str().unwrap(),
            new.to_str().unwrap(),
        ],
        dir.path(),
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("missing in the new report: {gone}")),
        "{text}"
    );

    // A file that is not a report is an error, not an empty comparison.
    std::fs::write(&new, "{}").unwrap();
    let out = rkube(
        &[
            "bench",
            "compare",
            old.to_str().unwrap(),
            new.to_str().unwrap(),
        ],
        dir.path(),
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("new.json"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn bench_doc_of_one_scenario_is_written_where_asked() {
    let dir = tempfile::tempdir().expect("temp dir");
    let doc = dir.path().join("benchmarks.md");
    let out = rkube(
        &[
            "bench",
            "startup",
            "--quick",
            "--doc",
            doc.to_str().unwrap(),
        ],
        dir.path(),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&doc).expect("document written");
    assert!(text.starts_with("# Benchmarks"), "{text}");
    assert!(text.contains("<!-- bench:startup begin -->"), "{text}");
    assert!(!text.contains("<!-- bench:store begin -->"), "{text}");
    assert!(
        text.contains("bench startup --quick"),
        "the command is recorded: {text}"
    );
}
