//! sha256 content digests (`sha256:<64 hex>`), the only algorithm registries use in practice.

use std::io::{self, Read};

use sha2::{Digest as _, Sha256};

use super::{ImageError, Result};

/// The hex part of a `sha256:<hex>` digest, checked so that it is safe as a file name.
pub(crate) fn hex_of(digest: &str) -> Result<&str> {
    let hex = digest
        .strip_prefix("sha256:")
        .ok_or_else(|| ImageError::Format {
            what: format!("digest {digest:?}"),
            message: "only sha256 digests are supported".into(),
        })?;
    if hex.len() != 64 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(ImageError::Format {
            what: format!("digest {digest:?}"),
            message: "expected 64 lower-case hex digits after sha256:".into(),
        });
    }
    Ok(hex)
}

pub(crate) fn sha256_of(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// Incremental sha256 that renders as a `sha256:<hex>` digest.
#[derive(Default)]
pub(crate) struct Hasher(Sha256);

impl Hasher {
    pub(crate) fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    pub(crate) fn finish(self) -> String {
        format!("sha256:{}", hex::encode(self.0.finalize()))
    }
}

/// A reader that hashes and counts what passes through it.
pub(crate) struct HashingReader<R> {
    inner: R,
    hasher: Hasher,
    count: u64,
}

impl<R: Read> HashingReader<R> {
    pub(crate) fn new(inner: R) -> Self {
        Self {
            inner,
            hasher: Hasher::default(),
            count: 0,
        }
    }

    /// Reads the rest (tar readers stop at the end-of-archive marker, before any padding)
    /// and returns the digest and size of everything.
    pub(crate) fn finish(mut self) -> io::Result<(String, u64)> {
        io::copy(&mut self, &mut io::sink())?;
        Ok((self.hasher.finish(), self.count))
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_of_accepts_only_sha256() {
        let d = sha256_of(b"abc");
        assert_eq!(
            d,
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(hex_of(&d).unwrap().len(), 64);
        assert!(hex_of("sha512:abcd").is_err());
        assert!(hex_of("sha256:../../etc/passwd").is_err());
        assert!(hex_of(&d.to_uppercase().replace("SHA256", "sha256")).is_err());
    }

    #[test]
    fn hashing_reader_hashes_everything_including_unread_rest() {
        let data = vec![7u8; 10_000];
        let mut r = HashingReader::new(&data[..]);
        let mut first = [0u8; 100];
        r.read_exact(&mut first).unwrap();
        let (digest, n) = r.finish().unwrap();
        assert_eq!(n, 10_000);
        assert_eq!(digest, sha256_of(&data));
    }
}
