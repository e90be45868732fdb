//! The generated rules in a real kernel: a "node" network namespace with a bridge, three
//! backend namespaces behind it running busybox httpd, and a client on the node reaching
//! them through a ClusterIP, a NodePort and an external IP. Needs root, `ip`, `nft`, curl
//! and busybox; everything it makes (namespaces, veths, tables, processes) goes at the end.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use proxy::bench::TempNetns;
use proxy::{Cache, Nft, Proxier, RuleConfig};
use serde_json::json;

fn can_run() -> bool {
    let root = std::fs::read_to_string("/proc/self/status")
        .map(|s| {
            s.lines()
                .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false);
    let have = |bin: &str| {
        Command::new(bin)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok()
    };
    root && have("nft") && have("ip") && have("curl") && Path::new("/usr/bin/busybox").exists()
}

fn run(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .expect("spawn");
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn in_ns(ns: &str, args: &[&str]) {
    let mut all = vec!["ip", "netns", "exec", ns];
    all.extend_from_slice(args);
    run(&all);
}

/// Kills its process on drop.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Lab {
    node: TempNetns,
    backends: Vec<(TempNetns, String)>,
    _servers: Vec<Server>,
    dir: PathBuf,
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
        // the veths die with their namespaces
    }
}

const NODE_IP: &str = "10.200.0.1";

/// The node namespace with bridge `br0` (10.200.0.1/24) and backends 10.200.0.2, .3, ...
/// each serving its own name on port 8080.
fn lab(tag: &str, backends: usize) -> Lab {
    let pid = std::process::id();
    let node = TempNetns::create(&format!("rkp-{tag}-node-{pid}")).unwrap();
    let n = node.name.clone();
    in_ns(&n, &["ip", "link", "set", "lo", "up"]);
    in_ns(&n, &["ip", "link", "add", "br0", "type", "bridge"]);
    in_ns(
        &n,
        &["ip", "addr", "add", &format!("{NODE_IP}/24"), "dev", "br0"],
    );
    in_ns(&n, &["ip", "link", "set", "br0", "up"]);
    // ClusterIPs are routed nowhere; a node needs some route for them (its default one)
    in_ns(&n, &["ip", "route", "add", "default", "dev", "br0"]);
    in_ns(&n, &["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
    in_ns(&n, &["sysctl", "-qw", "net.ipv4.conf.all.route_localnet=1"]);
    let dir = std::env::temp_dir().join(format!("rkp-{tag}-{pid}"));
    let mut list = Vec::new();
    let mut servers = Vec::new();
    for i in 0..backends {
        let ns = TempNetns::create(&format!("rkp-{tag}-b{i}-{pid}")).unwrap();
        let ip = format!("10.200.0.{}", i + 2);
        let (host, peer) = (format!("rkp{i}h{}", pid % 100000), format!("rkp{i}p"));
        in_ns(
            &n,
            &[
                "ip", "link", "add", &host, "type", "veth", "peer", "name", &peer, "netns",
                &ns.name,
            ],
        );
        in_ns(&n, &["ip", "link", "set", &host, "master", "br0", "up"]);
        // With br_netfilter, DNAT back to the sender is bridged back out its own port
        // (the CNI bridge plugin's hairpinMode).
        in_ns(
            &n,
            &[
                "ip",
                "link",
                "set",
                &host,
                "type",
                "bridge_slave",
                "hairpin",
                "on",
            ],
        );
        in_ns(&ns.name, &["ip", "link", "set", "lo", "up"]);
        in_ns(
            &ns.name,
            &["ip", "addr", "add", &format!("{ip}/24"), "dev", &peer],
        );
        in_ns(&ns.name, &["ip", "link", "set", &peer, "up"]);
        in_ns(&ns.name, &["ip", "route", "add", "default", "via", NODE_IP]);
        let root = dir.join(format!("b{i}"));
        std::fs::create_dir_all(&root).unwrap();
        std::fs::write(root.join("index.html"), format!("backend-{i}\n")).unwrap();
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &ns.name,
                "/usr/bin/busybox",
                "httpd",
                "-f",
                "-p",
                "8080",
                "-h",
            ])
            .arg(&root)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        servers.push(Server(child));
        list.push((ns, ip));
    }
    let lab = Lab {
        node,
        backends: list,
        _servers: servers,
        dir,
    };
    // every server answers directly before any test
    for (i, (_, ip)) in lab.backends.iter().enumerate() {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match get(&lab.node.name, &format!("http://{ip}:8080/")) {
                Ok(body) if body == format!("backend-{i}") => break,
                other if Instant::now() > deadline => {
                    panic!("backend {i} never answered: {other:?}")
                }
                _ => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }
    lab
}

/// `curl` from a namespace: the body, or curl's complaint.
fn get(ns: &str, url: &str) -> Result<String, String> {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "curl", "-sS", "-m", "3", url])
        .output()
        .expect("spawn curl");
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(format!(
            "{}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// How a TCP connection from a namespace fails (busybox nc names the errno).
fn connect_error(ns: &str, ip: &str, port: u16) -> String {
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            ns,
            "/usr/bin/busybox",
            "nc",
            "-w",
            "3",
            ip,
            &port.to_string(),
        ])
        .stdin(Stdio::null())
        .output()
        .expect("spawn nc");
    assert!(!out.status.success(), "{ip}:{port} accepted a connection");
    String::from_utf8_lossy(&out.stderr).trim().to_string()
}

fn counts(ns: &str, url: &str, n: usize) -> BTreeMap<String, usize> {
    let mut seen = BTreeMap::new();
    for _ in 0..n {
        let body = get(ns, url).unwrap_or_else(|e| panic!("{url}: {e}"));
        *seen.entry(body).or_default() += 1;
    }
    seen
}

fn service(name: &str, ip: &str, extra: serde_json::Value) -> Service {
    let mut spec = json!({
        "clusterIP": ip, "clusterIPs": [ip],
        "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080}]
    });
    for (k, v) in extra.as_object().unwrap() {
        spec[k] = v.clone();
    }
    serde_json::from_value(json!({"metadata": {"namespace": "t", "name": name}, "spec": spec}))
        .unwrap()
}

fn slice(service: &str, endpoints: &[(&str, bool)]) -> EndpointSlice {
    let eps: Vec<_> = endpoints
        .iter()
        .map(|(ip, ready)| json!({"addresses": [ip], "conditions": {"ready": ready}, "nodeName": "node"}))
        .collect();
    serde_json::from_value(json!({
        "metadata": {"namespace": "t", "name": format!("{service}-x"), "labels": {"kubernetes.io/service-name": service}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": eps
    }))
    .unwrap()
}

fn config() -> RuleConfig {
    RuleConfig {
        node_name: "node".into(),
        cluster_cidrs: vec!["10.200.0.0/24".into()],
        masquerade_all: false,
        node_ips: vec![NODE_IP.parse().unwrap()],
        localhost_node_ports: true,
    }
}

fn sync(p: &mut Proxier, cache: &mut Cache, full: bool) {
    let keys = if full {
        cache.take_dirty();
        cache.service_keys()
    } else {
        cache.take_dirty()
    };
    let changes = keys
        .into_iter()
        .map(|k| {
            let d = cache.desired(&k, &p.config);
            (k, d)
        })
        .collect();
    if full {
        p.full_sync(changes).unwrap();
    } else {
        p.partial_sync(changes).unwrap();
    }
}

#[test]
fn services_in_a_real_kernel() {
    if !can_run() {
        eprintln!("skipped: needs root, nft, ip, curl and busybox");
        return;
    }
    let lab = lab("svc", 3);
    let node = lab.node.name.clone();
    let [b0, b1, b2] = [0, 1, 2].map(|i| lab.backends[i].1.clone());
    let mut cache = Cache::default();
    let mut p = Proxier::new("rkube", config(), Nft::in_netns(&node));

    // web: two ready backends and one not ready; nothing: no endpoints; sticky: affinity;
    // self: only backend 0, reached from backend 0 itself (hairpin).
    cache.upsert_service(&service(
        "web",
        "10.96.0.10",
        json!({"type": "NodePort", "externalIPs": ["10.200.0.100"],
            "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080, "nodePort": 30080}]}),
    ));
    cache.upsert_slice(&slice("web", &[(&b0, true), (&b1, true), (&b2, false)]));
    cache.upsert_service(&service("nothing", "10.96.0.11", json!({})));
    cache.upsert_service(&service(
        "sticky",
        "10.96.0.12",
        json!({"sessionAffinity": "ClientIP", "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 300}}}),
    ));
    cache.upsert_slice(&slice("sticky", &[(&b0, true), (&b1, true), (&b2, true)]));
    cache.upsert_service(&service("self", "10.96.0.13", json!({})));
    cache.upsert_slice(&slice("self", &[(&b0, true)]));
    sync(&mut p, &mut cache, true);

    // Both ready backends get traffic, the not-ready one none.
    let seen = counts(&node, "http://10.96.0.10/", 30);
    assert_eq!(
        seen.keys().collect::<Vec<_>>(),
        ["backend-0", "backend-1"],
        "{seen:?}"
    );

    // NodePort on the node's address from a backend (outside traffic through prerouting),
    // from the node itself, and on 127.0.0.1; the external IP from the node.
    let b2ns = lab.backends[2].0.name.clone();
    for (ns, url) in [
        (&b2ns, format!("http://{NODE_IP}:30080/")),
        (&node, format!("http://{NODE_IP}:30080/")),
        (&node, "http://127.0.0.1:30080/".to_string()),
        (&node, "http://10.200.0.100/".to_string()),
    ] {
        let seen = counts(ns, &url, 10);
        assert!(
            seen.keys().all(|b| b == "backend-0" || b == "backend-1"),
            "{url} from {ns}: {seen:?}"
        );
    }

    // No endpoints: refused at once, not left to time out.
    let started = Instant::now();
    let err = connect_error(&node, "10.96.0.11", 80);
    assert!(err.contains("refused"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(2));
    // from a pod too (forward hook), and a ClusterIP on a port it does not have
    let err = connect_error(&lab.backends[1].0.name, "10.96.0.11", 80);
    assert!(err.contains("refused"), "{err}");
    let err = connect_error(&node, "10.96.0.10", 81);
    assert!(err.contains("refused"), "{err}");

    // Session affinity: one client, one backend.
    let seen = counts(&node, "http://10.96.0.12/", 12);
    assert_eq!(seen.len(), 1, "{seen:?}");

    // Hairpin: backend 0 reaches itself through its Service.
    let b0ns = lab.backends[0].0.name.clone();
    assert_eq!(get(&b0ns, "http://10.96.0.13/").as_deref(), Ok("backend-0"));

    // One endpoint change, incrementally: backend 1 stops being ready.
    cache.upsert_slice(&slice("web", &[(&b0, true), (&b1, false), (&b2, false)]));
    let started = Instant::now();
    sync(&mut p, &mut cache, false);
    eprintln!("one endpoint change programmed in {:?}", started.elapsed());
    let seen = counts(&node, "http://10.96.0.10/", 10);
    assert_eq!(seen.keys().collect::<Vec<_>>(), ["backend-0"], "{seen:?}");

    // Endpoints arrive for the empty Service.
    cache.upsert_slice(&slice("nothing", &[(&b2, true)]));
    sync(&mut p, &mut cache, false);
    assert_eq!(get(&node, "http://10.96.0.11/").as_deref(), Ok("backend-2"));

    // A NodePort Service and its endpoints, incrementally: its external chain jumps to a
    // service chain declared in the same transaction.
    cache.upsert_service(&service(
        "late",
        "10.96.0.14",
        json!({"type": "NodePort",
            "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080, "nodePort": 30081}]}),
    ));
    cache.upsert_slice(&slice("late", &[(&b1, true)]));
    sync(&mut p, &mut cache, false);
    assert_eq!(get(&node, "http://10.96.0.14/").as_deref(), Ok("backend-1"));
    assert_eq!(
        get(&node, &format!("http://{NODE_IP}:30081/")).as_deref(),
        Ok("backend-1")
    );

    // A restart takes the table over in one transaction: same traffic after.
    let mut restarted = Proxier::new("rkube", config(), Nft::in_netns(&node));
    cache.upsert_service(&service("nothing", "10.96.0.11", json!({})));
    sync(&mut restarted, &mut cache, true);
    assert_eq!(get(&node, "http://10.96.0.11/").as_deref(), Ok("backend-2"));

    // Deleting a Service removes its chains.
    cache.remove_service(&service("web", "10.96.0.10", json!({})));
    sync(&mut restarted, &mut cache, false);
    let table = Command::new("ip")
        .args([
            "netns", "exec", &node, "nft", "list", "table", "inet", "rkube",
        ])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(!table.contains("t/web/"), "{table}");
    assert!(table.contains("t/nothing/"), "{table}");
    let err = get(&node, "http://10.96.0.10/").unwrap_err();
    assert!(!err.is_empty());

    restarted.nft.delete_table("rkube").unwrap();
}

#[test]
fn bench_runs_small() {
    if !can_run() {
        eprintln!("skipped: needs root, nft, ip, curl and busybox");
        return;
    }
    let report = proxy::bench(300, 10).unwrap();
    eprintln!("{report}");
    assert_eq!(report.services, 300);
    // 300 service chains + the fixed ones; one balancing rule each
    assert_eq!(report.chains, 300 + proxy::rules::BASE_CHAINS);
    assert_eq!(report.rules, 300);
}

/// The target: `cargo test --release -p proxy --test nft -- --ignored --nocapture`.
#[test]
#[ignore = "takes seconds; the figures go to docs/benchmarks.md"]
fn bench_ten_thousand_services() {
    if !can_run() {
        eprintln!("skipped: needs root, nft, ip, curl and busybox");
        return;
    }
    let report = proxy::bench(10_000, 10).unwrap();
    eprintln!("{report}");
    assert_eq!(report.services, 10_000);
}
