//! Pulling images over the OCI distribution protocol with the `oci-client` crate (which does
//! the HTTP, the bearer-token and basic auth challenges and the registry error bodies).
//! Everything it fetches is verified here again by digest before it enters the store.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt as _;
use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::manifest::OciDescriptor;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use tokio::io::AsyncWriteExt as _;

use super::digest::{Hasher, sha256_of};
use super::manifest::{
    ACCEPTED, Descriptor, Document, host_architecture, parse_document, select_platform,
};
use super::reference::{self, PullPolicy};
use super::registries::{Credentials, Endpoint, RegistryConfig};
use super::store::{Image, ImageStore};
use super::{ImageError, Result};

/// What a pull reports while it runs (for `Pulling`/`Pulled` events and `rkube images pull`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PullProgress {
    /// Asking an endpoint for the manifest.
    Resolving { endpoint: String },
    /// The manifest is known: this many layers, of these compressed bytes in total.
    Resolved {
        endpoint: String,
        manifest_digest: String,
        layers: usize,
        total_bytes: u64,
    },
    /// Bytes of one layer downloaded so far.
    Layer {
        digest: String,
        done: u64,
        total: u64,
    },
    /// A layer that is already in the store (no download).
    LayerExists { digest: String, size: u64 },
    /// A layer was unpacked now (`reused: false`) or was already unpacked for another image.
    Unpacked { diff_id: String, reused: bool },
}

pub type ProgressFn = Arc<dyn Fn(PullProgress) + Send + Sync>;

/// Per-pull settings from the pod.
#[derive(Debug, Clone, Default)]
pub struct PullOptions {
    /// From the pod's `imagePullSecrets` (and the service account's).
    pub credentials: Credentials,
}

/// Pulls images into a store, with a registry configuration. Keeps one HTTP client per
/// endpoint and credential so that connections and bearer tokens are reused.
pub struct Puller {
    config: RegistryConfig,
    clients: Mutex<HashMap<String, Client>>,
    architecture: String,
}

/// Download progress is reported at most this often (in bytes) per layer.
const PROGRESS_STEP: u64 = 512 * 1024;

impl Puller {
    pub fn new(config: RegistryConfig) -> Puller {
        // reqwest is built without a crypto provider of its own: use ring, like the rest of
        // the workspace. Fails harmlessly if a provider is installed already.
        let _ = rustls::crypto::ring::default_provider().install_default();
        Puller {
            config,
            clients: Mutex::new(HashMap::new()),
            architecture: host_architecture().to_string(),
        }
    }

    pub fn config(&self) -> &RegistryConfig {
        &self.config
    }

    /// The kubelet's entry point: applies `imagePullPolicy`, pulling only when needed.
    pub async fn ensure_image(
        &self,
        store: &ImageStore,
        name: &str,
        policy: PullPolicy,
        options: &PullOptions,
        progress: ProgressFn,
    ) -> Result<Image> {
        let present = {
            let store = store.clone();
            let name = name.to_string();
            blocking(move || store.get(&name)).await?
        };
        match (policy.should_pull(present.is_some()), present) {
            (false, Some(image)) => Ok(image),
            (false, None) => Err(ImageError::NotPresent {
                reference: name.to_string(),
            }),
            (true, _) => self.pull(store, name, options, progress).await,
        }
    }

    /// Pulls `name` into `store` from the first endpoint that has it, and returns the image.
    pub async fn pull(
        &self,
        store: &ImageStore,
        name: &str,
        options: &PullOptions,
        progress: ProgressFn,
    ) -> Result<Image> {
        let reference = reference::parse(name)?;
        let full_name = reference::full_name(&reference);
        let _guard = {
            let store = store.clone();
            blocking(move || store.lock_shared()).await?
        };
        let mut best: Option<ImageError> = None;
        for endpoint in self
            .config
            .endpoints(reference.registry(), reference.repository())
        {
            match self
                .pull_from(store, &reference, &full_name, &endpoint, options, &progress)
                .await
            {
                Ok(image) => return Ok(image),
                Err(e) => {
                    tracing::debug!(image = %full_name, endpoint = %endpoint.url(), error = %e, "pull attempt failed");
                    if best.as_ref().is_none_or(|b| rank(&e) > rank(b)) {
                        best = Some(e);
                    }
                }
            }
        }
        Err(best.unwrap_or_else(|| ImageError::NotFound {
            reference: full_name,
            message: "no registry endpoint to pull from".into(),
        }))
    }

    async fn pull_from(
        &self,
        store: &ImageStore,
        reference: &Reference,
        full_name: &str,
        endpoint: &Endpoint,
        options: &PullOptions,
        progress: &ProgressFn,
    ) -> Result<Image> {
        progress(PullProgress::Resolving {
            endpoint: endpoint.url(),
        });
        let auth = self.auth_for(endpoint, reference.registry(), options);
        let client = self.client_for(endpoint, reference.registry(), &auth)?;
        let mut remote = match reference.digest() {
            Some(digest) => Reference::with_digest(
                reference.registry().to_string(),
                endpoint.repository.clone(),
                digest.to_string(),
            ),
            None => Reference::with_tag(
                reference.registry().to_string(),
                endpoint.repository.clone(),
                reference.tag().unwrap_or("latest").to_string(),
            ),
        };
        if endpoint.host != reference.registry() {
            remote.set_mirror_registry(endpoint.host.clone());
        }
        let ctx = Ctx {
            full_name,
            endpoint: endpoint.url(),
        };

        let (bytes, _) = client
            .pull_manifest_raw(&remote, &auth, ACCEPTED)
            .await
            .map_err(|e| ctx.error(e))?;
        let mut digest = sha256_of(&bytes);
        if let Some(wanted) = reference.digest()
            && wanted != digest
        {
            return Err(ImageError::DigestMismatch {
                what: format!("manifest of {full_name}"),
                expected: wanted.to_string(),
                actual: digest,
            });
        }
        let mut index_digest = None;
        let manifest = match parse_document(&bytes, None, full_name)? {
            Document::Manifest(m) => {
                store.put_blob(&bytes, Some(&digest), full_name)?;
                m
            }
            Document::Index(index) => {
                let chosen = select_platform(&index, &self.architecture).ok_or_else(|| {
                    ImageError::Unsupported {
                        reference: full_name.to_string(),
                        message: format!("no linux/{} image in its index", self.architecture),
                    }
                })?;
                store.put_blob(&bytes, Some(&digest), full_name)?;
                index_digest = Some(digest);
                let by_digest = remote.clone_with_digest(chosen.digest.clone());
                let (bytes, _) = client
                    .pull_manifest_raw(&by_digest, &auth, ACCEPTED)
                    .await
                    .map_err(|e| ctx.error(e))?;
                digest = store.put_blob(&bytes, Some(&chosen.digest), full_name)?;
                match parse_document(&bytes, Some(&chosen.media_type), full_name)? {
                    Document::Manifest(m) => m,
                    Document::Index(_) => {
                        return Err(ImageError::Unsupported {
                            reference: full_name.to_string(),
                            message: "nested image indexes".into(),
                        });
                    }
                }
            }
        };
        progress(PullProgress::Resolved {
            endpoint: endpoint.url(),
            manifest_digest: digest.clone(),
            layers: manifest.layers.len(),
            total_bytes: manifest.layers.iter().map(|l| l.size).sum(),
        });

        if !store.has_blob(&manifest.config.digest) {
            fetch_blob(&client, &remote, &manifest.config, store, &ctx, None).await?;
        }
        let config_bytes = store.read_blob(&manifest.config.digest)?;
        let image = super::store::image_from(
            full_name,
            &digest,
            index_digest.as_deref(),
            &manifest,
            &config_bytes,
        )?;

        // Download the layers not yet here, a few at a time.
        let downloads = futures::stream::iter(manifest.layers.iter().zip(&image.layers))
            .map(|(descriptor, layer)| {
                let (client, remote, ctx, progress) = (&client, &remote, &ctx, progress);
                async move {
                    if store.has_layer(&layer.diff_id) || store.has_blob(&descriptor.digest) {
                        progress(PullProgress::LayerExists {
                            digest: descriptor.digest.clone(),
                            size: descriptor.size,
                        });
                        return Ok(());
                    }
                    fetch_blob(client, remote, descriptor, store, ctx, Some(progress)).await
                }
            })
            .buffer_unordered(3)
            .collect::<Vec<Result<()>>>()
            .await;
        downloads.into_iter().collect::<Result<()>>()?;

        for layer in &image.layers {
            let (s, digest, diff_id) = (store.clone(), layer.digest.clone(), layer.diff_id.clone());
            let unpacked = blocking(move || s.ensure_layer(&digest, &diff_id)).await?;
            progress(PullProgress::Unpacked {
                diff_id: layer.diff_id.clone(),
                reused: !unpacked,
            });
        }
        let (s, record) = (store.clone(), image.clone());
        blocking(move || s.record(&record)).await?;
        Ok(image)
    }

    fn auth_for(&self, endpoint: &Endpoint, registry: &str, options: &PullOptions) -> RegistryAuth {
        let credential = self
            .config
            .auth_for(endpoint, registry)
            .or_else(|| options.credentials.lookup(&endpoint.host).cloned())
            .or_else(|| {
                // Pull secrets name the image's registry; send them to its own endpoint only,
                // never to a mirror.
                endpoint
                    .is_default
                    .then(|| options.credentials.lookup(registry).cloned())
                    .flatten()
            });
        match credential {
            Some(c) if !c.username.is_empty() => RegistryAuth::Basic(c.username, c.password),
            // An identity token is exchanged at the token endpoint like a password.
            Some(c) => RegistryAuth::Basic("<token>".into(), c.identity_token),
            None => RegistryAuth::Anonymous,
        }
    }

    fn client_for(
        &self,
        endpoint: &Endpoint,
        registry: &str,
        auth: &RegistryAuth,
    ) -> Result<Client> {
        let auth_key = match auth {
            RegistryAuth::Anonymous => String::new(),
            RegistryAuth::Basic(u, p) => sha256_of(format!("{u}:{p}").as_bytes()),
            RegistryAuth::Bearer(t) => sha256_of(t.as_bytes()),
        };
        let key = format!("{} {auth_key}", endpoint.url());
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(client) = clients.get(&key) {
            return Ok(client.clone());
        }
        let tls = self
            .config
            .host_config(endpoint, registry)
            .and_then(|c| c.tls.clone())
            .unwrap_or_default();
        let mut extra_root_certificates = Vec::new();
        if let Some(ca) = &tls.ca_file {
            let data = std::fs::read(ca).map_err(ImageError::io(ca))?;
            extra_root_certificates.push(Certificate {
                encoding: CertificateEncoding::Pem,
                data,
            });
        }
        if tls.cert_file.is_some() || tls.key_file.is_some() {
            tracing::warn!(endpoint = %endpoint.url(), "registry client certificates (tls.cert_file, tls.key_file) are not supported; connecting without one");
        }
        let config = ClientConfig {
            protocol: if endpoint.scheme == "http" {
                ClientProtocol::Http
            } else {
                ClientProtocol::Https
            },
            accept_invalid_certificates: tls.insecure_skip_verify,
            extra_root_certificates,
            // We pick the platform ourselves (see select_platform).
            platform_resolver: None,
            connect_timeout: Some(Duration::from_secs(10)),
            read_timeout: Some(Duration::from_secs(60)),
            user_agent: concat!("rkube/", env!("CARGO_PKG_VERSION")),
            ..ClientConfig::default()
        };
        let client = Client::try_from(config).map_err(|e| ImageError::Network {
            reference: registry.to_string(),
            endpoint: endpoint.url(),
            message: format!("creating the HTTP client: {e}"),
        })?;
        clients.insert(key, client.clone());
        Ok(client)
    }
}

struct Ctx<'a> {
    full_name: &'a str,
    endpoint: String,
}

impl Ctx<'_> {
    fn error(&self, e: OciDistributionError) -> ImageError {
        let reference = self.full_name.to_string();
        let endpoint = self.endpoint.clone();
        let not_found = |message: String| ImageError::NotFound {
            reference: reference.clone(),
            message,
        };
        let unauthorized = |message: String| ImageError::Unauthorized {
            reference: reference.clone(),
            endpoint: endpoint.clone(),
            message,
        };
        match e {
            OciDistributionError::RegistryError { envelope, .. } => {
                let message = envelope
                    .errors
                    .iter()
                    .map(|e| e.message.clone())
                    .collect::<Vec<_>>()
                    .join("; ");
                let code = envelope.errors.first().map(|e| &e.code);
                match code {
                    Some(
                        OciErrorCode::ManifestUnknown
                        | OciErrorCode::NameUnknown
                        | OciErrorCode::NotFound
                        | OciErrorCode::BlobUnknown,
                    ) => not_found(message),
                    Some(OciErrorCode::Unauthorized | OciErrorCode::Denied) => {
                        unauthorized(message)
                    }
                    _ => ImageError::Network {
                        reference,
                        endpoint,
                        message,
                    },
                }
            }
            OciDistributionError::ImageManifestNotFoundError(message) => not_found(message),
            OciDistributionError::ServerError {
                code: 404, message, ..
            } => not_found(message),
            OciDistributionError::ServerError {
                code: 401 | 403,
                message,
                ..
            } => unauthorized(message),
            OciDistributionError::UnauthorizedError { url } => {
                unauthorized(format!("{url}: 401 Unauthorized"))
            }
            OciDistributionError::AuthenticationFailure(message) => unauthorized(message),
            OciDistributionError::DigestError(e) => ImageError::DigestMismatch {
                what: reference,
                expected: String::new(),
                actual: e.to_string(),
            },
            OciDistributionError::RequestError(e) => ImageError::Network {
                reference,
                endpoint,
                message: error_chain(&e),
            },
            OciDistributionError::ServerError { code, message, .. } => ImageError::Network {
                reference,
                endpoint,
                message: format!("HTTP {code}: {message}"),
            },
            other => ImageError::Unsupported {
                reference,
                message: other.to_string(),
            },
        }
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// How telling an error is when endpoints disagree: a mirror that has the image but serves
/// it corrupted says more than the next endpoint being unreachable.
fn rank(e: &ImageError) -> u8 {
    match e {
        ImageError::Network { .. } => 0,
        ImageError::NotFound { .. } => 1,
        ImageError::Unauthorized { .. } => 2,
        _ => 3,
    }
}

/// Downloads one blob into `tmp/`, hashing as it goes, and moves it into the store only if
/// its digest (and size) match.
async fn fetch_blob(
    client: &Client,
    remote: &Reference,
    descriptor: &Descriptor,
    store: &ImageStore,
    ctx: &Ctx<'_>,
    progress: Option<&ProgressFn>,
) -> Result<()> {
    super::digest::hex_of(&descriptor.digest)?;
    let what = format!("blob {} of {}", descriptor.digest, ctx.full_name);
    let oci = OciDescriptor {
        media_type: descriptor.media_type.clone(),
        digest: descriptor.digest.clone(),
        size: descriptor.size as i64,
        ..OciDescriptor::default()
    };
    let mut stream = client
        .pull_blob_stream(remote, &oci)
        .await
        .map_err(|e| ctx.error(e))?;
    let total = if descriptor.size > 0 {
        descriptor.size
    } else {
        stream.content_length.unwrap_or(0)
    };
    let tmp = store.tmp_path("blob");
    let result = async {
        let mut file = tokio::fs::File::create(&tmp)
            .await
            .map_err(ImageError::io(&tmp))?;
        let mut hasher = Hasher::default();
        let (mut done, mut reported) = (0u64, 0u64);
        if let Some(progress) = progress {
            progress(PullProgress::Layer {
                digest: descriptor.digest.clone(),
                done: 0,
                total,
            });
        }
        while let Some(chunk) = stream.next().await {
            let chunk = match chunk {
                Ok(chunk) => chunk,
                // oci-client reports its own digest check as a stream error after the last
                // bytes; we check the digest ourselves below.
                Err(_) if descriptor.size > 0 && done == descriptor.size => break,
                Err(e) => {
                    return Err(ImageError::Network {
                        reference: ctx.full_name.to_string(),
                        endpoint: ctx.endpoint.clone(),
                        message: format!("downloading {}: {}", descriptor.digest, error_chain(&e)),
                    });
                }
            };
            done += chunk.len() as u64;
            if descriptor.size > 0 && done > descriptor.size {
                return Err(ImageError::DigestMismatch {
                    what: what.clone(),
                    expected: format!("{} ({} bytes)", descriptor.digest, descriptor.size),
                    actual: format!("more than {} bytes", descriptor.size),
                });
            }
            hasher.update(&chunk);
            file.write_all(&chunk).await.map_err(ImageError::io(&tmp))?;
            if let Some(progress) = progress
                && (done - reported >= PROGRESS_STEP || done == total)
            {
                reported = done;
                progress(PullProgress::Layer {
                    digest: descriptor.digest.clone(),
                    done,
                    total,
                });
            }
        }
        file.flush().await.map_err(ImageError::io(&tmp))?;
        drop(file);
        let actual = hasher.finish();
        if actual != descriptor.digest {
            return Err(ImageError::DigestMismatch {
                what: what.clone(),
                expected: descriptor.digest.clone(),
                actual,
            });
        }
        // Re-hashes from disk: what is stored is what was verified.
        let (s, t, d) = (store.clone(), tmp.clone(), descriptor.digest.clone());
        let w = what.clone();
        blocking(move || s.commit_blob(&t, &d, &w)).await
    }
    .await;
    if result.is_err() {
        let _ = tokio::fs::remove_file(&tmp).await;
    }
    result
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f).await.unwrap_or_else(|e| {
        Err(ImageError::Io {
            path: Default::default(),
            source: std::io::Error::other(format!("blocking task failed: {e}")),
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_rank_corruption_over_absence_over_network() {
        let net = ImageError::Network {
            reference: "x".into(),
            endpoint: "e".into(),
            message: "m".into(),
        };
        let nf = ImageError::NotFound {
            reference: "x".into(),
            message: "m".into(),
        };
        let bad = ImageError::DigestMismatch {
            what: "x".into(),
            expected: "a".into(),
            actual: "b".into(),
        };
        assert!(rank(&bad) > rank(&nf) && rank(&nf) > rank(&net));
    }

    #[test]
    fn pull_secrets_go_to_the_registry_not_to_mirrors() {
        let config = RegistryConfig::parse(
            "mirrors:\n  docker.io:\n    endpoint: [\"http://127.0.0.1:5000\"]\n",
        )
        .unwrap();
        let puller = Puller::new(config);
        let mut options = PullOptions::default();
        options
            .credentials
            .add_docker_config(br#"{"auths":{"docker.io":{"username":"u","password":"p"}}}"#)
            .unwrap();
        let endpoints = puller.config().endpoints("docker.io", "library/busybox");
        assert!(matches!(
            puller.auth_for(&endpoints[0], "docker.io", &options),
            RegistryAuth::Anonymous
        ));
        assert!(matches!(
            puller.auth_for(&endpoints[1], "docker.io", &options),
            RegistryAuth::Basic(u, p) if u == "u" && p == "p"
        ));
    }
}
