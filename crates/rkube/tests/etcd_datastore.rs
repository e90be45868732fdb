//! `rkube server --datastore etcd://...` against a real etcd: kubectl works, and state
//! survives SIGKILL of both the server and etcd.

mod support;

#[test]
fn etcd_datastore_survives_kill_9() {
    let Some(mut etcd) = testing::EtcdProcess::start_for_test() else {
        return;
    };
    let datastore = format!("etcd://127.0.0.1:{}", etcd.client_port());
    let mut server = support::Server::start_with(&["--datastore", &datastore]);
    server.kubectl_ok(&["create", "namespace", "durable"]);
    for i in 0..10 {
        server.kubectl_ok(&[
            "create",
            "configmap",
            &format!("cm-{i}"),
            "-n",
            "durable",
            &format!("--from-literal=i={i}"),
        ]);
    }
    server.kubectl_ok(&[
        "create",
        "deployment",
        "web",
        "-n",
        "durable",
        "--image=nginx:1.14.2",
    ]);
    server.kill_9();
    etcd.kill_9().unwrap();
    etcd.restart().unwrap();
    server.restart();
    let names = server.kubectl_ok(&["get", "configmaps", "-n", "durable", "-o", "name"]);
    for i in 0..10 {
        assert!(
            names.contains(&format!("configmap/cm-{i}")),
            "cm-{i} lost:\n{names}"
        );
    }
    let deploy = server.get_json(&["deployment", "web", "-n", "durable"]);
    assert_eq!(
        deploy["spec"]["template"]["spec"]["containers"][0]["image"],
        "nginx:1.14.2"
    );
    // Writes keep working after the restart, and a stale update still conflicts.
    server.kubectl_ok(&[
        "scale",
        "deployment",
        "web",
        "-n",
        "durable",
        "--replicas=4",
    ]);
    assert_eq!(
        server.get_json(&["deployment", "web", "-n", "durable"])["spec"]["replicas"],
        4
    );
}
