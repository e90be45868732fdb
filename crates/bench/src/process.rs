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

/// The proportional set size of a process (`Pss:` of `/proc/<pid>/smaps_rollup`): its
/// private pages plus its share of the pages it shares.
pub fn pss_bytes(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    kib_field(&text, "Pss:").map(|kib| kib * 1024)
}

/// CPU time of a process so far, in clock ticks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuTicks {
    /// utime+stime: its own threads.
    pub own: u64,
    /// cutime+cstime: the children it waited for (e.g. the runc runs of an agent).
    pub children: u64,
}

impl CpuTicks {
    /// Reads `/proc/<pid>/stat`.
    pub fn of(pid: u32) -> Result<Self, BenchError> {
        let path = format!("/proc/{pid}/stat");
        let text = std::fs::read_to_string(&path).map_err(|source| BenchError::Io {
            context: format!("read {path}"),
            source,
        })?;
        Self::parse(&text).ok_or_else(|| BenchError::Scenario(format!("{path}: unexpected format")))
    }

    /// Fields 14–17 of a `/proc/<pid>/stat` line; the command name in parentheses may hold
    /// spaces, so fields are counted after the last `)`.
    fn parse(stat: &str) -> Option<Self> {
        let rest = &stat[stat.rfind(')')? + 1..];
        let fields: Vec<u64> = rest
            .split_whitespace()
            .skip(11)
            .take(4)
            .map(str::parse)
            .collect::<Result<_, _>>()
            .ok()?;
        (fields.len() == 4).then(|| Self {
            own: fields[0] + fields[1],
            children: fields[2] + fields[3],
        })
    }
}

/// Clock ticks per second (`getconf CLK_TCK`; 100 on every Linux this runs on otherwise).
pub fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// The CPU a process used over `window`, in % of one core: its own and with the children it
/// reaped.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CpuUse {
    pub own_percent: f64,
    pub with_children_percent: f64,
    pub window: Duration,
}

/// Samples the process's CPU ticks before and after `window`.
pub async fn cpu_use(pid: u32, window: Duration) -> Result<CpuUse, BenchError> {
    let before = CpuTicks::of(pid)?;
    let began = Instant::now();
    tokio::time::sleep(window).await;
    let after = CpuTicks::of(pid)?;
    let elapsed = began.elapsed();
    let percent = |ticks: u64| ticks as f64 / clock_ticks() / elapsed.as_secs_f64() * 100.0;
    let own = after.own.saturating_sub(before.own);
    let children = after.children.saturating_sub(before.children);
    Ok(CpuUse {
        own_percent: percent(own),
        with_children_percent: percent(own + children),
        window: elapsed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_rss() {
        let rss = rss_bytes(std::process::id()).unwrap();
        assert!(rss > 1024 * 1024, "{rss}");
    }

    #[test]
    fn parses_cpu_ticks_after_the_command_name() {
        let stat =
            "1234 (rkube agent) S 1 1234 1234 0 -1 4194560 5000 0 0 0 150 25 7 3 20 0 4 0 100 0 0";
        assert_eq!(
            CpuTicks::parse(stat),
            Some(CpuTicks {
                own: 175,
                children: 10
            })
        );
        assert_eq!(CpuTicks::parse("1234 (x) S 1"), None);
    }

    #[tokio::test]
    async fn own_cpu_use_is_read() {
        let pid = std::process::id();
        assert!(CpuTicks::of(pid).is_ok());
        assert!(pss_bytes(pid).is_some_and(|b| b > 0));
        let used = cpu_use(pid, Duration::from_millis(50)).await.unwrap();
        assert!(used.own_percent >= 0.0 && used.own_percent.is_finite());
        assert!(used.with_children_percent >= used.own_percent);
        assert!(used.window >= Duration::from_millis(50));
    }
}
