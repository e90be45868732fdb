//! The acceptance scenarios (`../shared/acceptance/`, beside this repository) against a real
//! `rkube server` with its node agent: images built offline by `images.sh`, served by a
//! docker-registry on loopback, pulled through a docker.io mirror in `registries.yaml`.

mod support;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use support::Server;

/// Every scenario.
const SCENARIOS: &[&str] = &[
    "01-seed-nginx",
    "02-seed-flask",
    "03-seed-rolling",
    "04-self-healing",
    "05-scaling",
    "06-config",
    "07-batch",
    "08-namespaces",
    "09-storage",
    "10-logs",
];

fn acceptance_dir() -> PathBuf {
    let dir = std::env::var_os("RKUBE_ACCEPTANCE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/acceptance")
        });
    assert!(
        dir.join("run.sh").exists(),
        "acceptance scenarios not found at {} (set RKUBE_ACCEPTANCE_DIR)",
        dir.display()
    );
    dir
}

#[test]
fn acceptance_scenarios_pass_on_a_real_node() {
    let dir = acceptance_dir();
    let registry = support::Registry::start();
    let work = tempfile::tempdir().expect("temp dir");
    let built = Command::new("bash")
        .arg(dir.join("images.sh"))
        .arg(&registry.addr)
        .env("IMAGES_WORK", work.path())
        .output()
        .expect("run images.sh");
    assert!(
        built.status.success(),
        "images.sh failed:\n{}{}",
        String::from_utf8_lossy(&built.stdout),
        String::from_utf8_lossy(&built.stderr)
    );
    let mirror = format!(
        "mirrors:\n  docker.io:\n    endpoint:\n      - \"http://{}\"\n",
        registry.addr
    );
    let server = Server::start_with_agent(&[], |data_dir| {
        std::fs::write(data_dir.join("registries.yaml"), &mirror).expect("write registries.yaml");
    });
    let node = server.agent.as_ref().unwrap().node_name.clone();
    support::eventually(Duration::from_secs(60), "the node to be Ready", || {
        let out = server.kubectl(&[
            "get",
            "node",
            &node,
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
        ]);
        (String::from_utf8_lossy(&out.stdout) == "True").then_some(())
    });
    // RKUBE_ACCEPTANCE_SCENARIOS=02,03 runs only those (while working on them).
    let chosen: Vec<String> = match std::env::var("RKUBE_ACCEPTANCE_SCENARIOS") {
        Ok(list) => list.split(',').map(|s| s.trim().to_string()).collect(),
        Err(_) => SCENARIOS.iter().map(|s| s.to_string()).collect(),
    };
    let out = Command::new("bash")
        .arg(dir.join("run.sh"))
        .args(&chosen)
        .env("KUBECONFIG", server.kubeconfig())
        .env("KUBECTL", support::kubectl_binary())
        .output()
        .expect("run the acceptance scenarios");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stdout}");
    assert!(
        out.status.success(),
        "acceptance scenarios failed:\n{stdout}\n{stderr}\nserver log (tail):\n{}",
        support::tail(&server.log(), 80)
    );
    assert!(
        stdout.contains(&format!("{} passed, 0 failed", chosen.len())),
        "not every scenario ran:\n{stdout}"
    );
}
