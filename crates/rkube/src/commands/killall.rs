//! `rkube killall`: stop every container of a node agent and remove what it set up on the host
//! (sandboxes and their IPs, mounts, cgroups, the pod bridge), like k3s's `k3s-killall.sh`.
//! The data dir's images and the cluster state are kept. Run it after stopping the agent.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use clap::Args;

#[derive(Args, Debug)]
pub struct KillallArgs {
    /// The agent's (or server's) data dir.
    #[arg(long, default_value = "/var/lib/rkube", env = "RKUBE_DATA_DIR")]
    pub data_dir: PathBuf,
    /// The agent's --cgroup-root.
    #[arg(long, default_value = "/kubepods")]
    pub cgroup_root: String,
    /// The agent's --cni-bridge.
    #[arg(long, default_value = "cni0")]
    pub cni_bridge: String,
    /// The runc binary.
    #[arg(long, default_value = "runc")]
    pub runc: PathBuf,
    #[arg(long, default_value = "/usr/lib/cni")]
    pub cni_bin_dir: PathBuf,
}

pub fn run(args: KillallArgs) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?
        .block_on(killall(args))
}

async fn killall(args: KillallArgs) -> anyhow::Result<()> {
    let root = args.data_dir.join("agent");
    let mut failures = Vec::new();
    if root.join("containers").exists() {
        let runtime =
            runtime::container::ContainerRuntime::new(runtime::container::RuntimeConfig {
                root: root.join("containers"),
                runc: args.runc.clone(),
                runc_root: root.join("runc"),
                shim_exe: std::env::current_exe()?,
                cgroup_root: args.cgroup_root.clone(),
            })?;
        for container in runtime.list_containers().await? {
            let id = &container.id;
            if let Err(e) = runtime.stop_container(id, Duration::ZERO).await {
                failures.push(format!("stopping container {id}: {e}"));
            }
            if let Err(e) = runtime.remove_container(id).await {
                failures.push(format!("removing container {id}: {e}"));
            }
        }
    }
    // Shims of containers the runtime no longer lists (half-made ones) go too.
    kill_processes_mentioning(&root);
    if root.join("sandboxes").exists() {
        let sandboxes = runtime::sandbox::SandboxManager::new(runtime::sandbox::NetworkConfig {
            root: root.join("sandboxes"),
            cni_bin_dir: args.cni_bin_dir.clone(),
            cni_conf_dir: root.join("cni"),
            bridge: args.cni_bridge.clone(),
            mtu: 1500,
        })?;
        for sandbox in sandboxes.list()? {
            if let Err(e) = sandboxes.remove(&sandbox.pod_uid).await {
                failures.push(format!(
                    "removing the sandbox of pod {}: {e}",
                    sandbox.pod_uid
                ));
            }
        }
    }
    for mount in mounts_under(&root)? {
        if let Err(e) = rustix::mount::unmount(&mount, rustix::mount::UnmountFlags::DETACH) {
            failures.push(format!("unmounting {}: {e}", mount.display()));
        }
    }
    if let Err(e) = runtime::cgroups::remove_pod_cgroup(&args.cgroup_root) {
        failures.push(format!("removing cgroup {}: {e}", args.cgroup_root));
    }
    // A test agent's cgroup root is nested one level down (`/rkube-test-N/kubepods`).
    if let Some(parent) = Path::new(&args.cgroup_root).parent()
        && parent != Path::new("/")
    {
        let _ = runtime::cgroups::remove_pod_cgroup(&parent.to_string_lossy());
    }
    let _ = std::process::Command::new("nft")
        .args([
            "delete",
            "table",
            "ip",
            &kubelet::network::masquerade_table(&args.cni_bridge),
        ])
        .stderr(std::process::Stdio::null())
        .status();
    let _ = std::process::Command::new("nft")
        .args([
            "delete",
            "table",
            "inet",
            &super::agent::proxy_table(&args.cni_bridge),
        ])
        .stderr(std::process::Stdio::null())
        .status();
    let _ = std::process::Command::new("ip")
        .args(["link", "delete", &args.cni_bridge])
        .stderr(std::process::Stdio::null())
        .status();
    if failures.is_empty() {
        println!("stopped every container and removed the node's sandboxes, mounts and cgroups");
        Ok(())
    } else {
        anyhow::bail!(
            "killall left some things behind:\n  {}",
            failures.join("\n  ")
        )
    }
}

/// Mount points at or below `root`, deepest first (so nested mounts go before their parents).
fn mounts_under(root: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mountinfo =
        std::fs::read_to_string("/proc/self/mountinfo").context("reading /proc/self/mountinfo")?;
    let mut mounts: Vec<PathBuf> = mountinfo
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(unescape_mount_path)
        .filter(|p| p.starts_with(root))
        .collect();
    mounts.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    mounts.dedup();
    Ok(mounts)
}

/// mountinfo escapes space, tab, newline and backslash as octal.
fn unescape_mount_path(field: &str) -> PathBuf {
    let mut out = String::with_capacity(field.len());
    let mut chars = field.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            let code: String = chars.by_ref().take(3).collect();
            match u8::from_str_radix(&code, 8) {
                Ok(b) => out.push(b as char),
                Err(_) => {
                    out.push('\\');
                    out.push_str(&code);
                }
            }
        } else {
            out.push(c);
        }
    }
    PathBuf::from(out)
}

/// SIGKILL every process whose command line names a path under `root` (the shims do).
fn kill_processes_mentioning(root: &Path) {
    let needle = root.to_string_lossy().into_owned();
    let me = std::process::id();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        if String::from_utf8_lossy(&cmdline).contains(&needle)
            && let Some(pid) = rustix::process::Pid::from_raw(pid as i32)
        {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_paths_are_unescaped() {
        assert_eq!(
            unescape_mount_path(r"/var/lib/with\040space"),
            PathBuf::from("/var/lib/with space")
        );
        assert_eq!(unescape_mount_path("/plain"), PathBuf::from("/plain"));
    }
}
