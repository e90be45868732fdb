//! The cluster's public key infrastructure: CAs, the API serving certificate, client
//! certificates, the rustls server configuration and kubeconfig files.
//!
//! Like k3s, there are two CAs, kept in the TLS directory (e.g. `<data-dir>/tls/`):
//! - `server-ca.crt/.key` signs the API serving certificate; clients (kubeconfigs) trust it.
//! - `client-ca.crt/.key` signs client certificates; the API server trusts it to authenticate
//!   users (CN = user name, O = groups). Keeping it apart means a stolen serving key or a
//!   trust bundle handed to clients never lets anyone mint user identities, and either CA can
//!   be rotated on its own.
//!
//! Leaf certificates: `serving-kube-apiserver.crt/.key` and `client-admin.crt/.key`
//! (`CN=system:admin`, `O=system:masters`). Everything is ECDSA P-256. On later starts all is
//! reused; a leaf is re-issued (with a fresh key, by the same CA) only when it is missing,
//! does not match its key, was not signed by the current CA, expires within 90 days, or (the
//! serving certificate) lacks a requested SAN.
//!
//! **Architecture Invariant:** this crate does no network IO and installs no process-wide
//! rustls crypto provider; it always passes ring explicitly.

mod files;
mod kubeconfig;
mod node;

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use time::OffsetDateTime;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::FromDer;

use files::{PRIVATE_MODE, PUBLIC_MODE, ensure_private_dir, read_optional, write_atomic};
pub use kubeconfig::{kubeconfig_yaml, kubeconfig_yaml_with_token, write_kubeconfig};
pub use node::{
    KUBELET_CLIENT_USER, NodeToken, NodeTokenError, insecure_client_config, kubelet_client_config,
    kubelet_server_config, load_or_create_node_token, self_signed_serving_cert, sha256_hex,
};

/// File stem of the CA that signs serving certificates.
pub const SERVER_CA: &str = "server-ca";
/// File stem of the CA that signs client certificates.
pub const CLIENT_CA: &str = "client-ca";
/// File stem of the API server's serving certificate.
pub const SERVING_CERT: &str = "serving-kube-apiserver";
/// File stem of the admin client certificate.
pub const ADMIN_CERT: &str = "client-admin";

/// User name of the admin client certificate.
pub const ADMIN_USER: &str = "system:admin";
/// Group of the admin client certificate; RBAC binds it to cluster-admin.
pub const ADMIN_GROUP: &str = "system:masters";

const CA_VALIDITY_DAYS: i64 = 3650;
pub(crate) const LEAF_VALIDITY_DAYS: i64 = 365;
/// A leaf that expires sooner than this is re-issued at start (k3s uses the same margin).
const RENEW_BEFORE_DAYS: i64 = 90;
/// Backdating tolerates clocks of other machines that run slightly behind ours.
const BACKDATE_MINUTES: i64 = 5;

/// Host names and addresses that the API serving certificate must cover, on top of the
/// built-in ones (`localhost`, `kubernetes`, `kubernetes.default`, `kubernetes.default.svc`,
/// `kubernetes.default.svc.cluster.local`, `127.0.0.1`, `::1`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PkiOptions {
    /// Extra DNS names (an entry that parses as an IP address is taken as one).
    pub sans: Vec<String>,
    /// Extra IP addresses: the host's addresses and the first IP of the service CIDR.
    pub ips: Vec<IpAddr>,
}

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {reason}", path.display())]
    Invalid { path: PathBuf, reason: String },
    #[error("generating {what}: {source}")]
    Generate { what: String, source: rcgen::Error },
    #[error("building tls server config: {0}")]
    Tls(#[from] rustls::Error),
    #[error("building client certificate verifier: {0}")]
    ClientVerifier(#[from] rustls::server::VerifierBuilderError),
    #[error(
        "client certificate for {common_name:?}: at most 2 organizations are supported, got {count}"
    )]
    TooManyOrganizations { common_name: String, count: usize },
}

impl PkiError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        PkiError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    fn invalid(path: &Path, reason: impl Into<String>) -> Self {
        PkiError::Invalid {
            path: path.to_path_buf(),
            reason: reason.into(),
        }
    }

    fn generate(what: impl Into<String>) -> impl FnOnce(rcgen::Error) -> Self {
        let what = what.into();
        move |source| PkiError::Generate { what, source }
    }
}

/// A CA: its certificate and signing key.
struct Ca {
    cert_pem: String,
    cert_der: CertificateDer<'static>,
    key: KeyPair,
}

impl Ca {
    fn issuer(&self) -> Result<Issuer<'_, &KeyPair>, rcgen::Error> {
        Issuer::from_ca_cert_der(&self.cert_der, &self.key)
    }
}

/// A leaf certificate and its private key, as PEM.
struct Leaf {
    cert_pem: String,
    key_pem: String,
    cert_der: CertificateDer<'static>,
}

/// The loaded PKI of one server. Cheap to share behind an `Arc`; all methods take `&self`.
pub struct Pki {
    dir: PathBuf,
    server_ca: Ca,
    client_ca: Ca,
    serving: Leaf,
    admin: Leaf,
}

impl std::fmt::Debug for Pki {
    // Never print keys.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pki")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl Pki {
    /// Loads the PKI kept in `dir`, creating whatever is missing, and re-issues leaf
    /// certificates that no longer fit (see the crate docs).
    pub fn load_or_create(dir: &Path, opts: &PkiOptions) -> Result<Pki, PkiError> {
        ensure_private_dir(dir)?;
        let server_ca = load_or_create_ca(dir, SERVER_CA, "rkube-server-ca")?;
        let client_ca = load_or_create_ca(dir, CLIENT_CA, "rkube-client-ca")?;

        let sans = Sans::from_options(opts);
        let serving = load_or_issue_leaf(dir, SERVING_CERT, &server_ca, Some(&sans), || {
            let mut dn = DistinguishedName::new();
            dn.push(DnType::CommonName, "kube-apiserver");
            issue_leaf(
                &server_ca,
                dn,
                sans.to_rcgen()?,
                ExtendedKeyUsagePurpose::ServerAuth,
            )
        })?;
        let admin = load_or_issue_leaf(dir, ADMIN_CERT, &client_ca, None, || {
            issue_leaf(
                &client_ca,
                client_dn(ADMIN_USER, &[ADMIN_GROUP])?,
                Vec::new(),
                ExtendedKeyUsagePurpose::ClientAuth,
            )
        })?;
        Ok(Pki {
            dir: dir.to_path_buf(),
            server_ca,
            client_ca,
            serving,
            admin,
        })
    }

    /// The directory the PKI is kept in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The server CA certificate (PEM): what clients trust to reach the API server.
    pub fn ca_pem(&self) -> &str {
        &self.server_ca.cert_pem
    }

    /// The client CA certificate (PEM): what the API server trusts to authenticate users.
    pub fn client_ca_pem(&self) -> &str {
        &self.client_ca.cert_pem
    }

    /// The API serving certificate (PEM).
    pub fn serving_cert_pem(&self) -> &str {
        &self.serving.cert_pem
    }

    /// The admin client certificate and its key (PEM).
    pub fn admin_credentials(&self) -> (&str, &str) {
        (&self.admin.cert_pem, &self.admin.key_pem)
    }

    /// The rustls configuration of the API server: TLS 1.2 and 1.3, ALPN `h2` then
    /// `http/1.1`, client certificates optional but, when sent, verified against the client
    /// CA (the peer certificate then names the user, see [`identity_from_cert`]).
    pub fn server_config(&self) -> Result<Arc<ServerConfig>, PkiError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = RootCertStore::empty();
        roots.add(self.client_ca.cert_der.clone())?;
        let verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .allow_unauthenticated()
                .build()?;
        let key_path = leaf_path(&self.dir, SERVING_CERT, "key");
        let key: PrivateKeyDer<'static> =
            rustls_pemfile::private_key(&mut self.serving.key_pem.as_bytes())
                .map_err(|err| PkiError::invalid(&key_path, format!("reading pem: {err}")))?
                .ok_or_else(|| PkiError::invalid(&key_path, "no private key in file"))?;
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
            .with_client_cert_verifier(verifier)
            .with_single_cert(vec![self.serving.cert_der.clone()], key)?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }

    /// Issues a client certificate (1 year) signed by the client CA for user `common_name`
    /// in groups `organizations` (at most 2: rcgen keeps one value per attribute type).
    /// Returns `(cert_pem, key_pem)`; nothing is written to disk.
    pub fn issue_client_cert(
        &self,
        common_name: &str,
        organizations: &[&str],
    ) -> Result<(String, String), PkiError> {
        let leaf = issue_leaf(
            &self.client_ca,
            client_dn(common_name, organizations)?,
            Vec::new(),
            ExtendedKeyUsagePurpose::ClientAuth,
        )?;
        Ok((leaf.cert_pem, leaf.key_pem))
    }

    /// The admin kubeconfig (k3s layout, everything named `default`) for `server_url`.
    pub fn admin_kubeconfig_yaml(&self, server_url: &str) -> String {
        kubeconfig_yaml(
            server_url,
            self.ca_pem(),
            &self.admin.cert_pem,
            &self.admin.key_pem,
        )
    }

    /// Writes the admin kubeconfig to `path` atomically, mode 0600.
    pub fn write_admin_kubeconfig(&self, path: &Path, server_url: &str) -> Result<(), PkiError> {
        write_kubeconfig(path, &self.admin_kubeconfig_yaml(server_url))
    }
}

/// The user (CN) and groups (O) a client certificate names, as the API server's x509
/// authenticator reads them. `None` if the DER does not parse or has no CN.
pub fn identity_from_cert(der: &[u8]) -> Option<(String, Vec<String>)> {
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    let subject = cert.subject();
    let user = subject
        .iter_common_name()
        .next()?
        .as_str()
        .ok()?
        .to_string();
    let groups = subject
        .iter_organization()
        .filter_map(|attr| attr.as_str().ok().map(str::to_string))
        .collect();
    Some((user, groups))
}

/// Builds a subject `O=<org>..., CN=<common_name>` (Go's attribute order).
fn client_dn(common_name: &str, organizations: &[&str]) -> Result<DistinguishedName, PkiError> {
    let mut unique: Vec<&str> = Vec::new();
    for org in organizations {
        if !unique.contains(org) {
            unique.push(org);
        }
    }
    // rcgen's DistinguishedName holds one value per attribute type; a custom type with the
    // organizationName OID (2.5.4.10) is encoded identically and gives room for a second.
    const ORGANIZATION_OID: [u64; 4] = [2, 5, 4, 10];
    let mut dn = DistinguishedName::new();
    match unique.as_slice() {
        [] => {}
        [one] => dn.push(DnType::OrganizationName, *one),
        [one, two] => {
            dn.push(DnType::OrganizationName, *one);
            dn.push(DnType::CustomDnType(ORGANIZATION_OID.to_vec()), *two);
        }
        more => {
            return Err(PkiError::TooManyOrganizations {
                common_name: common_name.to_string(),
                count: more.len(),
            });
        }
    }
    dn.push(DnType::CommonName, common_name);
    Ok(dn)
}

/// The SANs the serving certificate must carry.
#[derive(Debug)]
struct Sans {
    dns: BTreeSet<String>,
    ips: BTreeSet<IpAddr>,
}

impl Sans {
    fn from_options(opts: &PkiOptions) -> Sans {
        let mut dns: BTreeSet<String> = [
            "localhost",
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
        ]
        .into_iter()
        .map(str::to_string)
        .collect();
        let mut ips: BTreeSet<IpAddr> = [
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(Ipv6Addr::LOCALHOST),
        ]
        .into();
        for san in &opts.sans {
            match san.parse::<IpAddr>() {
                Ok(ip) => ips.insert(ip),
                // DNS names compare case-insensitively.
                Err(_) => dns.insert(san.to_ascii_lowercase()),
            };
        }
        ips.extend(opts.ips.iter().copied());
        Sans { dns, ips }
    }

    fn to_rcgen(&self) -> Result<Vec<SanType>, PkiError> {
        let mut out = Vec::with_capacity(self.dns.len() + self.ips.len());
        for name in &self.dns {
            let ia5 = name.clone().try_into().map_err(PkiError::generate(format!(
                "serving certificate SAN {name:?}"
            )))?;
            out.push(SanType::DnsName(ia5));
        }
        out.extend(self.ips.iter().map(|ip| SanType::IpAddress(*ip)));
        Ok(out)
    }

    /// The wanted SANs that `cert` lacks, for the log line that explains a re-issue.
    fn missing_from(&self, cert: &X509Certificate<'_>) -> Vec<String> {
        let mut have_dns = BTreeSet::new();
        let mut have_ips = BTreeSet::new();
        if let Ok(Some(ext)) = cert.subject_alternative_name() {
            for name in &ext.value.general_names {
                match name {
                    GeneralName::DNSName(dns) => {
                        have_dns.insert(dns.to_ascii_lowercase());
                    }
                    GeneralName::IPAddress(bytes) => {
                        if let Some(ip) = ip_from_bytes(bytes) {
                            have_ips.insert(ip);
                        }
                    }
                    _ => {}
                }
            }
        }
        let dns = self.dns.difference(&have_dns).cloned();
        let ips = self.ips.difference(&have_ips).map(IpAddr::to_string);
        dns.chain(ips).collect()
    }
}

fn ip_from_bytes(bytes: &[u8]) -> Option<IpAddr> {
    match bytes.len() {
        4 => Some(IpAddr::from(<[u8; 4]>::try_from(bytes).ok()?)),
        16 => Some(IpAddr::from(<[u8; 16]>::try_from(bytes).ok()?)),
        _ => None,
    }
}

fn leaf_path(dir: &Path, stem: &str, ext: &str) -> PathBuf {
    dir.join(format!("{stem}.{ext}"))
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

pub(crate) fn validity(params: &mut CertificateParams, days: i64) {
    let now = OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::minutes(BACKDATE_MINUTES);
    params.not_after = now + time::Duration::days(days);
}

/// First PEM certificate of `pem`, as DER.
fn first_cert(pem: &str, path: &Path) -> Result<CertificateDer<'static>, PkiError> {
    rustls_pemfile::certs(&mut pem.as_bytes())
        .next()
        .ok_or_else(|| PkiError::invalid(path, "no certificate in file"))?
        .map_err(|err| PkiError::invalid(path, format!("reading pem: {err}")))
}

/// Whether `key` is the private half of `cert`'s public key.
fn key_matches(cert: &X509Certificate<'_>, key: &KeyPair) -> bool {
    cert.public_key().subject_public_key.data.as_ref() == key.public_key_raw()
}

fn load_or_create_ca(dir: &Path, stem: &str, cn_prefix: &str) -> Result<Ca, PkiError> {
    let cert_path = leaf_path(dir, stem, "crt");
    let key_path = leaf_path(dir, stem, "key");
    match (read_optional(&cert_path)?, read_optional(&key_path)?) {
        (Some(cert_pem), Some(key_pem)) => {
            let cert_der = first_cert(&cert_pem, &cert_path)?;
            let key = KeyPair::from_pem(&key_pem).map_err(|err| {
                PkiError::invalid(&key_path, format!("reading private key: {err}"))
            })?;
            let (_, cert) = X509Certificate::from_der(&cert_der).map_err(|err| {
                PkiError::invalid(&cert_path, format!("parsing certificate: {err}"))
            })?;
            if !key_matches(&cert, &key) {
                return Err(PkiError::invalid(
                    &key_path,
                    format!("private key does not match {}", cert_path.display()),
                ));
            }
            Ok(Ca {
                cert_pem,
                cert_der,
                key,
            })
        }
        (None, None) => {
            let common_name = format!("{cn_prefix}@{}", unix_now());
            let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
                .map_err(PkiError::generate(format!("{stem} key")))?;
            let mut params = CertificateParams::default();
            params.distinguished_name = DistinguishedName::new();
            params
                .distinguished_name
                .push(DnType::CommonName, common_name.as_str());
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.key_usages = vec![
                KeyUsagePurpose::DigitalSignature,
                KeyUsagePurpose::KeyCertSign,
                KeyUsagePurpose::CrlSign,
            ];
            validity(&mut params, CA_VALIDITY_DAYS);
            let cert = params.self_signed(&key).map_err(PkiError::generate(stem))?;
            // Key first: a crash in between leaves a key without a certificate, which is
            // reported instead of silently replacing a CA that others may already trust.
            write_atomic(&key_path, key.serialize_pem().as_bytes(), PRIVATE_MODE)?;
            write_atomic(&cert_path, cert.pem().as_bytes(), PUBLIC_MODE)?;
            tracing::info!(path = %cert_path.display(), %common_name, "generated certificate authority");
            Ok(Ca {
                cert_pem: cert.pem(),
                cert_der: cert.der().clone(),
                key,
            })
        }
        (Some(_), None) => Err(PkiError::invalid(
            &key_path,
            format!(
                "missing while {} exists; remove both to generate a new CA",
                cert_path.display()
            ),
        )),
        (None, Some(_)) => Err(PkiError::invalid(
            &cert_path,
            format!(
                "missing while {} exists; remove both to generate a new CA",
                key_path.display()
            ),
        )),
    }
}

/// The kept leaf `stem` if it can be reused, else why it must be re-issued.
fn reusable_leaf(
    dir: &Path,
    stem: &str,
    ca: &Ca,
    sans: Option<&Sans>,
) -> Result<Result<Leaf, String>, PkiError> {
    let cert_path = leaf_path(dir, stem, "crt");
    let key_path = leaf_path(dir, stem, "key");
    let (Some(cert_pem), Some(key_pem)) = (read_optional(&cert_path)?, read_optional(&key_path)?)
    else {
        return Ok(Err("missing".to_string()));
    };
    let Ok(cert_der) = first_cert(&cert_pem, &cert_path) else {
        return Ok(Err("certificate does not parse".to_string()));
    };
    let Ok((_, cert)) = X509Certificate::from_der(&cert_der) else {
        return Ok(Err("certificate does not parse".to_string()));
    };
    let Ok(key) = KeyPair::from_pem(&key_pem) else {
        return Ok(Err("private key does not parse".to_string()));
    };
    if !key_matches(&cert, &key) {
        return Ok(Err("private key does not match certificate".to_string()));
    }
    let ca_cert = X509Certificate::from_der(&ca.cert_der)
        .map_err(|err| PkiError::invalid(dir, format!("parsing CA certificate: {err}")))?
        .1;
    if cert.issuer().as_raw() != ca_cert.subject().as_raw()
        || cert.verify_signature(Some(ca_cert.public_key())).is_err()
    {
        return Ok(Err("not signed by the current CA".to_string()));
    }
    if cert.validity().not_after.timestamp() < unix_now() + RENEW_BEFORE_DAYS * 86_400 {
        return Ok(Err(format!("expires within {RENEW_BEFORE_DAYS} days")));
    }
    if let Some(sans) = sans {
        let missing = sans.missing_from(&cert);
        if !missing.is_empty() {
            return Ok(Err(format!("lacks SANs {}", missing.join(", "))));
        }
    }
    Ok(Ok(Leaf {
        cert_pem,
        key_pem,
        cert_der,
    }))
}

fn load_or_issue_leaf(
    dir: &Path,
    stem: &str,
    ca: &Ca,
    sans: Option<&Sans>,
    issue: impl FnOnce() -> Result<Leaf, PkiError>,
) -> Result<Leaf, PkiError> {
    let reason = match reusable_leaf(dir, stem, ca, sans)? {
        Ok(leaf) => return Ok(leaf),
        Err(reason) => reason,
    };
    let leaf = issue()?;
    let cert_path = leaf_path(dir, stem, "crt");
    // Key first; should a crash leave the new key beside the old certificate, the mismatch
    // is detected at the next start and the pair re-issued.
    write_atomic(
        &leaf_path(dir, stem, "key"),
        leaf.key_pem.as_bytes(),
        PRIVATE_MODE,
    )?;
    write_atomic(&cert_path, leaf.cert_pem.as_bytes(), PUBLIC_MODE)?;
    tracing::info!(path = %cert_path.display(), %reason, "issued certificate");
    Ok(leaf)
}

/// Issues a 1-year leaf certificate with a fresh key (fresh key, fresh serial: rcgen derives
/// the serial from the public key).
pub(crate) fn issue_leaf(
    ca: &Ca,
    subject: DistinguishedName,
    sans: Vec<SanType>,
    usage: ExtendedKeyUsagePurpose,
) -> Result<Leaf, PkiError> {
    let what = || {
        let cn = match subject.get(&DnType::CommonName) {
            Some(rcgen::DnValue::Utf8String(cn)) => cn.clone(),
            _ => String::new(),
        };
        format!("certificate for {cn:?}")
    };
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(PkiError::generate(what()))?;
    let mut params = CertificateParams::default();
    params.distinguished_name = subject.clone();
    params.subject_alt_names = sans;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![usage];
    params.use_authority_key_identifier_extension = true;
    validity(&mut params, LEAF_VALIDITY_DAYS);
    let issuer = ca.issuer().map_err(PkiError::generate(what()))?;
    let cert = params
        .signed_by(&key, &issuer)
        .map_err(PkiError::generate(what()))?;
    Ok(Leaf {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        cert_der: cert.der().clone(),
    })
}

#[cfg(test)]
mod tests;
