//! Pod sandboxes: the network, IPC and UTS namespaces a pod's containers share, kept alive as
//! bind-mounted namespace files, with the pod network set up through CNI plugins.
//!
//! Layout: `<root>/<pod-uid>/{net,ipc,uts}` namespace files, `<root>/<pod-uid>/sandbox.json`
//! (written last: a directory without it is a half-made sandbox), `<root>/<pod-uid>/cni.json`
//! (the CNI configuration and result, for DEL), `<root>/.ipam` (host-local's allocations).
//! `<root>` is made a private bind mount of itself so that the namespace mounts under it do not
//! propagate anywhere.

mod cni;

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

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

impl Sandbox {
    /// Whether its namespace files are still namespaces (they are not after a reboot, or once
    /// something unmounted them): containers can only join a live sandbox.
    pub fn is_alive(&self) -> bool {
        [&self.netns, &self.ipc_ns, &self.uts_ns]
            .into_iter()
            .flatten()
            .all(|ns| is_namespace(ns))
    }
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

/// Our conflist in the CNI configuration directory.
pub const CONFLIST_FILE: &str = "10-rkube.conflist";
const SANDBOX_FILE: &str = "sandbox.json";
const CNI_CACHE_FILE: &str = "cni.json";
/// host-local's allocations, one directory per agent (under its sandboxes root), so that
/// agents sharing a machine never share an allocation table.
const IPAM_DIR: &str = ".ipam";
/// `statfs` type of a namespace file (a bind mount of `/proc/<pid>/ns/*`).
const NSFS_MAGIC: i64 = 0x6e73_6673;
/// The namespace files of a sandbox, in the order they are made.
const NAMESPACE_FILES: [&str; 3] = ["net", "ipc", "uts"];

/// Creates and removes pod sandboxes on this node.
///
/// Calls for one pod must not overlap (the kubelet runs one worker per pod); calls for
/// different pods may.
#[derive(Debug, Clone)]
pub struct SandboxManager {
    config: Arc<NetworkConfig>,
    /// Whether `<root>` has been made a private mount yet.
    root_ready: Arc<Mutex<bool>>,
}

impl SandboxManager {
    pub fn new(config: NetworkConfig) -> Result<SandboxManager> {
        Ok(SandboxManager {
            config: Arc::new(config),
            root_ready: Arc::new(Mutex::new(false)),
        })
    }

    pub fn config(&self) -> &NetworkConfig {
        &self.config
    }

    /// `<cni_conf_dir>/10-rkube.conflist`.
    pub fn conflist_path(&self) -> PathBuf {
        self.config.cni_conf_dir.join(CONFLIST_FILE)
    }

    /// Write the node's CNI conflist (bridge + host-local on `pod_cidr`, portmap; `lo` is set up
    /// in-process).
    /// Idempotent; call again when the node's podCIDR becomes known.
    pub fn configure(&self, pod_cidr: &str) -> Result<()> {
        let cidr = self.write_conflist(pod_cidr)?;
        // Pods reach other nodes and the outside through this host.
        let forwarding = if cidr.addr.is_ipv4() {
            "/proc/sys/net/ipv4/ip_forward"
        } else {
            "/proc/sys/net/ipv6/conf/all/forwarding"
        };
        if std::fs::read_to_string(forwarding)
            .map(|v| v.trim() != "1")
            .unwrap_or(true)
        {
            std::fs::write(forwarding, "1").map_err(io_error(forwarding))?;
        }
        Ok(())
    }

    /// Write the conflist for `pod_cidr` unless it is already there.
    fn write_conflist(&self, pod_cidr: &str) -> Result<cni::Cidr> {
        let path = self.conflist_path();
        let cidr = cni::Cidr::parse(pod_cidr).ok_or_else(|| SandboxError::Io {
            path: path.clone(),
            source: std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("invalid pod CIDR {pod_cidr:?}"),
            ),
        })?;
        let conflist = cni::node_conflist(
            &self.config.bridge,
            self.config.mtu,
            &cidr,
            &self.config.root.join(IPAM_DIR),
        );
        let mut text = serde_json::to_string_pretty(&conflist).expect("a JSON value serializes");
        text.push('\n');
        if std::fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
            create_dir(&self.config.cni_conf_dir)?;
            write_atomic(&path, text.as_bytes())?;
            tracing::info!(%cidr, path = %path.display(), "wrote the CNI configuration");
        }
        Ok(cidr)
    }

    /// Create the pod's namespaces and run CNI ADD. Idempotent: returns the existing sandbox
    /// if it is already set up.
    pub async fn create(&self, spec: &SandboxSpec) -> Result<Sandbox> {
        let uid = &spec.pod_uid;
        self.check_uid(uid)?;
        if let Some(existing) = self.get(uid)? {
            return Ok(existing);
        }
        if self.sandbox_dir(uid).symlink_metadata().is_ok() {
            // Half made, or its namespaces are gone (after a reboot): start again from nothing.
            self.remove(uid).await?;
        }
        match self.setup(spec).await {
            Ok(sandbox) => Ok(sandbox),
            Err(e) => {
                if let Err(cleanup) = self.remove(uid).await {
                    tracing::warn!(pod_uid = %uid, error = %cleanup, "cleaning up a sandbox that failed");
                }
                Err(e)
            }
        }
    }

    /// The sandbox of a pod, if it exists (after an agent restart too).
    ///
    /// A sandbox whose namespace files are no longer namespaces (unmounted, e.g. by a reboot)
    /// is not returned: [`SandboxManager::create`] replaces it, [`SandboxManager::list`]
    /// still shows it so that it can be removed.
    pub fn get(&self, pod_uid: &str) -> Result<Option<Sandbox>> {
        self.check_uid(pod_uid)?;
        let Some(sandbox) = read_json::<Sandbox>(&self.sandbox_dir(pod_uid).join(SANDBOX_FILE))?
        else {
            return Ok(None);
        };
        Ok(sandbox.is_alive().then_some(sandbox))
    }

    /// Every sandbox on disk (to clean up those whose pods are gone), half-made ones included.
    pub fn list(&self) -> Result<Vec<Sandbox>> {
        let root = &self.config.root;
        let entries = match std::fs::read_dir(root) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_error(root)(e)),
        };
        let mut sandboxes = Vec::new();
        for entry in entries {
            let entry = entry.map_err(io_error(root))?;
            let Ok(uid) = entry.file_name().into_string() else {
                continue;
            };
            if uid.starts_with('.') || !entry.path().is_dir() {
                continue;
            }
            let dir = entry.path();
            if let Some(sandbox) = read_json::<Sandbox>(&dir.join(SANDBOX_FILE))? {
                sandboxes.push(sandbox);
                continue;
            }
            let cache = read_json::<cni::CniCache>(&dir.join(CNI_CACHE_FILE))?;
            let existing = |name: &str| Some(dir.join(name)).filter(|p| p.exists());
            sandboxes.push(Sandbox {
                pod_namespace: cache
                    .as_ref()
                    .map(|c| c.pod_namespace.clone())
                    .unwrap_or_default(),
                pod_name: cache
                    .as_ref()
                    .map(|c| c.pod_name.clone())
                    .unwrap_or_default(),
                pod_uid: uid,
                netns: existing("net"),
                ipc_ns: existing("ipc"),
                uts_ns: existing("uts"),
                ips: Vec::new(),
            });
        }
        sandboxes.sort_by(|a, b| a.pod_uid.cmp(&b.pod_uid));
        Ok(sandboxes)
    }

    /// CNI DEL, unmount and remove the namespaces and files. Idempotent; never fails on
    /// something already gone.
    ///
    /// When DEL fails, nothing is removed, so that a retry can still release what the
    /// plugins hold.
    pub async fn remove(&self, pod_uid: &str) -> Result<()> {
        self.check_uid(pod_uid)?;
        let dir = self.sandbox_dir(pod_uid);
        if dir.symlink_metadata().is_err() {
            return Ok(());
        }
        let cache = read_json::<cni::CniCache>(&dir.join(CNI_CACHE_FILE))?;
        if let Some(cache) = cache.filter(|c| c.plugins_added > 0) {
            self.delete_network(&dir, &cache).await?;
        }
        for name in NAMESPACE_FILES {
            unmount_all(&dir.join(name))?;
        }
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_error(&dir)(e)),
        }
    }

    fn sandbox_dir(&self, pod_uid: &str) -> PathBuf {
        self.config.root.join(pod_uid)
    }

    /// A pod UID names a directory: it must be one path component, not one of ours.
    fn check_uid(&self, pod_uid: &str) -> Result<()> {
        if pod_uid.is_empty() || pod_uid.starts_with('.') || pod_uid.contains(['/', '\0']) {
            return Err(SandboxError::Namespace {
                pod: pod_uid.to_owned(),
                message: format!("invalid pod UID {pod_uid:?}"),
            });
        }
        Ok(())
    }

    async fn setup(&self, spec: &SandboxSpec) -> Result<Sandbox> {
        let pod = format!("{}/{}", spec.pod_namespace, spec.pod_name);
        // Without a configuration there is no pod network: fail before making anything.
        let conflist = if spec.host_network {
            None
        } else {
            Some(self.read_conflist(&pod)?)
        };
        self.ensure_private_root()?;
        let dir = self.sandbox_dir(&spec.pod_uid);
        create_dir(&dir)?;
        // hostNetwork pods share the host's UTS namespace too (their hostname is the node's).
        let netns = (!spec.host_network).then(|| dir.join("net"));
        let ipc_ns = (!spec.host_ipc).then(|| dir.join("ipc"));
        let uts_ns = (!spec.host_network).then(|| dir.join("uts"));
        make_namespaces(&pod, &netns, &ipc_ns, &uts_ns, &spec.hostname).await?;
        let ips = match (&netns, conflist) {
            (Some(netns), Some(conflist)) => {
                self.add_network(spec, &pod, &dir, netns, conflist).await?
            }
            _ => Vec::new(),
        };
        let sandbox = Sandbox {
            pod_uid: spec.pod_uid.clone(),
            pod_namespace: spec.pod_namespace.clone(),
            pod_name: spec.pod_name.clone(),
            netns,
            ipc_ns,
            uts_ns,
            ips,
        };
        write_json(&dir.join(SANDBOX_FILE), &sandbox)?;
        Ok(sandbox)
    }

    fn read_conflist(&self, pod: &str) -> Result<serde_json::Value> {
        let path = self.conflist_path();
        let text = match std::fs::read(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(SandboxError::Cni {
                    pod: pod.to_owned(),
                    plugin: cni::NETWORK_NAME.into(),
                    message: format!(
                        "network not ready: no CNI configuration {} yet (the node has no podCIDR)",
                        path.display()
                    ),
                });
            }
            Err(e) => return Err(io_error(&path)(e)),
        };
        serde_json::from_slice(&text).map_err(|e| SandboxError::Io {
            path,
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
        })
    }

    /// ADD through the conflist; returns the pod's IPs.
    async fn add_network(
        &self,
        spec: &SandboxSpec,
        pod: &str,
        dir: &Path,
        netns: &Path,
        conflist: serde_json::Value,
    ) -> Result<Vec<IpAddr>> {
        let bin_dir = &self.config.cni_bin_dir;
        let cni_error = |e: cni::PluginError| SandboxError::Cni {
            pod: pod.to_owned(),
            plugin: e.plugin,
            message: e.message,
        };
        let mut cache = cni::CniCache {
            container_id: spec.pod_uid.clone(),
            pod_namespace: spec.pod_namespace.clone(),
            pod_name: spec.pod_name.clone(),
            config: conflist,
            port_mappings: spec.port_mappings.clone(),
            plugins_added: 0,
            result: None,
        };
        let inv = invocation(&cache, &netns.to_string_lossy());
        let cache_path = dir.join(CNI_CACHE_FILE);
        let config = cache.config.clone();
        // Record how far ADD got before each plugin runs: a crash or failure part way must
        // still DEL whatever ran. (`lo` is already up: see `make_namespaces`.)
        let mut record_error = None;
        let record = |n| {
            cache.plugins_added = n;
            match write_json(&cache_path, &cache) {
                Ok(()) => true,
                Err(e) => {
                    record_error = Some(e);
                    false
                }
            }
        };
        let added = cni::add_list(bin_dir, &config, &inv, record).await;
        if let Some(e) = record_error {
            return Err(e);
        }
        let result = added.map_err(cni_error)?;
        let ips = cni::result_ips(&result);
        cache.result = Some(result);
        write_json(&cache_path, &cache)?;
        if ips.is_empty() {
            return Err(SandboxError::Cni {
                pod: pod.to_owned(),
                plugin: cni::NETWORK_NAME.into(),
                message: "ADD gave the pod no IP address".into(),
            });
        }
        Ok(ips)
    }

    /// DEL through the plugins ADD ran. With the namespace gone, plugins are given none (they
    /// then only release what they hold, such as the IP), and the masquerade rules the bridge
    /// plugin can no longer find are removed here.
    async fn delete_network(&self, dir: &Path, cache: &cni::CniCache) -> Result<()> {
        let pod = format!("{}/{}", cache.pod_namespace, cache.pod_name);
        let netns = dir.join("net");
        let netns = if is_namespace(&netns) {
            netns.to_string_lossy().into_owned()
        } else {
            String::new()
        };
        let inv = invocation(cache, &netns);
        let cni_error = |e: cni::PluginError| SandboxError::Cni {
            pod: pod.clone(),
            plugin: e.plugin,
            message: e.message,
        };
        cni::del_list(
            &self.config.cni_bin_dir,
            &cache.config,
            cache.plugins_added,
            cache.result.as_ref(),
            &inv,
        )
        .await
        .map_err(cni_error)?;
        let masquerades = cni::plugins(&cache.config)
            .iter()
            .take(cache.plugins_added)
            .any(|p| p.get("ipMasq").and_then(serde_json::Value::as_bool) == Some(true));
        if masquerades {
            let network = cache
                .config
                .get("name")
                .and_then(|n| n.as_str())
                .unwrap_or_default();
            let chain = cni::masquerade_chain(network, &cache.container_id);
            let ipv6 = cache
                .result
                .as_ref()
                .is_some_and(|r| cni::result_ips(r).iter().any(IpAddr::is_ipv6));
            let tools: &[&str] = if ipv6 {
                &["iptables", "ip6tables"]
            } else {
                &["iptables"]
            };
            for tool in tools {
                cni::remove_masquerade(tool, &chain)
                    .await
                    .map_err(cni_error)?;
            }
        }
        Ok(())
    }

    /// Make `<root>` a private mount (a bind mount of itself if it is not a mount point yet), so
    /// that the namespace files mounted under it neither propagate to nor come from elsewhere.
    fn ensure_private_root(&self) -> Result<()> {
        let mut ready = self
            .root_ready
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if *ready {
            return Ok(());
        }
        let root = &self.config.root;
        create_dir(root)?;
        let root = std::fs::canonicalize(root).map_err(io_error(root))?;
        if !is_mount_point(&root)? {
            // Recursive: namespace files already mounted under it stay visible.
            rustix::mount::mount_bind_recursive(&root, &root)
                .map_err(|e| io_error(&root)(e.into()))?;
        }
        rustix::mount::mount_change(&root, rustix::mount::MountPropagationFlags::PRIVATE)
            .map_err(|e| io_error(&root)(e.into()))?;
        *ready = true;
        Ok(())
    }
}

/// The CNI arguments of a pod (the same for ADD and DEL).
fn invocation(cache: &cni::CniCache, netns: &str) -> cni::Invocation {
    cni::Invocation {
        container_id: cache.container_id.clone(),
        netns: netns.to_owned(),
        ifname: cni::POD_IFNAME.into(),
        args: vec![
            ("K8S_POD_NAMESPACE".into(), cache.pod_namespace.clone()),
            ("K8S_POD_NAME".into(), cache.pod_name.clone()),
            (
                "K8S_POD_INFRA_CONTAINER_ID".into(),
                cache.container_id.clone(),
            ),
            ("K8S_POD_UID".into(), cache.container_id.clone()),
        ],
        port_mappings: cache.port_mappings.clone(),
    }
}

/// Create the wanted namespaces, each kept alive by a bind mount on its file, set the hostname
/// in the new UTS namespace and bring `lo` up in the new network namespace.
///
/// Done in-process by a thread of our own that unshares its namespaces, bind-mounts
/// `/proc/thread-self/ns/*` and ends: no `unshare`, `hostname` or loopback plugin to run.
async fn make_namespaces(
    pod: &str,
    netns: &Option<PathBuf>,
    ipc_ns: &Option<PathBuf>,
    uts_ns: &Option<PathBuf>,
    hostname: &str,
) -> Result<()> {
    let wanted: Vec<(&'static str, PathBuf)> = [("net", netns), ("ipc", ipc_ns), ("uts", uts_ns)]
        .into_iter()
        .filter_map(|(name, file)| Some((name, file.clone()?)))
        .collect();
    if wanted.is_empty() {
        return Ok(());
    }
    for (_, file) in &wanted {
        // The mount point must exist.
        std::fs::File::create(file).map_err(io_error(file))?;
    }
    let hostname = (uts_ns.is_some() && !hostname.is_empty()).then(|| hostname.to_owned());
    let (tx, rx) = tokio::sync::oneshot::channel();
    let spawned = std::thread::Builder::new()
        .name("sandbox-ns".into())
        .stack_size(64 * 1024)
        .spawn(move || {
            let _ = tx.send(namespaces_in_this_thread(&wanted, hostname.as_deref()));
        });
    let result = match spawned {
        Ok(_) => rx
            .await
            .unwrap_or_else(|_| Err("the namespace thread ended without a word".into())),
        Err(e) => Err(format!("starting a thread: {e}")),
    };
    result.map_err(|message| SandboxError::Namespace {
        pod: pod.to_owned(),
        message: format!("creating namespaces: {message}"),
    })
}

/// Runs on a thread that ends right after: unshare its namespaces, set them up, and pin each
/// on its file.
#[allow(unsafe_code)]
fn namespaces_in_this_thread(
    wanted: &[(&'static str, PathBuf)],
    hostname: Option<&str>,
) -> std::result::Result<(), String> {
    use rustix::thread::UnshareFlags;
    let mut flags = UnshareFlags::empty();
    for (name, _) in wanted {
        flags |= match *name {
            "net" => UnshareFlags::NEWNET,
            "ipc" => UnshareFlags::NEWIPC,
            _ => UnshareFlags::NEWUTS,
        };
    }
    // SAFETY: only this thread's net, IPC and UTS namespaces change (no shared file table,
    // filesystem or memory state), and the thread runs nothing else before it ends.
    unsafe { rustix::thread::unshare_unsafe(flags) }.map_err(|e| format!("unshare: {e}"))?;
    if let Some(hostname) = hostname {
        rustix::system::sethostname(hostname.as_bytes())
            .map_err(|e| format!("setting the hostname {hostname:?}: {e}"))?;
    }
    if wanted.iter().any(|(name, _)| *name == "net") {
        loopback_up().map_err(|e| format!("bringing lo up: {e}"))?;
    }
    for (name, file) in wanted {
        let source = format!("/proc/thread-self/ns/{name}");
        rustix::mount::mount_bind(source.as_str(), file)
            .map_err(|e| format!("bind-mounting {source} on {}: {e}", file.display()))?;
    }
    Ok(())
}

/// Set `lo` up in this thread's network namespace with one rtnetlink RTM_NEWLINK request
/// (what the CNI loopback plugin does). In a new namespace `lo` is always interface 1.
fn loopback_up() -> std::io::Result<()> {
    use rustix::net::{AddressFamily, SocketFlags, SocketType, netlink};
    const RTM_NEWLINK: u16 = 16;
    const NLM_F_REQUEST: u16 = 1;
    const NLM_F_ACK: u16 = 4;
    const NLMSG_ERROR: u16 = 2;
    const IFF_UP: u32 = 1;
    const LOOPBACK_INDEX: i32 = 1;
    let fd = rustix::net::socket_with(
        AddressFamily::NETLINK,
        SocketType::RAW,
        SocketFlags::CLOEXEC,
        None, // protocol 0: NETLINK_ROUTE
    )?;
    // nlmsghdr (16 bytes) then ifinfomsg (16 bytes), native endian.
    let mut msg = Vec::with_capacity(32);
    msg.extend_from_slice(&32u32.to_ne_bytes());
    msg.extend_from_slice(&RTM_NEWLINK.to_ne_bytes());
    msg.extend_from_slice(&(NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
    msg.extend_from_slice(&1u32.to_ne_bytes()); // sequence number
    msg.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel fills it in
    msg.push(0); // ifi_family: AF_UNSPEC
    msg.push(0); // padding
    msg.extend_from_slice(&0u16.to_ne_bytes()); // ifi_type
    msg.extend_from_slice(&LOOPBACK_INDEX.to_ne_bytes());
    msg.extend_from_slice(&IFF_UP.to_ne_bytes()); // ifi_flags
    msg.extend_from_slice(&IFF_UP.to_ne_bytes()); // ifi_change
    let kernel = netlink::SocketAddrNetlink::new(0, 0);
    rustix::net::sendto(&fd, &msg, rustix::net::SendFlags::empty(), &kernel)?;
    let mut buf = [0u8; 256];
    let (n, _) = rustix::net::recv(&fd, &mut buf[..], rustix::net::RecvFlags::empty())?;
    let reply = &buf[..n.min(buf.len())];
    // The ack is an NLMSG_ERROR whose error field (after the 16-byte header) is 0 or -errno.
    if reply.len() >= 20 && u16::from_ne_bytes([reply[4], reply[5]]) == NLMSG_ERROR {
        let errno = i32::from_ne_bytes([reply[16], reply[17], reply[18], reply[19]]);
        if errno != 0 {
            return Err(std::io::Error::from_raw_os_error(-errno));
        }
        return Ok(());
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        "no rtnetlink acknowledgement",
    ))
}

/// Whether `path` is a namespace file (a live bind mount of one).
#[allow(clippy::useless_conversion)] // the statfs type's width depends on the target
fn is_namespace(path: &Path) -> bool {
    rustix::fs::statfs(path).is_ok_and(|s| i64::from(s.f_type) == NSFS_MAGIC)
}

/// Unmount everything mounted on `path`; fine if nothing is, or if it does not exist.
fn unmount_all(path: &Path) -> Result<()> {
    // A file can carry stacked mounts; a few rounds are plenty.
    for _ in 0..8 {
        match rustix::mount::unmount(path, rustix::mount::UnmountFlags::DETACH) {
            Ok(()) => continue,
            Err(rustix::io::Errno::INVAL | rustix::io::Errno::NOENT) => return Ok(()),
            Err(e) => return Err(io_error(path)(e.into())),
        }
    }
    Ok(())
}

/// Whether `path` (canonical) is a mount point in this mount namespace.
fn is_mount_point(path: &Path) -> Result<bool> {
    let mountinfo = "/proc/self/mountinfo";
    let text = std::fs::read_to_string(mountinfo).map_err(io_error(mountinfo))?;
    Ok(text
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .any(|mount_point| unescape_mount_path(mount_point) == path))
}

/// mountinfo writes space, tab, newline and backslash as `\` and three octal digits.
fn unescape_mount_path(field: &str) -> PathBuf {
    use std::os::unix::ffi::OsStringExt as _;
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).and_then(|d| {
            let d = std::str::from_utf8(d).ok()?;
            u8::from_str_radix(d, 8).ok()
        });
        match (bytes[i], octal) {
            (b'\\', Some(b)) => {
                out.push(b);
                i += 4;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    PathBuf::from(std::ffi::OsString::from_vec(out))
}

fn io_error(path: impl AsRef<Path>) -> impl FnOnce(std::io::Error) -> SandboxError {
    let path = path.as_ref().to_path_buf();
    move |source| SandboxError::Io { path, source }
}

fn create_dir(path: &Path) -> Result<()> {
    std::fs::create_dir_all(path).map_err(io_error(path))
}

/// Write through a temporary file and a rename, so readers never see half a file.
fn write_atomic(path: &Path, contents: &[u8]) -> Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, contents).map_err(io_error(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io_error(path))
}

fn write_json(path: &Path, value: &impl Serialize) -> Result<()> {
    let text = serde_json::to_vec_pretty(value).expect("sandbox state serializes");
    write_atomic(path, &text)
}

/// `None` if the file does not exist, or is unreadable as JSON (then it is as good as absent:
/// the sandbox is rebuilt).
fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Option<T>> {
    let text = match std::fs::read(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_error(path)(e)),
    };
    match serde_json::from_slice(&text) {
        Ok(value) => Ok(Some(value)),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "ignoring an unreadable sandbox file");
            Ok(None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manager(dir: &Path) -> SandboxManager {
        SandboxManager::new(NetworkConfig {
            root: dir.join("sandboxes"),
            cni_bin_dir: dir.join("bin"),
            cni_conf_dir: dir.join("cni"),
            bridge: "cni0".into(),
            mtu: 1500,
        })
        .unwrap()
    }

    /// Needs root (CAP_SYS_ADMIN for unshare): skipped otherwise.
    #[test]
    #[allow(unsafe_code)]
    fn loopback_comes_up_in_a_new_network_namespace() {
        if !rustix::process::geteuid().is_root() {
            eprintln!("skipped: needs root");
            return;
        }
        std::thread::spawn(|| {
            // SAFETY: this test thread only changes its own network namespace and ends.
            unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::NEWNET) }
                .unwrap();
            let connect = || {
                let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
                std::net::TcpStream::connect(listener.local_addr()?).map(|_| ())
            };
            assert!(connect().is_err(), "lo starts down in a new namespace");
            loopback_up().unwrap();
            connect().unwrap();
            // Again: already up is fine.
            loopback_up().unwrap();
        })
        .join()
        .unwrap();
    }

    #[test]
    fn mountinfo_paths_are_unescaped() {
        assert_eq!(
            unescape_mount_path(r"/a\040b\134c"),
            PathBuf::from(r"/a b\c")
        );
        assert_eq!(unescape_mount_path(r"/plain\"), PathBuf::from(r"/plain\"));
    }

    #[test]
    fn pod_uids_must_be_one_path_component() {
        let dir = tempfile::tempdir().unwrap();
        let m = manager(dir.path());
        for bad in ["", "..", ".ipam", "a/b"] {
            assert!(m.get(bad).is_err(), "{bad:?}");
        }
        assert_eq!(m.get("0a1b-2c").unwrap(), None);
    }

    #[test]
    fn list_shows_complete_and_half_made_sandboxes() {
        let dir = tempfile::tempdir().unwrap();
        let m = manager(dir.path());
        assert!(m.list().unwrap().is_empty());
        let root = dir.path().join("sandboxes");
        let done = Sandbox {
            pod_uid: "u1".into(),
            pod_namespace: "default".into(),
            pod_name: "web".into(),
            netns: None,
            ipc_ns: None,
            uts_ns: None,
            ips: vec!["10.42.0.2".parse().unwrap()],
        };
        std::fs::create_dir_all(root.join("u1")).unwrap();
        write_json(&root.join("u1").join(SANDBOX_FILE), &done).unwrap();
        std::fs::create_dir_all(root.join("u2")).unwrap();
        std::fs::write(root.join("u2").join("net"), "").unwrap();
        std::fs::create_dir_all(root.join(IPAM_DIR)).unwrap();
        let list = m.list().unwrap();
        assert_eq!(list.len(), 2);
        assert_eq!(list[0], done);
        assert_eq!(list[1].pod_uid, "u2");
        assert_eq!(list[1].netns, Some(root.join("u2").join("net")));
        assert_eq!(list[1].ipc_ns, None);
        // A complete sandbox without namespaces (hostNetwork and hostIPC) is usable as is.
        assert_eq!(m.get("u1").unwrap(), Some(done));
        // A file that is not a namespace makes the sandbox unusable.
        let broken = Sandbox {
            pod_uid: "u2".into(),
            netns: Some(root.join("u2").join("net")),
            ..list[0].clone()
        };
        write_json(&root.join("u2").join(SANDBOX_FILE), &broken).unwrap();
        assert_eq!(m.get("u2").unwrap(), None);
    }

    #[test]
    fn the_conflist_is_written_once_and_bad_cidrs_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let m = manager(dir.path());
        assert!(matches!(
            m.configure("10.42.0.0/33"),
            Err(SandboxError::Io { .. })
        ));
        m.write_conflist("10.42.7.0/24").unwrap();
        let text = std::fs::read_to_string(m.conflist_path()).unwrap();
        let list: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            list["plugins"][0]["ipam"]["ranges"][0][0]["subnet"],
            "10.42.7.0/24"
        );
        assert_eq!(
            list["plugins"][0]["ipam"]["dataDir"],
            dir.path()
                .join("sandboxes")
                .join(IPAM_DIR)
                .to_str()
                .unwrap()
        );
        let modified = std::fs::metadata(m.conflist_path())
            .unwrap()
            .modified()
            .unwrap();
        m.write_conflist("10.42.7.0/24").unwrap();
        assert_eq!(
            std::fs::metadata(m.conflist_path())
                .unwrap()
                .modified()
                .unwrap(),
            modified
        );
    }
}
