//! `dns::run` against a fake API server (a function behind `kube::Client`): the zone comes from
//! the listed Services and EndpointSlices and is served on loopback.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use hickory_proto::op::{Message, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use kube::client::Body;
use serde_json::json;
use tokio::net::UdpSocket;

fn list(kind: &str, api_version: &str, items: serde_json::Value) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "kind": kind, "apiVersion": api_version,
        "metadata": {"resourceVersion": "7"},
        "items": items,
    }))
    .unwrap()
}

async fn fake_api(
    req: http::Request<Body>,
) -> Result<http::Response<Body>, std::convert::Infallible> {
    let uri = req.uri().to_string();
    if uri.contains("watch=true") {
        // watches stay open without events until the test ends
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
    let body = if uri.starts_with("/api/v1/services") {
        list(
            "ServiceList",
            "v1",
            json!([
                {"metadata": {"name": "web", "namespace": "default", "resourceVersion": "5"},
                 "spec": {"clusterIP": "10.96.0.10", "ports": [{"name": "http", "port": 80}]}},
                {"metadata": {"name": "db", "namespace": "prod", "resourceVersion": "6"},
                 "spec": {"clusterIP": "None", "ports": [{"name": "pg", "port": 5432}]}},
            ]),
        )
    } else if uri.starts_with("/apis/discovery.k8s.io/v1/endpointslices") {
        list(
            "EndpointSliceList",
            "discovery.k8s.io/v1",
            json!([
                {"metadata": {"name": "db-x", "namespace": "prod", "resourceVersion": "7",
                    "labels": {"kubernetes.io/service-name": "db"}},
                 "addressType": "IPv4",
                 "endpoints": [{"addresses": ["10.244.0.9"], "hostname": "db-0"}],
                 "ports": [{"name": "pg", "port": 5432}]},
            ]),
        )
    } else {
        let resp = http::Response::builder()
            .status(404)
            .body(Body::from(b"{}".to_vec()))
            .unwrap();
        return Ok(resp);
    };
    Ok(http::Response::builder()
        .status(200)
        .header("content-type", "application/json")
        .body(Body::from(body))
        .unwrap())
}

async fn ask(server: SocketAddr, name: &str) -> Option<Message> {
    let s = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    s.connect(server).await.unwrap();
    let mut q = Message::query();
    q.queries
        .push(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
    s.send(&q.to_vec().unwrap()).await.ok()?;
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_millis(200), s.recv(&mut buf))
        .await
        .ok()?
        .ok()?;
    Message::from_vec(&buf[..n]).ok()
}

#[tokio::test]
async fn run_serves_the_zone_from_the_api() {
    let client = kube::Client::new(tower::service_fn(fake_api), "default");
    // a free port for UDP and TCP
    let port = {
        let probe = std::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        probe.local_addr().unwrap().port()
    };
    let listen = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let config = dns::DnsConfig {
        listen: vec![listen],
        upstream: Vec::new(),
        ..Default::default()
    };
    let server = tokio::spawn(dns::run(client, config));
    struct Abort(tokio::task::JoinHandle<anyhow::Result<()>>);
    impl Drop for Abort {
        fn drop(&mut self) {
            self.0.abort();
        }
    }
    let server = Abort(server);

    let mut reply = None;
    for _ in 0..50 {
        assert!(!server.0.is_finished(), "dns::run ended early");
        if let Some(m) = ask(listen, "web.default.svc.cluster.local.").await {
            reply = Some(m);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let m = reply.expect("the server answers within 5 s");
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(matches!(&m.answers[0].data, RData::A(a) if a.0 == Ipv4Addr::new(10, 96, 0, 10)));

    let m = ask(listen, "db-0.db.prod.svc.cluster.local.")
        .await
        .unwrap();
    assert!(matches!(&m.answers[0].data, RData::A(a) if a.0 == Ipv4Addr::new(10, 244, 0, 9)));
    // nothing upstream: SERVFAIL for the rest
    let m = ask(listen, "example.com.").await.unwrap();
    assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
}
