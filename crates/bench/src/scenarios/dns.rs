//! `dns`: the cluster DNS server (crate `dns`'s own benchmark: 1,000 synthetic Services, one
//! UDP client on loopback, 16 queries in flight), beside Debian's dnsmasq serving the same
//! names from a hosts file, driven by the same client in the same run.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::figure::{Figure, Target, Unit};
use crate::{BenchError, Options};

const SCENARIO: &str = "dns";
/// Queries in flight from the one client.
const CONCURRENCY: usize = 16;
/// Issue 5's targets.
const QPS_TARGET: f64 = 20_000.0;
const P99_TARGET_MS: f64 = 2.0;
/// How long dnsmasq may take to answer its first query.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

fn fail(message: impl Into<String>) -> BenchError {
    BenchError::Scenario(message.into())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The synthetic cluster of `dns::bench` as a hosts file: each Service's name with its
/// ClusterIP, or with each ready endpoint of a headless Service (one line each, so that the
/// answer holds them all, as the cluster DNS answers).
fn hosts_file() -> String {
    let (services, slices) = dns::bench::synthetic_objects(dns::bench::BENCH_SERVICES);
    let mut out = String::new();
    for svc in &services {
        let (Some(name), Some(namespace)) = (&svc.metadata.name, &svc.metadata.namespace) else {
            continue;
        };
        let fqdn = format!("{name}.{namespace}.svc.cluster.local");
        let cluster_ip = svc.spec.as_ref().and_then(|s| s.cluster_ip.as_deref());
        match cluster_ip {
            Some(ip) if ip != "None" => {
                let _ = writeln!(out, "{ip} {fqdn}");
            }
            _ => {
                let label = ("kubernetes.io/service-name".to_string(), name.clone());
                for slice in slices.iter().filter(|s| {
                    s.metadata.namespace.as_ref() == Some(namespace)
                        && s.metadata
                            .labels
                            .as_ref()
                            .is_some_and(|l| l.get(&label.0) == Some(&label.1))
                }) {
                    for endpoint in &slice.endpoints {
                        let ready = endpoint.conditions.as_ref().and_then(|c| c.ready);
                        if ready != Some(false) {
                            for ip in &endpoint.addresses {
                                let _ = writeln!(out, "{ip} {fqdn}");
                            }
                        }
                    }
                }
            }
        }
    }
    out
}

/// dnsmasq on 127.0.0.1:`port` answering from `hosts` only (no upstream, no /etc/hosts, no
/// configuration file), killed on drop.
struct Dnsmasq {
    child: Option<Child>,
    version: String,
}

impl Dnsmasq {
    fn installed() -> Option<String> {
        let out = Command::new("dnsmasq").arg("--version").output().ok()?;
        let text = String::from_utf8_lossy(&out.stdout);
        // "Dnsmasq version 2.90  Copyright ..."
        let version = text.split_whitespace().nth(2)?;
        Some(format!("dnsmasq {version}"))
    }

    fn spawn(dir: &Path, port: u16, version: String) -> Result<Self, BenchError> {
        let hosts = dir.join("hosts");
        std::fs::write(&hosts, hosts_file()).map_err(|source| BenchError::Io {
            context: format!("write {}", hosts.display()),
            source,
        })?;
        let child = Command::new("dnsmasq")
            .arg("--keep-in-foreground")
            .arg("--conf-file=/dev/null")
            .arg("--no-resolv")
            .arg("--no-hosts")
            .arg(format!("--addn-hosts={}", hosts.display()))
            .arg("--listen-address=127.0.0.1")
            .arg("--bind-interfaces")
            .arg(format!("--port={port}"))
            .arg(format!("--pid-file={}", dir.join("dnsmasq.pid").display()))
            // Root stays root: the default switch to `nobody` could not read a private temp dir.
            .arg("--user=root")
            .arg("--log-facility=-")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|source| BenchError::Io {
                context: "start dnsmasq".into(),
                source,
            })?;
        Ok(Self {
            child: Some(child),
            version,
        })
    }

    /// Sends single queries until one is answered.
    async fn wait_ready(&mut self, addr: SocketAddr) -> Result<(), BenchError> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                return Err(fail(format!("dnsmasq exited with {status}")));
            }
            let probe = tokio::time::timeout(Duration::from_secs(2), dns::bench::fire(addr, 1, 1));
            if let Ok(Ok(report)) = probe.await
                && report.answered == 1
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(fail(format!(
                    "dnsmasq on {addr} did not answer within {READY_TIMEOUT:?}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Fails unless most queries were answered: lost or wrong answers would make the figures
/// about something else.
fn check(who: &str, report: &dns::BenchReport) -> Result<(), BenchError> {
    if report.answered == 0 || report.errors + report.lost > report.queries / 100 {
        return Err(fail(format!("{who}: {report}")));
    }
    Ok(())
}

pub async fn run(options: &Options) -> Result<Vec<Figure>, BenchError> {
    let queries = if options.quick { 5_000 } else { 200_000 };
    let ours = dns::bench(queries, CONCURRENCY)
        .await
        .map_err(|e| fail(e.to_string()))?;
    check("rkube DNS", &ours)?;

    let reference = match Dnsmasq::installed() {
        Some(version) => {
            let dir = tempfile::Builder::new()
                .prefix("rkube-bench-dns-")
                .tempdir()
                .map_err(|source| BenchError::Io {
                    context: "create a temporary directory for dnsmasq".into(),
                    source,
                })?;
            let port = testing::free_port();
            let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
            let mut dnsmasq = Dnsmasq::spawn(dir.path(), port, version)?;
            dnsmasq.wait_ready(addr).await?;
            let report = dns::bench::fire(addr, queries, CONCURRENCY)
                .await
                .map_err(|e| fail(format!("dnsmasq: {e}")))?;
            check(&dnsmasq.version, &report)?;
            Some((
                format!("{}, same names and client", dnsmasq.version),
                report,
            ))
        }
        None => {
            eprintln!(
                "bench: dns: dnsmasq is not installed (scripts/install-deps.sh): no reference"
            );
            None
        }
    };

    let shape = format!(
        "{} queries for {} Service names, {CONCURRENCY} in flight from one UDP client ({} errors, {} lost)",
        ours.queries, ours.services, ours.errors, ours.lost
    );
    let mut qps = Figure::new(
        SCENARIO,
        "dns.queries_per_s",
        format!("queries/s, {shape}"),
        ours.qps,
        Unit::PerSecond,
    )
    .target(Target::AtLeast(QPS_TARGET));
    let mut p50 = Figure::new(
        SCENARIO,
        "dns.p50_ms",
        "query latency p50",
        ms(ours.p50),
        Unit::Millis,
    );
    let mut p99 = Figure::new(
        SCENARIO,
        "dns.p99_ms",
        "query latency p99",
        ms(ours.p99),
        Unit::Millis,
    )
    .target(Target::AtMost(P99_TARGET_MS));
    if let Some((label, r)) = reference {
        qps = qps.reference(label.clone(), r.qps);
        p50 = p50.reference(label.clone(), ms(r.p50));
        p99 = p99.reference(label, ms(r.p99));
    }
    Ok(vec![qps, p50, p99])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_file_names_every_service_of_the_benchmark() {
        let text = hosts_file();
        let names: std::collections::HashSet<&str> = text
            .lines()
            .map(|l| l.split_whitespace().nth(1).unwrap())
            .collect();
        assert_eq!(names.len(), dns::bench::BENCH_SERVICES);
        assert!(names.contains("svc-0.ns-0.svc.cluster.local"), "{text}");
        // Service 9 is headless with three endpoints: three lines.
        let headless = text
            .lines()
            .filter(|l| l.ends_with(" svc-9.ns-9.svc.cluster.local"))
            .count();
        assert_eq!(headless, 3, "{text}");
        for line in text.lines() {
            let ip = line.split_whitespace().next().unwrap();
            assert!(ip.parse::<Ipv4Addr>().is_ok(), "{line}");
        }
    }
}
