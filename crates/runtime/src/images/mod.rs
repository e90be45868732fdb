//! OCI images: pulled over the OCI distribution protocol (or imported from a tarball) into a
//! content-addressed store, layers unpacked once into directories that overlayfs stacks.
//!
//! - [`reference`]: image names as Docker Hub spells them, and `imagePullPolicy`.
//! - [`registries`]: k3s's `registries.yaml` (mirrors, rewrites, auth, TLS) and the
//!   credentials of `imagePullSecrets` (dockerconfigjson).
//! - [`store`]: [`ImageStore`]: blobs verified by digest, the image index, unpacked layers,
//!   `rootfs_layers`, list/remove, garbage collection at disk thresholds.
//! - [`pull`]: pulling from registries with progress reports.
//! - [`import`]: `docker save` archives and OCI layout tarballs.
//! - [`unpack`]: layer tar extraction with OCI whiteouts turned into overlayfs ones.
//!
//! Layout under the store's root (`<data-dir>/images/`):
//! ```text
//! blobs/sha256/<hex>     manifests, configs and compressed layers, named by their digest
//! layers/<diff-id hex>/  one unpacked layer (an overlayfs lower dir), shared between images
//! index.json             image name -> manifest digest, config, layers
//! tmp/                   downloads and unpacks in progress (never read from)
//! ```

pub mod config;
pub mod gc;
pub mod import;
pub mod pull;
pub mod reference;
pub mod registries;
pub mod store;
pub mod unpack;

mod digest;
mod manifest;

pub use config::ImageConfig;
pub use gc::{DiskStats, DiskUsage, FsDiskUsage, GcPolicy, GcReport};
pub use pull::{PullOptions, PullProgress};
pub use reference::{PullPolicy, normalize_name};
pub use registries::{Credential, Credentials, RegistryConfig};
pub use store::{Image, ImageStore, Layer};

use std::path::PathBuf;

/// Everything that can go wrong with images. The kubelet maps these onto the container's
/// waiting reason with [`ImageError::reason`].
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("invalid image name {reference:?}: {message}")]
    InvalidReference { reference: String, message: String },
    /// The registry has no such repository, tag or digest.
    #[error("{reference}: not found: {message}")]
    NotFound { reference: String, message: String },
    /// The registry refused our credentials (or wants some).
    #[error("{reference}: unauthorized at {endpoint}: {message}")]
    Unauthorized {
        reference: String,
        endpoint: String,
        message: String,
    },
    /// The registry could not be reached or answered with a server error.
    #[error("{reference}: cannot reach {endpoint}: {message}")]
    Network {
        reference: String,
        endpoint: String,
        message: String,
    },
    /// Content did not hash to the digest that names it; nothing of it was kept.
    #[error("{what}: digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch {
        what: String,
        expected: String,
        actual: String,
    },
    /// A manifest, index, config or media type we cannot use (e.g. no linux/amd64 image).
    #[error("{reference}: unsupported image: {message}")]
    Unsupported { reference: String, message: String },
    /// The image is not in the store (e.g. with pull policy Never).
    #[error("image {reference:?} is not present on this node")]
    NotPresent { reference: String },
    /// Malformed content: a manifest, config or archive that does not parse.
    #[error("{what}: {message}")]
    Format { what: String, message: String },
    #[error("registry configuration {path}: {message}")]
    RegistryConfig { path: PathBuf, message: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl ImageError {
    /// The container waiting reason upstream's kubelet gives for this error
    /// (`ImagePullBackOff` follows `ErrImagePull` on retries; that is the kubelet's business).
    pub fn reason(&self) -> &'static str {
        match self {
            ImageError::InvalidReference { .. } => "InvalidImageName",
            ImageError::NotPresent { .. } => "ErrImageNeverPull",
            _ => "ErrImagePull",
        }
    }

    /// Whether trying again later could succeed (network trouble) rather than the same answer.
    pub fn is_transient(&self) -> bool {
        matches!(self, ImageError::Network { .. } | ImageError::Io { .. })
    }

    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> ImageError {
        let path = path.into();
        move |source| ImageError::Io { path, source }
    }
}

pub type Result<T, E = ImageError> = std::result::Result<T, E>;
