//! What the proxy needs of Services and EndpointSlices, extracted once per object: service
//! ports with their destinations and policies, and endpoints with their conditions.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

/// The label that ties an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// Default `sessionAffinityConfig.clientIP.timeoutSeconds` (three hours).
pub const DEFAULT_AFFINITY_TIMEOUT: u32 = 10800;

/// A Service by namespace and name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceKey {
    pub namespace: String,
    pub name: String,
}

impl ServiceKey {
    pub fn new(namespace: &str, name: &str) -> ServiceKey {
        ServiceKey {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for ServiceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    /// From the API's `TCP`/`UDP`/`SCTP` (absent means TCP).
    pub fn parse(s: Option<&str>) -> Option<Protocol> {
        match s.unwrap_or("TCP") {
            "TCP" => Some(Protocol::Tcp),
            "UDP" => Some(Protocol::Udp),
            "SCTP" => Some(Protocol::Sctp),
            _ => None,
        }
    }

    /// The nftables spelling.
    pub fn nft(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        }
    }
}

/// One port of a Service: upstream's ServicePortName.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServicePortName {
    pub service: ServiceKey,
    /// The port's name; empty for a Service's only, unnamed port.
    pub port: String,
    pub protocol: Protocol,
}

impl fmt::Display for ServicePortName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.service, self.protocol.nft(), self.port)
    }
}

/// A service port with everything the rules need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePort {
    pub name: ServicePortName,
    pub cluster_ips: Vec<IpAddr>,
    pub port: u16,
    pub node_port: Option<u16>,
    pub external_ips: Vec<IpAddr>,
    pub load_balancer_ips: Vec<IpAddr>,
    /// `sessionAffinity: ClientIP` with its timeout in seconds.
    pub affinity_timeout: Option<u32>,
    /// `internalTrafficPolicy: Local`.
    pub internal_local: bool,
    /// `externalTrafficPolicy: Local` (only meaningful with external destinations).
    pub external_local: bool,
}

impl ServicePort {
    /// NodePort, externalIPs or LoadBalancer ingress: traffic from outside the cluster.
    pub fn externally_accessible(&self) -> bool {
        self.node_port.is_some()
            || !self.external_ips.is_empty()
            || !self.load_balancer_ips.is_empty()
    }
}

fn parse_ips<'a>(ips: impl IntoIterator<Item = &'a String>) -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = ips.into_iter().filter_map(|s| s.parse().ok()).collect();
    out.sort();
    out.dedup();
    out
}

/// The ports a Service asks the proxy for: none for headless and ExternalName Services.
pub fn service_ports(svc: &Service) -> Vec<ServicePort> {
    let (Some(namespace), Some(name)) = (&svc.metadata.namespace, &svc.metadata.name) else {
        return Vec::new();
    };
    let Some(spec) = &svc.spec else {
        return Vec::new();
    };
    let svc_type = spec.type_.as_deref().unwrap_or("ClusterIP");
    if svc_type == "ExternalName" {
        return Vec::new();
    }
    let cluster_ips = match &spec.cluster_ips {
        Some(ips) if !ips.is_empty() => parse_ips(ips),
        _ => parse_ips(spec.cluster_ip.iter()),
    };
    if cluster_ips.is_empty() {
        // headless ("None") or not yet allocated
        return Vec::new();
    }
    let external_ips = parse_ips(spec.external_ips.iter().flatten());
    let load_balancer_ips = if svc_type == "LoadBalancer" {
        let ingress = svc
            .status
            .as_ref()
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|lb| lb.ingress.as_ref());
        // ipMode Proxy: the load balancer delivers to the node, not to the VIP.
        parse_ips(
            ingress
                .into_iter()
                .flatten()
                .filter(|i| i.ip_mode.as_deref() != Some("Proxy"))
                .filter_map(|i| i.ip.as_ref()),
        )
    } else {
        Vec::new()
    };
    let affinity_timeout = (spec.session_affinity.as_deref() == Some("ClientIP")).then(|| {
        spec.session_affinity_config
            .as_ref()
            .and_then(|c| c.client_ip.as_ref())
            .and_then(|c| c.timeout_seconds)
            .and_then(|t| u32::try_from(t).ok())
            .filter(|t| *t > 0)
            .unwrap_or(DEFAULT_AFFINITY_TIMEOUT)
    });
    let internal_local = spec.internal_traffic_policy.as_deref() == Some("Local");
    let external_local = spec.external_traffic_policy.as_deref() == Some("Local");
    let node_port_type = svc_type == "NodePort" || svc_type == "LoadBalancer";
    let key = ServiceKey::new(namespace, name);
    let mut out = Vec::new();
    for p in spec.ports.iter().flatten() {
        let Some(protocol) = Protocol::parse(p.protocol.as_deref()) else {
            continue;
        };
        let Ok(port) = u16::try_from(p.port) else {
            continue;
        };
        let node_port = p
            .node_port
            .filter(|_| node_port_type)
            .and_then(|n| u16::try_from(n).ok())
            .filter(|n| *n > 0);
        let sp = ServicePort {
            name: ServicePortName {
                service: key.clone(),
                port: p.name.clone().unwrap_or_default(),
                protocol,
            },
            cluster_ips: cluster_ips.clone(),
            port,
            node_port,
            external_ips: external_ips.clone(),
            load_balancer_ips: load_balancer_ips.clone(),
            affinity_timeout,
            internal_local,
            external_local: false,
        };
        let external_local = external_local && sp.externally_accessible();
        out.push(ServicePort {
            external_local,
            ..sp
        });
    }
    out
}

/// One backend of a service port.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Endpoint {
    pub ip: IpAddr,
    pub port: u16,
    pub ready: bool,
    pub serving: bool,
    pub terminating: bool,
    pub node_name: Option<String>,
}

/// An EndpointSlice as the proxy keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SliceInfo {
    pub ports: Vec<(String, Protocol, u16)>,
    pub endpoints: Vec<Endpoint>,
}

/// The Service an EndpointSlice belongs to and its slice name.
pub fn slice_owner(slice: &EndpointSlice) -> Option<(ServiceKey, String)> {
    let namespace = slice.metadata.namespace.as_deref()?;
    let service = slice.metadata.labels.as_ref()?.get(SERVICE_NAME_LABEL)?;
    Some((
        ServiceKey::new(namespace, service),
        slice.metadata.name.clone()?,
    ))
}

/// Ports and endpoints of a slice; FQDN slices carry nothing the proxy can use.
pub fn slice_info(slice: &EndpointSlice) -> SliceInfo {
    if slice.address_type != "IPv4" && slice.address_type != "IPv6" {
        return SliceInfo {
            ports: Vec::new(),
            endpoints: Vec::new(),
        };
    }
    let ports = slice
        .ports
        .iter()
        .flatten()
        .filter_map(|p| {
            let protocol = Protocol::parse(p.protocol.as_deref())?;
            let port = u16::try_from(p.port?).ok()?;
            Some((p.name.clone().unwrap_or_default(), protocol, port))
        })
        .collect();
    let endpoints = slice
        .endpoints
        .iter()
        .filter_map(|e| {
            // Only the first address matters (as upstream): the others are the same pod.
            let ip: IpAddr = e.addresses.first()?.parse().ok()?;
            let c = e.conditions.as_ref();
            // An unknown readiness counts as ready; serving defaults to ready.
            let ready = c.and_then(|c| c.ready).unwrap_or(true);
            let serving = c.and_then(|c| c.serving).unwrap_or(ready);
            let terminating = c.and_then(|c| c.terminating).unwrap_or(false);
            Some(Endpoint {
                ip,
                port: 0,
                ready,
                serving,
                terminating,
                node_name: e.node_name.clone(),
            })
        })
        .collect();
    SliceInfo { ports, endpoints }
}

/// The endpoints of one service port over all its Service's slices, by address, sorted.
pub fn port_endpoints<'a>(
    slices: impl IntoIterator<Item = &'a SliceInfo>,
    port: &ServicePortName,
) -> Vec<Endpoint> {
    let mut by_addr: BTreeMap<(IpAddr, u16), Endpoint> = BTreeMap::new();
    for slice in slices {
        for (name, protocol, number) in &slice.ports {
            if *name != port.port || *protocol != port.protocol {
                continue;
            }
            for e in &slice.endpoints {
                let ep = Endpoint {
                    port: *number,
                    ..e.clone()
                };
                // The same endpoint in two slices (during a move): the ready copy wins.
                match by_addr.get(&(ep.ip, ep.port)) {
                    Some(old) if old.ready || !ep.ready => {}
                    _ => {
                        by_addr.insert((ep.ip, ep.port), ep);
                    }
                }
            }
        }
    }
    by_addr.into_values().collect()
}
