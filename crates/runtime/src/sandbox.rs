//! Pod sandboxes: the network, IPC and UTS namespaces a pod's containers share, kept alive as
//! bind-mounted namespace files, with the pod network set up through CNI plugins.
//!
//! Layout: `<root>/<pod-uid>/{net,ipc,uts}` namespace files, `<root>/<pod-uid>/sandbox.json`.

use std::net::IpAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Where CNI plugins and our generated configuration live.
#[derive(Debug, Clone)]
pub struct NetworkConfig {
    /// `<data-dir>/agent/sandboxes`
    pub root: PathBuf,
    /// Debian's containernetworking-plugins: `/usr/lib/cni`.
    pub cni_bin_dir: PathBuf,
    /// `<data-dir>/agent/cni`: the conflist we write for this node.
    pub cni_conf_dir: PathBuf,
    /// The bridge pods attach to (`cni0`).
    pub bridge: String,
    pub mtu: u32,
}

/// A hostPort to map to the pod (CNI portmap plugin).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortMapping {
    pub host_port: u16,
    pub container_port: u16,
    /// `tcp`, `udp` or `sctp`.
    pub protocol: String,
    pub host_ip: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SandboxSpec {
    pub pod_uid: String,
    pub pod_namespace: String,
    pub pod_name: String,
    /// The pod's hostname (set in its UTS namespace).
    pub hostname: String,
    pub host_network: bool,
    pub host_ipc: bool,
    pub port_mappings: Vec<PortMapping>,
}

/// A pod's namespaces and address: what the pod's containers join.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sandbox {
    pub pod_uid: String,
    pub pod_namespace: String,
    pub pod_name: String,
    /// `None` with hostNetwork.
    pub netns: Option<PathBuf>,
    pub ipc_ns: Option<PathBuf>,
    pub uts_ns: Option<PathBuf>,
    /// The pod IPs CNI gave (empty with hostNetwork: the kubelet reports the host IP).
    pub ips: Vec<IpAddr>,
}

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("pod {pod}: CNI plugin {plugin}: {message}")]
    Cni {
        pod: String,
        plugin: String,
        message: String,
    },
    #[error("pod {pod}: {message}")]
    Namespace { pod: String, message: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

pub type Result<T, E = SandboxError> = std::result::Result<T, E>;

/// Creates and removes pod sandboxes on this node.
#[derive(Debug, Clone)]
pub struct SandboxManager {
    config: std::sync::Arc<NetworkConfig>,
}

impl SandboxManager {
    pub fn new(config: NetworkConfig) -> Result<SandboxManager> {
        Ok(SandboxManager {
            config: std::sync::Arc::new(config),
        })
    }

    pub fn config(&self) -> &NetworkConfig {
        &self.config
    }

    /// Write the node's CNI conflist (bridge + host-local on `pod_cidr`, portmap, loopback).
    /// Idempotent; call again when the node's podCIDR becomes known.
    pub fn configure(&self, pod_cidr: &str) -> Result<()> {
        let _ = pod_cidr;
        todo!("network helper")
    }

    /// Create the pod's namespaces and run CNI ADD. Idempotent: returns the existing sandbox
    /// if it is already set up.
    pub async fn create(&self, spec: &SandboxSpec) -> Result<Sandbox> {
        let _ = spec;
        todo!("network helper")
    }

    /// The sandbox of a pod, if it exists (after an agent restart too).
    pub fn get(&self, pod_uid: &str) -> Result<Option<Sandbox>> {
        let _ = pod_uid;
        todo!("network helper")
    }

    /// Every sandbox on disk (to clean up those whose pods are gone).
    pub fn list(&self) -> Result<Vec<Sandbox>> {
        todo!("network helper")
    }

    /// CNI DEL, unmount and remove the namespaces and files. Idempotent; never fails on
    /// something already gone.
    pub async fn remove(&self, pod_uid: &str) -> Result<()> {
        let _ = pod_uid;
        todo!("network helper")
    }
}
