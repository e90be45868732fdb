//! End to end through the API server's proxy to the node agent's streaming endpoint, driven
//! by the real kubectl: `logs` (tail, follow, previous container), `exec` with stdin, stdout,
//! stderr and exit codes, `cp`, and `port-forward`; the default kubectl speaks WebSocket
//! (`v5.channel.k8s.io`, SPDY tunnelled through a WebSocket for port-forward), kubectl 1.27
//! speaks SPDY/3.1; the Python client uses WebSocket channels for port-forward.
//!
//! Runs as root (runc, cgroups, CNI), as CI does.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::{Server, eventually, tail};

const IMAGE: &str = "docker.io/library/busybox:1.36";
const WAIT: Duration = Duration::from_secs(90);
const KUBECTL_1_27: &str = "/usr/lib/google-cloud-sdk/bin/kubectl.1.27";

/// A child process killed (by its PID) when the test ends, however it ends.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn phase(server: &Server, pod: &str) -> String {
    let out = server.kubectl(&["get", "pod", pod, "-o", "jsonpath={.status.phase}"]);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn wait_running(server: &Server, pod: &str) {
    let deadline = Instant::now() + WAIT;
    while phase(server, pod) != "Running" {
        assert!(
            Instant::now() < deadline,
            "pod {pod} not Running; log tail:\n{}",
            tail(&server.log(), 40)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// kubectl (`binary`) against the server, with `input` on stdin: (exit code, stdout, stderr).
fn run(server: &Server, binary: &str, args: &[&str], input: &[u8]) -> (i32, String, String) {
    let mut child = Command::new(binary)
        .arg("--kubeconfig")
        .arg(server.kubeconfig())
        .args(args)
        .env_remove("KUBECONFIG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run kubectl");
    child.stdin.take().unwrap().write_all(input).unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `GET /` on a local port with a raw HTTP/1.0 request: the response body.
fn http_get(port: u16) -> Option<String> {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    stream
        .write_all(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
}

fn check_exec(server: &Server, kubectl: &str) {
    let (code, out, err) = run(
        server,
        kubectl,
        &["exec", "-i", "ticker", "--", "cat"],
        b"hi\nthere\n",
    );
    assert_eq!(
        (code, out.as_str()),
        (0, "hi\nthere\n"),
        "{kubectl} exec -i: {err}"
    );
    let (code, out, err) = run(
        server,
        kubectl,
        &[
            "exec",
            "ticker",
            "--",
            "sh",
            "-c",
            "echo out; echo err >&2; exit 3",
        ],
        b"",
    );
    assert_eq!(
        code, 3,
        "{kubectl}: exit code of the command; stderr: {err}"
    );
    assert_eq!(out, "out\n");
    assert!(err.starts_with("err\n"), "{kubectl}: {err}");
    assert!(
        err.contains("command terminated with exit code 3"),
        "{kubectl}: {err}"
    );
    // A large stdin round trip: nothing lost or reordered.
    let big: Vec<u8> = (0..200_000u32)
        .flat_map(|i| format!("{i}\n").into_bytes())
        .collect();
    let (code, out, err) = run(
        server,
        kubectl,
        &["exec", "-i", "ticker", "--", "wc", "-c"],
        &big,
    );
    assert_eq!(code, 0, "{kubectl}: {err}");
    assert_eq!(
        out.trim(),
        big.len().to_string(),
        "{kubectl}: bytes through stdin"
    );
    let (code, _, err) = run(
        server,
        kubectl,
        &["exec", "ticker", "-c", "ticker", "--", "no-such-binary"],
        b"",
    );
    assert_ne!(code, 0, "{kubectl}: a missing binary fails: {err}");
}

/// `kubectl attach -i`: what we type reaches the container's stdin, what it prints comes back.
fn check_attach(server: &Server, kubectl: &str, word: &str) {
    let mut child = Command::new(kubectl)
        .arg("--kubeconfig")
        .arg(server.kubeconfig())
        .args(["attach", "-i", "echoer"])
        .env_remove("KUBECONFIG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("run kubectl attach");
    let mut stdin = child.stdin.take().unwrap();
    let stdout = child.stdout.take().unwrap();
    let _guard = Killed(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // Until the attach is up, lines may go unseen: say it again until it answers.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        assert!(
            Instant::now() < deadline,
            "{kubectl} attach: no echo of {word}"
        );
        writeln!(stdin, "{word}").unwrap();
        if let Ok(line) = rx.recv_timeout(Duration::from_secs(1)) {
            assert_eq!(line, format!("got {word}"), "{kubectl} attach");
            return;
        }
    }
}

fn check_port_forward(server: &Server, kubectl: &str) {
    let port = free_port();
    let child = Command::new(kubectl)
        .arg("--kubeconfig")
        .arg(server.kubeconfig())
        .args(["port-forward", "pod/web", &format!("{port}:8080")])
        .env_remove("KUBECONFIG")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("run kubectl port-forward");
    let _guard = Killed(child);
    let body = eventually(Duration::from_secs(20), "port-forward to serve", || {
        http_get(port).filter(|b| b.contains("web 1.0"))
    });
    assert_eq!(body.trim(), "web 1.0");
    // Several connections over the same forward, one after another and at once.
    for _ in 0..3 {
        assert_eq!(
            http_get(port).as_deref().map(str::trim),
            Some("web 1.0"),
            "{kubectl}"
        );
    }
    let parallel: Vec<_> = (0..4)
        .map(|_| std::thread::spawn(move || http_get(port)))
        .collect();
    for handle in parallel {
        assert_eq!(
            handle.join().unwrap().as_deref().map(str::trim),
            Some("web 1.0"),
            "{kubectl}"
        );
    }
}

#[test]
fn logs_exec_cp_and_port_forward_through_the_api_server() {
    let server = Server::start_with_agent(&[], |data_dir| support::import_busybox(data_dir, IMAGE));
    let pods = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: ticker\nspec:\n  \
                terminationGracePeriodSeconds: 1\n  containers:\n  - name: ticker\n    \
                image: busybox:1.36\n    imagePullPolicy: IfNotPresent\n    command: [\"sh\", \"-c\", \
                \"echo started; echo to-stderr >&2; i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.2; done\"]\n\
                ---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: web\nspec:\n  \
                terminationGracePeriodSeconds: 1\n  containers:\n  - name: web\n    image: busybox:1.36\n    \
                imagePullPolicy: IfNotPresent\n    command: [\"sh\", \"-c\", \
                \"mkdir -p /www && echo web 1.0 > /www/index.html && exec httpd -f -p 8080 -h /www\"]\n\
                ---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: echoer\nspec:\n  \
                terminationGracePeriodSeconds: 1\n  containers:\n  - name: echoer\n    image: busybox:1.36\n    \
                imagePullPolicy: IfNotPresent\n    stdin: true\n    command: [\"sh\", \"-c\", \
                \"while read line; do echo got $line; done\"]\n";
    server.apply(pods);
    wait_running(&server, "ticker");
    wait_running(&server, "web");

    // logs: everything, tail, timestamps, and both streams.
    let all = eventually(WAIT, "ticker logs", || {
        let out = server.kubectl(&["logs", "ticker"]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.contains("tick 2").then_some(text)
    });
    // stdout and stderr are separate pipes: their relative order is not kept.
    assert!(all.starts_with("started\n"), "{all}");
    assert!(all.lines().any(|l| l == "to-stderr"), "{all}");
    let ticks: Vec<&str> = all.lines().filter(|l| l.starts_with("tick ")).collect();
    assert_eq!(ticks[..3], ["tick 0", "tick 1", "tick 2"], "{all}");
    let last = server.kubectl_ok(&["logs", "ticker", "--tail=1"]);
    assert_eq!(last.lines().count(), 1, "{last}");
    assert!(last.starts_with("tick "), "{last}");
    let stamped = server.kubectl_ok(&["logs", "ticker", "--timestamps", "--tail=1"]);
    let (stamp, rest) = stamped.split_once(' ').unwrap();
    assert!(
        stamp.ends_with('Z') && stamp.len() == 30,
        "RFC 3339 with nanoseconds: {stamp}"
    );
    assert!(rest.starts_with("tick "));
    assert_eq!(
        server.kubectl_ok(&["logs", "ticker", "--limit-bytes=4"]),
        "star"
    );
    let err = server.kubectl_err(&["logs", "ticker", "--previous"]);
    assert!(err.contains("previous terminated container"), "{err}");

    // logs -f: new lines keep coming.
    let mut follow = server
        .kubectl_cmd(&["logs", "-f", "ticker", "--tail=1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = follow.stdout.take().unwrap();
    let _follow = Killed(follow);
    let mut lines = BufReader::new(stdout).lines();
    let mut ticks = Vec::new();
    let started = Instant::now();
    while ticks.len() < 6 && started.elapsed() < Duration::from_secs(20) {
        match lines.next() {
            Some(Ok(line)) => ticks.push(line),
            _ => break,
        }
    }
    assert_eq!(ticks.len(), 6, "logs -f streamed {ticks:?}");
    let numbers: Vec<u32> = ticks
        .iter()
        .map(|t| t.strip_prefix("tick ").unwrap().parse().unwrap())
        .collect();
    assert!(numbers.windows(2).all(|w| w[1] == w[0] + 1), "{numbers:?}");

    // exec over WebSocket (default kubectl) and over SPDY (kubectl 1.27).
    check_exec(&server, &support::kubectl_binary());
    if Path::new(KUBECTL_1_27).exists() {
        check_exec(&server, KUBECTL_1_27);
    }

    // cp both ways (tar through exec).
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("note.txt");
    std::fs::write(&local, "copied in\n").unwrap();
    server.kubectl_ok(&["cp", local.to_str().unwrap(), "ticker:/tmp/note.txt"]);
    let (code, out, err) = run(
        &server,
        &support::kubectl_binary(),
        &["exec", "ticker", "--", "cat", "/tmp/note.txt"],
        b"",
    );
    assert_eq!((code, out.as_str()), (0, "copied in\n"), "{err}");
    let back = dir.path().join("back.txt");
    server.kubectl_ok(&["cp", "ticker:/tmp/note.txt", back.to_str().unwrap()]);
    assert_eq!(std::fs::read_to_string(&back).unwrap(), "copied in\n");

    // port-forward: SPDY over WebSocket (default kubectl), plain SPDY (kubectl 1.27).
    check_port_forward(&server, &support::kubectl_binary());
    if Path::new(KUBECTL_1_27).exists() {
        check_port_forward(&server, KUBECTL_1_27);
    }

    // The official Python client: exec, and port-forward over WebSocket channels.
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/python/streaming_test.py"
    );
    let out = Command::new("python3")
        .arg(script)
        .arg(server.kubeconfig())
        .output()
        .expect("run python3 (scripts/install-deps.sh installs the client)");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("python streaming: ok"),
        "python streaming test failed:\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // attach: stdin through the container's FIFO, output from its log.
    wait_running(&server, "echoer");
    check_attach(&server, &support::kubectl_binary(), "websocket");
    if Path::new(KUBECTL_1_27).exists() {
        check_attach(&server, KUBECTL_1_27, "spdy");
    }

    // Errors from the node come back as kubectl errors.
    let err = server.kubectl_err(&["exec", "ticker", "-c", "nope", "--", "true"]);
    assert!(err.contains("nope"), "{err}");
}
