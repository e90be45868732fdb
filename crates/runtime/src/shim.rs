//! The per-container shim: a small process of its own (`rkube shim ...`, started with
//! `setsid`) that owns one container: it creates and starts it with runc, copies its stdout and
//! stderr into the log file in the CRI format, reaps it and records how it exited. The agent
//! can restart while containers keep running.
//!
//! Life of a shim: the agent starts `shim --detached` with a pipe on stdout and stderr on
//! `shim.log` (`shim` without `--detached` re-executes itself detached and exits at once, for
//! callers that cannot reap it). The detached shim calls `setsid`, becomes a child subreaper
//! (so the container's init, forked by runc, is reparented to it), runs `runc run --detach`
//! with pipes as the container's stdio, reports one [`StartStatus`] line on the pipe and
//! closes it, then copies output to the log until the container exits, writes `exit.json`
//! and runs `runc delete`.
//!
//! No async runtime and no threads: one `poll` over the two pipes and a pidfd.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use rustix::event::{PollFd, PollFlags};
use rustix::process::{Pid, PidfdFlags, WaitOptions};
use serde::{Deserialize, Serialize};

use crate::container::ExitInfo;

/// `rkube shim ...` (hidden): arguments the runtime passes to the shim.
#[derive(Debug, Clone, clap::Args)]
pub struct ShimArgs {
    /// The container's ID.
    #[arg(long)]
    pub id: String,
    /// The container's directory (bundle, meta, exit record).
    #[arg(long)]
    pub bundle: PathBuf,
    #[arg(long)]
    pub runc: PathBuf,
    #[arg(long)]
    pub runc_root: PathBuf,
    #[arg(long)]
    pub log_path: PathBuf,
    #[arg(long, default_value_t = 10 * 1024 * 1024)]
    pub log_max_size: u64,
    /// Keep the container's stdin open on the FIFO `<bundle>/stdin` (for attach).
    #[arg(long, hide = true)]
    pub stdin: bool,
    /// Internal: set by the shim when it re-executes itself detached.
    #[arg(long, hide = true)]
    pub detached: bool,
}

/// Where the shim says whether the container started: one JSON line on its stdout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) enum StartStatus {
    Started(StartRecord),
    Failed(String),
}

/// `<bundle>/started.json`: which processes own the running container. Start times (from
/// /proc/<pid>/stat) guard against a reused pid after a reboot-like cleanup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct StartRecord {
    pub pid: u32,
    pub pid_start: u64,
    pub shim_pid: u32,
    pub shim_start: u64,
    /// Unix nanoseconds.
    pub started_at: i64,
}

pub(crate) const STARTED_FILE: &str = "started.json";
pub(crate) const EXIT_FILE: &str = "exit.json";
pub(crate) const STDIN_FIFO: &str = "stdin";
const RUNC_LOG: &str = "runc.log";
const SHIM_LOG: &str = "shim.log";

/// A line longer than this is written as partial (`P`) pieces, as containerd does.
const MAX_LINE: usize = 16 * 1024;

/// The shim's whole life; runs before any async runtime exists, and exits the process.
pub fn main(args: ShimArgs) -> anyhow::Result<()> {
    if !args.detached {
        return spawn_detached(&args);
    }
    let code = match run_detached(&args) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("shim {}: {e:#}", args.id);
            1
        }
    };
    std::process::exit(code)
}

fn spawn_detached(args: &ShimArgs) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("finding the shim executable")?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(args.bundle.join(SHIM_LOG))
        .with_context(|| format!("opening {}", args.bundle.join(SHIM_LOG).display()))?;
    let mut cmd = Command::new(exe);
    cmd.arg("shim")
        .arg("--id")
        .arg(&args.id)
        .arg("--bundle")
        .arg(&args.bundle)
        .arg("--runc")
        .arg(&args.runc)
        .arg("--runc-root")
        .arg(&args.runc_root)
        .arg("--log-path")
        .arg(&args.log_path)
        .arg("--log-max-size")
        .arg(args.log_max_size.to_string())
        .arg("--detached")
        .current_dir(&args.bundle)
        .stdin(Stdio::null())
        .stdout(Stdio::inherit())
        .stderr(Stdio::from(log));
    if args.stdin {
        cmd.arg("--stdin");
    }
    cmd.spawn().context("starting the detached shim")?;
    Ok(())
}

fn run_detached(args: &ShimArgs) -> anyhow::Result<()> {
    // Our own session: the agent's terminal and process group signals never reach us.
    let _ = rustix::process::setsid();
    // Any non-zero argument sets the flag (rustix passes the pid as that argument).
    rustix::process::set_child_subreaper(Some(rustix::process::getpid()))
        .context("becoming a child subreaper")?;
    let started = match start_container(args) {
        Ok(started) => started,
        Err(message) => {
            report(&StartStatus::Failed(message.clone()));
            let _ = runc(args).args(["delete", "--force", &args.id]).status();
            anyhow::bail!("container did not start: {message}");
        }
    };
    let (record, stdout, stderr) = started;
    let write = serde_json::to_vec(&record).context("encoding the start record")?;
    write_atomic(&args.bundle.join(STARTED_FILE), &write)?;
    report(&StartStatus::Started(record.clone()));
    release_startup_pages();

    let mut log = LogWriter::open(&args.log_path, args.log_max_size)?;
    let status = copy_until_exit(record.pid, stdout, stderr, &mut log)?;
    let finished_at = now_nanos();
    let (exit_code, signal) = match (status.exit_status(), status.terminating_signal()) {
        (_, Some(sig)) => (128 + sig, Some(sig)),
        (Some(code), None) => (code, None),
        (None, None) => (255, None),
    };
    let reason = if oom_killed(&args.bundle) {
        "OOMKilled"
    } else if exit_code == 0 {
        "Completed"
    } else {
        "Error"
    };
    let exit = ExitInfo {
        exit_code,
        signal,
        reason: reason.to_string(),
        started_at: record.started_at,
        finished_at,
    };
    let json = serde_json::to_vec(&exit).context("encoding the exit record")?;
    write_atomic(&args.bundle.join(EXIT_FILE), &json)?;
    drop(log);
    // The cgroup goes with runc's state; the exit record above is what remains.
    let _ = runc(args)
        .args(["delete", "--force", &args.id])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    Ok(())
}

fn runc(args: &ShimArgs) -> Command {
    let mut cmd = Command::new(&args.runc);
    cmd.arg("--root")
        .arg(&args.runc_root)
        .arg("--log")
        .arg(args.bundle.join(RUNC_LOG))
        .arg("--log-format")
        .arg("json")
        .stdin(Stdio::null());
    cmd
}

/// Tells the agent (on our stdout pipe) how the start went, then lets go of the pipe so the
/// agent sees EOF.
fn report(status: &StartStatus) {
    if let Ok(mut line) = serde_json::to_vec(status) {
        line.push(b'\n');
        let _ = std::io::stdout().write_all(&line);
        let _ = std::io::stdout().flush();
    }
    if let Ok(null) = File::options().write(true).open("/dev/null") {
        let _ = rustix::stdio::dup2_stdout(&null);
    }
}

type Started = (StartRecord, std::io::PipeReader, std::io::PipeReader);

/// `runc run --detach` with pipes as stdio. Errors are runc's own words.
fn start_container(args: &ShimArgs) -> Result<Started, String> {
    let (out_r, out_w) = std::io::pipe().map_err(|e| format!("creating a pipe: {e}"))?;
    let (err_r, err_w) = std::io::pipe().map_err(|e| format!("creating a pipe: {e}"))?;
    let stdin = if args.stdin {
        let fifo = args.bundle.join(STDIN_FIFO);
        if !fifo.exists() {
            rustix::fs::mkfifoat(
                rustix::fs::CWD,
                &fifo,
                rustix::fs::Mode::from_raw_mode(0o600),
            )
            .map_err(|e| format!("creating {}: {e}", fifo.display()))?;
        }
        // Read-write, so that the container never sees EOF between two attaches.
        let f = File::options()
            .read(true)
            .write(true)
            .open(&fifo)
            .map_err(|e| format!("opening {}: {e}", fifo.display()))?;
        Stdio::from(f)
    } else {
        Stdio::null()
    };
    let pid_file = args.bundle.join("pid");
    let started_at = now_nanos();
    // One `runc run --detach` rather than `runc create` then `runc start`: one runc process
    // less per container. Its init is reparented to us (the subreaper) when runc exits.
    let ran = runc(args)
        .arg("run")
        .arg("--detach")
        .arg("--bundle")
        .arg(&args.bundle)
        .arg("--pid-file")
        .arg(&pid_file)
        .arg(&args.id)
        .stdin(stdin)
        .stdout(Stdio::from(OwnedFd::from(out_w)))
        .stderr(Stdio::from(OwnedFd::from(err_w)))
        .status()
        .map_err(|e| format!("running {}: {e}", args.runc.display()))?;
    // Our copies of the write ends went with the Command: only the container holds them now.
    if !ran.success() {
        return Err(runc_error(&args.bundle, "run", ran));
    }
    let pid: u32 = std::fs::read_to_string(&pid_file)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .ok_or_else(|| format!("runc run wrote no pid to {}", pid_file.display()))?;
    // A container that already exited is our zombie until we reap it: its start time holds.
    let pid_start = proc_start_time(pid).unwrap_or(0);
    let shim_pid = std::process::id();
    let record = StartRecord {
        pid,
        pid_start,
        shim_pid,
        shim_start: proc_start_time(shim_pid).unwrap_or(0),
        started_at,
    };
    Ok((record, out_r, err_r))
}

/// The last error runc logged (its JSON log), else how it exited.
fn runc_error(bundle: &Path, command: &str, status: std::process::ExitStatus) -> String {
    last_runc_error(&bundle.join(RUNC_LOG))
        .unwrap_or_else(|| format!("runc {command} failed: {status}"))
}

pub(crate) fn last_runc_error(log: &Path) -> Option<String> {
    let text = std::fs::read_to_string(log).ok()?;
    text.lines().rev().find_map(|line| {
        let v: serde_json::Value = serde_json::from_str(line).ok()?;
        if v["level"] == "error" {
            v["msg"].as_str().map(str::to_string)
        } else {
            None
        }
    })
}

/// Copies the container's output into the log until its init process exits (and the pipes
/// are drained); returns how it exited.
fn copy_until_exit(
    pid: u32,
    stdout: std::io::PipeReader,
    stderr: std::io::PipeReader,
    log: &mut LogWriter,
) -> anyhow::Result<rustix::process::WaitStatus> {
    let raw_pid = Pid::from_raw(pid as i32).context("bad container pid")?;
    let pidfd = rustix::process::pidfd_open(raw_pid, PidfdFlags::empty())
        .context("opening a pidfd for the container")?;
    let mut streams = [Stream::new("stdout", stdout), Stream::new("stderr", stderr)];
    let mut buf = vec![0u8; 32 * 1024];
    let status = loop {
        let mut which = Vec::with_capacity(2);
        let mut fds = Vec::with_capacity(3);
        for (i, s) in streams.iter().enumerate() {
            if let Some(r) = &s.reader {
                fds.push(PollFd::new(r, PollFlags::IN));
                which.push(i);
            }
        }
        fds.push(PollFd::new(&pidfd, PollFlags::IN));
        match rustix::event::poll(&mut fds, None) {
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e).context("poll"),
        }
        let revents: Vec<PollFlags> = fds.iter().map(|f| f.revents()).collect();
        drop(fds);
        for (k, &i) in which.iter().enumerate() {
            if !revents[k].is_empty() {
                streams[i].read_once(&mut buf, log);
            }
        }
        if !revents[revents.len() - 1].is_empty() {
            match rustix::process::waitpid(Some(raw_pid), WaitOptions::NOHANG) {
                Ok(Some((_, status))) => break status,
                Ok(None) => {}
                Err(e) => return Err(e).context("waiting for the container"),
            }
        }
    };
    // What the process wrote before it exited is still in the pipes; a child it left behind
    // (host PID namespace) may hold them open, so read only what is there now.
    for s in &mut streams {
        if let Some(r) = &s.reader {
            let _ = rustix::fs::fcntl_setfl(r.as_fd(), rustix::fs::OFlags::NONBLOCK);
        }
        while s.reader.is_some() {
            if !s.read_once(&mut buf, log) {
                break;
            }
        }
        s.finish(log);
    }
    // Other orphans that ended up with us.
    while let Ok(Some(_)) = rustix::process::waitpid(None, WaitOptions::NOHANG) {}
    Ok(status)
}

struct Stream {
    name: &'static str,
    reader: Option<std::io::PipeReader>,
    pending: Vec<u8>,
}

impl Stream {
    fn new(name: &'static str, reader: std::io::PipeReader) -> Stream {
        Stream {
            name,
            reader: Some(reader),
            pending: Vec::new(),
        }
    }

    /// One read; false when nothing more can be read now (EOF, would block, error).
    fn read_once(&mut self, buf: &mut [u8], log: &mut LogWriter) -> bool {
        let Some(r) = &mut self.reader else {
            return false;
        };
        match r.read(buf) {
            Ok(0) => {
                self.reader = None;
                false
            }
            Ok(n) => {
                self.feed(&buf[..n], log);
                true
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => true,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => false,
            Err(_) => {
                self.reader = None;
                false
            }
        }
    }

    fn feed(&mut self, data: &[u8], log: &mut LogWriter) {
        self.pending.extend_from_slice(data);
        let mut start = 0;
        loop {
            let rest = &self.pending[start..];
            if let Some(nl) = rest.iter().position(|&b| b == b'\n') {
                if nl > MAX_LINE {
                    log.write_line(self.name, 'P', &rest[..MAX_LINE]);
                    start += MAX_LINE;
                } else {
                    log.write_line(self.name, 'F', &rest[..nl]);
                    start += nl + 1;
                }
            } else if rest.len() >= MAX_LINE {
                log.write_line(self.name, 'P', &rest[..MAX_LINE]);
                start += MAX_LINE;
            } else {
                break;
            }
        }
        self.pending.drain(..start);
    }

    /// The last line without a newline is still a whole line.
    fn finish(&mut self, log: &mut LogWriter) {
        if !self.pending.is_empty() {
            log.write_line(self.name, 'F', &self.pending);
            self.pending.clear();
        }
        self.reader = None;
    }
}

/// The container log in the CRI format, rotated to `<log>.1` at its size limit.
pub(crate) struct LogWriter {
    path: PathBuf,
    file: File,
    size: u64,
    max_size: u64,
    line: Vec<u8>,
}

impl LogWriter {
    pub(crate) fn open(path: &Path, max_size: u64) -> anyhow::Result<LogWriter> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let file = File::options()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("opening {}", path.display()))?;
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        Ok(LogWriter {
            path: path.to_path_buf(),
            file,
            size,
            max_size,
            line: Vec::with_capacity(256),
        })
    }

    pub(crate) fn write_line(&mut self, stream: &str, tag: char, content: &[u8]) {
        self.line.clear();
        self.line
            .extend_from_slice(rfc3339_nano(SystemTime::now()).as_bytes());
        self.line.push(b' ');
        self.line.extend_from_slice(stream.as_bytes());
        self.line.push(b' ');
        self.line.push(tag as u8);
        self.line.push(b' ');
        self.line.extend_from_slice(content);
        self.line.push(b'\n');
        let len = self.line.len() as u64;
        if self.max_size > 0 && self.size > 0 && self.size + len > self.max_size {
            self.rotate();
        }
        if self.file.write_all(&self.line).is_ok() {
            self.size += len;
        }
    }

    fn rotate(&mut self) {
        let mut rotated = self.path.clone().into_os_string();
        rotated.push(".1");
        if std::fs::rename(&self.path, &rotated).is_err() {
            return;
        }
        if let Ok(file) = File::options().create(true).append(true).open(&self.path) {
            self.file = file;
            self.size = 0;
        }
    }
}

/// Whether the container's memory cgroup recorded an OOM kill (v1 `memory.oom_control`,
/// v2 `memory.events`).
fn oom_killed(bundle: &Path) -> bool {
    let Some(cgroup) = std::fs::read(bundle.join("config.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| v["linux"]["cgroupsPath"].as_str().map(str::to_string))
    else {
        return false;
    };
    let rel = cgroup.trim_start_matches('/');
    let candidates = [
        Path::new("/sys/fs/cgroup/memory")
            .join(rel)
            .join("memory.oom_control"),
        Path::new("/sys/fs/cgroup").join(rel).join("memory.events"),
    ];
    candidates.iter().any(|p| {
        std::fs::read_to_string(p).is_ok_and(|text| {
            text.lines().any(|l| {
                l.strip_prefix("oom_kill ")
                    .and_then(|n| n.trim().parse::<u64>().ok())
                    .is_some_and(|n| n > 0)
            })
        })
    })
}

/// Lets go of the pages of our executable and libraries that starting up touched (the whole
/// CLI, runc handling, ...): one shim per container must stay small, and from here on it runs a
/// small loop. Only read-only file mappings without private copies are dropped, so nothing is
/// lost: a page needed again is read back from the page cache. MADV_RANDOM first, so such a
/// fault maps that one page rather than its neighbours too.
fn release_startup_pages() {
    let Ok(smaps) = std::fs::read_to_string("/proc/self/smaps") else {
        return;
    };
    let mut candidate: Option<(usize, usize)> = None;
    let mut release = Vec::new();
    for line in smaps.lines() {
        let mut fields = line.split_whitespace();
        let Some(first) = fields.next() else { continue };
        if !first.ends_with(':') {
            // A mapping header: `start-end perms offset dev inode path`.
            candidate = None;
            let perms = fields.next().unwrap_or("");
            let inode = fields.nth(2).unwrap_or("0");
            if perms.starts_with('r')
                && !perms.contains('w')
                && inode != "0"
                && let Some((start, end)) = first.split_once('-')
                && let (Ok(start), Ok(end)) = (
                    usize::from_str_radix(start, 16),
                    usize::from_str_radix(end, 16),
                )
            {
                candidate = Some((start, end));
            }
        } else if first == "Anonymous:" {
            // Pages written since mapping (relocations) exist only here: keep those mappings.
            if let Some(range) = candidate.take()
                && fields.next() == Some("0")
            {
                release.push(range);
            }
        }
    }
    for (start, end) in release {
        let addr = start as *mut std::ffi::c_void;
        // SAFETY: the range is a whole read-only, file-backed mapping of this process with no
        // private (anonymous) pages, so dropping its pages changes no memory contents: the
        // kernel maps the same file pages again on the next access.
        #[allow(unsafe_code)]
        unsafe {
            let _ = rustix::mm::madvise(addr, end - start, rustix::mm::Advice::Random);
            let _ = rustix::mm::madvise(addr, end - start, rustix::mm::Advice::LinuxDontNeed);
        }
    }
}

/// Writes a file whole or not at all (rename over the old one).
pub(crate) fn write_atomic(path: &Path, data: &[u8]) -> anyhow::Result<()> {
    let mut tmp = path.to_path_buf().into_os_string();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut f = File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    f.write_all(data)
        .and_then(|()| f.sync_all())
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))?;
    Ok(())
}

/// A process's start time in clock ticks since boot (field 22 of /proc/<pid>/stat), which
/// tells a live process from a later one that reuses its pid.
pub(crate) fn proc_start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields resume after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    // `rest` starts at field 3 (state); starttime is field 22.
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Whether `pid` is alive and is the process that started at `start` (0: unknown, any).
pub(crate) fn process_alive(pid: u32, start: u64) -> bool {
    if pid == 0 {
        return false;
    }
    let Some(now) = proc_start_time(pid) else {
        return false;
    };
    if start != 0 && now != start {
        return false;
    }
    // A zombie has exited already.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let rest = &s[s.rfind(')')? + 2..];
            rest.chars().next()
        })
        .is_some_and(|state| state != 'Z' && state != 'X')
}

pub(crate) fn now_nanos() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

/// Go's RFC3339Nano in UTC: `2006-01-02T15:04:05.999999999Z` (trailing zeros trimmed).
pub(crate) fn rfc3339_nano(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let nanos = d.subsec_nanos();
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let (y, m, day) = civil_from_days(days);
    let mut s = format!(
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}",
        sod / 3600,
        (sod / 60) % 60,
        sod % 60
    );
    if nanos != 0 {
        let frac = format!("{nanos:09}");
        s.push('.');
        s.push_str(frac.trim_end_matches('0'));
    }
    s.push('Z');
    s
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timestamps_are_rfc3339_nano_in_utc() {
        let at = |s: u64, n: u32| rfc3339_nano(UNIX_EPOCH + Duration::new(s, n));
        assert_eq!(at(0, 0), "1970-01-01T00:00:00Z");
        assert_eq!(
            at(1_700_000_000, 123_456_789),
            "2023-11-14T22:13:20.123456789Z"
        );
        assert_eq!(at(951_782_400, 500_000_000), "2000-02-29T00:00:00.5Z");
        assert_eq!(at(4_107_542_399, 10), "2100-02-28T23:59:59.00000001Z");
    }

    fn read_log(path: &Path) -> Vec<(String, String, String)> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|l| {
                let mut parts = l.splitn(4, ' ');
                let ts = parts.next().unwrap();
                assert!(ts.ends_with('Z') && ts.contains('T'), "{ts}");
                (
                    parts.next().unwrap().to_string(),
                    parts.next().unwrap().to_string(),
                    parts.next().unwrap_or("").to_string(),
                )
            })
            .collect()
    }

    #[test]
    fn lines_are_split_tagged_and_long_ones_marked_partial() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        let mut log = LogWriter::open(&path, 0).unwrap();
        let (r, _w) = std::io::pipe().unwrap();
        let mut s = Stream::new("stdout", r);
        s.feed(b"hello\nwor", &mut log);
        s.feed(b"ld\n\n", &mut log);
        let long = vec![b'x'; MAX_LINE + 10];
        s.feed(&long, &mut log);
        s.feed(b"\nlast", &mut log);
        s.finish(&mut log);
        let lines = read_log(&path);
        let expect = |stream: &str, tag: &str, text: &str| {
            (stream.to_string(), tag.to_string(), text.to_string())
        };
        assert_eq!(lines[0], expect("stdout", "F", "hello"));
        assert_eq!(lines[1], expect("stdout", "F", "world"));
        assert_eq!(lines[2], expect("stdout", "F", ""));
        assert_eq!(lines[3], expect("stdout", "P", &"x".repeat(MAX_LINE)));
        assert_eq!(lines[4], expect("stdout", "F", "xxxxxxxxxx"));
        assert_eq!(lines[5], expect("stdout", "F", "last"));
        assert_eq!(lines.len(), 6);
    }

    #[test]
    fn the_log_rotates_at_its_size_limit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        let mut log = LogWriter::open(&path, 200).unwrap();
        for i in 0..10 {
            log.write_line("stderr", 'F', format!("line {i}").as_bytes());
        }
        let current = read_log(&path);
        let rotated = read_log(&dir.path().join("0.log.1"));
        assert!(std::fs::metadata(&path).unwrap().len() <= 200);
        assert_eq!(current.last().unwrap().2, "line 9");
        assert!(!rotated.is_empty() && rotated.len() + current.len() <= 10);
        assert_eq!(current[0].0, "stderr");
    }

    #[test]
    fn runc_errors_come_from_its_json_log() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("runc.log");
        std::fs::write(
            &log,
            "{\"level\":\"warning\",\"msg\":\"w\"}\n{\"level\":\"error\",\"msg\":\"runc create failed: exec: \\\"nope\\\": executable file not found in $PATH\"}\n",
        )
        .unwrap();
        assert_eq!(
            last_runc_error(&log).unwrap(),
            "runc create failed: exec: \"nope\": executable file not found in $PATH"
        );
        assert!(last_runc_error(&dir.path().join("none")).is_none());
    }

    #[test]
    fn this_process_is_alive_with_its_start_time() {
        let me = std::process::id();
        let start = proc_start_time(me).unwrap();
        assert!(process_alive(me, start));
        assert!(!process_alive(me, start + 1));
        assert!(!process_alive(0, 0));
    }
}
