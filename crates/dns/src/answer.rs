//! Answers for the cluster zone, pure: a [`Records`] snapshot and a request in, a response out.
//!
//! The names and their meaning follow the Kubernetes DNS specification as CoreDNS's kubernetes
//! plugin serves it (`pods insecure`, reverse zones falling through to the upstream resolvers):
//!
//! - `<svc>.<ns>.svc.<zone>`: A/AAAA of the ClusterIPs, or of the ready endpoints when headless;
//!   CNAME for an ExternalName Service; SRV for every port.
//! - `<endpoint>.<svc>.<ns>.svc.<zone>`: an endpoint by hostname or dashed IP.
//! - `_<port>._<proto>.<svc>.<ns>.svc.<zone>`: SRV (and addresses) of a named port.
//! - `<a-b-c-d>.<ns>.pod.<zone>`: the address written in the name.
//! - `<d>.<c>.<b>.<a>.in-addr.arpa` / `ip6.arpa`: PTR for ClusterIPs and endpoint IPs.
//! - `dns-version.<zone>` TXT, and SOA/NS at the apex.
//!
//! A name that does not exist gets NXDOMAIN, a name without records of the asked type NOERROR
//! with no answer (NODATA); both carry the zone's SOA in the authority section.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use hickory_proto::op::{Edns, Message, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, CNAME, NS, PTR, SOA, SRV, TXT};
use hickory_proto::rr::{Name, RData, Record, RecordType};

use crate::records::{Records, ServiceKind};

/// Version of the Kubernetes DNS schema served (`dns-version.<zone>` TXT).
pub const DNS_SCHEMA_VERSION: &str = "1.1.0";

/// Longest chain of in-zone CNAMEs followed, as CoreDNS.
const MAX_CNAME_DEPTH: usize = 8;

/// The largest UDP payload we offer in our OPT record (the 2020 DNS flag day's value).
pub const MAX_UDP_PAYLOAD: u16 = 1232;

/// What to do with a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// Answered from the cluster zone.
    Answer(Message),
    /// Not ours: ask the upstream resolvers.
    Forward,
}

/// Answer `request` from `records`; a name outside the cluster zone gets REFUSED, as from an
/// authoritative-only server (the server forwards those instead, see [`resolve`]).
pub fn answer(records: &Records, request: &Message) -> Message {
    match resolve(records, request) {
        Lookup::Answer(m) => m,
        Lookup::Forward => {
            let mut m = response_to(request);
            m.metadata.response_code = ResponseCode::Refused;
            m
        }
    }
}

/// Answer `request` if it is for the cluster zone (or a known reverse address).
pub fn resolve(records: &Records, request: &Message) -> Lookup {
    if request.metadata.op_code != OpCode::Query {
        let mut m = response_to(request);
        m.metadata.response_code = ResponseCode::NotImp;
        return Lookup::Answer(m);
    }
    let [query] = request.queries.as_slice() else {
        let mut m = response_to(request);
        m.metadata.response_code = ResponseCode::FormErr;
        return Lookup::Answer(m);
    };
    let Some(lower) = lowercase_name(&query.name) else {
        return Lookup::Forward;
    };
    let qtype = query.query_type;
    if let Some(rel) = relative_to(&lower, &records.zone) {
        let mut m = response_to(request);
        m.metadata.authoritative = true;
        let found = zone_answer(records, &query.name, rel, qtype, &mut m, 0);
        finish(records, &mut m, found);
        return Lookup::Answer(m);
    }
    if qtype == RecordType::PTR
        && let Some(names) = reverse_ip(&lower).and_then(|ip| records.reverse.get(&ip))
    {
        let mut m = response_to(request);
        m.metadata.authoritative = true;
        for target in names {
            m.answers.push(Record::from_rdata(
                query.name.clone(),
                records.ttl,
                RData::PTR(PTR(target.clone())),
            ));
        }
        return Lookup::Answer(m);
    }
    Lookup::Forward
}

/// The skeleton of a response: id, opcode, RD/CD and the question copied; RA set; an OPT
/// record when the request had one.
pub fn response_to(request: &Message) -> Message {
    let mut m = Message::response(request.metadata.id, request.metadata.op_code);
    m.metadata.recursion_desired = request.metadata.recursion_desired;
    m.metadata.checking_disabled = request.metadata.checking_disabled;
    m.metadata.recursion_available = true;
    m.queries = request.queries.clone();
    if let Some(edns) = &request.edns {
        let mut ours = Edns::new();
        ours.set_max_payload(MAX_UDP_PAYLOAD);
        ours.set_dnssec_ok(edns.flags().dnssec_ok);
        m.edns = Some(ours);
    }
    m
}

/// The zone's SOA, as CoreDNS writes it: `ns.dns.<zone>`, `hostmaster.<zone>`, the serial,
/// refresh 7200, retry 1800, expire 86400, minimum and TTL the record TTL.
pub fn soa(records: &Records) -> Record {
    let zone = &records.zone_name;
    let mname = prepend(zone, &["ns", "dns"]);
    let rname = prepend(zone, &["hostmaster"]);
    Record::from_rdata(
        zone.clone(),
        records.ttl.min(300),
        RData::SOA(SOA::new(
            mname,
            rname,
            records.serial,
            7200,
            1800,
            86400,
            records.ttl,
        )),
    )
}

fn prepend(zone: &Name, labels: &[&str]) -> Name {
    let mut name = zone.clone();
    for label in labels.iter().rev() {
        name = name.prepend_label(*label).unwrap_or(name);
    }
    name
}

/// Whether the name exists, for the rcode and the authority section.
enum Found {
    /// NXDOMAIN.
    NoName,
    /// The name exists; the answers (if any) are in the message.
    Name,
}

fn finish(records: &Records, m: &mut Message, found: Found) {
    match found {
        Found::NoName => {
            m.answers.clear();
            m.additionals.clear();
            m.metadata.response_code = ResponseCode::NXDomain;
            m.authorities.push(soa(records));
        }
        Found::Name if m.answers.is_empty() => m.authorities.push(soa(records)),
        Found::Name => {}
    }
}

/// A name lowercased, without the root dot; `None` for names that are not plain ASCII.
fn lowercase_name(name: &Name) -> Option<String> {
    let mut out = String::with_capacity(name.len());
    for label in name.iter() {
        if !out.is_empty() {
            out.push('.');
        }
        for &b in label {
            if !b.is_ascii() || b == b'.' {
                return None;
            }
            out.push(b.to_ascii_lowercase() as char);
        }
    }
    Some(out)
}

/// The part of `name` before `zone` (`""` for the apex), if `name` is in the zone.
fn relative_to<'a>(name: &'a str, zone: &str) -> Option<&'a str> {
    if name == zone {
        return Some("");
    }
    let rest = name.strip_suffix(zone)?;
    rest.strip_suffix('.')
}

/// The address of a full reverse name (`4.3.2.1.in-addr.arpa`, 32 nibbles `.ip6.arpa`).
pub(crate) fn reverse_ip(name: &str) -> Option<IpAddr> {
    if let Some(rest) = name.strip_suffix(".in-addr.arpa") {
        let mut octets = [0u8; 4];
        let mut n = 0;
        for label in rest.split('.') {
            if n == 4 || label.is_empty() || (label.len() > 1 && label.starts_with('0')) {
                return None;
            }
            octets[3 - n] = label.parse().ok()?;
            n += 1;
        }
        return (n == 4).then(|| IpAddr::V4(Ipv4Addr::from(octets)));
    }
    if let Some(rest) = name.strip_suffix(".ip6.arpa") {
        let mut value: u128 = 0;
        let mut n = 0;
        for label in rest.split('.') {
            if n == 32 || label.len() != 1 {
                return None;
            }
            let nibble = u128::from(label.chars().next()?.to_digit(16)?);
            value |= nibble << (4 * n);
            n += 1;
        }
        return (n == 32).then(|| IpAddr::V6(Ipv6Addr::from(value)));
    }
    None
}

/// One thing a name stands for, before it becomes records of the asked type (CoreDNS calls
/// these "services"): an address or a CNAME target, with a port and the name SRV points at.
struct Entry<'r> {
    host: Host<'r>,
    port: i32,
    target: &'r Name,
}

enum Host<'r> {
    Ip(IpAddr),
    Name(&'r Name),
}

/// The parsed labels of a name in the zone (CoreDNS's recordRequest).
#[derive(Default)]
struct Request<'n> {
    port: &'n str,
    protocol: &'n str,
    endpoint: &'n str,
    service: &'n str,
    namespace: &'n str,
    kind: &'n str,
}

/// Split `rel` (the name relative to the zone) into its parts; `None` for names the schema
/// has no place for.
fn parse(rel: &str) -> Option<Request<'_>> {
    let mut r = Request::default();
    if rel.is_empty() {
        return Some(r);
    }
    let mut segs = rel.rsplit('.');
    r.kind = segs.next()?;
    if r.kind != "svc" && r.kind != "pod" {
        return None;
    }
    let Some(ns) = segs.next() else {
        return Some(r);
    };
    r.namespace = ns;
    let Some(service) = segs.next() else {
        return Some(r);
    };
    r.service = service;
    match (segs.next(), segs.next(), segs.next()) {
        (None, _, _) => {}
        (Some(endpoint), None, _) => r.endpoint = endpoint,
        (Some(protocol), Some(port), None) => {
            r.protocol = protocol.strip_prefix('_').unwrap_or(protocol);
            r.port = port.strip_prefix('_').unwrap_or(port);
        }
        _ => return None,
    }
    Some(r)
}

/// Everything `rel` stands for; `Err(())` when the name does not exist.
fn entries<'r>(records: &'r Records, rel: &str) -> Result<Vec<Entry<'r>>, ()> {
    let r = parse(rel).ok_or(())?;
    if r.kind.is_empty() || r.service.is_empty() {
        // apex, `svc.<zone>`, `<ns>.svc.<zone>`: they exist, without records
        return Ok(Vec::new());
    }
    if r.kind == "pod" {
        if !r.endpoint.is_empty() || !r.port.is_empty() {
            return Err(());
        }
        let pod = r.service;
        let text = if pod.matches('-').count() == 3 && !pod.contains("--") {
            pod.replace('-', ".")
        } else {
            pod.replace('-', ":")
        };
        let ip: IpAddr = text.parse().map_err(|_| ())?;
        return Ok(vec![Entry {
            host: Host::Ip(ip),
            port: -1,
            target: &records.zone_name,
        }]);
    }
    let mut key = String::with_capacity(r.service.len() + r.namespace.len() + 1);
    key.push_str(r.service);
    key.push('.');
    key.push_str(r.namespace);
    let service = records.services.get(&key).ok_or(())?;
    let mut out = Vec::new();
    match &service.kind {
        ServiceKind::ExternalName(target) => {
            // no endpoints behind an ExternalName
            if r.endpoint.is_empty() {
                out.push(Entry {
                    host: Host::Name(target),
                    port: -1,
                    target: &service.fqdn,
                });
            }
        }
        ServiceKind::ClusterIp(ips) if r.endpoint.is_empty() => {
            for port in service
                .ports
                .iter()
                .filter(|p| p.matches(r.port, r.protocol))
            {
                for ip in ips {
                    out.push(Entry {
                        host: Host::Ip(*ip),
                        port: port.port,
                        target: &service.fqdn,
                    });
                }
            }
        }
        ServiceKind::ClusterIp(_) | ServiceKind::Headless => {
            for endpoint in &service.endpoints {
                if !r.endpoint.is_empty() && !r.endpoint.eq_ignore_ascii_case(&endpoint.label) {
                    continue;
                }
                for port in endpoint
                    .ports
                    .iter()
                    .filter(|p| p.matches(r.port, r.protocol))
                {
                    out.push(Entry {
                        host: Host::Ip(endpoint.ip),
                        port: port.port,
                        target: &endpoint.fqdn,
                    });
                }
            }
        }
    }
    if out.is_empty() { Err(()) } else { Ok(out) }
}

fn address_record(owner: &Name, ttl: u32, ip: IpAddr) -> Record {
    let data = match ip {
        IpAddr::V4(v4) => RData::A(A(v4)),
        IpAddr::V6(v6) => RData::AAAA(AAAA(v6)),
    };
    Record::from_rdata(owner.clone(), ttl, data)
}

fn wants(qtype: RecordType, ip: &IpAddr) -> bool {
    matches!(
        (qtype, ip),
        (RecordType::A, IpAddr::V4(_)) | (RecordType::AAAA, IpAddr::V6(_))
    )
}

/// Fill `m` with the answer for `qname` (`rel` relative to the zone).
fn zone_answer(
    records: &Records,
    qname: &Name,
    rel: &str,
    qtype: RecordType,
    m: &mut Message,
    depth: usize,
) -> Found {
    let ttl = records.ttl;
    // names of the server itself
    if rel == "dns-version" && qtype == RecordType::TXT {
        m.answers.push(Record::from_rdata(
            qname.clone(),
            28800,
            RData::TXT(TXT::new(vec![DNS_SCHEMA_VERSION.to_string()])),
        ));
        return Found::Name;
    }
    if rel == "ns.dns" && !records.ns_ips.is_empty() {
        for ip in records.ns_ips.iter().filter(|ip| wants(qtype, ip)) {
            m.answers.push(address_record(qname, ttl, *ip));
        }
        return Found::Name;
    }
    if rel.is_empty() {
        match qtype {
            RecordType::SOA => m.answers.push(soa(records)),
            RecordType::NS => {
                let ns = prepend(&records.zone_name, &["ns", "dns"]);
                m.answers.push(Record::from_rdata(
                    qname.clone(),
                    ttl,
                    RData::NS(NS(ns.clone())),
                ));
                for ip in &records.ns_ips {
                    m.additionals.push(address_record(&ns, ttl, *ip));
                }
            }
            _ => {}
        }
        return Found::Name;
    }
    let Ok(entries) = entries(records, rel) else {
        return Found::NoName;
    };
    match qtype {
        RecordType::A | RecordType::AAAA => {
            let mut seen: Vec<IpAddr> = Vec::new();
            for entry in &entries {
                match entry.host {
                    Host::Ip(ip) if wants(qtype, &ip) && !seen.contains(&ip) => {
                        seen.push(ip);
                        m.answers.push(address_record(qname, ttl, ip));
                    }
                    Host::Ip(_) => {}
                    Host::Name(target) => cname(records, qname, target, qtype, m, depth),
                }
            }
        }
        RecordType::CNAME => {
            if let Some(Entry {
                host: Host::Name(target),
                ..
            }) = entries.first()
            {
                m.answers.push(Record::from_rdata(
                    qname.clone(),
                    ttl,
                    RData::CNAME(CNAME((*target).clone())),
                ));
            }
        }
        RecordType::TXT => {
            for entry in &entries {
                if let Host::Name(target) = entry.host {
                    cname(records, qname, target, qtype, m, depth);
                }
            }
        }
        RecordType::SRV => srv(records, qname, &entries, m),
        _ => {}
    }
    Found::Name
}

/// A CNAME to `target`; followed when it stays in the zone (and kept only if it leads
/// somewhere). A target elsewhere is left for the server to chase upstream.
fn cname(
    records: &Records,
    qname: &Name,
    target: &Name,
    qtype: RecordType,
    m: &mut Message,
    depth: usize,
) {
    if target.eq_ignore_root(qname) || depth >= MAX_CNAME_DEPTH {
        return;
    }
    let record = Record::from_rdata(
        qname.clone(),
        records.ttl,
        RData::CNAME(CNAME(target.clone())),
    );
    if m.answers.contains(&record) {
        return;
    }
    let lower = lowercase_name(target);
    match lower.as_deref().and_then(|l| relative_to(l, &records.zone)) {
        Some(rel) => {
            let mut inner = Message::response(0, OpCode::Query);
            if let Found::Name = zone_answer(records, target, rel, qtype, &mut inner, depth + 1)
                && !inner.answers.is_empty()
            {
                m.answers.push(record);
                m.answers.append(&mut inner.answers);
            }
        }
        None => m.answers.push(record),
    }
}

/// SRV records with the addresses of their targets in the additional section. Every entry
/// has priority 0 and an equal share of weight 100, as CoreDNS computes it.
fn srv(records: &Records, qname: &Name, entries: &[Entry<'_>], m: &mut Message) {
    let ttl = records.ttl;
    let weight = ((100 / entries.len().max(1)) as u16).max(1);
    let mut seen_srv: Vec<(&Name, i32)> = Vec::new();
    let mut seen_addr: Vec<(&Name, IpAddr)> = Vec::new();
    for entry in entries {
        // the placeholder port of a port-less Service or slice; ExternalName has no SRV
        let Host::Ip(ip) = entry.host else { continue };
        if entry.port < 0 {
            continue;
        }
        if !seen_srv.contains(&(entry.target, entry.port)) {
            seen_srv.push((entry.target, entry.port));
            m.answers.push(Record::from_rdata(
                qname.clone(),
                ttl,
                RData::SRV(SRV::new(0, weight, entry.port as u16, entry.target.clone())),
            ));
        }
        if !seen_addr.contains(&(entry.target, ip)) {
            seen_addr.push((entry.target, ip));
            m.additionals.push(address_record(entry.target, ttl, ip));
        }
    }
}

#[cfg(test)]
mod tests;
