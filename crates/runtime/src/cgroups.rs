//! Pod cgroups (`<cgroup-root>/<qos>/pod<uid>`) on cgroup v1 and v2, and the CPU and memory
//! figures the kubelet's stats summary reports.

use std::path::PathBuf;

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

/// Which cgroup hierarchy the host mounts at /sys/fs/cgroup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupMode {
    /// v1 controllers (cpu, memory, pids, ...) each in its own hierarchy (also "hybrid").
    V1,
    /// The unified hierarchy only.
    V2,
}

pub fn detect_mode() -> CgroupMode {
    todo!("runtime helper")
}

/// `<cgroup_root>/<qos>/pod<uid>` as runc's cgroupsPath takes it: `/kubepods/pod<uid>` for
/// Guaranteed, `/kubepods/burstable/pod<uid>`, `/kubepods/besteffort/pod<uid>`.
pub fn pod_cgroup_path(cgroup_root: &str, qos_class: &str, pod_uid: &str) -> String {
    let _ = (cgroup_root, qos_class, pod_uid);
    todo!("runtime helper")
}

/// Create the pod's cgroup in every controller we use, with the pod's total memory limit if
/// all its containers have one (None: unlimited). Idempotent.
pub fn ensure_pod_cgroup(path: &str, memory_limit: Option<i64>) -> Result<()> {
    let _ = (path, memory_limit);
    todo!("runtime helper")
}

/// Remove the pod's cgroup (and any container cgroups left under it) once no process is in it.
pub fn remove_pod_cgroup(path: &str) -> Result<()> {
    let _ = path;
    todo!("runtime helper")
}

/// CPU and memory use of a cgroup path (a pod's, a container's, or the root's for the node).
pub fn stats(path: &str) -> Result<CgroupStats> {
    let _ = path;
    todo!("runtime helper")
}
