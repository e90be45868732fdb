//! Seccomp for `RuntimeDefault`: allow everything but the syscalls Docker's and containerd's
//! default profiles keep from unprivileged containers (a deny list, not their full allow list),
//! with the same capability-gated exceptions. `Localhost/<path>` loads an OCI seccomp object.

use oci_spec::runtime::{
    Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompBuilder, LinuxSyscallBuilder,
};

/// Denied unless the container has the capability that guards them.
const GATED: &[(&str, &[&str])] = &[
    (
        "SYS_ADMIN",
        &[
            "bpf",
            "fanotify_init",
            "lookup_dcookie",
            "mount",
            "mount_setattr",
            "move_mount",
            "open_tree",
            "fsopen",
            "fsconfig",
            "fsmount",
            "fspick",
            "name_to_handle_at",
            "perf_event_open",
            "quotactl",
            "quotactl_fd",
            "setdomainname",
            "sethostname",
            "setns",
            "syslog",
            "umount",
            "umount2",
            "unshare",
            "pivot_root",
        ],
    ),
    ("SYS_BOOT", &["reboot"]),
    (
        "SYS_MODULE",
        &[
            "create_module",
            "delete_module",
            "finit_module",
            "init_module",
            "query_module",
        ],
    ),
    (
        "SYS_PTRACE",
        &["kcmp", "process_vm_readv", "process_vm_writev", "ptrace"],
    ),
    ("SYS_RAWIO", &["ioperm", "iopl"]),
    (
        "SYS_TIME",
        &[
            "clock_adjtime",
            "clock_settime",
            "settimeofday",
            "stime",
            "adjtimex",
        ],
    ),
    ("SYS_PACCT", &["acct"]),
    (
        "SYS_NICE",
        &["get_mempolicy", "mbind", "set_mempolicy", "move_pages"],
    ),
    ("SYS_RESOURCE", &[]),
];

/// Denied always (obsolete, or reaching into the kernel's keyrings and memory).
const DENIED: &[&str] = &[
    "add_key",
    "get_kernel_syms",
    "kexec_file_load",
    "kexec_load",
    "keyctl",
    "nfsservctl",
    "open_by_handle_at",
    "request_key",
    "swapoff",
    "swapon",
    "sysfs",
    "_sysctl",
    "uselib",
    "userfaultfd",
    "ustat",
    "vm86",
    "vm86old",
];

/// The profile for a container with these capabilities (names without `CAP_`).
pub(crate) fn runtime_default(capabilities: &[String]) -> Result<LinuxSeccomp, String> {
    let mut names: Vec<String> = DENIED.iter().map(|s| s.to_string()).collect();
    for (cap, calls) in GATED {
        if !capabilities.iter().any(|c| c == cap) {
            names.extend(calls.iter().map(|s| s.to_string()));
        }
    }
    let deny = LinuxSyscallBuilder::default()
        .names(names)
        .action(LinuxSeccompAction::ScmpActErrno)
        .errno_ret(1u32) // EPERM
        .build()
        .map_err(|e| format!("seccomp: {e}"))?;
    LinuxSeccompBuilder::default()
        .default_action(LinuxSeccompAction::ScmpActAllow)
        .architectures(vec![
            Arch::ScmpArchX86_64,
            Arch::ScmpArchX86,
            Arch::ScmpArchX32,
        ])
        .syscalls(vec![deny])
        .build()
        .map_err(|e| format!("seccomp: {e}"))
}

/// The profile a pod asks for: None for `Unconfined` (and for privileged containers).
pub(crate) fn profile(
    seccomp: Option<&str>,
    privileged: bool,
    capabilities: &[String],
) -> Result<Option<LinuxSeccomp>, String> {
    if privileged {
        return Ok(None);
    }
    match seccomp.unwrap_or("RuntimeDefault") {
        "Unconfined" => Ok(None),
        "RuntimeDefault" | "" => runtime_default(capabilities).map(Some),
        other => match other.strip_prefix("Localhost/") {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| format!("seccomp profile {path}: {e}"))?;
                serde_json::from_str(&text)
                    .map(Some)
                    .map_err(|e| format!("seccomp profile {path}: {e}"))
            }
            None => Err(format!("unknown seccomp profile {other:?}")),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn denied(p: &LinuxSeccomp) -> Vec<String> {
        p.syscalls().as_ref().unwrap()[0].names().clone()
    }

    #[test]
    fn capabilities_lift_their_syscalls() {
        let p = profile(None, false, &[]).unwrap().unwrap();
        assert!(denied(&p).contains(&"mount".to_string()));
        assert!(denied(&p).contains(&"keyctl".to_string()));
        let admin = profile(Some("RuntimeDefault"), false, &["SYS_ADMIN".to_string()])
            .unwrap()
            .unwrap();
        assert!(!denied(&admin).contains(&"mount".to_string()));
        assert!(denied(&admin).contains(&"ptrace".to_string()));
        assert!(profile(Some("Unconfined"), false, &[]).unwrap().is_none());
        assert!(profile(None, true, &[]).unwrap().is_none());
        assert!(profile(Some("Bogus"), false, &[]).is_err());
        assert!(profile(Some("Localhost//nonexistent.json"), false, &[]).is_err());
    }
}
