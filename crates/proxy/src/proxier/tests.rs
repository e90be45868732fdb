//! Rule generation checked as text: Services and EndpointSlices in, nft script out.

use serde_json::json;

use super::*;

fn service(v: serde_json::Value) -> Service {
    serde_json::from_value(v).unwrap()
}

fn slice(service: &str, name: &str, port: i32, endpoints: serde_json::Value) -> EndpointSlice {
    serde_json::from_value(json!({
        "metadata": {"namespace": "ns", "name": name, "labels": {"kubernetes.io/service-name": service}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": port, "protocol": "TCP"}],
        "endpoints": endpoints
    }))
    .unwrap()
}

fn ep(ip: &str, ready: bool, serving: bool, terminating: bool, node: &str) -> serde_json::Value {
    json!({"addresses": [ip], "conditions": {"ready": ready, "serving": serving, "terminating": terminating}, "nodeName": node})
}

fn config() -> RuleConfig {
    RuleConfig {
        node_name: "n1".into(),
        cluster_cidrs: vec!["10.42.0.0/16".into()],
        masquerade_all: false,
        node_ips: vec!["192.168.0.10".parse().unwrap()],
        localhost_node_ports: false,
    }
}

fn web(extra_spec: serde_json::Value) -> Service {
    let mut spec = json!({
        "clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"],
        "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080}]
    });
    for (k, v) in extra_spec.as_object().unwrap() {
        spec[k] = v.clone();
    }
    service(json!({"metadata": {"namespace": "ns", "name": "web"}, "spec": spec}))
}

/// The partial script for the dirty Services, applied to the proxier's idea of the table.
fn sync(proxier: &mut Proxier, cache: &mut Cache) -> String {
    let changes: Vec<_> = cache
        .take_dirty()
        .into_iter()
        .map(|k| {
            let d = cache.desired(&k, &proxier.config);
            (k, d)
        })
        .collect();
    let changes = proxier.place(changes, false).unwrap();
    let (script, delta) = proxier.partial_script(&changes);
    // taken as programmed, as after a successful apply
    proxier.record(changes, delta);
    script
}

#[test]
fn hairpin_elements_are_for_endpoints_on_this_node_only() {
    let mut cache = Cache::default();
    let mut p = Proxier::new("t", config(), Nft::default());
    cache.upsert_service(&web(json!({})));
    cache.upsert_slice(&slice(
        "web",
        "web-1",
        8080,
        json!([
            ep("10.42.0.5", true, true, false, "n1"),
            ep("10.42.0.7", true, true, false, "n2"),
            {"addresses": ["10.42.0.9"], "conditions": {"ready": true}},
        ]),
    ));
    let script = sync(&mut p, &mut cache);
    let hairpin: Vec<&str> = script
        .lines()
        .filter(|l| l.contains("hairpin-ips"))
        .collect();
    // a pod on another node never reaches itself through this node; one of no known node may
    assert_eq!(
        hairpin,
        ["add element inet t hairpin-ips { 10.42.0.5 . 10.42.0.5, 10.42.0.9 . 10.42.0.9 }"]
    );
    assert!(script.contains("10.42.0.7 . 8080"), "{script}");
}

#[test]
fn cluster_ip_balances_over_ready_endpoints_only() {
    let mut cache = Cache::default();
    let mut p = Proxier::new("t", config(), Nft::default());
    cache.upsert_service(&web(json!({})));
    cache.upsert_slice(&slice(
        "web",
        "web-1",
        8080,
        json!([
            ep("10.42.0.5", true, true, false, "n1"),
            ep("10.42.0.6", false, false, false, "n2"),
            ep("10.42.0.7", true, true, false, "n1"),
        ]),
    ));
    let script = sync(&mut p, &mut cache);
    let chain = rules::port_chain(
        "service",
        rules::Family::V4,
        &ServicePortName {
            service: ServiceKey::new("ns", "web"),
            port: "http".into(),
            protocol: model::Protocol::Tcp,
        },
    );
    let slots = format!("endpoint-slots-{}", super::full::slot_map(&chain));
    let expected = format!(
        "add chain inet t {chain}
add rule inet t {chain} meta l4proto tcp dnat ip to numgen random mod 2 offset 0 map @{slots}
add element inet t cluster-ips {{ 10.96.0.10 }}
add element inet t {slots} {{ 0 : 10.42.0.5 . 8080, 1 : 10.42.0.7 . 8080 }}
add element inet t hairpin-ips {{ 10.42.0.5 . 10.42.0.5, 10.42.0.7 . 10.42.0.7 }}
add element inet t masquerade-cluster-ips {{ 10.96.0.10 . tcp . 80 }}
add element inet t service-ips {{ 10.96.0.10 . tcp . 80 : goto {chain} }}
"
    );
    assert_eq!(script, expected);
    assert!(
        chain.starts_with("service-") && chain.ends_with("-ns/web/tcp/http"),
        "{chain}"
    );

    // One endpoint turns not ready: the chain's one rule takes fresh slots, the old ones
    // and the endpoint's hairpin element go.
    cache.upsert_slice(&slice(
        "web",
        "web-1",
        8080,
        json!([
            ep("10.42.0.5", true, true, false, "n1"),
            ep("10.42.0.6", false, false, false, "n2"),
            ep("10.42.0.7", false, true, true, "n1"),
        ]),
    ));
    let script = sync(&mut p, &mut cache);
    let expected = format!(
        "add chain inet t {chain}
flush chain inet t {chain}
add rule inet t {chain} meta l4proto tcp dnat ip to numgen random mod 1 offset 2 map @{slots}
delete element inet t {slots} {{ 0, 1 }}
delete element inet t hairpin-ips {{ 10.42.0.7 . 10.42.0.7 }}
add element inet t {slots} {{ 2 : 10.42.0.5 . 8080 }}
"
    );
    assert_eq!(script, expected);

    // Nothing changed: nothing to write.
    cache.upsert_service(&web(json!({})));
    assert_eq!(sync(&mut p, &mut cache), "");

    // The Service goes: its chain and elements go, in an order the kernel accepts.
    cache.remove_service(&web(json!({})));
    let script = sync(&mut p, &mut cache);
    let expected = format!(
        "delete element inet t cluster-ips {{ 10.96.0.10 }}
delete element inet t {slots} {{ 2 }}
delete element inet t hairpin-ips {{ 10.42.0.5 . 10.42.0.5 }}
delete element inet t masquerade-cluster-ips {{ 10.96.0.10 . tcp . 80 }}
delete element inet t service-ips {{ 10.96.0.10 . tcp . 80 }}
flush chain inet t {chain}
delete chain inet t {chain}
"
    );
    assert_eq!(script, expected);
}

#[test]
fn terminating_endpoints_serve_only_when_none_is_ready() {
    let mut cache = Cache::default();
    let mut p = Proxier::new("t", config(), Nft::default());
    cache.upsert_service(&web(json!({})));
    cache.upsert_slice(&slice(
        "web",
        "web-1",
        8080,
        json!([
            ep("10.42.0.5", false, true, true, "n1"),
            ep("10.42.0.6", false, false, true, "n1"),
        ]),
    ));
    let script = sync(&mut p, &mut cache);
    assert!(
        script.contains("dnat ip to numgen random mod 1 "),
        "{script}"
    );
    assert!(script.contains(" { 0 : 10.42.0.5 . 8080 }"), "{script}");
    assert!(!script.contains("10.42.0.6"), "{script}");
}

#[test]
fn no_endpoints_rejects() {
    let mut cache = Cache::default();
    let mut p = Proxier::new("t", config(), Nft::default());
    cache.upsert_service(&web(json!({"type": "NodePort", "ports": [
        {"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080, "nodePort": 30080}
    ]})));
    let script = sync(&mut p, &mut cache);
    assert_eq!(
        script,
        "add element inet t cluster-ips { 10.96.0.10 }
add element inet t no-endpoint-nodeports { tcp . 30080 : goto reject-chain }
add element inet t no-endpoint-services { 10.96.0.10 . tcp . 80 : goto reject-chain }
"
    );
}

#[test]
fn session_affinity_uses_endpoint_chains_and_sets() {
    let mut cache = Cache::default();
    let mut p = Proxier::new("t", config(), Nft::default());
    cache.upsert_service(&web(json!({"sessionAffinity": "ClientIP",
        "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 60}}})));
    cache.upsert_slice(&slice(
        "web",
        "web-1",
        8080,
        json!([ep("10.42.0.5", true, true, false, "n1")]),
    ));
    let script = sync(&mut p, &mut cache);
    let lines: Vec<&str> = script.lines().collect();
    let set = lines[0]
        .strip_prefix("add set inet t ")
        .and_then(|l| l.strip_suffix(" { type ipv4_addr ; flags dynamic,timeout ; timeout 60s ; }"))
        .unwrap_or_else(|| panic!("{script}"));
    assert!(
        set.starts_with("affinity-") && set.ends_with("-ns/web/tcp/http__10.42.0.5/8080"),
        "{set}"
    );
    assert!(
        script.contains(&format!("ip saddr @{set} goto endpoint-")),
        "{script}"
    );
    assert!(
        script.contains(&format!("update @{set} {{ ip saddr }}")),
        "{script}"
    );
    // Affinity off: the set goes after the chains that used it.
    cache.upsert_service(&web(json!({})));
    let script = sync(&mut p, &mut cache);
    assert!(
        script.ends_with(&format!("delete set inet t {set}\n")),
        "{script}"
    );
    assert!(script.contains("delete chain inet t endpoint-"), "{script}");
}

#[test]
fn external_traffic_policy_local_keeps_outside_traffic_on_this_node() {
    let mut cache = Cache::default();
    let mut p = Proxier::new("t", config(), Nft::default());
    let lb = |local: bool| {
        let mut s = web(json!({"type": "LoadBalancer",
            "externalTrafficPolicy": if local { "Local" } else { "Cluster" },
            "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080, "nodePort": 30080}]}));
        s.status =
            serde_json::from_value(json!({"loadBalancer": {"ingress": [{"ip": "192.168.0.200"}]}}))
                .unwrap();
        s
    };
    cache.upsert_service(&lb(true));
    cache.upsert_slice(&slice(
        "web",
        "web-1",
        8080,
        json!([
            ep("10.42.0.5", true, true, false, "n1"),
            ep("10.42.1.5", true, true, false, "n2")
        ]),
    ));
    let script = sync(&mut p, &mut cache);
    let name = ServicePortName {
        service: ServiceKey::new("ns", "web"),
        port: "http".into(),
        protocol: model::Protocol::Tcp,
    };
    let f = rules::Family::V4;
    let (svc, local, ext) = (
        rules::port_chain("service", f, &name),
        rules::port_chain("local", f, &name),
        rules::port_chain("external", f, &name),
    );
    for line in [
        format!(
            "add rule inet t {local} meta l4proto tcp dnat ip to numgen random mod 1 offset 0 map @endpoint-slots-{}",
            super::full::slot_map(&local)
        ),
        format!(
            "add element inet t endpoint-slots-{} {{ 0 : 10.42.0.5 . 8080 }}",
            super::full::slot_map(&local)
        ),
        format!("add rule inet t {ext} ip saddr 10.42.0.0/16 goto {svc}"),
        format!("add rule inet t {ext} fib saddr type local jump mark-for-masquerade"),
        format!("add rule inet t {ext} fib saddr type local goto {svc}"),
        format!("add rule inet t {ext} goto {local}"),
        format!(
            "add element inet t service-ips {{ 10.96.0.10 . tcp . 80 : goto {svc}, 192.168.0.200 . tcp . 80 : goto {ext} }}"
        ),
        format!("add element inet t service-nodeports {{ tcp . 30080 : goto {ext} }}"),
    ] {
        assert!(
            script.lines().any(|l| l == line),
            "missing {line} in\n{script}"
        );
    }
    assert!(
        script.contains(&format!(
            "{svc} meta l4proto tcp dnat ip to numgen random mod 2 "
        )),
        "the local chain balances over local endpoints only, the service chain over all:\n{script}"
    );
    // Cluster policy: outside traffic is masqueraded and may go anywhere.
    cache.upsert_service(&lb(false));
    let script = sync(&mut p, &mut cache);
    assert!(
        script.contains(&format!(
            "add rule inet t {ext} jump mark-for-masquerade\nadd rule inet t {ext} goto {svc}\n"
        )),
        "{script}"
    );
    assert!(
        script.contains(&format!("delete chain inet t {local}")),
        "{script}"
    );

    // No local endpoint: outside traffic is dropped, not rejected.
    cache.upsert_service(&lb(true));
    cache.upsert_slice(&slice(
        "web",
        "web-1",
        8080,
        json!([ep("10.42.1.5", true, true, false, "n2")]),
    ));
    let script = sync(&mut p, &mut cache);
    assert!(
        script.contains("add element inet t no-endpoint-nodeports { tcp . 30080 : drop }"),
        "{script}"
    );
    assert!(
        script.contains("192.168.0.200 . tcp . 80 : drop"),
        "{script}"
    );
}

#[test]
fn full_script_declares_the_table_and_replaces_it() {
    let mut cache = Cache::default();
    let p = Proxier::new("t", config(), Nft::default());
    cache.upsert_service(&web(json!({})));
    cache.upsert_slice(&slice(
        "web",
        "web-1",
        8080,
        json!([ep("10.42.0.5", true, true, false, "n1")]),
    ));
    let desired: Vec<_> = cache
        .service_keys()
        .into_iter()
        .map(|k| {
            let d = cache.desired(&k, &p.config);
            (k, d)
        })
        .collect();
    let script = p.full_script(&desired);
    assert!(
        script.starts_with("add table inet t\ndelete table inet t\ntable inet t {\n"),
        "{script}"
    );
    assert!(
        script.contains(
            "\tchain nat-output {\n\t\ttype nat hook output priority -100 ;\n\t\tjump services\n\t}"
        ),
        "{script}"
    );
    assert!(
        script.contains("add element inet t nodeport-ips { 192.168.0.10 }"),
        "{script}"
    );
    assert!(
        script.contains("add element inet t service-ips { 10.96.0.10 . tcp . 80 : goto service-"),
        "{script}"
    );
}

#[test]
fn routes_follow_the_endpoints_new_connections_go_to() {
    let mut cache = Cache::default();
    let mut p = Proxier::new("t", config(), Nft::default());
    let routes = p.routes.clone();
    let (a, b): (IpAddr, IpAddr) = ("10.42.0.5".parse().unwrap(), "10.42.0.6".parse().unwrap());
    cache.upsert_service(&web(json!({})));
    // Two Services share endpoint a.
    cache.upsert_service(&service(
        json!({"metadata": {"namespace": "ns", "name": "other"},
        "spec": {"clusterIP": "10.96.0.11", "clusterIPs": ["10.96.0.11"],
            "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080}]}}),
    ));
    cache.upsert_slice(&slice(
        "web",
        "web-1",
        8080,
        json!([
            ep("10.42.0.5", true, true, false, "n1"),
            ep("10.42.0.6", true, true, false, "n1")
        ]),
    ));
    cache.upsert_slice(&slice(
        "other",
        "other-1",
        8080,
        json!([ep("10.42.0.5", true, true, false, "n1")]),
    ));
    sync(&mut p, &mut cache);
    assert!(routes.contains(a) && routes.contains(b));
    // b terminates while a stays ready: no new connection goes to b.
    cache.upsert_slice(&slice(
        "web",
        "web-1",
        8080,
        json!([
            ep("10.42.0.5", true, true, false, "n1"),
            ep("10.42.0.6", false, true, true, "n1")
        ]),
    ));
    sync(&mut p, &mut cache);
    assert!(routes.contains(a) && !routes.contains(b));
    // a leaves web but other still sends to it.
    cache.upsert_slice(&slice("web", "web-1", 8080, json!([])));
    sync(&mut p, &mut cache);
    assert!(routes.contains(a));
    cache.remove_service(&service(
        json!({"metadata": {"namespace": "ns", "name": "other"}}),
    ));
    sync(&mut p, &mut cache);
    assert!(!routes.contains(a) && !routes.contains(b));
}
