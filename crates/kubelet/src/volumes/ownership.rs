//! fsGroup: a pod's volumes are made group-owned by its `securityContext.fsGroup`, group
//! read/write (read-only volumes: group read) and setgid on directories, as upstream's
//! `SetVolumeOwnership`.

use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

const RW_MASK: u32 = 0o660;
const RO_MASK: u32 = 0o440;
const EXEC_MASK: u32 = 0o110;
const SETGID: u32 = 0o2000;

/// Apply `fs_group` to `dir` and everything below it (symlinks are re-owned, never followed or
/// chmodded). With `policy` `OnRootMismatch`, nothing happens when the root already matches.
pub fn set_volume_ownership(
    dir: &Path,
    fs_group: u32,
    read_only: bool,
    policy: Option<&str>,
) -> io::Result<()> {
    if policy == Some("OnRootMismatch") && root_matches(dir, fs_group, read_only)? {
        return Ok(());
    }
    walk(dir, &mut |path, meta| {
        change(path, meta, fs_group, read_only)
    })
}

fn root_matches(dir: &Path, fs_group: u32, read_only: bool) -> io::Result<bool> {
    let meta = std::fs::metadata(dir)?;
    let mask = if read_only { RO_MASK } else { RW_MASK } | EXEC_MASK | SETGID;
    Ok(meta.gid() == fs_group && meta.permissions().mode() & mask == mask)
}

fn change(path: &Path, meta: &std::fs::Metadata, fs_group: u32, read_only: bool) -> io::Result<()> {
    std::os::unix::fs::lchown(path, None, Some(fs_group))?;
    if meta.file_type().is_symlink() {
        // A symlink's chmod would change its target, overriding the volume's modes.
        return Ok(());
    }
    let mut mask = if read_only { RO_MASK } else { RW_MASK };
    if meta.is_dir() {
        mask |= SETGID | EXEC_MASK;
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode | mask != mode {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode | mask))?;
    }
    Ok(())
}

fn walk(
    path: &Path,
    f: &mut dyn FnMut(&Path, &std::fs::Metadata) -> io::Result<()>,
) -> io::Result<()> {
    let meta = std::fs::symlink_metadata(path)?;
    f(path, &meta)?;
    if meta.is_dir() {
        for entry in std::fs::read_dir(path)? {
            walk(&entry?.path(), f)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_and_modes() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("vol");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(root.join("sub"), std::fs::Permissions::from_mode(0o750)).unwrap();
        std::fs::write(root.join("sub/f"), "x").unwrap();
        std::fs::set_permissions(root.join("sub/f"), std::fs::Permissions::from_mode(0o600))
            .unwrap();
        std::os::unix::fs::symlink("sub/f", root.join("link")).unwrap();
        // Our own group: works without root.
        let gid = std::fs::metadata(dir.path()).unwrap().gid();
        set_volume_ownership(&root, gid, false, None).unwrap();
        let mode = |p: &str| {
            std::fs::symlink_metadata(root.join(p))
                .unwrap()
                .permissions()
                .mode()
                & 0o7777
        };
        assert_eq!(mode(""), 0o2775);
        assert_eq!(mode("sub"), 0o2770);
        assert_eq!(mode("sub/f"), 0o660);
        assert!(root_matches(&root, gid, false).unwrap());

        let ro = dir.path().join("ro");
        std::fs::create_dir(&ro).unwrap();
        std::fs::write(ro.join("k"), "v").unwrap();
        std::fs::set_permissions(ro.join("k"), std::fs::Permissions::from_mode(0o400)).unwrap();
        set_volume_ownership(&ro, gid, true, None).unwrap();
        assert_eq!(
            std::fs::metadata(ro.join("k"))
                .unwrap()
                .permissions()
                .mode()
                & 0o7777,
            0o440
        );
    }

    #[test]
    fn chown_to_another_group_as_root() {
        if !rustix::process::geteuid().is_root() {
            eprintln!("skipped: needs root");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("f"), "x").unwrap();
        set_volume_ownership(dir.path(), 4321, false, None).unwrap();
        assert_eq!(std::fs::metadata(dir.path().join("f")).unwrap().gid(), 4321);
        assert_eq!(std::fs::metadata(dir.path()).unwrap().gid(), 4321);
        // OnRootMismatch: a matching root means no walk (the new file keeps its group).
        std::fs::write(dir.path().join("g"), "y").unwrap();
        // (setgid on the directory gave it the group: take it back.)
        std::os::unix::fs::lchown(dir.path().join("g"), None, Some(0)).unwrap();
        set_volume_ownership(dir.path(), 4321, false, Some("OnRootMismatch")).unwrap();
        assert_ne!(std::fs::metadata(dir.path().join("g")).unwrap().gid(), 4321);
    }
}
