//! What nodes need: the kubelet's serving certificate and TLS configuration, the API server's
//! TLS client configuration towards kubelets, and the node token agents join with.
//!
//! The node token has k3s's form `K10<sha256 hex of the server CA PEM>::node:<secret>`: an
//! agent that only knows the token can fetch the CA over unverified TLS and still detect a
//! man in the middle by comparing the CA's hash, then authenticate with the secret.

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, KeyPair,
    KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, SanType,
};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};

use crate::files::{PRIVATE_MODE, read_optional, write_atomic};
use crate::{LEAF_VALIDITY_DAYS, Pki, PkiError, issue_leaf, validity};

/// User name of the API server's client certificate towards kubelets (upstream's
/// `--kubelet-client-certificate`, as kubeadm names it).
pub const KUBELET_CLIENT_USER: &str = "kube-apiserver-kubelet-client";

impl Pki {
    /// Issues a serving certificate for a node's kubelet, signed by the server CA, valid for
    /// `dns` names and `ips`. Returns `(cert_pem, key_pem)`; nothing is written to disk.
    pub fn issue_serving_cert(
        &self,
        common_name: &str,
        dns: &[String],
        ips: &[IpAddr],
    ) -> Result<(String, String), PkiError> {
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, common_name);
        let leaf = issue_leaf(
            &self.server_ca,
            dn,
            serving_sans(dns, ips)?,
            ExtendedKeyUsagePurpose::ServerAuth,
        )?;
        Ok((leaf.cert_pem, leaf.key_pem))
    }

    /// The API server's identity towards kubelets (`kube-apiserver-kubelet-client`, group
    /// `system:masters`), signed by the client CA that kubelets trust.
    pub fn kubelet_client_cert(&self) -> Result<(String, String), PkiError> {
        self.issue_client_cert(KUBELET_CLIENT_USER, &[crate::ADMIN_GROUP])
    }
}

fn serving_sans(dns: &[String], ips: &[IpAddr]) -> Result<Vec<SanType>, PkiError> {
    let mut sans = Vec::with_capacity(dns.len() + ips.len());
    for name in dns {
        let ia5 = name
            .to_ascii_lowercase()
            .try_into()
            .map_err(|source| PkiError::Generate {
                what: format!("serving certificate SAN {name:?}"),
                source,
            })?;
        sans.push(SanType::DnsName(ia5));
    }
    sans.extend(ips.iter().map(|ip| SanType::IpAddress(*ip)));
    Ok(sans)
}

/// A self-signed serving certificate (as a kubelet makes when no CA signs one for it).
/// Returns `(cert_pem, key_pem)`.
pub fn self_signed_serving_cert(
    common_name: &str,
    dns: &[String],
    ips: &[IpAddr],
) -> Result<(String, String), PkiError> {
    let what = || format!("self-signed serving certificate for {common_name:?}");
    let key =
        KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(|source| PkiError::Generate {
            what: what(),
            source,
        })?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.subject_alt_names = serving_sans(dns, ips)?;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    validity(&mut params, LEAF_VALIDITY_DAYS);
    let cert = params
        .self_signed(&key)
        .map_err(|source| PkiError::Generate {
            what: what(),
            source,
        })?;
    Ok((cert.pem(), key.serialize_pem()))
}

fn parse_certs(pem: &str, what: &str) -> Result<Vec<CertificateDer<'static>>, PkiError> {
    let certs: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|err| PkiError::Invalid {
            path: what.into(),
            reason: format!("reading pem: {err}"),
        })?;
    if certs.is_empty() {
        return Err(PkiError::Invalid {
            path: what.into(),
            reason: "no certificate in pem".into(),
        });
    }
    Ok(certs)
}

fn parse_key(pem: &str, what: &str) -> Result<PrivateKeyDer<'static>, PkiError> {
    rustls_pemfile::private_key(&mut pem.as_bytes())
        .map_err(|err| PkiError::Invalid {
            path: what.into(),
            reason: format!("reading pem: {err}"),
        })?
        .ok_or_else(|| PkiError::Invalid {
            path: what.into(),
            reason: "no private key in pem".into(),
        })
}

/// The kubelet's TLS configuration: serves `cert_pem`/`key_pem` and requires a client
/// certificate signed by `client_ca_pem` (the cluster's client CA). ALPN `http/1.1` only:
/// exec, attach and port-forward upgrade HTTP/1.1 connections.
pub fn kubelet_server_config(
    cert_pem: &str,
    key_pem: &str,
    client_ca_pem: &str,
) -> Result<Arc<ServerConfig>, PkiError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    for ca in parse_certs(client_ca_pem, "client CA")? {
        roots.add(ca)?;
    }
    let verifier =
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone()).build()?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            parse_certs(cert_pem, "kubelet serving certificate")?,
            parse_key(key_pem, "kubelet serving key")?,
        )?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The API server's TLS configuration towards kubelets: presents `cert_pem`/`key_pem` and,
/// like upstream without `--kubelet-certificate-authority`, does not verify the kubelet's
/// serving certificate (agents make their own, self-signed). Signatures are still checked,
/// so the handshake proves the kubelet holds the key of the certificate it sent.
pub fn kubelet_client_config(cert_pem: &str, key_pem: &str) -> Result<Arc<ClientConfig>, PkiError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyServerCert(provider)))
        .with_client_auth_cert(
            parse_certs(cert_pem, "kubelet client certificate")?,
            parse_key(key_pem, "kubelet client key")?,
        )?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A client TLS configuration that trusts any server certificate: only for fetching the CA
/// whose hash the node token then checks (see [`NodeToken`]).
pub fn insecure_client_config() -> Result<Arc<ClientConfig>, PkiError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyServerCert(provider)))
        .with_no_client_auth();
    Ok(Arc::new(config))
}

#[derive(Debug)]
struct AnyServerCert(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyServerCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Lower-case hex SHA-256 of `data`.
pub fn sha256_hex(data: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, data);
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NodeTokenError {
    #[error("invalid node token: expected K10<ca-hash>::node:<secret>")]
    Format,
    #[error(
        "the server's CA certificate does not match the node token (CA hash {actual}, token expects {expected})"
    )]
    CaMismatch { expected: String, actual: String },
}

/// A node token: `K10<ca_hash>::node:<secret>`.
#[derive(Clone, PartialEq, Eq)]
pub struct NodeToken {
    /// SHA-256 hex of the server CA PEM.
    pub ca_hash: String,
    /// What the agent authenticates with.
    pub secret: String,
}

impl std::fmt::Debug for NodeToken {
    // Never print the secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeToken")
            .field("ca_hash", &self.ca_hash)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Display for NodeToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "K10{}::node:{}", self.ca_hash, self.secret)
    }
}

impl std::str::FromStr for NodeToken {
    type Err = NodeTokenError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let rest = s.trim().strip_prefix("K10").ok_or(NodeTokenError::Format)?;
        let (hash, creds) = rest.split_once("::").ok_or(NodeTokenError::Format)?;
        let secret = creds.strip_prefix("node:").ok_or(NodeTokenError::Format)?;
        let hex = |c: char| c.is_ascii_digit() || ('a'..='f').contains(&c);
        if hash.len() != 64 || !hash.chars().all(hex) || secret.is_empty() {
            return Err(NodeTokenError::Format);
        }
        Ok(NodeToken {
            ca_hash: hash.to_string(),
            secret: secret.to_string(),
        })
    }
}

impl NodeToken {
    /// Checks that `ca_pem` is the CA the token was made for.
    pub fn verify_ca(&self, ca_pem: &str) -> Result<(), NodeTokenError> {
        let actual = sha256_hex(ca_pem.as_bytes());
        if actual == self.ca_hash {
            Ok(())
        } else {
            Err(NodeTokenError::CaMismatch {
                expected: self.ca_hash.clone(),
                actual,
            })
        }
    }
}

/// The node token kept at `path` (mode 0600): its secret is kept across restarts; the file is
/// (re)written when missing, unreadable as a token, or made for another CA.
pub fn load_or_create_node_token(path: &Path, ca_pem: &str) -> Result<NodeToken, PkiError> {
    let ca_hash = sha256_hex(ca_pem.as_bytes());
    let existing = read_optional(path)?.and_then(|text| text.parse::<NodeToken>().ok());
    if let Some(token) = &existing
        && token.ca_hash == ca_hash
    {
        return Ok(token.clone());
    }
    let secret = match existing {
        Some(token) => token.secret,
        None => random_secret(path)?,
    };
    let token = NodeToken { ca_hash, secret };
    write_atomic(path, format!("{token}\n").as_bytes(), PRIVATE_MODE)?;
    Ok(token)
}

/// 32 random hex characters (128 bits).
fn random_secret(path: &Path) -> Result<String, PkiError> {
    use ring::rand::SecureRandom as _;
    let mut bytes = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| PkiError::io(path, std::io::Error::other("no system randomness")))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn node_token_round_trips_and_checks_the_ca() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node-token");
        let token = load_or_create_node_token(&path, "CA ONE").unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("K10"), "{text}");
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let parsed: NodeToken = text.parse().unwrap();
        assert_eq!(parsed, token);
        assert_eq!(parsed.secret.len(), 32);
        parsed.verify_ca("CA ONE").unwrap();
        assert!(matches!(
            parsed.verify_ca("CA TWO"),
            Err(NodeTokenError::CaMismatch { .. })
        ));
        // Kept across restarts; a new CA keeps the secret but changes the hash.
        assert_eq!(load_or_create_node_token(&path, "CA ONE").unwrap(), token);
        let rotated = load_or_create_node_token(&path, "CA TWO").unwrap();
        assert_eq!(rotated.secret, token.secret);
        assert_ne!(rotated.ca_hash, token.ca_hash);
        for bad in [
            "",
            "K10abc::node:x",
            "nope",
            &format!("K10{}::node:", token.ca_hash),
        ] {
            assert_eq!(
                bad.parse::<NodeToken>(),
                Err(NodeTokenError::Format),
                "{bad}"
            );
        }
    }

    #[test]
    fn sha256_matches_a_known_vector() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    /// A kubelet server config accepts the API server's kubelet-client certificate and
    /// refuses a client without one; the client config accepts a self-signed kubelet.
    #[tokio::test]
    async fn kubelet_tls_requires_the_cluster_client_ca() {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::load_or_create(dir.path(), &crate::PkiOptions::default()).unwrap();
        let (cert, key) = self_signed_serving_cert(
            "node-a",
            &["node-a".into()],
            &["127.0.0.1".parse().unwrap()],
        )
        .unwrap();
        let server = kubelet_server_config(&cert, &key, pki.client_ca_pem()).unwrap();
        let (client_cert, client_key) = pki.kubelet_client_cert().unwrap();
        let good = kubelet_client_config(&client_cert, &client_key).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(server);
        let accepted = tokio::spawn(async move {
            let mut results = Vec::new();
            for _ in 0..2 {
                let (tcp, _) = listener.accept().await.unwrap();
                let result = acceptor.accept(tcp).await.map(|tls| {
                    let certs = tls.get_ref().1.peer_certificates().unwrap();
                    crate::identity_from_cert(certs[0].as_ref()).unwrap().0
                });
                results.push(result.map_err(|e| e.to_string()));
            }
            results
        });
        let name = ServerName::try_from("127.0.0.1").unwrap();
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        tokio_rustls::TlsConnector::from(good)
            .connect(name.clone(), tcp)
            .await
            .expect("handshake with the kubelet-client certificate");
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let anonymous = insecure_client_config().unwrap();
        // TLS 1.3 reports the refusal on the server side; the client may see it only later.
        let _ = tokio_rustls::TlsConnector::from(anonymous)
            .connect(name, tcp)
            .await;
        let results = accepted.await.unwrap();
        assert_eq!(results[0].as_deref(), Ok(KUBELET_CLIENT_USER));
        assert!(results[1].is_err(), "{results:?}");
    }
}
