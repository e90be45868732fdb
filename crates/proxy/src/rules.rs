//! Rule generation: pure functions from service ports and endpoints to nftables chains,
//! sets and map elements, in the layout of kube-proxy's nftables mode.
//!
//! Dispatch is by verdict maps (`service-ips`, `service-nodeports`) so that a packet costs one
//! hash lookup whatever the number of Services. Each service port has a `service-…` chain
//! (all usable endpoints), a `local-…` chain when a traffic policy is Local, and an
//! `external-…` chain when it takes traffic from outside (NodePort, externalIPs,
//! LoadBalancer). Unlike upstream, an endpoint gets its own `endpoint-…` chain only when
//! session affinity needs one; otherwise the service chain DNATs directly, and hairpin
//! traffic is found by one `hairpin-ips` set lookup in postrouting: half the rules to load.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::IpAddr;

use crate::model::{Endpoint, ServicePort, ServicePortName};

/// The packet mark bit that asks postrouting to masquerade (as kube-proxy's 0x4000).
pub const MASQUERADE_MARK: u32 = 0x4000;

/// Settings that shape the rules.
#[derive(Debug, Clone, Default)]
pub struct RuleConfig {
    /// This node: endpoints here are "local".
    pub node_name: String,
    /// The pod network(s); traffic from elsewhere to a ClusterIP is masqueraded.
    pub cluster_cidrs: Vec<String>,
    /// Masquerade all traffic to ClusterIPs.
    pub masquerade_all: bool,
    /// Addresses NodePorts answer on; empty: every local address (except loopback).
    pub node_ips: Vec<IpAddr>,
    /// NodePorts also on 127.0.0.1 (needs `route_localnet`), as kube-proxy's iptables mode.
    pub localhost_node_ports: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub fn of(ip: &IpAddr) -> Family {
        if ip.is_ipv4() { Family::V4 } else { Family::V6 }
    }

    /// The nftables protocol keyword (`ip daddr`, `dnat ip to`).
    pub fn nft(self) -> &'static str {
        match self {
            Family::V4 => "ip",
            Family::V6 => "ip6",
        }
    }

    fn addr_type(self) -> &'static str {
        match self {
            Family::V4 => "ipv4_addr",
            Family::V6 => "ipv6_addr",
        }
    }

    /// A per-family set's name: IPv6 ones carry a `-v6` suffix.
    pub fn set(self, base: &str) -> String {
        match self {
            Family::V4 => base.to_string(),
            Family::V6 => format!("{base}-v6"),
        }
    }

    pub const ALL: [Family; 2] = [Family::V4, Family::V6];
}

fn cidr_family(cidr: &str) -> Option<Family> {
    let ip: IpAddr = cidr.split('/').next()?.trim().parse().ok()?;
    Some(Family::of(&ip))
}

/// One element of a set or map.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Element {
    pub set: String,
    pub key: String,
    pub value: Option<String>,
}

impl Element {
    fn new(set: String, key: String, value: Option<String>) -> Element {
        Element { set, key, value }
    }

    /// `key` or `key : value`, as written in `add element`.
    pub fn text(&self) -> String {
        match &self.value {
            Some(v) => format!("{} : {}", self.key, v),
            None => self.key.clone(),
        }
    }
}

/// What one service port owns in the table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceRules {
    /// Chain name → rules, in order.
    pub chains: BTreeMap<String, Vec<String>>,
    /// Set name → declaration (session affinity sets).
    pub sets: BTreeMap<String, String>,
    pub elements: BTreeSet<Element>,
}

impl ServiceRules {
    pub fn rule_count(&self) -> usize {
        self.chains.values().map(Vec::len).sum()
    }
}

/// A stable short hash, so that chain names stay the same across restarts and versions.
fn hash8(s: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{:08X}", (h >> 32) as u32 ^ h as u32)
}

fn family_tag(f: Family) -> &'static str {
    match f {
        Family::V4 => "4",
        Family::V6 => "6",
    }
}

/// `service-HASH-ns/name/proto/port` and its siblings.
pub fn port_chain(kind: &str, family: Family, port: &ServicePortName) -> String {
    let id = format!("{}/{port}", family_tag(family));
    format!("{kind}-{}-{port}", hash8(&format!("{kind}/{id}")))
}

fn endpoint_suffix(port: &ServicePortName, ep: &Endpoint) -> String {
    // ':' may not appear in an nftables name
    format!("{port}__{}/{}", ep.ip, ep.port).replace(':', ".")
}

fn endpoint_chain(port: &ServicePortName, ep: &Endpoint) -> String {
    let suffix = endpoint_suffix(port, ep);
    format!("endpoint-{}-{suffix}", hash8(&format!("endpoint/{suffix}")))
}

fn affinity_set(port: &ServicePortName, ep: &Endpoint) -> String {
    let suffix = endpoint_suffix(port, ep);
    format!("affinity-{}-{suffix}", hash8(&format!("affinity/{suffix}")))
}

fn addr_port(ep: &Endpoint) -> String {
    match ep.ip {
        IpAddr::V4(ip) => format!("{ip}:{}", ep.port),
        IpAddr::V6(ip) => format!("[{ip}]:{}", ep.port),
    }
}

/// Upstream's CategorizeEndpoints: the endpoints for cluster-wide traffic and for traffic
/// kept on this node. Ready ones; only when none is ready, the serving-but-terminating ones.
pub fn categorize<'a>(
    eps: &'a [Endpoint],
    node_name: &str,
) -> (Vec<&'a Endpoint>, Vec<&'a Endpoint>) {
    let pick = |local_only: bool| {
        let is_local = |e: &&Endpoint| !local_only || e.node_name.as_deref() == Some(node_name);
        let ready: Vec<&Endpoint> = eps.iter().filter(|e| e.ready).filter(is_local).collect();
        if !ready.is_empty() {
            return ready;
        }
        eps.iter()
            .filter(|e| e.serving && e.terminating)
            .filter(is_local)
            .collect()
    };
    (pick(false), pick(true))
}

/// The rules of one service port.
pub fn service_port_rules(
    sp: &ServicePort,
    endpoints: &[Endpoint],
    cfg: &RuleConfig,
) -> ServiceRules {
    let mut out = ServiceRules::default();
    let families: BTreeSet<Family> = sp.cluster_ips.iter().map(Family::of).collect();
    for family in families {
        family_rules(&mut out, sp, endpoints, cfg, family);
    }
    out
}

fn family_rules(
    out: &mut ServiceRules,
    sp: &ServicePort,
    endpoints: &[Endpoint],
    cfg: &RuleConfig,
    f: Family,
) {
    let ipf = f.nft();
    let proto = sp.name.protocol.nft();
    let of_family = |ips: &[IpAddr]| -> Vec<IpAddr> {
        ips.iter()
            .copied()
            .filter(|ip| Family::of(ip) == f)
            .collect()
    };
    let cluster_ips = of_family(&sp.cluster_ips);
    let external_ips: Vec<IpAddr> = of_family(&sp.external_ips)
        .into_iter()
        .chain(of_family(&sp.load_balancer_ips))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let eps: Vec<Endpoint> = endpoints
        .iter()
        .filter(|e| Family::of(&e.ip) == f)
        .cloned()
        .collect();
    let (cluster, local) = categorize(&eps, &cfg.node_name);
    let uses_local = sp.internal_local || sp.external_local;
    let has_endpoints = !cluster.is_empty();
    let has_internal = if sp.internal_local {
        !local.is_empty()
    } else {
        has_endpoints
    };
    let has_external = if sp.external_local {
        !local.is_empty()
    } else {
        has_endpoints
    };
    let external = sp.externally_accessible();

    let service_chain = port_chain("service", f, &sp.name);
    let local_chain = port_chain("local", f, &sp.name);
    let external_chain = port_chain("external", f, &sp.name);
    let internal_chain = if sp.internal_local {
        &local_chain
    } else {
        &service_chain
    };

    let service_ips = f.set("service-ips");
    let no_endpoint_services = f.set("no-endpoint-services");
    let service_nodeports = f.set("service-nodeports");
    let no_endpoint_nodeports = f.set("no-endpoint-nodeports");
    let ip_key = |ip: &IpAddr| format!("{ip} . {proto} . {}", sp.port);
    let node_port_key = |np: u16| format!("{proto} . {np}");

    for ip in &cluster_ips {
        out.elements
            .insert(Element::new(f.set("cluster-ips"), ip.to_string(), None));
    }

    if !has_endpoints {
        // Nothing serves: refuse rather than let connections hang.
        let reject = Some("goto reject-chain".to_string());
        for ip in cluster_ips.iter().chain(&external_ips) {
            out.elements.insert(Element::new(
                no_endpoint_services.clone(),
                ip_key(ip),
                reject.clone(),
            ));
        }
        if let Some(np) = sp.node_port {
            out.elements.insert(Element::new(
                no_endpoint_nodeports,
                node_port_key(np),
                reject,
            ));
        }
        return;
    }

    // The cluster chain: masquerade what does not come from pods, then balance.
    let mut rules = Vec::new();
    for ip in &cluster_ips {
        let matches = format!("{ipf} daddr {ip} {proto} dport {}", sp.port);
        if cfg.masquerade_all {
            rules.push(format!("{matches} jump mark-for-masquerade"));
        } else {
            for cidr in cfg
                .cluster_cidrs
                .iter()
                .filter(|c| cidr_family(c) == Some(f))
            {
                rules.push(format!(
                    "{matches} {ipf} saddr != {cidr} jump mark-for-masquerade"
                ));
            }
        }
    }
    balance(out, &mut rules, sp, &cluster, f);
    out.chains.insert(service_chain.clone(), rules);
    if uses_local {
        let mut rules = Vec::new();
        balance(out, &mut rules, sp, &local, f);
        out.chains.insert(local_chain.clone(), rules);
    }
    for ep in cluster.iter().chain(&local) {
        out.elements.insert(Element::new(
            f.set("hairpin-ips"),
            format!("{} . {}", ep.ip, ep.ip),
            None,
        ));
    }

    for ip in &cluster_ips {
        if has_internal {
            out.elements.insert(Element::new(
                service_ips.clone(),
                ip_key(ip),
                Some(format!("goto {internal_chain}")),
            ));
        } else {
            // internalTrafficPolicy Local without a local endpoint
            out.elements.insert(Element::new(
                no_endpoint_services.clone(),
                ip_key(ip),
                Some("drop".into()),
            ));
        }
    }

    if !external {
        return;
    }
    let mut rules = Vec::new();
    if sp.external_local {
        // Pods and the node itself may still use any endpoint; only traffic from outside
        // is kept on this node, with its source address.
        for cidr in cfg
            .cluster_cidrs
            .iter()
            .filter(|c| cidr_family(c) == Some(f))
        {
            rules.push(format!("{ipf} saddr {cidr} goto {service_chain}"));
        }
        rules.push("fib saddr type local jump mark-for-masquerade".into());
        rules.push(format!("fib saddr type local goto {service_chain}"));
        rules.push(format!("goto {local_chain}"));
    } else {
        rules.push("jump mark-for-masquerade".into());
        rules.push(format!("goto {service_chain}"));
    }
    out.chains.insert(external_chain.clone(), rules);
    let to_external = Some(format!("goto {external_chain}"));
    let drop = Some("drop".to_string());
    for ip in &external_ips {
        if has_external {
            out.elements.insert(Element::new(
                service_ips.clone(),
                ip_key(ip),
                to_external.clone(),
            ));
        } else {
            out.elements.insert(Element::new(
                no_endpoint_services.clone(),
                ip_key(ip),
                drop.clone(),
            ));
        }
    }
    if let Some(np) = sp.node_port {
        if has_external {
            out.elements.insert(Element::new(
                service_nodeports,
                node_port_key(np),
                to_external,
            ));
        } else {
            out.elements
                .insert(Element::new(no_endpoint_nodeports, node_port_key(np), drop));
        }
    }
}

/// Random choice among `eps`: rule i takes 1/(n-i) of what reaches it, so each endpoint
/// gets 1/n. (A `numgen … vmap { … }` would make an anonymous set per Service, which the
/// kernel binds in time quadratic in the transaction's length.)
fn balance(
    out: &mut ServiceRules,
    rules: &mut Vec<String>,
    sp: &ServicePort,
    eps: &[&Endpoint],
    f: Family,
) {
    let ipf = f.nft();
    let proto = sp.name.protocol.nft();
    let n = eps.len();
    let mut targets = Vec::with_capacity(n);
    if let Some(timeout) = sp.affinity_timeout {
        for ep in eps {
            let chain = endpoint_chain(&sp.name, ep);
            let set = affinity_set(&sp.name, ep);
            out.sets.insert(
                set.clone(),
                format!(
                    "type {} ; flags dynamic,timeout ; timeout {timeout}s ;",
                    f.addr_type()
                ),
            );
            // A client seen recently goes back to the same endpoint.
            rules.push(format!("{ipf} saddr @{set} goto {chain}"));
            out.chains.insert(
                chain.clone(),
                vec![
                    format!("update @{set} {{ {ipf} saddr }}"),
                    format!("meta l4proto {proto} dnat {ipf} to {}", addr_port(ep)),
                ],
            );
            targets.push(format!("goto {chain}"));
        }
    } else {
        for ep in eps {
            targets.push(format!(
                "meta l4proto {proto} dnat {ipf} to {}",
                addr_port(ep)
            ));
        }
    }
    for (i, target) in targets.into_iter().enumerate() {
        if i + 1 < n {
            rules.push(format!("numgen random mod {} == 0 {target}", n - i));
        } else {
            rules.push(target);
        }
    }
}

/// The table's fixed part, declared whole: sets, maps, base chains and helpers.
pub fn base_declaration(table: &str, cfg: &RuleConfig) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "table inet {table} {{");
    let _ = writeln!(s, "\tcomment \"rkube service proxy\"");
    for f in Family::ALL {
        let a = f.addr_type();
        let _ = writeln!(s, "\tset {} {{ type {a} ; }}", f.set("cluster-ips"));
        let _ = writeln!(s, "\tset {} {{ type {a} ; }}", f.set("nodeport-ips"));
        let _ = writeln!(s, "\tset {} {{ type {a} . {a} ; }}", f.set("hairpin-ips"));
        let _ = writeln!(
            s,
            "\tmap {} {{ type {a} . inet_proto . inet_service : verdict ; }}",
            f.set("service-ips")
        );
        let _ = writeln!(
            s,
            "\tmap {} {{ type inet_proto . inet_service : verdict ; }}",
            f.set("service-nodeports")
        );
        let _ = writeln!(
            s,
            "\tmap {} {{ type {a} . inet_proto . inet_service : verdict ; }}",
            f.set("no-endpoint-services")
        );
        let _ = writeln!(
            s,
            "\tmap {} {{ type inet_proto . inet_service : verdict ; }}",
            f.set("no-endpoint-nodeports")
        );
    }
    let chain = |s: &mut String, name: &str, hook: Option<&str>, rules: &[String]| {
        let _ = writeln!(s, "\tchain {name} {{");
        if let Some(hook) = hook {
            let _ = writeln!(s, "\t\t{hook} ;");
        }
        for r in rules {
            let _ = writeln!(s, "\t\t{r}");
        }
        let _ = writeln!(s, "\t}}");
    };
    // Filter chains run just before DNAT (-100) to catch Services without endpoints, and just
    // after it in output for ClusterIPs on ports that are not theirs.
    let mut input = Vec::new();
    if cfg.localhost_node_ports {
        // route_localnet lets packets to 127.0.0.0/8 in from outside: accept only those we
        // DNAT (as kube-proxy's iptables mode, CVE-2020-8558).
        input.push(
            "ip daddr 127.0.0.0/8 ip saddr != 127.0.0.0/8 ct state != { established, related } ct status & dnat == 0 drop"
                .to_string(),
        );
    }
    input.push("ct state new jump nodeport-endpoints-check".into());
    input.push("ct state new jump service-endpoints-check".into());
    chain(
        &mut s,
        "filter-input",
        Some("type filter hook input priority -110"),
        &input,
    );
    chain(
        &mut s,
        "filter-forward",
        Some("type filter hook forward priority -110"),
        &[
            "ct state new jump service-endpoints-check".into(),
            "ct state new jump cluster-ips-check".into(),
        ],
    );
    chain(
        &mut s,
        "filter-output",
        Some("type filter hook output priority -110"),
        &["ct state new jump service-endpoints-check".into()],
    );
    chain(
        &mut s,
        "filter-output-post-dnat",
        Some("type filter hook output priority -90"),
        &["ct state new jump cluster-ips-check".into()],
    );
    chain(
        &mut s,
        "nat-prerouting",
        Some("type nat hook prerouting priority -100"),
        &["jump services".into()],
    );
    chain(
        &mut s,
        "nat-output",
        Some("type nat hook output priority -100"),
        &["jump services".into()],
    );
    chain(
        &mut s,
        "nat-postrouting",
        Some("type nat hook postrouting priority 100"),
        &["jump masquerading".into()],
    );

    let mut services = Vec::new();
    let mut endpoints_check = Vec::new();
    let mut nodeport_check = Vec::new();
    let mut cluster_ips_check = Vec::new();
    let mut masquerading = Vec::new();
    for f in Family::ALL {
        let ipf = f.nft();
        let node_ips = if cfg.node_ips.is_empty() {
            let loopback = match f {
                Family::V4 => "127.0.0.0/8",
                Family::V6 => "::1",
            };
            if cfg.localhost_node_ports && f == Family::V4 {
                "fib daddr type local".to_string()
            } else {
                format!("fib daddr type local {ipf} daddr != {loopback}")
            }
        } else {
            format!("{ipf} daddr @{}", f.set("nodeport-ips"))
        };
        services.push(format!(
            "{ipf} daddr . meta l4proto . th dport vmap @{}",
            f.set("service-ips")
        ));
        services.push(format!(
            "{node_ips} meta l4proto . th dport vmap @{}",
            f.set("service-nodeports")
        ));
        endpoints_check.push(format!(
            "{ipf} daddr . meta l4proto . th dport vmap @{}",
            f.set("no-endpoint-services")
        ));
        nodeport_check.push(format!(
            "{node_ips} meta l4proto . th dport vmap @{}",
            f.set("no-endpoint-nodeports")
        ));
        cluster_ips_check.push(format!("{ipf} daddr @{} reject", f.set("cluster-ips")));
        // A pod that reached itself through its Service: its reply must come back through us.
        masquerading.push(format!(
            "{ipf} saddr . {ipf} daddr @{} jump mark-for-masquerade",
            f.set("hairpin-ips")
        ));
    }
    masquerading.push(format!("meta mark & {MASQUERADE_MARK:#x} == 0 return"));
    masquerading.push(format!("meta mark set meta mark ^ {MASQUERADE_MARK:#x}"));
    masquerading.push("masquerade fully-random".into());
    chain(&mut s, "services", None, &services);
    chain(&mut s, "service-endpoints-check", None, &endpoints_check);
    chain(&mut s, "nodeport-endpoints-check", None, &nodeport_check);
    chain(&mut s, "cluster-ips-check", None, &cluster_ips_check);
    chain(
        &mut s,
        "mark-for-masquerade",
        None,
        &[format!("meta mark set meta mark | {MASQUERADE_MARK:#x}")],
    );
    chain(&mut s, "masquerading", None, &masquerading);
    chain(
        &mut s,
        "reject-chain",
        None,
        &[
            "meta l4proto tcp reject with tcp reset".into(),
            "reject".into(),
        ],
    );
    let _ = writeln!(s, "}}");
    // node addresses for NodePorts
    let mut node_ips: Vec<IpAddr> = cfg.node_ips.clone();
    if cfg.localhost_node_ports && !node_ips.is_empty() {
        node_ips.push(IpAddr::from([127, 0, 0, 1]));
    }
    for f in Family::ALL {
        let ips: Vec<String> = node_ips
            .iter()
            .filter(|ip| Family::of(ip) == f)
            .map(|ip| ip.to_string())
            .collect();
        if !ips.is_empty() {
            let _ = writeln!(
                s,
                "add element inet {table} {} {{ {} }}",
                f.set("nodeport-ips"),
                ips.join(", ")
            );
        }
    }
    s
}

/// Chains and rules of the fixed part (for the rule count metrics).
pub const BASE_CHAINS: usize = 13;
