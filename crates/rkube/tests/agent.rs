//! End to end: the node agent's identity and plumbing. `rkube server` runs a kubelet that
//! registers a Ready Node (capacity, nodeInfo, addresses) and renews its Lease; `rkube agent`
//! joins a server with the node token (and a wrong token is refused); the API server's
//! kubelet proxy answers missing pods and containers as upstream does.
//!
//! Runs as root (cgroups, CNI), as CI does; every agent gets its own node name, kubelet port,
//! cgroup root and bridge, and is cleaned up by its guard.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use support::{AgentOptions, Server, eventually, tail};

const READY_WAIT: Duration = Duration::from_secs(60);

fn condition<'a>(node: &'a Value, type_: &str) -> Option<&'a Value> {
    node["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
}

fn ready_node(server: &Server, name: &str, log: &dyn Fn() -> String) -> Value {
    let mut last = Value::Null;
    let found = eventually_or(READY_WAIT, || {
        let out = server.kubectl(&["get", "node", name, "-o", "json"]);
        if !out.status.success() {
            return None;
        }
        let node: Value = serde_json::from_slice(&out.stdout).ok()?;
        last = node.clone();
        (condition(&node, "Ready")?["status"] == "True").then_some(node)
    });
    found.unwrap_or_else(|| {
        panic!(
            "node {name} not Ready in {READY_WAIT:?}; last seen:\n{last:#}\nlog tail:\n{}",
            tail(&log(), 40)
        )
    })
}

fn eventually_or<T>(timeout: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return Some(v);
        }
        if std::time::Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// What every kubelet reports about itself.
fn assert_node_status(node: &Value, name: &str, ip: Option<&str>, port: u16) {
    let status = &node["status"];
    for resource in ["cpu", "memory", "ephemeral-storage", "pods"] {
        assert!(
            status["capacity"][resource].is_string(),
            "capacity lacks {resource}: {status:#}"
        );
        assert!(
            status["allocatable"][resource].is_string(),
            "allocatable lacks {resource}: {status:#}"
        );
    }
    assert_eq!(status["capacity"]["pods"], "110");
    let cpus: u64 = status["capacity"]["cpu"].as_str().unwrap().parse().unwrap();
    assert!(cpus >= 1);
    assert!(
        status["capacity"]["memory"]
            .as_str()
            .unwrap()
            .ends_with("Ki")
    );
    let info = &status["nodeInfo"];
    assert_eq!(info["kubeletVersion"], "v1.33.0");
    assert_eq!(info["operatingSystem"], "linux");
    assert_eq!(info["architecture"], "amd64");
    assert!(
        info["containerRuntimeVersion"]
            .as_str()
            .unwrap()
            .starts_with("runc://"),
        "{info}"
    );
    assert!(!info["kernelVersion"].as_str().unwrap().is_empty());
    assert!(!info["osImage"].as_str().unwrap().is_empty());
    assert!(!info["bootID"].as_str().unwrap().is_empty());
    let addresses = status["addresses"].as_array().unwrap();
    let address = |t: &str| {
        addresses
            .iter()
            .find(|a| a["type"] == t)
            .and_then(|a| a["address"].as_str())
            .map(str::to_string)
    };
    let internal = address("InternalIP").expect("an InternalIP");
    if let Some(ip) = ip {
        assert_eq!(internal, ip);
    }
    assert_eq!(address("Hostname").as_deref(), Some(name));
    assert_eq!(status["daemonEndpoints"]["kubeletEndpoint"]["Port"], port);
    for (type_, reason) in [
        ("MemoryPressure", "KubeletHasSufficientMemory"),
        ("PIDPressure", "KubeletHasSufficientPID"),
    ] {
        let c = condition(node, type_).unwrap_or_else(|| panic!("no {type_} condition"));
        assert_eq!(c["status"], "False");
        assert_eq!(c["reason"], reason);
    }
    let ready = condition(node, "Ready").unwrap();
    assert_eq!(ready["reason"], "KubeletReady");
    assert_eq!(ready["message"], "kubelet is posting ready status");
    let labels = &node["metadata"]["labels"];
    assert_eq!(labels["kubernetes.io/hostname"], name);
    assert_eq!(labels["kubernetes.io/os"], "linux");
    assert_eq!(labels["kubernetes.io/arch"], "amd64");
}

fn lease_renew_time(server: &Server, name: &str) -> Option<String> {
    let out = server.kubectl(&["get", "lease", "-n", "kube-node-lease", name, "-o", "json"]);
    if !out.status.success() {
        return None;
    }
    let lease: Value = serde_json::from_slice(&out.stdout).ok()?;
    assert_eq!(lease["spec"]["holderIdentity"], name);
    assert_eq!(lease["metadata"]["ownerReferences"][0]["kind"], "Node");
    lease["spec"]["renewTime"].as_str().map(str::to_string)
}

#[test]
fn server_runs_a_node_agent_that_registers_a_ready_node_and_renews_its_lease() {
    let server = Server::start_with_agent(&[], |_| {});
    let agent = server.agent.clone().unwrap();
    let node = ready_node(&server, &agent.node_name, &|| server.log());
    assert_node_status(&node, &agent.node_name, None, agent.kubelet_port);
    assert_eq!(
        node["metadata"]["labels"]["node-role.kubernetes.io/control-plane"],
        "true"
    );
    // The node IPAM controller gave it a /24 of the cluster CIDR.
    let prefix = agent
        .cluster_cidr
        .split(".0.0/")
        .next()
        .unwrap()
        .to_string();
    assert!(
        node["spec"]["podCIDR"]
            .as_str()
            .is_some_and(|c| c.starts_with(&prefix) && c.ends_with("/24")),
        "{:#}",
        node["spec"]
    );

    let first = eventually(Duration::from_secs(20), "the node's Lease", || {
        lease_renew_time(&server, &agent.node_name)
    });
    let renewed = eventually_or(Duration::from_secs(25), || {
        lease_renew_time(&server, &agent.node_name).filter(|t| *t != first)
    });
    assert!(
        renewed.is_some(),
        "the Lease was not renewed after {first}:\n{}",
        tail(&server.log(), 30)
    );

    // The node token is private and in k3s's format; the CA it names is served at /cacerts.
    let token_path = server.data_dir.path().join("node-token");
    let token = std::fs::read_to_string(&token_path).unwrap();
    assert_eq!(
        std::fs::metadata(&token_path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(
        token.starts_with("K10") && token.contains("::node:"),
        "{token}"
    );
    let (code, ca) = server.raw("GET", "/cacerts", None, "text/plain", true);
    assert_eq!(code, 200);
    let ca_file =
        std::fs::read_to_string(server.data_dir.path().join("tls/server-ca.crt")).unwrap();
    assert_eq!(ca.trim(), ca_file.trim());
    let cm = server.get_json(&[
        "configmap",
        "-n",
        "kube-system",
        "extension-apiserver-authentication",
    ]);
    let client_ca =
        std::fs::read_to_string(server.data_dir.path().join("tls/client-ca.crt")).unwrap();
    assert_eq!(
        cm["data"]["client-ca-file"].as_str().unwrap().trim(),
        client_ca.trim()
    );
}

/// Kills the agent by PID and cleans up what it made, whatever the test's outcome.
struct Agent {
    child: Option<Child>,
    data_dir: tempfile::TempDir,
    options: AgentOptions,
}

impl Agent {
    fn start(server: &Server, token: &str, options: AgentOptions) -> Agent {
        let data_dir = tempfile::tempdir().unwrap();
        let log = std::fs::File::create(data_dir.path().join("agent.log")).unwrap();
        let child = agent_command(server, token, data_dir.path(), &options)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start rkube agent");
        Agent {
            child: Some(child),
            data_dir,
            options,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.data_dir.path().join("agent.log")).unwrap_or_default()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        // Best effort: nothing ran here, but a half-made sandbox must not stay behind.
        let _ = Command::new(env!("CARGO_BIN_EXE_rkube"))
            .arg("killall")
            .arg("--data-dir")
            .arg(self.data_dir.path())
            .arg("--cgroup-root")
            .arg(&self.options.cgroup_root)
            .arg("--cni-bridge")
            .arg(&self.options.bridge)
            .output();
    }
}

fn agent_command(server: &Server, token: &str, data_dir: &Path, options: &AgentOptions) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rkube"));
    cmd.arg("agent")
        .arg("--server")
        .arg(format!("https://127.0.0.1:{}", server.port))
        .arg("--token")
        .arg(token)
        .arg("--data-dir")
        .arg(data_dir)
        .arg("--node-name")
        .arg(&options.node_name)
        .arg("--node-ip")
        .arg("127.0.0.1")
        .arg("--kubelet-port")
        .arg(options.kubelet_port.to_string())
        .arg("--cgroup-root")
        .arg(&options.cgroup_root)
        .arg("--cni-bridge")
        .arg(&options.bridge)
        .arg("--eviction-hard")
        .arg(support::TEST_EVICTION_HARD)
        .env("RKUBE_LOG", "info")
        .env_remove("RKUBE_TOKEN")
        .env_remove("RKUBE_URL")
        .env_remove("RKUBE_DATA_DIR");
    cmd
}

fn run_agent_expecting_failure(server: &Server, token: &str) -> String {
    let data_dir = tempfile::tempdir().unwrap();
    let mut child = agent_command(server, token, data_dir.path(), &AgentOptions::unique())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start rkube agent");
    // A refused agent exits at once; one that joined would run on (and is killed).
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let exited = child.try_wait().unwrap().is_some();
    if !exited {
        let _ = child.kill();
    }
    let out: Output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        exited,
        "rkube agent with token {token:?} kept running:\n{stderr}"
    );
    assert!(!out.status.success(), "{stderr}");
    stderr
}

#[test]
fn agent_joins_with_the_node_token_and_a_wrong_token_is_refused() {
    let server = Server::start();
    let token = std::fs::read_to_string(server.data_dir.path().join("node-token"))
        .unwrap()
        .trim()
        .to_string();
    let (hash_part, secret) = token.split_once("::node:").unwrap();

    let wrong_secret = format!("{hash_part}::node:not-{secret}");
    let err = run_agent_expecting_failure(&server, &wrong_secret);
    assert!(err.contains("refused the node token"), "{err}");
    let wrong_ca = format!("K10{}::node:{secret}", "0".repeat(64));
    let err = run_agent_expecting_failure(&server, &wrong_ca);
    assert!(err.contains("does not match the node token"), "{err}");
    let err = run_agent_expecting_failure(&server, "garbage");
    assert!(err.contains("invalid node token"), "{err}");

    let agent = Agent::start(&server, &token, AgentOptions::unique());
    let name = agent.options.node_name.clone();
    let node = ready_node(&server, &name, &|| agent.log());
    assert_node_status(&node, &name, Some("127.0.0.1"), agent.options.kubelet_port);
    assert!(
        node["metadata"]["labels"]
            .get("node-role.kubernetes.io/control-plane")
            .is_none()
    );
    assert!(lease_renew_time(&server, &name).is_some());
}

#[test]
fn kubelet_proxy_reports_missing_pods_and_containers_as_upstream() {
    // No node fits the selector: the pods stay Pending, without a host.
    let server = Server::start();
    let pod = |name: &str, containers: Value| {
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name},
            "spec": {"nodeSelector": {"no-such": "node"}, "containers": containers},
        })
        .to_string()
    };
    server.apply(&pod(
        "two",
        json!([{"name": "a", "image": "busybox"}, {"name": "b", "image": "busybox"}]),
    ));
    server.apply(&pod("one", json!([{"name": "only", "image": "busybox"}])));

    // kubectl checks a named container itself; the API server says the same.
    let err = server.kubectl_err(&["logs", "one", "-c", "nope"]);
    assert!(
        err.contains("container nope is not valid for pod one"),
        "{err}"
    );
    let err = server.kubectl_err(&[
        "get",
        "--raw",
        "/api/v1/namespaces/default/pods/one/log?container=nope",
    ]);
    assert!(
        err.contains("Error from server (BadRequest): container nope is not valid for pod one"),
        "{err}"
    );
    let err = server.kubectl_err(&["get", "--raw", "/api/v1/namespaces/default/pods/two/log"]);
    assert!(
        err.contains("a container name must be specified for pod two, choose one of: [a b]"),
        "{err}"
    );
    let err = server.kubectl_err(&["get", "--raw", "/api/v1/namespaces/default/pods/ghost/log"]);
    assert!(
        err.contains("Error from server (NotFound)") && err.contains("pods \"ghost\" not found"),
        "{err}"
    );
    let err = server.kubectl_err(&["logs", "ghost"]);
    assert!(err.contains("pods \"ghost\" not found"), "{err}");
    // A pod not on a node yet has no logs, and that is not an error.
    assert_eq!(server.kubectl_ok(&["logs", "one"]), "");
    let err = server.kubectl_err(&["exec", "one", "--", "true"]);
    assert!(
        err.contains("pod one does not have a host assigned"),
        "{err}"
    );
    let (code, body) = server.raw(
        "POST",
        "/api/v1/namespaces/default/pods/one/exec?command=true&stdout=true",
        None,
        "application/json",
        false,
    );
    assert_eq!(code, 400, "{body}");
    let status: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(status["reason"], "BadRequest");
    assert_eq!(status["message"], "pod one does not have a host assigned");
}
