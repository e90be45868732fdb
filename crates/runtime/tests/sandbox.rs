//! Pod sandboxes with the real CNI plugins (`/usr/lib/cni`: bridge, host-local, portmap,
//! loopback). Needs root; skipped without it or without the plugins.
//!
//! Each test runs its CNI work inside a network namespace of its own (a simulated host, made
//! with `ip netns add` and entered by the test's thread), so the bridge, iptables rules and
//! forwarding it sets up never touch the machine and go away with that namespace.

use std::net::IpAddr;
use std::os::fd::AsFd as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use runtime::sandbox::{
    NetworkConfig, PortMapping, Sandbox, SandboxError, SandboxManager, SandboxSpec,
};

const CNI_BIN_DIR: &str = "/usr/lib/cni";

fn skip() -> bool {
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipped: needs root");
        return true;
    }
    for tool in ["bridge", "host-local", "portmap", "loopback"] {
        if !Path::new(CNI_BIN_DIR).join(tool).exists() {
            eprintln!("skipped: no CNI plugin {tool} in {CNI_BIN_DIR} (scripts/install-deps.sh)");
            return true;
        }
    }
    for tool in ["ip", "unshare", "nsenter", "busybox", "iptables", "curl"] {
        if !Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
        {
            eprintln!("skipped: missing {tool}");
            return true;
        }
    }
    false
}

/// A simulated host: a network namespace the test's thread (and so every process it starts)
/// lives in, and a temp dir for the sandboxes. Dropping it unmounts what is left under the
/// dir and deletes the namespace, with the bridge and iptables rules in it.
struct Host {
    netns: String,
    dir: tempfile::TempDir,
    manager: SandboxManager,
    bridge: String,
}

impl Host {
    fn new(test: &str, pod_cidr: &str) -> Host {
        let netns = format!("rkt-{}-{test}", std::process::id());
        // Left over from a killed run of this test?
        if Path::new("/run/netns").join(&netns).exists() {
            let _ = Command::new("ip").args(["netns", "del", &netns]).status();
        }
        run("ip", &["netns", "add", &netns]);
        let file = std::fs::File::open(format!("/run/netns/{netns}")).unwrap();
        rustix::thread::move_into_link_name_space(
            file.as_fd(),
            Some(rustix::thread::LinkNameSpaceType::Network),
        )
        .unwrap();
        run("ip", &["link", "set", "lo", "up"]);
        let dir = tempfile::tempdir().unwrap();
        let bridge = format!("rkt{}", std::process::id() % 100_000);
        let manager = SandboxManager::new(NetworkConfig {
            root: dir.path().join("sandboxes"),
            cni_bin_dir: CNI_BIN_DIR.into(),
            cni_conf_dir: dir.path().join("cni"),
            bridge: bridge.clone(),
            mtu: 1500,
        })
        .unwrap();
        manager.configure(pod_cidr).unwrap();
        Host {
            netns,
            dir,
            manager,
            bridge,
        }
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("sandboxes")
    }

    /// Files in host-local's allocation table: one per allocated IP, named after it.
    fn allocated_ips(&self) -> Vec<IpAddr> {
        let table = self.root().join(".ipam").join("rkube");
        let Ok(entries) = std::fs::read_dir(table) else {
            return Vec::new();
        };
        let mut ips: Vec<IpAddr> = entries
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse().ok())
            .collect();
        ips.sort();
        ips
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        for mount in mounts_under(self.dir.path()) {
            let _ = rustix::mount::unmount(&mount, rustix::mount::UnmountFlags::DETACH);
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.netns])
            .status();
    }
}

/// A background process, killed on drop.
struct Background(Child);

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
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

fn succeeds(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn in_netns(ns: &Path, cmd: &[&str]) -> bool {
    let flag = format!("--net={}", ns.display());
    let mut args = vec![flag.as_str()];
    args.extend_from_slice(cmd);
    succeeds("nsenter", &args)
}

/// Mount points at or below `dir` in this mount namespace.
fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    let mut mounts: Vec<PathBuf> = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(PathBuf::from)
        .filter(|p| p.starts_with(&dir))
        .collect();
    mounts.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    mounts
}

fn spec(uid: &str, name: &str) -> SandboxSpec {
    SandboxSpec {
        pod_uid: uid.into(),
        pod_namespace: "default".into(),
        pod_name: name.into(),
        hostname: name.into(),
        ..SandboxSpec::default()
    }
}

fn ipv4(sandbox: &Sandbox) -> String {
    assert_eq!(sandbox.ips.len(), 1, "{sandbox:?}");
    sandbox.ips[0].to_string()
}

/// The bridge plugin's per-pod masquerade chains (`CNI-` and 24 hex digits; portmap's chains
/// have other names). Our conflist turns the plugin's `ipMasq` off (the node agent masquerades
/// in a table of its own, sparing the other nodes' pod CIDRs), so none may appear.
fn masquerade_chains() -> usize {
    run("iptables", &["-w", "-t", "nat", "-S"])
        .lines()
        .filter_map(|l| l.strip_prefix("-N CNI-"))
        .filter(|hash| hash.len() == 24 && hash.bytes().all(|b| b.is_ascii_hexdigit()))
        .count()
}

#[tokio::test]
async fn pods_get_addresses_reach_each_other_and_host_ports() {
    if skip() {
        return;
    }
    let host = Host::new("net", "10.77.5.0/24");
    let m = &host.manager;
    let mut web = spec("uid-web", "web");
    web.port_mappings = vec![PortMapping {
        host_port: 18080,
        container_port: 8080,
        protocol: "TCP".into(),
        host_ip: None,
    }];
    let started = Instant::now();
    let a = m.create(&web).await.unwrap();
    let first = started.elapsed();
    let started = Instant::now();
    let b = m.create(&spec("uid-client", "client")).await.unwrap();
    eprintln!(
        "sandbox create: {first:?} (with a hostPort), {:?}",
        started.elapsed()
    );
    let (ip_a, ip_b) = (ipv4(&a), ipv4(&b));
    assert_ne!(ip_a, ip_b);
    for ip in [&ip_a, &ip_b] {
        assert!(ip.starts_with("10.77.5.") && ip != "10.77.5.1", "{ip}");
    }
    assert!(a.is_alive() && b.is_alive());
    let netns_a = a.netns.clone().unwrap();
    let netns_b = b.netns.clone().unwrap();
    assert_eq!(netns_a, host.root().join("uid-web").join("net"));

    // Idempotent: the same sandbox again, no second address.
    assert_eq!(m.create(&web).await.unwrap(), a);
    assert_eq!(m.get("uid-web").unwrap(), Some(a.clone()));
    assert_eq!(host.allocated_ips().len(), 2);
    let mut listed: Vec<String> = m.list().unwrap().into_iter().map(|s| s.pod_uid).collect();
    listed.sort();
    assert_eq!(listed, ["uid-client", "uid-web"]);

    // The bridge is the gateway; pods reach it, each other, and their own loopback.
    let addrs = run("ip", &["-4", "-o", "addr", "show", "dev", &host.bridge]);
    assert!(addrs.contains("10.77.5.1/24"), "{addrs}");
    let ping = |ns: &Path, ip: &str| in_netns(ns, &["busybox", "ping", "-c1", "-W2", ip]);
    assert!(ping(&netns_b, &ip_a), "pod b pings pod a");
    assert!(ping(&netns_a, &ip_b), "pod a pings pod b");
    assert!(ping(&netns_a, "10.77.5.1"), "pod a pings the gateway");
    assert!(ping(&netns_a, "127.0.0.1"), "lo is up in the pod");
    assert!(ping(&netns_b, "127.0.0.1"), "lo is up in the pod");

    // The hostname is set in the pod's own UTS namespace; IPC is the pod's own too.
    let uts = format!("--uts={}", a.uts_ns.as_ref().unwrap().display());
    assert_eq!(run("nsenter", &[&uts, "hostname"]).trim(), "web");
    let ipc = format!("--ipc={}", a.ipc_ns.as_ref().unwrap().display());
    let pod_ipc = run("nsenter", &[&ipc, "readlink", "/proc/self/ns/ipc"]);
    assert_ne!(pod_ipc, run("readlink", &["/proc/self/ns/ipc"]));

    // hostPort 18080 on the host reaches port 8080 in pod a (portmap).
    let www = host.dir.path().join("www");
    std::fs::create_dir_all(&www).unwrap();
    std::fs::write(www.join("index.html"), "hello from pod a\n").unwrap();
    let net_a = format!("--net={}", netns_a.display());
    let _httpd = Background(
        Command::new("nsenter")
            .args([&net_a, "busybox", "httpd", "-f", "-p", "8080", "-h"])
            .arg(&www)
            .spawn()
            .unwrap(),
    );
    let fetch = |url: &str| {
        Command::new("curl")
            .args(["-sf", "-m", "2", url])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let direct = format!("http://{ip_a}:8080/");
    while fetch(&direct).is_none() {
        assert!(Instant::now() < deadline, "httpd in pod a never answered");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        fetch("http://10.77.5.1:18080/").as_deref(),
        Some("hello from pod a\n"),
        "hostPort through the bridge address"
    );
    // From another pod through the host's address (hairpin through the bridge).
    let net_b = format!("--net={}", netns_b.display());
    let from_b = run(
        "nsenter",
        &[&net_b, "curl", "-sf", "-m", "2", "http://10.77.5.1:18080/"],
    );
    assert_eq!(from_b, "hello from pod a\n");
    let nat = run("iptables", &["-w", "-t", "nat", "-S"]);
    assert!(nat.contains("--dport 18080"), "{nat}");

    // Remove: the address is released, the rules go, nothing stays mounted or on disk.
    assert_eq!(
        masquerade_chains(),
        0,
        "the node agent masquerades; the bridge plugin makes no chains"
    );
    m.remove("uid-web").await.unwrap();
    m.remove("uid-web").await.unwrap();
    assert_eq!(m.get("uid-web").unwrap(), None);
    assert!(!host.root().join("uid-web").exists());
    assert_eq!(host.allocated_ips(), [b.ips[0]]);
    assert!(!run("iptables", &["-w", "-t", "nat", "-S"]).contains("--dport 18080"));
    assert_eq!(
        masquerade_chains(),
        0,
        "the node agent masquerades; the bridge plugin makes no chains"
    );
    assert!(!ping(&netns_b, &ip_a), "pod a's address is gone");
    m.remove("uid-client").await.unwrap();
    assert!(host.allocated_ips().is_empty());
    assert_eq!(
        masquerade_chains(),
        0,
        "the node agent masquerades; the bridge plugin makes no chains"
    );
    assert!(m.list().unwrap().is_empty());
    let root = std::fs::canonicalize(host.root()).unwrap();
    assert_eq!(
        mounts_under(host.dir.path()),
        [root],
        "only the private root mount stays"
    );
}

#[tokio::test]
async fn addresses_are_released_and_reused_and_a_failed_add_leaves_nothing() {
    if skip() {
        return;
    }
    // A /29: the gateway and five addresses for pods.
    let host = Host::new("ipam", "10.77.6.0/29");
    let m = &host.manager;
    let mut sandboxes = Vec::new();
    for i in 0..5 {
        sandboxes.push(
            m.create(&spec(&format!("uid-{i}"), &format!("p{i}")))
                .await
                .unwrap(),
        );
    }
    let mut ips: Vec<IpAddr> = sandboxes.iter().map(|s| s.ips[0]).collect();
    ips.sort();
    ips.dedup();
    assert_eq!(ips.len(), 5);
    assert_eq!(host.allocated_ips(), ips);

    // The range is full: ADD fails with host-local's message and the half-made sandbox goes.
    let err = m.create(&spec("uid-full", "full")).await.unwrap_err();
    match &err {
        SandboxError::Cni {
            pod,
            plugin,
            message,
        } => {
            assert_eq!(pod, "default/full");
            assert_eq!(plugin, "bridge");
            assert!(message.contains("no IP addresses available"), "{message}");
        }
        other => panic!("unexpected error {other:?}"),
    }
    assert!(!host.root().join("uid-full").exists());
    assert_eq!(m.get("uid-full").unwrap(), None);
    assert_eq!(
        masquerade_chains(),
        0,
        "the node agent masquerades; the bridge plugin makes no chains"
    );

    // Removing one frees its address for the next pod.
    let freed = sandboxes[2].ips[0];
    m.remove("uid-2").await.unwrap();
    let next = m.create(&spec("uid-next", "next")).await.unwrap();
    assert_eq!(next.ips, [freed]);

    for s in m.list().unwrap() {
        m.remove(&s.pod_uid).await.unwrap();
    }
    assert!(host.allocated_ips().is_empty());
    assert_eq!(
        masquerade_chains(),
        0,
        "the node agent masquerades; the bridge plugin makes no chains"
    );
    assert_eq!(mounts_under(host.dir.path()).len(), 1);
}

#[tokio::test]
async fn a_sandbox_whose_namespaces_are_gone_is_replaced_and_removable() {
    if skip() {
        return;
    }
    let host = Host::new("gone", "10.77.7.0/24");
    let m = &host.manager;
    let first = m.create(&spec("uid-a", "a")).await.unwrap();
    // A reboot-like cleanup: the namespace mounts go, the files stay.
    for ns in ["net", "ipc", "uts"] {
        rustix::mount::unmount(
            host.root().join("uid-a").join(ns),
            rustix::mount::UnmountFlags::DETACH,
        )
        .unwrap();
    }
    assert!(!first.is_alive());
    assert_eq!(m.get("uid-a").unwrap(), None, "not usable any more");
    assert_eq!(m.list().unwrap().len(), 1, "but still listed for removal");
    // create replaces it (releasing the old address first).
    let second = m.create(&spec("uid-a", "a")).await.unwrap();
    assert_eq!(host.allocated_ips(), second.ips);
    assert_eq!(
        masquerade_chains(),
        0,
        "the node agent masquerades; the bridge plugin makes no chains"
    );
    assert!(in_netns(
        second.netns.as_ref().unwrap(),
        &["busybox", "ping", "-c1", "-W2", "10.77.7.1"]
    ));

    // remove releases the address and the masquerade rules even with the netns gone.
    rustix::mount::unmount(
        second.netns.as_ref().unwrap(),
        rustix::mount::UnmountFlags::DETACH,
    )
    .unwrap();
    m.remove("uid-a").await.unwrap();
    assert!(host.allocated_ips().is_empty());
    assert_eq!(
        masquerade_chains(),
        0,
        "the node agent masquerades; the bridge plugin makes no chains"
    );
    assert!(!host.root().join("uid-a").exists());
}

#[tokio::test]
async fn host_network_and_host_ipc_pods_share_the_hosts_namespaces() {
    if skip() {
        return;
    }
    let host = Host::new("hostnet", "10.77.8.0/24");
    let m = &host.manager;
    let mut hostnet = spec("uid-hn", "hn");
    hostnet.host_network = true;
    let s = m.create(&hostnet).await.unwrap();
    assert_eq!((s.netns.as_ref(), s.uts_ns.as_ref()), (None, None));
    assert!(s.ips.is_empty());
    let ipc = s.ipc_ns.clone().expect("its own IPC namespace");
    assert_eq!(ipc, host.root().join("uid-hn").join("ipc"));
    assert!(host.allocated_ips().is_empty());

    let mut all_host = hostnet.clone();
    all_host.pod_uid = "uid-all".into();
    all_host.host_ipc = true;
    let t = m.create(&all_host).await.unwrap();
    assert_eq!((t.netns, t.ipc_ns, t.uts_ns), (None, None, None));
    assert_eq!(
        m.get("uid-all").unwrap().map(|s| s.pod_uid).as_deref(),
        Some("uid-all")
    );

    let mut ipc_only = spec("uid-ipc", "ipc");
    ipc_only.host_ipc = true;
    let u = m.create(&ipc_only).await.unwrap();
    assert!(u.netns.is_some() && u.uts_ns.is_some() && u.ipc_ns.is_none());
    assert_eq!(u.ips.len(), 1);

    for uid in ["uid-hn", "uid-all", "uid-ipc"] {
        m.remove(uid).await.unwrap();
        assert!(!host.root().join(uid).exists());
    }
    assert!(host.allocated_ips().is_empty());
    assert_eq!(mounts_under(host.dir.path()).len(), 1);
}

#[tokio::test]
async fn without_a_configuration_there_is_no_pod_network() {
    if skip() {
        return;
    }
    let host = Host::new("nocfg", "10.77.9.0/24");
    std::fs::remove_file(host.manager.conflist_path()).unwrap();
    let err = host.manager.create(&spec("uid-x", "x")).await.unwrap_err();
    assert!(
        matches!(&err, SandboxError::Cni { message, .. } if message.contains("network not ready")),
        "{err}"
    );
    assert!(!host.root().join("uid-x").exists());
    // A hostNetwork pod does not need it.
    let mut hostnet = spec("uid-y", "y");
    hostnet.host_network = true;
    host.manager.create(&hostnet).await.unwrap();
    host.manager.remove("uid-y").await.unwrap();
}
