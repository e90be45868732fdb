//! Importing images from tarballs, for nodes without a registry: `docker save` archives
//! (`manifest.json` plus layer tars) and OCI image layouts (`oci-layout`, `index.json`,
//! `blobs/`), plain or gzip/zstd compressed.

use std::fs;
use std::path::{Path, PathBuf};

use super::digest::{HashingReader, hex_of};
use super::manifest::{
    DOCKER_CONFIG, DOCKER_LAYER_GZIP, DOCKER_LAYER_TAR, DOCKER_MANIFEST, Descriptor, Document,
    Manifest, host_architecture, parse_document, select_platform,
};
use super::reference;
use super::store::{Image, ImageStore, read_capped};
use super::unpack::{Compression, decompressed, remove_tree};
use super::{ImageError, Result};

const MAX_JSON: u64 = 8 * 1024 * 1024;

/// `docker save`'s `manifest.json` entries.
#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerArchiveEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

impl ImageStore {
    /// Imports every image of an archive. `name` names the image when the archive does not
    /// (an OCI layout whose `org.opencontainers.image.ref.name` is only a tag, or none), and
    /// replaces the archive's names for a single-image archive.
    pub fn import(&self, file: &Path, name: Option<&str>) -> Result<Vec<Image>> {
        let _guard = self.lock_shared()?;
        let dir = self.tmp_path("import");
        fs::create_dir(&dir).map_err(ImageError::io(&dir))?;
        let result = self.import_unpacked(file, &dir, name);
        let _ = remove_tree(&dir);
        result
    }

    fn import_unpacked(&self, file: &Path, dir: &Path, name: Option<&str>) -> Result<Vec<Image>> {
        let what = file.display().to_string();
        let mut archive = tar::Archive::new(decompressed(file)?);
        archive.set_preserve_permissions(false);
        archive.set_preserve_ownerships(false);
        archive.set_unpack_xattrs(false);
        archive.unpack(dir).map_err(|e| ImageError::Format {
            what: what.clone(),
            message: format!("not a readable tar archive: {e}"),
        })?;
        let images = if dir.join("manifest.json").is_file() {
            self.import_docker_archive(dir, &what, name)?
        } else if dir.join("index.json").is_file() {
            self.import_oci_layout(dir, &what, name)?
        } else {
            return Err(ImageError::Format {
                what,
                message: "neither a docker archive (manifest.json) nor an OCI layout (index.json)"
                    .into(),
            });
        };
        if images.is_empty() {
            return Err(ImageError::Format {
                what,
                message: "no images in the archive".into(),
            });
        }
        Ok(images)
    }

    fn import_docker_archive(
        &self,
        dir: &Path,
        what: &str,
        name: Option<&str>,
    ) -> Result<Vec<Image>> {
        let bytes = read_capped(&dir.join("manifest.json"), MAX_JSON)?;
        let entries: Vec<DockerArchiveEntry> =
            serde_json::from_slice(&bytes).map_err(|e| ImageError::Format {
                what: format!("{what}: manifest.json"),
                message: e.to_string(),
            })?;
        let single = entries.len() == 1;
        let mut images = Vec::new();
        for entry in entries {
            let config_path = inside(dir, &entry.config, what)?;
            let config_bytes = read_capped(&config_path, MAX_JSON)?;
            let config_digest = self.put_blob(&config_bytes, None, what)?;
            let mut layers = Vec::new();
            for layer in &entry.layers {
                let path = inside(dir, layer, what)?;
                let (digest, size, compression) = self.store_file_blob(&path, None, what)?;
                layers.push(Descriptor {
                    media_type: match compression {
                        Compression::None => DOCKER_LAYER_TAR.into(),
                        Compression::Gzip => DOCKER_LAYER_GZIP.into(),
                        Compression::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd".into(),
                    },
                    digest,
                    size,
                    ..Descriptor::default()
                });
            }
            let manifest = Manifest {
                schema_version: 2,
                media_type: Some(DOCKER_MANIFEST.into()),
                config: Descriptor {
                    media_type: DOCKER_CONFIG.into(),
                    digest: config_digest.clone(),
                    size: config_bytes.len() as u64,
                    ..Descriptor::default()
                },
                layers,
            };
            let manifest_bytes = serde_json::to_vec(&manifest).map_err(|e| ImageError::Format {
                what: what.to_string(),
                message: e.to_string(),
            })?;
            let manifest_digest = self.put_blob(&manifest_bytes, None, what)?;
            let names = match (name, entry.repo_tags.unwrap_or_default()) {
                (Some(name), _) if single => vec![name.to_string()],
                (_, tags) if !tags.is_empty() => tags,
                (Some(name), _) => vec![name.to_string()],
                (None, _) => {
                    return Err(ImageError::Format {
                        what: what.to_string(),
                        message: format!("image {config_digest} has no RepoTags: give it a name"),
                    });
                }
            };
            for n in names {
                images.push(self.finish_import(&n, &manifest_digest, None)?);
            }
        }
        Ok(images)
    }

    fn import_oci_layout(&self, dir: &Path, what: &str, name: Option<&str>) -> Result<Vec<Image>> {
        let bytes = read_capped(&dir.join("index.json"), MAX_JSON)?;
        let Document::Index(index) =
            parse_document(&bytes, Some(super::manifest::OCI_INDEX), what)?
        else {
            unreachable!("parse_document with an index media type gives an index")
        };
        let single = index.manifests.len() == 1;
        let mut images = Vec::new();
        for descriptor in &index.manifests {
            let annotations = descriptor.annotations.clone().unwrap_or_default();
            let ref_name = annotations.get("org.opencontainers.image.ref.name");
            let full = annotations
                .get("io.containerd.image.name")
                .cloned()
                .or_else(|| ref_name.filter(|r| looks_like_full_name(r)).cloned());
            let image_name = match (name, full, ref_name) {
                (Some(name), _, _) if single => name.to_string(),
                (_, Some(full), _) => full,
                (Some(name), None, Some(tag)) => format!("{}:{tag}", strip_tag(name)),
                (Some(name), None, None) => name.to_string(),
                (None, None, _) => {
                    return Err(ImageError::Format {
                        what: what.to_string(),
                        message: format!(
                            "image {} has no full name in the layout (ref.name {:?}): give it a name",
                            descriptor.digest,
                            ref_name.map(String::as_str).unwrap_or("")
                        ),
                    });
                }
            };
            let mut manifest_descriptor = descriptor.clone();
            let mut index_digest = None;
            let bytes = self.copy_layout_blob(dir, descriptor, what)?;
            if let Document::Index(nested) =
                parse_document(&bytes, Some(&descriptor.media_type), what)?
            {
                index_digest = Some(descriptor.digest.clone());
                manifest_descriptor = select_platform(&nested, host_architecture())
                    .cloned()
                    .ok_or_else(|| ImageError::Unsupported {
                        reference: image_name.clone(),
                        message: format!("no linux/{} image in its index", host_architecture()),
                    })?;
                self.copy_layout_blob(dir, &manifest_descriptor, what)?;
            }
            let bytes = self.read_blob(&manifest_descriptor.digest)?;
            let Document::Manifest(manifest) =
                parse_document(&bytes, Some(&manifest_descriptor.media_type), what)?
            else {
                return Err(ImageError::Unsupported {
                    reference: image_name,
                    message: "nested image indexes".into(),
                });
            };
            self.copy_layout_blob(dir, &manifest.config, what)?;
            for layer in &manifest.layers {
                self.copy_layout_blob(dir, layer, what)?;
            }
            images.push(self.finish_import(
                &image_name,
                &manifest_descriptor.digest,
                index_digest.as_deref(),
            )?);
        }
        Ok(images)
    }

    /// Copies `blobs/sha256/<hex>` of a layout into the store, verified; returns small blobs'
    /// bytes (manifests), empty for others.
    fn copy_layout_blob(&self, dir: &Path, descriptor: &Descriptor, what: &str) -> Result<Vec<u8>> {
        let hex = hex_of(&descriptor.digest)?;
        let path = dir.join("blobs/sha256").join(hex);
        self.store_file_blob(&path, Some(&descriptor.digest), what)?;
        if descriptor.size <= MAX_JSON && !is_layer(&descriptor.media_type) {
            self.read_blob(&descriptor.digest)
        } else {
            Ok(Vec::new())
        }
    }

    /// Moves a file of the unpacked archive into the blob store, checking `expected`.
    fn store_file_blob(
        &self,
        path: &Path,
        expected: Option<&str>,
        what: &str,
    ) -> Result<(String, u64, Compression)> {
        let file = fs::File::open(path).map_err(ImageError::io(path))?;
        let mut head = [0u8; 4];
        let n = std::io::Read::read(&mut &file, &mut head).map_err(ImageError::io(path))?;
        let compression = Compression::detect(&head[..n]);
        let file = fs::File::open(path).map_err(ImageError::io(path))?;
        let (digest, size) = HashingReader::new(file)
            .finish()
            .map_err(ImageError::io(path))?;
        if let Some(expected) = expected
            && expected != digest
        {
            return Err(ImageError::DigestMismatch {
                what: format!("{what}: {}", path.display()),
                expected: expected.to_string(),
                actual: digest,
            });
        }
        if !self.has_blob(&digest) {
            let target = self.blob_path(&digest)?;
            // Same filesystem (both under the store root): a link, no copy; the archive may
            // name one file twice, so the source stays.
            if fs::hard_link(path, &target).is_err() {
                fs::copy(path, &target).map_err(ImageError::io(&target))?;
            }
        }
        Ok((digest, size, compression))
    }

    fn finish_import(
        &self,
        name: &str,
        manifest_digest: &str,
        index_digest: Option<&str>,
    ) -> Result<Image> {
        let full_name = reference::normalize_name(name)?;
        let image = self.describe(&full_name, manifest_digest, index_digest)?;
        for layer in &image.layers {
            self.ensure_layer(&layer.digest, &layer.diff_id)?;
        }
        self.record(&image)?;
        Ok(image)
    }
}

fn is_layer(media_type: &str) -> bool {
    media_type.contains(".layer.") || media_type.contains("rootfs.diff")
}

/// A `ref.name` that is a whole image name (`docker.io/library/busybox:1.36`, `busybox:1.36`)
/// rather than a bare tag (`1.36`, `latest`).
fn looks_like_full_name(s: &str) -> bool {
    s.contains('/') || s.contains(':') || s.contains('@')
}

fn strip_tag(name: &str) -> &str {
    let slash = name.rfind('/').map_or(0, |i| i + 1);
    match name[slash..].find(':') {
        Some(i) => &name[..slash + i],
        None => name,
    }
}

/// A path named inside the archive, refused if it climbs out of it.
fn inside(dir: &Path, relative: &str, what: &str) -> Result<PathBuf> {
    let rel = Path::new(relative);
    if rel.is_absolute()
        || rel
            .components()
            .any(|c| matches!(c, std::path::Component::ParentDir))
    {
        return Err(ImageError::Format {
            what: what.to_string(),
            message: format!("path {relative:?} points outside the archive"),
        });
    }
    // Archives may hold symlinks (older `docker save` links repeated layers): follow them,
    // but only within the archive.
    let path = dir.join(rel);
    let real = path.canonicalize().map_err(ImageError::io(&path))?;
    let root = dir.canonicalize().map_err(ImageError::io(dir))?;
    if !real.starts_with(&root) {
        return Err(ImageError::Format {
            what: what.to_string(),
            message: format!("path {relative:?} points outside the archive"),
        });
    }
    Ok(real)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_in_layouts() {
        assert!(looks_like_full_name("busybox:1.36"));
        assert!(looks_like_full_name("docker.io/library/busybox"));
        assert!(!looks_like_full_name("1.36"));
        assert_eq!(strip_tag("127.0.0.1:5000/web:1.0"), "127.0.0.1:5000/web");
        assert_eq!(strip_tag("127.0.0.1:5000/web"), "127.0.0.1:5000/web");
        assert_eq!(strip_tag("busybox:1"), "busybox");
        assert!(inside(Path::new("/x"), "../etc/passwd", "a").is_err());
        assert!(inside(Path::new("/x"), "/etc/passwd", "a").is_err());
        let tmp = tempfile::tempdir().unwrap();
        fs::create_dir(tmp.path().join("abc")).unwrap();
        fs::write(tmp.path().join("abc/layer.tar"), b"x").unwrap();
        std::os::unix::fs::symlink("/etc/hostname", tmp.path().join("abc/evil.tar")).unwrap();
        assert!(
            inside(tmp.path(), "abc/layer.tar", "a")
                .unwrap()
                .ends_with("abc/layer.tar")
        );
        assert!(inside(tmp.path(), "abc/evil.tar", "a").is_err());
    }
}
