//! The content-addressed image store under one root directory (see the module docs of
//! [`super`] for the layout).
//!
//! Several processes may use one store (the node agent and `rkube images`): the index is
//! read-modify-written under an exclusive `flock` on `index.lock`, and pulls and imports hold
//! a shared `flock` on `store.lock` that pruning (remove, GC) takes exclusively, so that a
//! prune never deletes a blob that a pull has just written but not yet recorded.
//!
//! Methods do blocking file IO: call them from `spawn_blocking` in async code.

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::io::{self, Read as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use rustix::fs::FlockOperation;
use serde::{Deserialize, Serialize};

use super::config::{ImageConfig, RawConfig};
use super::digest::{HashingReader, hex_of, sha256_of};
use super::manifest::{Manifest, parse_document};
use super::reference;
use super::unpack::{remove_tree, unpack_layer};
use super::{ImageError, Result};

/// An image in the store, under one name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Image {
    /// Full name: `docker.io/library/busybox:1.36` (or `...@sha256:...` when pulled by digest).
    pub name: String,
    /// The image ID: the digest of its config (as containerd reports it).
    pub id: String,
    /// Digest of the (platform) manifest.
    pub manifest_digest: String,
    /// Digest of the multi-arch index the manifest was chosen from, if any.
    #[serde(default)]
    pub index_digest: Option<String>,
    /// Base layer first.
    pub layers: Vec<Layer>,
    pub config: ImageConfig,
    /// Compressed size of config and layers, as registries and `crictl images` report it.
    pub size: u64,
    /// Unix seconds when the image was stored under this name.
    pub created: u64,
    /// Unix seconds when a container last used it (for garbage collection), or `created`.
    pub last_used: u64,
}

impl Image {
    /// `repository@digest`, the `imageID` a container status reports
    /// (`docker.io/library/busybox@sha256:...`). Names the index for multi-arch images, as
    /// a registry's digest would.
    pub fn repo_digest(&self) -> String {
        let (repository, digest) = self.repo_digest_parts();
        format!("{repository}@{digest}")
    }

    fn repo_digest_parts(&self) -> (String, &str) {
        let repository = match reference::parse(&self.name) {
            Ok(r) => reference::repository_name(&r),
            Err(_) => self.name.clone(),
        };
        let digest = self.index_digest.as_ref().unwrap_or(&self.manifest_digest);
        (repository, digest)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layer {
    /// Digest of the (possibly compressed) blob.
    pub digest: String,
    /// Digest of the uncompressed tar; names the unpacked directory.
    pub diff_id: String,
    pub size: u64,
    pub media_type: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct IndexFile {
    images: BTreeMap<String, Image>,
}

#[derive(Clone)]
pub struct ImageStore {
    inner: Arc<Inner>,
}

struct Inner {
    root: PathBuf,
    counter: AtomicU64,
}

/// Holds a `flock` until dropped.
pub(crate) struct LockGuard {
    _file: fs::File,
}

impl ImageStore {
    /// Opens (creating if needed) the store at `root`, e.g. `<data-dir>/images`.
    pub fn open(root: impl Into<PathBuf>) -> Result<ImageStore> {
        let root = root.into();
        for dir in ["blobs/sha256", "layers", "tmp"] {
            let path = root.join(dir);
            fs::create_dir_all(&path).map_err(ImageError::io(&path))?;
        }
        let store = ImageStore {
            inner: Arc::new(Inner {
                root,
                counter: AtomicU64::new(0),
            }),
        };
        // Leftovers of interrupted pulls; only when nobody else is pulling right now.
        if let Some(_guard) = store.try_lock_exclusive()? {
            let tmp = store.inner.root.join("tmp");
            if let Ok(entries) = fs::read_dir(&tmp) {
                for entry in entries.flatten() {
                    let _ = remove_any(&entry.path());
                }
            }
        }
        Ok(store)
    }

    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    /// Where a blob lives (whether or not it is there).
    pub fn blob_path(&self, digest: &str) -> Result<PathBuf> {
        Ok(self.inner.root.join("blobs/sha256").join(hex_of(digest)?))
    }

    pub fn has_blob(&self, digest: &str) -> bool {
        self.blob_path(digest).is_ok_and(|p| p.is_file())
    }

    /// The unpacked directory of the layer with this diff ID.
    pub fn layer_path(&self, diff_id: &str) -> Result<PathBuf> {
        Ok(self.inner.root.join("layers").join(hex_of(diff_id)?))
    }

    pub fn has_layer(&self, diff_id: &str) -> bool {
        self.layer_path(diff_id).is_ok_and(|p| p.is_dir())
    }

    /// A fresh path under `tmp/` for a download or an unpack in progress.
    pub(crate) fn tmp_path(&self, kind: &str) -> PathBuf {
        let n = self.inner.counter.fetch_add(1, Ordering::Relaxed);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        self.inner
            .root
            .join("tmp")
            .join(format!("{kind}-{}-{n}-{nanos}", std::process::id()))
    }

    /// Moves a fully written temp file into the blob store, after checking that it hashes to
    /// `digest`. On a mismatch the temp file is deleted.
    pub(crate) fn commit_blob(&self, tmp: &Path, digest: &str, what: &str) -> Result<()> {
        let target = self.blob_path(digest)?;
        let file = fs::File::open(tmp).map_err(ImageError::io(tmp))?;
        let (actual, _) = HashingReader::new(file)
            .finish()
            .map_err(ImageError::io(tmp))?;
        if actual != digest {
            let _ = fs::remove_file(tmp);
            return Err(ImageError::DigestMismatch {
                what: what.to_string(),
                expected: digest.to_string(),
                actual,
            });
        }
        fs::rename(tmp, &target).map_err(ImageError::io(&target))
    }

    /// Stores bytes as a blob; `expected` (if given) must be their digest.
    pub(crate) fn put_blob(
        &self,
        bytes: &[u8],
        expected: Option<&str>,
        what: &str,
    ) -> Result<String> {
        let digest = sha256_of(bytes);
        if let Some(expected) = expected
            && expected != digest
        {
            return Err(ImageError::DigestMismatch {
                what: what.to_string(),
                expected: expected.to_string(),
                actual: digest,
            });
        }
        if !self.has_blob(&digest) {
            let tmp = self.tmp_path("blob");
            fs::write(&tmp, bytes).map_err(ImageError::io(&tmp))?;
            let target = self.blob_path(&digest)?;
            fs::rename(&tmp, &target).map_err(ImageError::io(&target))?;
        }
        Ok(digest)
    }

    pub(crate) fn read_blob(&self, digest: &str) -> Result<Vec<u8>> {
        let path = self.blob_path(digest)?;
        fs::read(&path).map_err(ImageError::io(&path))
    }

    /// Unpacks a layer unless its directory exists. Returns whether it was unpacked now
    /// (false: shared with an image already here).
    pub fn ensure_layer(&self, digest: &str, diff_id: &str) -> Result<bool> {
        let target = self.layer_path(diff_id)?;
        if target.is_dir() {
            return Ok(false);
        }
        let blob = self.blob_path(digest)?;
        let tmp = self.tmp_path("layer");
        fs::create_dir(&tmp).map_err(ImageError::io(&tmp))?;
        let unpacked = unpack_layer(&blob, &tmp);
        let actual = match unpacked {
            Ok(actual) => actual,
            Err(e) => {
                let _ = remove_tree(&tmp);
                return Err(e);
            }
        };
        if actual != diff_id {
            let _ = remove_tree(&tmp);
            return Err(ImageError::DigestMismatch {
                what: format!("uncompressed layer {digest}"),
                expected: diff_id.to_string(),
                actual,
            });
        }
        match fs::rename(&tmp, &target) {
            Ok(()) => Ok(true),
            // Another pull unpacked it meanwhile.
            Err(_) if target.is_dir() => {
                let _ = remove_tree(&tmp);
                Ok(false)
            }
            Err(e) => {
                let _ = remove_tree(&tmp);
                Err(ImageError::io(&target)(e))
            }
        }
    }

    /// Builds the image record for a manifest whose config blob is stored, and checks the
    /// manifest against the config. Layers are not unpacked here.
    pub(crate) fn describe(
        &self,
        name: &str,
        manifest_digest: &str,
        index_digest: Option<&str>,
    ) -> Result<Image> {
        let bytes = self.read_blob(manifest_digest)?;
        let manifest = match parse_document(&bytes, None, manifest_digest)? {
            super::manifest::Document::Manifest(m) => m,
            super::manifest::Document::Index(_) => {
                return Err(ImageError::Format {
                    what: format!("manifest {manifest_digest}"),
                    message: "is an index, expected an image manifest".into(),
                });
            }
        };
        let config_bytes = self.read_blob(&manifest.config.digest)?;
        image_from(
            name,
            manifest_digest,
            index_digest,
            &manifest,
            &config_bytes,
        )
    }

    /// Records `image` in the index under its name (replacing what the name pointed to).
    pub(crate) fn record(&self, image: &Image) -> Result<()> {
        self.update_index(|index| {
            index.images.insert(image.name.clone(), image.clone());
        })
    }

    pub fn list(&self) -> Result<Vec<Image>> {
        Ok(self.read_index()?.images.into_values().collect())
    }

    /// Finds an image by name (normalized: `busybox:1.36` finds
    /// `docker.io/library/busybox:1.36`), by ID (`sha256:...`) or by repo digest.
    pub fn get(&self, name: &str) -> Result<Option<Image>> {
        let index = self.read_index()?;
        Ok(find(&index, name).into_iter().next())
    }

    pub fn is_present(&self, name: &str) -> Result<bool> {
        Ok(self.get(name)?.is_some())
    }

    /// The unpacked layer directories of an image, base layer first. For overlayfs's
    /// `lowerdir=` option reverse them (topmost first), or use [`Self::overlay_lowerdir`].
    /// Counts as a use of the image for garbage collection.
    pub fn rootfs_layers(&self, name: &str) -> Result<Vec<PathBuf>> {
        let image = self.get(name)?.ok_or_else(|| ImageError::NotPresent {
            reference: name.to_string(),
        })?;
        let mut dirs = Vec::with_capacity(image.layers.len());
        for layer in &image.layers {
            let dir = self.layer_path(&layer.diff_id)?;
            if !dir.is_dir() {
                return Err(ImageError::Io {
                    path: dir,
                    source: io::Error::new(io::ErrorKind::NotFound, "unpacked layer is missing"),
                });
            }
            dirs.push(dir);
        }
        self.mark_used(&image.name)?;
        Ok(dirs)
    }

    /// `lowerdir=` for overlayfs: the layers topmost first, joined with `:`.
    pub fn overlay_lowerdir(&self, name: &str) -> Result<String> {
        let dirs = self.rootfs_layers(name)?;
        Ok(dirs
            .iter()
            .rev()
            .map(|d| d.display().to_string())
            .collect::<Vec<_>>()
            .join(":"))
    }

    /// Notes that a container started from the image now.
    pub fn mark_used(&self, name: &str) -> Result<()> {
        let now = now();
        self.update_index(|index| {
            if let Some(image) = index.images.get_mut(name) {
                image.last_used = now;
            }
        })
    }

    /// Removes an image by name (or all names of an ID), then deletes the blobs and layers
    /// no other image uses. The caller makes sure no container uses it.
    pub fn remove(&self, name: &str) -> Result<Vec<Image>> {
        let _guard = self.lock_exclusive()?;
        let mut removed = Vec::new();
        self.update_index(|index| {
            for image in find(index, name) {
                index.images.remove(&image.name);
                removed.push(image);
            }
        })?;
        if removed.is_empty() {
            return Err(ImageError::NotPresent {
                reference: name.to_string(),
            });
        }
        self.prune_locked()?;
        Ok(removed)
    }

    /// Deletes blobs and layer directories that no image references. Returns bytes freed
    /// (apparent sizes). Skipped (returns 0) while a pull or import is running.
    pub fn prune(&self) -> Result<u64> {
        match self.try_lock_exclusive()? {
            Some(_guard) => self.prune_locked(),
            None => Ok(0),
        }
    }

    pub(crate) fn prune_locked(&self) -> Result<u64> {
        let index = self.read_index()?;
        let mut blobs = HashSet::new();
        let mut layers = HashSet::new();
        for image in index.images.values() {
            blobs.insert(image.manifest_digest.clone());
            blobs.insert(image.id.clone());
            if let Some(index_digest) = &image.index_digest {
                blobs.insert(index_digest.clone());
            }
            for layer in &image.layers {
                blobs.insert(layer.digest.clone());
                layers.insert(layer.diff_id.clone());
            }
        }
        let mut freed = 0;
        for (dir, keep) in [("blobs/sha256", &blobs), ("layers", &layers)] {
            let dir = self.inner.root.join(dir);
            let entries = fs::read_dir(&dir).map_err(ImageError::io(&dir))?;
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if keep.contains(&format!("sha256:{name}")) {
                    continue;
                }
                let path = entry.path();
                freed += tree_size(&path);
                remove_any(&path).map_err(ImageError::io(&path))?;
            }
        }
        Ok(freed)
    }

    fn read_index(&self) -> Result<IndexFile> {
        let path = self.inner.root.join("index.json");
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| ImageError::Format {
                what: path.display().to_string(),
                message: format!("bad image index: {e}"),
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(IndexFile::default()),
            Err(e) => Err(ImageError::io(path)(e)),
        }
    }

    fn update_index(&self, change: impl FnOnce(&mut IndexFile)) -> Result<()> {
        let _guard = self.flock("index.lock", FlockOperation::LockExclusive)?;
        let mut index = self.read_index()?;
        change(&mut index);
        let path = self.inner.root.join("index.json");
        let tmp = self.tmp_path("index");
        let bytes = serde_json::to_vec_pretty(&index).map_err(|e| ImageError::Format {
            what: path.display().to_string(),
            message: e.to_string(),
        })?;
        fs::write(&tmp, bytes).map_err(ImageError::io(&tmp))?;
        fs::rename(&tmp, &path).map_err(ImageError::io(&path))
    }

    fn flock(&self, name: &str, op: FlockOperation) -> Result<LockGuard> {
        let path = self.inner.root.join(name);
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(ImageError::io(&path))?;
        rustix::fs::flock(&file, op).map_err(|e| ImageError::io(&path)(e.into()))?;
        Ok(LockGuard { _file: file })
    }

    /// Held by pulls and imports while they write blobs and layers.
    pub(crate) fn lock_shared(&self) -> Result<LockGuard> {
        self.flock("store.lock", FlockOperation::LockShared)
    }

    fn lock_exclusive(&self) -> Result<LockGuard> {
        self.flock("store.lock", FlockOperation::LockExclusive)
    }

    pub(crate) fn try_lock_exclusive(&self) -> Result<Option<LockGuard>> {
        match self.flock("store.lock", FlockOperation::NonBlockingLockExclusive) {
            Ok(guard) => Ok(Some(guard)),
            Err(ImageError::Io { source, .. }) if source.kind() == io::ErrorKind::WouldBlock => {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Removes one image record (no pruning): used by garbage collection, which prunes once
    /// per image under its own lock.
    pub(crate) fn forget(&self, name: &str) -> Result<()> {
        self.update_index(|index| {
            index.images.remove(name);
        })
    }
}

/// Images matching a name, an ID or a repo digest.
fn find(index: &IndexFile, name: &str) -> Vec<Image> {
    if let Some(image) = index.images.get(name) {
        return vec![image.clone()];
    }
    if name.starts_with("sha256:") {
        return index
            .images
            .values()
            .filter(|i| i.id == name)
            .cloned()
            .collect();
    }
    if let Ok(normalized) = reference::normalize_name(name) {
        if let Some(image) = index.images.get(&normalized) {
            return vec![image.clone()];
        }
        // `repository@digest`: the index's digest (as `repo_digest` reports) or the
        // platform manifest's.
        if let Some((repository, digest)) = normalized.split_once('@') {
            return index
                .images
                .values()
                .filter(|i| {
                    let (r, d) = i.repo_digest_parts();
                    r == repository && (d == digest || i.manifest_digest == digest)
                })
                .take(1)
                .cloned()
                .collect();
        }
    }
    Vec::new()
}

pub(crate) fn image_from(
    name: &str,
    manifest_digest: &str,
    index_digest: Option<&str>,
    manifest: &Manifest,
    config_bytes: &[u8],
) -> Result<Image> {
    let raw = RawConfig::parse(config_bytes, &manifest.config.digest)?;
    if raw.rootfs.diff_ids.len() != manifest.layers.len() {
        return Err(ImageError::Format {
            what: format!("image {name}"),
            message: format!(
                "manifest has {} layers but config has {} diff_ids",
                manifest.layers.len(),
                raw.rootfs.diff_ids.len()
            ),
        });
    }
    let mut layers = Vec::with_capacity(manifest.layers.len());
    for (descriptor, diff_id) in manifest.layers.iter().zip(&raw.rootfs.diff_ids) {
        hex_of(&descriptor.digest)?;
        hex_of(diff_id)?;
        layers.push(Layer {
            digest: descriptor.digest.clone(),
            diff_id: diff_id.clone(),
            size: descriptor.size,
            media_type: descriptor.media_type.clone(),
        });
    }
    let now = now();
    Ok(Image {
        name: name.to_string(),
        id: manifest.config.digest.clone(),
        manifest_digest: manifest_digest.to_string(),
        index_digest: index_digest.map(str::to_string),
        size: manifest.config.size + layers.iter().map(|l| l.size).sum::<u64>(),
        layers,
        config: raw.image_config(),
        created: now,
        last_used: now,
    })
}

pub(crate) fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn remove_any(path: &Path) -> io::Result<()> {
    let meta = fs::symlink_metadata(path)?;
    if meta.is_dir() {
        remove_tree(path)
    } else {
        fs::remove_file(path)
    }
}

/// Apparent size of a file or directory tree (not following symlinks).
pub(crate) fn tree_size(path: &Path) -> u64 {
    let Ok(meta) = fs::symlink_metadata(path) else {
        return 0;
    };
    if !meta.is_dir() {
        return meta.len();
    }
    let mut total = meta.len();
    if let Ok(entries) = fs::read_dir(path) {
        for entry in entries.flatten() {
            total += tree_size(&entry.path());
        }
    }
    total
}

/// Reads a whole small file with a size cap (manifests, configs from archives).
pub(crate) fn read_capped(path: &Path, cap: u64) -> Result<Vec<u8>> {
    let file = fs::File::open(path).map_err(ImageError::io(path))?;
    let mut bytes = Vec::new();
    file.take(cap + 1)
        .read_to_end(&mut bytes)
        .map_err(ImageError::io(path))?;
    if bytes.len() as u64 > cap {
        return Err(ImageError::Format {
            what: path.display().to_string(),
            message: format!("larger than {cap} bytes"),
        });
    }
    Ok(bytes)
}
