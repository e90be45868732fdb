//! Atomic projection of files into a volume directory (configMap, secret, downwardAPI,
//! projected), with the same on-disk scheme as upstream's `AtomicWriter`:
//!
//! ```text
//! <target>/..2024_05_01_10_00_00.123456789/   the real files of one version
//! <target>/..data -> ..2024_05_01_10_00_00.123456789
//! <target>/<key>  -> ..data/<key>             what users see (top-level names only)
//! ```
//!
//! A new version is written to a fresh timestamped directory, then `..data` is replaced with one
//! `rename(2)` of a temporary symlink, so a reader never sees a mix of two versions. Names that
//! start with `..` are reserved for the writer.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};

const DATA_DIR_NAME: &str = "..data";
const NEW_DATA_DIR_NAME: &str = "..data_tmp";
const MAX_FILE_NAME_LENGTH: usize = 255;
const MAX_PATH_LENGTH: usize = 4096;

/// One file of a payload: its bytes and permission bits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileProjection {
    pub data: Vec<u8>,
    pub mode: u32,
}

/// Files by relative path (`key`, `dir/key`).
pub type Payload = BTreeMap<String, FileProjection>;

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("invalid path: {0}")]
    InvalidPath(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> WriteError + '_ {
    move |source| WriteError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Runs on a freshly written version before it becomes visible.
pub type SetPerms<'a> = &'a dyn Fn(&Path) -> io::Result<()>;

/// Writes payloads into one target directory. Not synchronized: one writer per directory.
pub struct AtomicWriter {
    target_dir: PathBuf,
}

impl AtomicWriter {
    /// The target directory must exist when [`AtomicWriter::write`] runs.
    pub fn new(target_dir: impl Into<PathBuf>) -> AtomicWriter {
        AtomicWriter {
            target_dir: target_dir.into(),
        }
    }

    /// Project `payload` into the target directory. Returns `false` when the files on disk
    /// already have this content (nothing written). `set_perms` runs on the new timestamped
    /// directory before it becomes visible (fsGroup ownership).
    pub fn write(
        &self,
        payload: &Payload,
        set_perms: Option<SetPerms<'_>>,
    ) -> Result<bool, WriteError> {
        let payload = validate_payload(payload)?;
        let data_dir = self.target_dir.join(DATA_DIR_NAME);

        let old_ts_dir = match std::fs::read_link(&data_dir) {
            Ok(target) => Some(target),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(io_err(&data_dir)(e)),
        };
        let old_ts_path = old_ts_dir.as_ref().map(|d| self.target_dir.join(d));

        let mut to_remove = BTreeSet::new();
        if let Some(old) = &old_ts_path {
            to_remove = paths_to_remove(&payload, old)?;
            if !should_write_payload(&payload, old)? && to_remove.is_empty() {
                // Same content: only make sure every user-visible link is still there.
                self.create_user_visible_files(&payload)?;
                return Ok(false);
            }
        }

        let ts_dir = self.new_timestamp_dir()?;
        let ts_name = ts_dir
            .file_name()
            .expect("timestamp dir has a name")
            .to_os_string();
        let staged = write_payload_to_dir(&payload, &ts_dir).and_then(|()| match set_perms {
            Some(f) => f(&ts_dir).map_err(io_err(&ts_dir)),
            None => Ok(()),
        });
        if let Err(e) = staged {
            let _ = std::fs::remove_dir_all(&ts_dir);
            return Err(e);
        }

        self.create_user_visible_files(&payload)?;

        let new_data_dir = self.target_dir.join(NEW_DATA_DIR_NAME);
        // A crash between symlink and rename can leave it behind.
        let _ = std::fs::remove_file(&new_data_dir);
        if let Err(e) = symlink(&ts_name, &new_data_dir) {
            let _ = std::fs::remove_dir_all(&ts_dir);
            return Err(io_err(&new_data_dir)(e));
        }
        if let Err(e) = std::fs::rename(&new_data_dir, &data_dir) {
            let _ = std::fs::remove_file(&new_data_dir);
            let _ = std::fs::remove_dir_all(&ts_dir);
            return Err(io_err(&data_dir)(e));
        }

        self.remove_user_visible_paths(&to_remove)?;

        if let Some(old) = old_ts_path
            && old != ts_dir
        {
            match std::fs::remove_dir_all(&old) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err(&old)(e)),
            }
        }
        Ok(true)
    }

    fn new_timestamp_dir(&self) -> Result<PathBuf, WriteError> {
        let prefix = chrono::Utc::now()
            .format("..%Y_%m_%d_%H_%M_%S.")
            .to_string();
        loop {
            let candidate = self
                .target_dir
                .join(format!("{prefix}{}", rand::random::<u32>()));
            match std::fs::create_dir(&candidate) {
                Ok(()) => {
                    // 0755 whatever the umask: group and others must be able to traverse it.
                    std::fs::set_permissions(&candidate, std::fs::Permissions::from_mode(0o755))
                        .map_err(io_err(&candidate))?;
                    return Ok(candidate);
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(io_err(&candidate)(e)),
            }
        }
    }

    /// `<target>/<first component>` -> `..data/<first component>` for every payload path.
    fn create_user_visible_files(&self, payload: &Payload) -> Result<(), WriteError> {
        let tops: BTreeSet<&str> = payload
            .keys()
            .map(|p| p.split('/').next().unwrap_or(p))
            .collect();
        for top in tops {
            let visible = self.target_dir.join(top);
            match std::fs::symlink_metadata(&visible) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    symlink(Path::new(DATA_DIR_NAME).join(top), &visible)
                        .map_err(io_err(&visible))?;
                }
                Err(e) => return Err(io_err(&visible)(e)),
            }
        }
        Ok(())
    }

    fn remove_user_visible_paths(&self, paths: &BTreeSet<String>) -> Result<(), WriteError> {
        let mut last = Ok(());
        // Only the links at the top: deeper paths disappear with the old timestamped dir.
        for p in paths.iter().filter(|p| !p.contains('/')) {
            let visible = self.target_dir.join(p);
            match std::fs::remove_file(&visible) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(path = %visible.display(), error = %e, "pruning an old volume file");
                    last = Err(io_err(&visible)(e));
                }
            }
        }
        last
    }
}

/// Checks one payload path as upstream does: relative, no `..` element, no leading `..`
/// (reserved), bounded lengths.
pub fn validate_path(target: &str) -> Result<(), WriteError> {
    if target.is_empty() {
        return Err(WriteError::InvalidPath(format!(
            "must not be empty: {target:?}"
        )));
    }
    if target.starts_with('/') {
        return Err(WriteError::InvalidPath(format!(
            "must be relative path: {target}"
        )));
    }
    if target.len() > MAX_PATH_LENGTH {
        return Err(WriteError::InvalidPath(format!(
            "must be less than or equal to {MAX_PATH_LENGTH} characters"
        )));
    }
    let items: Vec<&str> = target.split('/').collect();
    for item in &items {
        if *item == ".." {
            return Err(WriteError::InvalidPath(format!(
                "must not contain '..': {target}"
            )));
        }
        if item.len() > MAX_FILE_NAME_LENGTH {
            return Err(WriteError::InvalidPath(format!(
                "filenames must be less than or equal to {MAX_FILE_NAME_LENGTH} characters"
            )));
        }
    }
    if items[0].starts_with("..") && items[0].len() > 2 {
        return Err(WriteError::InvalidPath(format!(
            "must not start with '..': {target}"
        )));
    }
    Ok(())
}

/// `a//b/./c` -> `a/b/c`.
fn clean_path(p: &str) -> String {
    p.split('/')
        .filter(|s| !s.is_empty() && *s != ".")
        .collect::<Vec<_>>()
        .join("/")
}

fn validate_payload(payload: &Payload) -> Result<Payload, WriteError> {
    let mut clean = Payload::new();
    for (path, file) in payload {
        validate_path(path)?;
        let cleaned = clean_path(path);
        if cleaned.is_empty() {
            return Err(WriteError::InvalidPath(format!(
                "must not be empty: {path:?}"
            )));
        }
        clean.insert(cleaned, file.clone());
    }
    Ok(clean)
}

fn should_write_payload(payload: &Payload, old_ts_dir: &Path) -> Result<bool, WriteError> {
    for (path, file) in payload {
        let on_disk = old_ts_dir.join(path);
        match std::fs::read(&on_disk) {
            Ok(bytes) if bytes == file.data => {}
            Ok(_) => return Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(true),
            Err(e) => return Err(io_err(&on_disk)(e)),
        }
    }
    Ok(false)
}

/// Paths of the old version that the new payload no longer has (directories still holding a
/// new file are kept).
fn paths_to_remove(payload: &Payload, old_ts_dir: &Path) -> Result<BTreeSet<String>, WriteError> {
    let mut old = BTreeSet::new();
    match walk(old_ts_dir, "", &mut old) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(BTreeSet::new()),
        Err(e) => return Err(io_err(old_ts_dir)(e)),
    }
    let mut new = BTreeSet::new();
    for path in payload.keys() {
        let mut sub = path.as_str();
        loop {
            new.insert(sub.to_string());
            match sub.rfind('/') {
                Some(i) => sub = &sub[..i],
                None => break,
            }
        }
    }
    Ok(old.difference(&new).cloned().collect())
}

fn walk(dir: &Path, prefix: &str, out: &mut BTreeSet<String>) -> io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let rel = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}/{name}")
        };
        if entry.file_type()?.is_dir() {
            walk(&entry.path(), &rel, out)?;
        }
        out.insert(rel);
    }
    Ok(())
}

fn write_payload_to_dir(payload: &Payload, dir: &Path) -> Result<(), WriteError> {
    for (path, file) in payload {
        let full = dir.join(path);
        if let Some(parent) = full.parent() {
            std::fs::create_dir_all(parent).map_err(io_err(parent))?;
        }
        std::fs::write(&full, &file.data).map_err(io_err(&full))?;
        // The mode asked for, not masked by the umask.
        std::fs::set_permissions(&full, std::fs::Permissions::from_mode(file.mode & 0o7777))
            .map_err(io_err(&full))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(data: &str, mode: u32) -> FileProjection {
        FileProjection {
            data: data.as_bytes().to_vec(),
            mode,
        }
    }

    fn payload(entries: &[(&str, &str)]) -> Payload {
        entries
            .iter()
            .map(|(k, v)| (k.to_string(), file(v, 0o644)))
            .collect()
    }

    fn read(dir: &Path, p: &str) -> String {
        std::fs::read_to_string(dir.join(p)).unwrap()
    }

    fn data_target(dir: &Path) -> PathBuf {
        std::fs::read_link(dir.join(DATA_DIR_NAME)).unwrap()
    }

    /// Names in the target dir that are not the writer's own `..` entries.
    fn visible(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| !n.starts_with(".."))
            .collect();
        names.sort();
        names
    }

    #[test]
    fn first_write_creates_data_link_and_visible_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        let w = AtomicWriter::new(dir.path());
        let wrote = w
            .write(
                &payload(&[("GREETING", "hello"), ("conf/app.yaml", "a: 1")]),
                None,
            )
            .unwrap();
        assert!(wrote);
        let ts = data_target(dir.path());
        let ts_name = ts.to_str().unwrap();
        assert!(ts_name.starts_with("..20"), "{ts_name}");
        assert!(dir.path().join(ts_name).is_dir());
        assert_eq!(
            std::fs::read_link(dir.path().join("GREETING")).unwrap(),
            Path::new("..data/GREETING")
        );
        assert_eq!(
            std::fs::read_link(dir.path().join("conf")).unwrap(),
            Path::new("..data/conf")
        );
        assert_eq!(read(dir.path(), "GREETING"), "hello");
        assert_eq!(read(dir.path(), "conf/app.yaml"), "a: 1");
        assert_eq!(visible(dir.path()), vec!["GREETING", "conf"]);
        assert!(!dir.path().join(NEW_DATA_DIR_NAME).exists());
    }

    #[test]
    fn unchanged_payload_is_not_rewritten() {
        let dir = tempfile::tempdir().unwrap();
        let w = AtomicWriter::new(dir.path());
        let p = payload(&[("a", "1")]);
        assert!(w.write(&p, None).unwrap());
        let first = data_target(dir.path());
        assert!(!w.write(&p, None).unwrap());
        assert_eq!(data_target(dir.path()), first);
    }

    #[test]
    fn update_swaps_data_and_removes_old_version_and_deleted_keys() {
        let dir = tempfile::tempdir().unwrap();
        let w = AtomicWriter::new(dir.path());
        w.write(
            &payload(&[("LEVEL", "debug"), ("OLD", "x"), ("d/f", "1")]),
            None,
        )
        .unwrap();
        let first = data_target(dir.path());
        // A reader holding the old file keeps reading old content; a new open sees the new one.
        std::thread::sleep(std::time::Duration::from_millis(5));
        assert!(
            w.write(&payload(&[("LEVEL", "info"), ("NEW", "y")]), None)
                .unwrap()
        );
        let second = data_target(dir.path());
        assert_ne!(first, second);
        assert!(!dir.path().join(&first).exists(), "old version removed");
        assert_eq!(read(dir.path(), "LEVEL"), "info");
        assert_eq!(read(dir.path(), "NEW"), "y");
        assert_eq!(visible(dir.path()), vec!["LEVEL", "NEW"]);
        assert!(std::fs::symlink_metadata(dir.path().join("OLD")).is_err());
        assert!(std::fs::symlink_metadata(dir.path().join("d")).is_err());
    }

    #[test]
    fn removing_a_key_alone_triggers_a_write() {
        let dir = tempfile::tempdir().unwrap();
        let w = AtomicWriter::new(dir.path());
        w.write(&payload(&[("a", "1"), ("b", "2")]), None).unwrap();
        assert!(w.write(&payload(&[("a", "1")]), None).unwrap());
        assert_eq!(visible(dir.path()), vec!["a"]);
    }

    #[test]
    fn modes_are_exact_whatever_the_umask() {
        let dir = tempfile::tempdir().unwrap();
        let w = AtomicWriter::new(dir.path());
        let mut p = Payload::new();
        p.insert("secret".into(), file("s", 0o400));
        p.insert("script".into(), file("s", 0o777));
        w.write(&p, None).unwrap();
        let mode = |n: &str| {
            std::fs::metadata(dir.path().join(n))
                .unwrap()
                .permissions()
                .mode()
                & 0o7777
        };
        assert_eq!(mode("secret"), 0o400);
        assert_eq!(mode("script"), 0o777);
        let ts = dir.path().join(data_target(dir.path()));
        assert_eq!(
            std::fs::metadata(ts).unwrap().permissions().mode() & 0o7777,
            0o755
        );
    }

    #[test]
    fn set_perms_runs_on_the_new_version() {
        let dir = tempfile::tempdir().unwrap();
        let w = AtomicWriter::new(dir.path());
        let seen = std::cell::RefCell::new(Vec::new());
        let hook = |p: &Path| {
            seen.borrow_mut().push(p.to_path_buf());
            Ok(())
        };
        w.write(&payload(&[("a", "1")]), Some(&hook)).unwrap();
        assert_eq!(
            seen.borrow().as_slice(),
            &[dir.path().join(data_target(dir.path()))]
        );
    }

    #[test]
    fn a_failing_set_perms_leaves_the_old_version_visible() {
        let dir = tempfile::tempdir().unwrap();
        let w = AtomicWriter::new(dir.path());
        w.write(&payload(&[("a", "1")]), None).unwrap();
        let hook = |_: &Path| Err(io::Error::other("boom"));
        assert!(w.write(&payload(&[("a", "2")]), Some(&hook)).is_err());
        assert_eq!(read(dir.path(), "a"), "1");
        let entries = std::fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(entries, 3, "..data, its target and the a link only");
    }

    #[test]
    fn invalid_paths_are_rejected() {
        for bad in ["", "/abs", "..", "../x", "a/../b", "..data/x", "..hidden"] {
            assert!(validate_path(bad).is_err(), "{bad:?} should be invalid");
        }
        for good in ["a", "a/b", "a..b", "dir/..x"] {
            assert!(validate_path(good).is_ok(), "{good:?} should be valid");
        }
        let long = "x".repeat(256);
        assert!(validate_path(&long).is_err());
        let dir = tempfile::tempdir().unwrap();
        let err = AtomicWriter::new(dir.path())
            .write(&payload(&[("../escape", "x")]), None)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid path: must not contain '..': ../escape"
        );
    }

    #[test]
    fn paths_are_cleaned() {
        let dir = tempfile::tempdir().unwrap();
        AtomicWriter::new(dir.path())
            .write(&payload(&[("./a//b", "x")]), None)
            .unwrap();
        assert_eq!(read(dir.path(), "a/b"), "x");
    }
}
