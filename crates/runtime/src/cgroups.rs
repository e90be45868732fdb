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
