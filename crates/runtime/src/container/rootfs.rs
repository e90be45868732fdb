//! The container's root filesystem: an overlayfs mount of the image's layers (read-only,
//! shared) under a writable upper dir of its own.

use std::io;
use std::path::{Path, PathBuf};

use rustix::mount::{MountFlags, UnmountFlags};

/// `lowerdir=` for overlayfs: the topmost layer first.
pub(crate) fn lowerdir(layers: &[PathBuf]) -> String {
    layers
        .iter()
        .rev()
        .map(|d| d.display().to_string())
        .collect::<Vec<_>>()
        .join(":")
}

/// Mounts the layers at `<dir>/rootfs` with `<dir>/upper` and `<dir>/work`.
pub(crate) fn mount(dir: &Path, layers: &[PathBuf]) -> io::Result<PathBuf> {
    if layers.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "the image has no layers",
        ));
    }
    let rootfs = dir.join("rootfs");
    let upper = dir.join("upper");
    let work = dir.join("work");
    for d in [&rootfs, &upper, &work] {
        std::fs::create_dir_all(d)?;
    }
    let data = format!(
        "lowerdir={},upperdir={},workdir={}",
        lowerdir(layers),
        upper.display(),
        work.display()
    );
    let data =
        std::ffi::CString::new(data).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    rustix::mount::mount(
        "overlay",
        &rootfs,
        "overlay",
        MountFlags::empty(),
        data.as_c_str(),
    )?;
    Ok(rootfs)
}

/// Whether `path` is a mount point (a different device than its parent).
pub(crate) fn is_mounted(path: &Path) -> bool {
    let (Ok(p), Some(Ok(parent))) = (rustix::fs::stat(path), path.parent().map(rustix::fs::stat))
    else {
        return false;
    };
    p.st_dev != parent.st_dev
}

/// Unmounts `<dir>/rootfs` if it is mounted (lazily: a process still inside cannot block the
/// pod's removal).
pub(crate) fn unmount(dir: &Path) -> io::Result<()> {
    let rootfs = dir.join("rootfs");
    while is_mounted(&rootfs) {
        match rustix::mount::unmount(&rootfs, UnmountFlags::DETACH) {
            Ok(()) => {}
            Err(rustix::io::Errno::INVAL) | Err(rustix::io::Errno::NOENT) => break,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lowerdir_puts_the_top_layer_first() {
        let layers = vec![
            PathBuf::from("/l/base"),
            PathBuf::from("/l/mid"),
            PathBuf::from("/l/top"),
        ];
        assert_eq!(lowerdir(&layers), "/l/top:/l/mid:/l/base");
    }
}
