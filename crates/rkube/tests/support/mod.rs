//! Starting a real `rkube server` and driving it with the real `kubectl`.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub struct Server {
    child: Option<Child>,
    pub data_dir: tempfile::TempDir,
    pub port: u16,
    extra: Vec<String>,
    /// Set when the server runs its node agent (real containers).
    pub agent: Option<AgentOptions>,
}

/// What keeps one test cluster's node agent apart from the others on this machine.
#[derive(Debug, Clone)]
pub struct AgentOptions {
    pub node_name: String,
    pub kubelet_port: u16,
    pub cgroup_root: String,
    pub bridge: String,
    pub cluster_cidr: String,
    pub service_cidr: String,
    pub dns_port: u16,
}

/// `--eviction-hard` of test nodes.
pub const TEST_EVICTION_HARD: &str = "memory.available<100Mi,nodefs.available<1%";

impl AgentOptions {
    pub fn unique() -> AgentOptions {
        use std::sync::atomic::{AtomicU32, Ordering};
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let id = std::process::id() % 100_000;
        AgentOptions {
            node_name: format!("node-{id}-{n}"),
            kubelet_port: testing::free_port(),
            cgroup_root: format!("/rkube-test-{id}-{n}/kubepods"),
            bridge: format!("rk{id}x{n}"),
            // A /16 of 10.64.0.0/10 per cluster, so that concurrent test clusters never share pod IPs.
            cluster_cidr: format!("10.{}.0.0/16", 64 + (id * 7 + n) % 64),
            // Likewise for Service IPs: each cluster's proxy table answers for its own.
            service_cidr: format!("10.{}.0.0/16", 128 + (id * 7 + n) % 64),
            dns_port: testing::free_port(),
        }
    }
}

impl Server {
    pub fn start() -> Server {
        Self::start_with(&[])
    }

    pub fn start_with(extra: &[&str]) -> Server {
        let mut server = Server {
            child: None,
            data_dir: tempfile::tempdir().expect("temp dir"),
            port: testing::free_port(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            agent: None,
        };
        server.spawn();
        server
    }

    /// A server that also runs its node agent, so pods run as real containers. `prepare` sees
    /// the data dir before the server starts (e.g. to write `registries.yaml`).
    pub fn start_with_agent(extra: &[&str], prepare: impl FnOnce(&Path)) -> Server {
        let agent = AgentOptions::unique();
        let mut server = Server {
            child: None,
            data_dir: tempfile::tempdir().expect("temp dir"),
            port: testing::free_port(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            agent: Some(agent),
        };
        prepare(server.data_dir.path());
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.data_dir.path().join("server.log"))
            .expect("server log");
        let child = Command::new(env!("CARGO_BIN_EXE_rkube"))
            .arg("server")
            .arg("--data-dir")
            .arg(self.data_dir.path())
            .arg("--https-port")
            .arg(self.port.to_string())
            .arg("--bind-address")
            .arg("127.0.0.1")
            .args(self.agent_args())
            .args(&self.extra)
            .env("RKUBE_LOG", "info,apiserver=debug")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start rkube server");
        self.child = Some(child);
        self.wait_ready();
    }

    fn agent_args(&self) -> Vec<String> {
        match &self.agent {
            None => vec![
                "--disable-agent".into(),
                "--cluster-dns-port".into(),
                "0".into(),
            ],
            Some(a) => vec![
                "--node-name".into(),
                a.node_name.clone(),
                "--kubelet-port".into(),
                a.kubelet_port.to_string(),
                "--cgroup-root".into(),
                a.cgroup_root.clone(),
                "--cni-bridge".into(),
                a.bridge.clone(),
                "--cluster-cidr".into(),
                a.cluster_cidr.clone(),
                "--service-cidr".into(),
                a.service_cidr.clone(),
                "--cluster-dns-port".into(),
                a.dns_port.to_string(),
                // Build machines fill their disks with target dirs; these tests are not about
                // disk pressure, so only a really full disk taints the node.
                "--eviction-hard".into(),
                TEST_EVICTION_HARD.into(),
            ],
        }
    }

    /// Stop every container, sandbox, mount and cgroup the node agent made (`rkube killall`).
    pub fn clean_up_agent(&self) {
        let Some(a) = &self.agent else { return };
        let out = Command::new(env!("CARGO_BIN_EXE_rkube"))
            .arg("killall")
            .arg("--data-dir")
            .arg(self.data_dir.path())
            .arg("--cgroup-root")
            .arg(&a.cgroup_root)
            .arg("--cni-bridge")
            .arg(&a.bridge)
            .output()
            .expect("run rkube killall");
        if !out.status.success() {
            eprintln!(
                "rkube killall failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }

    pub fn kubeconfig(&self) -> PathBuf {
        self.data_dir.path().join("kubeconfig.yaml")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.data_dir.path().join("server.log")).unwrap_or_default()
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("rkube server exited with {status}:\n{}", self.log());
            }
            if self.kubeconfig().exists() {
                let out = self.kubectl(&["get", "--raw", "/readyz"]);
                if out.status.success() {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "rkube server not ready in 30 s:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGKILL the server: nothing gets a chance to flush.
    pub fn kill_9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("kill -9 rkube");
            child.wait().expect("reap rkube");
        }
    }

    pub fn restart(&mut self) {
        self.kill_9();
        self.spawn();
    }

    pub fn kubectl_cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(kubectl_binary());
        cmd.arg("--kubeconfig").arg(self.kubeconfig()).args(args);
        cmd.env_remove("KUBECONFIG");
        cmd
    }

    pub fn kubectl(&self, args: &[&str]) -> Output {
        self.kubectl_cmd(args).output().expect("run kubectl")
    }

    /// Run kubectl and insist it succeeds; returns stdout.
    pub fn kubectl_ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(
            out.status.success(),
            "kubectl {} failed:\nstdout: {}\nstderr: {}\nserver log tail:\n{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            tail(&self.log(), 30)
        );
        String::from_utf8(out.stdout).expect("utf-8 output")
    }

    /// Run kubectl and insist it fails; returns stderr.
    pub fn kubectl_err(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(
            !out.status.success(),
            "kubectl {} should have failed:\nstdout: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// kubectl with a manifest on stdin.
    pub fn kubectl_stdin(&self, args: &[&str], input: &str) -> Output {
        use std::io::Write;
        let mut child = self
            .kubectl_cmd(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run kubectl");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    }

    pub fn apply(&self, manifest: &str) -> String {
        let out = self.kubectl_stdin(&["apply", "-f", "-"], manifest);
        assert!(
            out.status.success(),
            "apply failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// `kubectl get -o json` parsed.
    pub fn get_json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = vec!["get"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["-o", "json"]);
        serde_json::from_str(&self.kubectl_ok(&all)).expect("kubectl printed JSON")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill_9();
        self.clean_up_agent();
    }
}

pub fn kubectl_binary() -> String {
    std::env::var("KUBECTL").unwrap_or_else(|_| "kubectl".into())
}

pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// The acceptance manifests shipped beside the repository (`../shared/acceptance/manifests`).
pub fn seed_manifests() -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    let candidates = [
        here.join("../../../shared/acceptance/manifests"),
        here.join("../../shared/acceptance/manifests"),
    ];
    candidates
        .iter()
        .find(|p| p.is_dir())
        .cloned()
        .unwrap_or_else(|| {
            panic!("acceptance manifests not found beside the repository: {candidates:?}")
        })
}

/// Poll `check` until it returns Some, or panic after `timeout`.
pub fn eventually<T>(timeout: Duration, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A raw HTTPS request with curl, as the admin (or anonymously); returns (status, body).
impl Server {
    pub fn raw(
        &self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
        content_type: &str,
        anonymous: bool,
    ) -> (u16, String) {
        let dir = self.data_dir.path();
        let tls = dir.join("tls");
        let mut cmd = Command::new("curl");
        cmd.args(["-sS", "-o", "-", "-w", "\n%{http_code}", "-X", method])
            .arg("--cacert")
            .arg(tls.join("server-ca.crt"))
            .arg("-H")
            .arg(format!("Content-Type: {content_type}"));
        if !anonymous {
            cmd.arg("--cert")
                .arg(tls.join("client-admin.crt"))
                .arg("--key")
                .arg(tls.join("client-admin.key"));
        }
        let body_file = dir.join("curl-body");
        if let Some(body) = body {
            std::fs::write(&body_file, body).unwrap();
            cmd.arg("--data-binary")
                .arg(format!("@{}", body_file.display()));
        }
        cmd.arg(format!("https://127.0.0.1:{}{}", self.port, path));
        let out = cmd.output().expect("run curl");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
        (code.trim().parse().unwrap_or(0), body.to_string())
    }
}

/// Build a busybox image offline with umoci (as `shared/acceptance/images.sh` does) and import
/// it as `name` into the image store of `data_dir` (before the server starts).
pub fn import_busybox(data_dir: &Path, name: &str) {
    let work = tempfile::tempdir().expect("temp dir");
    let layout = busybox_layout(work.path());
    let run = |cmd: &mut Command| {
        let out = cmd.output().expect("run image tool");
        assert!(
            out.status.success(),
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let tar = work.path().join("image.tar");
    run(Command::new("tar")
        .arg("-C")
        .arg(&layout)
        .arg("-cf")
        .arg(&tar)
        .arg("."));
    run(Command::new(env!("CARGO_BIN_EXE_rkube"))
        .arg("images")
        .arg("--data-dir")
        .arg(data_dir)
        .arg("import")
        .arg(&tar)
        .args(["--name", name]));
}

/// Build a busybox image offline with umoci in `work`: an OCI layout whose one image is
/// tagged `img`. Returns the layout directory.
pub fn busybox_layout(work: &Path) -> PathBuf {
    let layout = work.join("layout");
    let bundle = work.join("bundle");
    let run = |cmd: &mut Command| {
        let out = cmd.output().expect("run image tool");
        assert!(
            out.status.success(),
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let image = format!("{}:img", layout.display());
    run(Command::new("umoci")
        .arg("init")
        .arg("--layout")
        .arg(&layout));
    run(Command::new("umoci").args(["new", "--image", &image]));
    run(Command::new("umoci")
        .args(["unpack", "--rootless", "--image", &image])
        .arg(&bundle));
    let root = bundle.join("rootfs");
    for dir in ["bin", "tmp", "etc"] {
        std::fs::create_dir_all(root.join(dir)).unwrap();
    }
    std::fs::copy("/usr/bin/busybox", root.join("bin/busybox")).expect("copy busybox");
    let applets = Command::new("/usr/bin/busybox")
        .arg("--list")
        .output()
        .unwrap();
    for applet in String::from_utf8_lossy(&applets.stdout).lines() {
        let link = root.join("bin").join(applet);
        if !link.exists() {
            std::os::unix::fs::symlink("busybox", link).unwrap();
        }
    }
    std::fs::write(root.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
    std::fs::write(root.join("etc/group"), "root:x:0:\n").unwrap();
    run(Command::new("umoci")
        .args(["repack", "--image", &image])
        .arg(&bundle));
    run(Command::new("umoci").args([
        "config",
        "--image",
        &image,
        "--config.env",
        "PATH=/bin",
        "--config.cmd",
        "sh",
    ]));
    let _ = std::fs::remove_dir_all(&bundle);
    layout
}

/// A docker-registry of the test's own on a free loopback port, killed on drop.
pub struct Registry {
    child: Child,
    pub addr: String,
    _dir: tempfile::TempDir,
}

impl Registry {
    pub fn start() -> Registry {
        let dir = tempfile::tempdir().expect("temp dir");
        let addr = format!("127.0.0.1:{}", testing::free_port());
        let config = dir.path().join("registry.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n",
                dir.path().join("data").display()
            ),
        )
        .expect("write registry config");
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start docker-registry (scripts/install-deps.sh installs it)");
        let registry = Registry {
            child,
            addr,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !registry.answers() {
            assert!(Instant::now() < deadline, "docker-registry did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        registry
    }

    /// Push the offline busybox image (see [`busybox_layout`]) as `repository:tag`.
    pub fn push_busybox(&self, repository: &str, tag: &str) {
        let work = tempfile::tempdir().expect("temp dir");
        let layout = busybox_layout(work.path());
        let out = Command::new("skopeo")
            .args(["copy", "--dest-tls-verify=false"])
            .arg(format!("oci:{}:img", layout.display()))
            .arg(format!("docker://{}/{repository}:{tag}", self.addr))
            .output()
            .expect("run skopeo");
        assert!(
            out.status.success(),
            "skopeo copy failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn answers(&self) -> bool {
        Command::new("curl")
            .args([
                "-sf",
                "-o",
                "/dev/null",
                &format!("http://{}/v2/", self.addr),
            ])
            .status()
            .is_ok_and(|s| s.success())
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
