//! Host mounts of pod volumes: tmpfs for `medium: Memory` emptyDirs and secrets, found again in
//! `/proc/self/mountinfo` so that setup never mounts twice and teardown unmounts everything.

use std::ffi::CString;
use std::io;
use std::path::{Path, PathBuf};

use rustix::mount::{MountFlags, UnmountFlags};

const MOUNTINFO: &str = "/proc/self/mountinfo";

/// Mount points listed in a mountinfo text (5th field, octal escapes decoded).
pub fn parse_mountinfo(text: &str) -> Vec<PathBuf> {
    text.lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|p| PathBuf::from(unescape_octal(p)))
        .collect()
}

/// The kernel writes space, tab, newline and backslash in paths as `\040`, `\011`, `\012`,
/// `\134`.
fn unescape_octal(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let v = (bytes[i + 1] - b'0') as u32 * 64
                + (bytes[i + 2] - b'0') as u32 * 8
                + (bytes[i + 3] - b'0') as u32;
            out.push(v as u8);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn mount_points() -> io::Result<Vec<PathBuf>> {
    Ok(parse_mountinfo(&std::fs::read_to_string(MOUNTINFO)?))
}

/// `path` with symlinks resolved when it exists (mountinfo shows resolved paths).
fn resolved(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
}

pub fn is_mount_point(path: &Path) -> io::Result<bool> {
    let path = resolved(path);
    Ok(mount_points()?.contains(&path))
}

/// Mount points at or below `dir`, deepest first (the order to unmount them in).
pub fn mount_points_under(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let dir = resolved(dir);
    let mut found: Vec<PathBuf> = mount_points()?
        .into_iter()
        .filter(|m| m.starts_with(&dir))
        .collect();
    found.sort_by_key(|m| std::cmp::Reverse(m.components().count()));
    found.dedup();
    Ok(found)
}

/// Mount a tmpfs on `path` (`size=` bytes when given).
pub fn mount_tmpfs(path: &Path, size_bytes: Option<i128>) -> io::Result<()> {
    let data = size_bytes.map(|s| CString::new(format!("size={s}")).expect("no NUL in digits"));
    rustix::mount::mount(
        "tmpfs",
        path,
        "tmpfs",
        MountFlags::NOSUID | MountFlags::NODEV,
        data.as_deref(),
    )
    .map_err(io::Error::from)
}

/// Unmount `path`; a busy mount is detached (lazy unmount) so that teardown always completes.
pub fn unmount(path: &Path) -> io::Result<()> {
    match rustix::mount::unmount(path, UnmountFlags::empty()) {
        Ok(()) => Ok(()),
        Err(rustix::io::Errno::BUSY) => {
            rustix::mount::unmount(path, UnmountFlags::DETACH).map_err(io::Error::from)
        }
        // Already gone (a concurrent teardown).
        Err(rustix::io::Errno::INVAL) | Err(rustix::io::Errno::NOENT) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_paths_are_unescaped() {
        let text = "\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
97 22 0:52 / /var/lib/pods/u1/volumes/kubernetes.io~empty-dir/my\\040cache rw shared:5 - tmpfs tmpfs rw,size=1024k
98 22 0:53 / /a\\134b rw - tmpfs tmpfs rw
";
        assert_eq!(
            parse_mountinfo(text),
            vec![
                PathBuf::from("/"),
                PathBuf::from("/var/lib/pods/u1/volumes/kubernetes.io~empty-dir/my cache"),
                PathBuf::from("/a\\b"),
            ]
        );
    }

    #[test]
    fn root_is_a_mount_point_and_a_temp_dir_is_not() {
        assert!(is_mount_point(Path::new("/")).unwrap());
        let dir = tempfile::tempdir().unwrap();
        assert!(!is_mount_point(dir.path()).unwrap());
        assert!(mount_points_under(dir.path()).unwrap().is_empty());
    }

    #[test]
    fn tmpfs_mount_and_unmount() {
        if !rustix::process::geteuid().is_root() {
            eprintln!("skipped: needs root");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("mem");
        std::fs::create_dir(&target).unwrap();
        mount_tmpfs(&target, Some(1 << 20)).unwrap();
        let mounted = mount_points_under(dir.path()).unwrap();
        let cleanup = |t: &Path| {
            let _ = unmount(t);
        };
        if mounted != vec![resolved(&target)] {
            cleanup(&target);
            panic!("unexpected mounts {mounted:?}");
        }
        assert!(is_mount_point(&target).unwrap());
        unmount(&target).unwrap();
        assert!(!is_mount_point(&target).unwrap());
    }
}
