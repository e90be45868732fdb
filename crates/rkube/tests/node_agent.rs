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
use std::process::{Command, Stdio};
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
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
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
        assert!(
            Instant::now() < deadline,
            "shims survive SIGKILL: {shims:?}"
        );
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
        assert!(
            alive(*pid) && alive(*shim),
            "container {pid} / shim {shim} died with the agent"
        );
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
                condition(&p, "Ready")["status"],
                "True",
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
    assert_eq!(
        id_of(&staged, "prepare"),
        init_id,
        "the init container ran again"
    );
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

#[test]
fn bad_specs_get_upstream_reasons_and_the_node_keeps_working() {
    let registry = support::Registry::start();
    registry.push_busybox("library/busybox", "1.36");
    let mirror = format!(
        "mirrors:\n  docker.io:\n    endpoint:\n      - \"http://{}\"\n",
        registry.addr
    );
    let server = start_node(|data_dir| {
        std::fs::write(data_dir.join("registries.yaml"), &mirror).expect("write registries.yaml");
    });
    let steady = pod(
        "steady",
        COUNTER,
        "",
        "  terminationGracePeriodSeconds: 1\n",
    );
    server.apply(&steady);
    let steady_pod = wait_pod(&server, "steady", "Running and Ready", running_and_ready);
    let steady_id = id_of(&steady_pod, "main");

    let host_port = testing::free_port();
    let ports = format!("    ports:\n    - containerPort: 80\n      hostPort: {host_port}\n");
    let cfg_volume = "    volumeMounts: [{name: cfg, mountPath: /cfg}]\n";
    let bad = [
        // A tag the registry does not have (pulled through the docker.io mirror).
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: notag\nspec:\n  containers:\n  - name: main\n    \
         image: busybox:no-such-tag\n    command: [\"sleep\", \"3600\"]\n"
            .to_string(),
        // An executable the image does not have.
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: badcmd\nspec:\n  containers:\n  - name: main\n    \
         image: busybox:1.36\n    imagePullPolicy: IfNotPresent\n    command: [\"no-such-binary\", \"--flag\"]\n"
            .to_string(),
        pod("port-a", "sleep 3600", &ports, "  terminationGracePeriodSeconds: 1\n"),
        pod("port-b", "sleep 3600", &ports, "  terminationGracePeriodSeconds: 1\n"),
        pod(
            "needs-cm",
            "cat /cfg/greeting; echo; sleep 3600",
            cfg_volume,
            "  terminationGracePeriodSeconds: 1\n  volumes:\n  - name: cfg\n    configMap: {name: late-cm}\n",
        ),
    ];
    // port-a must hold the port before port-b asks for it.
    server.apply(&bad[2]);
    wait_pod(&server, "port-a", "Running", |p| {
        p["status"]["phase"] == "Running"
    });
    server.apply(
        &[&bad[0], &bad[1], &bad[3], &bad[4]]
            .map(String::as_str)
            .join("---\n"),
    );

    // Missing tag: ErrImagePull, then ImagePullBackOff, with upstream's events.
    let p = wait_pod(&server, "notag", "ErrImagePull", |p| {
        waiting_reason(p, "main") == "ErrImagePull"
    });
    let message = container_status(&p, "main")["state"]["waiting"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        message.contains("busybox:no-such-tag") && message.contains("not found"),
        "{message}"
    );
    wait_pod(&server, "notag", "ImagePullBackOff", |p| {
        waiting_reason(p, "main") == "ImagePullBackOff"
    });
    wait_event(
        &server,
        "notag",
        "Normal",
        "Pulling",
        "Pulling image \"busybox:no-such-tag\"",
    );
    wait_event(
        &server,
        "notag",
        "Warning",
        "Failed",
        "Failed to pull image \"busybox:no-such-tag\"",
    );
    wait_event(&server, "notag", "Warning", "Failed", "Error: ErrImagePull");
    wait_event(
        &server,
        "notag",
        "Normal",
        "BackOff",
        "Back-off pulling image \"busybox:no-such-tag\"",
    );
    wait_event(
        &server,
        "notag",
        "Warning",
        "Failed",
        "Error: ImagePullBackOff",
    );
    assert_eq!(
        pod_json(&server, "notag").unwrap()["status"]["phase"],
        "Pending"
    );

    // Missing executable: upstream's StartError (exit code 128) naming it, then
    // CrashLoopBackOff; the runtime's message in a Failed event.
    let p = wait_pod(&server, "badcmd", "a StartError", |p| {
        container_status(p, "main")["lastState"]["terminated"]["reason"] == "StartError"
    });
    let s = container_status(&p, "main");
    let t = &s["lastState"]["terminated"];
    assert_eq!(t["exitCode"], 128, "{s:#}");
    assert!(
        t["message"]
            .as_str()
            .unwrap_or_default()
            .contains("no-such-binary"),
        "{s:#}"
    );
    let p = wait_pod(&server, "badcmd", "CrashLoopBackOff", |p| {
        waiting_reason(p, "main") == "CrashLoopBackOff"
    });
    assert!(container_status(&p, "main")["restartCount"].as_i64() >= Some(1));
    assert_eq!(p["status"]["phase"], "Running", "{:#}", p["status"]);
    wait_event(&server, "badcmd", "Warning", "Failed", "no-such-binary");
    wait_event(
        &server,
        "badcmd",
        "Warning",
        "BackOff",
        "Back-off restarting failed container main",
    );

    // A hostPort taken on the only node: the scheduler keeps the second pod Pending.
    let p = wait_pod(&server, "port-b", "Unschedulable", |p| {
        condition(p, "PodScheduled")["reason"] == "Unschedulable"
    });
    assert_eq!(p["status"]["phase"], "Pending");
    assert!(p["spec"]["nodeName"].is_null());
    let expected =
        "0/1 nodes are available: 1 node(s) didn't have free ports for the requested pod ports.";
    assert!(
        condition(&p, "PodScheduled")["message"]
            .as_str()
            .unwrap_or_default()
            .starts_with(expected),
        "{:#}",
        p["status"]
    );
    wait_event(&server, "port-b", "Warning", "FailedScheduling", expected);

    // A missing ConfigMap: ContainerCreating with FailedMount events, until it exists.
    let p = wait_pod(&server, "needs-cm", "ContainerCreating", |p| {
        waiting_reason(p, "main") == "ContainerCreating"
    });
    assert_eq!(p["status"]["phase"], "Pending");
    wait_event(
        &server,
        "needs-cm",
        "Warning",
        "FailedMount",
        "MountVolume.SetUp failed for volume \"cfg\" : configmap \"late-cm\" not found",
    );
    server.kubectl_ok(&[
        "create",
        "configmap",
        "late-cm",
        "--from-literal=greeting=hello",
    ]);
    wait_pod(&server, "needs-cm", "Running and Ready", running_and_ready);
    let logs = eventually(WAIT, "the needs-cm pod's logs", || {
        let out = server.kubectl(&["logs", "needs-cm"]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        (!text.is_empty()).then_some(text)
    });
    assert_eq!(logs.trim(), "hello");

    // Meanwhile the other pods ran on undisturbed, and new pods still start.
    let p = pod_json(&server, "steady").unwrap();
    assert!(running_and_ready(&p));
    assert_eq!(id_of(&p, "main"), steady_id);
    assert_eq!(container_status(&p, "main")["restartCount"], 0);
    assert!(running_and_ready(&pod_json(&server, "port-a").unwrap()));
    server.apply(&pod(
        "late",
        "sleep 3600",
        "",
        "  terminationGracePeriodSeconds: 1\n",
    ));
    wait_pod(&server, "late", "Running and Ready", running_and_ready);
    // The bad pods go as any other.
    server.kubectl_ok(&["delete", "pod", "notag", "badcmd", "port-b", "--wait=false"]);
    for name in ["notag", "badcmd", "port-b"] {
        gone(&server, name);
    }
    // With the port free again, a pod asking for it is scheduled and runs.
    server.apply(&pod(
        "port-c",
        "sleep 3600",
        &ports,
        "  terminationGracePeriodSeconds: 1\n",
    ));
    server.kubectl_ok(&["delete", "pod", "port-a", "--wait=false"]);
    wait_pod(&server, "port-c", "Running and Ready", running_and_ready);
}

/// Delete pods at once; how long each took to go from the API.
fn delete_and_time(server: &Server, names: &[&str]) -> Vec<Duration> {
    let start = Instant::now();
    let mut args = vec!["delete", "pod", "--wait=false"];
    args.extend_from_slice(names);
    server.kubectl_ok(&args);
    let mut took: Vec<Option<Duration>> = vec![None; names.len()];
    while took.iter().any(Option::is_none) {
        assert!(
            start.elapsed() < WAIT,
            "pods not deleted in {WAIT:?}: {names:?} {took:?}\n{}",
            tail(&server.log(), 40)
        );
        let out = server.kubectl_ok(&["get", "pods", "-o", "name"]);
        for (i, name) in names.iter().enumerate() {
            if took[i].is_none() && !out.lines().any(|l| l == format!("pod/{name}")) {
                took[i] = Some(start.elapsed());
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    took.into_iter().map(Option::unwrap).collect()
}

#[test]
fn hooks_grace_periods_and_active_deadlines() {
    let server = start_node(|_| {});
    let host = tempfile::tempdir().expect("temp dir");
    let host_volume = format!(
        "  volumes:\n  - name: host\n    hostPath: {{path: {}, type: Directory}}\n",
        host.path().display()
    );
    // postStart runs as the container starts (the container waits to see its file); preStop
    // runs before SIGTERM reaches it (the order of lines in a file on the host).
    let hooks = pod(
        "hooks",
        "trap 'echo term >> /host/order; exit 0' TERM; \
         while [ ! -f /tmp/poststart ]; do sleep 0.1; done; echo saw $(cat /tmp/poststart); \
         while true; do sleep 0.2; done",
        "    lifecycle:\n      postStart:\n        exec: {command: [\"sh\", \"-c\", \"echo started > /tmp/poststart\"]}\n      \
         preStop:\n        exec: {command: [\"sh\", \"-c\", \"echo prestop >> /host/order; sleep 2\"]}\n    \
         volumeMounts: [{name: host, mountPath: /host}]\n",
        &format!("  terminationGracePeriodSeconds: 30\n{host_volume}"),
    );
    // A sleep preStop action delays the SIGTERM it otherwise would get at once.
    let sleep_hook = pod(
        "sleephook",
        "trap 'exit 0' TERM; while true; do sleep 0.2; done",
        "    lifecycle:\n      preStop:\n        sleep: {seconds: 3}\n",
        "  terminationGracePeriodSeconds: 30\n",
    );
    // A container that catches SIGTERM and carries on gets SIGKILL after the grace period.
    // (An init without any handler never sees SIGTERM: the runtime kills it at once.)
    let stubborn = pod(
        "stubborn",
        "trap 'echo ignoring TERM' TERM; while true; do sleep 0.2; done",
        "",
        "  terminationGracePeriodSeconds: 4\n",
    );
    let quick = pod(
        "quick",
        "trap 'exit 0' TERM; while true; do sleep 0.2; done",
        "",
        "  terminationGracePeriodSeconds: 30\n",
    );
    let deadline = pod(
        "deadline",
        "sleep 3600",
        "",
        "  terminationGracePeriodSeconds: 1\n  activeDeadlineSeconds: 5\n",
    );
    server.apply(&[hooks, sleep_hook, stubborn, quick, deadline].join("---\n"));
    for name in ["hooks", "sleephook", "stubborn", "quick"] {
        wait_pod(&server, name, "Running and Ready", running_and_ready);
    }
    let logs = eventually(WAIT, "the hooks pod to see its postStart file", || {
        let out = server.kubectl(&["logs", "hooks"]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        (!text.is_empty()).then_some(text)
    });
    assert_eq!(logs.trim(), "saw started");

    let took = delete_and_time(&server, &["hooks", "sleephook", "stubborn", "quick"]);
    let [hooks_took, sleep_took, stubborn_took, quick_took] = took[..] else {
        unreachable!()
    };
    let order = std::fs::read_to_string(host.path().join("order")).unwrap_or_default();
    assert_eq!(order, "prestop\nterm\n", "preStop must run before SIGTERM");
    assert!(
        hooks_took >= Duration::from_secs(2) && hooks_took < Duration::from_secs(20),
        "the exec preStop hook sleeps 2 s: deletion took {hooks_took:?}"
    );
    assert!(
        sleep_took >= Duration::from_secs(3) && sleep_took < Duration::from_secs(20),
        "the sleep preStop action waits 3 s: deletion took {sleep_took:?}"
    );
    assert!(
        stubborn_took >= Duration::from_millis(3500) && stubborn_took < Duration::from_secs(20),
        "SIGKILL comes after the 4 s grace period: deletion took {stubborn_took:?}\n{}",
        log_about(&server, "stubborn")
    );
    assert!(
        quick_took < Duration::from_millis(3500),
        "a container that exits on SIGTERM does not wait for its 30 s grace: {quick_took:?}"
    );

    // activeDeadlineSeconds: the pod fails with DeadlineExceeded and its container is killed.
    let p = wait_pod(&server, "deadline", "Failed", |p| {
        p["status"]["phase"] == "Failed"
    });
    assert_eq!(
        p["status"]["reason"], "DeadlineExceeded",
        "{:#}",
        p["status"]
    );
    assert_eq!(
        p["status"]["message"],
        "Pod was active on the node longer than the specified deadline"
    );
    let started = p["status"]["startTime"]
        .as_str()
        .expect("startTime")
        .to_string();
    let p = wait_pod(&server, "deadline", "its container terminated", |p| {
        container_status(p, "main")["state"]["terminated"].is_object()
    });
    let t = &container_status(&p, "main")["state"]["terminated"];
    assert_eq!(t["exitCode"], 137, "{t:#}");
    let finished = t["finishedAt"].as_str().unwrap_or_default();
    assert!(
        secs_between(&started, finished) >= 4,
        "killed before its deadline: started {started}, finished {finished}"
    );
    assert_eq!(condition(&p, "Ready")["status"], "False");
    wait_event(
        &server,
        "deadline",
        "Normal",
        "DeadlineExceeded",
        "longer than the specified deadline",
    );
    // A failed pod's sandbox is released: its IP goes back.
    eventually(WAIT, "the failed pod's sandbox to be released", || {
        let uid = p["metadata"]["uid"].as_str().unwrap();
        (!agent_root(&server).join("sandboxes").join(uid).exists()).then_some(())
    });
}

/// The server log's lines that mention `word`.
fn log_about(server: &Server, word: &str) -> String {
    let log = server.log();
    let lines: Vec<&str> = log.lines().filter(|l| l.contains(word)).collect();
    tail(&lines.join("\n"), 60)
}

/// Seconds from one RFC 3339 time (UTC, `Z`) to another.
fn secs_between(from: &str, to: &str) -> i64 {
    let secs = |t: &str| -> i64 {
        let out = Command::new("date")
            .args(["-u", "-d", t, "+%s"])
            .output()
            .expect("run date");
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .unwrap_or(0)
    };
    secs(to) - secs(from)
}

#[test]
fn static_pods_run_from_the_manifest_folder_and_are_mirrored() {
    let server = start_node(|_| {});
    let node = node_name(&server);
    let manifests = server.data_dir.path().join("manifests");
    let manifest = pod(
        "static-web",
        COUNTER,
        "",
        "  terminationGracePeriodSeconds: 1\n",
    );
    std::fs::create_dir_all(&manifests).unwrap();
    std::fs::write(manifests.join("static-web.yaml"), manifest).unwrap();
    let name = format!("static-web-{node}");
    let p = wait_pod(
        &server,
        &name,
        "the mirror pod Running and Ready",
        running_and_ready,
    );
    let annotations = &p["metadata"]["annotations"];
    assert!(
        annotations["kubernetes.io/config.mirror"].is_string(),
        "{annotations:#}"
    );
    assert_eq!(annotations["kubernetes.io/config.source"], "file");
    assert_eq!(p["spec"]["nodeName"], node.as_str());
    let id = id_of(&p, "main");
    let (pid, shim) = container_pids(&server, &id);
    assert!(alive(pid) && alive(shim));
    let logs = eventually(WAIT, "the static pod's logs", || {
        let out = server.kubectl(&["logs", &name]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.contains("\n3\n").then_some(text)
    });
    assert!(logs.starts_with("1\n2\n"), "{logs}");

    // Deleting the mirror pod only makes the agent mirror it again: the pod keeps running.
    let mirror_uid = p["metadata"]["uid"].as_str().unwrap().to_string();
    server.kubectl_ok(&["delete", "pod", &name, "--wait=false"]);
    let p = wait_pod(&server, &name, "a new mirror pod", |p| {
        p["metadata"]["uid"] != mirror_uid.as_str() && running_and_ready(p)
    });
    assert_eq!(
        id_of(&p, "main"),
        id,
        "deleting the mirror must not restart the static pod"
    );
    assert!(alive(pid));

    // Removing the manifest stops the pod and removes its mirror.
    std::fs::remove_file(manifests.join("static-web.yaml")).unwrap();
    gone(&server, &name);
    eventually(WAIT, "the static pod's container to stop", || {
        (!alive(pid) && !alive(shim)).then_some(())
    });
    eventually(WAIT, "the static pod's container to be removed", || {
        entries(&agent_root(&server).join("containers"))
            .is_empty()
            .then_some(())
    });
}

#[test]
fn deleted_pods_leave_nothing_on_the_node() {
    let server = start_node(|_| {});
    let root = agent_root(&server);
    let baseline_mounts = mounts_under(server.data_dir.path());
    let host_port = testing::free_port();
    server.kubectl_ok(&["create", "configmap", "settings", "--from-literal=k=v"]);
    server.kubectl_ok(&["create", "secret", "generic", "token", "--from-literal=t=s"]);
    let volumes = "  volumes:\n  - name: scratch\n    emptyDir: {}\n  - name: mem\n    emptyDir: {medium: Memory, sizeLimit: 8Mi}\n  \
                   - name: cfg\n    configMap: {name: settings}\n  - name: sec\n    secret: {secretName: token}\n";
    let mounts = "    volumeMounts:\n    - {name: scratch, mountPath: /scratch}\n    - {name: mem, mountPath: /mem}\n    \
                  - {name: cfg, mountPath: /cfg}\n    - {name: sec, mountPath: /sec}\n";
    let limits = "    resources:\n      requests: {cpu: 10m, memory: 16Mi}\n      limits: {cpu: 10m, memory: 16Mi}\n";
    let ports = format!("    ports:\n    - containerPort: 80\n      hostPort: {host_port}\n");
    let pods = [
        pod(
            "full",
            "echo x > /scratch/f; echo y > /mem/f; sleep 3600",
            &format!("{mounts}{ports}"),
            &format!("  terminationGracePeriodSeconds: 1\n{volumes}"),
        ),
        pod(
            "guaranteed",
            "sleep 3600",
            limits,
            "  terminationGracePeriodSeconds: 1\n",
        ),
        STAGED.to_string(),
        pod("finished", "exit 0", "", "  restartPolicy: Never\n"),
    ];
    server.apply(&pods.join("---\n"));
    for name in ["full", "guaranteed", "staged"] {
        wait_pod(&server, name, "Running and Ready", running_and_ready);
    }
    wait_pod(&server, "finished", "Succeeded", |p| {
        p["status"]["phase"] == "Succeeded"
    });
    // While they run there is something to find, so the checks below can fail.
    assert!(!cgroup_processes(&server).is_empty());
    assert!(!pod_cgroups(&server).is_empty());
    assert!(mounts_under(&root.join("containers")).len() >= 3);
    assert!(mounts_under(&root.join("pods")).len() >= 2, "tmpfs volumes");
    assert!(!agent_processes(&server).is_empty());
    assert_eq!(reserved_ips(&server).len(), 3);

    server.kubectl_ok(&["delete", "pods", "--all", "--wait=false"]);
    eventually(WAIT, "every pod to be gone", || {
        server
            .kubectl_ok(&["get", "pods", "-o", "name"])
            .trim()
            .is_empty()
            .then_some(())
    });
    // The worker finishes its cleanup right after the pod object goes.
    let leftovers = || {
        let mut left = Vec::new();
        let procs = cgroup_processes(&server);
        if !procs.is_empty() {
            left.push(format!("processes in the pod cgroups: {procs:?}"));
        }
        let shims = agent_processes(&server);
        if !shims.is_empty() {
            left.push(format!("shims or runc: {shims:?}"));
        }
        let cgroups = pod_cgroups(&server);
        if !cgroups.is_empty() {
            left.push(format!("pod cgroups: {cgroups:?}"));
        }
        let mut mounts = mounts_under(server.data_dir.path());
        // The sandboxes root is made a private mount once, for the agent's lifetime.
        let sandboxes_root = root.join("sandboxes").display().to_string();
        mounts.retain(|m| !baseline_mounts.contains(m) && *m != sandboxes_root);
        if !mounts.is_empty() {
            left.push(format!("mounts: {mounts:?}"));
        }
        for dir in ["containers", "runc", "sandboxes", "pods", "logs"] {
            let names = entries(&root.join(dir));
            if !names.is_empty() {
                left.push(format!("{dir}/: {names:?}"));
            }
        }
        let ips = reserved_ips(&server);
        if !ips.is_empty() {
            left.push(format!("reserved IPs: {ips:?}"));
        }
        left
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = leftovers();
        if left.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "deleted pods left behind:\n  {}\nlog tail:\n{}",
            left.join("\n  "),
            tail(&server.log(), 40)
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    // The freed hostPort and addresses serve a new pod.
    server.apply(&pod(
        "again",
        "sleep 3600",
        &ports,
        "  terminationGracePeriodSeconds: 1\n",
    ));
    wait_pod(&server, "again", "Running and Ready", running_and_ready);
}
