//! `runc exec`: interactive execs (kubectl exec, attach-like streams) and run-to-completion
//! execs for probes and hooks.
//!
//! A TTY exec gives runc one side of a pty pair we create as its stdio: runc puts that
//! terminal in raw mode and copies between it and the container's own pty, and applies our
//! terminal's size to the container's on SIGWINCH. (A console socket would need `runc exec -d`,
//! whose process is then nobody's child and its exit code lost.)

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::Stdio;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

use super::{ExecProcess, ExecSpec, Result, RuntimeConfig, RuntimeError, runc};

const TIMED_OUT: &str = "timed out";

/// exec_sync keeps this much output.
const MAX_OUTPUT: usize = 10 * 1024;

fn exec_error(id: &str, message: impl Into<String>) -> RuntimeError {
    RuntimeError::Runc {
        command: "exec".to_string(),
        id: id.to_string(),
        message: message.into(),
    }
}

/// `<dir>/exec-<random>.json`: the container's process with other args (and a terminal).
fn write_process(dir: &Path, id: &str, command: &[String], tty: bool) -> Result<PathBuf> {
    if command.is_empty() {
        return Err(exec_error(id, "no command specified"));
    }
    let config = dir.join("config.json");
    let spec = oci_spec::runtime::Spec::load(&config)
        .map_err(|e| exec_error(id, format!("reading {}: {e}", config.display())))?;
    let mut process = spec.process().clone().unwrap_or_default();
    process.set_args(Some(command.to_vec()));
    process.set_terminal(Some(tty));
    let mut env = process.env().clone().unwrap_or_default();
    if tty && !env.iter().any(|e| e.starts_with("TERM=")) {
        env.push("TERM=xterm".to_string());
        process.set_env(Some(env));
    }
    let name = format!("exec-{}.json", &super::new_id()?[..16]);
    let path = dir.join(name);
    let json = serde_json::to_vec(&process)
        .map_err(|e| exec_error(id, format!("encoding the process: {e}")))?;
    std::fs::write(&path, json).map_err(super::io_error(&path))?;
    Ok(path)
}

fn exit_code(status: io::Result<std::process::ExitStatus>) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    match status {
        Ok(s) => s.code().or(s.signal().map(|sig| 128 + sig)).unwrap_or(255),
        Err(_) => 255,
    }
}

pub(crate) async fn exec(
    config: &RuntimeConfig,
    id: &str,
    dir: &Path,
    spec: &ExecSpec,
) -> Result<ExecProcess> {
    let process = write_process(dir, id, &spec.command, spec.tty)?;
    let mut cmd = runc::command(config);
    cmd.arg("exec").arg("--process").arg(&process).arg(id);
    let result = if spec.tty {
        exec_tty(cmd, id, spec).await
    } else {
        exec_pipes(cmd, id, spec).await
    };
    match result {
        Ok((exec, child)) => {
            let (tx, rx) = tokio::sync::oneshot::channel();
            tokio::spawn(async move {
                let mut child = child;
                let code = exit_code(child.wait().await);
                let _ = std::fs::remove_file(&process);
                let _ = tx.send(code);
            });
            Ok(ExecProcess { exit: rx, ..exec })
        }
        Err(e) => {
            let _ = std::fs::remove_file(&process);
            Err(e)
        }
    }
}

type Started = (ExecProcess, tokio::process::Child);

async fn exec_pipes(
    mut cmd: tokio::process::Command,
    id: &str,
    spec: &ExecSpec,
) -> Result<Started> {
    let pipe_or_null = |on: bool| if on { Stdio::piped() } else { Stdio::null() };
    cmd.stdin(pipe_or_null(spec.stdin))
        .stdout(pipe_or_null(spec.stdout))
        .stderr(pipe_or_null(spec.stderr));
    let mut child = cmd
        .spawn()
        .map_err(|e| exec_error(id, format!("running runc: {e}")))?;
    let (_, placeholder) = tokio::sync::oneshot::channel();
    let exec = ExecProcess {
        stdin: child
            .stdin
            .take()
            .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncWrite + Send + Unpin>),
        stdout: child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Send + Unpin>),
        stderr: child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Send + Unpin>),
        exit: placeholder,
        resize: None,
    };
    Ok((exec, child))
}

async fn exec_tty(mut cmd: tokio::process::Command, id: &str, spec: &ExecSpec) -> Result<Started> {
    use rustix::pty::OpenptFlags;
    let pty_err = |e: rustix::io::Errno| exec_error(id, format!("allocating a pty: {e}"));
    let master =
        rustix::pty::openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC)
            .map_err(pty_err)?;
    rustix::pty::grantpt(&master).map_err(pty_err)?;
    rustix::pty::unlockpt(&master).map_err(pty_err)?;
    let name = rustix::pty::ptsname(&master, Vec::new()).map_err(pty_err)?;
    let slave: OwnedFd = std::fs::File::options()
        .read(true)
        .write(true)
        .custom_flags(rustix::fs::OFlags::NOCTTY.bits() as i32)
        .open(name.to_string_lossy().as_ref())
        .map_err(|e| exec_error(id, format!("opening the pty: {e}")))?
        .into();
    let dup = |fd: &OwnedFd| {
        fd.try_clone()
            .map_err(|e| exec_error(id, format!("duplicating the pty: {e}")))
    };
    cmd.arg("--tty")
        .stdin(Stdio::from(dup(&slave)?))
        .stdout(Stdio::from(dup(&slave)?))
        .stderr(Stdio::from(slave));
    let child = cmd
        .spawn()
        .map_err(|e| exec_error(id, format!("running runc: {e}")))?;
    // The Command held the slave's copies; dropped with it once runc has them.
    drop(cmd);
    let runc_pid = child.id();
    rustix::fs::fcntl_setfl(&master, rustix::fs::OFlags::NONBLOCK)
        .map_err(|e| exec_error(id, format!("pty: {e}")))?;
    // SAFETY: the AsyncFd owns the OwnedFd, so the descriptor stays open and the same for
    // the AsyncFd's whole life (tokio's requirement for registering it).
    #[allow(unsafe_code)]
    let master =
        unsafe { AsyncFd::register(master) }.map_err(|e| exec_error(id, format!("pty: {e}")))?;
    let master = Arc::new(master);
    let (resize_tx, mut resize_rx) = tokio::sync::mpsc::unbounded_channel::<(u16, u16)>();
    let for_resize = master.clone();
    tokio::spawn(async move {
        while let Some((cols, rows)) = resize_rx.recv().await {
            let size = rustix::termios::Winsize {
                ws_row: rows,
                ws_col: cols,
                ws_xpixel: 0,
                ws_ypixel: 0,
            };
            if rustix::termios::tcsetwinsize(for_resize.get_ref(), size).is_err() {
                break;
            }
            // runc reads our terminal's size on SIGWINCH; it may not listen yet right after
            // start, so tell it twice.
            let Some(pid) = runc_pid.and_then(|p| rustix::process::Pid::from_raw(p as i32)) else {
                break;
            };
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::WINCH);
            tokio::time::sleep(Duration::from_millis(100)).await;
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::WINCH);
        }
    });
    let (_, placeholder) = tokio::sync::oneshot::channel();
    let exec = ExecProcess {
        stdin: spec
            .stdin
            .then(|| Box::new(PtyMaster(master.clone())) as Box<dyn AsyncWrite + Send + Unpin>),
        stdout: Some(Box::new(PtyMaster(master))),
        stderr: None,
        exit: placeholder,
        resize: Some(resize_tx),
    };
    Ok((exec, child))
}

use std::os::unix::fs::OpenOptionsExt;

/// The agent's end of an exec's terminal.
struct PtyMaster(Arc<AsyncFd<OwnedFd>>);

impl AsyncRead for PtyMaster {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            let mut guard = ready!(self.0.poll_read_ready(cx))?;
            let unfilled = buf.initialize_unfilled();
            match guard.try_io(|fd| {
                rustix::io::read(fd.get_ref().as_fd(), &mut *unfilled).map_err(io::Error::from)
            }) {
                Ok(Ok(n)) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                // EIO: every slave is closed (the exec ended): that is EOF on a pty.
                Ok(Err(e)) if e.raw_os_error() == Some(rustix::io::Errno::IO.raw_os_error()) => {
                    return Poll::Ready(Ok(()));
                }
                Ok(Err(e)) => return Poll::Ready(Err(e)),
                Err(_would_block) => continue,
            }
        }
    }
}

impl AsyncWrite for PtyMaster {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        loop {
            let mut guard = ready!(self.0.poll_write_ready(cx))?;
            match guard
                .try_io(|fd| rustix::io::write(fd.get_ref().as_fd(), data).map_err(io::Error::from))
            {
                Ok(result) => return Poll::Ready(result),
                Err(_would_block) => continue,
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

pub(crate) async fn exec_sync(
    config: &RuntimeConfig,
    id: &str,
    dir: &Path,
    command: &[String],
    timeout: Duration,
) -> Result<(i32, Vec<u8>)> {
    let process = write_process(dir, id, command, false)?;
    let pid_file = process.with_extension("pid");
    let result = exec_sync_inner(config, id, &process, &pid_file, timeout)
        .await
        .map_err(|e| match e {
            RuntimeError::Runc { message, .. } if message == TIMED_OUT => exec_error(
                id,
                format!("command {command:?} timed out after {timeout:?}"),
            ),
            other => other,
        });
    let _ = std::fs::remove_file(&process);
    let _ = std::fs::remove_file(&pid_file);
    result
}

async fn exec_sync_inner(
    config: &RuntimeConfig,
    id: &str,
    process: &Path,
    pid_file: &Path,
    timeout: Duration,
) -> Result<(i32, Vec<u8>)> {
    let (reader, writer) = std::io::pipe().map_err(|e| exec_error(id, format!("pipe: {e}")))?;
    let writer = OwnedFd::from(writer);
    let mut cmd = runc::command(config);
    cmd.arg("exec")
        .arg("--process")
        .arg(process)
        .arg("--pid-file")
        .arg(pid_file)
        .arg(id)
        .stdin(Stdio::null())
        .stdout(Stdio::from(
            writer
                .try_clone()
                .map_err(|e| exec_error(id, format!("pipe: {e}")))?,
        ))
        .stderr(Stdio::from(writer));
    let mut child = cmd
        .spawn()
        .map_err(|e| exec_error(id, format!("running runc: {e}")))?;
    // Only runc and the process hold the write end now: EOF when they are done.
    drop(cmd);
    let mut reader = tokio::net::unix::pipe::Receiver::from_owned_fd(OwnedFd::from(reader))
        .map_err(|e| exec_error(id, format!("pipe: {e}")))?;
    let run = async {
        let mut output = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match reader.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let room = MAX_OUTPUT.saturating_sub(output.len());
                    output.extend_from_slice(&buf[..n.min(room)]);
                }
            }
        }
        (exit_code(child.wait().await), output)
    };
    match tokio::time::timeout(timeout, run).await {
        Ok(result) => Ok(result),
        Err(_) => {
            // Killing runc would leave the process running: kill the process itself.
            if let Some(pid) = std::fs::read_to_string(pid_file)
                .ok()
                .and_then(|s| s.trim().parse::<i32>().ok())
                .and_then(rustix::process::Pid::from_raw)
            {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            }
            let _ = child.start_kill();
            let _ = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
            Err(exec_error(id, TIMED_OUT))
        }
    }
}
