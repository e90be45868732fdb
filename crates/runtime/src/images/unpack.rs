//! Unpacking one layer (a tar, plain, gzip or zstd) into a directory that overlayfs can use as
//! a lower dir: OCI whiteouts (`.wh.<name>`) become 0:0 character devices and opaque
//! directories (`.wh..wh..opq`) get the `trusted.overlay.opaque=y` xattr, which is how
//! overlayfs itself records them. Needs root (mknod, trusted xattrs, ownership).

use std::fs;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Component, Path, PathBuf};

use rustix::fs::{FileType, Mode, XattrFlags};

use super::digest::HashingReader;
use super::{ImageError, Result};

const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE_MARKER: &str = ".wh..wh..opq";
pub(crate) const OPAQUE_XATTR: &str = "trusted.overlay.opaque";

/// How a layer blob is compressed, from its first bytes (media types lie in the wild, and
/// `docker save` archives carry none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    pub fn detect(head: &[u8]) -> Compression {
        if head.starts_with(&[0x1f, 0x8b]) {
            Compression::Gzip
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Compression::Zstd
        } else {
            Compression::None
        }
    }
}

/// A reader of the uncompressed tar stream of a layer blob.
pub(crate) fn decompressed(blob: &Path) -> Result<Box<dyn Read + Send>> {
    let file = fs::File::open(blob).map_err(ImageError::io(blob))?;
    let mut reader = BufReader::with_capacity(256 * 1024, file);
    let head = reader.fill_buf().map_err(ImageError::io(blob))?;
    Ok(match Compression::detect(head) {
        Compression::None => Box::new(reader),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(reader)),
        Compression::Zstd => Box::new(ruzstd::decoding::StreamingDecoder::new(reader).map_err(
            |e| ImageError::Format {
                what: blob.display().to_string(),
                message: format!("bad zstd stream: {e}"),
            },
        )?),
    })
}

/// Unpacks the layer in `blob` into `dest` (an empty directory) and returns the digest of the
/// uncompressed tar (the layer's diff ID).
pub fn unpack_layer(blob: &Path, dest: &Path) -> Result<String> {
    let what = blob.display().to_string();
    let mut hashing = HashingReader::new(decompressed(blob)?);
    unpack_tar(&mut hashing, dest).map_err(|e| match e {
        UnpackError::Io(source) => ImageError::Format {
            what: what.clone(),
            message: format!("unpacking into {}: {source}", dest.display()),
        },
        UnpackError::Unsafe(path) => ImageError::Format {
            what: what.clone(),
            message: format!("entry {path:?} escapes the layer (through .. or a symlink)"),
        },
    })?;
    let (diff_id, _) = hashing.finish().map_err(|e| ImageError::Format {
        what,
        message: format!("reading layer: {e}"),
    })?;
    Ok(diff_id)
}

enum UnpackError {
    Io(io::Error),
    Unsafe(PathBuf),
}

impl From<io::Error> for UnpackError {
    fn from(e: io::Error) -> Self {
        UnpackError::Io(e)
    }
}

impl From<rustix::io::Errno> for UnpackError {
    fn from(e: rustix::io::Errno) -> Self {
        UnpackError::Io(e.into())
    }
}

fn unpack_tar(reader: impl Read, dest: &Path) -> Result<(), UnpackError> {
    let root = rustix::process::geteuid().is_root();
    let mut archive = tar::Archive::new(reader);
    archive.set_preserve_permissions(true);
    archive.set_preserve_ownerships(root);
    archive.set_unpack_xattrs(root);
    archive.set_preserve_mtime(true);
    archive.set_overwrite(true);
    for entry in archive.entries()? {
        let mut entry = entry?;
        let path = entry.path()?.into_owned();
        let Some(relative) = relative_path(&path) else {
            return Err(UnpackError::Unsafe(path));
        };
        let Some(name) = relative.file_name().and_then(|n| n.to_str()) else {
            // The root itself ("./"): only its metadata, which the tar crate applies.
            entry.unpack_in(dest)?;
            continue;
        };
        let parent = relative.parent().unwrap_or(Path::new(""));
        if name == OPAQUE_MARKER {
            let dir = safe_dir(dest, parent).ok_or_else(|| UnpackError::Unsafe(path.clone()))?;
            fs::create_dir_all(&dir)?;
            rustix::fs::lsetxattr(&dir, OPAQUE_XATTR, b"y", XattrFlags::empty())?;
        } else if let Some(hidden) = name.strip_prefix(WHITEOUT_PREFIX) {
            if hidden.is_empty() || hidden == "." || hidden == ".." {
                return Err(UnpackError::Unsafe(path));
            }
            let dir = safe_dir(dest, parent).ok_or_else(|| UnpackError::Unsafe(path.clone()))?;
            fs::create_dir_all(&dir)?;
            let target = dir.join(hidden);
            remove_any(&target)?;
            rustix::fs::mknodat(
                rustix::fs::CWD,
                &target,
                FileType::CharacterDevice,
                Mode::empty(),
                rustix::fs::makedev(0, 0),
            )?;
        } else {
            let kind = entry.header().entry_type();
            if kind.is_character_special() || kind.is_block_special() || kind.is_fifo() {
                // The tar crate writes these as plain files; make the real node.
                let dir =
                    safe_dir(dest, parent).ok_or_else(|| UnpackError::Unsafe(path.clone()))?;
                fs::create_dir_all(&dir)?;
                let target = dir.join(name);
                remove_any(&target)?;
                let header = entry.header();
                let file_type = if kind.is_fifo() {
                    FileType::Fifo
                } else if kind.is_block_special() {
                    FileType::BlockDevice
                } else {
                    FileType::CharacterDevice
                };
                let major = header.device_major()?.unwrap_or(0);
                let minor = header.device_minor()?.unwrap_or(0);
                let mode = Mode::from_bits_truncate(header.mode()? & 0o7777);
                rustix::fs::mknodat(
                    rustix::fs::CWD,
                    &target,
                    file_type,
                    mode,
                    rustix::fs::makedev(major, minor),
                )?;
                if root {
                    let uid = rustix::fs::Uid::from_raw(header.uid()? as u32);
                    let gid = rustix::fs::Gid::from_raw(header.gid()? as u32);
                    rustix::fs::chownat(
                        rustix::fs::CWD,
                        &target,
                        Some(uid),
                        Some(gid),
                        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
                    )?;
                }
            } else if !entry.unpack_in(dest)? {
                return Err(UnpackError::Unsafe(path));
            }
        }
    }
    Ok(())
}

/// The entry's path relative to the layer root, or None if it climbs out with `..`.
fn relative_path(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(part) => out.push(part),
            Component::CurDir | Component::RootDir => {}
            Component::ParentDir | Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

/// `dest/parent`, unless one of its existing components is a symlink (which could point
/// outside the layer).
fn safe_dir(dest: &Path, parent: &Path) -> Option<PathBuf> {
    let mut dir = dest.to_path_buf();
    for part in parent.components() {
        dir.push(part);
        match fs::symlink_metadata(&dir) {
            Ok(meta) if meta.file_type().is_symlink() => return None,
            Ok(meta) if !meta.is_dir() => return None,
            _ => {}
        }
    }
    Some(dir)
}

fn remove_any(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Removes a directory tree even if parts of it are read-only (as unpacked layers can be).
pub(crate) fn remove_tree(path: &Path) -> io::Result<()> {
    match fs::remove_dir_all(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;
    use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _};

    fn tar_with(entries: &[(&str, tar::EntryType, &[u8], Option<&str>)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, kind, data, link) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(*kind);
            h.set_mode(if kind.is_dir() { 0o755 } else { 0o644 });
            h.set_size(data.len() as u64);
            h.set_uid(0);
            h.set_gid(0);
            if let Some(link) = link {
                h.set_link_name(link).unwrap();
            }
            // Paths go in raw so that the tests can write ones the builder would refuse.
            let name = path.as_bytes();
            h.as_old_mut().name[..name.len()].copy_from_slice(name);
            h.set_cksum();
            b.append(&h, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    fn is_root() -> bool {
        rustix::process::geteuid().is_root()
    }

    fn write_blob(dir: &Path, bytes: &[u8], compression: Compression) -> PathBuf {
        let path = dir.join("blob");
        let data = match compression {
            Compression::None => bytes.to_vec(),
            Compression::Gzip => {
                let mut enc =
                    flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                enc.write_all(bytes).unwrap();
                enc.finish().unwrap()
            }
            Compression::Zstd => ruzstd::encoding::compress_to_vec(
                bytes,
                ruzstd::encoding::CompressionLevel::Fastest,
            ),
        };
        fs::write(&path, data).unwrap();
        path
    }

    #[test]
    fn whiteouts_and_opaque_dirs_become_overlayfs_form() {
        if !is_root() {
            eprintln!("skipped: needs root for mknod and trusted xattrs");
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let tar = tar_with(&[
            ("etc/", tar::EntryType::Directory, b"", None),
            ("etc/.wh.motd", tar::EntryType::Regular, b"", None),
            ("var/lib/", tar::EntryType::Directory, b"", None),
            ("var/lib/.wh..wh..opq", tar::EntryType::Regular, b"", None),
            ("var/lib/new", tar::EntryType::Regular, b"hello", None),
            ("bin/", tar::EntryType::Directory, b"", None),
            ("bin/sh", tar::EntryType::Regular, b"#!", None),
            ("bin/ash", tar::EntryType::Link, b"", Some("bin/sh")),
            ("bin/ls", tar::EntryType::Symlink, b"", Some("busybox")),
        ]);
        for compression in [Compression::None, Compression::Gzip, Compression::Zstd] {
            let dest = tmp.path().join(format!("{compression:?}"));
            fs::create_dir(&dest).unwrap();
            let blob = write_blob(tmp.path(), &tar, compression);
            let diff_id = unpack_layer(&blob, &dest).unwrap();
            assert_eq!(
                diff_id,
                super::super::digest::sha256_of(&tar),
                "{compression:?}"
            );

            let wh = fs::symlink_metadata(dest.join("etc/motd")).unwrap();
            assert!(wh.file_type().is_char_device());
            assert_eq!(wh.rdev(), 0);
            assert!(!dest.join("etc/.wh.motd").exists());
            let opq = rustix::fs::lgetxattr(dest.join("var/lib"), OPAQUE_XATTR, &mut [0u8; 8]);
            assert_eq!(opq.unwrap(), 1);
            assert!(!dest.join("var/lib/.wh..wh..opq").exists());
            assert_eq!(fs::read(dest.join("var/lib/new")).unwrap(), b"hello");
            let (sh, ash) = (
                fs::metadata(dest.join("bin/sh")).unwrap(),
                fs::metadata(dest.join("bin/ash")).unwrap(),
            );
            assert_eq!(sh.ino(), ash.ino(), "hard link kept");
            assert_eq!(
                fs::read_link(dest.join("bin/ls")).unwrap(),
                Path::new("busybox")
            );
        }
    }

    #[test]
    fn entries_escaping_the_layer_are_refused() {
        if !is_root() {
            eprintln!("skipped: needs root");
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let outside = tmp.path().join("outside");
        fs::create_dir(&outside).unwrap();
        let cases: Vec<Vec<u8>> = vec![
            tar_with(&[("../evil", tar::EntryType::Regular, b"x", None)]),
            tar_with(&[
                (
                    "link",
                    tar::EntryType::Symlink,
                    b"",
                    Some(outside.to_str().unwrap()),
                ),
                ("link/.wh.x", tar::EntryType::Regular, b"", None),
            ]),
            tar_with(&[
                (
                    "link",
                    tar::EntryType::Symlink,
                    b"",
                    Some(outside.to_str().unwrap()),
                ),
                ("link/file", tar::EntryType::Regular, b"x", None),
            ]),
        ];
        for (i, tar) in cases.iter().enumerate() {
            let dest = tmp.path().join(format!("case{i}"));
            fs::create_dir(&dest).unwrap();
            let blob = write_blob(tmp.path(), tar, Compression::None);
            let err = unpack_layer(&blob, &dest).unwrap_err();
            assert!(matches!(err, ImageError::Format { .. }), "case {i}: {err}");
        }
        assert_eq!(
            fs::read_dir(&outside).unwrap().count(),
            0,
            "nothing written outside"
        );
        assert!(!tmp.path().join("evil").exists());
    }

    #[test]
    fn compression_is_detected_from_magic_bytes() {
        assert_eq!(Compression::detect(&[0x1f, 0x8b, 8]), Compression::Gzip);
        assert_eq!(
            Compression::detect(&[0x28, 0xb5, 0x2f, 0xfd]),
            Compression::Zstd
        );
        assert_eq!(Compression::detect(b"bin/\0\0"), Compression::None);
    }
}
