//! tcpSocket probes: success when a TCP connection opens within the timeout.

use std::time::Duration;

use tokio::net::TcpStream;

use super::{Outcome, describe_io_error, join_host_port};

pub(super) async fn probe(host: &str, port: u16, timeout: Duration) -> Outcome {
    let address = join_host_port(host, port);
    match tokio::time::timeout(timeout, TcpStream::connect((host, port))).await {
        // The connection is closed at once: opening it was the check.
        Ok(Ok(_stream)) => Outcome::Success(String::new()),
        Ok(Err(e)) => Outcome::Failure(format!("dial tcp {address}: {}", describe_io_error(&e))),
        Err(_) => Outcome::Failure(format!("dial tcp {address}: i/o timeout")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn open_port_succeeds() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let outcome = probe("127.0.0.1", port, Duration::from_secs(1)).await;
        assert_eq!(outcome, Outcome::Success(String::new()));
    }

    #[tokio::test]
    async fn closed_port_fails_as_upstream_words_it() {
        // Bind then drop: the port is (almost certainly) closed afterwards.
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let outcome = probe("127.0.0.1", port, Duration::from_secs(1)).await;
        assert_eq!(
            outcome,
            Outcome::Failure(format!(
                "dial tcp 127.0.0.1:{port}: connect: connection refused"
            ))
        );
    }
}
