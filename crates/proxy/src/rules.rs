//! Rule generation: pure functions from service ports and endpoints to nftables chains,
//! sets and map elements, in the layout of kube-proxy's nftables mode.
//!
//! Dispatch is by verdict maps (`service-ips`, `service-nodeports`) so that a packet costs one
//! hash lookup whatever the number of Services. Each service port has a `service-…` chain
//! (all usable endpoints), a `local-…` chain when a traffic policy is Local, and an
//! `external-…` chain when it takes traffic from outside (NodePort, externalIPs,
//! LoadBalancer). Unlike upstream, an endpoint gets its own `endpoint-…` chain only when
//! session affinity needs one; otherwise the service chain DNATs with one rule, through a
//! shared map of endpoint slots ([`Balancer`]), hairpin traffic is found by one `hairpin-ips`
//! set lookup in postrouting, and traffic to a ClusterIP from outside the pods is marked for
//! masquerade by one rule of `services` (`masquerade-cluster-ips`): a Service costs one or
//! two rules rather than one per endpoint, which is what the kernel spends its time on.

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
    /// Endpoint addresses that new connections may be sent to.
    pub targets: BTreeSet<IpAddr>,
    /// Chain name → the random choice its last rule makes (placed by the proxier).
    pub balancers: BTreeMap<String, Balancer>,
}

/// Number of `endpoint-slots-N` maps per family. A rule that reads a map costs every later
/// element of it a walk over the map's users (and a new user a walk over its elements): one
/// shared map would make a full load quadratic. The kernel pays users × elements per map, and
/// a walk over the table's list of sets per rule that names one: measured at 10,000 Services ×
/// 10 endpoints, 256 maps commit about 12% faster than 128, and 512 no faster than 256.
pub const SLOT_MAPS: usize = 256;

/// A chain's final rule: one of `targets` at random, by `numgen random mod n offset b` into
/// the `endpoint-slots-N` map whose elements `b + i : target i` the proxier allocates. One
/// rule and n map elements, rather than n rules, whatever the number of endpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Balancer {
    pub family: Family,
    pub protocol: &'static str,
    /// `addr . port`, as map data.
    pub targets: Vec<String>,
    /// (map index, first slot) once placed.
    pub placed: Option<(usize, u32)>,
}

impl Balancer {
    /// The same choice, wherever placed.
    pub fn same_choice(&self, other: &Balancer) -> bool {
        self.family == other.family
            && self.protocol == other.protocol
            && self.targets == other.targets
    }
}

impl ServiceRules {
    pub fn rule_count(&self) -> usize {
        let placed = self.balancers.values().filter(|b| b.placed.is_some());
        self.chains.values().map(Vec::len).sum::<usize>() + self.balancers.len() - placed.count()
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
    eps: &[&'a Endpoint],
    node_name: &str,
) -> (Vec<&'a Endpoint>, Vec<&'a Endpoint>) {
    let pick = |local_only: bool| {
        let is_local = |e: &&Endpoint| !local_only || e.node_name.as_deref() == Some(node_name);
        let ready: Vec<&Endpoint> = eps
            .iter()
            .copied()
            .filter(|e| e.ready)
            .filter(is_local)
            .collect();
        if !ready.is_empty() {
            return ready;
        }
        eps.iter()
            .copied()
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
    let eps: Vec<&Endpoint> = endpoints
        .iter()
        .filter(|e| Family::of(&e.ip) == f)
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
    // (names cost a few allocations: only those used are made)
    let local_chain = if uses_local {
        port_chain("local", f, &sp.name)
    } else {
        String::new()
    };
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

    // The cluster chain balances; what reaches a ClusterIP from outside the pods is marked for
    // masquerade before, by one rule of the `services` chain and this element.
    let mut rules = Vec::new();
    if !sp.internal_local {
        for ip in &cluster_ips {
            out.elements.insert(Element::new(
                f.set("masquerade-cluster-ips"),
                ip_key(ip),
                None,
            ));
        }
    }
    balance(out, &mut rules, sp, &cluster, f, &service_chain);
    out.chains.insert(service_chain.clone(), rules);
    if uses_local {
        let mut rules = Vec::new();
        balance(out, &mut rules, sp, &local, f, &local_chain);
        out.chains.insert(local_chain.clone(), rules);
    }
    // A pod reaching itself through its Service is DNATed on its own node: only endpoints
    // here (or of no known node) can be hairpin targets. Elsewhere the source is another pod.
    let here = |e: &&&Endpoint| e.node_name.as_deref().is_none_or(|n| n == cfg.node_name);
    for ep in cluster.iter().chain(&local).filter(here) {
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
    let external_chain = port_chain("external", f, &sp.name);
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
    chain_name: &str,
) {
    let ipf = f.nft();
    let proto = sp.name.protocol.nft();
    let n = eps.len();
    out.targets.extend(eps.iter().map(|e| e.ip));
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
        if n > 0 {
            out.balancers.insert(
                chain_name.to_string(),
                Balancer {
                    family: f,
                    protocol: proto,
                    targets: eps
                        .iter()
                        .map(|ep| format!("{} . {}", ep.ip, ep.port))
                        .collect(),
                    placed: None,
                },
            );
        }
        return;
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
        let _ = writeln!(
            s,
            "\tset {} {{ type {a} . inet_proto . inet_service ; }}",
            f.set("masquerade-cluster-ips")
        );
        for i in 0..SLOT_MAPS {
            // (`th dport` reads as any protocol's port; the kernel knows no types)
            let _ = writeln!(
                s,
                "\tmap {} {{ typeof numgen random mod 1 : {} daddr . th dport ; }}",
                f.set(&format!("endpoint-slots-{i}")),
                f.nft()
            );
        }
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
        let to_cluster_ip = format!(
            "{ipf} daddr . meta l4proto . th dport @{}",
            f.set("masquerade-cluster-ips")
        );
        if cfg.masquerade_all {
            services.push(format!("{to_cluster_ip} jump mark-for-masquerade"));
        } else {
            for cidr in cfg
                .cluster_cidrs
                .iter()
                .filter(|c| cidr_family(c) == Some(f))
            {
                services.push(format!(
                    "{to_cluster_ip} {ipf} saddr != {cidr} jump mark-for-masquerade"
                ));
            }
        }
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
