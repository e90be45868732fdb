//! A single-member etcd cluster on loopback, owned by a test.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{Error, Result, free_ports, skip_etcd};

/// Where Debian's `etcd-server` package installs the server.
pub const ETCD_BINARY: &str = "/usr/bin/etcd";

/// How long a fresh or restarted etcd may take to elect itself leader and answer.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// A running `etcd` with its data in a temporary directory.
///
/// The process is killed (and reaped) on drop; the directory is removed after it.
pub struct EtcdProcess {
    child: Option<Child>,
    client_port: u16,
    peer_port: u16,
    // Declared last so the process is gone before its data directory is removed.
    dir: tempfile::TempDir,
}

impl EtcdProcess {
    /// Starts etcd on two free loopback ports and waits until it reports healthy.
    pub fn start() -> Result<Self> {
        if !Path::new(ETCD_BINARY).exists() {
            return Err(Error::EtcdNotInstalled {
                path: ETCD_BINARY.into(),
            });
        }
        let dir = tempfile::Builder::new()
            .prefix("rkube-etcd-")
            .tempdir()
            .map_err(|source| Error::Io {
                context: "create data directory for etcd".into(),
                source,
            })?;
        let [client_port, peer_port] = free_ports::<2>();
        let mut etcd = Self {
            child: None,
            client_port,
            peer_port,
            dir,
        };
        etcd.spawn()?;
        Ok(etcd)
    }

    /// For tests: starts etcd, or returns `None` when it is not installed and
    /// `RKUBE_SKIP_ETCD=1` is set.
    ///
    /// # Panics
    /// On any other failure, including etcd missing without `RKUBE_SKIP_ETCD=1`.
    pub fn start_for_test() -> Option<Self> {
        match Self::start() {
            Ok(etcd) => Some(etcd),
            Err(err @ Error::EtcdNotInstalled { .. }) if skip_etcd() => {
                eprintln!("skipping: {err}");
                None
            }
            Err(err) => panic!("{err}"),
        }
    }

    /// The client URL, `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    pub fn client_port(&self) -> u16 {
        self.client_port
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The process id, while etcd runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Kills etcd with SIGKILL, as a crash or power loss would, and reaps it.
    pub fn kill_9(&mut self) -> Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        // `Child::kill` sends SIGKILL on Unix.
        let killed = child.kill();
        child.wait().map_err(|source| Error::Io {
            context: format!("wait for etcd (pid {}) to exit", child.id()),
            source,
        })?;
        // kill fails only if the process had already exited, which is what we wanted.
        let _ = killed;
        Ok(())
    }

    /// Starts etcd again on the same data directory and ports (killing it first if it still
    /// runs) and waits until it is healthy.
    pub fn restart(&mut self) -> Result<()> {
        self.kill_9()?;
        self.spawn()
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("etcd.log")
    }

    fn spawn(&mut self) -> Result<()> {
        let client_url = self.endpoint();
        let peer_url = format!("http://127.0.0.1:{}", self.peer_port);
        // One log for every run, so a failure after restart still shows the first run.
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .map_err(|source| Error::Io {
                context: format!("open etcd log {}", self.log_path().display()),
                source,
            })?;
        let log_err = log.try_clone().map_err(|source| Error::Io {
            context: "duplicate etcd log handle".into(),
            source,
        })?;
        let child = Command::new(ETCD_BINARY)
            .arg("--name=rkube-test")
            .arg(format!("--data-dir={}", self.data_dir().display()))
            .arg(format!("--listen-client-urls={client_url}"))
            .arg(format!("--advertise-client-urls={client_url}"))
            .arg(format!("--listen-peer-urls={peer_url}"))
            .arg(format!("--initial-advertise-peer-urls={peer_url}"))
            .arg(format!("--initial-cluster=rkube-test={peer_url}"))
            .arg("--initial-cluster-state=new")
            .arg("--logger=zap")
            .arg("--log-outputs=stderr")
            .env_clear()
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .map_err(|source| Error::Io {
                context: format!("start {ETCD_BINARY}"),
                source,
            })?;
        self.child = Some(child);
        self.wait_ready()
    }

    /// Polls `/health` on the client port (etcd serves HTTP/1 there beside gRPC); it turns
    /// healthy once the member is leader and can serve a quorum read.
    fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.client_port));
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                return Err(self.not_ready(format!("etcd exited with {status}")));
            }
            let reason = match health(addr) {
                Ok(()) => return Ok(()),
                Err(why) => why,
            };
            if Instant::now() >= deadline {
                let _ = self.kill_9();
                return Err(self.not_ready(reason));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn not_ready(&self, reason: String) -> Error {
        Error::EtcdNotReady {
            endpoint: self.endpoint(),
            seconds: READY_TIMEOUT.as_secs(),
            reason,
            log: log_tail(&self.log_path(), 20),
        }
    }
}

impl Drop for EtcdProcess {
    fn drop(&mut self) {
        let _ = self.kill_9();
    }
}

impl std::fmt::Debug for EtcdProcess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdProcess")
            .field("endpoint", &self.endpoint())
            .field("pid", &self.pid())
            .field("dir", &self.dir.path())
            .finish()
    }
}

/// One `GET /health`; `Err` says why etcd is not healthy yet.
fn health(addr: SocketAddr) -> Result<(), String> {
    let timeout = Duration::from_secs(1);
    let mut conn =
        TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("connect: {e}"))?;
    conn.set_read_timeout(Some(timeout))
        .and_then(|()| conn.set_write_timeout(Some(timeout)))
        .map_err(|e| format!("set socket timeout: {e}"))?;
    conn.write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .map_err(|e| format!("send health request: {e}"))?;
    let mut response = String::new();
    conn.read_to_string(&mut response)
        .map_err(|e| format!("read health response: {e}"))?;
    let status_ok = response.starts_with("HTTP/1.1 200");
    let healthy = response.replace(' ', "").contains(r#""health":"true""#);
    if status_ok && healthy {
        Ok(())
    } else {
        let first = response.lines().next().unwrap_or("empty response");
        let body = response.rsplit("\r\n\r\n").next().unwrap_or("");
        Err(format!("unhealthy: {first} {body}"))
    }
}

fn log_tail(path: &Path, lines: usize) -> String {
    let mut text = String::new();
    if File::open(path)
        .and_then(|mut f| f.read_to_string(&mut text))
        .is_err()
    {
        return format!("(no log at {})", path.display());
    }
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
