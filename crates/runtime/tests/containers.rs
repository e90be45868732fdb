//! Real containers: runc, overlayfs and cgroups, as root. A tiny busybox rootfs stands in for
//! an image layer. The test binary is its own shim: `containers shim ...` runs
//! `runtime::shim::main`, the rest runs the tests (a name given as argument filters them).
//!
//! Each test uses its own data dir, runc root and cgroup root (`/rkube-test-<pid>-<n>`); a Drop
//! guard removes whatever is left: runc state, mounts, cgroups, files.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::Parser;
use runtime::container::{
    ContainerMeta, ContainerRuntime, ContainerSpec, ContainerState, ExecSpec, RuntimeConfig,
    RuntimeError, SandboxNamespaces,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Parser)]
struct ShimCli {
    #[command(subcommand)]
    command: ShimCommand,
}

#[derive(clap::Subcommand)]
enum ShimCommand {
    Shim(runtime::shim::ShimArgs),
}

type TestFn = fn(&Env) -> anyhow::Result<()>;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("shim") {
        let ShimCommand::Shim(shim) = ShimCli::parse().command;
        if let Err(e) = runtime::shim::main(shim) {
            eprintln!("{e:#}");
            std::process::exit(1);
        }
        return;
    }
    let tests: &[(&str, TestFn)] = &[
        (
            "echo_is_logged_in_cri_format_and_completes",
            echo_is_logged_and_completes,
        ),
        ("a_non_zero_exit_is_an_error", a_non_zero_exit_is_an_error),
        (
            "a_missing_command_fails_to_start",
            a_missing_command_fails_to_start,
        ),
        (
            "stop_waits_for_a_trapped_sigterm",
            stop_waits_for_a_trapped_sigterm,
        ),
        (
            "stop_kills_after_the_grace_period",
            stop_kills_after_the_grace_period,
        ),
        (
            "exec_sync_returns_output_and_code",
            exec_sync_returns_output_and_code,
        ),
        (
            "exec_streams_stdin_and_stdout",
            exec_streams_stdin_and_stdout,
        ),
        ("exec_with_a_tty_resizes", exec_with_a_tty_resizes),
        (
            "a_memory_limit_oom_kill_is_reported",
            a_memory_limit_oom_kill_is_reported,
        ),
        ("containers_outlive_the_agent", containers_outlive_the_agent),
        (
            "a_container_without_processes_or_record_is_unknown",
            lost_container_is_unknown,
        ),
        (
            "user_env_and_workdir_reach_the_process",
            user_env_and_workdir_reach_the_process,
        ),
        ("stdin_comes_from_the_fifo", stdin_comes_from_the_fifo),
    ];
    let filters: Vec<&String> = args[1..].iter().filter(|a| !a.starts_with('-')).collect();
    if !rustix::process::geteuid().is_root() || !Path::new("/usr/sbin/runc").exists() {
        println!("containers: skipped (needs root and /usr/sbin/runc)");
        return;
    }
    let mut failed = Vec::new();
    let mut ran = 0;
    for (n, (name, test)) in tests.iter().enumerate() {
        if !filters.is_empty() && !filters.iter().any(|f| name.contains(f.as_str())) {
            continue;
        }
        ran += 1;
        let started = Instant::now();
        let env = Env::new(n);
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| test(&env)));
        let leaks = env.cleanup();
        let outcome = match (result, leaks) {
            (Ok(Ok(())), Ok(())) => "ok".to_string(),
            (Ok(Err(e)), _) => format!("FAILED: {e:#}"),
            (Err(_), _) => "FAILED: panicked".to_string(),
            (Ok(Ok(())), Err(e)) => format!("FAILED: cleanup: {e:#}"),
        };
        println!("test {name} ... {outcome} ({:.2?})", started.elapsed());
        if outcome != "ok" {
            failed.push(*name);
        }
    }
    println!(
        "\ntest result: {}. {} passed; {} failed",
        if failed.is_empty() { "ok" } else { "FAILED" },
        ran - failed.len(),
        failed.len()
    );
    if !failed.is_empty() {
        std::process::exit(101);
    }
}

/// One test's world: data dir with a busybox layer, runc root, cgroup root.
struct Env {
    tmp: tempfile::TempDir,
    config: RuntimeConfig,
    cgroup_root: String,
    layer: PathBuf,
    rt: tokio::runtime::Runtime,
}

impl Env {
    fn new(n: usize) -> Env {
        let tmp = tempfile::tempdir().expect("tempdir");
        let layer = tmp.path().join("layer");
        make_busybox_rootfs(&layer);
        let cgroup_root = format!("/rkube-test-{}-{n}", std::process::id());
        let config = RuntimeConfig {
            root: tmp.path().join("containers"),
            runc: PathBuf::from("/usr/sbin/runc"),
            runc_root: tmp.path().join("runc"),
            // RKUBE_SHIM_EXE=target/release/rkube measures the real shim.
            shim_exe: std::env::var_os("RKUBE_SHIM_EXE")
                .map(PathBuf::from)
                .unwrap_or_else(|| std::env::current_exe().expect("current_exe")),
            cgroup_root: cgroup_root.clone(),
        };
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime");
        Env {
            tmp,
            config,
            cgroup_root,
            layer,
            rt,
        }
    }

    fn runtime(&self) -> ContainerRuntime {
        ContainerRuntime::new(self.config.clone()).expect("runtime")
    }

    fn spec(&self, name: &str, command: &[&str]) -> ContainerSpec {
        ContainerSpec {
            meta: ContainerMeta {
                pod_uid: "uid-1".into(),
                pod_namespace: "default".into(),
                pod_name: "pod".into(),
                container_name: name.into(),
                image: "busybox".into(),
                ..Default::default()
            },
            layers: vec![self.layer.clone()],
            command: command.iter().map(|s| s.to_string()).collect(),
            hostname: "pod".into(),
            namespaces: SandboxNamespaces::default(),
            cgroup_parent: format!("{}/besteffort/poduid-1", self.cgroup_root),
            log_path: self.tmp.path().join(format!("logs/{name}/0.log")),
            log_max_size: 1 << 20,
            ..Default::default()
        }
    }

    fn block<F: std::future::Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    /// Removes every container left, then checks nothing leaked.
    fn cleanup(&self) -> anyhow::Result<()> {
        let rt = self.runtime();
        let ids: Vec<String> = std::fs::read_dir(&self.config.root)
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().to_string())
                    .collect()
            })
            .unwrap_or_default();
        for id in &ids {
            let _ = self.block(rt.stop_container(id, Duration::ZERO));
            self.block(rt.remove_container(id))?;
        }
        runtime::cgroups::remove_pod_cgroup(&self.cgroup_root)?;
        let mounts = std::fs::read_to_string("/proc/self/mountinfo")?;
        let tmp = self.tmp.path().display().to_string();
        anyhow::ensure!(!mounts.contains(&tmp), "mounts left under {tmp}");
        for h in ["memory", "cpu", "pids", "systemd"] {
            let dir = Path::new("/sys/fs/cgroup")
                .join(h)
                .join(self.cgroup_root.trim_start_matches('/'));
            anyhow::ensure!(!dir.exists(), "cgroup {} left", dir.display());
        }
        let runc_state: Vec<_> = std::fs::read_dir(&self.config.runc_root)
            .map(|d| d.flatten().collect())
            .unwrap_or_default();
        anyhow::ensure!(runc_state.is_empty(), "runc state left: {runc_state:?}");
        Ok(())
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        // Best effort after a failed test: kill and unmount what is left.
        let _ = self.cleanup();
    }
}

fn make_busybox_rootfs(dir: &Path) {
    for d in ["bin", "etc", "tmp", "home/app", "proc", "sys", "dev"] {
        std::fs::create_dir_all(dir.join(d)).unwrap();
    }
    std::fs::copy("/usr/bin/busybox", dir.join("bin/busybox")).unwrap();
    for applet in [
        "sh", "echo", "cat", "sleep", "id", "pwd", "env", "dd", "head", "tail", "stty", "ps",
        "hostname", "true", "tr",
    ] {
        std::os::unix::fs::symlink("busybox", dir.join("bin").join(applet)).unwrap();
    }
    std::fs::write(
        dir.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("etc/group"),
        "root:x:0:\napp:x:1000:\nextra:x:2000:app\n",
    )
    .unwrap();
}

fn wait_exit(
    env: &Env,
    rt: &ContainerRuntime,
    id: &str,
) -> anyhow::Result<runtime::container::ExitInfo> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match env.block(rt.container_state(id))? {
            ContainerState::Exited(info) => return Ok(info),
            s if Instant::now() > deadline => {
                let dir = env.config.root.join(id);
                let shim_log = std::fs::read_to_string(dir.join("shim.log")).unwrap_or_default();
                let runc_log = std::fs::read_to_string(dir.join("runc.log")).unwrap_or_default();
                anyhow::bail!("still {s:?}; shim log: {shim_log}; runc log: {runc_log}")
            }
            _ => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// Log lines as (stream, tag, text), checking each timestamp's form.
fn log_lines(path: &Path) -> anyhow::Result<Vec<(String, String, String)>> {
    let text = std::fs::read_to_string(path)?;
    let mut out = Vec::new();
    for line in text.lines() {
        let mut f = line.splitn(4, ' ');
        let ts = f.next().unwrap_or_default();
        anyhow::ensure!(
            ts.len() >= 20 && ts.ends_with('Z') && ts.as_bytes()[10] == b'T',
            "bad timestamp in {line:?}"
        );
        out.push((
            f.next().unwrap_or_default().to_string(),
            f.next().unwrap_or_default().to_string(),
            f.next().unwrap_or_default().to_string(),
        ));
    }
    Ok(out)
}

fn echo_is_logged_and_completes(env: &Env) -> anyhow::Result<()> {
    let rt = env.runtime();
    let spec = env.spec("echo", &["sh", "-c", "echo hello; echo oops >&2"]);
    let id = env.block(rt.run_container(&spec))?;
    let exit = wait_exit(env, &rt, &id)?;
    assert_eq!(
        (exit.exit_code, exit.reason.as_str(), exit.signal),
        (0, "Completed", None)
    );
    assert!(exit.finished_at >= exit.started_at && exit.started_at > 0);
    let lines = log_lines(&spec.log_path)?;
    assert!(
        lines.contains(&("stdout".into(), "F".into(), "hello".into())),
        "{lines:?}"
    );
    assert!(
        lines.contains(&("stderr".into(), "F".into(), "oops".into())),
        "{lines:?}"
    );
    let listed = env.block(rt.list_containers())?;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].meta.container_name, "echo");
    assert_eq!(listed[0].log_path, spec.log_path);
    env.block(rt.remove_container(&id))?;
    env.block(rt.remove_container(&id))?;
    assert!(matches!(
        env.block(rt.container_state(&id)),
        Err(RuntimeError::NotFound { .. })
    ));
    // The log stays until the pod goes.
    assert!(spec.log_path.exists());
    Ok(())
}

fn a_non_zero_exit_is_an_error(env: &Env) -> anyhow::Result<()> {
    let rt = env.runtime();
    let id = env.block(rt.run_container(&env.spec("fail", &["sh", "-c", "exit 3"])))?;
    let exit = wait_exit(env, &rt, &id)?;
    assert_eq!((exit.exit_code, exit.reason.as_str()), (3, "Error"));
    Ok(())
}

fn a_missing_command_fails_to_start(env: &Env) -> anyhow::Result<()> {
    let rt = env.runtime();
    let err = env
        .block(rt.run_container(&env.spec("bad", &["no-such-command"])))
        .expect_err("must not start");
    match &err {
        RuntimeError::Start { name, message } => {
            assert_eq!(name, "bad");
            assert!(
                message.contains("no-such-command") && message.contains("not found"),
                "{message}"
            );
        }
        other => panic!("want a start error, got {other:?}"),
    }
    // Nothing is left of it.
    assert!(env.block(rt.list_containers())?.is_empty());
    Ok(())
}

fn stop_waits_for_a_trapped_sigterm(env: &Env) -> anyhow::Result<()> {
    let rt = env.runtime();
    let script = "trap 'echo bye; exit 0' TERM; echo ready; while true; do sleep 0.1; done";
    let spec = env.spec("trap", &["sh", "-c", script]);
    let id = env.block(rt.run_container(&spec))?;
    // Wait until the trap is set.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(&spec.log_path)
        .unwrap_or_default()
        .contains("ready")
    {
        anyhow::ensure!(Instant::now() < deadline, "never ready");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(matches!(
        env.block(rt.container_state(&id))?,
        ContainerState::Running { .. }
    ));
    let started = Instant::now();
    env.block(rt.stop_container(&id, Duration::from_secs(10)))?;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let exit = wait_exit(env, &rt, &id)?;
    assert_eq!((exit.exit_code, exit.signal), (0, None));
    let lines = log_lines(&spec.log_path)?;
    assert!(lines.iter().any(|l| l.2 == "bye"), "{lines:?}");
    Ok(())
}

fn stop_kills_after_the_grace_period(env: &Env) -> anyhow::Result<()> {
    let rt = env.runtime();
    // Catches SIGTERM but carries on: killed once the grace period is over.
    let script = "trap 'echo got TERM' TERM; echo ready; while true; do sleep 0.1; done";
    let spec = env.spec("stubborn", &["sh", "-c", script]);
    let id = env.block(rt.run_container(&spec))?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(&spec.log_path)
        .unwrap_or_default()
        .contains("ready")
    {
        anyhow::ensure!(Instant::now() < deadline, "never ready");
        std::thread::sleep(Duration::from_millis(20));
    }
    let started = Instant::now();
    env.block(rt.stop_container(&id, Duration::from_secs(1)))?;
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_secs(6),
        "{took:?}"
    );
    let exit = wait_exit(env, &rt, &id)?;
    assert_eq!(
        (exit.exit_code, exit.signal, exit.reason.as_str()),
        (137, Some(9), "Error")
    );
    let lines = log_lines(&spec.log_path)?;
    assert!(lines.iter().any(|l| l.2 == "got TERM"), "{lines:?}");
    // Stopping again is a no-op.
    env.block(rt.stop_container(&id, Duration::from_secs(1)))?;

    // PID 1 without a handler never sees SIGTERM: no point waiting out the grace period.
    let id = sleeping(env, &rt, "deaf")?;
    let started = Instant::now();
    env.block(rt.stop_container(&id, Duration::from_secs(30)))?;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let exit = wait_exit(env, &rt, &id)?;
    assert_eq!((exit.exit_code, exit.signal), (137, Some(9)));
    Ok(())
}

/// A running `sleep 1000` container, once runc's init has become `sleep` (until then a signal
/// meets runc's own handlers, as it would under containerd).
fn sleeping(env: &Env, rt: &ContainerRuntime, name: &str) -> anyhow::Result<String> {
    let id = env.block(rt.run_container(&env.spec(name, &["sleep", "1000"])))?;
    let ContainerState::Running { pid, .. } = env.block(rt.container_state(&id))? else {
        anyhow::bail!("not running");
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::fs::read_to_string(format!("/proc/{pid}/comm"))?.trim() != "sleep" {
        anyhow::ensure!(Instant::now() < deadline, "never became sleep");
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(id)
}

fn processes_running(cmdline: &str) -> usize {
    let mut n = 0;
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        if let Ok(c) = std::fs::read(entry.path().join("cmdline"))
            && String::from_utf8_lossy(&c).replace('\0', " ").trim() == cmdline
        {
            n += 1;
        }
    }
    n
}

fn exec_sync_returns_output_and_code(env: &Env) -> anyhow::Result<()> {
    let rt = env.runtime();
    let id = sleeping(env, &rt, "exec")?;
    let cmd = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let (code, out) = env.block(rt.exec_sync(
        &id,
        &cmd(&["sh", "-c", "echo out; echo err >&2; exit 7"]),
        Duration::from_secs(10),
    ))?;
    let out = String::from_utf8_lossy(&out);
    assert_eq!(code, 7);
    assert!(out.contains("out\n") && out.contains("err\n"), "{out}");
    let (code, out) = env.block(rt.exec_sync(
        &id,
        &cmd(&["sh", "-c", "echo $HOSTNAME"]),
        Duration::from_secs(10),
    ))?;
    assert_eq!((code, String::from_utf8_lossy(&out).trim()), (0, "pod"));
    // A timeout kills the process, not just runc.
    let started = Instant::now();
    let err = env
        .block(rt.exec_sync(&id, &cmd(&["sleep", "77"]), Duration::from_millis(500)))
        .expect_err("must time out");
    assert!(err.to_string().contains("timed out"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(5));
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(processes_running("sleep 77"), 0);
    // Big output is cut at 10 KiB.
    let (code, out) = env.block(rt.exec_sync(
        &id,
        &cmd(&["head", "-c", "50000", "/dev/zero"]),
        Duration::from_secs(10),
    ))?;
    assert_eq!((code, out.len()), (0, 10 * 1024));
    Ok(())
}

fn exec_streams_stdin_and_stdout(env: &Env) -> anyhow::Result<()> {
    let rt = env.runtime();
    let id = sleeping(env, &rt, "cat")?;
    env.block(async {
        let mut p = rt
            .exec(
                &id,
                &ExecSpec {
                    command: vec!["cat".into()],
                    stdin: true,
                    stdout: true,
                    stderr: true,
                    tty: false,
                },
            )
            .await?;
        let mut stdin = p.stdin.take().expect("stdin");
        stdin.write_all(b"ping\n").await?;
        drop(stdin);
        let mut out = String::new();
        p.stdout
            .take()
            .expect("stdout")
            .read_to_string(&mut out)
            .await?;
        assert_eq!(out, "ping\n");
        let code = tokio::time::timeout(Duration::from_secs(10), p.exit).await??;
        assert_eq!(code, 0);
        anyhow::Ok(())
    })?;
    Ok(())
}

fn exec_with_a_tty_resizes(env: &Env) -> anyhow::Result<()> {
    let rt = env.runtime();
    let id = sleeping(env, &rt, "tty")?;
    env.block(async {
        let mut p = rt
            .exec(
                &id,
                &ExecSpec {
                    command: vec!["sh".into()],
                    stdin: true,
                    stdout: true,
                    stderr: true,
                    tty: true,
                },
            )
            .await?;
        assert!(p.stderr.is_none());
        p.resize.as_ref().expect("resize").send((123, 45))?;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut stdin = p.stdin.take().expect("stdin");
        stdin.write_all(b"stty size; tty; exit 5\n").await?;
        let mut out = Vec::new();
        let mut stdout = p.stdout.take().expect("stdout");
        tokio::time::timeout(Duration::from_secs(10), stdout.read_to_end(&mut out)).await??;
        let out = String::from_utf8_lossy(&out);
        assert!(out.contains("45 123"), "{out}");
        assert!(out.contains("/dev/pts/"), "{out}");
        let code = tokio::time::timeout(Duration::from_secs(10), p.exit).await??;
        assert_eq!(code, 5);
        anyhow::Ok(())
    })?;
    Ok(())
}

fn a_memory_limit_oom_kill_is_reported(env: &Env) -> anyhow::Result<()> {
    let rt = env.runtime();
    let mut spec = env.spec("hog", &["tail", "/dev/zero"]);
    spec.resources.memory_limit = Some(16 << 20);
    let id = env.block(rt.run_container(&spec))?;
    let exit = wait_exit(env, &rt, &id)?;
    assert_eq!(
        (exit.exit_code, exit.signal, exit.reason.as_str()),
        (137, Some(9), "OOMKilled")
    );
    Ok(())
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Started {
    pid: u32,
    shim_pid: u32,
}

fn started_record(env: &Env, id: &str) -> anyhow::Result<Started> {
    let path = env.config.root.join(id).join("started.json");
    Ok(serde_json::from_slice(&std::fs::read(path)?)?)
}

fn containers_outlive_the_agent(env: &Env) -> anyhow::Result<()> {
    let rt = env.runtime();
    let id = sleeping(env, &rt, "long")?;
    let ContainerState::Running { pid, started_at } = env.block(rt.container_state(&id))? else {
        anyhow::bail!("not running");
    };
    let shim = started_record(env, &id)?;
    assert_eq!(shim.pid, pid);
    // The shim lives in a session of its own (our terminal's and process group's signals never
    // reach it), and outlives the runtime handle below.
    let shim_stat = std::fs::read_to_string(format!("/proc/{}/stat", shim.shim_pid))?;
    let fields: Vec<&str> = shim_stat[shim_stat.rfind(')').unwrap() + 2..]
        .split_whitespace()
        .collect();
    let session: u32 = fields[3].parse()?;
    assert_eq!(session, shim.shim_pid);
    let our_session = std::fs::read_to_string("/proc/self/stat")?;
    let our_session: u32 = our_session[our_session.rfind(')').unwrap() + 2..]
        .split_whitespace()
        .nth(3)
        .unwrap()
        .parse()?;
    assert_ne!(session, our_session);
    // The shim trims its memory right after it reports the start.
    std::thread::sleep(Duration::from_millis(300));
    println!(
        "  shim VmRSS: {} KiB ({})",
        rss_kib(shim.shim_pid).unwrap_or(0),
        env.config.shim_exe.display()
    );
    // SHIM_SMAPS=<file>: keep the shim's memory map for a closer look.
    if let Some(out) = std::env::var_os("SHIM_SMAPS") {
        std::fs::write(
            out,
            std::fs::read_to_string(format!("/proc/{}/smaps", shim.shim_pid))?,
        )?;
    }
    drop(rt);
    // A new agent finds it again.
    let rt = env.runtime();
    let listed = env.block(rt.list_containers())?;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, id);
    assert_eq!(listed[0].meta.container_name, "long");
    assert_eq!(listed[0].state, ContainerState::Running { pid, started_at });
    env.block(rt.stop_container(&id, Duration::from_secs(1)))?;
    assert!(matches!(
        env.block(rt.container_state(&id))?,
        ContainerState::Exited(_)
    ));
    env.block(rt.remove_container(&id))?;
    Ok(())
}

fn lost_container_is_unknown(env: &Env) -> anyhow::Result<()> {
    let rt = env.runtime();
    let id = sleeping(env, &rt, "lost")?;
    let s = started_record(env, &id)?;
    // A reboot-like cleanup: the shim and the container vanish, with no exit record.
    for pid in [s.shim_pid, s.pid] {
        rustix::process::kill_process(
            rustix::process::Pid::from_raw(pid as i32).unwrap(),
            rustix::process::Signal::KILL,
        )?;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match env.block(rt.container_state(&id))? {
            ContainerState::Unknown => break,
            s if Instant::now() > deadline => anyhow::bail!("still {s:?}"),
            _ => std::thread::sleep(Duration::from_millis(50)),
        }
    }
    env.block(rt.remove_container(&id))?;
    Ok(())
}

fn user_env_and_workdir_reach_the_process(env: &Env) -> anyhow::Result<()> {
    let rt = env.runtime();
    let mut spec = env.spec("who", &["sh", "-c", "id; pwd; echo $GREETING $PATH"]);
    spec.image_config.user = "app".into();
    spec.image_config.env = vec!["GREETING=image".into()];
    spec.env = vec![("GREETING".into(), "pod".into())];
    spec.working_dir = Some("/home/app".into());
    spec.security.supplemental_groups = vec![3000];
    let id = env.block(rt.run_container(&spec))?;
    let exit = wait_exit(env, &rt, &id)?;
    assert_eq!(exit.exit_code, 0);
    let lines: Vec<String> = log_lines(&spec.log_path)?
        .into_iter()
        .map(|l| l.2)
        .collect();
    assert!(
        lines[0].starts_with("uid=1000(app) gid=1000(app)"),
        "{lines:?}"
    );
    assert!(
        lines[0].contains("2000(extra)") && lines[0].contains("3000"),
        "{lines:?}"
    );
    assert_eq!(lines[1], "/home/app");
    assert!(lines[2].starts_with("pod /usr/local/sbin:"), "{lines:?}");
    Ok(())
}

fn stdin_comes_from_the_fifo(env: &Env) -> anyhow::Result<()> {
    let rt = env.runtime();
    let mut spec = env.spec("attach", &["cat"]);
    spec.stdin = true;
    let id = env.block(rt.run_container(&spec))?;
    let fifo = rt.stdin_path(&id)?;
    for word in ["first", "second"] {
        // Each attach opens the FIFO anew; cat sees no EOF in between.
        let mut w = std::fs::OpenOptions::new().write(true).open(&fifo)?;
        std::io::Write::write_all(&mut w, format!("{word}\n").as_bytes())?;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let lines = log_lines(&spec.log_path).unwrap_or_default();
        if lines.iter().any(|l| l.2 == "second") {
            assert_eq!(lines[0], ("stdout".into(), "F".into(), "first".into()));
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "stdin never arrived: {lines:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(matches!(
        env.block(rt.container_state(&id))?,
        ContainerState::Running { .. }
    ));
    Ok(())
}
