//! `rkube bench all --quick` runs every scenario and produces every figure; `rkube bench
//! compare` flags a regression. Only presence and sign are checked, never a timing.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

const FIGURES: &[&str] = &[
    "store.embedded.writes_per_s.1",
    "store.embedded.write_p50_ms.1",
    "store.embedded.write_p99_ms.1",
    "store.embedded.writes_per_s.16",
    "store.embedded.write_p50_ms.16",
    "store.embedded.write_p99_ms.16",
    "store.embedded.watch_p50_ms",
    "store.embedded.watch_p99_ms",
    "api.get_p50_ms",
    "api.get_p99_ms",
    "api.create_p50_ms",
    "api.create_p99_ms",
    "api.update_p50_ms",
    "api.update_p99_ms",
    "api.watch_p50_ms",
    "api.watch_p99_ms",
    "api.creates_per_s",
    "api.list_ms",
    "startup.warm_ready_ms",
    "startup.cold_ready_ms",
    "startup.idle_rss_bytes",
    "startup.binary_bytes",
    "memory.rss_over_stored",
    "memory.rss_bytes",
    "memory.stored_bytes",
    "memory.creates_per_s",
    "bulk.nodes_ready_ms",
    "bulk.pods_running_ms",
    "bulk.pod_creates_per_s",
    "bulk.pods_deleted_ms",
    "bulk.server_rss_bytes",
    "bulk.sim_rss_bytes",
    "scheduler.throughput_avg",
    "scheduler.throughput_p50",
    "scheduler.throughput_p90",
    "scheduler.throughput_p99",
    "scheduler.create_to_bound_per_s",
    "pods.startup_p50_ms",
    "pods.startup_p99_ms",
    "pods.runc_sequential_p50_ms",
    "pods.agent_rss_bytes",
    "pods.agent_idle_rss_bytes",
    "pods.shim_rss_max_bytes",
    "pods.shim_rss_mean_bytes",
    "pods.shim_pss_mean_bytes",
    "proxy.full_sync_ms.1k",
    "proxy.one_change_ms.1k",
    "proxy.full_sync_ms.10k",
    "proxy.one_change_ms.10k",
    "dns.queries_per_s",
    "dns.p50_ms",
    "dns.p99_ms",
    "footprint.binary_bytes",
    "footprint.server_rss_bytes",
    "footprint.server_agent_rss_bytes",
    "footprint.sim_server_rss_bytes",
];

/// Figures that may honestly be zero in a short run (an idle process uses no CPU in 1 s).
const MAY_BE_ZERO: &[&str] = &[
    "pods.agent_cpu_percent",
    "pods.agent_cpu_with_children_percent",
    "footprint.server_cpu_percent",
    "footprint.server_agent_cpu_percent",
    "footprint.sim_server_cpu_percent",
    "footprint.agent_share_rss_bytes",
];

fn rkube(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rkube"))
        .args(args)
        .current_dir(dir)
        .env("RKUBE_LOG", "warn")
        .output()
        .expect("run rkube")
}

#[test]
fn bench_all_quick_produces_every_figure_and_compare_flags_regressions() {
    let dir = tempfile::tempdir().expect("temp dir");
    let json = dir.path().join("quick.json");
    let out = rkube(
        &["bench", "all", "--quick", "--json", json.to_str().unwrap()],
        dir.path(),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "rkube bench all --quick failed:\nstdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.starts_with("figure"), "a table on stdout: {stdout}");
    // --quick writes no document unless asked.
    assert!(!dir.path().join("docs").exists());

    let report: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(report["quick"], true);
    assert!(
        report["command"]
            .as_str()
            .unwrap()
            .contains("bench all --quick")
    );
    assert!(report["machine"]["cores"].as_u64().unwrap() >= 1);
    let figures = report["figures"].as_array().expect("figures");
    for key in FIGURES {
        let figure = figures
            .iter()
            .find(|f| f["key"] == *key)
            .unwrap_or_else(|| panic!("figure {key} missing from {json:?}"));
        let value = figure["value"].as_f64().unwrap();
        assert!(value.is_finite() && value > 0.0, "{key} = {value}");
        if let Some(reference) = figure.get("reference") {
            let r = reference["value"].as_f64().unwrap();
            assert!(r.is_finite() && r > 0.0, "{key} reference = {r}");
        }
    }
    for key in MAY_BE_ZERO {
        let figure = figures
            .iter()
            .find(|f| f["key"] == *key)
            .unwrap_or_else(|| panic!("figure {key} missing from {json:?}"));
        let value = figure["value"].as_f64().unwrap();
        assert!(value.is_finite() && value >= 0.0, "{key} = {value}");
    }
    // Every row of the table names a figure that is in the JSON.
    assert_eq!(stdout.lines().count(), figures.len() + 1, "{stdout}");

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
    assert!(
        same.status.success(),
        "{}",
        String::from_utf8_lossy(&same.stdout)
    );
    assert!(String::from_utf8_lossy(&same.stdout).contains("no figure got worse"));

    // Halve the embedded store's throughput and double its latency: both are flagged.
    let mut worse = report.clone();
    for figure in worse["figures"].as_array_mut().unwrap() {
        let key = figure["key"].as_str().unwrap().to_string();
        let value = figure["value"].as_f64().unwrap();
        if key == "store.embedded.writes_per_s.16" {
            figure["value"] = (value / 2.0).into();
        } else if key == "api.get_p99_ms" {
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
        text.contains("store.embedded.writes_per_s.16") && text.contains("api.get_p99_ms"),
        "{text}"
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
