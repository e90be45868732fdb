//! The records the server answers from: a snapshot compiled from Services and EndpointSlices,
//! indexed by lowercase `<service>.<namespace>` and by IP for PTR. A snapshot is immutable; the
//! watcher builds a new one on change and swaps it in behind an `Arc`, so a query never waits for
//! an update.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use hickory_proto::rr::Name;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

/// TTL of every answer from the cluster zone, as CoreDNS's kubernetes plugin.
pub const DEFAULT_TTL: u32 = 5;

/// The label an EndpointSlice carries to name its Service.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// What a Service name resolves to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServiceKind {
    /// A virtual IP per family (`spec.clusterIPs`).
    ClusterIp(Vec<IpAddr>),
    /// `clusterIP: None`: the name resolves to the ready endpoints.
    Headless,
    /// `type: ExternalName`: a CNAME to `spec.externalName`.
    ExternalName(Name),
}

/// A port of a Service or of an EndpointSlice. A Service or slice without ports gets one port
/// with number -1 (as CoreDNS does) so that its addresses still resolve while SRV skips it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortRecord {
    /// Lowercase port name, may be empty.
    pub name: String,
    /// Lowercase protocol (`tcp`, `udp`, `sctp`), empty for the placeholder port.
    pub protocol: String,
    pub port: i32,
}

impl PortRecord {
    fn none() -> PortRecord {
        PortRecord {
            name: String::new(),
            protocol: String::new(),
            port: -1,
        }
    }

    /// Whether this port answers `_<port>._<protocol>`; an empty filter matches anything.
    pub(crate) fn matches(&self, port: &str, protocol: &str) -> bool {
        (port.is_empty() || port.eq_ignore_ascii_case(&self.name))
            && (protocol.is_empty() || protocol.eq_ignore_ascii_case(&self.protocol))
    }
}

/// A ready endpoint address of a Service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointRecord {
    pub ip: IpAddr,
    /// `hostname` of the endpoint, or its IP with dashes: the first label of its name.
    pub label: String,
    /// `<label>.<service>.<namespace>.svc.<zone>.`
    pub fqdn: Name,
    /// Ports of the slice the address came from.
    pub ports: Arc<[PortRecord]>,
}

/// One Service, compiled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceRecord {
    pub name: String,
    pub namespace: String,
    pub kind: ServiceKind,
    /// `<service>.<namespace>.svc.<zone>.`
    pub fqdn: Name,
    pub ports: Vec<PortRecord>,
    pub endpoints: Vec<EndpointRecord>,
}

/// An immutable snapshot of the cluster zone.
#[derive(Debug, Clone)]
pub struct Records {
    /// Lowercase cluster domain without the trailing dot (`cluster.local`).
    pub(crate) zone: String,
    pub(crate) zone_name: Name,
    pub(crate) ttl: u32,
    pub(crate) serial: u32,
    /// Keyed by lowercase `<service>.<namespace>`.
    pub(crate) services: HashMap<String, ServiceRecord>,
    /// PTR targets: a ClusterIP names its Service only; an endpoint IP names itself under
    /// each Service it backs.
    pub(crate) reverse: HashMap<IpAddr, Vec<Name>>,
    /// Addresses of the DNS service itself (`kube-system/kube-dns`), for NS and `ns.dns.<zone>`.
    pub(crate) ns_ips: Vec<IpAddr>,
}

#[derive(Debug, thiserror::Error)]
pub enum RecordsError {
    #[error("invalid cluster domain {domain:?}: {source}")]
    Domain {
        domain: String,
        source: hickory_proto::ProtoError,
    },
}

fn unix_now() -> u32 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as u32)
        .unwrap_or(1)
}

fn parse_ip(s: &str) -> Option<IpAddr> {
    s.trim().parse().ok()
}

/// A name from trusted labels (already DNS labels in the API); `None` if they are not.
fn name_of(labels: &[&str], zone: &Name) -> Option<Name> {
    let mut name = Name::from_labels(labels.iter().map(|l| l.as_bytes())).ok()?;
    name.set_fqdn(false);
    let mut full = name.append_domain(zone).ok()?;
    full.set_fqdn(true);
    Some(full)
}

/// The first label of an endpoint without hostname: its address with `-` for `.` or `:`.
pub(crate) fn dashed(ip: &IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string().replace('.', "-"),
        IpAddr::V6(v6) => v6.to_string().replace(':', "-"),
    }
}

impl Records {
    /// An empty zone.
    pub fn new(cluster_domain: &str) -> Result<Records, RecordsError> {
        let zone = cluster_domain
            .trim()
            .trim_end_matches('.')
            .to_ascii_lowercase();
        let mut zone_name = Name::from_ascii(&zone).map_err(|source| RecordsError::Domain {
            domain: cluster_domain.to_string(),
            source,
        })?;
        zone_name.set_fqdn(true);
        Ok(Records {
            zone,
            zone_name,
            ttl: DEFAULT_TTL,
            serial: unix_now(),
            services: HashMap::new(),
            reverse: HashMap::new(),
            ns_ips: Vec::new(),
        })
    }

    /// Compile a zone from Services and EndpointSlices.
    pub fn build<'a>(
        cluster_domain: &str,
        services: impl IntoIterator<Item = &'a Service>,
        slices: impl IntoIterator<Item = &'a EndpointSlice>,
    ) -> Result<Records, RecordsError> {
        let mut records = Records::new(cluster_domain)?;
        for service in services {
            records.add_service(service);
        }
        let mut slices: Vec<&EndpointSlice> = slices.into_iter().collect();
        // Stable answers whatever the watch order.
        slices.sort_by(|a, b| {
            (&a.metadata.namespace, &a.metadata.name)
                .cmp(&(&b.metadata.namespace, &b.metadata.name))
        });
        for slice in slices {
            records.add_slice(slice);
        }
        records.index_reverse();
        Ok(records)
    }

    pub fn with_ttl(mut self, ttl: u32) -> Records {
        self.ttl = ttl;
        self
    }

    /// SOA serial: CoreDNS uses the time of the last change, so do we.
    pub fn with_serial(mut self, serial: u32) -> Records {
        self.serial = serial;
        self
    }

    pub fn cluster_domain(&self) -> &str {
        &self.zone
    }

    pub fn serial(&self) -> u32 {
        self.serial
    }

    pub fn ttl(&self) -> u32 {
        self.ttl
    }

    pub fn service_count(&self) -> usize {
        self.services.len()
    }

    pub fn service(&self, namespace: &str, name: &str) -> Option<&ServiceRecord> {
        self.services.get(&format!(
            "{}.{}",
            name.to_ascii_lowercase(),
            namespace.to_ascii_lowercase()
        ))
    }

    fn add_service(&mut self, service: &Service) {
        let (Some(name), Some(namespace)) = (&service.metadata.name, &service.metadata.namespace)
        else {
            return;
        };
        let Some(spec) = &service.spec else { return };
        let name = name.to_ascii_lowercase();
        let namespace = namespace.to_ascii_lowercase();
        let Some(fqdn) = name_of(&[&name, &namespace, "svc"], &self.zone_name) else {
            return;
        };
        let kind = if spec.type_.as_deref() == Some("ExternalName") {
            let target = spec.external_name.as_deref().unwrap_or("").trim();
            // An address is no CNAME target: CoreDNS serves nothing for it.
            if target.is_empty() || parse_ip(target).is_some() {
                return;
            }
            let Ok(mut target) = Name::from_ascii(target.trim_end_matches('.')) else {
                return;
            };
            target.set_fqdn(true);
            ServiceKind::ExternalName(target)
        } else {
            let mut ips: Vec<String> = spec.cluster_ips.clone().unwrap_or_default();
            if ips.is_empty() {
                ips.extend(spec.cluster_ip.clone());
            }
            if ips.iter().any(|ip| ip == "None") {
                ServiceKind::Headless
            } else {
                let ips: Vec<IpAddr> = ips.iter().filter_map(|s| parse_ip(s)).collect();
                if ips.is_empty() {
                    // not allocated yet
                    return;
                }
                ServiceKind::ClusterIp(ips)
            }
        };
        let mut ports: Vec<PortRecord> = spec
            .ports
            .iter()
            .flatten()
            .map(|p| PortRecord {
                name: p.name.as_deref().unwrap_or("").to_ascii_lowercase(),
                protocol: p.protocol.as_deref().unwrap_or("TCP").to_ascii_lowercase(),
                port: p.port,
            })
            .collect();
        if ports.is_empty() {
            ports.push(PortRecord::none());
        }
        if namespace == "kube-system"
            && name == "kube-dns"
            && let ServiceKind::ClusterIp(ips) = &kind
        {
            self.ns_ips = ips.clone();
        }
        let key = format!("{name}.{namespace}");
        self.services.insert(
            key,
            ServiceRecord {
                name,
                namespace,
                kind,
                fqdn,
                ports,
                endpoints: Vec::new(),
            },
        );
    }

    fn add_slice(&mut self, slice: &EndpointSlice) {
        if slice.address_type == "FQDN" {
            return;
        }
        let Some(namespace) = &slice.metadata.namespace else {
            return;
        };
        let Some(service) = slice
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(SERVICE_NAME_LABEL))
        else {
            return;
        };
        let key = format!(
            "{}.{}",
            service.to_ascii_lowercase(),
            namespace.to_ascii_lowercase()
        );
        let zone = self.zone_name.clone();
        let Some(record) = self.services.get_mut(&key) else {
            return;
        };
        let mut ports: Vec<PortRecord> = slice
            .ports
            .iter()
            .flatten()
            .map(|p| PortRecord {
                name: p.name.as_deref().unwrap_or("").to_ascii_lowercase(),
                protocol: p.protocol.as_deref().unwrap_or("TCP").to_ascii_lowercase(),
                port: p.port.unwrap_or(-1),
            })
            .collect();
        if ports.is_empty() {
            ports.push(PortRecord::none());
        }
        let ports: Arc<[PortRecord]> = ports.into();
        for endpoint in &slice.endpoints {
            // Ready unset means ready; terminating endpoints are not ready.
            let ready = endpoint
                .conditions
                .as_ref()
                .and_then(|c| c.ready)
                .unwrap_or(true);
            if !ready {
                continue;
            }
            for address in &endpoint.addresses {
                let Some(ip) = parse_ip(address) else {
                    continue;
                };
                let label = match endpoint.hostname.as_deref() {
                    Some(h) if !h.is_empty() => h.to_ascii_lowercase(),
                    _ => dashed(&ip),
                };
                let Some(fqdn) = name_of(&[&label, &record.name, &record.namespace, "svc"], &zone)
                else {
                    continue;
                };
                record.endpoints.push(EndpointRecord {
                    ip,
                    label,
                    fqdn,
                    ports: ports.clone(),
                });
            }
        }
    }

    fn index_reverse(&mut self) {
        let mut reverse: HashMap<IpAddr, Vec<Name>> = HashMap::new();
        let mut cluster_ips = std::collections::HashSet::new();
        let mut keys: Vec<&String> = self.services.keys().collect();
        keys.sort();
        for key in &keys {
            let service = &self.services[*key];
            if let ServiceKind::ClusterIp(ips) = &service.kind {
                for ip in ips {
                    if cluster_ips.insert(*ip) {
                        reverse.insert(*ip, vec![service.fqdn.clone()]);
                    }
                }
            }
        }
        for key in &keys {
            for endpoint in &self.services[*key].endpoints {
                if cluster_ips.contains(&endpoint.ip) {
                    continue;
                }
                let names = reverse.entry(endpoint.ip).or_default();
                if !names.contains(&endpoint.fqdn) {
                    names.push(endpoint.fqdn.clone());
                }
            }
        }
        self.reverse = reverse;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn svc(v: serde_json::Value) -> Service {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn compiles_services_and_ready_endpoints() {
        let services = [
            svc(json!({"metadata": {"name": "Web", "namespace": "ns"},
                "spec": {"clusterIP": "None", "ports": [{"name": "http", "port": 80}]}})),
            svc(json!({"metadata": {"name": "pending", "namespace": "ns"}, "spec": {}})),
        ];
        let slice: EndpointSlice = serde_json::from_value(json!({
            "metadata": {"name": "web-abc", "namespace": "ns",
                "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4",
            "endpoints": [
                {"addresses": ["10.0.0.1"], "hostname": "web-0"},
                {"addresses": ["10.0.0.2"], "conditions": {"ready": false}},
                {"addresses": ["10.0.0.3"], "conditions": {"ready": true}},
            ],
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        }))
        .unwrap();
        let r = Records::build("Cluster.Local.", &services, [&slice]).unwrap();
        assert_eq!(r.cluster_domain(), "cluster.local");
        assert_eq!(
            r.service_count(),
            1,
            "a service without cluster IP is skipped"
        );
        let web = r.service("ns", "web").unwrap();
        assert_eq!(web.kind, ServiceKind::Headless);
        let labels: Vec<&str> = web.endpoints.iter().map(|e| e.label.as_str()).collect();
        assert_eq!(labels, ["web-0", "10-0-0-3"]);
        assert_eq!(
            web.endpoints[0].fqdn.to_ascii(),
            "web-0.web.ns.svc.cluster.local."
        );
        assert_eq!(web.endpoints[0].ports[0].port, 8080);
        assert_eq!(r.reverse[&"10.0.0.3".parse::<IpAddr>().unwrap()].len(), 1);
    }
}
