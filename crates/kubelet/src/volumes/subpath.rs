//! `subPath` / `subPathExpr` of a volumeMount: validated and created inside the volume without
//! ever leaving it (a symlink in the volume must not point a container at the host).

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

/// Upstream's checks before using a subPath: relative and without `..` elements.
pub fn validate(sub_path: &str) -> Result<(), String> {
    if sub_path.starts_with('/') {
        return Err(format!(
            "error SubPath `{sub_path}` must not be an absolute path"
        ));
    }
    if sub_path.split('/').any(|item| item == "..") {
        return Err(format!(
            "unable to provision SubPath `{sub_path}`: must not contain '..'"
        ));
    }
    Ok(())
}

/// Expand a `subPathExpr` with the container's environment; every referenced variable must have
/// a non-empty value (`missing value for A, B` otherwise).
pub fn expand_expr(expr: &str, env: &[(String, String)]) -> Result<String, String> {
    let mut missing = std::collections::BTreeSet::new();
    let expanded = super::env::expand(expr, |name| {
        let value = env
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone());
        match value {
            Some(v) if !v.is_empty() => Some(v),
            _ => {
                missing.insert(name.to_string());
                Some(String::new())
            }
        }
    });
    if missing.is_empty() {
        Ok(expanded)
    } else {
        Err(format!(
            "missing value for {}",
            missing.into_iter().collect::<Vec<_>>().join(", ")
        ))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SubPathError {
    #[error("subPath {0} resolves outside of its volume")]
    Escapes(PathBuf),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// The host path of `volume/sub_path` with symlinks resolved, creating missing directories with
/// the volume's own mode. Fails if any step resolves outside the volume.
pub fn prepare(volume: &Path, sub_path: &str) -> Result<PathBuf, SubPathError> {
    let io_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| SubPathError::Io { path, source }
    };
    let root = std::fs::canonicalize(volume).map_err(io_err(volume))?;
    let mode = std::fs::metadata(&root)
        .map_err(io_err(&root))?
        .permissions()
        .mode()
        & 0o7777;
    let mut current = root.clone();
    for component in Path::new(sub_path).components() {
        let name = match component {
            Component::Normal(n) => n,
            Component::CurDir => continue,
            // validate() rejects these; never trust them here either.
            _ => return Err(SubPathError::Escapes(PathBuf::from(sub_path))),
        };
        let next = current.join(name);
        match std::fs::symlink_metadata(&next) {
            Ok(meta) if meta.file_type().is_symlink() => {
                let target = std::fs::canonicalize(&next).map_err(io_err(&next))?;
                if !target.starts_with(&root) {
                    return Err(SubPathError::Escapes(PathBuf::from(sub_path)));
                }
                current = target;
            }
            Ok(_) => current = next,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                match std::fs::create_dir(&next) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                    Err(e) => return Err(io_err(&next)(e)),
                }
                std::fs::set_permissions(&next, std::fs::Permissions::from_mode(mode))
                    .map_err(io_err(&next))?;
                current = next;
            }
            Err(e) => return Err(io_err(&next)(e)),
        }
    }
    Ok(current)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_matches_upstream() {
        assert!(validate("logs/app").is_ok());
        assert!(validate("a..b").is_ok());
        assert_eq!(
            validate("/etc").unwrap_err(),
            "error SubPath `/etc` must not be an absolute path"
        );
        assert_eq!(
            validate("a/../../etc").unwrap_err(),
            "unable to provision SubPath `a/../../etc`: must not contain '..'"
        );
    }

    #[test]
    fn expression_expansion_needs_every_value() {
        let env = vec![
            ("POD_NAME".to_string(), "web-0".to_string()),
            ("EMPTY".to_string(), String::new()),
        ];
        assert_eq!(expand_expr("logs/$(POD_NAME)", &env).unwrap(), "logs/web-0");
        assert_eq!(
            expand_expr("$(NOPE)/$(EMPTY)/$(POD_NAME)", &env).unwrap_err(),
            "missing value for EMPTY, NOPE"
        );
        assert_eq!(expand_expr("plain", &env).unwrap(), "plain");
    }

    #[test]
    fn creates_missing_dirs_with_the_volume_mode() {
        let dir = tempfile::tempdir().unwrap();
        let vol = dir.path().join("vol");
        std::fs::create_dir(&vol).unwrap();
        std::fs::set_permissions(&vol, std::fs::Permissions::from_mode(0o777)).unwrap();
        let p = prepare(&vol, "a/b").unwrap();
        assert_eq!(p, std::fs::canonicalize(&vol).unwrap().join("a/b"));
        assert!(p.is_dir());
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o7777,
            0o777
        );
        // Idempotent.
        assert_eq!(prepare(&vol, "a/b").unwrap(), p);
    }

    #[test]
    fn symlinks_inside_are_followed_and_outside_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let vol = dir.path().join("vol");
        std::fs::create_dir_all(vol.join("..data")).unwrap();
        std::fs::write(vol.join("..data/key"), "v").unwrap();
        std::os::unix::fs::symlink("..data/key", vol.join("key")).unwrap();
        std::os::unix::fs::symlink("/etc", vol.join("evil")).unwrap();
        let p = prepare(&vol, "key").unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "v");
        assert!(matches!(
            prepare(&vol, "evil/passwd"),
            Err(SubPathError::Escapes(_))
        ));
        assert!(matches!(
            prepare(&vol, "../x"),
            Err(SubPathError::Escapes(_))
        ));
    }
}
