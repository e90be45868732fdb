//! The proxy benchmark: program N Services × M endpoints into a throwaway network namespace,
//! then time the programming of a single endpoint change.

use std::net::Ipv4Addr;
use std::process::Command;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::json;

use crate::nft::{Nft, NftError};
use crate::proxier::{Cache, Proxier};
use crate::rules::RuleConfig;

#[derive(Debug, Clone)]
pub struct BenchReport {
    pub services: usize,
    pub endpoints_per_service: usize,
    pub chains: usize,
    pub rules: usize,
    /// Size of the full sync's transactions (the fixed part's script, the netlink batch).
    pub script_bytes: usize,
    /// Full sync: rules generated from the objects and loaded in one transaction.
    pub full_sync: Duration,
    /// One EndpointSlice change: from the cache update to the transaction committed.
    pub one_change: Duration,
    /// The reference: the same Services as kube-proxy's iptables mode writes them, loaded by
    /// `iptables-restore` into an empty network namespace (None when it could not run).
    pub iptables_restore_full_sync: Option<Duration>,
}

impl std::fmt::Display for BenchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "proxy: {} services x {} endpoints ({} chains, {} rules, {} KiB written): full sync {:.3} s, one endpoint change {:.1} ms",
            self.services,
            self.endpoints_per_service,
            self.chains,
            self.rules,
            self.script_bytes / 1024,
            self.full_sync.as_secs_f64(),
            self.one_change.as_secs_f64() * 1000.0
        )?;
        if let Some(d) = self.iptables_restore_full_sync {
            write!(
                f,
                "; iptables-restore of the same in kube-proxy's iptables layout {:.3} s",
                d.as_secs_f64()
            )?;
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("create network namespace {name}: {detail}")]
    Netns { name: String, detail: String },
    #[error(transparent)]
    Nft(#[from] NftError),
    #[error("iptables-restore: {detail}")]
    IptablesRestore { detail: String },
}

/// A network namespace made for a test or the benchmark, deleted on drop.
pub struct TempNetns {
    pub name: String,
}

impl TempNetns {
    pub fn create(name: &str) -> Result<TempNetns, BenchError> {
        let out = Command::new("ip")
            .args(["netns", "add", name])
            .output()
            .map_err(|e| BenchError::Netns {
                name: name.into(),
                detail: e.to_string(),
            })?;
        if !out.status.success() {
            return Err(BenchError::Netns {
                name: name.into(),
                detail: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        Ok(TempNetns { name: name.into() })
    }
}

impl Drop for TempNetns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Service `i` of the benchmark: `svc-i` in `bench`, ClusterIP 10.96.x.y, port 80 → 8080.
pub fn synthetic_service(i: usize) -> Service {
    let ip = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 96, 0, 1)) + i as u32);
    serde_json::from_value(json!({
        "metadata": {"namespace": "bench", "name": format!("svc-{i}")},
        "spec": {
            "clusterIP": ip.to_string(), "clusterIPs": [ip.to_string()],
            "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080}]
        }
    }))
    .expect("valid service")
}

/// The EndpointSlice of service `i` with `n` endpoints; `not_ready` of them not ready.
pub fn synthetic_slice(i: usize, n: usize, not_ready: usize) -> EndpointSlice {
    let endpoints: Vec<_> = (0..n)
        .map(|e| {
            let ip = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 42, 0, 0)) + (i * n + e) as u32);
            json!({
                "addresses": [ip.to_string()],
                "conditions": {"ready": e >= not_ready},
                "nodeName": format!("node-{}", e % 3)
            })
        })
        .collect();
    serde_json::from_value(json!({
        "metadata": {
            "namespace": "bench", "name": format!("svc-{i}-abcde"),
            "labels": {"kubernetes.io/service-name": format!("svc-{i}")}
        },
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": endpoints
    }))
    .expect("valid endpointslice")
}

/// Run the benchmark (as root: it makes a network namespace).
pub fn bench(services: usize, endpoints_per_service: usize) -> Result<BenchReport, BenchError> {
    let ns = TempNetns::create(&format!("rkube-proxy-bench-{}", std::process::id()))?;
    let config = RuleConfig {
        node_name: "node-0".into(),
        cluster_cidrs: vec!["10.42.0.0/16".into()],
        node_ips: vec!["192.168.0.10".parse().expect("address")],
        ..RuleConfig::default()
    };
    let mut cache = Cache::default();
    for i in 0..services {
        cache.upsert_service(&synthetic_service(i));
        cache.upsert_slice(&synthetic_slice(i, endpoints_per_service, 0));
    }
    cache.take_dirty();
    let mut proxier = Proxier::new("rkube-bench", config.clone(), Nft::in_netns(&ns.name));

    let started = Instant::now();
    let desired = cache.service_keys().into_iter().map(|k| {
        let d = cache.desired(&k, &config);
        (k, d)
    });
    let stats = proxier.full_sync(desired.collect())?;
    let full_sync = started.elapsed();

    let started = Instant::now();
    cache.upsert_slice(&synthetic_slice(services / 2, endpoints_per_service, 1));
    let changes = cache
        .take_dirty()
        .into_iter()
        .map(|k| {
            let d = cache.desired(&k, &config);
            (k, d)
        })
        .collect();
    proxier.partial_sync(changes)?;
    let one_change = started.elapsed();
    let (chains, rules) = proxier.counts();
    drop(proxier);
    drop(ns);
    let iptables_restore_full_sync = iptables_restore_reference(services, endpoints_per_service)
        .inspect_err(|e| tracing::warn!(error = %e, "iptables-restore reference"))
        .ok();
    Ok(BenchReport {
        services,
        endpoints_per_service,
        chains,
        rules,
        script_bytes: stats.script_bytes,
        full_sync,
        one_change,
        iptables_restore_full_sync,
    })
}

/// The benchmark's Services as kube-proxy's iptables mode writes them: KUBE-SERVICES jumps to
/// a KUBE-SVC chain per Service, which masquerades traffic from outside the pods and picks a
/// KUBE-SEP chain per endpoint with `statistic --mode random`; each KUBE-SEP marks hairpin
/// traffic and DNATs.
pub fn iptables_restore_input(services: usize, endpoints_per_service: usize) -> String {
    use std::fmt::Write as _;
    let n = endpoints_per_service;
    let mut head = String::from(
        "*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n\
         :POSTROUTING ACCEPT [0:0]\n:KUBE-SERVICES - [0:0]\n:KUBE-MARK-MASQ - [0:0]\n\
         :KUBE-POSTROUTING - [0:0]\n",
    );
    let mut body = String::from(
        "-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n\
         -A OUTPUT -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n\
         -A POSTROUTING -m comment --comment \"kubernetes postrouting rules\" -j KUBE-POSTROUTING\n\
         -A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000\n\
         -A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN\n\
         -A KUBE-POSTROUTING -j MARK --set-xmark 0x4000/0x0\n\
         -A KUBE-POSTROUTING -j MASQUERADE --random-fully\n",
    );
    for i in 0..services {
        let ip = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 96, 0, 1)) + i as u32);
        let svc = format!("KUBE-SVC-{i:016X}");
        let _ = writeln!(head, ":{svc} - [0:0]");
        let _ = writeln!(
            body,
            "-A KUBE-SERVICES -d {ip}/32 -p tcp -m comment --comment \"bench/svc-{i}:http cluster IP\" -m tcp --dport 80 -j {svc}"
        );
        let _ = writeln!(
            body,
            "-A {svc} ! -s 10.42.0.0/16 -d {ip}/32 -p tcp -m tcp --dport 80 -j KUBE-MARK-MASQ"
        );
        for e in 0..n {
            let ep = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 42, 0, 0)) + (i * n + e) as u32);
            let sep = format!("KUBE-SEP-{:016X}", i * n + e);
            let _ = writeln!(head, ":{sep} - [0:0]");
            if e + 1 < n {
                let _ = writeln!(
                    body,
                    "-A {svc} -m statistic --mode random --probability {:.11} -j {sep}",
                    1.0 / (n - e) as f64
                );
            } else {
                let _ = writeln!(body, "-A {svc} -j {sep}");
            }
            let _ = writeln!(body, "-A {sep} -s {ep}/32 -j KUBE-MARK-MASQ");
            let _ = writeln!(
                body,
                "-A {sep} -p tcp -m tcp -j DNAT --to-destination {ep}:8080"
            );
        }
    }
    head.push_str(&body);
    head.push_str("COMMIT\n");
    head
}

/// Time `iptables-restore` of [`iptables_restore_input`] in a network namespace of its own.
pub fn iptables_restore_reference(
    services: usize,
    endpoints_per_service: usize,
) -> Result<Duration, BenchError> {
    use std::io::Write as _;
    let ns = TempNetns::create(&format!("rkube-ipt-bench-{}", std::process::id()))?;
    let input = iptables_restore_input(services, endpoints_per_service);
    let failed = |detail: String| BenchError::IptablesRestore { detail };
    let started = Instant::now();
    let mut child = Command::new("ip")
        .args(["netns", "exec", &ns.name, "iptables-restore"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| failed(e.to_string()))?;
    let mut stdin = child.stdin.take().expect("stdin is piped");
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(input.as_bytes());
    });
    let out = child
        .wait_with_output()
        .map_err(|e| failed(e.to_string()))?;
    let _ = writer.join();
    let took = started.elapsed();
    if !out.status.success() {
        return Err(failed(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ));
    }
    Ok(took)
}
