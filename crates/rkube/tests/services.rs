//! Services end to end (issue 5's "Done means") on a real `rkube server` with its node agent:
//! real containers, the service proxy's nftables table and the cluster DNS. Client pods run
//! bounded request loops (busybox `wget`) and count what fails.
//!
//! Images come as in the acceptance test: `../shared/acceptance/images.sh` pushes them to a
//! docker-registry of the test's own on loopback, which `registries.yaml` mirrors docker.io to.
//!
//! Runs as root with runc, the CNI plugins, nft, umoci, skopeo, docker-registry and kubectl (as
//! CI does); skipped otherwise. Every test has its own cluster (node, bridge, CIDRs, DNS port),
//! so they may run in parallel.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{Server, tail};

const WAIT: Duration = Duration::from_secs(180);

fn skip() -> bool {
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipped: needs root");
        return true;
    }
    let missing: Vec<&str> = [
        "runc",
        "nft",
        "umoci",
        "skopeo",
        "docker-registry",
        "busybox",
        "curl",
    ]
    .into_iter()
    .filter(|tool| {
        !Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
    .collect();
    if !missing.is_empty() || !Path::new("/usr/lib/cni/bridge").exists() {
        eprintln!("skipped: missing {missing:?} or the CNI plugins (scripts/install-deps.sh)");
        return true;
    }
    false
}

fn acceptance_dir() -> PathBuf {
    std::env::var_os("RKUBE_ACCEPTANCE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| support::seed_manifests().join(".."))
}

/// One test cluster: `rkube server` with its node agent, pulling from a registry of its own.
struct Cluster {
    // Field order is drop order: the server (and its containers) before the registry.
    server: Server,
    _registry: support::Registry,
    node: String,
}

impl Cluster {
    fn start() -> Cluster {
        Self::start_with(&[])
    }

    fn start_with(extra: &[&str]) -> Cluster {
        let registry = support::Registry::start();
        let work = tempfile::tempdir().expect("temp dir");
        let built = Command::new("bash")
            .arg(acceptance_dir().join("images.sh"))
            .arg(&registry.addr)
            .env("IMAGES_WORK", work.path())
            .output()
            .expect("run images.sh");
        assert!(
            built.status.success(),
            "images.sh failed:\n{}{}",
            String::from_utf8_lossy(&built.stdout),
            String::from_utf8_lossy(&built.stderr)
        );
        let mirror = format!(
            "mirrors:\n  docker.io:\n    endpoint:\n      - \"http://{}\"\n",
            registry.addr
        );
        let server = Server::start_with_agent(extra, |data_dir| {
            std::fs::write(data_dir.join("registries.yaml"), &mirror)
                .expect("write registries.yaml");
        });
        let node = server.agent.as_ref().unwrap().node_name.clone();
        let cluster = Cluster {
            server,
            _registry: registry,
            node,
        };
        cluster.eventually("the node to be Ready", || {
            let node = cluster.get(&["node", &cluster.node])?;
            node["status"]["conditions"]
                .as_array()?
                .iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
                .then_some(())
        });
        cluster
    }

    fn eventually<T>(&self, what: &str, check: impl FnMut() -> Option<T>) -> T {
        self.eventually_within(WAIT, what, check)
    }

    fn eventually_within<T>(
        &self,
        timeout: Duration,
        what: &str,
        mut check: impl FnMut() -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(v) = check() {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {timeout:?} waiting for {what}\nserver log tail:\n{}",
                self.log_tail(60)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The server log's warnings and errors.
    fn log_warnings(&self) -> String {
        let log = self.server.log();
        let kept: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("WARN") || l.contains("ERROR"))
            .collect();
        tail(&kept.join("\n"), 40)
    }

    /// The server log's last lines, without the API server's per-request debug lines.
    fn log_tail(&self, lines: usize) -> String {
        let log = self.server.log();
        let kept: Vec<&str> = log.lines().filter(|l| !l.contains("DEBUG")).collect();
        tail(&kept.join("\n"), lines)
    }

    fn apply(&self, manifest: &str) {
        self.server.apply(manifest);
    }

    fn kubectl_ok(&self, args: &[&str]) -> String {
        self.server.kubectl_ok(args)
    }

    /// `kubectl get ARGS -o json`, or None when kubectl fails.
    fn get(&self, args: &[&str]) -> Option<Value> {
        let mut all = vec!["get"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["-o", "json"]);
        let out = self.server.kubectl(&all);
        out.status
            .success()
            .then(|| serde_json::from_slice(&out.stdout).ok())
            .flatten()
    }

    /// Wait until `check` gives something for pod `name`; on timeout, panic with the pod's
    /// last status.
    fn wait_pod<T>(&self, name: &str, what: &str, check: impl Fn(&Value) -> Option<T>) -> T {
        let deadline = Instant::now() + WAIT;
        let mut last = Value::Null;
        loop {
            if let Some(pod) = self.get(&["pod", name]) {
                if let Some(v) = check(&pod) {
                    return v;
                }
                last = pod;
            }
            assert!(
                Instant::now() < deadline,
                "pod {name}: {what} not seen in {WAIT:?}; last status:\n{:#}\nserver log tail:\n{}",
                last["status"],
                self.log_tail(60)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Wait for a pod to run and be Ready; returns its IP.
    fn ready_pod(&self, name: &str) -> String {
        self.wait_pod(name, "Running and Ready", |pod| {
            let ready = pod["status"]["conditions"]
                .as_array()?
                .iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True");
            (pod["status"]["phase"] == "Running" && ready)
                .then(|| pod["status"]["podIP"].as_str().map(String::from))
                .flatten()
        })
    }

    fn pod_ip(&self, name: &str) -> String {
        self.wait_pod(name, "Running with an IP", |pod| {
            (pod["status"]["phase"] == "Running")
                .then(|| pod["status"]["podIP"].as_str().map(String::from))
                .flatten()
        })
    }

    /// A busybox pod to send requests from.
    fn client(&self, name: &str) {
        self.apply(&format!(
            "apiVersion: v1
kind: Pod
metadata:
  name: {name}
spec:
  terminationGracePeriodSeconds: 0
  containers:
  - name: client
    image: busybox:1.36
    command: [sleep, '3600']
"
        ));
        self.pod_ip(name);
    }

    fn cluster_ip(&self, service: &str) -> String {
        self.eventually(&format!("service {service}'s ClusterIP"), || {
            self.get(&["svc", service])?["spec"]["clusterIP"]
                .as_str()
                .map(String::from)
        })
    }

    /// `kubectl exec POD -- sh -c SCRIPT`.
    fn exec(&self, pod: &str, script: &str) -> Output {
        self.server
            .kubectl(&["exec", pod, "--", "sh", "-c", script])
    }

    fn exec_ok(&self, pod: &str, script: &str) -> String {
        let out = self.exec(pod, script);
        assert!(
            out.status.success(),
            "exec in {pod} failed: {script}\nstdout: {}\nstderr: {}\nserver log tail:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.log_tail(40)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// One HTTP GET from `pod`: the body, or wget's complaint.
    fn fetch(&self, pod: &str, url: &str) -> Result<String, String> {
        let out = self.exec(pod, &format!("wget -q -O- -T 3 {url}"));
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        } else {
            Err(format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    /// The endpoints of a Service's EndpointSlices: (address, ready).
    fn endpoints(&self, service: &str) -> Vec<(String, bool)> {
        let selector = format!("kubernetes.io/service-name={service}");
        let Some(list) = self.get(&["endpointslices", "-l", &selector]) else {
            return Vec::new();
        };
        let mut out: Vec<(String, bool)> = list["items"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|s| s["endpoints"].as_array().cloned().unwrap_or_default())
            .filter_map(|e| {
                let ip = e["addresses"][0].as_str()?.to_string();
                Some((ip, e["conditions"]["ready"] != false))
            })
            .collect();
        out.sort();
        out
    }

    /// `nft list table inet <ours>`; empty when the table is missing.
    fn nft_table(&self) -> String {
        let bridge = &self.server.agent.as_ref().unwrap().bridge;
        let out = Command::new("nft")
            .args(["list", "table", "inet", &format!("rkube-{bridge}")])
            .output()
            .expect("run nft");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The cluster DNS's ClusterIP (the kube-dns Service).
    fn dns_ip(&self) -> String {
        self.eventually("the kube-dns Service", || {
            self.get(&["svc", "kube-dns", "-n", "kube-system"])?["spec"]["clusterIP"]
                .as_str()
                .map(String::from)
        })
    }
}

/// busybox nslookup's answer addresses for `name` (type A), or None when the name does not
/// exist (NXDOMAIN). Panics on anything else.
fn parse_nslookup(name: &str, out: &Output) -> Option<Vec<String>> {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if stdout.contains("NXDOMAIN") || stderr.contains("NXDOMAIN") {
        return None;
    }
    // Addresses come after the first "Name:" line (the ones before are the server's).
    let Some((_, answers)) = stdout.split_once("Name:") else {
        panic!("nslookup {name}: no answer\nstdout: {stdout}\nstderr: {stderr}");
    };
    let mut ips: Vec<String> = answers
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Address:"))
        .map(|a| a.trim().to_string())
        .collect();
    ips.sort();
    Some(ips)
}

/// A bounded loop of HTTP requests running inside a pod, in the background, one line per
/// request in `/tmp/<tag>.out`: `ok <body>` or `fail <uptime> <error>`, then `done`. It
/// outlives the `kubectl exec` that starts it (and the server, when that is killed).
struct RequestLoop {
    pod: String,
    tag: String,
}

#[derive(Debug)]
struct LoopReport {
    ok: Vec<String>,
    failed: Vec<String>,
}

impl RequestLoop {
    fn start(
        cluster: &Cluster,
        pod: &str,
        tag: &str,
        url: &str,
        interval: &str,
        max: u32,
    ) -> RequestLoop {
        let script = format!(
            "rm -f /tmp/{tag}.stop /tmp/{tag}.out
( i=0
  while [ $i -lt {max} ] && [ ! -e /tmp/{tag}.stop ]; do
    i=$((i+1))
    if body=$(wget -q -O- -T 3 {url} 2>&1); then echo \"ok $body\"
    else echo \"fail $(cut -d' ' -f1 /proc/uptime) $(echo $body)\"; fi
    sleep {interval}
  done
  echo done ) >/tmp/{tag}.out 2>&1 </dev/null &"
        );
        cluster.exec_ok(pod, &script);
        RequestLoop {
            pod: pod.to_string(),
            tag: tag.to_string(),
        }
    }

    fn lines(&self, cluster: &Cluster) -> Vec<String> {
        let out = cluster.exec(&self.pod, &format!("cat /tmp/{}.out", self.tag));
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(String::from)
            .collect()
    }

    /// Wait until at least `n` requests succeeded.
    fn wait_ok(&self, cluster: &Cluster, n: usize) {
        cluster.eventually(&format!("{n} good requests of loop {}", self.tag), || {
            let lines = self.lines(cluster);
            (lines.iter().filter(|l| l.starts_with("ok ")).count() >= n).then_some(())
        });
    }

    fn stop(self, cluster: &Cluster) -> LoopReport {
        cluster.exec_ok(&self.pod, &format!("touch /tmp/{}.stop", self.tag));
        let lines = cluster.eventually(&format!("loop {} to end", self.tag), || {
            let lines = self.lines(cluster);
            (lines.last().map(String::as_str) == Some("done")).then_some(lines)
        });
        let mut report = LoopReport {
            ok: Vec::new(),
            failed: Vec::new(),
        };
        for line in lines {
            if let Some(body) = line.strip_prefix("ok ") {
                report.ok.push(body.trim().to_string());
            } else if line.starts_with("fail ") {
                report.failed.push(line);
            }
        }
        report
    }
}

fn web_pod(name: &str, labels: &str, ready_file: bool) -> String {
    let ready = if ready_file {
        "touch /tmp/ready && "
    } else {
        ""
    };
    format!(
        "apiVersion: v1
kind: Pod
metadata:
  name: {name}
  labels: {labels}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: web
    image: busybox:1.36
    command: [sh, -c, '{ready}echo {name} > /tmp/index.html && exec httpd -f -p 8080 -h /tmp']
    readinessProbe:
      exec:
        command: [cat, /tmp/ready]
      periodSeconds: 1
      failureThreshold: 1
"
    )
}

#[test]
fn a_service_sends_traffic_only_to_ready_pods_and_refuses_when_none_is() {
    if skip() {
        return;
    }
    let c = Cluster::start();
    c.apply(&web_pod("rd-a", "{app: rd}", true));
    c.apply(&web_pod("rd-b", "{app: rd}", false));
    c.apply(
        "apiVersion: v1
kind: Service
metadata:
  name: rd
spec:
  selector: {app: rd}
  ports:
  - port: 80
    targetPort: 8080
",
    );
    c.client("client");
    let ip_a = c.ready_pod("rd-a");
    let ip_b = c.pod_ip("rd-b");
    let cluster_ip = c.cluster_ip("rd");
    c.eventually("rd-a ready and rd-b not ready in the EndpointSlice", || {
        let mut want = vec![(ip_a.clone(), true), (ip_b.clone(), false)];
        want.sort();
        (c.endpoints("rd") == want).then_some(())
    });
    // The unready pod does serve when asked directly: only the Service leaves it out.
    assert_eq!(
        c.fetch("client", &format!("http://{ip_b}:8080/")).unwrap(),
        "rd-b"
    );
    // Many requests through the Service, by ClusterIP and by name: all reach rd-a.
    let url = format!("http://{cluster_ip}/");
    let script = format!(
        "for i in $(seq 40); do wget -q -O- -T 3 {url} || echo failed; wget -q -O- -T 3 http://rd/ || echo failed; done"
    );
    let out = c.exec_ok("client", &script);
    let answers: Vec<&str> = out.lines().collect();
    assert_eq!(answers.len(), 80, "{out}");
    assert!(
        answers.iter().all(|a| *a == "rd-a"),
        "requests reached something other than the ready pod:\n{out}"
    );

    // rd-a's probe fails from now on: no endpoint is ready, the Service refuses at once.
    c.exec_ok("rd-a", "rm /tmp/ready");
    c.eventually("both endpoints not ready", || {
        let mut want = vec![(ip_a.clone(), false), (ip_b.clone(), false)];
        want.sort();
        (c.endpoints("rd") == want).then_some(())
    });
    c.eventually_within(
        Duration::from_secs(10),
        "the proxy to reject the Service",
        || {
            c.nft_table()
                .contains(&format!("{cluster_ip} . tcp . 80 : goto reject-chain"))
                .then_some(())
        },
    );
    let started = Instant::now();
    let err = c
        .fetch("client", &url)
        .expect_err("a Service without ready endpoints answered");
    assert!(
        err.contains("refused"),
        "expected the connection to be refused, got: {err}"
    );
    // Refused, not left to time out (wget waits 3 s).
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );

    // Ready again: traffic comes back, to rd-a only.
    c.exec_ok("rd-a", "touch /tmp/ready");
    c.eventually("rd-a ready again behind the Service", || {
        c.fetch("client", &url).ok().filter(|b| b == "rd-a")
    });
    let out = c.exec_ok(
        "client",
        &format!("for i in $(seq 20); do wget -q -O- -T 3 {url} || echo failed; done"),
    );
    assert!(
        out.lines().all(|a| a == "rd-a") && out.lines().count() == 20,
        "{out}"
    );
}

#[test]
fn no_request_fails_during_a_rolling_update() {
    if skip() {
        return;
    }
    let c = Cluster::start();
    let manifest = std::fs::read_to_string(support::seed_manifests().join("my-web.yaml"))
        .expect("read my-web.yaml");
    c.apply(&manifest);
    c.client("client");
    c.eventually("3 my-web pods available", || {
        let d = c.get(&["deploy", "my-web"])?;
        (d["status"]["availableReplicas"] == 3).then_some(())
    });
    c.eventually("3 ready endpoints of my-web", || {
        let eps = c.endpoints("my-web");
        (eps.len() == 3 && eps.iter().all(|(_, r)| *r)).then_some(())
    });
    // A request every 20 ms or so, by name, for as long as the rollouts take (bounded).
    let requests = RequestLoop::start(&c, "client", "roll", "http://my-web/", "0.02", 20000);
    requests.wait_ok(&c, 20);
    // Four rollouts, back and forth: twelve old pods stop while the loop runs.
    let mut took = Vec::new();
    for version in ["2.0", "1.0", "2.0", "1.0"] {
        let started = Instant::now();
        let image = format!("rkube-test/web:{version}");
        c.kubectl_ok(&["set", "image", "deployment/my-web", &format!("web={image}")]);
        c.kubectl_ok(&["rollout", "status", "deployment/my-web", "--timeout=180s"]);
        // Old pods finish terminating after the rollout reports done: keep going past that.
        c.eventually(&format!("only {image} pods left"), || {
            let pods = c.get(&["pods", "-l", "app=my-web"])?;
            let images: Vec<&str> = pods["items"]
                .as_array()?
                .iter()
                .filter_map(|p| p["spec"]["containers"][0]["image"].as_str())
                .collect();
            (images.len() == 3 && images.iter().all(|i| *i == image)).then_some(())
        });
        took.push(started.elapsed());
    }
    std::thread::sleep(Duration::from_secs(1));
    let report = requests.stop(&c);
    eprintln!(
        "rolling updates took {took:?}: {} requests succeeded, {} failed",
        report.ok.len(),
        report.failed.len()
    );
    assert!(
        report.failed.is_empty(),
        "{} of {} requests failed during the rolling updates:\n{}\nserver warnings:\n{}",
        report.failed.len(),
        report.failed.len() + report.ok.len(),
        report.failed.join("\n"),
        c.log_warnings()
    );
    assert!(report.ok.len() >= 100, "too few requests: {report:?}");
    // Each rollout shows in the answers: 1.0, then 2.0, 1.0, 2.0, 1.0 (with overlaps).
    let mut versions: Vec<&str> = report.ok.iter().map(String::as_str).collect();
    versions.dedup();
    assert_eq!(versions.first(), Some(&"web 1.0"), "{versions:?}");
    assert_eq!(versions.last(), Some(&"web 1.0"), "{versions:?}");
    assert!(
        versions.iter().all(|v| *v == "web 1.0" || *v == "web 2.0") && versions.len() >= 5,
        "{versions:?}"
    );
}

#[test]
fn deleting_a_service_removes_its_rules_and_its_name() {
    if skip() {
        return;
    }
    let c = Cluster::start();
    c.apply(&web_pod("doomed-pod", "{app: doomed}", true));
    c.apply(
        "apiVersion: v1
kind: Service
metadata:
  name: doomed
spec:
  selector: {app: doomed}
  ports:
  - name: http
    port: 80
    targetPort: 8080
---
apiVersion: v1
kind: Service
metadata:
  name: kept
spec:
  selector: {app: doomed}
  ports:
  - port: 81
    targetPort: 8080
",
    );
    c.client("client");
    c.ready_pod("doomed-pod");
    let doomed_ip = c.cluster_ip("doomed");
    let kept_ip = c.cluster_ip("kept");
    let fqdn = "doomed.default.svc.cluster.local";
    c.eventually("the Service to be programmed", || {
        let table = c.nft_table();
        (table.contains(&format!("{doomed_ip} . tcp . 80 : goto service-"))
            && table.contains("-default/doomed/tcp/http"))
        .then_some(())
    });
    assert_eq!(
        c.fetch("client", &format!("http://{doomed_ip}/")).unwrap(),
        "doomed-pod"
    );
    let lookup = c.exec("client", &format!("nslookup -type=A {fqdn}"));
    assert_eq!(parse_nslookup(fqdn, &lookup), Some(vec![doomed_ip.clone()]));

    c.kubectl_ok(&["delete", "service", "doomed"]);
    c.eventually_within(Duration::from_secs(20), "the Service's rules to go", || {
        let table = c.nft_table();
        assert!(!table.is_empty(), "the proxy's table is gone");
        (!table.contains(&format!("{doomed_ip} ")) && !table.contains("/doomed/")).then_some(())
    });
    // Only its own: the other Service on the same pod stays.
    let table = c.nft_table();
    assert!(
        table.contains(&format!("{kept_ip} . tcp . 81 : goto service-"))
            && table.contains("-default/kept/tcp/"),
        "{table}"
    );
    assert_eq!(
        c.fetch("client", &format!("http://{kept_ip}:81/")).unwrap(),
        "doomed-pod"
    );
    c.eventually_within(
        Duration::from_secs(20),
        "NXDOMAIN for the deleted Service",
        || {
            let lookup = c.exec("client", &format!("nslookup -type=A {fqdn}"));
            parse_nslookup(fqdn, &lookup).is_none().then_some(())
        },
    );
    // The old address leads nowhere.
    assert!(c.fetch("client", &format!("http://{doomed_ip}/")).is_err());
}

#[test]
fn traffic_keeps_flowing_while_the_agent_restarts() {
    if skip() {
        return;
    }
    let mut c = Cluster::start();
    c.apply(
        "apiVersion: apps/v1
kind: Deployment
metadata:
  name: steady
spec:
  replicas: 2
  selector:
    matchLabels: {app: steady}
  template:
    metadata:
      labels: {app: steady}
    spec:
      containers:
      - name: web
        image: busybox:1.36
        command: [sh, -c, 'hostname > /tmp/index.html && exec httpd -f -p 8080 -h /tmp']
        readinessProbe:
          tcpSocket: {port: 8080}
          periodSeconds: 1
---
apiVersion: v1
kind: Service
metadata:
  name: steady
spec:
  selector: {app: steady}
  ports:
  - port: 80
    targetPort: 8080
",
    );
    c.client("client");
    c.eventually("2 steady pods available", || {
        let d = c.get(&["deploy", "steady"])?;
        (d["status"]["availableReplicas"] == 2).then_some(())
    });
    let cluster_ip = c.cluster_ip("steady");
    let pods_before = c.get(&["pods", "-l", "app=steady"]).unwrap();
    let url = format!("http://{cluster_ip}/");
    c.eventually("the Service to answer", || c.fetch("client", &url).ok());
    let requests = RequestLoop::start(&c, "client", "restart", &url, "0.05", 3000);
    requests.wait_ok(&c, 20);
    let table_before = c.nft_table();

    c.server.kill_9();
    // While the process is down the kernel keeps the table: the data path needs nobody.
    assert_eq!(
        c.nft_table(),
        table_before,
        "the table changed with the agent down"
    );
    std::thread::sleep(Duration::from_secs(5));
    c.server.restart();
    c.eventually("the restarted proxy to sync", || {
        (c.server
            .log()
            .matches("service proxy synced its caches")
            .count()
            >= 2)
            .then_some(())
    });
    std::thread::sleep(Duration::from_secs(5));
    // Reconciled: the restarted proxy programs changes; the Service's rules appear once.
    c.kubectl_ok(&["scale", "deployment/steady", "--replicas=3"]);
    c.eventually("3 ready endpoints", || {
        let eps = c.endpoints("steady");
        (eps.len() == 3 && eps.iter().all(|(_, r)| *r)).then_some(eps)
    });
    let eps = c.endpoints("steady");
    c.eventually_within(
        Duration::from_secs(20),
        "the third endpoint in the table",
        || {
            let table = c.nft_table();
            eps.iter()
                // A `dnat to ip:port` rule, or an element of the service's endpoint map.
                .all(|(ip, _)| {
                    table.contains(&format!("{ip}:8080")) || table.contains(&format!("{ip} . 8080"))
                })
                .then_some(())
        },
    );
    let table = c.nft_table();
    // One dispatch entry for the ClusterIP and one chain for the Service's port.
    assert_eq!(
        table.matches(&format!("{cluster_ip} . tcp . 80 :")).count(),
        1,
        "the Service's dispatch entry is there more than once or not at all:\n{table}"
    );
    assert_eq!(
        table
            .lines()
            .filter(|l| l.trim_start().starts_with("chain service-") && l.contains("/steady/tcp/"))
            .count(),
        1,
        "the Service's chain is there more than once or not at all:\n{table}"
    );
    std::thread::sleep(Duration::from_secs(2));
    let report = requests.stop(&c);
    eprintln!(
        "across the restart: {} requests succeeded, {} failed",
        report.ok.len(),
        report.failed.len()
    );
    assert!(
        report.failed.is_empty(),
        "requests failed across the restart:\n{}\nserver log tail:\n{}",
        report.failed.join("\n"),
        c.log_tail(80)
    );
    assert!(
        report.ok.len() >= 100,
        "too few requests: {}",
        report.ok.len()
    );
    // The pods that served before still serve (the agent adopted them, no restarts).
    for pod in pods_before["items"].as_array().unwrap() {
        let name = pod["metadata"]["name"].as_str().unwrap();
        let now = c.get(&["pod", name]).expect("the pod is still there");
        assert_eq!(now["metadata"]["uid"], pod["metadata"]["uid"]);
        assert_eq!(
            now["status"]["containerStatuses"][0]["restartCount"], 0,
            "{name}"
        );
        assert!(report.ok.iter().any(|b| b == name), "{name} got no traffic");
    }
}

#[test]
fn pods_find_services_by_name_and_the_host_reaches_node_ports_and_load_balancers() {
    if skip() {
        return;
    }
    let c = Cluster::start();
    c.kubectl_ok(&["create", "namespace", "other"]);
    let lb_port = testing::free_port();
    // A StatefulSet behind its headless Service `web`, a ClusterIP Service `front`, a NodePort
    // and a LoadBalancer Service, an ExternalName, and a Service in another namespace.
    c.apply(&format!(
        "apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  clusterIP: None
  selector: {{app: web}}
  ports:
  - name: http
    port: 8080
---
apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: web
spec:
  serviceName: web
  replicas: 2
  selector:
    matchLabels: {{app: web}}
  template:
    metadata:
      labels: {{app: web}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: web
        image: busybox:1.36
        command: [sh, -c, 'hostname > /tmp/index.html && exec httpd -f -p 8080 -h /tmp']
        readinessProbe:
          tcpSocket: {{port: 8080}}
          periodSeconds: 1
---
apiVersion: v1
kind: Service
metadata:
  name: front
spec:
  selector: {{app: web}}
  ports:
  - port: 80
    targetPort: 8080
---
apiVersion: v1
kind: Service
metadata:
  name: front-np
spec:
  type: NodePort
  selector: {{app: web}}
  ports:
  - port: 80
    targetPort: 8080
---
apiVersion: v1
kind: Service
metadata:
  name: front-lb
spec:
  type: LoadBalancer
  selector: {{app: web}}
  ports:
  - port: {lb_port}
    targetPort: 8080
---
apiVersion: v1
kind: Service
metadata:
  name: alias
spec:
  type: ExternalName
  externalName: front.default.svc.cluster.local
---
apiVersion: v1
kind: Pod
metadata:
  name: o-web
  namespace: other
  labels: {{app: web}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: web
    image: busybox:1.36
    command: [sh, -c, 'hostname > /tmp/index.html && exec httpd -f -p 8080 -h /tmp']
---
apiVersion: v1
kind: Service
metadata:
  name: front
  namespace: other
spec:
  selector: {{app: web}}
  ports:
  - port: 80
    targetPort: 8080
"
    ));
    c.client("client");
    let ip0 = c.ready_pod("web-0");
    let ip1 = c.ready_pod("web-1");
    let front = c.cluster_ip("front");
    let ns = "default";

    // The Service by its short name, with its namespace, and fully qualified.
    for name in ["front", "front.default", "front.default.svc.cluster.local"] {
        let body = c
            .fetch("client", &format!("http://{name}/"))
            .unwrap_or_else(|e| panic!("wget http://{name}/ failed: {e}"));
        assert!(body == "web-0" || body == "web-1", "{name}: {body}");
    }
    let fqdn = format!("front.{ns}.svc.cluster.local");
    let lookup = c.exec("client", &format!("nslookup -type=A {fqdn}"));
    assert_eq!(parse_nslookup(&fqdn, &lookup), Some(vec![front.clone()]));

    // A headless Service: the ready pods' addresses.
    let fqdn = format!("web.{ns}.svc.cluster.local");
    let mut both = vec![ip0.clone(), ip1.clone()];
    both.sort();
    c.eventually_within(
        Duration::from_secs(20),
        "both pods behind the headless name",
        || {
            let lookup = c.exec("client", &format!("nslookup -type=A {fqdn}"));
            (parse_nslookup(&fqdn, &lookup) == Some(both.clone())).then_some(())
        },
    );
    // A StatefulSet pod by its stable name, through its headless Service.
    let fqdn = format!("web-0.web.{ns}.svc.cluster.local");
    let lookup = c.exec("client", &format!("nslookup -type=A {fqdn}"));
    assert_eq!(parse_nslookup(&fqdn, &lookup), Some(vec![ip0.clone()]));
    assert_eq!(
        c.fetch("client", "http://web-1.web:8080/").unwrap(),
        "web-1"
    );

    // ExternalName: a CNAME to its target, which resolves on.
    let out = c.exec(
        "client",
        "nslookup -type=CNAME alias.default.svc.cluster.local",
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("canonical name = front.default.svc.cluster.local"),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(c.fetch("client", "http://alias/").is_ok());

    // Another namespace's Service by <svc>.<ns>.
    let other = c.eventually("other/front's ClusterIP", || {
        c.get(&["svc", "front", "-n", "other"])?["spec"]["clusterIP"]
            .as_str()
            .map(String::from)
    });
    let fqdn = "front.other.svc.cluster.local";
    let lookup = c.exec("client", &format!("nslookup -type=A {fqdn}"));
    assert_eq!(parse_nslookup(fqdn, &lookup), Some(vec![other]));
    let body = c
        .fetch("client", "http://front.other/")
        .expect("front.other");
    assert_eq!(body, "o-web");

    // From the host: the NodePort on the node's address, the LoadBalancer's ingress address.
    let node = c.get(&["node", &c.node]).unwrap();
    let node_ip = node["status"]["addresses"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["type"] == "InternalIP")
        .and_then(|a| a["address"].as_str())
        .expect("the node's InternalIP")
        .to_string();
    let node_port = c.get(&["svc", "front-np"]).unwrap()["spec"]["ports"][0]["nodePort"]
        .as_u64()
        .expect("a nodePort");
    let curl = |url: &str| -> Option<String> {
        let out = Command::new("curl")
            .args(["-sf", "-m", "5", url])
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    let url = format!("http://{node_ip}:{node_port}/");
    let body = c.eventually_within(
        Duration::from_secs(30),
        &format!("{url} from the host"),
        || curl(&url),
    );
    assert!(body == "web-0" || body == "web-1", "{body}");
    let lb_ip = c.eventually("an ingress address of front-lb", || {
        c.get(&["svc", "front-lb"])?["status"]["loadBalancer"]["ingress"][0]["ip"]
            .as_str()
            .map(String::from)
    });
    let url = format!("http://{lb_ip}:{lb_port}/");
    let body = c.eventually_within(
        Duration::from_secs(30),
        &format!("{url} from the host"),
        || curl(&url),
    );
    assert!(body == "web-0" || body == "web-1", "{body}");
    // The cluster DNS answers the host too, on its ClusterIP.
    let dns = c.dns_ip();
    let fqdn = format!("front.{ns}.svc.cluster.local");
    let out = Command::new("busybox")
        .args(["nslookup", "-type=A", &fqdn, &dns])
        .output()
        .unwrap();
    assert_eq!(parse_nslookup(&fqdn, &out), Some(vec![front]));
}
