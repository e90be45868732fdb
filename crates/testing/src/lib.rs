//! Support for tests and benchmarks: real helper processes on loopback.
//!
//! Architecture Invariant: only tests and the benchmark command (`rkube bench`, which starts
//! the reference etcd) use this crate; the server, agent and controllers never do.

mod etcd;

pub use etcd::{ETCD_BINARY, EtcdProcess};

use std::net::{Ipv4Addr, TcpListener};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "etcd is not installed at {path}: install it with `apt-get install etcd-server` \
         (or set RKUBE_SKIP_ETCD=1 to skip tests that need it)"
    )]
    EtcdNotInstalled { path: String },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("etcd at {endpoint} did not become healthy within {seconds} s: {reason}\n{log}")]
    EtcdNotReady {
        endpoint: String,
        seconds: u64,
        reason: String,
        /// The last lines etcd wrote, to tell why.
        log: String,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Whether tests that need etcd may skip when it is missing (`RKUBE_SKIP_ETCD=1`).
/// Without it a missing etcd fails the test, so a machine without it cannot pass silently.
pub fn skip_etcd() -> bool {
    std::env::var("RKUBE_SKIP_ETCD").is_ok_and(|v| v == "1")
}

/// A TCP port on 127.0.0.1 that was free a moment ago (the kernel picked it for a listener
/// that is closed again before returning). Another process may still take it in between.
pub fn free_port() -> u16 {
    free_ports::<1>()[0]
}

/// `N` distinct free ports: every listener stays open until all are chosen, so the kernel
/// cannot hand out the same port twice.
pub(crate) fn free_ports<const N: usize>() -> [u16; N] {
    let listeners: Vec<TcpListener> = (0..N)
        .map(|_| TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0"))
        .collect();
    let mut ports = [0; N];
    for (port, listener) in ports.iter_mut().zip(&listeners) {
        *port = listener
            .local_addr()
            .expect("local address of listener")
            .port();
    }
    ports
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_port_can_be_bound() {
        let port = free_port();
        assert_ne!(port, 0);
        TcpListener::bind((Ipv4Addr::LOCALHOST, port)).expect("port reported free is bindable");
    }

    #[test]
    fn free_ports_are_distinct() {
        let [a, b, c] = free_ports::<3>();
        assert!(a != b && b != c && a != c, "{a} {b} {c}");
    }
}
