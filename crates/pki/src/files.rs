//! Crash-safe writes of certificates, keys and kubeconfigs.

use std::fs::{self, OpenOptions, Permissions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use crate::PkiError;

/// Mode for private keys and kubeconfigs (they hold credentials).
pub(crate) const PRIVATE_MODE: u32 = 0o600;
/// Mode for certificates (public material).
pub(crate) const PUBLIC_MODE: u32 = 0o644;

/// Writes `contents` to `path` atomically: a temp file in the same directory with `mode`
/// from its creation on (so a secret is never readable by others, even briefly), fsync,
/// rename over `path`, fsync of the directory. A crash leaves the old file or the new one.
pub(crate) fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> Result<(), PkiError> {
    let dir = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| PkiError::io(path, std::io::Error::other("path has no file name")))?;
    let tmp = dir.join(format!(
        ".{}.tmp.{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    // A leftover from a crashed run may have another mode; start from scratch.
    match fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => return Err(PkiError::io(&tmp, err)),
    }
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        // The umask may have cleared bits of `mode`; set it exactly.
        file.set_permissions(Permissions::from_mode(mode))?;
        file.write_all(contents)?;
        file.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if let Err(err) = result {
        let _ = fs::remove_file(&tmp);
        return Err(PkiError::io(path, err));
    }
    // Make the rename itself durable.
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|err| PkiError::io(dir, err))
}

/// Creates `dir` (and parents) if missing; a directory we create is private (0700).
pub(crate) fn ensure_private_dir(dir: &Path) -> Result<(), PkiError> {
    if dir.is_dir() {
        return Ok(());
    }
    fs::create_dir_all(dir).map_err(|err| PkiError::io(dir, err))?;
    fs::set_permissions(dir, Permissions::from_mode(0o700)).map_err(|err| PkiError::io(dir, err))
}

/// Reads a file as UTF-8; `Ok(None)` if it does not exist.
pub(crate) fn read_optional(path: &Path) -> Result<Option<String>, PkiError> {
    match fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(PkiError::io(path, err)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode_of(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn atomic_write_replaces_content_and_sets_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        fs::write(&path, "old").unwrap();
        fs::set_permissions(&path, Permissions::from_mode(0o666)).unwrap();

        write_atomic(&path, b"new", PRIVATE_MODE).unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "new");
        assert_eq!(mode_of(&path), 0o600);

        write_atomic(&path, b"public", PUBLIC_MODE).unwrap();
        assert_eq!(mode_of(&path), 0o644);
        // No temp files left behind.
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("secret")]);
    }

    #[test]
    fn read_optional_distinguishes_missing() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read_optional(&dir.path().join("nope")).unwrap(), None);
        fs::write(dir.path().join("yes"), "x").unwrap();
        assert_eq!(
            read_optional(&dir.path().join("yes")).unwrap().as_deref(),
            Some("x")
        );
    }

    #[test]
    fn created_dir_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let tls = dir.path().join("a/tls");
        ensure_private_dir(&tls).unwrap();
        assert_eq!(mode_of(&tls), 0o700);
    }
}
