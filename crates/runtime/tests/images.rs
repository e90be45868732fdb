//! Images against a real registry (Debian's `docker-registry` on loopback) with images built
//! offline from busybox-static by umoci and pushed by skopeo. Needs root (whiteouts are
//! character devices) and those tools (`scripts/install-deps.sh`); skipped without them.

use std::collections::HashSet;
use std::fs;
use std::net::TcpStream;
use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use runtime::images::pull::{ProgressFn, Puller};
use runtime::images::{
    Credentials, DiskStats, DiskUsage, GcPolicy, ImageError, ImageStore, PullOptions, PullPolicy,
    PullProgress, RegistryConfig,
};
use sha2::Digest as _;

fn tools_missing() -> bool {
    let missing: Vec<&str> = ["docker-registry", "umoci", "skopeo", "busybox", "curl"]
        .into_iter()
        .filter(|tool| {
            !Command::new("sh")
                .args(["-c", &format!("command -v {tool}")])
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
        .collect();
    if !missing.is_empty() {
        eprintln!("skipped: missing {missing:?} (scripts/install-deps.sh installs them)");
        return true;
    }
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipped: needs root (layers hold whiteout devices)");
        return true;
    }
    false
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// An OCI layout with `1.36` (busybox, one layer) and `2.0` (the same base layer plus an
/// upper layer that deletes `etc/motd` and adds `etc/extra`), as `images.sh` builds them.
fn build_layout(dir: &Path) -> PathBuf {
    let layout = dir.join("layout");
    let umoci = |args: &[&str]| run(Command::new("umoci").args(args).stdout(Stdio::null()));
    umoci(&["init", "--layout", layout.to_str().unwrap()]);
    let image = |tag: &str| format!("{}:{tag}", layout.display());
    umoci(&["new", "--image", &image("base")]);
    let bundle = dir.join("bundle");
    umoci(&[
        "unpack",
        "--rootless",
        "--image",
        &image("base"),
        bundle.to_str().unwrap(),
    ]);
    let root = bundle.join("rootfs");
    fs::create_dir_all(root.join("bin")).unwrap();
    fs::create_dir_all(root.join("etc")).unwrap();
    fs::copy("/usr/bin/busybox", root.join("bin/busybox")).unwrap();
    std::os::unix::fs::symlink("busybox", root.join("bin/sh")).unwrap();
    fs::write(root.join("etc/motd"), "hello\n").unwrap();
    umoci(&[
        "repack",
        "--image",
        &image("1.36"),
        bundle.to_str().unwrap(),
    ]);
    umoci(&[
        "config",
        "--image",
        &image("1.36"),
        "--config.cmd",
        "sh",
        "--config.env",
        "PATH=/bin",
        "--config.workingdir",
        "/",
        "--config.exposedports",
        "80/tcp",
    ]);
    let upper = dir.join("bundle2");
    umoci(&[
        "unpack",
        "--rootless",
        "--image",
        &image("1.36"),
        upper.to_str().unwrap(),
    ]);
    fs::remove_file(upper.join("rootfs/etc/motd")).unwrap();
    fs::write(upper.join("rootfs/etc/extra"), "extra\n").unwrap();
    umoci(&["repack", "--image", &image("2.0"), upper.to_str().unwrap()]);
    layout
}

/// `docker-registry serve` on a free loopback port; killed on drop.
struct Registry {
    child: Child,
    port: u16,
    storage: PathBuf,
}

impl Registry {
    fn start(dir: &Path, htpasswd: Option<&Path>) -> Registry {
        let port = testing::free_port();
        let storage = dir.join("registry");
        let auth = htpasswd
            .map(|p| {
                format!(
                    "auth:\n  htpasswd:\n    realm: test\n    path: {}\n",
                    p.display()
                )
            })
            .unwrap_or_default();
        let config = dir.join("registry.yml");
        fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n{auth}",
                storage.display()
            ),
        )
        .unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(fs::File::create(dir.join("registry.log")).unwrap())
            .spawn()
            .expect("start docker-registry");
        let registry = Registry {
            child,
            port,
            storage,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "registry did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        registry
    }

    fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Pushes `layout:tag` as `name:tag` with extra skopeo flags.
    fn push(&self, layout: &Path, tag: &str, name: &str, flags: &[&str]) {
        run(Command::new("skopeo")
            .args(["copy", "-q", "--dest-tls-verify=false"])
            .args(flags)
            .arg(format!("oci:{}:{tag}", layout.display()))
            .arg(format!("docker://{}/{name}", self.host())));
    }

    fn blob_data(&self, digest: &str) -> PathBuf {
        let hex = digest.trim_start_matches("sha256:");
        self.storage
            .join("docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn mirror_config(registry: &Registry) -> RegistryConfig {
    RegistryConfig::parse(&format!(
        "mirrors:\n  docker.io:\n    endpoint: [\"http://{}\"]\n",
        registry.host()
    ))
    .unwrap()
}

/// Collects progress events.
fn recorder() -> (ProgressFn, Arc<Mutex<Vec<PullProgress>>>) {
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = events.clone();
    (Arc::new(move |e| sink.lock().unwrap().push(e)), events)
}

fn quiet() -> ProgressFn {
    Arc::new(|_| {})
}

fn dir_entries(path: &Path) -> usize {
    fs::read_dir(path).map(|d| d.count()).unwrap_or(0)
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn pull_through_a_docker_io_mirror_shares_layers_and_converts_whiteouts() {
    if tools_missing() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let layout = build_layout(tmp.path());
    let registry = Registry::start(tmp.path(), None);
    registry.push(&layout, "1.36", "library/busybox:1.36", &[]);
    registry.push(&layout, "2.0", "library/busybox:2.0", &[]);
    let store = ImageStore::open(tmp.path().join("images")).unwrap();
    let puller = Puller::new(mirror_config(&registry));
    let rt = rt();

    let (progress, events) = recorder();
    let image = rt
        .block_on(puller.pull(&store, "busybox:1.36", &PullOptions::default(), progress))
        .unwrap();
    assert_eq!(image.name, "docker.io/library/busybox:1.36");
    assert_eq!(image.config.cmd, vec!["sh"]);
    assert_eq!(image.config.env, vec!["PATH=/bin"]);
    assert_eq!(image.config.exposed_ports, vec!["80/tcp"]);
    assert!(
        image
            .repo_digest()
            .starts_with("docker.io/library/busybox@sha256:")
    );
    let layers = store.rootfs_layers("busybox:1.36").unwrap();
    assert_eq!(layers.len(), 1);
    assert!(layers[0].join("bin/busybox").is_file());
    assert_eq!(
        fs::read_link(layers[0].join("bin/sh")).unwrap(),
        Path::new("busybox")
    );
    let events = events.lock().unwrap().clone();
    let layer = &image.layers[0];
    assert!(
        events.contains(&PullProgress::Layer {
            digest: layer.digest.clone(),
            done: layer.size,
            total: layer.size
        }),
        "download progress reaches the layer size: {events:?}"
    );
    assert!(events.contains(&PullProgress::Unpacked {
        diff_id: layer.diff_id.clone(),
        reused: false
    }));
    let base_inode = fs::metadata(&layers[0]).unwrap().ino();

    // A second image on the same base: the base layer is neither downloaded nor unpacked again.
    let (progress, events) = recorder();
    let upper = rt
        .block_on(puller.pull(
            &store,
            "docker.io/library/busybox:2.0",
            &PullOptions::default(),
            progress,
        ))
        .unwrap();
    let events = events.lock().unwrap().clone();
    assert!(events.contains(&PullProgress::LayerExists {
        digest: layer.digest.clone(),
        size: layer.size
    }));
    assert!(events.contains(&PullProgress::Unpacked {
        diff_id: layer.diff_id.clone(),
        reused: true
    }));
    let layers2 = store.rootfs_layers("busybox:2.0").unwrap();
    assert_eq!(layers2.len(), 2);
    assert_eq!(layers2[0], layers[0]);
    assert_eq!(
        fs::metadata(&layers2[0]).unwrap().ino(),
        base_inode,
        "base unpacked once"
    );
    assert_eq!(dir_entries(&store.root().join("layers")), 2);
    // The deletion of etc/motd is an overlayfs whiteout in the upper layer.
    let whiteout = fs::symlink_metadata(layers2[1].join("etc/motd")).unwrap();
    assert!(whiteout.file_type().is_char_device() && whiteout.rdev() == 0);
    assert!(!layers2[1].join("etc/.wh.motd").exists());
    assert_eq!(
        fs::read_to_string(layers2[1].join("etc/extra")).unwrap(),
        "extra\n"
    );
    assert_eq!(
        store.overlay_lowerdir("busybox:2.0").unwrap(),
        format!("{}:{}", layers2[1].display(), layers2[0].display())
    );
    assert_eq!(store.list().unwrap().len(), 2);
    assert_eq!(store.get(&upper.id).unwrap().unwrap().name, upper.name);

    // A missing tag is NotFound (the mirror says so; docker.io itself is unreachable here).
    let err = rt
        .block_on(puller.pull(&store, "busybox:nope", &PullOptions::default(), quiet()))
        .unwrap_err();
    assert!(matches!(err, ImageError::NotFound { .. }), "{err}");
    assert_eq!(err.reason(), "ErrImagePull");

    // Pull policies.
    let present = rt
        .block_on(puller.ensure_image(
            &store,
            "busybox:1.36",
            PullPolicy::Never,
            &PullOptions::default(),
            quiet(),
        ))
        .unwrap();
    assert_eq!(present.id, image.id);
    let err = rt
        .block_on(puller.ensure_image(
            &store,
            "busybox:9",
            PullPolicy::Never,
            &PullOptions::default(),
            quiet(),
        ))
        .unwrap_err();
    assert!(matches!(err, ImageError::NotPresent { .. }) && err.reason() == "ErrImageNeverPull");

    // Removing the upper image deletes only its own layer; removing the last frees everything.
    store.remove("busybox:2.0").unwrap();
    assert!(layers2[0].is_dir() && !layers2[1].exists());
    store.remove("busybox:1.36").unwrap();
    assert_eq!(dir_entries(&store.root().join("layers")), 0);
    assert_eq!(dir_entries(&store.root().join("blobs/sha256")), 0);
    assert!(matches!(
        store.remove("busybox:1.36"),
        Err(ImageError::NotPresent { .. })
    ));
}

#[test]
fn docker_schema2_zstd_multi_arch_index_and_digest_references() {
    if tools_missing() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let layout = build_layout(tmp.path());
    let registry = Registry::start(tmp.path(), None);
    registry.push(&layout, "1.36", "v2s2/busybox:1", &["--format", "v2s2"]);
    registry.push(
        &layout,
        "2.0",
        "zstd/busybox:1",
        &["--dest-compress-format", "zstd"],
    );
    registry.push(&layout, "1.36", "multi/busybox:amd", &[]);
    registry.push(&layout, "2.0", "multi/busybox:arm", &[]);
    let store = ImageStore::open(tmp.path().join("images")).unwrap();
    // No registries.yaml: a loopback registry is plain HTTP.
    let puller = Puller::new(RegistryConfig::default());
    let rt = rt();
    let pull =
        |name: String| rt.block_on(puller.pull(&store, &name, &PullOptions::default(), quiet()));

    let docker = pull(format!("{}/v2s2/busybox:1", registry.host())).unwrap();
    assert_eq!(
        docker.layers[0].media_type,
        "application/vnd.docker.image.rootfs.diff.tar.gzip"
    );
    assert!(
        store.rootfs_layers(&docker.name).unwrap()[0]
            .join("bin/busybox")
            .is_file()
    );

    let zstd = pull(format!("{}/zstd/busybox:1", registry.host())).unwrap();
    // skopeo reuses the gzip base blob the registry already has; the upper layer is zstd.
    assert!(
        zstd.layers[1].media_type.ends_with("+zstd"),
        "{:?}",
        zstd.layers
    );
    let layers = store.rootfs_layers(&zstd.name).unwrap();
    // Same content, other compression: the unpacked layers are shared by diff ID.
    assert_eq!(layers[0], store.rootfs_layers(&docker.name).unwrap()[0]);
    assert!(
        fs::symlink_metadata(layers[1].join("etc/motd"))
            .unwrap()
            .file_type()
            .is_char_device()
    );

    // A multi-arch index: our architecture points at the one-layer image, another at 2.0.
    let manifest_digest = |tag: &str| {
        let out = Command::new("curl")
            .args([
                "-sf",
                "-H",
                "Accept: application/vnd.oci.image.manifest.v1+json",
            ])
            .arg(format!(
                "http://{}/v2/multi/busybox/manifests/{tag}",
                registry.host()
            ))
            .output()
            .unwrap();
        assert!(out.status.success());
        (
            format!("sha256:{}", hex::encode(sha2::Sha256::digest(&out.stdout))),
            out.stdout.len(),
        )
    };
    let (ours, ours_size) = manifest_digest("amd");
    let (other, other_size) = manifest_digest("arm");
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": other, "size": other_size,
             "platform": {"architecture": "s390x", "os": "linux"}},
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": ours, "size": ours_size,
             "platform": {"architecture": arch, "os": "linux"}},
        ]
    });
    let index_file = tmp.path().join("index.json");
    fs::write(&index_file, serde_json::to_vec(&index).unwrap()).unwrap();
    run(Command::new("curl")
        .args([
            "-sf",
            "-X",
            "PUT",
            "-H",
            "Content-Type: application/vnd.oci.image.index.v1+json",
        ])
        .arg("--data-binary")
        .arg(format!("@{}", index_file.display()))
        .arg(format!(
            "http://{}/v2/multi/busybox/manifests/multi",
            registry.host()
        )));
    let multi = pull(format!("{}/multi/busybox:multi", registry.host())).unwrap();
    assert_eq!(multi.manifest_digest, ours);
    assert_eq!(multi.layers.len(), 1);
    assert!(multi.index_digest.is_some());
    assert!(
        multi
            .repo_digest()
            .ends_with(multi.index_digest.as_deref().unwrap())
    );

    assert_eq!(
        store.get(&multi.repo_digest()).unwrap().unwrap().name,
        multi.name
    );
    let pinned = pull(format!("{}/multi/busybox@{other}", registry.host())).unwrap();
    assert_eq!(pinned.layers.len(), 2);
    assert!(pinned.name.ends_with(&format!("@{other}")));
    // A digest nobody has.
    let missing = format!("sha256:{}", "0".repeat(64));
    let err = pull(format!("{}/multi/busybox@{missing}", registry.host())).unwrap_err();
    assert!(matches!(err, ImageError::NotFound { .. }), "{err}");
}

#[test]
fn a_corrupted_blob_is_detected_and_never_kept() {
    if tools_missing() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let layout = build_layout(tmp.path());
    let registry = Registry::start(tmp.path(), None);
    registry.push(&layout, "1.36", "library/busybox:1.36", &[]);
    // Flip bytes in the middle of the layer blob in the registry's storage.
    let manifest: serde_json::Value = serde_json::from_slice(
        &Command::new("curl")
            .args([
                "-sf",
                "-H",
                "Accept: application/vnd.oci.image.manifest.v1+json",
            ])
            .arg(format!(
                "http://{}/v2/library/busybox/manifests/1.36",
                registry.host()
            ))
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let layer_digest = manifest["layers"][0]["digest"].as_str().unwrap();
    let data = registry.blob_data(layer_digest);
    let mut bytes = fs::read(&data).unwrap();
    let middle = bytes.len() / 2;
    for b in &mut bytes[middle..middle + 16] {
        *b ^= 0xff;
    }
    fs::write(&data, bytes).unwrap();

    let store = ImageStore::open(tmp.path().join("images")).unwrap();
    let puller = Puller::new(mirror_config(&registry));
    let err = rt()
        .block_on(puller.pull(&store, "busybox:1.36", &PullOptions::default(), quiet()))
        .unwrap_err();
    assert!(matches!(err, ImageError::DigestMismatch { .. }), "{err}");
    assert!(err.to_string().contains(layer_digest), "{err}");
    assert!(!store.has_blob(layer_digest));
    assert_eq!(
        dir_entries(&store.root().join("tmp")),
        0,
        "no partial download left"
    );
    assert_eq!(dir_entries(&store.root().join("layers")), 0);
    assert!(store.list().unwrap().is_empty());
}

#[test]
fn basic_auth_from_registries_yaml_and_from_pull_secrets() {
    if tools_missing() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let layout = build_layout(tmp.path());
    let htpasswd = tmp.path().join("htpasswd");
    fs::write(
        &htpasswd,
        format!("alice:{}\n", bcrypt::hash("s3cret", 4).unwrap()),
    )
    .unwrap();
    let registry = Registry::start(tmp.path(), Some(&htpasswd));
    registry.push(
        &layout,
        "1.36",
        "library/busybox:1.36",
        &["--dest-creds", "alice:s3cret"],
    );
    let store = ImageStore::open(tmp.path().join("images")).unwrap();
    let rt = rt();

    // Through the docker.io mirror: no credentials, wrong ones, then registries.yaml's.
    let anonymous = Puller::new(mirror_config(&registry));
    let err = rt
        .block_on(anonymous.pull(&store, "busybox:1.36", &PullOptions::default(), quiet()))
        .unwrap_err();
    assert!(matches!(err, ImageError::Unauthorized { .. }), "{err}");
    let with_auth = |password: &str| {
        RegistryConfig::parse(&format!(
            "mirrors:\n  docker.io:\n    endpoint: [\"http://{host}\"]\nconfigs:\n  \"{host}\":\n    auth:\n      username: alice\n      password: {password}\n",
            host = registry.host()
        ))
        .unwrap()
    };
    let err = rt
        .block_on(Puller::new(with_auth("wrong")).pull(
            &store,
            "busybox:1.36",
            &PullOptions::default(),
            quiet(),
        ))
        .unwrap_err();
    assert!(matches!(err, ImageError::Unauthorized { .. }), "{err}");
    let image = rt
        .block_on(Puller::new(with_auth("s3cret")).pull(
            &store,
            "busybox:1.36",
            &PullOptions::default(),
            quiet(),
        ))
        .unwrap();
    assert!(
        store.rootfs_layers(&image.name).unwrap()[0]
            .join("bin/busybox")
            .is_file()
    );

    // Directly, with an image pull secret's dockerconfigjson.
    let mut credentials = Credentials::default();
    credentials
        .add_docker_config(
            serde_json::json!({"auths": {registry.host(): {"username": "alice", "password": "s3cret"}}})
                .to_string()
                .as_bytes(),
        )
        .unwrap();
    let options = PullOptions { credentials };
    let direct = rt
        .block_on(Puller::new(RegistryConfig::default()).pull(
            &store,
            &format!("{}/library/busybox:1.36", registry.host()),
            &options,
            quiet(),
        ))
        .unwrap();
    assert_eq!(direct.id, image.id);
}

/// Disk usage of a pretend filesystem that holds only the store, plus a fixed amount.
struct FakeDisk {
    root: PathBuf,
    capacity: u64,
    other: u64,
}

impl DiskUsage for FakeDisk {
    fn stats(&self) -> std::io::Result<DiskStats> {
        let used = self.other + tree_size(&self.root);
        Ok(DiskStats {
            capacity: self.capacity,
            available: self.capacity.saturating_sub(used),
        })
    }
}

fn tree_size(path: &Path) -> u64 {
    let meta = fs::symlink_metadata(path).unwrap();
    if !meta.is_dir() {
        return meta.len();
    }
    fs::read_dir(path)
        .unwrap()
        .map(|e| tree_size(&e.unwrap().path()))
        .sum()
}

#[test]
fn import_docker_archive_and_oci_layout_then_garbage_collect() {
    if tools_missing() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let layout = build_layout(tmp.path());
    let store = ImageStore::open(tmp.path().join("images")).unwrap();

    // `docker save` format, as skopeo writes it (uncompressed layers, symlinked duplicates).
    let archive = tmp.path().join("busybox.tar");
    run(Command::new("skopeo")
        .args(["copy", "-q"])
        .arg(format!("oci:{}:1.36", layout.display()))
        .arg(format!("docker-archive:{}:busybox:1.36", archive.display())));
    let imported = store.import(&archive, None).unwrap();
    assert_eq!(imported.len(), 1);
    assert_eq!(imported[0].name, "docker.io/library/busybox:1.36");
    assert_eq!(imported[0].config.cmd, vec!["sh"]);
    let docker_layers = store.rootfs_layers("busybox:1.36").unwrap();
    assert!(docker_layers[0].join("bin/busybox").is_file());

    // An OCI layout tarball whose ref names are bare tags: named by the caller.
    let layout_tar = tmp.path().join("layout.tar");
    {
        let mut builder = tar::Builder::new(fs::File::create(&layout_tar).unwrap());
        builder.append_dir_all(".", &layout).unwrap();
        builder.finish().unwrap();
    }
    assert!(
        matches!(
            store.import(&layout_tar, None),
            Err(ImageError::Format { .. })
        ),
        "a layout without full names needs one"
    );
    let imported = store
        .import(&layout_tar, Some("example.com/tools/bb"))
        .unwrap();
    let mut names: Vec<&str> = imported.iter().map(|i| i.name.as_str()).collect();
    names.sort();
    assert_eq!(
        names,
        [
            "example.com/tools/bb:1.36",
            "example.com/tools/bb:2.0",
            "example.com/tools/bb:base"
        ]
    );
    let oci_layers = store.rootfs_layers("example.com/tools/bb:2.0").unwrap();
    assert_eq!(
        oci_layers[0], docker_layers[0],
        "same diff ID, one unpacked directory"
    );
    assert!(
        fs::symlink_metadata(oci_layers[1].join("etc/motd"))
            .unwrap()
            .file_type()
            .is_char_device()
    );
    assert_eq!(dir_entries(&store.root().join("layers")), 2);
    assert!(matches!(
        store.import(&tmp.path().join("layout/index.json"), None),
        Err(ImageError::Format { .. })
    ));

    // GC: everything but the image in use goes once usage passes the high threshold.
    let size = tree_size(store.root());
    let disk = FakeDisk {
        root: store.root().to_path_buf(),
        capacity: size * 100 / 90,
        other: 0,
    };
    let policy = GcPolicy {
        min_age: Duration::ZERO,
        ..GcPolicy::default()
    };
    let in_use: HashSet<String> = ["example.com/tools/bb:2.0".to_string()].into();
    let report = store.gc(&policy, &disk, &in_use).unwrap();
    assert!(report.usage_before_percent >= 85, "{report:?}");
    assert!(report.satisfied(), "{report:?}");
    assert!(report.usage_after_percent <= 80, "{report:?}");
    assert!(
        !report
            .removed
            .contains(&"example.com/tools/bb:2.0".to_string())
    );
    assert!(store.get("example.com/tools/bb:2.0").unwrap().is_some());
    assert_eq!(
        store.rootfs_layers("example.com/tools/bb:2.0").unwrap(),
        oci_layers
    );
    // Below the high threshold nothing is removed.
    let before = store.list().unwrap().len();
    let roomy = FakeDisk {
        capacity: size * 10,
        ..disk
    };
    let report = store.gc(&policy, &roomy, &HashSet::new()).unwrap();
    assert!(report.removed.is_empty());
    assert_eq!(store.list().unwrap().len(), before);
}
