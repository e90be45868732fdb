//! A real `rkube server` started by the benchmark, and what it costs in memory.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use http::{Method, StatusCode};

use crate::BenchError;
use crate::client::ApiClient;
use crate::figure::kib_field;

/// How long a start may take before the run fails (a debug build on a busy machine is slow).
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a graceful stop may take before SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// A running `rkube server --disable-agent` (or with its agent, see
/// [`ServerProcess::spawn_with_agent`]) on 127.0.0.1, killed (and reaped) on drop.
pub struct ServerProcess {
    child: Option<Child>,
    data_dir: PathBuf,
    log: PathBuf,
    port: u16,
}

impl ServerProcess {
    /// Starts `binary server` with its data in `data_dir` on `port`; its log goes to
    /// `<data_dir>.log`. Does not wait: see [`ServerProcess::wait_ready`].
    pub fn spawn(binary: &Path, data_dir: &Path, port: u16) -> Result<Self, BenchError> {
        Self::spawn_with(binary, data_dir, port, &[])
    }

    /// [`ServerProcess::spawn`] with more flags for `rkube server` (e.g. `--cluster-cidr`).
    pub fn spawn_with(
        binary: &Path,
        data_dir: &Path,
        port: u16,
        extra_args: &[&str],
    ) -> Result<Self, BenchError> {
        Self::spawn_server(binary, data_dir, port, false, extra_args)
    }

    /// [`ServerProcess::spawn_with`], but the server runs its node agent (no
    /// `--disable-agent`): pass the flags that keep its node apart from others on the machine.
    pub fn spawn_with_agent(
        binary: &Path,
        data_dir: &Path,
        port: u16,
        extra_args: &[&str],
    ) -> Result<Self, BenchError> {
        Self::spawn_server(binary, data_dir, port, true, extra_args)
    }

    fn spawn_server(
        binary: &Path,
        data_dir: &Path,
        port: u16,
        agent: bool,
        extra_args: &[&str],
    ) -> Result<Self, BenchError> {
        let log = data_dir.with_extension("log");
        let io = |context: String| move |source| BenchError::Io { context, source };
        let out = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .map_err(io(format!("open server log {}", log.display())))?;
        let child = Command::new(binary)
            .arg("server")
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--https-port")
            .arg(port.to_string())
            .arg("--bind-address")
            .arg("127.0.0.1")
            .args((!agent).then_some("--disable-agent"))
            .args(["--cluster-dns-port", "0"])
            .args(extra_args)
            .env_remove("RKUBE_DATA_DIR")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(out)
            .spawn()
            .map_err(io(format!("start {} server", binary.display())))?;
        Ok(Self {
            child: Some(child),
            data_dir: data_dir.to_path_buf(),
            log,
            port,
        })
    }

    /// Starts the server and waits until `/readyz` answers 200; returns it with a client.
    pub async fn start(
        binary: &Path,
        data_dir: &Path,
        port: u16,
    ) -> Result<(Self, ApiClient), BenchError> {
        Self::start_with(binary, data_dir, port, &[]).await
    }

    /// [`ServerProcess::start`] with more flags for `rkube server`.
    pub async fn start_with(
        binary: &Path,
        data_dir: &Path,
        port: u16,
        extra_args: &[&str],
    ) -> Result<(Self, ApiClient), BenchError> {
        let mut server = Self::spawn_with(binary, data_dir, port, extra_args)?;
        let client = server.wait_ready(None).await?;
        Ok((server, client))
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn kubeconfig(&self) -> PathBuf {
        self.data_dir.join("kubeconfig.yaml")
    }

    /// Polls `GET /readyz` every 2 ms until it answers 200 (the poll interval bounds the
    /// error of a startup time). Uses `client` if given, else the kubeconfig once it exists.
    pub async fn wait_ready(&mut self, client: Option<ApiClient>) -> Result<ApiClient, BenchError> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut client = client;
        let mut last_error = String::from("no kubeconfig yet");
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                return Err(self.failed(format!("exited with {status}")));
            }
            if client.is_none() && self.kubeconfig().exists() {
                // The file may be half written at the first look; try again at the next.
                match ApiClient::from_kubeconfig(&self.kubeconfig()) {
                    Ok(c) => client = Some(c),
                    Err(e) => last_error = e.to_string(),
                }
            }
            if let Some(client) = &client {
                match ready(client).await {
                    Ok(()) => return Ok(client.clone()),
                    Err(e) => last_error = e.to_string(),
                }
            }
            if Instant::now() >= deadline {
                return Err(self.failed(format!(
                    "not ready within {} s: {last_error}",
                    READY_TIMEOUT.as_secs()
                )));
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// The resident set size now, from `/proc/<pid>/status` (VmRSS).
    pub fn rss_bytes(&self) -> Result<u64, BenchError> {
        let pid = self
            .pid()
            .ok_or_else(|| self.failed("not running".into()))?;
        rss_bytes(pid)
    }

    /// Stops the server with SIGTERM, as a user would, and SIGKILL if it does not exit in time.
    pub fn stop(&mut self) -> Result<(), BenchError> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let pid = child.id().to_string();
        // std has no way to send SIGTERM; `kill(1)` from procps is on every Linux.
        let sent = Command::new("kill")
            .args(["-TERM", &pid])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        let deadline = Instant::now() + STOP_TIMEOUT;
        while sent && Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = child.kill();
        child.wait().map_err(|source| BenchError::Io {
            context: format!("wait for rkube server (pid {pid})"),
            source,
        })?;
        Ok(())
    }

    fn failed(&self, reason: String) -> BenchError {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        BenchError::Server {
            reason,
            log: lines[lines.len().saturating_sub(20)..].join("\n"),
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

async fn ready(client: &ApiClient) -> Result<(), BenchError> {
    let mut conn = client.connect().await?;
    conn.expect(Method::GET, "/readyz", None, StatusCode::OK)
        .await?;
    Ok(())
}

/// The resident set size of a process, from `/proc/<pid>/status` (VmRSS).
pub fn rss_bytes(pid: u32) -> Result<u64, BenchError> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).map_err(|source| BenchError::Io {
        context: format!("read {path}"),
        source,
    })?;
    kib_field(&text, "VmRSS:")
        .map(|kib| kib * 1024)
        .ok_or_else(|| BenchError::Scenario(format!("{path} has no VmRSS line")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_rss() {
        let rss = rss_bytes(std::process::id()).unwrap();
        assert!(rss > 1024 * 1024, "{rss}");
    }
}
