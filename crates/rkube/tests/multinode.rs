//! Two nodes on one machine: pods on different nodes reach each other by IP.
//!
//! Two simulated hosts, network namespaces `host-a` and `host-b`, hang off a bridge in the
//! root namespace (a /24 of their own). `rkube server --disable-agent` listens on the bridge
//! address; an `rkube agent` runs in each host namespace (entered with `nsenter --net`, so
//! its mounts stay visible here), gets a podCIDR from node IPAM, and adds a host-gw route to
//! the other node's podCIDR. A busybox pod pinned to each node serves HTTP; each reaches the
//! other across nodes.
//!
//! Runs as root with runc, the CNI plugins, umoci and kubectl (as CI does); skipped otherwise.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::tail;

const IMAGE: &str = "docker.io/library/busybox:1.36";

fn skip() -> bool {
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipped: needs root");
        return true;
    }
    let missing: Vec<&str> = ["ip", "nsenter", "runc", "umoci", "busybox", "curl"]
        .into_iter()
        .filter(|tool| {
            !Command::new("sh")
                .args(["-c", &format!("command -v {tool}")])
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
        .collect();
    if !missing.is_empty() || !Path::new("/usr/lib/cni/bridge").exists() {
        eprintln!("skipped: missing {missing:?} or the CNI plugins (scripts/install-deps.sh)");
        return true;
    }
    false
}

fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The simulated hosts' link: a bridge in the root namespace and one namespace per host, each
/// with a veth into the bridge. Dropped last: deleting the namespaces takes the agents'
/// bridges, routes and iptables rules with them.
struct Lan {
    bridge: String,
    hosts: Vec<String>,
    /// `10.200.N`
    prefix: String,
}

impl Lan {
    fn new(id: u32, hosts: &[&str]) -> Lan {
        let mut lan = Lan {
            bridge: format!("rkmn{id}"),
            hosts: Vec::new(),
            prefix: format!("10.200.{}", id % 250),
        };
        run("ip", &["link", "add", &lan.bridge, "type", "bridge"]);
        let gateway = format!("{}.1/24", lan.prefix);
        run("ip", &["addr", "add", &gateway, "dev", &lan.bridge]);
        run("ip", &["link", "set", &lan.bridge, "up"]);
        for (i, host) in hosts.iter().enumerate() {
            let netns = format!("{host}-{id}");
            let _ = Command::new("ip")
                .args(["netns", "del", &netns])
                .stderr(Stdio::null())
                .status();
            run("ip", &["netns", "add", &netns]);
            lan.hosts.push(netns.clone());
            let outside = format!("rkmn{id}{}", (b'a' + i as u8) as char);
            run(
                "ip",
                &[
                    "link", "add", &outside, "type", "veth", "peer", "name", "eth0", "netns",
                    &netns,
                ],
            );
            run(
                "ip",
                &["link", "set", &outside, "master", &lan.bridge, "up"],
            );
            let address = format!("{}/24", lan.host_ip(i));
            let inside = |args: &[&str]| {
                let mut all = vec!["netns", "exec", netns.as_str(), "ip"];
                all.extend_from_slice(args);
                run("ip", &all);
            };
            inside(&["link", "set", "lo", "up"]);
            inside(&["addr", "add", &address, "dev", "eth0"]);
            inside(&["link", "set", "eth0", "up"]);
        }
        lan
    }

    fn gateway(&self) -> String {
        format!("{}.1", self.prefix)
    }

    fn host_ip(&self, i: usize) -> String {
        format!("{}.{}", self.prefix, i + 2)
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        for netns in &self.hosts {
            let _ = Command::new("ip").args(["netns", "del", netns]).status();
        }
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .status();
    }
}

/// A child process killed on drop.
struct Process {
    child: Child,
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An `rkube agent` in a host namespace; on drop it is killed and `rkube killall` (in the
/// same namespace) removes its containers, sandboxes, mounts and cgroups.
struct Agent {
    process: Option<Process>,
    data_dir: tempfile::TempDir,
    netns: String,
    cgroup_root: String,
    node_name: String,
}

impl Agent {
    fn log(&self) -> String {
        std::fs::read_to_string(self.data_dir.path().join("agent.log")).unwrap_or_default()
    }

    fn sandbox_netns(&self, pod_uid: &str) -> PathBuf {
        self.data_dir
            .path()
            .join("agent/sandboxes")
            .join(pod_uid)
            .join("net")
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.process.take();
        let _ = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", self.netns))
            .arg(env!("CARGO_BIN_EXE_rkube"))
            .arg("killall")
            .arg("--data-dir")
            .arg(self.data_dir.path())
            .arg("--cgroup-root")
            .arg(&self.cgroup_root)
            .output();
    }
}

struct Cluster {
    // Field order is drop order: agents first, then the server, then the hosts' link.
    agents: Vec<Agent>,
    _server: Option<Process>,
    server_dir: tempfile::TempDir,
    url: String,
    lan: Lan,
}

impl Cluster {
    fn server_log(&self) -> String {
        std::fs::read_to_string(self.server_dir.path().join("server.log")).unwrap_or_default()
    }

    fn logs(&self) -> String {
        let mut all = format!("server log tail:\n{}\n", tail(&self.server_log(), 30));
        for agent in &self.agents {
            all.push_str(&format!(
                "agent {} log tail:\n{}\n",
                agent.node_name,
                tail(&agent.log(), 40)
            ));
        }
        all
    }

    fn kubectl(&self, args: &[&str]) -> std::process::Output {
        Command::new(support::kubectl_binary())
            .arg("--kubeconfig")
            .arg(self.server_dir.path().join("kubeconfig.yaml"))
            .arg("--server")
            .arg(&self.url)
            .args(args)
            .env_remove("KUBECONFIG")
            .output()
            .expect("run kubectl")
    }

    fn apply(&self, manifest: &str) {
        use std::io::Write as _;
        let mut child = Command::new(support::kubectl_binary())
            .arg("--kubeconfig")
            .arg(self.server_dir.path().join("kubeconfig.yaml"))
            .arg("--server")
            .arg(&self.url)
            .args(["apply", "-f", "-"])
            .env_remove("KUBECONFIG")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(manifest.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "apply: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn get_json(&self, args: &[&str]) -> Option<Value> {
        let mut all = vec!["get"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["-o", "json"]);
        let out = self.kubectl(&all);
        out.status
            .success()
            .then(|| serde_json::from_slice(&out.stdout).ok())
            .flatten()
    }

    fn eventually<T>(
        &self,
        timeout: Duration,
        what: &str,
        mut check: impl FnMut() -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(v) = check() {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

fn start_cluster() -> Cluster {
    // Apart from other test processes (pid) and from the other tests of this one (n).
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let id = (std::process::id() % 100_000) * 10 + n % 10;
    let lan = Lan::new(id, &["host-a", "host-b"]);
    let server_dir = tempfile::tempdir().unwrap();
    let port = testing::free_port();
    let url = format!("https://{}:{port}", lan.gateway());
    let log = std::fs::File::create(server_dir.path().join("server.log")).unwrap();
    let cluster_cidr = format!("10.{}.0.0/16", 128 + id % 64);
    let server = Command::new(env!("CARGO_BIN_EXE_rkube"))
        .arg("server")
        .arg("--data-dir")
        .arg(server_dir.path())
        .args(["--https-port", &port.to_string()])
        .args(["--bind-address", &lan.gateway()])
        .args(["--advertise-address", &lan.gateway()])
        .args(["--tls-san", &lan.gateway()])
        .args(["--cluster-cidr", &cluster_cidr])
        // Cluster DNS on the server's address, which pods of both nodes reach through the
        // kube-dns ClusterIP (each agent's proxy sends it there).
        .args(["--cluster-dns-port", &testing::free_port().to_string()])
        .arg("--disable-agent")
        .env("RKUBE_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start rkube server");
    let mut cluster = Cluster {
        agents: Vec::new(),
        _server: Some(Process { child: server }),
        server_dir,
        url,
        lan,
    };
    let token_path = cluster.server_dir.path().join("node-token");
    cluster.eventually(Duration::from_secs(30), "the server to be ready", || {
        let ready = token_path.exists()
            && cluster
                .kubectl(&["get", "--raw", "/readyz"])
                .status
                .success();
        ready.then_some(())
    });
    let token = std::fs::read_to_string(&token_path).unwrap();
    for (i, host) in ["a", "b"].into_iter().enumerate() {
        let data_dir = tempfile::tempdir().unwrap();
        support::import_busybox(data_dir.path(), IMAGE);
        let netns = cluster.lan.hosts[i].clone();
        let node_name = format!("mn-{id}-{host}");
        let cgroup_root = format!("/rkube-mn-{id}-{host}/kubepods");
        let log = std::fs::File::create(data_dir.path().join("agent.log")).unwrap();
        let child = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{netns}"))
            .arg(env!("CARGO_BIN_EXE_rkube"))
            .arg("agent")
            .args(["--server", &cluster.url])
            .args(["--token", token.trim()])
            .arg("--data-dir")
            .arg(data_dir.path())
            .args(["--node-name", &node_name])
            .args(["--node-ip", &cluster.lan.host_ip(i)])
            .args(["--cgroup-root", &cgroup_root])
            .args(["--cluster-cidr", &cluster_cidr])
            .args(["--eviction-hard", support::TEST_EVICTION_HARD])
            .env("RKUBE_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start rkube agent");
        cluster.agents.push(Agent {
            process: Some(Process { child }),
            data_dir,
            netns,
            cgroup_root,
            node_name,
        });
    }
    cluster
}

fn web_pod(name: &str, node: &str) -> String {
    format!(
        r#"{{"apiVersion": "v1", "kind": "Pod",
  "metadata": {{"name": "{name}"}},
  "spec": {{
    "nodeName": "{node}",
    "terminationGracePeriodSeconds": 0,
    "containers": [{{
      "name": "web", "image": "{IMAGE}", "imagePullPolicy": "Never",
      "command": ["sh", "-c", "echo hello from {name} > /tmp/index.html && exec httpd -f -p 8080 -h /tmp"]
    }}]
  }}
}}"#
    )
}

#[test]
fn pods_on_different_nodes_reach_each_other_by_ip() {
    if skip() {
        return;
    }
    let cluster = start_cluster();
    let nodes: Vec<String> = cluster.agents.iter().map(|a| a.node_name.clone()).collect();
    // Both nodes Ready, each with its own podCIDR.
    let cidrs: Vec<String> = nodes
        .iter()
        .map(|name| {
            cluster.eventually(
                Duration::from_secs(90),
                &format!("node {name} Ready"),
                || {
                    let node = cluster.get_json(&["node", name])?;
                    let ready = node["status"]["conditions"]
                        .as_array()?
                        .iter()
                        .any(|c| c["type"] == "Ready" && c["status"] == "True");
                    let cidr = node["spec"]["podCIDR"].as_str()?.to_owned();
                    ready.then_some(cidr)
                },
            )
        })
        .collect();
    assert_ne!(cidrs[0], cidrs[1]);

    cluster.apply(&web_pod("web-a", &nodes[0]));
    cluster.apply(&web_pod("web-b", &nodes[1]));
    let pods: Vec<(String, String)> = ["web-a", "web-b"]
        .iter()
        .map(|name| {
            cluster.eventually(
                Duration::from_secs(90),
                &format!("pod {name} Running"),
                || {
                    let pod = cluster.get_json(&["pod", name])?;
                    (pod["status"]["phase"] == "Running").then_some(())?;
                    let ip = pod["status"]["podIP"].as_str()?.to_owned();
                    let uid = pod["metadata"]["uid"].as_str()?.to_owned();
                    Some((uid, ip))
                },
            )
        })
        .collect();
    let (uid_a, ip_a) = &pods[0];
    let (uid_b, ip_b) = &pods[1];
    // Each pod's address is in its node's podCIDR.
    for ((_, ip), cidr) in pods.iter().zip(&cidrs) {
        let net = cidr.rsplit_once('.').unwrap().0;
        assert!(ip.starts_with(&format!("{net}.")), "{ip} not in {cidr}");
    }

    // host-gw routes: each host routes the other's podCIDR via the other's address.
    for (i, agent) in cluster.agents.iter().enumerate() {
        let other = 1 - i;
        let want = format!("{} via {}", cidrs[other], cluster.lan.host_ip(other));
        cluster.eventually(Duration::from_secs(30), &format!("route {want}"), || {
            let routes = run("ip", &["netns", "exec", &agent.netns, "ip", "route"]);
            routes.contains(&want).then_some(())
        });
    }

    // Pod to pod across nodes: ping and HTTP, both ways.
    let sandboxes = [
        cluster.agents[0].sandbox_netns(uid_a),
        cluster.agents[1].sandbox_netns(uid_b),
    ];
    for (from, to, page) in [(0, ip_b, "hello from web-b"), (1, ip_a, "hello from web-a")] {
        let net = format!("--net={}", sandboxes[from].display());
        cluster.eventually(
            Duration::from_secs(20),
            &format!("ping {to} from pod {from}"),
            || {
                Command::new("nsenter")
                    .args([&net, "busybox", "ping", "-c1", "-W2", to])
                    .stdout(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success())
                    .then_some(())
            },
        );
        let url = format!("http://{to}:8080/");
        let body = run("nsenter", &[&net, "curl", "-sf", "-m", "5", &url]);
        assert_eq!(body.trim(), page);
    }

    // Deleting the pods releases their sandboxes on each node.
    let out = cluster.kubectl(&[
        "delete",
        "pod",
        "web-a",
        "web-b",
        "--wait=true",
        "--timeout=60s",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for (agent, uid) in cluster.agents.iter().zip([uid_a, uid_b]) {
        let dir = agent.data_dir.path().join("agent/sandboxes").join(uid);
        cluster.eventually(Duration::from_secs(30), "the sandbox to go", || {
            (!dir.exists()).then_some(())
        });
    }
}

/// Services across nodes: a pod on node a reaches, by name, a Service whose pods all run on
/// node b. Node a's own service proxy (in its `rkube agent`) picks the endpoints on node b;
/// the name resolves through the kube-dns ClusterIP, which node a's proxy sends to the
/// server's cluster DNS.
#[test]
fn a_pod_reaches_a_service_on_the_other_node_by_name() {
    if skip() {
        return;
    }
    let cluster = start_cluster();
    let nodes: Vec<String> = cluster.agents.iter().map(|a| a.node_name.clone()).collect();
    for name in &nodes {
        cluster.eventually(
            Duration::from_secs(90),
            &format!("node {name} Ready"),
            || {
                let node = cluster.get_json(&["node", name])?;
                node["status"]["conditions"]
                    .as_array()?
                    .iter()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
                    .then_some(())
            },
        );
    }
    cluster.apply(&web_pod("far-1", &nodes[1]).replace(
        r#""metadata": {"name": "far-1"}"#,
        r#""metadata": {"name": "far-1", "labels": {"app": "far"}}"#,
    ));
    cluster.apply(&web_pod("far-2", &nodes[1]).replace(
        r#""metadata": {"name": "far-2"}"#,
        r#""metadata": {"name": "far-2", "labels": {"app": "far"}}"#,
    ));
    cluster.apply(
        r#"{"apiVersion": "v1", "kind": "Service", "metadata": {"name": "far"},
  "spec": {"selector": {"app": "far"}, "ports": [{"port": 80, "targetPort": 8080}]}}"#,
    );
    cluster.apply(&format!(
        r#"{{"apiVersion": "v1", "kind": "Pod", "metadata": {{"name": "near"}},
  "spec": {{"nodeName": "{}", "terminationGracePeriodSeconds": 0,
    "containers": [{{"name": "client", "image": "{IMAGE}", "imagePullPolicy": "Never",
      "command": ["sleep", "3600"]}}]}}}}"#,
        nodes[0]
    ));
    for name in ["far-1", "far-2", "near"] {
        cluster.eventually(
            Duration::from_secs(90),
            &format!("pod {name} Running"),
            || {
                let pod = cluster.get_json(&["pod", name])?;
                (pod["status"]["phase"] == "Running").then_some(())
            },
        );
    }
    cluster.eventually(Duration::from_secs(60), "2 ready endpoints of far", || {
        let slices =
            cluster.get_json(&["endpointslices", "-l", "kubernetes.io/service-name=far"])?;
        let ready = slices["items"]
            .as_array()?
            .iter()
            .flat_map(|s| s["endpoints"].as_array().cloned().unwrap_or_default())
            .filter(|e| e["conditions"]["ready"] == true && e["nodeName"] == nodes[1].as_str())
            .count();
        (ready == 2).then_some(())
    });
    let exec = |script: &str| cluster.kubectl(&["exec", "near", "--", "sh", "-c", script]);
    // By name (resolv.conf's search list), fully qualified, and many times: both pods answer.
    let mut seen = std::collections::BTreeSet::new();
    for url in ["http://far/", "http://far.default.svc.cluster.local/"] {
        let body = cluster.eventually(
            Duration::from_secs(30),
            &format!("{url} from node a"),
            || {
                let out = exec(&format!("wget -q -O- -T 5 {url}"));
                out.status
                    .success()
                    .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
            },
        );
        seen.insert(body);
    }
    let out = exec("for i in $(seq 30); do wget -q -O- -T 5 http://far/ || echo failed; done");
    let text = String::from_utf8_lossy(&out.stdout);
    for line in text.lines() {
        assert!(
            line.starts_with("hello from far-"),
            "{text}\n{}",
            cluster.logs()
        );
        seen.insert(line.to_string());
    }
    assert_eq!(text.lines().count(), 30, "{text}");
    assert_eq!(
        seen.into_iter().collect::<Vec<_>>(),
        ["hello from far-1", "hello from far-2"],
        "both pods on node b get traffic"
    );
    // Node a's own proxy did it: its table has the Service, with node b's pod addresses.
    let table = run(
        "ip",
        &[
            "netns",
            "exec",
            &cluster.agents[0].netns,
            "nft",
            "list",
            "table",
            "inet",
            "rkube",
        ],
    );
    assert!(table.contains("default/far/tcp/"), "{table}");
}
