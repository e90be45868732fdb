//! End to end: the node agent of `rkube server` (real runc, real CNI) under stress that the pod
//! lifecycle test does not cover: SIGKILL and a reboot-like loss of every container process,
//! bad pod specs (missing image tag, missing executable, hostPort conflict, missing ConfigMap),
//! lifecycle hooks and deadlines, static pods, and what is left on the host after deletion.
//!
//! Runs as root (runc, cgroups, CNI), as CI does. Every test has its own server, node name,
//! cgroup root, bridge and pod CIDR, so they may run in parallel.

mod support;

use std::collections::{BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{Server, eventually, tail};

const IMAGE: &str = "docker.io/library/busybox:1.36";
const WAIT: Duration = Duration::from_secs(120);

fn pod_json(server: &Server, name: &str) -> Option<Value> {
    let out = server.kubectl(&["get", "pod", name, "-o", "json"]);
    out.status
        .success()
        .then(|| serde_json::from_slice(&out.stdout).ok())
        .flatten()
}

/// Wait until `check` holds for the pod; panics with the pod and the log tail otherwise.
fn wait_pod(server: &Server, name: &str, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + WAIT;
    let mut last = Value::Null;
    loop {
        if let Some(pod) = pod_json(server, name) {
            if check(&pod) {
                return pod;
            }
            last = pod;
        }
        if Instant::now() > deadline {
            panic!(
                "pod {name}: {what} not seen in {WAIT:?}; last status:\n{:#}\nlog tail:\n{}",
                last["status"],
                tail(&server.log(), 60)
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn gone(server: &Server, name: &str) {
    eventually(WAIT, &format!("pod {name} to be gone"), || {
        (!server.kubectl(&["get", "pod", name]).status.success()).then_some(())
    });
}

fn container_status<'a>(pod: &'a Value, name: &str) -> &'a Value {
    ["containerStatuses", "initContainerStatuses"]
        .iter()
        .filter_map(|k| pod["status"][k].as_array())
        .flatten()
        .find(|c| c["name"] == name)
        .unwrap_or(&Value::Null)
}

fn condition<'a>(pod: &'a Value, type_: &str) -> &'a Value {
    pod["status"]["conditions"]
        .as_array()
        .and_then(|list| list.iter().find(|c| c["type"] == type_))
        .unwrap_or(&Value::Null)
}

fn running_and_ready(pod: &Value) -> bool {
    pod["status"]["phase"] == "Running" && condition(pod, "Ready")["status"] == "True"
}

fn waiting_reason(pod: &Value, container: &str) -> String {
    container_status(pod, container)["state"]["waiting"]["reason"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

/// `REASON<TAB>MESSAGE` lines of the events about one object.
fn events(server: &Server, name: &str) -> String {
    server.kubectl_ok(&[
        "get",
        "events",
        "--field-selector",
        &format!("involvedObject.name={name}"),
        "-o",
        "go-template={{range .items}}{{.type}}\t{{.reason}}\t{{.message}}\n{{end}}",
    ])
}

fn has_event(server: &Server, name: &str, type_: &str, reason: &str, message: &str) -> bool {
    events(server, name).lines().any(|line| {
        let mut parts = line.splitn(3, '\t');
        parts.next() == Some(type_)
            && parts.next() == Some(reason)
            && parts.next().is_some_and(|m| m.contains(message))
    })
}

fn wait_event(server: &Server, name: &str, type_: &str, reason: &str, message: &str) {
    let deadline = Instant::now() + WAIT;
    while !has_event(server, name, type_, reason, message) {
        assert!(
            Instant::now() < deadline,
            "no {type_} {reason} event {message:?} about {name}:\n{}\nlog tail:\n{}",
            events(server, name),
            tail(&server.log(), 40)
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn start_node(prepare: impl FnOnce(&Path)) -> Server {
    let server = Server::start_with_agent(&[], |data_dir| {
        support::import_busybox(data_dir, IMAGE);
        prepare(data_dir);
    });
    let node = node_name(&server);
    eventually(WAIT, "the node to be Ready", || {
        let out = server.kubectl(&[
            "get",
            "node",
            &node,
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
        ]);
        (String::from_utf8_lossy(&out.stdout) == "True").then_some(())
    });
    server
}

fn node_name(server: &Server) -> String {
    server.agent.as_ref().unwrap().node_name.clone()
}

fn agent_root(server: &Server) -> PathBuf {
    server.data_dir.path().join("agent")
}

/// A busybox pod; `extra` is appended to the container (indented 4) and `pod_extra` to the
/// pod spec (indented 2).
fn pod(name: &str, script: &str, container_extra: &str, pod_extra: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n{pod_extra}  containers:\n  \
         - name: main\n    image: busybox:1.36\n    imagePullPolicy: IfNotPresent\n    \
         command: [\"sh\", \"-c\", {script:?}]\n{container_extra}"
    )
}

fn id_of(pod: &Value, container: &str) -> String {
    container_status(pod, container)["containerID"]
        .as_str()
        .unwrap_or_default()
        .trim_start_matches("runc://")
        .to_string()
}

/// `<pid>` is a live process (not a zombie).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(") ").map(|(_, rest)| !rest.starts_with('Z')))
        .unwrap_or(false)
}

/// `(container pid, shim pid)` from the shim's record of a running container.
fn container_pids(server: &Server, id: &str) -> (u32, u32) {
    let path = agent_root(server)
        .join("containers")
        .join(id)
        .join("started.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let v: Value = serde_json::from_str(&text).unwrap();
    let pid = |k: &str| v[k].as_u64().unwrap_or_else(|| panic!("{k} in {text}")) as u32;
    (pid("pid"), pid("shimPid"))
}

/// Processes whose command line names a path under the agent's root: shims, runc, exec'd
/// helpers. The server itself names only the data dir, not `<data-dir>/agent/`.
fn agent_processes(server: &Server) -> Vec<u32> {
    let needle = format!("{}/", agent_root(server).display());
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        if String::from_utf8_lossy(&cmdline).contains(&needle) && alive(pid) {
            pids.push(pid);
        }
    }
    pids
}

/// The agent's cgroup directories in every hierarchy (v1 controllers and the unified one).
fn cgroup_dirs(server: &Server) -> Vec<PathBuf> {
    let root = server.agent.as_ref().unwrap().cgroup_root.clone();
    let relative = root.trim_start_matches('/');
    let mut seen = HashSet::new();
    let mut dirs = Vec::new();
    let mut bases = vec![PathBuf::from("/sys/fs/cgroup")];
    if let Ok(entries) = std::fs::read_dir("/sys/fs/cgroup") {
        bases.extend(entries.flatten().map(|e| e.path()));
    }
    for base in bases {
        let dir = base.join(relative);
        if let Ok(canonical) = dir.canonicalize()
            && canonical.is_dir()
            && seen.insert(canonical.clone())
        {
            dirs.push(canonical);
        }
    }
    dirs
}

/// Every directory below `dir`, deepest first.
fn subdirs(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                out.extend(subdirs(&e.path()));
                out.push(e.path());
            }
        }
    }
    out
}

/// Processes in the agent's cgroups (the containers and what they started).
fn cgroup_processes(server: &Server) -> BTreeSet<u32> {
    let mut pids = BTreeSet::new();
    for base in cgroup_dirs(server) {
        for dir in subdirs(&base).into_iter().chain([base.clone()]) {
            let text = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
            pids.extend(text.lines().filter_map(|l| l.parse::<u32>().ok()));
        }
    }
    pids.retain(|p| alive(*p));
    pids
}

/// Pod cgroups (`pod<uid>`) left under the agent's cgroup root, in any hierarchy.
fn pod_cgroups(server: &Server) -> Vec<PathBuf> {
    cgroup_dirs(server)
        .iter()
        .flat_map(|base| subdirs(base))
        .filter(|d| {
            d.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("pod"))
        })
        .collect()
}

/// Mount points at or under `dir` in this mount namespace.
fn mounts_under(dir: &Path) -> Vec<String> {
    let prefix = dir.to_string_lossy().into_owned();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| *m == prefix || m.starts_with(&format!("{prefix}/")))
        .map(str::to_string)
        .collect()
}

fn sigkill(pids: impl IntoIterator<Item = u32>) {
    let args: Vec<String> = pids.into_iter().map(|p| p.to_string()).collect();
    if args.is_empty() {
        return;
    }
    let _ = Command::new("kill")
        .arg("-9")
        .args(&args)
        .stderr(Stdio::null())
        .status();
}

/// What a reboot does to the node, with the data dir kept: the agent, every shim and every
/// container process die at once (no exit records), mounts (rootfs overlays, namespace files,
/// tmpfs volumes) and cgroups vanish, and so does the pod bridge.
fn simulate_reboot(server: &mut Server) {
    server.kill_9();
    let deadline = Instant::now() + Duration::from_secs(30);
    // Shims first, so that nobody writes an exit record for the containers.
    loop {
        let shims = agent_processes(server);
        if shims.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "shims survive SIGKILL: {shims:?}");
        sigkill(shims);
        std::thread::sleep(Duration::from_millis(100));
    }
    loop {
        let procs = cgroup_processes(server);
        if procs.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "container processes survive SIGKILL: {procs:?}"
        );
        sigkill(procs);
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut mounts = mounts_under(server.data_dir.path());
    mounts.sort_by_key(|m| std::cmp::Reverse(m.matches('/').count()));
    for m in mounts.iter().filter(|m| !m.ends_with("/sandboxes")) {
        let _ = Command::new("umount").args(["-l", m]).status();
    }
    for base in cgroup_dirs(server) {
        for dir in subdirs(&base) {
            let _ = std::fs::remove_dir(&dir);
        }
    }
    let bridge = server.agent.as_ref().unwrap().bridge.clone();
    let _ = Command::new("ip")
        .args(["link", "delete", &bridge])
        .stderr(Stdio::null())
        .status();
}

/// The IPs host-local has handed out on this node (one file per IP in its store).
fn reserved_ips(server: &Server) -> Vec<String> {
    let mut ips = Vec::new();
    for dir in subdirs(&agent_root(server).join("sandboxes").join(".ipam")) {
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.parse::<std::net::IpAddr>().is_ok() {
                    ips.push(name);
                }
            }
        }
    }
    ips.sort();
    ips
}

/// Entries of a directory (names), sorted; empty when it does not exist.
fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| !n.starts_with('.'))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

fn log_lines(path: &Path) -> usize {
    std::fs::read_to_string(path)
        .map(|t| t.lines().count())
        .unwrap_or(0)
}

fn container_log(server: &Server, pod: &Value, container: &str, attempt: u64) -> PathBuf {
    agent_root(server)
        .join("logs")
        .join(format!(
            "default_{}_{}",
            pod["metadata"]["name"].as_str().unwrap(),
            pod["metadata"]["uid"].as_str().unwrap()
        ))
        .join(container)
        .join(format!("{attempt}.log"))
}

const COUNTER: &str = "i=0; while true; do i=$((i+1)); echo $i; sleep 0.2; done";

const STAGED: &str = r#"apiVersion: v1
kind: Pod
metadata:
  name: staged
spec:
  terminationGracePeriodSeconds: 2
  initContainers:
  - name: prepare
    image: busybox:1.36
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", "echo init ran >> /data/runs"]
    volumeMounts: [{name: data, mountPath: /data}]
  containers:
  - name: main
    image: busybox:1.36
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", "cat /data/runs; sleep 3600"]
    volumeMounts: [{name: data, mountPath: /data}]
    readinessProbe:
      exec: {command: ["true"]}
      periodSeconds: 1
  volumes: [{name: data, emptyDir: {}}]
"#;

#[test]
fn agent_restart_keeps_containers_and_a_reboot_recreates_pods() {
    let mut server = start_node(|_| {});
    let counter = pod(
        "counter",
        COUNTER,
        "    readinessProbe:\n      exec: {command: [\"true\"]}\n      periodSeconds: 1\n",
        "  terminationGracePeriodSeconds: 2\n",
    );
    server.apply(&[counter.as_str(), STAGED].join("---\n"));
    let before: Vec<Value> = ["counter", "staged"]
        .iter()
        .map(|n| wait_pod(&server, n, "Running and Ready", running_and_ready))
        .collect();
    let ids: Vec<String> = before.iter().map(|p| id_of(p, "main")).collect();
    let init_id = id_of(&before[1], "prepare");
    let pids: Vec<(u32, u32)> = ids.iter().map(|id| container_pids(&server, id)).collect();
    let counter_log = container_log(&server, &before[0], "main", 0);

    // SIGKILL the agent: containers, their shims and their logging carry on without it.
    server.kill_9();
    for (pid, shim) in &pids {
        assert!(alive(*pid) && alive(*shim), "container {pid} / shim {shim} died with the agent");
    }
    let lines = log_lines(&counter_log);
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        log_lines(&counter_log) >= lines + 5,
        "the counter stopped logging while the agent was down ({lines} lines)"
    );

    // The restarted agent adopts them: same containers, no restarts, Ready all along.
    server.restart();
    let watch_until = Instant::now() + Duration::from_secs(8);
    while Instant::now() < watch_until {
        for (n, name) in ["counter", "staged"].iter().enumerate() {
            let p = pod_json(&server, name).expect("pod");
            assert_eq!(
                condition(&p, "Ready")["status"], "True",
                "{name} lost readiness after the agent restart: {:#}\n{}",
                p["status"],
                tail(&server.log(), 40)
            );
            assert_eq!(id_of(&p, "main"), ids[n], "{name} got a new container");
            assert_eq!(container_status(&p, "main")["restartCount"], 0);
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let staged = pod_json(&server, "staged").unwrap();
    assert_eq!(id_of(&staged, "prepare"), init_id, "the init container ran again");
    for (pid, shim) in &pids {
        assert!(alive(*pid) && alive(*shim));
    }
    // A reboot: every process gone, mounts and cgroups too, the data dir kept.
    let old_ips: Vec<String> = before
        .iter()
        .map(|p| p["status"]["podIP"].as_str().unwrap().to_string())
        .collect();
    simulate_reboot(&mut server);
    for (pid, shim) in &pids {
        assert!(!alive(*pid) && !alive(*shim));
    }
    server.restart();
    let after: Vec<Value> = ["counter", "staged"]
        .iter()
        .enumerate()
        .map(|(n, name)| {
            wait_pod(&server, name, "Running and Ready in new containers", |p| {
                running_and_ready(p) && !id_of(p, "main").is_empty() && id_of(p, "main") != ids[n]
            })
        })
        .collect();
    for (p, name) in after.iter().zip(["counter", "staged"]) {
        let s = container_status(p, "main");
        assert_eq!(s["restartCount"], 1, "{name}: {s:#}");
        let last = &s["lastState"]["terminated"];
        assert_eq!(last["reason"], "Unknown", "{name}: {s:#}");
        assert_eq!(last["exitCode"], 255, "{name}: {s:#}");
        assert!(p["status"]["podIP"].is_string(), "{name} has no IP");
    }
    // The pod was started anew in a new sandbox: its init container ran again first.
    assert_ne!(id_of(&after[1], "prepare"), init_id);
    let logs = eventually(WAIT, "the staged pod's new logs", || {
        let out = server.kubectl(&["logs", "staged", "-c", "main"]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        (!text.is_empty()).then_some(text)
    });
    assert_eq!(logs, "init ran\ninit ran\n");
    let new_log = container_log(&server, &after[0], "main", 1);
    eventually(WAIT, "the counter to count again", || {
        (log_lines(&new_log) >= 3).then_some(())
    });
    assert!(
        log_lines(&counter_log) > 0,
        "the first run's log is kept for --previous"
    );

    // Nothing of the old runs is left: no processes, mounts, sandboxes or addresses.
    let new_ids: HashSet<String> = after
        .iter()
        .flat_map(|p| [id_of(p, "main"), id_of(p, "prepare")])
        .filter(|id| !id.is_empty())
        .collect();
    let root = agent_root(&server);
    for m in mounts_under(&root.join("containers")) {
        assert!(
            new_ids.iter().any(|id| m.contains(id.as_str())),
            "a mount of an old container is left: {m}"
        );
    }
    let uids: Vec<String> = after
        .iter()
        .map(|p| p["metadata"]["uid"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(entries(&root.join("sandboxes")), {
        let mut u = uids.clone();
        u.sort();
        u
    });
    let ips = reserved_ips(&server);
    assert_eq!(
        ips.len(),
        2,
        "host-local holds addresses of the lost sandboxes: {ips:?} (old {old_ips:?})"
    );
    for p in &after {
        let ip = p["status"]["podIP"].as_str().unwrap().to_string();
        assert!(ips.contains(&ip), "{ip} not among {ips:?}");
    }
    let shims = agent_processes(&server);
    let running: Vec<u32> = after
        .iter()
        .map(|p| container_pids(&server, &id_of(p, "main")).1)
        .collect();
    for shim in &shims {
        let cmdline = std::fs::read(format!("/proc/{shim}/cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        assert!(
            running.contains(shim) || !cmdline.contains(" shim "),
            "a shim of an old container runs: {cmdline}"
        );
    }
}
