//! Pod cgroups (`<cgroup-root>/<qos>/pod<uid>`) on cgroup v1 and v2, and the CPU and memory
//! figures the kubelet's stats summary reports.
//!
//! Container cgroups (`<pod cgroup>/<container id>`) are runc's: it creates them in every
//! hierarchy it knows and removes them on `runc delete`. Here we only make the pod level (with
//! its limits) and remove whatever is left below it.

use std::path::{Path, PathBuf};

const CGROUP_MOUNT: &str = "/sys/fs/cgroup";

/// v1 controllers we create the pod cgroup in (runc adds the container level in all).
const V1_CONTROLLERS: &[&str] = &["cpu", "cpuacct", "memory", "pids"];

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// CPU and memory use of a cgroup.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CgroupStats {
    /// Total CPU time used, nanoseconds.
    pub cpu_usage_nanos: u64,
    /// Working set: usage minus inactive file pages, bytes.
    pub memory_working_set: u64,
    pub memory_usage: u64,
}

pub type Result<T, E = CgroupError> = std::result::Result<T, E>;

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> CgroupError + '_ {
    move |source| CgroupError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Which cgroup hierarchy the host mounts at /sys/fs/cgroup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupMode {
    /// v1 controllers (cpu, memory, pids, ...) each in its own hierarchy (also "hybrid").
    V1,
    /// The unified hierarchy only.
    V2,
}

pub fn detect_mode() -> CgroupMode {
    // Only the unified hierarchy has cgroup.controllers at its root.
    if Path::new(CGROUP_MOUNT).join("cgroup.controllers").exists() {
        CgroupMode::V2
    } else {
        CgroupMode::V1
    }
}

/// `<cgroup_root>/<qos>/pod<uid>` as runc's cgroupsPath takes it: `/kubepods/pod<uid>` for
/// Guaranteed, `/kubepods/burstable/pod<uid>`, `/kubepods/besteffort/pod<uid>`.
pub fn pod_cgroup_path(cgroup_root: &str, qos_class: &str, pod_uid: &str) -> String {
    let root = cgroup_root.trim_end_matches('/');
    let root = if root.starts_with('/') {
        root.to_string()
    } else {
        format!("/{root}")
    };
    let root = root.trim_end_matches('/');
    match qos_class {
        "Guaranteed" => format!("{root}/pod{pod_uid}"),
        "Burstable" => format!("{root}/burstable/pod{pod_uid}"),
        _ => format!("{root}/besteffort/pod{pod_uid}"),
    }
}

fn relative(path: &str) -> &str {
    path.trim_start_matches('/')
}

/// Create the pod's cgroup in every controller we use, with the pod's total memory limit if
/// all its containers have one (None: unlimited). Idempotent.
pub fn ensure_pod_cgroup(path: &str, memory_limit: Option<i64>) -> Result<()> {
    match detect_mode() {
        CgroupMode::V1 => {
            for c in V1_CONTROLLERS {
                let dir = Path::new(CGROUP_MOUNT).join(c).join(relative(path));
                std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
            }
            let memory = Path::new(CGROUP_MOUNT).join("memory").join(relative(path));
            let limit = memory_limit.map_or("-1".to_string(), |l| l.to_string());
            write(&memory.join("memory.limit_in_bytes"), &limit)?;
        }
        CgroupMode::V2 => {
            let root = Path::new(CGROUP_MOUNT);
            // Each level enables the controllers for the one below it.
            let mut dir = root.to_path_buf();
            for part in relative(path).split('/').filter(|p| !p.is_empty()) {
                let _ = write(&dir.join("cgroup.subtree_control"), "+cpu +memory +pids");
                dir.push(part);
                if !dir.exists() {
                    std::fs::create_dir(&dir).map_err(io_err(&dir))?;
                }
            }
            let _ = write(&dir.join("cgroup.subtree_control"), "+cpu +memory +pids");
            let limit = memory_limit.map_or("max".to_string(), |l| l.to_string());
            write(&dir.join("memory.max"), &limit)?;
        }
    }
    Ok(())
}

fn write(path: &Path, value: &str) -> Result<()> {
    std::fs::write(path, value).map_err(io_err(path))
}

/// Every mounted hierarchy's root (v1: one per controller set, plus `unified` and named ones
/// such as `systemd`; v2: the one mount), each once.
fn hierarchies() -> Vec<PathBuf> {
    if detect_mode() == CgroupMode::V2 {
        return vec![PathBuf::from(CGROUP_MOUNT)];
    }
    let mut out: Vec<PathBuf> = Vec::new();
    let Ok(entries) = std::fs::read_dir(CGROUP_MOUNT) else {
        return out;
    };
    for entry in entries.flatten() {
        // cpu and cpuacct are symlinks to cpu,cpuacct: take the real directories only.
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            out.push(entry.path());
        }
    }
    out.sort();
    out
}

/// Remove the pod's cgroup (and any container cgroups left under it) once no process is in it.
pub fn remove_pod_cgroup(path: &str) -> Result<()> {
    let rel = relative(path);
    if rel.is_empty() {
        return Ok(());
    }
    for h in hierarchies() {
        remove_tree(&h.join(rel))?;
    }
    Ok(())
}

/// rmdir depth-first (cgroup directories hold only pseudo-files, which rmdir takes along).
fn remove_tree(dir: &Path) -> Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_err(dir)(e)),
    };
    for entry in entries.flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            remove_tree(&entry.path())?;
        }
    }
    match std::fs::remove_dir(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err(dir)(e)),
    }
}

/// CPU and memory use of a cgroup path (a pod's, a container's, or the root's for the node).
pub fn stats(path: &str) -> Result<CgroupStats> {
    let rel = relative(path);
    match detect_mode() {
        CgroupMode::V1 => {
            let cpu = Path::new(CGROUP_MOUNT).join("cpuacct").join(rel);
            let mem = Path::new(CGROUP_MOUNT).join("memory").join(rel);
            let cpu_usage_nanos = read_u64(&cpu.join("cpuacct.usage"))?;
            let memory_usage = read_u64(&mem.join("memory.usage_in_bytes"))?;
            let stat = read_string(&mem.join("memory.stat"))?;
            let inactive = stat_field(&stat, "total_inactive_file").unwrap_or(0);
            Ok(CgroupStats {
                cpu_usage_nanos,
                memory_working_set: memory_usage.saturating_sub(inactive),
                memory_usage,
            })
        }
        CgroupMode::V2 => {
            let dir = Path::new(CGROUP_MOUNT).join(rel);
            let cpu_stat = read_string(&dir.join("cpu.stat"))?;
            let cpu_usage_nanos = stat_field(&cpu_stat, "usage_usec").unwrap_or(0) * 1000;
            let current = dir.join("memory.current");
            // The root has no memory.current: the node's figure comes from /proc/meminfo.
            let (memory_usage, inactive) = if current.exists() || !rel.is_empty() {
                let usage = read_u64(&current)?;
                let stat = read_string(&dir.join("memory.stat"))?;
                (usage, stat_field(&stat, "inactive_file").unwrap_or(0))
            } else {
                let meminfo = read_string(Path::new("/proc/meminfo"))?;
                let kb = |k: &str| {
                    meminfo
                        .lines()
                        .find_map(|l| l.strip_prefix(k))
                        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                        .unwrap_or(0)
                        * 1024
                };
                (
                    kb("MemTotal:").saturating_sub(kb("MemFree:")),
                    kb("Inactive(file):"),
                )
            };
            Ok(CgroupStats {
                cpu_usage_nanos,
                memory_working_set: memory_usage.saturating_sub(inactive),
                memory_usage,
            })
        }
    }
}

fn read_string(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(io_err(path))
}

fn read_u64(path: &Path) -> Result<u64> {
    let text = read_string(path)?;
    text.trim().parse().map_err(|e| CgroupError::Io {
        path: path.to_path_buf(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{e}")),
    })
}

/// A `key value` line of memory.stat or cpu.stat.
fn stat_field(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        if k == key {
            v.trim().parse().ok()
        } else {
            None
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_cgroups_follow_the_qos_class() {
        assert_eq!(
            pod_cgroup_path("/kubepods", "Guaranteed", "u1"),
            "/kubepods/podu1"
        );
        assert_eq!(
            pod_cgroup_path("/kubepods/", "Burstable", "u1"),
            "/kubepods/burstable/podu1"
        );
        assert_eq!(
            pod_cgroup_path("rkube-n1/kubepods", "BestEffort", "u1"),
            "/rkube-n1/kubepods/besteffort/podu1"
        );
    }

    #[test]
    fn stat_fields_are_read_by_key() {
        let text = "cache 10\ntotal_inactive_file 4096\ninactive_file 7\n";
        assert_eq!(stat_field(text, "total_inactive_file"), Some(4096));
        assert_eq!(stat_field(text, "inactive_file"), Some(7));
        assert_eq!(stat_field(text, "missing"), None);
    }

    fn is_root() -> bool {
        rustix::process::geteuid().is_root()
    }

    #[test]
    fn a_pod_cgroup_is_made_limited_measured_and_removed() {
        if !is_root() {
            eprintln!("skipped: needs root");
            return;
        }
        let root = format!("/rkube-cgtest-{}", std::process::id());
        let pod = pod_cgroup_path(&root, "Burstable", "abc");
        ensure_pod_cgroup(&pod, Some(64 << 20)).unwrap();
        ensure_pod_cgroup(&pod, Some(64 << 20)).unwrap();
        let limit = match detect_mode() {
            CgroupMode::V1 => Path::new("/sys/fs/cgroup/memory")
                .join(relative(&pod))
                .join("memory.limit_in_bytes"),
            CgroupMode::V2 => Path::new(CGROUP_MOUNT)
                .join(relative(&pod))
                .join("memory.max"),
        };
        assert_eq!(
            std::fs::read_to_string(&limit).unwrap().trim(),
            (64 << 20).to_string()
        );
        // A container-level child, as runc would leave it.
        let child = format!("{pod}/container1");
        ensure_pod_cgroup(&child, None).unwrap();
        let s = stats(&pod).unwrap();
        assert_eq!(s.cpu_usage_nanos, 0);
        let node = stats("/").unwrap();
        assert!(node.cpu_usage_nanos > 0 && node.memory_usage > 0);
        assert!(node.memory_working_set <= node.memory_usage);
        remove_pod_cgroup(&root).unwrap();
        assert!(!limit.exists());
        for h in hierarchies() {
            assert!(!h.join(relative(&root)).exists(), "{}", h.display());
        }
        remove_pod_cgroup(&root).unwrap();
    }
}
