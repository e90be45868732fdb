use std::net::IpAddr;

use hickory_proto::op::{Edns, Message, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::json;

use super::*;
use crate::records::Records;

fn service(ns: &str, name: &str, spec: serde_json::Value) -> Service {
    serde_json::from_value(json!({"metadata": {"name": name, "namespace": ns}, "spec": spec}))
        .unwrap()
}

fn slice(
    ns: &str,
    service: &str,
    name: &str,
    endpoints: serde_json::Value,
    ports: serde_json::Value,
) -> EndpointSlice {
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": ns,
            "labels": {"kubernetes.io/service-name": service}},
        "addressType": "IPv4",
        "endpoints": endpoints,
        "ports": ports,
    }))
    .unwrap()
}

/// A small cluster with one of everything.
fn cluster() -> Records {
    let services = [
        service(
            "default",
            "web",
            json!({"clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"],
                "ports": [{"name": "http", "port": 80, "protocol": "TCP"},
                          {"name": "dns", "port": 53, "protocol": "UDP"}]}),
        ),
        service(
            "default",
            "dual",
            json!({"clusterIPs": ["10.96.0.11", "fd00::11"],
                "ports": [{"name": "http", "port": 80}]}),
        ),
        service(
            "db",
            "pg",
            json!({"clusterIP": "None", "ports": [{"name": "pg", "port": 5432}]}),
        ),
        service("db", "empty", json!({"clusterIP": "None"})),
        service(
            "default",
            "ext",
            json!({"type": "ExternalName", "externalName": "example.com"}),
        ),
        service(
            "default",
            "alias",
            json!({"type": "ExternalName", "externalName": "web.default.svc.cluster.local"}),
        ),
        service(
            "kube-system",
            "kube-dns",
            json!({"clusterIP": "10.96.0.2", "ports": [{"name": "dns", "port": 53, "protocol": "UDP"}]}),
        ),
    ];
    let slices = [
        slice(
            "db",
            "pg",
            "pg-1",
            json!([
                {"addresses": ["10.244.0.5"], "hostname": "pg-0"},
                {"addresses": ["10.244.0.6"], "hostname": "pg-1"},
                {"addresses": ["10.244.0.7"], "conditions": {"ready": false}, "hostname": "pg-2"},
                {"addresses": ["10.244.0.8"]},
            ]),
            json!([{"name": "pg", "port": 5433, "protocol": "TCP"}]),
        ),
        slice(
            "default",
            "web",
            "web-1",
            json!([{"addresses": ["10.244.1.1"]}]),
            json!([{"name": "http", "port": 8080, "protocol": "TCP"}]),
        ),
    ];
    Records::build("cluster.local", &services, &slices)
        .unwrap()
        .with_serial(42)
}

fn query(name: &str, qtype: RecordType) -> Message {
    let mut m = Message::query();
    m.metadata.id = 4321;
    m.metadata.recursion_desired = true;
    m.queries
        .push(Query::query(Name::from_ascii(name).unwrap(), qtype));
    m
}

fn ask(name: &str, qtype: RecordType) -> Message {
    let reply = answer(&cluster(), &query(name, qtype));
    // every reply must survive the wire
    Message::from_vec(&reply.to_vec().unwrap()).unwrap()
}

fn ips(m: &Message) -> Vec<IpAddr> {
    m.answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            RData::AAAA(a) => Some(IpAddr::V6(a.0)),
            _ => None,
        })
        .collect()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn srvs(m: &Message) -> Vec<(u16, u16, u16, String)> {
    m.answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::SRV(s) => Some((s.priority, s.weight, s.port, s.target.to_ascii())),
            _ => None,
        })
        .collect()
}

fn assert_soa_authority(m: &Message) {
    assert_eq!(m.authorities.len(), 1, "{m:?}");
    let soa_record: &Record = &m.authorities[0];
    assert_eq!(soa_record.name.to_ascii(), "cluster.local.");
    assert_eq!(soa_record.ttl, 5);
    let RData::SOA(soa) = &soa_record.data else {
        panic!("not a SOA: {soa_record:?}")
    };
    assert_eq!(soa.mname.to_ascii(), "ns.dns.cluster.local.");
    assert_eq!(soa.rname.to_ascii(), "hostmaster.cluster.local.");
    assert_eq!(soa.serial, 42);
    assert_eq!(
        (soa.refresh, soa.retry, soa.expire, soa.minimum),
        (7200, 1800, 86400, 5)
    );
}

#[test]
fn cluster_ip_service() {
    let m = ask("web.default.svc.cluster.local.", RecordType::A);
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(m.metadata.authoritative);
    assert_eq!(m.metadata.id, 4321);
    assert!(m.metadata.recursion_desired && m.metadata.recursion_available);
    assert_eq!(ips(&m), [ip("10.96.0.10")]);
    assert_eq!(m.answers[0].ttl, 5);
    assert_eq!(
        m.answers[0].name.to_ascii(),
        "web.default.svc.cluster.local."
    );
    assert!(m.authorities.is_empty());
}

#[test]
fn names_are_case_insensitive_and_echo_the_question() {
    let m = ask("WeB.DeFault.SVC.Cluster.LOCAL.", RecordType::A);
    assert_eq!(ips(&m), [ip("10.96.0.10")]);
    assert_eq!(
        m.answers[0].name.to_ascii(),
        "WeB.DeFault.SVC.Cluster.LOCAL."
    );
    let m = ask("PG-0.pg.DB.svc.cluster.local.", RecordType::A);
    assert_eq!(ips(&m), [ip("10.244.0.5")]);
}

#[test]
fn aaaa_of_a_single_stack_service_is_nodata() {
    let m = ask("web.default.svc.cluster.local.", RecordType::AAAA);
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(m.answers.is_empty());
    assert_soa_authority(&m);
}

#[test]
fn dual_stack_service() {
    assert_eq!(
        ips(&ask("dual.default.svc.cluster.local.", RecordType::A)),
        [ip("10.96.0.11")]
    );
    assert_eq!(
        ips(&ask("dual.default.svc.cluster.local.", RecordType::AAAA)),
        [ip("fd00::11")]
    );
}

#[test]
fn headless_service_resolves_to_ready_endpoints() {
    let m = ask("pg.db.svc.cluster.local.", RecordType::A);
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert_eq!(
        ips(&m),
        [ip("10.244.0.5"), ip("10.244.0.6"), ip("10.244.0.8")],
        "the not-ready pg-2 is left out"
    );
}

#[test]
fn headless_service_without_endpoints_is_nxdomain() {
    let m = ask("empty.db.svc.cluster.local.", RecordType::A);
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    assert_soa_authority(&m);
}

#[test]
fn endpoint_names_by_hostname_and_dashed_ip() {
    // StatefulSet pods through their headless Service
    assert_eq!(
        ips(&ask("pg-1.pg.db.svc.cluster.local.", RecordType::A)),
        [ip("10.244.0.6")]
    );
    assert_eq!(
        ips(&ask("10-244-0-8.pg.db.svc.cluster.local.", RecordType::A)),
        [ip("10.244.0.8")]
    );
    // endpoints of a ClusterIP Service have names too
    assert_eq!(
        ips(&ask(
            "10-244-1-1.web.default.svc.cluster.local.",
            RecordType::A
        )),
        [ip("10.244.1.1")]
    );
    let m = ask("pg-2.pg.db.svc.cluster.local.", RecordType::A);
    assert_eq!(
        m.metadata.response_code,
        ResponseCode::NXDomain,
        "not ready"
    );
}

#[test]
fn srv_for_a_named_port() {
    let m = ask("_http._tcp.web.default.svc.cluster.local.", RecordType::SRV);
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert_eq!(
        srvs(&m),
        [(0, 100, 80, "web.default.svc.cluster.local.".to_string())]
    );
    assert_eq!(m.additionals.len(), 1);
    assert_eq!(
        m.additionals[0].name.to_ascii(),
        "web.default.svc.cluster.local."
    );
    assert!(matches!(&m.additionals[0].data, RData::A(a) if a.0.to_string() == "10.96.0.10"));

    // the protocol must match too
    let m = ask("_dns._tcp.web.default.svc.cluster.local.", RecordType::SRV);
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    let m = ask("_dns._udp.web.default.svc.cluster.local.", RecordType::SRV);
    assert_eq!(srvs(&m)[0].2, 53);
    let m = ask("_nope._tcp.web.default.svc.cluster.local.", RecordType::SRV);
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    assert_soa_authority(&m);
}

#[test]
fn srv_for_the_plain_name_lists_every_port() {
    let m = ask("web.default.svc.cluster.local.", RecordType::SRV);
    let mut got = srvs(&m);
    got.sort();
    assert_eq!(
        got,
        [
            (0, 50, 53, "web.default.svc.cluster.local.".to_string()),
            (0, 50, 80, "web.default.svc.cluster.local.".to_string()),
        ]
    );
    assert_eq!(m.additionals.len(), 1, "one address for the shared target");
}

#[test]
fn srv_of_a_headless_service_names_each_endpoint() {
    let m = ask("_pg._tcp.pg.db.svc.cluster.local.", RecordType::SRV);
    let got = srvs(&m);
    assert_eq!(
        got,
        [
            (0, 33, 5433, "pg-0.pg.db.svc.cluster.local.".to_string()),
            (0, 33, 5433, "pg-1.pg.db.svc.cluster.local.".to_string()),
            (
                0,
                33,
                5433,
                "10-244-0-8.pg.db.svc.cluster.local.".to_string()
            ),
        ]
    );
    let extra: Vec<(String, IpAddr)> = m
        .additionals
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some((r.name.to_ascii(), IpAddr::V4(a.0))),
            _ => None,
        })
        .collect();
    assert_eq!(
        extra[0],
        ("pg-0.pg.db.svc.cluster.local.".into(), ip("10.244.0.5"))
    );
    assert_eq!(extra.len(), 3);
}

#[test]
fn pod_records() {
    let m = ask("10-244-3-4.anything.pod.cluster.local.", RecordType::A);
    assert_eq!(ips(&m), [ip("10.244.3.4")]);
    let m = ask("fd00--1.anything.pod.cluster.local.", RecordType::AAAA);
    assert_eq!(ips(&m), [ip("fd00::1")]);
    let m = ask("fd00--1.anything.pod.cluster.local.", RecordType::A);
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(m.answers.is_empty());
    let m = ask("not-an-ip.default.pod.cluster.local.", RecordType::A);
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    assert_soa_authority(&m);
}

#[test]
fn external_name_is_a_cname() {
    let m = ask("ext.default.svc.cluster.local.", RecordType::A);
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert_eq!(m.answers.len(), 1);
    assert!(matches!(&m.answers[0].data, RData::CNAME(c) if c.0.to_ascii() == "example.com."));
    let m = ask("ext.default.svc.cluster.local.", RecordType::CNAME);
    assert!(matches!(&m.answers[0].data, RData::CNAME(c) if c.0.to_ascii() == "example.com."));
    // no SRV behind an ExternalName
    let m = ask("ext.default.svc.cluster.local.", RecordType::SRV);
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(m.answers.is_empty());
}

#[test]
fn external_name_inside_the_zone_is_followed() {
    let m = ask("alias.default.svc.cluster.local.", RecordType::A);
    assert_eq!(m.answers.len(), 2);
    assert!(matches!(&m.answers[0].data,
        RData::CNAME(c) if c.0.to_ascii() == "web.default.svc.cluster.local."));
    assert_eq!(
        m.answers[1].name.to_ascii(),
        "web.default.svc.cluster.local."
    );
    assert_eq!(ips(&m), [ip("10.96.0.10")]);
}

#[test]
fn ptr_for_cluster_ips_and_endpoints() {
    let ptr = |name: &str| {
        let m = ask(name, RecordType::PTR);
        m.answers
            .iter()
            .filter_map(|r| match &r.data {
                RData::PTR(p) => Some(p.0.to_ascii()),
                _ => None,
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(
        ptr("10.0.96.10.in-addr.arpa."),
        ["web.default.svc.cluster.local."]
    );
    assert_eq!(
        ptr("5.0.244.10.IN-ADDR.ARPA."),
        ["pg-0.pg.db.svc.cluster.local."]
    );
    assert_eq!(
        ptr("1.1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa."),
        ["dual.default.svc.cluster.local."]
    );
    // an address we do not know is for the upstream resolvers
    let unknown = query("9.9.9.10.in-addr.arpa.", RecordType::PTR);
    assert_eq!(resolve(&cluster(), &unknown), Lookup::Forward);
    let partial = query("10.in-addr.arpa.", RecordType::PTR);
    assert_eq!(resolve(&cluster(), &partial), Lookup::Forward);
}

#[test]
fn missing_names_are_nxdomain_with_soa() {
    for name in [
        "nope.default.svc.cluster.local.",
        "web.other-namespace.svc.cluster.local.",
        "something.cluster.local.",
        "a.b._http._tcp.web.default.svc.cluster.local.",
        "nobody.web.default.svc.cluster.local.",
    ] {
        let m = ask(name, RecordType::A);
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain, "{name}");
        assert!(m.metadata.authoritative);
        assert!(m.answers.is_empty());
        assert_soa_authority(&m);
    }
}

#[test]
fn namespaces_and_the_apex_exist_without_records() {
    for name in [
        "whatever-namespace.svc.cluster.local.",
        "svc.cluster.local.",
        "pod.cluster.local.",
        "cluster.local.",
    ] {
        let m = ask(name, RecordType::A);
        assert_eq!(m.metadata.response_code, ResponseCode::NoError, "{name}");
        assert!(m.answers.is_empty(), "{name}");
        assert_soa_authority(&m);
    }
}

#[test]
fn other_types_of_existing_names_are_nodata() {
    let m = ask("web.default.svc.cluster.local.", RecordType::MX);
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(m.answers.is_empty());
    assert_soa_authority(&m);
}

#[test]
fn apex_soa_ns_and_schema_version() {
    let m = ask("cluster.local.", RecordType::SOA);
    assert!(matches!(&m.answers[0].data, RData::SOA(s) if s.serial == 42));
    let m = ask("cluster.local.", RecordType::NS);
    assert!(
        matches!(&m.answers[0].data, RData::NS(n) if n.0.to_ascii() == "ns.dns.cluster.local.")
    );
    assert!(matches!(&m.additionals[0].data, RData::A(a) if a.0.to_string() == "10.96.0.2"));
    assert_eq!(
        ips(&ask("ns.dns.cluster.local.", RecordType::A)),
        [ip("10.96.0.2")]
    );
    let m = ask("dns-version.cluster.local.", RecordType::TXT);
    assert!(matches!(&m.answers[0].data, RData::TXT(t) if t.to_string() == "1.1.0"));
}

#[test]
fn other_zones_are_forwarded() {
    let q = query("example.com.", RecordType::A);
    assert_eq!(resolve(&cluster(), &q), Lookup::Forward);
    assert_eq!(
        answer(&cluster(), &q).metadata.response_code,
        ResponseCode::Refused
    );
    // a name that only ends like the zone is not in it
    let q = query("notcluster.local.", RecordType::A);
    assert_eq!(resolve(&cluster(), &q), Lookup::Forward);
}

#[test]
fn edns_is_answered_with_edns() {
    let mut q = query("web.default.svc.cluster.local.", RecordType::A);
    let mut edns = Edns::new();
    edns.set_max_payload(4096);
    q.edns = Some(edns);
    let m = Message::from_vec(&answer(&cluster(), &q).to_vec().unwrap()).unwrap();
    assert_eq!(
        m.edns.as_ref().map(|e| e.max_payload()),
        Some(MAX_UDP_PAYLOAD)
    );
    assert!(
        ask("web.default.svc.cluster.local.", RecordType::A)
            .edns
            .is_none()
    );
}

#[test]
fn malformed_requests() {
    let mut q = query("web.default.svc.cluster.local.", RecordType::A);
    q.queries.push(q.queries[0].clone());
    assert_eq!(
        answer(&cluster(), &q).metadata.response_code,
        ResponseCode::FormErr
    );
    let mut q = query("web.default.svc.cluster.local.", RecordType::A);
    q.metadata.op_code = hickory_proto::op::OpCode::Status;
    assert_eq!(
        answer(&cluster(), &q).metadata.response_code,
        ResponseCode::NotImp
    );
}

#[test]
fn custom_cluster_domain() {
    let services = [
        service(
            "default",
            "web",
            json!({"clusterIP": "10.96.0.10", "ports": [{"port": 80}]}),
        ),
        service("default", "bare", json!({"clusterIP": "10.96.0.12"})),
    ];
    let records = Records::build("corp.example.", &services, []).unwrap();
    let m = answer(
        &records,
        &query("web.default.svc.corp.example.", RecordType::A),
    );
    assert_eq!(ips(&m), [ip("10.96.0.10")]);
    let q = query("web.default.svc.cluster.local.", RecordType::A);
    assert_eq!(resolve(&records, &q), Lookup::Forward);
    // an unnamed port still has SRV for the plain name
    let m = answer(
        &records,
        &query("web.default.svc.corp.example.", RecordType::SRV),
    );
    assert_eq!(srvs(&m)[0].2, 80);
    // a port-less service has no SRV, but its address
    let m = answer(
        &records,
        &query("bare.default.svc.corp.example.", RecordType::SRV),
    );
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(srvs(&m).is_empty());
    let m = answer(
        &records,
        &query("bare.default.svc.corp.example.", RecordType::A),
    );
    assert_eq!(ips(&m), [ip("10.96.0.12")]);
}
