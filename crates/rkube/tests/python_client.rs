//! The official Python client (`pip install kubernetes`) against a started rkube.

mod support;

#[test]
fn official_python_client_creates_lists_watches_deletes() {
    let server = support::Server::start();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/client_test.py");
    let out = std::process::Command::new("python3")
        .arg(script)
        .arg(server.kubeconfig())
        .output()
        .expect("run python3 (scripts/install-deps.sh installs the client)");
    assert!(
        out.status.success(),
        "python client test failed:\nstdout: {}\nstderr: {}\nserver log:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        support::tail(&server.log(), 40)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("python client: ok"));
}
