use std::fs;
use std::os::unix::fs::PermissionsExt;

use super::*;

fn read(dir: &Path, name: &str) -> Vec<u8> {
    fs::read(dir.join(name)).unwrap_or_else(|err| panic!("reading {name}: {err}"))
}

fn mode(dir: &Path, name: &str) -> u32 {
    fs::metadata(dir.join(name)).unwrap().permissions().mode() & 0o777
}

fn parse(der: &[u8]) -> X509Certificate<'_> {
    X509Certificate::from_der(der).unwrap().1
}

fn der_of(pem: &str) -> CertificateDer<'static> {
    first_cert(pem, Path::new("test")).unwrap()
}

fn san_strings(cert: &X509Certificate<'_>) -> Vec<String> {
    let ext = cert
        .subject_alternative_name()
        .unwrap()
        .expect("certificate has SANs");
    ext.value
        .general_names
        .iter()
        .map(|name| match name {
            GeneralName::DNSName(dns) => dns.to_string(),
            GeneralName::IPAddress(bytes) => ip_from_bytes(bytes).unwrap().to_string(),
            other => panic!("unexpected SAN {other:?}"),
        })
        .collect()
}

fn opts(ips: &[&str], sans: &[&str]) -> PkiOptions {
    PkiOptions {
        sans: sans.iter().map(|s| s.to_string()).collect(),
        ips: ips.iter().map(|ip| ip.parse().unwrap()).collect(),
    }
}

const ALL_FILES: [&str; 8] = [
    "server-ca.crt",
    "server-ca.key",
    "client-ca.crt",
    "client-ca.key",
    "serving-kube-apiserver.crt",
    "serving-kube-apiserver.key",
    "client-admin.crt",
    "client-admin.key",
];

#[test]
fn first_start_generates_everything_with_private_keys() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("tls");
    let pki = Pki::load_or_create(
        &dir,
        &opts(&["10.43.0.1", "192.168.1.5"], &["node1.example"]),
    )
    .unwrap();

    for name in ALL_FILES {
        let expected = if name.ends_with(".key") { 0o600 } else { 0o644 };
        assert_eq!(mode(&dir, name), expected, "mode of {name}");
    }
    assert_eq!(
        fs::read_to_string(dir.join("server-ca.crt")).unwrap(),
        pki.ca_pem()
    );

    let server_ca_der = der_of(pki.ca_pem());
    let server_ca = parse(&server_ca_der);
    let cn = server_ca
        .subject()
        .iter_common_name()
        .next()
        .unwrap()
        .as_str()
        .unwrap();
    let stamp = cn
        .strip_prefix("rkube-server-ca@")
        .expect("server CA common name");
    assert!(stamp.parse::<i64>().unwrap() > 1_600_000_000, "{cn}");
    assert!(server_ca.is_ca());
    let ca_days = (server_ca.validity().not_after.timestamp() - unix_now()) / 86_400;
    assert!(
        (3640..=3650).contains(&ca_days),
        "CA valid for {ca_days} days"
    );

    let client_ca_der = der_of(pki.client_ca_pem());
    let client_ca = parse(&client_ca_der);
    assert!(
        client_ca
            .subject()
            .iter_common_name()
            .next()
            .unwrap()
            .as_str()
            .unwrap()
            .starts_with("rkube-client-ca@")
    );
    assert_ne!(server_ca.subject().as_raw(), client_ca.subject().as_raw());

    // Serving certificate: signed by the server CA, all SANs, serverAuth, one year.
    let serving_der = der_of(pki.serving_cert_pem());
    let serving = parse(&serving_der);
    assert_eq!(serving.issuer().as_raw(), server_ca.subject().as_raw());
    serving
        .verify_signature(Some(server_ca.public_key()))
        .unwrap();
    let mut sans = san_strings(&serving);
    sans.sort();
    assert_eq!(
        sans,
        [
            "10.43.0.1",
            "127.0.0.1",
            "192.168.1.5",
            "::1",
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
            "localhost",
            "node1.example",
        ]
    );
    let eku = serving.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.server_auth && !eku.client_auth);
    let days = (serving.validity().not_after.timestamp() - unix_now()) / 86_400;
    assert!((360..=365).contains(&days), "serving valid for {days} days");
    assert!(!serving.is_ca());

    // Admin: signed by the client CA, clientAuth.
    let (admin_pem, admin_key) = pki.admin_credentials();
    let admin_der = der_of(admin_pem);
    let admin = parse(&admin_der);
    assert_eq!(admin.issuer().as_raw(), client_ca.subject().as_raw());
    admin
        .verify_signature(Some(client_ca.public_key()))
        .unwrap();
    let eku = admin.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.client_auth && !eku.server_auth);
    assert!(key_matches(&admin, &KeyPair::from_pem(admin_key).unwrap()));
}

#[test]
fn second_start_reuses_everything() {
    let tmp = tempfile::tempdir().unwrap();
    let options = opts(&["10.43.0.1"], &[]);
    let first = Pki::load_or_create(tmp.path(), &options).unwrap();
    let before: Vec<_> = ALL_FILES
        .iter()
        .map(|name| read(tmp.path(), name))
        .collect();

    let second = Pki::load_or_create(tmp.path(), &options).unwrap();
    let after: Vec<_> = ALL_FILES
        .iter()
        .map(|name| read(tmp.path(), name))
        .collect();
    assert_eq!(before, after);
    assert_eq!(first.ca_pem(), second.ca_pem());
    assert_eq!(first.serving_cert_pem(), second.serving_cert_pem());
    assert_eq!(first.admin_credentials(), second.admin_credentials());

    // A subset of the SANs (e.g. an address that went away) does not force a re-issue.
    Pki::load_or_create(tmp.path(), &PkiOptions::default()).unwrap();
    assert_eq!(read(tmp.path(), "serving-kube-apiserver.crt"), before[4]);
}

#[test]
fn new_san_reissues_only_the_serving_certificate() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let first = Pki::load_or_create(dir, &opts(&["10.43.0.1"], &[])).unwrap();
    let before: Vec<_> = ALL_FILES.iter().map(|name| read(dir, name)).collect();

    let second =
        Pki::load_or_create(dir, &opts(&["10.43.0.1", "192.168.7.9"], &["Api.Example"])).unwrap();
    for (name, old) in ALL_FILES.iter().zip(&before) {
        let changed = read(dir, name) != *old;
        assert_eq!(
            changed,
            name.starts_with("serving-"),
            "{name} changed: {changed}"
        );
    }
    assert_ne!(first.serving_cert_pem(), second.serving_cert_pem());

    let serving_der = der_of(second.serving_cert_pem());
    let serving = parse(&serving_der);
    let sans = san_strings(&serving);
    for wanted in [
        "192.168.7.9",
        "api.example",
        "10.43.0.1",
        "kubernetes.default.svc",
    ] {
        assert!(
            sans.iter().any(|s| s == wanted),
            "{wanted} missing from {sans:?}"
        );
    }
    let ca_der = der_of(second.ca_pem());
    serving
        .verify_signature(Some(parse(&ca_der).public_key()))
        .unwrap();

    // Names compare case-insensitively: asking again in other case changes nothing.
    let reissued = read(dir, "serving-kube-apiserver.crt");
    Pki::load_or_create(dir, &opts(&["192.168.7.9"], &["API.EXAMPLE"])).unwrap();
    assert_eq!(read(dir, "serving-kube-apiserver.crt"), reissued);
}

#[test]
fn expiring_serving_certificate_is_reissued_by_the_same_ca() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let pki = Pki::load_or_create(dir, &PkiOptions::default()).unwrap();
    let ca_before = read(dir, "server-ca.crt");

    // Replace the serving certificate with one that expires in 30 days.
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    params.subject_alt_names = Sans::from_options(&PkiOptions::default())
        .to_rcgen()
        .unwrap();
    params.not_after = OffsetDateTime::now_utc() + time::Duration::days(30);
    let cert = params
        .signed_by(&key, &pki.server_ca.issuer().unwrap())
        .unwrap();
    fs::write(dir.join("serving-kube-apiserver.crt"), cert.pem()).unwrap();
    fs::write(dir.join("serving-kube-apiserver.key"), key.serialize_pem()).unwrap();
    let admin_before = read(dir, "client-admin.crt");

    let again = Pki::load_or_create(dir, &PkiOptions::default()).unwrap();
    assert_ne!(again.serving_cert_pem(), cert.pem());
    let serving_der = der_of(again.serving_cert_pem());
    let days = (parse(&serving_der).validity().not_after.timestamp() - unix_now()) / 86_400;
    assert!(days > 300, "re-issued serving valid for {days} days");
    assert_eq!(read(dir, "server-ca.crt"), ca_before);
    assert_eq!(read(dir, "client-admin.crt"), admin_before);
}

#[test]
fn mismatched_leaf_key_or_new_ca_reissue_the_leaf() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let first = Pki::load_or_create(dir, &PkiOptions::default()).unwrap();

    // A key that does not belong to the certificate (e.g. a crash between the two writes).
    let stray = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    fs::write(dir.join("client-admin.key"), stray.serialize_pem()).unwrap();
    let second = Pki::load_or_create(dir, &PkiOptions::default()).unwrap();
    assert_ne!(first.admin_credentials().0, second.admin_credentials().0);
    let (cert_pem, key_pem) = second.admin_credentials();
    let der = der_of(cert_pem);
    assert!(key_matches(
        &parse(&der),
        &KeyPair::from_pem(key_pem).unwrap()
    ));

    // A new server CA: the serving certificate follows it, the client side stays.
    fs::remove_file(dir.join("server-ca.crt")).unwrap();
    fs::remove_file(dir.join("server-ca.key")).unwrap();
    let third = Pki::load_or_create(dir, &PkiOptions::default()).unwrap();
    assert_ne!(third.ca_pem(), second.ca_pem());
    assert_eq!(third.client_ca_pem(), second.client_ca_pem());
    assert_eq!(third.admin_credentials(), second.admin_credentials());
    let serving_der = der_of(third.serving_cert_pem());
    let ca_der = der_of(third.ca_pem());
    parse(&serving_der)
        .verify_signature(Some(parse(&ca_der).public_key()))
        .unwrap();
}

#[test]
fn half_a_ca_is_an_error_not_a_silent_replacement() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    Pki::load_or_create(dir, &PkiOptions::default()).unwrap();
    fs::remove_file(dir.join("client-ca.key")).unwrap();
    let err = Pki::load_or_create(dir, &PkiOptions::default()).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("client-ca.key") && msg.contains("missing"),
        "{msg}"
    );
    assert!(dir.join("client-ca.crt").exists());
}

#[test]
fn identity_of_admin_and_issued_certificates() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki::load_or_create(tmp.path(), &PkiOptions::default()).unwrap();
    let admin = der_of(pki.admin_credentials().0);
    assert_eq!(
        identity_from_cert(&admin),
        Some((
            "system:admin".to_string(),
            vec!["system:masters".to_string()]
        ))
    );

    let (cert, key) = pki
        .issue_client_cert("system:node:n1", &["system:nodes"])
        .unwrap();
    let der = der_of(&cert);
    assert_eq!(
        identity_from_cert(&der),
        Some((
            "system:node:n1".to_string(),
            vec!["system:nodes".to_string()]
        ))
    );
    let parsed = parse(&der);
    assert!(key_matches(&parsed, &KeyPair::from_pem(&key).unwrap()));
    let client_ca = der_of(pki.client_ca_pem());
    parsed
        .verify_signature(Some(parse(&client_ca).public_key()))
        .unwrap();

    let (cert, _) = pki
        .issue_client_cert("jane", &["dev", "ops", "dev"])
        .unwrap();
    assert_eq!(
        identity_from_cert(&der_of(&cert)),
        Some((
            "jane".to_string(),
            vec!["dev".to_string(), "ops".to_string()]
        ))
    );
    let (cert, _) = pki.issue_client_cert("bob", &[]).unwrap();
    assert_eq!(
        identity_from_cert(&der_of(&cert)),
        Some(("bob".to_string(), vec![]))
    );

    let err = pki.issue_client_cert("eve", &["a", "b", "c"]).unwrap_err();
    assert!(
        matches!(err, PkiError::TooManyOrganizations { count: 3, .. }),
        "{err}"
    );
    assert_eq!(identity_from_cert(b"not a certificate"), None);
}

#[test]
fn admin_kubeconfig_is_private_yaml_that_kubectl_reads() {
    use base64::Engine as _;
    let b64 = |v: &serde_yaml::Value| {
        String::from_utf8(
            base64::engine::general_purpose::STANDARD
                .decode(v.as_str().unwrap())
                .unwrap(),
        )
        .unwrap()
    };
    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki::load_or_create(&tmp.path().join("tls"), &PkiOptions::default()).unwrap();
    let path = tmp.path().join("kubeconfig.yaml");
    pki.write_admin_kubeconfig(&path, "https://127.0.0.1:6443")
        .unwrap();
    assert_eq!(
        fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );

    let doc: serde_yaml::Value = serde_yaml::from_str(&fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(doc["current-context"], "default");
    assert_eq!(
        doc["clusters"][0]["cluster"]["server"],
        "https://127.0.0.1:6443"
    );
    assert_eq!(
        b64(&doc["clusters"][0]["cluster"]["certificate-authority-data"]),
        pki.ca_pem()
    );
    let (cert, key) = pki.admin_credentials();
    assert_eq!(
        b64(&doc["users"][0]["user"]["client-certificate-data"]),
        cert
    );
    assert_eq!(b64(&doc["users"][0]["user"]["client-key-data"]), key);

    // Rewriting replaces the file in place and keeps it private.
    pki.write_admin_kubeconfig(&path, "https://10.0.0.1:6443")
        .unwrap();
    assert_eq!(
        fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );

    let kubectl = |jsonpath: &str| {
        let out = std::process::Command::new("kubectl")
            .args([
                "config",
                "view",
                "--raw",
                "-o",
                &format!("jsonpath={jsonpath}"),
            ])
            .arg("--kubeconfig")
            .arg(&path)
            .env("HOME", tmp.path())
            .output()
            .expect("running kubectl");
        assert!(
            out.status.success(),
            "kubectl: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    assert_eq!(kubectl("{.users[0].name}"), "default");
    assert_eq!(kubectl("{.current-context}"), "default");
    assert_eq!(
        kubectl("{.clusters[0].cluster.server}"),
        "https://10.0.0.1:6443"
    );
    let ca_data = kubectl("{.clusters[0].cluster.certificate-authority-data}");
    assert_eq!(b64(&serde_yaml::Value::String(ca_data)), pki.ca_pem());
}
