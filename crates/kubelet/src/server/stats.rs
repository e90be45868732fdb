//! `GET /stats/summary`: node, pod and container CPU and memory from cgroups, in the shape of
//! upstream's `stats/v1alpha1` Summary (what metrics-server and our API server read).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, Utc};
use runtime::cgroups::{self, CgroupStats};
use runtime::container::{ContainerInfo, ContainerState};
use serde_json::{Value, json};

/// CPU rates need two samples: the last one of every cgroup we were asked about.
static LAST_SAMPLES: Mutex<Option<HashMap<String, (Instant, u64)>>> = Mutex::new(None);
/// If a cgroup has no earlier sample, wait this long for a second one.
const FIRST_SAMPLE_WAIT: Duration = Duration::from_millis(100);

/// CPU use in nanocores between two samples of cumulative CPU time.
pub fn usage_nano_cores(earlier: (Instant, u64), later: (Instant, u64)) -> u64 {
    let elapsed = later.0.saturating_duration_since(earlier.0).as_nanos();
    if elapsed == 0 {
        return 0;
    }
    let used = u128::from(later.1.saturating_sub(earlier.1));
    (used * 1_000_000_000 / elapsed) as u64
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn nanos_to_time(nanos: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_nanos(nanos)
}

/// The `cpu` and `memory` objects of one cgroup.
pub fn cpu_memory(stats: &CgroupStats, nano_cores: u64, now: DateTime<Utc>) -> (Value, Value) {
    let time = rfc3339(now);
    (
        json!({
            "time": time,
            "usageNanoCores": nano_cores,
            "usageCoreNanoSeconds": stats.cpu_usage_nanos,
        }),
        json!({
            "time": time,
            "usageBytes": stats.memory_usage,
            "workingSetBytes": stats.memory_working_set,
        }),
    )
}

fn cgroup_exists(path: &str) -> bool {
    let relative = path.trim_start_matches('/');
    [
        Path::new("/sys/fs/cgroup/memory").join(relative),
        Path::new("/sys/fs/cgroup").join(relative),
    ]
    .iter()
    .any(|p| p.is_dir())
}

/// A pod's cgroup: under the QoS class that has it.
fn pod_cgroup(cgroup_root: &str, pod_uid: &str) -> Option<String> {
    ["Guaranteed", "Burstable", "BestEffort"]
        .iter()
        .map(|qos| cgroups::pod_cgroup_path(cgroup_root, qos, pod_uid))
        .find(|p| cgroup_exists(p))
}

/// Sample every path, with CPU rates from the previous sample (or a fresh one).
fn sample(paths: &[String]) -> HashMap<String, (CgroupStats, u64)> {
    let mut first: HashMap<String, (Instant, CgroupStats)> = HashMap::new();
    for path in paths {
        if let Ok(stats) = cgroups::stats(path) {
            first.insert(path.clone(), (Instant::now(), stats));
        }
    }
    let mut guard = LAST_SAMPLES.lock().unwrap_or_else(|e| e.into_inner());
    let last = guard.get_or_insert_with(HashMap::new);
    let missing = first.keys().any(|p| !last.contains_key(p));
    drop(guard);
    if missing {
        std::thread::sleep(FIRST_SAMPLE_WAIT);
        let mut guard = LAST_SAMPLES.lock().unwrap_or_else(|e| e.into_inner());
        let last = guard.get_or_insert_with(HashMap::new);
        for (path, (at, stats)) in &first {
            last.entry(path.clone())
                .or_insert((*at, stats.cpu_usage_nanos));
        }
        drop(guard);
        for (path, entry) in first.iter_mut() {
            if let Ok(stats) = cgroups::stats(path) {
                *entry = (Instant::now(), stats);
            }
        }
    }
    let mut guard = LAST_SAMPLES.lock().unwrap_or_else(|e| e.into_inner());
    let last = guard.get_or_insert_with(HashMap::new);
    let mut out = HashMap::new();
    for (path, (at, stats)) in first {
        let rate = last.get(&path).map_or(0, |earlier| {
            usage_nano_cores(*earlier, (at, stats.cpu_usage_nanos))
        });
        last.insert(path.clone(), (at, stats.cpu_usage_nanos));
        out.insert(path, (stats, rate));
    }
    // Forget cgroups that are gone.
    last.retain(|p, _| paths.contains(p));
    out
}

/// Build the summary for the node's running containers. Blocking (reads cgroup files).
pub fn summary(node_name: &str, cgroup_root: &str, containers: &[ContainerInfo]) -> Value {
    let now = Utc::now();
    let mut pods: BTreeMap<String, Vec<&ContainerInfo>> = BTreeMap::new();
    for c in containers {
        if matches!(c.state, ContainerState::Running { .. }) {
            pods.entry(c.meta.pod_uid.clone()).or_default().push(c);
        }
    }
    let mut paths = vec!["/".to_string()];
    let mut pod_paths = HashMap::new();
    for uid in pods.keys() {
        if let Some(path) = pod_cgroup(cgroup_root, uid) {
            for c in &pods[uid] {
                paths.push(format!("{path}/{}", c.id));
            }
            paths.push(path.clone());
            pod_paths.insert(uid.clone(), path);
        }
    }
    let samples = sample(&paths);
    let node = samples
        .get("/")
        .map(|(stats, rate)| cpu_memory(stats, *rate, now));
    let mut pod_list = Vec::new();
    for (uid, members) in &pods {
        let Some(path) = pod_paths.get(uid) else {
            continue;
        };
        let first = members[0];
        let start = members
            .iter()
            .map(|c| c.meta.created_at)
            .min()
            .unwrap_or_default();
        let containers: Vec<Value> = members
            .iter()
            .map(|c| {
                let started = match c.state {
                    ContainerState::Running { started_at, .. } => started_at,
                    _ => c.meta.created_at,
                };
                let mut value = json!({
                    "name": c.meta.container_name,
                    "startTime": rfc3339(nanos_to_time(started)),
                });
                if let Some((stats, rate)) = samples.get(&format!("{path}/{}", c.id)) {
                    let (cpu, memory) = cpu_memory(stats, *rate, now);
                    value["cpu"] = cpu;
                    value["memory"] = memory;
                }
                value
            })
            .collect();
        let mut pod = json!({
            "podRef": {
                "name": first.meta.pod_name,
                "namespace": first.meta.pod_namespace,
                "uid": uid,
            },
            "startTime": rfc3339(nanos_to_time(start)),
            "containers": containers,
        });
        if let Some((stats, rate)) = samples.get(path) {
            let (cpu, memory) = cpu_memory(stats, *rate, now);
            pod["cpu"] = cpu;
            pod["memory"] = memory;
        }
        pod_list.push(pod);
    }
    let mut node_value = json!({"nodeName": node_name});
    if let Some((cpu, memory)) = node {
        node_value["cpu"] = cpu;
        node_value["memory"] = memory;
    }
    json!({"node": node_value, "pods": pod_list})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nano_cores_from_two_samples() {
        let t0 = Instant::now();
        let t1 = t0 + Duration::from_millis(500);
        // 250 ms of CPU in 500 ms: half a core.
        assert_eq!(
            usage_nano_cores((t0, 1_000), (t1, 1_000 + 250_000_000)),
            500_000_000
        );
        assert_eq!(usage_nano_cores((t0, 5), (t0, 10)), 0);
        assert_eq!(
            usage_nano_cores((t0, 10), (t1, 5)),
            0,
            "a reset counter is no negative use"
        );
    }

    #[test]
    fn cpu_and_memory_use_upstream_field_names() {
        let stats = CgroupStats {
            cpu_usage_nanos: 42,
            memory_working_set: 1024,
            memory_usage: 2048,
        };
        let now = DateTime::parse_from_rfc3339("2024-05-01T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let (cpu, memory) = cpu_memory(&stats, 7, now);
        assert_eq!(cpu["usageNanoCores"], 7);
        assert_eq!(cpu["usageCoreNanoSeconds"], 42);
        assert_eq!(cpu["time"], "2024-05-01T10:00:00Z");
        assert_eq!(memory["workingSetBytes"], 1024);
        assert_eq!(memory["usageBytes"], 2048);
    }
}
