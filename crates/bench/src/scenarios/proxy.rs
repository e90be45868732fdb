//! `proxy`: the service proxy programming nftables (crate `proxy`'s own benchmark, in a
//! throwaway network namespace) for 1,000 and 10,000 Services × 10 endpoints, beside
//! `iptables-restore` of the rule set kube-proxy's iptables mode writes for the same Services,
//! loaded in another throwaway namespace in the same run, with both of its backends (legacy
//! and nf_tables): the faster is the reference.
//!
//! Needs root (network namespaces), `ip`, `nft` and `iptables-restore`.

use std::fmt::Write as _;
use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::figure::{Figure, Target, Unit};
use crate::stats::Samples;
use crate::{BenchError, Options};

const SCENARIO: &str = "proxy";
const ENDPOINTS: usize = 10;
/// Issue 5's targets: a full sync of 10,000 Services within a second, one endpoint change
/// programmed within 50 ms.
const FULL_SYNC_TARGET_MS: f64 = 1000.0;
const ONE_CHANGE_TARGET_MS: f64 = 50.0;
/// The pod network the synthetic endpoints live in (as in `proxy::bench`).
const CLUSTER_CIDR: &str = "10.42.0.0/16";

fn fail(message: impl Into<String>) -> BenchError {
    BenchError::Scenario(message.into())
}

/// Whether this process runs as root (real uid 0).
pub(crate) fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| crate::figure::kib_field(&s, "Uid:"))
        == Some(0)
}

/// The name of Service `i` of the synthetic set, as `proxy::bench` makes it.
fn service_name(i: usize) -> String {
    format!("svc-{i}")
}

/// A kube-proxy-style chain name: a prefix and 16 characters derived from `key` (kube-proxy
/// uses a base32 SHA-256; any stable 16-character digest loads the same).
fn chain(prefix: &str, key: &str) -> String {
    // FNV-1a, 64 bits.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.bytes() {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{prefix}-{hash:016X}")
}

/// What the rules of one Service need: its ClusterIP, its chain and its endpoints' chains
/// and addresses. Addresses match `proxy::bench::synthetic_service`/`synthetic_slice`.
struct ServiceRules {
    name: String,
    cluster_ip: String,
    svc_chain: String,
    /// (chain, pod IP) of each ready endpoint.
    endpoints: Vec<(String, String)>,
}

impl ServiceRules {
    fn new(i: usize, endpoints: usize, not_ready: usize) -> Self {
        let svc = proxy::bench::synthetic_service(i);
        let cluster_ip = svc
            .spec
            .and_then(|s| s.cluster_ip)
            .expect("synthetic services have a ClusterIP");
        let name = format!("bench/{}:http", service_name(i));
        let slice = proxy::bench::synthetic_slice(i, endpoints, not_ready);
        let endpoints = slice
            .endpoints
            .iter()
            .filter(|e| e.conditions.as_ref().and_then(|c| c.ready) == Some(true))
            .map(|e| {
                let ip = e.addresses[0].clone();
                (chain("KUBE-SEP", &format!("{name}:{ip}:8080")), ip)
            })
            .collect();
        Self {
            svc_chain: chain("KUBE-SVC", &format!("{name}/tcp")),
            name,
            cluster_ip,
            endpoints,
        }
    }

    fn services_rule(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "-A KUBE-SERVICES -m comment --comment \"{} cluster IP\" -m tcp -p tcp -d {}/32 --dport 80 -j {}",
            self.name, self.cluster_ip, self.svc_chain
        );
    }

    /// The Service's chain, its endpoints' chains and their rules, as kube-proxy writes them
    /// with more than 1,000 endpoints (no comments on endpoint rules).
    fn chains(&self, declarations: &mut String, rules: &mut String) {
        let _ = writeln!(declarations, ":{} - [0:0]", self.svc_chain);
        let _ = writeln!(
            rules,
            "-A {} -m comment --comment \"{} cluster IP\" -m tcp -p tcp -d {}/32 --dport 80 ! -s {CLUSTER_CIDR} -j KUBE-MARK-MASQ",
            self.svc_chain, self.name, self.cluster_ip
        );
        let n = self.endpoints.len();
        for (k, (sep, _)) in self.endpoints.iter().enumerate() {
            if k + 1 < n {
                let probability = 1.0 / (n - k) as f64;
                let _ = writeln!(
                    rules,
                    "-A {} -m statistic --mode random --probability {probability:.10} -j {sep}",
                    self.svc_chain
                );
            } else {
                let _ = writeln!(rules, "-A {} -j {sep}", self.svc_chain);
            }
        }
        for (sep, ip) in &self.endpoints {
            let _ = writeln!(declarations, ":{sep} - [0:0]");
            let _ = writeln!(rules, "-A {sep} -s {ip}/32 -j KUBE-MARK-MASQ");
            let _ = writeln!(
                rules,
                "-A {sep} -m tcp -p tcp -j DNAT --to-destination {ip}:8080"
            );
        }
    }
}

/// The chains and rules kube-proxy rewrites on every sync, whatever changed.
fn common_nat(declarations: &mut String, rules: &mut String) {
    for c in [
        "KUBE-SERVICES",
        "KUBE-NODEPORTS",
        "KUBE-POSTROUTING",
        "KUBE-MARK-MASQ",
    ] {
        let _ = writeln!(declarations, ":{c} - [0:0]");
    }
    rules.push_str(
        "-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN\n\
         -A KUBE-POSTROUTING -j MARK --xor-mark 0x4000\n\
         -A KUBE-POSTROUTING -m comment --comment \"kubernetes service traffic requiring SNAT\" -j MASQUERADE --random-fully\n\
         -A KUBE-MARK-MASQ -j MARK --or-mark 0x4000\n",
    );
}

const FILTER: &str = "*filter\n\
    :KUBE-SERVICES - [0:0]\n\
    :KUBE-EXTERNAL-SERVICES - [0:0]\n\
    :KUBE-FORWARD - [0:0]\n\
    :KUBE-PROXY-FIREWALL - [0:0]\n\
    -A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP\n\
    -A KUBE-FORWARD -m comment --comment \"kubernetes forwarding rules\" -m mark --mark 0x4000/0x4000 -j ACCEPT\n\
    -A KUBE-FORWARD -m comment --comment \"kubernetes forwarding conntrack rule\" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n\
    COMMIT\n";

const NODEPORTS_LAST: &str = "-A KUBE-SERVICES -m comment --comment \"kubernetes service nodeports; NOTE: this must be the last rule in this chain\" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS\n";

/// The `iptables-restore` input of kube-proxy's full sync of `services` Services with
/// `endpoints` ready endpoints each (a ClusterIP Service, TCP port 80 → 8080).
fn full_script(services: usize, endpoints: usize) -> String {
    let (mut declarations, mut rules) = (String::new(), String::new());
    common_nat(&mut declarations, &mut rules);
    let mut services_rules = String::new();
    for i in 0..services {
        let svc = ServiceRules::new(i, endpoints, 0);
        svc.services_rule(&mut services_rules);
        svc.chains(&mut declarations, &mut rules);
    }
    format!("{FILTER}*nat\n{declarations}{rules}{services_rules}{NODEPORTS_LAST}COMMIT\n")
}

/// The input of kube-proxy's partial sync after Service `changed` went from `before` to
/// `after` not-ready endpoints: KUBE-SERVICES and the common chains in full (kube-proxy
/// rewrites them on every sync), the changed Service's chains, and an endpoint chain that is
/// gone flushed and deleted.
fn one_change_script(
    services: usize,
    endpoints: usize,
    changed: usize,
    before: usize,
    after: usize,
) -> String {
    let (mut declarations, mut rules) = (String::new(), String::new());
    common_nat(&mut declarations, &mut rules);
    let mut services_rules = String::new();
    for i in 0..services {
        // Every Service's KUBE-SERVICES rule; only the changed one's chains.
        let svc = ServiceRules::new(i, endpoints, if i == changed { after } else { 0 });
        svc.services_rule(&mut services_rules);
        if i == changed {
            svc.chains(&mut declarations, &mut rules);
        }
    }
    let now = ServiceRules::new(changed, endpoints, after);
    let mut deletions = String::new();
    for (sep, _) in ServiceRules::new(changed, endpoints, before).endpoints {
        if !now.endpoints.iter().any(|(c, _)| *c == sep) {
            // A chain must be flushed (declared) before it can be deleted.
            let _ = writeln!(declarations, ":{sep} - [0:0]");
            let _ = writeln!(deletions, "-X {sep}");
        }
    }
    format!(
        "*filter\nCOMMIT\n*nat\n{declarations}{rules}{services_rules}{NODEPORTS_LAST}{deletions}COMMIT\n"
    )
}

/// The two backends of `iptables-restore` (Debian's default is nf_tables); kube-proxy uses
/// whichever the host's rules are in.
const BACKENDS: [&str; 2] = ["iptables-legacy-restore", "iptables-nft-restore"];

/// `PROGRAM --version`, e.g. `iptables-restore v1.8.9 (nf_tables)`.
fn restore_version(program: &str) -> Result<String, BenchError> {
    let out = Command::new(program)
        .arg("--version")
        .output()
        .map_err(|source| BenchError::Io {
            context: format!("run {program} --version (is iptables installed?)"),
            source,
        })?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Feeds `script` to `PROGRAM --noflush` (as kube-proxy runs it) inside `netns`; returns the
/// time from its exec to its exit, or `None` when it did not finish by `deadline` (then it
/// is killed).
fn restore(
    program: &str,
    netns: &str,
    script: &str,
    deadline: Instant,
) -> Result<Option<Duration>, BenchError> {
    let began = Instant::now();
    let mut child = Command::new("ip")
        .args(["netns", "exec", netns, program, "--noflush"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| BenchError::Io {
            context: format!("run {program} in network namespace {netns}"),
            source,
        })?;
    // Written from a thread: the nf_tables backend works while it reads, so a slow load
    // would otherwise keep this thread in the write past the deadline.
    let mut stdin = child.stdin.take().expect("stdin is piped");
    let input = script.to_string();
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|source| BenchError::Io {
            context: format!("wait for {program} in network namespace {netns}"),
            source,
        })? {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            // the write ends with the reader gone
            let _ = writer.join();
            return Ok(None);
        }
        std::thread::sleep(Duration::from_micros(200));
    };
    let took = began.elapsed();
    let written = writer
        .join()
        .unwrap_or_else(|_| Err(std::io::Error::other("writer thread panicked")));
    if !status.success() {
        let mut stderr = String::new();
        if let Some(mut pipe) = child.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut pipe, &mut stderr);
        }
        return Err(fail(format!(
            "{program} in network namespace {netns}: {status}: {}",
            stderr.trim()
        )));
    }
    written.map_err(|source| BenchError::Io {
        context: format!("write the rules to {program}"),
        source,
    })?;
    Ok(Some(took))
}

/// One backend's reference: kube-proxy's rule set loaded into a fresh network namespace per
/// run (full sync), then `changes` one-endpoint changes of the middle Service (one endpoint
/// not ready, then ready again, alternately). `None` if a load did not finish within `limit`.
fn iptables_reference(
    program: &str,
    services: usize,
    endpoints: usize,
    runs: usize,
    changes: usize,
    limit: Duration,
) -> Result<Option<(Samples, Samples)>, BenchError> {
    let full = full_script(services, endpoints);
    let changed = services / 2;
    let deltas = [
        one_change_script(services, endpoints, changed, 0, 1),
        one_change_script(services, endpoints, changed, 1, 0),
    ];
    let (mut full_samples, mut change_samples) = (Samples::new(), Samples::new());
    let deadline = Instant::now() + limit;
    for run in 0..runs {
        let netns = proxy::bench::TempNetns::create(&format!(
            "rkube-bench-ipt-{}-{run}",
            std::process::id()
        ))
        .map_err(|e| fail(e.to_string()))?;
        let Some(took) = restore(program, &netns.name, &full, deadline)? else {
            return Ok(None);
        };
        full_samples.push(took);
        if run + 1 == runs {
            for k in 0..changes {
                let Some(took) = restore(program, &netns.name, &deltas[k % 2], deadline)? else {
                    return Ok(None);
                };
                change_samples.push(took);
            }
        }
    }
    Ok(Some((full_samples, change_samples)))
}

/// What one backend did: its version and median full sync and one change, or that it did not
/// finish in time.
struct Measured {
    version: String,
    result: Option<(f64, f64)>,
}

impl Measured {
    fn describe(&self, limit: Duration) -> String {
        match self.result {
            Some((full, change)) => format!(
                "{}: full {}, one change {}",
                self.version,
                Unit::Millis.format(full),
                Unit::Millis.format(change)
            ),
            None => format!("{}: not done within {} s", self.version, limit.as_secs()),
        }
    }
}

/// Both backends; the reference is the faster (the stricter comparison).
fn references(
    services: usize,
    runs: usize,
    changes: usize,
    limit: Duration,
) -> Result<Vec<Measured>, BenchError> {
    BACKENDS
        .iter()
        .map(|program| {
            let version = restore_version(program)?;
            let result = iptables_reference(program, services, ENDPOINTS, runs, changes, limit)?
                .map(|(mut full, mut change)| (full.median_ms(), change.median_ms()));
            Ok(Measured { version, result })
        })
        .collect()
}

/// `proxy::bench` `runs` times (each in its own namespace).
fn rkube_proxy(services: usize, runs: usize) -> Result<(Samples, Samples, String), BenchError> {
    let (mut full, mut change) = (Samples::new(), Samples::new());
    let mut counts = String::new();
    for _ in 0..runs {
        let report = proxy::bench(services, ENDPOINTS)
            .map_err(|e| fail(format!("proxy benchmark, {services} services: {e}")))?;
        full.push(report.full_sync);
        change.push(report.one_change);
        counts = format!("{} chains, {} rules", report.chains, report.rules);
    }
    Ok((full, change, counts))
}

pub async fn run(options: &Options) -> Result<Vec<Figure>, BenchError> {
    if !is_root() {
        return Err(fail(
            "the proxy scenario makes network namespaces: run it as root (with ip, nft and iptables installed)",
        ));
    }
    // (services, key suffix); quick runs a tenth of each size, once. The nf_tables backend of
    // iptables-restore grows faster than linearly with the rule count: it is given `limit`.
    let (sizes, runs, changes, limit) = if options.quick {
        ([(100, "1k"), (1_000, "10k")], 1, 2, Duration::from_secs(20))
    } else {
        (
            [(1_000, "1k"), (10_000, "10k")],
            3,
            10,
            Duration::from_secs(60),
        )
    };
    let mut figures = Vec::new();
    for (services, key) in sizes {
        let (mut ours_full, mut ours_change, counts) =
            tokio::task::spawn_blocking(move || rkube_proxy(services, runs))
                .await
                .map_err(|e| fail(format!("proxy benchmark: {e}")))??;
        let measured =
            tokio::task::spawn_blocking(move || references(services, runs, changes, limit))
                .await
                .map_err(|e| fail(format!("iptables-restore reference: {e}")))??;
        let others = measured
            .iter()
            .map(|m| m.describe(limit))
            .collect::<Vec<_>>()
            .join("; ");
        let fastest = |pick: fn(&(f64, f64)) -> f64| {
            measured
                .iter()
                .filter_map(|m| m.result.as_ref().map(|r| (m.version.as_str(), pick(r))))
                .min_by(|a, b| a.1.total_cmp(&b.1))
                .ok_or_else(|| fail(format!("no iptables-restore finished: {others}")))
        };
        let (full_by, full_ms) = fastest(|r| r.0)?;
        let (change_by, change_ms) = fastest(|r| r.1)?;
        let shape = format!("{services} Services × {ENDPOINTS} endpoints");
        figures.push(
            Figure::new(
                SCENARIO,
                &format!("proxy.full_sync_ms.{key}"),
                format!(
                    "full sync, {shape} ({counts}), median of {runs}; kube-proxy rules with {others}"
                ),
                ours_full.median_ms(),
                Unit::Millis,
            )
            .reference(format!("{full_by}, kube-proxy rules"), full_ms)
            .target(Target::AtMost(FULL_SYNC_TARGET_MS)),
        );
        figures.push(
            Figure::new(
                SCENARIO,
                &format!("proxy.one_change_ms.{key}"),
                format!("one endpoint not ready → programmed, {shape}, median of {runs}"),
                ours_change.median_ms(),
                Unit::Millis,
            )
            .reference(
                format!("{change_by}, kube-proxy partial sync, median of {changes}"),
                change_ms,
            )
            .target(Target::AtMost(ONE_CHANGE_TARGET_MS)),
        );
    }
    Ok(figures)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_script_has_every_chain_and_endpoint() {
        let script = full_script(3, 4);
        let declared = script.lines().filter(|l| l.starts_with(':')).count();
        // filter: 4; nat: 4 common + 3 services × (1 + 4 endpoints).
        assert_eq!(declared, 4 + 4 + 3 * 5, "{script}");
        assert_eq!(script.matches("-j DNAT").count(), 12);
        assert_eq!(script.matches("--probability").count(), 3 * 3);
        assert!(script.contains("--probability 0.2500000000"), "{script}");
        assert!(script.contains("--probability 0.5000000000"), "{script}");
        // The nodeports jump is KUBE-SERVICES' last rule.
        let last = script
            .lines()
            .rfind(|l| l.starts_with("-A KUBE-SERVICES"))
            .unwrap();
        assert!(last.ends_with("-j KUBE-NODEPORTS"), "{last}");
        assert_eq!(script.matches("COMMIT").count(), 2);
    }

    #[test]
    fn one_change_rewrites_one_service_and_deletes_the_gone_endpoint() {
        let script = one_change_script(5, 3, 2, 0, 1);
        // KUBE-SERVICES keeps every Service's rule.
        assert_eq!(
            script
                .lines()
                .filter(|l| l.starts_with("-A KUBE-SERVICES") && l.contains("cluster IP"))
                .count(),
            5
        );
        // Only service 2's chains: its SVC chain and its 2 ready endpoints.
        assert_eq!(script.matches("-j DNAT").count(), 2);
        let svc = ServiceRules::new(2, 3, 0);
        assert_eq!(script.matches("\n-X ").count(), 1);
        assert!(script.contains(&format!("-X {}", svc.endpoints[0].0)));
        // Back to all ready: nothing to delete, the chain declared again.
        let back = one_change_script(5, 3, 2, 1, 0);
        assert!(!back.contains("\n-X "));
        assert!(back.contains(&format!(":{} - [0:0]", svc.endpoints[0].0)));
    }

    #[test]
    fn iptables_restore_loads_the_reference_rules() {
        if !is_root() {
            eprintln!("skipped: network namespaces need root");
            return;
        }
        for program in BACKENDS {
            let (mut full, changes) =
                iptables_reference(program, 20, 3, 1, 2, Duration::from_secs(60))
                    .unwrap()
                    .unwrap_or_else(|| panic!("{program} did not finish in 60 s"));
            assert_eq!((full.len(), changes.len()), (1, 2), "{program}");
            assert!(full.median_ms() > 0.0, "{program}");
        }
    }

    #[test]
    fn chain_names_are_stable_and_within_iptables_limits() {
        let a = chain("KUBE-SVC", "bench/svc-1:http/tcp");
        assert_eq!(a, chain("KUBE-SVC", "bench/svc-1:http/tcp"));
        assert_ne!(a, chain("KUBE-SVC", "bench/svc-2:http/tcp"));
        assert!(a.len() <= 28, "{a}");
    }
}
