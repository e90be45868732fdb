//! hostPath volumes: the `type` check (and creation for `DirectoryOrCreate`/`FileOrCreate`),
//! with upstream's messages.

use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum HostPathError {
    /// The path is not what the type asks for (the kubelet retries: it may appear).
    #[error("hostPath type check failed: {0}")]
    Check(String),
    /// An unknown `type`.
    #[error("{0} is an invalid volume type")]
    InvalidType(String),
}

/// Check (and create when asked) `path` for the hostPath `type` (`None` or `""`: no check).
pub fn check_type(path: &Path, path_type: Option<&str>) -> Result<(), HostPathError> {
    let p = path.display();
    let meta = || std::fs::metadata(path).ok();
    let fail = |what: &str| Err(HostPathError::Check(format!("{p} {what}")));
    match path_type.unwrap_or("") {
        "" => Ok(()),
        "DirectoryOrCreate" => match meta() {
            None => make_dir(path).map_err(|e| HostPathError::Check(format!("{p}: {e}"))),
            Some(m) if m.is_dir() => Ok(()),
            Some(_) => fail("is not a directory"),
        },
        "Directory" => match meta() {
            Some(m) if m.is_dir() => Ok(()),
            _ => fail("is not a directory"),
        },
        "FileOrCreate" => match meta() {
            None => make_file(path).map_err(|e| HostPathError::Check(format!("{p}: {e}"))),
            Some(m) if m.is_file() => Ok(()),
            Some(_) => fail("is not a file"),
        },
        "File" => match meta() {
            None => fail("is not a file"),
            Some(m) if m.is_file() => Ok(()),
            Some(_) => fail("is not a file"),
        },
        "Socket" => match meta() {
            None => fail("is not a socket file"),
            Some(m) if m.file_type().is_socket() => Ok(()),
            Some(_) => fail("is not a socket file"),
        },
        "CharDevice" => match meta() {
            None => fail("is not a character device"),
            Some(m) if m.file_type().is_char_device() => Ok(()),
            Some(_) => fail("is not a character device"),
        },
        "BlockDevice" => match meta() {
            None => fail("is not a block device"),
            Some(m) if m.file_type().is_block_device() => Ok(()),
            Some(_) => fail("is not a block device"),
        },
        other => Err(HostPathError::InvalidType(other.to_string())),
    }
}

/// As upstream: parents included, 0755.
fn make_dir(path: &Path) -> io::Result<()> {
    std::fs::create_dir_all(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
}

/// As upstream: the parent must exist; an empty 0644 file.
fn make_file(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o644)
        .open(path)
        .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_type_means_no_check() {
        assert_eq!(check_type(Path::new("/does/not/exist"), None), Ok(()));
        assert_eq!(check_type(Path::new("/does/not/exist"), Some("")), Ok(()));
    }

    #[test]
    fn directory_types() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("a/b");
        let err = check_type(&missing, Some("Directory")).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "hostPath type check failed: {} is not a directory",
                missing.display()
            )
        );
        check_type(&missing, Some("DirectoryOrCreate")).unwrap();
        assert!(missing.is_dir());
        check_type(&missing, Some("Directory")).unwrap();

        let file = dir.path().join("f");
        std::fs::write(&file, "x").unwrap();
        assert_eq!(
            check_type(&file, Some("DirectoryOrCreate"))
                .unwrap_err()
                .to_string(),
            format!(
                "hostPath type check failed: {} is not a directory",
                file.display()
            )
        );
    }

    #[test]
    fn file_types() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("f");
        assert_eq!(
            check_type(&f, Some("File")).unwrap_err().to_string(),
            format!("hostPath type check failed: {} is not a file", f.display())
        );
        check_type(&f, Some("FileOrCreate")).unwrap();
        assert!(f.is_file());
        check_type(&f, Some("File")).unwrap();
        assert_eq!(
            check_type(dir.path(), Some("File"))
                .unwrap_err()
                .to_string(),
            format!(
                "hostPath type check failed: {} is not a file",
                dir.path().display()
            )
        );
        // FileOrCreate does not create parents.
        assert!(check_type(&dir.path().join("no/f"), Some("FileOrCreate")).is_err());
    }

    #[test]
    fn special_files() {
        check_type(Path::new("/dev/null"), Some("CharDevice")).unwrap();
        assert_eq!(
            check_type(Path::new("/dev/null"), Some("BlockDevice"))
                .unwrap_err()
                .to_string(),
            "hostPath type check failed: /dev/null is not a block device"
        );
        assert_eq!(
            check_type(Path::new("/dev/null"), Some("Socket"))
                .unwrap_err()
                .to_string(),
            "hostPath type check failed: /dev/null is not a socket file"
        );
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("s.sock");
        let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        check_type(&sock, Some("Socket")).unwrap();
        assert_eq!(
            check_type(&sock, Some("Weird")).unwrap_err().to_string(),
            "Weird is an invalid volume type"
        );
    }
}
