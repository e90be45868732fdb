//! Pod volumes, prepared on the node before the containers start, and the container
//! environment ([`env`]).
//!
//! Layout: `<root>/<pod-uid>/volumes/<plugin>/<volume-name>` (as upstream's
//! `/var/lib/kubelet/pods/<uid>/volumes/kubernetes.io~<plugin>/<name>`), and
//! `<root>/<pod-uid>/plugins/<plugin>/<volume-name>/ready` once a volume that is set up only once
//! (emptyDir, a PVC's fsGroup) is ready.
//!
//! - emptyDir: a directory, or a tmpfs for `medium: Memory` (sized by `sizeLimit`).
//! - hostPath: the host path itself, after the `type` check ([`hostpath`]).
//! - configMap, secret, downwardAPI, projected: files written by the [`atomic_writer`] and
//!   rewritten when their source changes (secrets and projected volumes on a tmpfs, as upstream).
//! - persistentVolumeClaim / ephemeral: the bound local PersistentVolume's directory ([`pvc`]).

pub mod atomic_writer;
pub mod downward;
pub mod env;
pub mod hostpath;
pub mod mount;
pub mod ownership;
pub mod projected;
pub mod pvc;
pub mod subpath;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, Secret, Volume};
use runtime::container::Mount;

use atomic_writer::{AtomicWriter, Payload};

/// A volume ready on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumePath {
    pub host_path: PathBuf,
    /// The volume itself is read-only (configMap, secret, downwardAPI, projected, or a
    /// `readOnly` PVC/hostPath).
    pub read_only: bool,
}

/// The volumes of one pod, by volume name.
#[derive(Debug, Clone, Default)]
pub struct PodVolumes {
    pub paths: BTreeMap<String, VolumePath>,
}

#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    /// A source that does not exist (yet): the pod waits and the kubelet retries
    /// (event FailedMount, as upstream).
    #[error("MountVolume.SetUp failed for volume {volume:?} : {message}")]
    NotReady { volume: String, message: String },
    #[error("volume {volume:?}: {message}")]
    Invalid { volume: String, message: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

const EMPTY_DIR: &str = "kubernetes.io~empty-dir";
const CONFIG_MAP: &str = "kubernetes.io~configmap";
const SECRET: &str = "kubernetes.io~secret";
const DOWNWARD_API: &str = "kubernetes.io~downward-api";
const PROJECTED: &str = "kubernetes.io~projected";
const LOCAL_VOLUME: &str = "kubernetes.io~local-volume";

fn not_ready(volume: &str, message: impl Into<String>) -> VolumeError {
    VolumeError::NotReady {
        volume: volume.to_string(),
        message: message.into(),
    }
}

fn invalid(volume: &str, message: impl Into<String>) -> VolumeError {
    VolumeError::Invalid {
        volume: volume.to_string(),
        message: message.into(),
    }
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> VolumeError + '_ {
    move |source| VolumeError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// GET a namespaced object; `None` when it does not exist.
pub(crate) async fn get_namespaced<K>(
    client: &kube::Client,
    namespace: &str,
    name: &str,
) -> Result<Option<K>, String>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    kube::Api::<K>::namespaced(client.clone(), namespace)
        .get_opt(name)
        .await
        .map_err(|e| {
            let kind = K::kind(&Default::default()).to_lowercase();
            format!("failed to get {kind} {namespace}/{name}: {e}")
        })
}

/// Prepares and removes pod volumes on this node.
#[derive(Clone)]
pub struct VolumeManager {
    pub client: kube::Client,
    /// `<agent-root>/pods`
    pub root: PathBuf,
    pub node_name: String,
}

/// What one `setup` call reads at most once.
#[derive(Default)]
struct SetupCache {
    allocatable: Option<downward::Allocatable>,
}

impl VolumeManager {
    pub fn new(client: kube::Client, root: PathBuf, node_name: String) -> VolumeManager {
        VolumeManager {
            client,
            root,
            node_name,
        }
    }

    /// `<root>/<pod-uid>`: the pod's directory (volumes, etc-hosts, termination logs).
    pub fn pod_dir(&self, pod_uid: &str) -> PathBuf {
        self.root.join(pod_uid)
    }

    /// Prepare every volume of the pod. Idempotent, and called again periodically: configMap,
    /// secret, downwardAPI and projected contents are rewritten atomically when their source
    /// changed.
    pub async fn setup(&self, pod: &Pod) -> Result<PodVolumes, VolumeError> {
        let uid = pod_uid(pod)?;
        let pod_dir = self.pod_dir(uid);
        let volumes_dir = pod_dir.join("volumes");
        std::fs::create_dir_all(&volumes_dir).map_err(io_error(&volumes_dir))?;

        let mut cache = SetupCache::default();
        let mut out = PodVolumes::default();
        // A plain slice: iterator adapters with closures held across awaits make the future
        // fail `Send` inference (rust-lang/rust#102211).
        let volumes: &[Volume] = pod
            .spec
            .as_ref()
            .and_then(|s| s.volumes.as_deref())
            .unwrap_or(&[]);
        for volume in volumes {
            let path = self.setup_volume(pod, &pod_dir, volume, &mut cache).await?;
            out.paths.insert(volume.name.clone(), path);
        }
        Ok(out)
    }

    async fn setup_volume(
        &self,
        pod: &Pod,
        pod_dir: &Path,
        volume: &Volume,
        cache: &mut SetupCache,
    ) -> Result<VolumePath, VolumeError> {
        let name = volume.name.as_str();
        let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
        let security = pod.spec.as_ref().and_then(|s| s.security_context.as_ref());
        let fs_group = security.and_then(|s| s.fs_group).map(|g| g as u32);
        let fs_group_policy = security.and_then(|s| s.fs_group_change_policy.as_deref());
        if let Some(source) = &volume.empty_dir {
            let dir = volume_dir(pod_dir, EMPTY_DIR, name);
            let memory = match source.medium.as_deref().unwrap_or("") {
                "" => false,
                "Memory" => true,
                other => {
                    return Err(invalid(
                        name,
                        format!("unsupported emptyDir medium {other:?}"),
                    ));
                }
            };
            let marker = ready_marker(pod_dir, EMPTY_DIR, name);
            let mounted = || mount::is_mount_point(&dir).map_err(io_error(&dir));
            if marker.exists() && dir.is_dir() && (!memory || mounted()?) {
                return Ok(writable(dir));
            }
            make_volume_dir(&dir)?;
            if memory && !mounted()? {
                let size = match &source.size_limit {
                    Some(q) => Some(
                        api::validation::parse_quantity(&q.0)
                            .map_err(|e| invalid(name, format!("sizeLimit: {e}")))?
                            .value(),
                    )
                    .filter(|s| *s > 0),
                    None => None,
                };
                mount::mount_tmpfs(&dir, size).map_err(io_error(&dir))?;
            }
            if let Some(gid) = fs_group {
                ownership::set_volume_ownership(&dir, gid, false, fs_group_policy)
                    .map_err(io_error(&dir))?;
            }
            mark_ready(&marker)?;
            return Ok(writable(dir));
        }

        if let Some(source) = &volume.host_path {
            let path = PathBuf::from(&source.path);
            hostpath::check_type(&path, source.type_.as_deref()).map_err(|e| match e {
                hostpath::HostPathError::Check(_) => not_ready(name, e.to_string()),
                hostpath::HostPathError::InvalidType(_) => invalid(name, e.to_string()),
            })?;
            return Ok(writable(path));
        }

        if let Some(source) = &volume.config_map {
            let optional = source.optional == Some(true);
            let default_mode = source.default_mode.unwrap_or(projected::DEFAULT_MODE);
            let cm = get_namespaced::<ConfigMap>(&self.client, namespace, &source.name)
                .await
                .map_err(|e| not_ready(name, e))?;
            let payload = match cm {
                Some(cm) => projected::config_map_payload(
                    source.items.as_deref(),
                    &cm,
                    default_mode,
                    optional,
                )
                .map_err(|e| not_ready(name, e))?,
                None if optional => Payload::new(),
                None => {
                    return Err(not_ready(
                        name,
                        format!("configmap {:?} not found", source.name),
                    ));
                }
            };
            let dir = volume_dir(pod_dir, CONFIG_MAP, name);
            make_volume_dir(&dir)?;
            write_files(name, &dir, &payload, fs_group)?;
            return Ok(read_only(dir));
        }

        if let Some(source) = &volume.secret {
            let secret_name = source.secret_name.clone().unwrap_or_default();
            let optional = source.optional == Some(true);
            let default_mode = source.default_mode.unwrap_or(projected::DEFAULT_MODE);
            let secret = get_namespaced::<Secret>(&self.client, namespace, &secret_name)
                .await
                .map_err(|e| not_ready(name, e))?;
            let payload = match secret {
                Some(s) => {
                    projected::secret_payload(source.items.as_deref(), &s, default_mode, optional)
                        .map_err(|e| not_ready(name, e))?
                }
                None if optional => Payload::new(),
                None => return Err(not_ready(name, format!("secret {secret_name:?} not found"))),
            };
            let dir = volume_dir(pod_dir, SECRET, name);
            make_volume_dir(&dir)?;
            memory_backed(&dir)?;
            write_files(name, &dir, &payload, fs_group)?;
            return Ok(read_only(dir));
        }

        if let Some(source) = &volume.downward_api {
            let items = source.items.as_deref().unwrap_or(&[]);
            let default_mode = source.default_mode.unwrap_or(projected::DEFAULT_MODE);
            let allocatable = if projected::needs_allocatable(items) {
                Some(
                    self.allocatable(cache)
                        .await
                        .map_err(|e| not_ready(name, e))?,
                )
            } else {
                None
            };
            let payload = projected::downward_api_payload(items, pod, default_mode, allocatable)
                .map_err(|e| not_ready(name, e))?;
            let dir = volume_dir(pod_dir, DOWNWARD_API, name);
            make_volume_dir(&dir)?;
            write_files(name, &dir, &payload, fs_group)?;
            return Ok(read_only(dir));
        }

        if let Some(source) = &volume.projected {
            let dir = volume_dir(pod_dir, PROJECTED, name);
            let default_mode = source.default_mode.unwrap_or(projected::DEFAULT_MODE);
            let mut payload = Payload::new();
            let mut errors = Vec::new();
            for s in source.sources.as_deref().unwrap_or(&[]) {
                match self
                    .projection(pod, namespace, s, default_mode, &dir, cache)
                    .await
                {
                    Ok(files) => payload.extend(files),
                    Err(e) => errors.push(e),
                }
            }
            match errors.len() {
                0 => {}
                1 => return Err(not_ready(name, errors.remove(0))),
                _ => return Err(not_ready(name, format!("[{}]", errors.join(", ")))),
            }
            make_volume_dir(&dir)?;
            memory_backed(&dir)?;
            write_files(name, &dir, &payload, fs_group)?;
            return Ok(read_only(dir));
        }

        if let Some(source) = &volume.persistent_volume_claim {
            let path = pvc::claim_path(&self.client, namespace, &source.claim_name, None)
                .await
                .map_err(|e| not_ready(name, e))?;
            let ro = source.read_only == Some(true);
            self.claim_ownership(
                &path,
                ro,
                fs_group,
                fs_group_policy,
                &ready_marker(pod_dir, LOCAL_VOLUME, name),
            )?;
            return Ok(VolumePath {
                host_path: path,
                read_only: ro,
            });
        }

        if volume.ephemeral.is_some() {
            // The ephemeral volume controller names the claim `<pod>-<volume>`.
            let claim = format!("{}-{name}", pod.metadata.name.as_deref().unwrap_or(""));
            let path = pvc::claim_path(&self.client, namespace, &claim, Some(pod))
                .await
                .map_err(|e| not_ready(name, e))?;
            self.claim_ownership(
                &path,
                false,
                fs_group,
                fs_group_policy,
                &ready_marker(pod_dir, LOCAL_VOLUME, name),
            )?;
            return Ok(writable(path));
        }

        Err(invalid(name, "no volume plugin matched"))
    }

    /// The files of one projected source; errors are FailedMount messages.
    async fn projection(
        &self,
        pod: &Pod,
        namespace: &str,
        source: &k8s_openapi::api::core::v1::VolumeProjection,
        default_mode: i32,
        dir: &Path,
        cache: &mut SetupCache,
    ) -> Result<Payload, String> {
        if let Some(s) = &source.config_map {
            let optional = s.optional == Some(true);
            return match get_namespaced::<ConfigMap>(&self.client, namespace, &s.name).await? {
                Some(cm) => {
                    projected::config_map_payload(s.items.as_deref(), &cm, default_mode, optional)
                }
                None if optional => Ok(Payload::new()),
                None => Err(format!("configmap {:?} not found", s.name)),
            };
        }
        if let Some(s) = &source.secret {
            let optional = s.optional == Some(true);
            return match get_namespaced::<Secret>(&self.client, namespace, &s.name).await? {
                Some(secret) => {
                    projected::secret_payload(s.items.as_deref(), &secret, default_mode, optional)
                }
                None if optional => Ok(Payload::new()),
                None => Err(format!("secret {:?} not found", s.name)),
            };
        }
        if let Some(s) = &source.downward_api {
            let items = s.items.as_deref().unwrap_or(&[]);
            let allocatable = if projected::needs_allocatable(items) {
                Some(self.allocatable(cache).await?)
            } else {
                None
            };
            return projected::downward_api_payload(items, pod, default_mode, allocatable);
        }
        if let Some(s) = &source.service_account_token {
            // Token issuance (TokenRequest) does not exist yet: the file is left out.
            let first = !dir.join("..data").exists();
            let pod_name = pod.metadata.name.as_deref().unwrap_or("");
            if first {
                tracing::info!(
                    pod = %format!("{namespace}/{pod_name}"),
                    path = %s.path,
                    "skipping the serviceAccountToken projection: service account tokens are not issued yet"
                );
            } else {
                tracing::debug!(pod = %format!("{namespace}/{pod_name}"), path = %s.path, "serviceAccountToken projection skipped");
            }
            return Ok(Payload::new());
        }
        if source.cluster_trust_bundle.is_some() {
            tracing::info!("skipping a clusterTrustBundle projection: not supported");
            return Ok(Payload::new());
        }
        Ok(Payload::new())
    }

    async fn allocatable<'c>(
        &self,
        cache: &'c mut SetupCache,
    ) -> Result<&'c downward::Allocatable, String> {
        if cache.allocatable.is_none() {
            cache.allocatable =
                Some(env::fetch_node_allocatable(&self.client, &self.node_name).await?);
        }
        Ok(cache.allocatable.as_ref().expect("just set"))
    }

    /// fsGroup on a claim's directory, once per pod (the data may be large).
    fn claim_ownership(
        &self,
        path: &Path,
        read_only: bool,
        fs_group: Option<u32>,
        policy: Option<&str>,
        marker: &Path,
    ) -> Result<(), VolumeError> {
        let Some(gid) = fs_group else {
            return Ok(());
        };
        if read_only || marker.exists() {
            return Ok(());
        }
        ownership::set_volume_ownership(path, gid, false, policy).map_err(io_error(path))?;
        mark_ready(marker)
    }

    /// The bind mounts of one container (volumeMounts with subPath, readOnly, propagation).
    /// A `subPathExpr` expands with the variables computable from the pod alone
    /// ([`env::static_env`]); use [`VolumeManager::container_mounts_with_env`] to pass the
    /// container's full environment.
    pub fn container_mounts(
        &self,
        pod: &Pod,
        container: &Container,
        volumes: &PodVolumes,
    ) -> Result<Vec<Mount>, VolumeError> {
        let env = env::static_env(pod, container);
        self.container_mounts_with_env(pod, container, volumes, &env)
    }

    /// [`VolumeManager::container_mounts`] with the container's environment (from
    /// [`env::container_env`]) for `subPathExpr`.
    pub fn container_mounts_with_env(
        &self,
        pod: &Pod,
        container: &Container,
        volumes: &PodVolumes,
        env: &[(String, String)],
    ) -> Result<Vec<Mount>, VolumeError> {
        let _ = pod;
        let mut mounts = Vec::new();
        for vm in container.volume_mounts.iter().flatten() {
            let volume = volumes.paths.get(&vm.name).ok_or_else(|| {
                invalid(
                    &vm.name,
                    format!(
                        "cannot find volume {:?} to mount into container {:?}",
                        vm.name, container.name
                    ),
                )
            })?;
            let mut sub_path = vm.sub_path.clone().unwrap_or_default();
            if let Some(expr) = vm.sub_path_expr.as_deref().filter(|e| !e.is_empty()) {
                sub_path = subpath::expand_expr(expr, env).map_err(|e| invalid(&vm.name, e))?;
            }
            let host_path = if sub_path.is_empty() {
                volume.host_path.clone()
            } else {
                subpath::validate(&sub_path).map_err(|e| invalid(&vm.name, e))?;
                subpath::prepare(&volume.host_path, &sub_path).map_err(|e| {
                    tracing::warn!(volume = %vm.name, container = %container.name, error = %e, "preparing a subPath");
                    invalid(
                        &vm.name,
                        format!(
                            "failed to prepare subPath for volumeMount {:?} of container {:?}",
                            vm.name, container.name
                        ),
                    )
                })?
            };
            let propagation = match vm.mount_propagation.as_deref() {
                None => None,
                Some(p @ ("None" | "HostToContainer" | "Bidirectional")) => Some(p.to_string()),
                Some(other) => {
                    return Err(invalid(
                        &vm.name,
                        format!("invalid MountPropagation mode: {other:?}"),
                    ));
                }
            };
            mounts.push(Mount {
                container_path: vm.mount_path.clone(),
                host_path,
                read_only: vm.read_only == Some(true) || volume.read_only,
                propagation,
            });
        }
        Ok(mounts)
    }

    /// Unmount and delete everything of the pod's directory (a PV's data stays where it is).
    pub async fn teardown(&self, pod_uid: &str) -> Result<(), VolumeError> {
        check_uid(pod_uid)?;
        let dir = self.pod_dir(pod_uid);
        tokio::task::spawn_blocking(move || teardown_dir(&dir))
            .await
            .map_err(|e| VolumeError::Io {
                path: PathBuf::from(pod_uid),
                source: std::io::Error::other(e),
            })?
    }
}

fn pod_uid(pod: &Pod) -> Result<&str, VolumeError> {
    let uid = pod.metadata.uid.as_deref().unwrap_or("");
    check_uid(uid)?;
    Ok(uid)
}

/// A uid names one directory under the root: never a path.
fn check_uid(uid: &str) -> Result<(), VolumeError> {
    if uid.is_empty() || uid == "." || uid == ".." || uid.contains('/') {
        return Err(invalid("", format!("invalid pod uid {uid:?}")));
    }
    Ok(())
}

/// `<pod_dir>/volumes/<plugin>/<name>`
fn volume_dir(pod_dir: &Path, plugin: &str, name: &str) -> PathBuf {
    pod_dir.join("volumes").join(plugin).join(name)
}

/// `<pod_dir>/plugins/<plugin>/<name>/ready`: set once a set-up-once volume is ready.
fn ready_marker(pod_dir: &Path, plugin: &str, name: &str) -> PathBuf {
    pod_dir
        .join("plugins")
        .join(plugin)
        .join(name)
        .join("ready")
}

fn writable(host_path: PathBuf) -> VolumePath {
    VolumePath {
        host_path,
        read_only: false,
    }
}

fn read_only(host_path: PathBuf) -> VolumePath {
    VolumePath {
        host_path,
        read_only: true,
    }
}

/// The volume directory, 0777 whatever the umask (containers run as any user).
fn make_volume_dir(dir: &Path) -> Result<(), VolumeError> {
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::create_dir_all(dir).map_err(io_error(dir))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o777)).map_err(io_error(dir))
}

/// Secrets and projected volumes live on a tmpfs so that their data never reaches the disk.
/// Where mounting is not permitted (an unprivileged agent), they stay on disk. Checked only
/// before the first write (no `..data` yet): the periodic refresh reads no mount table.
fn memory_backed(dir: &Path) -> Result<(), VolumeError> {
    if dir.join("..data").exists() || mount::is_mount_point(dir).map_err(io_error(dir))? {
        return Ok(());
    }
    match mount::mount_tmpfs(dir, None) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            tracing::warn!(path = %dir.display(), "no permission to mount a tmpfs: secret files stay on disk");
            Ok(())
        }
        Err(e) => Err(io_error(dir)(e)),
    }
}

fn mark_ready(marker: &Path) -> Result<(), VolumeError> {
    if let Some(parent) = marker.parent() {
        std::fs::create_dir_all(parent).map_err(io_error(parent))?;
    }
    std::fs::write(marker, b"").map_err(io_error(marker))
}

/// Write the payload atomically; with an fsGroup the whole volume gets its group before the new
/// version becomes visible.
fn write_files(
    volume: &str,
    dir: &Path,
    payload: &Payload,
    fs_group: Option<u32>,
) -> Result<(), VolumeError> {
    let set_perms = |_: &Path| match fs_group {
        Some(gid) => ownership::set_volume_ownership(dir, gid, true, None),
        None => Ok(()),
    };
    match AtomicWriter::new(dir).write(payload, Some(&set_perms)) {
        Ok(true) => {
            tracing::debug!(volume, path = %dir.display(), "volume files written");
            Ok(())
        }
        Ok(false) => Ok(()),
        Err(atomic_writer::WriteError::InvalidPath(m)) => {
            Err(invalid(volume, format!("invalid path: {m}")))
        }
        Err(atomic_writer::WriteError::Io { path, source }) => {
            Err(VolumeError::Io { path, source })
        }
    }
}

fn teardown_dir(dir: &Path) -> Result<(), VolumeError> {
    match std::fs::symlink_metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_error(dir)(e)),
        Ok(_) => {}
    }
    for m in mount::mount_points_under(dir).map_err(io_error(dir))? {
        mount::unmount(&m).map_err(io_error(&m))?;
    }
    // Never delete through a mount that is still there (it could be a volume's real data).
    if let Some(left) = mount::mount_points_under(dir)
        .map_err(io_error(dir))?
        .into_iter()
        .next()
    {
        return Err(VolumeError::Io {
            path: left,
            source: std::io::Error::other("still mounted after unmount"),
        });
    }
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_error(dir)(e)),
    }
}

#[cfg(test)]
mod tests;
