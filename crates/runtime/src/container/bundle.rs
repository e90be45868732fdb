//! The OCI runtime bundle's `config.json`, built from a [`ContainerSpec`] and the image config,
//! with containerd's CRI defaults (mounts, capabilities, masked paths) so that containers see
//! what they would see under upstream Kubernetes.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use oci_spec::runtime::{
    Capabilities, Capability, LinuxBuilder, LinuxCapabilitiesBuilder, LinuxCpuBuilder,
    LinuxDeviceBuilder, LinuxDeviceCgroupBuilder, LinuxDeviceType, LinuxMemoryBuilder,
    LinuxNamespaceBuilder, LinuxNamespaceType, LinuxPidsBuilder, LinuxResourcesBuilder,
    Mount as OciMount, MountBuilder, ProcessBuilder, RootBuilder, Spec, SpecBuilder, UserBuilder,
};

use super::{ContainerSpec, resolve_process_args};

/// The PATH a container gets when neither the image nor the pod sets one.
pub(crate) const DEFAULT_PATH: &str =
    "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// containerd's default capability set for CRI containers.
const DEFAULT_CAPABILITIES: &[&str] = &[
    "CHOWN",
    "DAC_OVERRIDE",
    "FSETID",
    "FOWNER",
    "MKNOD",
    "NET_RAW",
    "SETGID",
    "SETUID",
    "SETFCAP",
    "SETPCAP",
    "NET_BIND_SERVICE",
    "SYS_CHROOT",
    "KILL",
    "AUDIT_WRITE",
];

/// Every capability the runtime spec knows (privileged containers get them all).
const ALL_CAPABILITIES: &[&str] = &[
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
];

/// Paths containerd masks in unprivileged containers.
const MASKED_PATHS: &[&str] = &[
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
    "/proc/scsi",
];

/// Paths containerd makes read-only in unprivileged containers.
const READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// The process's user: uid, gid and supplementary groups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ResolvedUser {
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
}

/// Builds `config.json` for the container `id` whose root filesystem is mounted at `rootfs`
/// (read for `/etc/passwd` and `/etc/group`). Errors are messages for CreateContainerError.
pub(crate) fn build_spec(
    id: &str,
    spec: &ContainerSpec,
    rootfs: &Path,
    cgroup_root: &str,
) -> Result<Spec, String> {
    let args = resolve_process_args(&spec.command, &spec.args, &spec.image_config);
    if args.is_empty() {
        return Err("no command specified".to_string());
    }
    let user = resolve_user(spec, rootfs)?;
    let sec = &spec.security;

    let mut capabilities: Vec<String> = if sec.privileged {
        ALL_CAPABILITIES.iter().map(|c| c.to_string()).collect()
    } else {
        capability_set(&sec.capabilities_add, &sec.capabilities_drop)
    };
    capabilities.sort();
    let seccomp = super::seccomp::profile(sec.seccomp.as_deref(), sec.privileged, &capabilities)?;
    let mut caps = Capabilities::new();
    for name in &capabilities {
        let cap = Capability::from_str(name).map_err(|_| format!("unknown capability {name:?}"))?;
        caps.insert(cap);
    }
    let capabilities = LinuxCapabilitiesBuilder::default()
        .bounding(caps.clone())
        .effective(caps.clone())
        .permitted(caps)
        .build()
        .map_err(|e| format!("capabilities: {e}"))?;

    let cwd = match spec.working_dir.as_deref() {
        Some(dir) if !dir.is_empty() => dir.to_string(),
        _ if !spec.image_config.working_dir.is_empty() => spec.image_config.working_dir.clone(),
        _ => "/".to_string(),
    };
    if !cwd.starts_with('/') {
        return Err(format!("working directory {cwd:?} is not an absolute path"));
    }

    let process = ProcessBuilder::default()
        // The shim gives the container pipes, not a terminal (a `tty: true` container runs
        // without one; exec -t gets a real terminal).
        .terminal(false)
        .user(
            UserBuilder::default()
                .uid(user.uid)
                .gid(user.gid)
                .additional_gids(user.additional_gids.clone())
                .build()
                .map_err(|e| format!("user: {e}"))?,
        )
        .args(args)
        .env(process_env(spec))
        .cwd(cwd)
        .capabilities(capabilities)
        // allowPrivilegeEscalation defaults to true; privileged containers always may.
        .no_new_privileges(!sec.privileged && sec.allow_privilege_escalation == Some(false))
        .build()
        .map_err(|e| format!("process: {e}"))?;
    // The builders start from oci-spec's defaults, which are not containerd's: the process
    // inherits the runtime's rlimits.
    let mut process = process;
    process.set_rlimits(None);

    let mut linux = LinuxBuilder::default()
        .namespaces(namespaces(spec)?)
        .resources(resources(spec)?)
        .cgroups_path(PathBuf::from(container_cgroup(
            &spec.cgroup_parent,
            cgroup_root,
            id,
        )))
        .sysctl(
            spec.sysctls
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect::<HashMap<_, _>>(),
        );
    if sec.privileged {
        linux = linux.devices(host_devices());
    } else {
        linux = linux
            .masked_paths(
                MASKED_PATHS
                    .iter()
                    .map(|p| p.to_string())
                    .collect::<Vec<_>>(),
            )
            .readonly_paths(
                READONLY_PATHS
                    .iter()
                    .map(|p| p.to_string())
                    .collect::<Vec<_>>(),
            );
    }
    let mut linux = linux.build().map_err(|e| format!("linux: {e}"))?;
    linux.set_seccomp(seccomp);
    if sec.privileged {
        linux.set_masked_paths(None);
        linux.set_readonly_paths(None);
    }

    let mut builder = SpecBuilder::default()
        .version("1.0.2")
        .root(
            RootBuilder::default()
                .path("rootfs")
                .readonly(sec.read_only_root_filesystem)
                .build()
                .map_err(|e| format!("root: {e}"))?,
        )
        .mounts(mounts(spec)?)
        .process(process)
        .linux(linux);
    // A hostname needs a UTS namespace of the pod's own; with the host's, it is the host's.
    if spec.namespaces.uts.is_some() && !spec.hostname.is_empty() {
        builder = builder.hostname(spec.hostname.clone());
    }
    let mut oci = builder.build().map_err(|e| format!("spec: {e}"))?;
    if spec.namespaces.uts.is_none() || spec.hostname.is_empty() {
        oci.set_hostname(None);
    }
    oci.set_annotations(None);
    Ok(oci)
}

/// `<cgroup_parent>/<id>`, or `<cgroup_root>/<id>` when the spec names no parent.
pub(crate) fn container_cgroup(cgroup_parent: &str, cgroup_root: &str, id: &str) -> String {
    let parent = if cgroup_parent.is_empty() {
        cgroup_root
    } else {
        cgroup_parent
    };
    let parent = parent.trim_end_matches('/');
    if parent.starts_with('/') || parent.is_empty() {
        format!("{parent}/{id}")
    } else {
        format!("/{parent}/{id}")
    }
}

/// The default set with `add` and `drop` applied as the CRI does: `ALL` in drop empties the set
/// first, `ALL` in add grants everything; names may carry a `CAP_` prefix.
pub(crate) fn capability_set(add: &[String], drop: &[String]) -> Vec<String> {
    let norm = |c: &String| {
        let c = c.trim().to_ascii_uppercase();
        c.strip_prefix("CAP_").map(str::to_string).unwrap_or(c)
    };
    let add: Vec<String> = add.iter().map(norm).collect();
    let drop: Vec<String> = drop.iter().map(norm).collect();
    let mut set: Vec<String> = if add.iter().any(|c| c == "ALL") {
        ALL_CAPABILITIES.iter().map(|c| c.to_string()).collect()
    } else {
        DEFAULT_CAPABILITIES.iter().map(|c| c.to_string()).collect()
    };
    if drop.iter().any(|c| c == "ALL") {
        set.clear();
    }
    for c in add.iter().filter(|c| *c != "ALL") {
        if !set.contains(c) {
            set.push(c.clone());
        }
    }
    // An explicit add wins over dropping ALL, but not over dropping that very capability.
    set.retain(|c| !drop.contains(c));
    set
}

/// Image env, then HOSTNAME, then the pod's env; a later value replaces an earlier one in
/// place. PATH defaults when nobody set it.
pub(crate) fn process_env(spec: &ContainerSpec) -> Vec<String> {
    let mut env: Vec<(String, String)> = Vec::new();
    let mut set = |k: &str, v: &str| match env.iter_mut().find(|(name, _)| name == k) {
        Some(entry) => entry.1 = v.to_string(),
        None => env.push((k.to_string(), v.to_string())),
    };
    for kv in &spec.image_config.env {
        let (k, v) = kv.split_once('=').unwrap_or((kv.as_str(), ""));
        set(k, v);
    }
    if !spec.hostname.is_empty() {
        set("HOSTNAME", &spec.hostname);
    }
    if spec.tty {
        set("TERM", "xterm");
    }
    for (k, v) in &spec.env {
        set(k, v);
    }
    if !env.iter().any(|(k, _)| k == "PATH") {
        env.insert(0, ("PATH".to_string(), DEFAULT_PATH.to_string()));
    }
    env.into_iter().map(|(k, v)| format!("{k}={v}")).collect()
}

fn namespaces(spec: &ContainerSpec) -> Result<Vec<oci_spec::runtime::LinuxNamespace>, String> {
    let ns = &spec.namespaces;
    let mut out = Vec::new();
    let mut add = |typ: LinuxNamespaceType, path: Option<&PathBuf>| -> Result<(), String> {
        let mut b = LinuxNamespaceBuilder::default().typ(typ);
        if let Some(p) = path {
            b = b.path(p.clone());
        }
        out.push(b.build().map_err(|e| format!("namespace: {e}"))?);
        Ok(())
    };
    add(LinuxNamespaceType::Mount, None)?;
    if !ns.host_pid {
        add(LinuxNamespaceType::Pid, ns.pid.as_ref())?;
    }
    if let Some(p) = &ns.network {
        add(LinuxNamespaceType::Network, Some(p))?;
    }
    if let Some(p) = &ns.ipc {
        add(LinuxNamespaceType::Ipc, Some(p))?;
    }
    if let Some(p) = &ns.uts {
        add(LinuxNamespaceType::Uts, Some(p))?;
    }
    Ok(out)
}

fn resources(spec: &ContainerSpec) -> Result<oci_spec::runtime::LinuxResources, String> {
    let r = &spec.resources;
    let device_rules = if spec.security.privileged {
        vec![
            LinuxDeviceCgroupBuilder::default()
                .allow(true)
                .access("rwm")
                .build()
                .map_err(|e| format!("devices: {e}"))?,
        ]
    } else {
        vec![
            LinuxDeviceCgroupBuilder::default()
                .allow(false)
                .access("rwm")
                .build()
                .map_err(|e| format!("devices: {e}"))?,
        ]
    };
    let mut b = LinuxResourcesBuilder::default().devices(device_rules);
    let mut cpu = LinuxCpuBuilder::default();
    if let Some(s) = r.cpu_shares {
        cpu = cpu.shares(s.max(2));
    }
    if let Some(q) = r.cpu_quota {
        cpu = cpu.quota(q).period(r.cpu_period.unwrap_or(100_000));
    } else if let Some(p) = r.cpu_period {
        cpu = cpu.period(p);
    }
    b = b.cpu(cpu.build().map_err(|e| format!("cpu: {e}"))?);
    if let Some(limit) = r.memory_limit {
        let mut m = LinuxMemoryBuilder::default().limit(limit);
        // Equal memory and memory+swap limits keep the container off swap, where the kernel
        // accounts swap at all.
        if swap_accounting() {
            m = m.swap(limit);
        }
        b = b.memory(m.build().map_err(|e| format!("memory: {e}"))?);
    }
    if let Some(limit) = r.pids_limit {
        b = b.pids(
            LinuxPidsBuilder::default()
                .limit(limit)
                .build()
                .map_err(|e| format!("pids: {e}"))?,
        );
    }
    b.build().map_err(|e| format!("resources: {e}"))
}

fn swap_accounting() -> bool {
    match crate::cgroups::detect_mode() {
        crate::cgroups::CgroupMode::V1 => {
            Path::new("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes").exists()
        }
        crate::cgroups::CgroupMode::V2 => false,
    }
}

fn mount(dest: &str, typ: &str, source: &str, options: &[&str]) -> Result<OciMount, String> {
    MountBuilder::default()
        .destination(dest)
        .typ(typ)
        .source(source)
        .options(options.iter().map(|o| o.to_string()).collect::<Vec<_>>())
        .build()
        .map_err(|e| format!("mount {dest}: {e}"))
}

/// containerd's default mounts, then the pod's bind mounts (parents before children); a pod
/// mount replaces a default one at the same path.
fn mounts(spec: &ContainerSpec) -> Result<Vec<OciMount>, String> {
    let privileged = spec.security.privileged;
    let sys_mode = if privileged { "rw" } else { "ro" };
    let defaults = [
        mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"])?,
        mount(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        )?,
        mount(
            "/dev/pts",
            "devpts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
        )?,
        mount(
            "/dev/shm",
            "tmpfs",
            "shm",
            &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        )?,
        mount(
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            &["nosuid", "noexec", "nodev"],
        )?,
        mount(
            "/sys",
            "sysfs",
            "sysfs",
            &["nosuid", "noexec", "nodev", sys_mode],
        )?,
        mount(
            "/sys/fs/cgroup",
            "cgroup",
            "cgroup",
            &["nosuid", "noexec", "nodev", "relatime", sys_mode],
        )?,
    ];
    let mut user: Vec<&super::Mount> = spec.mounts.iter().collect();
    // Stable sort by depth: a volume at /data mounts before one at /data/sub.
    user.sort_by_key(|m| {
        Path::new(&m.container_path)
            .components()
            .filter(|c| matches!(c, std::path::Component::Normal(_)))
            .count()
    });
    let mut out: Vec<OciMount> = defaults
        .into_iter()
        .filter(|d| {
            !user
                .iter()
                .any(|m| Path::new(&m.container_path) == d.destination())
        })
        .collect();
    for m in user {
        if !m.container_path.starts_with('/') {
            return Err(format!(
                "mount destination {:?} is not an absolute path",
                m.container_path
            ));
        }
        if !m.host_path.exists() {
            return Err(format!(
                "mount source {} does not exist",
                m.host_path.display()
            ));
        }
        let propagation = match m.propagation.as_deref() {
            Some("Bidirectional") => "rshared",
            Some("HostToContainer") => "rslave",
            _ => "rprivate",
        };
        let mode = if m.read_only { "ro" } else { "rw" };
        out.push(mount(
            &m.container_path,
            "bind",
            &m.host_path.display().to_string(),
            &["rbind", propagation, mode],
        )?);
    }
    Ok(out)
}

/// The host's device nodes (privileged containers see them all, as upstream).
fn host_devices() -> Vec<oci_spec::runtime::LinuxDevice> {
    let mut out = Vec::new();
    let mut dirs = vec![PathBuf::from("/dev")];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(ft) = entry.file_type() else { continue };
            if ft.is_dir() {
                // The container gets fresh pts, shm and mqueue mounts of its own.
                let skip = ["pts", "shm", "mqueue", "fd"];
                if dir == Path::new("/dev")
                    && skip
                        .iter()
                        .any(|s| entry.file_name() == std::ffi::OsStr::new(s))
                {
                    continue;
                }
                dirs.push(path);
                continue;
            }
            use std::os::unix::fs::FileTypeExt;
            let typ = if ft.is_char_device() {
                LinuxDeviceType::C
            } else if ft.is_block_device() {
                LinuxDeviceType::B
            } else {
                continue;
            };
            // /dev/console belongs to the host's terminal; ptmx comes with the devpts mount.
            if path == Path::new("/dev/console") || path == Path::new("/dev/ptmx") {
                continue;
            }
            let Ok(st) = rustix::fs::stat(&path) else {
                continue;
            };
            let rdev = st.st_rdev;
            let dev = LinuxDeviceBuilder::default()
                .path(path)
                .typ(typ)
                .major(rustix::fs::major(rdev) as i64)
                .minor(rustix::fs::minor(rdev) as i64)
                .file_mode(st.st_mode & 0o7777)
                .uid(st.st_uid)
                .gid(st.st_gid)
                .build();
            if let Ok(dev) = dev {
                out.push(dev);
            }
        }
    }
    out
}

/// The process's uid, gid and groups: runAsUser/runAsGroup win over the image's `User`, which
/// is resolved against the container's own /etc/passwd and /etc/group.
pub(crate) fn resolve_user(spec: &ContainerSpec, rootfs: &Path) -> Result<ResolvedUser, String> {
    let passwd = read_rootfs_file(rootfs, "etc/passwd");
    let group = read_rootfs_file(rootfs, "etc/group");
    let sec = &spec.security;
    let image_user = spec.image_config.user.as_str();
    resolve_user_in(
        sec.run_as_user,
        sec.run_as_group,
        &sec.supplemental_groups,
        image_user,
        &passwd,
        &group,
    )
}

/// Reads a file of the rootfs without following symlinks out of it (an absolute link is taken
/// relative to the rootfs, as inside the container).
fn read_rootfs_file(rootfs: &Path, rel: &str) -> String {
    let mut path = rootfs.join(rel);
    for _ in 0..8 {
        match std::fs::symlink_metadata(&path) {
            Ok(m) if m.file_type().is_symlink() => {
                let Ok(target) = std::fs::read_link(&path) else {
                    return String::new();
                };
                path = if let Ok(abs) = target.strip_prefix("/") {
                    rootfs.join(abs)
                } else {
                    path.parent().unwrap_or(rootfs).join(target)
                };
            }
            Ok(_) => return std::fs::read_to_string(&path).unwrap_or_default(),
            Err(_) => return String::new(),
        }
    }
    String::new()
}

struct PasswdEntry<'a> {
    name: &'a str,
    uid: u32,
    gid: u32,
}

fn passwd_entries(passwd: &str) -> impl Iterator<Item = PasswdEntry<'_>> {
    passwd.lines().filter_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() < 4 || line.starts_with('#') {
            return None;
        }
        Some(PasswdEntry {
            name: f[0],
            uid: f[2].parse().ok()?,
            gid: f[3].parse().ok()?,
        })
    })
}

/// (name, gid, members)
fn group_entries(group: &str) -> impl Iterator<Item = (&str, u32, Vec<&str>)> {
    group.lines().filter_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() < 3 || line.starts_with('#') {
            return None;
        }
        let members = f
            .get(3)
            .map(|m| m.split(',').filter(|s| !s.is_empty()).collect())
            .unwrap_or_default();
        Some((f[0], f[2].parse().ok()?, members))
    })
}

pub(crate) fn resolve_user_in(
    run_as_user: Option<i64>,
    run_as_group: Option<i64>,
    supplemental: &[i64],
    image_user: &str,
    passwd: &str,
    group: &str,
) -> Result<ResolvedUser, String> {
    let to_id =
        |v: i64, what: &str| u32::try_from(v).map_err(|_| format!("{what} {v} is out of range"));
    let (user_part, group_part) = match image_user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (image_user, None),
    };
    // uid, and the user's name when known (for its groups).
    let (uid, name, primary_gid) = match run_as_user {
        Some(uid) => {
            let uid = to_id(uid, "runAsUser")?;
            let entry = passwd_entries(passwd).find(|e| e.uid == uid);
            (
                uid,
                entry.as_ref().map(|e| e.name.to_string()),
                entry.map(|e| e.gid),
            )
        }
        None if user_part.is_empty() => {
            let entry = passwd_entries(passwd).find(|e| e.uid == 0);
            (0, entry.map(|e| e.name.to_string()), Some(0))
        }
        None => match user_part.parse::<u32>() {
            Ok(uid) => {
                let entry = passwd_entries(passwd).find(|e| e.uid == uid);
                (
                    uid,
                    entry.as_ref().map(|e| e.name.to_string()),
                    entry.map(|e| e.gid),
                )
            }
            Err(_) => {
                let entry = passwd_entries(passwd)
                    .find(|e| e.name == user_part)
                    .ok_or_else(|| {
                        format!(
                            "unable to find user {user_part}: no matching entries in passwd file"
                        )
                    })?;
                (entry.uid, Some(entry.name.to_string()), Some(entry.gid))
            }
        },
    };
    let gid = match run_as_group {
        Some(g) => to_id(g, "runAsGroup")?,
        // The image's group applies only with the image's user.
        None => match group_part.filter(|g| !g.is_empty() && run_as_user.is_none()) {
            Some(g) => match g.parse::<u32>() {
                Ok(gid) => gid,
                Err(_) => group_entries(group)
                    .find(|(n, _, _)| *n == g)
                    .map(|(_, gid, _)| gid)
                    .ok_or_else(|| {
                        format!("unable to find group {g}: no matching entries in group file")
                    })?,
            },
            None => primary_gid.unwrap_or(0),
        },
    };
    let mut additional = Vec::new();
    if let Some(name) = &name {
        for (_, g, members) in group_entries(group) {
            if members.contains(&name.as_str()) && !additional.contains(&g) {
                additional.push(g);
            }
        }
    }
    for g in supplemental {
        let g = to_id(*g, "supplemental group")?;
        if !additional.contains(&g) {
            additional.push(g);
        }
    }
    let mut seen = HashSet::new();
    additional.retain(|g| seen.insert(*g));
    Ok(ResolvedUser {
        uid,
        gid,
        additional_gids: additional,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::container::{Mount, SandboxNamespaces, Security};
    use crate::images::ImageConfig;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\nnginx:x:101:101:nginx:/var/cache/nginx:/sbin/nologin\nbob:x:1000:1000::/home/bob:/bin/sh\n";
    const GROUP: &str =
        "root:x:0:\nnginx:x:101:\nbob:x:1000:\nwheel:x:10:bob,alice\nstaff:x:50:bob\n";

    fn user(
        run_as_user: Option<i64>,
        run_as_group: Option<i64>,
        image: &str,
    ) -> Result<ResolvedUser, String> {
        resolve_user_in(run_as_user, run_as_group, &[], image, PASSWD, GROUP)
    }

    #[test]
    fn image_user_names_and_ids_resolve_against_the_rootfs() {
        assert_eq!(user(None, None, "").unwrap().uid, 0);
        let nginx = user(None, None, "nginx").unwrap();
        assert_eq!((nginx.uid, nginx.gid), (101, 101));
        let bob = user(None, None, "bob").unwrap();
        assert_eq!((bob.uid, bob.gid), (1000, 1000));
        assert_eq!(bob.additional_gids, vec![10, 50]);
        let numeric = user(None, None, "1000:10").unwrap();
        assert_eq!((numeric.uid, numeric.gid), (1000, 10));
        let unknown = user(None, None, "4242").unwrap();
        assert_eq!((unknown.uid, unknown.gid), (4242, 0));
        let named_group = user(None, None, "nginx:wheel").unwrap();
        assert_eq!((named_group.uid, named_group.gid), (101, 10));
        let err = user(None, None, "nobody").unwrap_err();
        assert!(err.contains("unable to find user nobody"), "{err}");
        let err = user(None, None, "bob:nogroup").unwrap_err();
        assert!(err.contains("unable to find group nogroup"), "{err}");
    }

    #[test]
    fn run_as_user_and_group_win_over_the_image() {
        let u = user(Some(1000), None, "nginx").unwrap();
        assert_eq!((u.uid, u.gid), (1000, 1000));
        let u = user(Some(5000), Some(6000), "nginx:nginx").unwrap();
        assert_eq!((u.uid, u.gid), (5000, 6000));
        let u = user(None, Some(7), "nginx").unwrap();
        assert_eq!((u.uid, u.gid), (101, 7));
        let u = resolve_user_in(Some(1000), None, &[3000, 10], "", PASSWD, GROUP).unwrap();
        assert_eq!(u.additional_gids, vec![10, 50, 3000]);
        assert!(user(Some(-1), None, "").is_err());
    }

    #[test]
    fn capabilities_follow_add_and_drop() {
        let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let default = capability_set(&[], &[]);
        assert_eq!(default.len(), DEFAULT_CAPABILITIES.len());
        let c = capability_set(&s(&["NET_ADMIN", "CAP_SYS_TIME"]), &s(&["KILL"]));
        assert!(c.contains(&"NET_ADMIN".to_string()) && c.contains(&"SYS_TIME".to_string()));
        assert!(!c.contains(&"KILL".to_string()));
        assert_eq!(
            capability_set(&s(&["NET_BIND_SERVICE"]), &s(&["ALL"])),
            vec!["NET_BIND_SERVICE"]
        );
        assert_eq!(
            capability_set(&s(&["ALL"]), &[]).len(),
            ALL_CAPABILITIES.len()
        );
        for name in ALL_CAPABILITIES {
            assert!(Capability::from_str(name).is_ok(), "{name}");
        }
    }

    fn spec() -> ContainerSpec {
        ContainerSpec {
            image_config: ImageConfig {
                entrypoint: vec!["/entry".into()],
                cmd: vec!["serve".into()],
                env: vec!["PATH=/opt/bin".into(), "A=image".into(), "B=image".into()],
                working_dir: "/srv".into(),
                ..Default::default()
            },
            env: vec![("B".into(), "pod".into()), ("C".into(), "pod".into())],
            hostname: "web-0".into(),
            cgroup_parent: "/kubepods/besteffort/podu1".into(),
            namespaces: SandboxNamespaces {
                network: Some("/run/netns/x".into()),
                ipc: Some("/proc/1/ns/ipc".into()),
                uts: Some("/proc/1/ns/uts".into()),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn env_merges_image_then_pod_with_a_default_path() {
        let s = spec();
        assert_eq!(
            process_env(&s),
            vec![
                "PATH=/opt/bin",
                "A=image",
                "B=pod",
                "HOSTNAME=web-0",
                "C=pod"
            ]
        );
        let mut s = spec();
        s.image_config.env.clear();
        s.env.clear();
        assert_eq!(process_env(&s)[0], format!("PATH={DEFAULT_PATH}"));
    }

    #[test]
    fn the_spec_carries_process_namespaces_mounts_and_cgroup() {
        let root = tempfile::tempdir().unwrap();
        let vol = tempfile::tempdir().unwrap();
        let mut s = spec();
        s.security = Security {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: true,
            ..Default::default()
        };
        s.resources.memory_limit = Some(64 << 20);
        s.resources.cpu_quota = Some(50_000);
        s.mounts = vec![
            Mount {
                container_path: "/data/sub".into(),
                host_path: vol.path().into(),
                read_only: true,
                propagation: None,
            },
            Mount {
                container_path: "/data".into(),
                host_path: vol.path().into(),
                read_only: false,
                propagation: Some("HostToContainer".into()),
            },
        ];
        let oci = build_spec("c1", &s, root.path(), "/kubepods").unwrap();
        let json = serde_json::to_value(&oci).unwrap();
        assert_eq!(
            json["process"]["args"],
            serde_json::json!(["/entry", "serve"])
        );
        assert_eq!(json["process"]["cwd"], "/srv");
        assert_eq!(json["process"]["noNewPrivileges"], true);
        assert_eq!(json["root"]["readonly"], true);
        assert_eq!(json["hostname"], "web-0");
        assert_eq!(
            json["linux"]["cgroupsPath"],
            "/kubepods/besteffort/podu1/c1"
        );
        assert_eq!(json["linux"]["resources"]["memory"]["limit"], 64 << 20);
        assert_eq!(json["linux"]["resources"]["cpu"]["quota"], 50_000);
        assert_eq!(json["linux"]["resources"]["cpu"]["period"], 100_000);
        let ns: Vec<(String, Option<String>)> = json["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| {
                (
                    n["type"].as_str().unwrap().to_string(),
                    n["path"].as_str().map(str::to_string),
                )
            })
            .collect();
        assert!(ns.contains(&("network".into(), Some("/run/netns/x".into()))));
        assert!(ns.contains(&("pid".into(), None)));
        assert!(ns.contains(&("mount".into(), None)));
        let dests: Vec<&str> = json["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["destination"].as_str().unwrap())
            .collect();
        let data = dests.iter().position(|d| *d == "/data").unwrap();
        let sub = dests.iter().position(|d| *d == "/data/sub").unwrap();
        assert!(data < sub && dests.contains(&"/proc") && dests.contains(&"/dev/shm"));
        let data_opts = &json["mounts"][data]["options"];
        assert_eq!(data_opts, &serde_json::json!(["rbind", "rslave", "rw"]));
        assert!(json["linux"]["maskedPaths"].as_array().unwrap().len() > 5);
        let caps = json["process"]["capabilities"]["bounding"]
            .as_array()
            .unwrap();
        assert_eq!(caps.len(), DEFAULT_CAPABILITIES.len());
        assert!(caps.contains(&serde_json::json!("CAP_NET_BIND_SERVICE")));

        // Host namespaces: no hostname, no joined paths.
        let mut host = spec();
        host.namespaces = SandboxNamespaces {
            host_pid: true,
            ..Default::default()
        };
        let json =
            serde_json::to_value(build_spec("c2", &host, root.path(), "/k").unwrap()).unwrap();
        assert!(json.get("hostname").is_none());
        assert_eq!(json["linux"]["namespaces"].as_array().unwrap().len(), 1);

        // A missing volume source and an empty command are creation errors.
        let mut bad = spec();
        bad.mounts = vec![Mount {
            container_path: "/x".into(),
            host_path: "/nonexistent/rkube".into(),
            read_only: false,
            propagation: None,
        }];
        assert!(
            build_spec("c3", &bad, root.path(), "/k")
                .unwrap_err()
                .contains("does not exist")
        );
        let mut empty = spec();
        empty.image_config = ImageConfig::default();
        assert_eq!(
            build_spec("c4", &empty, root.path(), "/k").unwrap_err(),
            "no command specified"
        );
    }

    #[test]
    fn privileged_gets_every_capability_and_no_masks() {
        let root = tempfile::tempdir().unwrap();
        let mut s = spec();
        s.security.privileged = true;
        let json = serde_json::to_value(build_spec("c", &s, root.path(), "/k").unwrap()).unwrap();
        assert!(json["linux"].get("maskedPaths").is_none());
        assert!(
            json["process"]["capabilities"]["bounding"]
                .as_array()
                .unwrap()
                .len()
                == ALL_CAPABILITIES.len()
        );
        assert_eq!(json["linux"]["resources"]["devices"][0]["allow"], true);
    }
}
