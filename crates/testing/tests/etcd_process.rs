//! Integration test: needs Debian's `etcd-server` (fails without it unless RKUBE_SKIP_ETCD=1).

use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use testing::EtcdProcess;

fn alive(pid: u32) -> bool {
    // A reaped process has no /proc entry; a zombie would still show "Z".
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|stat| stat.split_whitespace().nth(2).is_none_or(|s| s != "Z"))
}

fn accepts(endpoint: &str) -> bool {
    let addr = endpoint.trim_start_matches("http://");
    TcpStream::connect_timeout(&addr.parse().unwrap(), Duration::from_millis(500)).is_ok()
}

#[test]
fn start_kill_restart_drop() {
    let Some(mut etcd) = EtcdProcess::start_for_test() else {
        return;
    };
    let endpoint = etcd.endpoint();
    assert!(endpoint.starts_with("http://127.0.0.1:"), "{endpoint}");
    assert!(accepts(&endpoint));
    let first = etcd.pid().expect("etcd runs after start");
    assert!(alive(first));
    assert!(
        etcd.data_dir().join("member").is_dir(),
        "etcd wrote its data dir"
    );

    etcd.kill_9().unwrap();
    assert!(etcd.pid().is_none());
    assert!(!alive(first), "pid {first} still alive after kill_9");
    assert!(!accepts(&endpoint), "nothing listens after kill_9");

    etcd.restart().unwrap();
    assert_eq!(etcd.endpoint(), endpoint, "restart keeps the ports");
    let second = etcd.pid().expect("etcd runs after restart");
    assert_ne!(first, second);
    assert!(accepts(&endpoint));

    // Restarting a running etcd replaces the process.
    etcd.restart().unwrap();
    let third = etcd.pid().unwrap();
    assert!(!alive(second));

    let dir = etcd.data_dir();
    drop(etcd);
    let deadline = Instant::now() + Duration::from_secs(5);
    while alive(third) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!alive(third), "drop kills etcd");
    assert!(!Path::new(&dir).exists(), "drop removes the data dir");
}

#[test]
fn two_instances_do_not_collide() {
    let (Some(a), Some(b)) = (EtcdProcess::start_for_test(), EtcdProcess::start_for_test()) else {
        return;
    };
    assert_ne!(a.endpoint(), b.endpoint());
    assert_ne!(a.data_dir(), b.data_dir());
}
