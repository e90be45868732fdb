//! Kubeconfig files in the layout k3s writes: one cluster, one user and one context, all
//! named `default`, with credentials embedded as base64 `*-data` fields.

use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::Serialize;

use crate::PkiError;
use crate::files::{PRIVATE_MODE, write_atomic};

/// The name used for the cluster, the user and the context.
const NAME: &str = "default";

#[derive(Serialize)]
struct Config<'a> {
    #[serde(rename = "apiVersion")]
    api_version: &'a str,
    kind: &'a str,
    clusters: Vec<Named<Cluster>>,
    contexts: Vec<Named<Context<'a>>>,
    #[serde(rename = "current-context")]
    current_context: &'a str,
    preferences: Preferences,
    users: Vec<Named<User>>,
}

#[derive(Serialize)]
struct Named<T> {
    name: String,
    #[serde(flatten)]
    item: T,
}

#[derive(Serialize)]
struct Cluster {
    cluster: ClusterInfo,
}

#[derive(Serialize)]
struct ClusterInfo {
    #[serde(rename = "certificate-authority-data")]
    certificate_authority_data: String,
    server: String,
}

#[derive(Serialize)]
struct Context<'a> {
    context: ContextInfo<'a>,
}

#[derive(Serialize)]
struct ContextInfo<'a> {
    cluster: &'a str,
    user: &'a str,
}

#[derive(Serialize)]
struct Preferences {}

#[derive(Serialize)]
struct User {
    user: AuthInfo,
}

#[derive(Serialize)]
struct AuthInfo {
    #[serde(
        rename = "client-certificate-data",
        skip_serializing_if = "Option::is_none"
    )]
    client_certificate_data: Option<String>,
    #[serde(rename = "client-key-data", skip_serializing_if = "Option::is_none")]
    client_key_data: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    token: Option<String>,
}

fn render(server_url: &str, ca_pem: &str, auth: AuthInfo) -> String {
    let config = Config {
        api_version: "v1",
        kind: "Config",
        clusters: vec![Named {
            name: NAME.to_string(),
            item: Cluster {
                cluster: ClusterInfo {
                    certificate_authority_data: BASE64.encode(ca_pem),
                    server: server_url.to_string(),
                },
            },
        }],
        contexts: vec![Named {
            name: NAME.to_string(),
            item: Context {
                context: ContextInfo {
                    cluster: NAME,
                    user: NAME,
                },
            },
        }],
        current_context: NAME,
        preferences: Preferences {},
        users: vec![Named {
            name: NAME.to_string(),
            item: User { user: auth },
        }],
    };
    // Only strings and sequences: serialization cannot fail.
    serde_yaml::to_string(&config).expect("kubeconfig of plain strings serializes")
}

/// A kubeconfig that trusts `ca_pem` and authenticates with a client certificate.
pub fn kubeconfig_yaml(server_url: &str, ca_pem: &str, cert_pem: &str, key_pem: &str) -> String {
    render(
        server_url,
        ca_pem,
        AuthInfo {
            client_certificate_data: Some(BASE64.encode(cert_pem)),
            client_key_data: Some(BASE64.encode(key_pem)),
            token: None,
        },
    )
}

/// A kubeconfig that trusts `ca_pem` and authenticates with a bearer token.
pub fn kubeconfig_yaml_with_token(server_url: &str, ca_pem: &str, token: &str) -> String {
    render(
        server_url,
        ca_pem,
        AuthInfo {
            client_certificate_data: None,
            client_key_data: None,
            token: Some(token.to_string()),
        },
    )
}

/// Writes a kubeconfig atomically with mode 0600 (it holds credentials).
pub fn write_kubeconfig(path: &Path, yaml: &str) -> Result<(), PkiError> {
    write_atomic(path, yaml.as_bytes(), PRIVATE_MODE)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(value: &serde_yaml::Value) -> String {
        String::from_utf8(BASE64.decode(value.as_str().unwrap()).unwrap()).unwrap()
    }

    #[test]
    fn certificate_kubeconfig_has_expected_fields() {
        let yaml = kubeconfig_yaml("https://127.0.0.1:6443", "CA", "CERT", "KEY");
        let doc: serde_yaml::Value = serde_yaml::from_str(&yaml).unwrap();
        assert_eq!(doc["apiVersion"], "v1");
        assert_eq!(doc["kind"], "Config");
        assert_eq!(doc["current-context"], "default");
        assert_eq!(doc["clusters"][0]["name"], "default");
        assert_eq!(
            doc["clusters"][0]["cluster"]["server"],
            "https://127.0.0.1:6443"
        );
        assert_eq!(
            decode(&doc["clusters"][0]["cluster"]["certificate-authority-data"]),
            "CA"
        );
        assert_eq!(doc["contexts"][0]["name"], "default");
        assert_eq!(doc["contexts"][0]["context"]["cluster"], "default");
        assert_eq!(doc["contexts"][0]["context"]["user"], "default");
        assert_eq!(doc["users"][0]["name"], "default");
        assert_eq!(
            decode(&doc["users"][0]["user"]["client-certificate-data"]),
            "CERT"
        );
        assert_eq!(decode(&doc["users"][0]["user"]["client-key-data"]), "KEY");
        assert!(doc["users"][0]["user"].get("token").is_none());
    }

    #[test]
    fn token_kubeconfig_has_token_and_no_certificate() {
        let yaml = kubeconfig_yaml_with_token("https://h:1", "CA", "abc.def");
        let doc: serde_yaml::Value = serde_yaml::from_str(&yaml).unwrap();
        assert_eq!(doc["users"][0]["user"]["token"], "abc.def");
        assert!(
            doc["users"][0]["user"]
                .get("client-certificate-data")
                .is_none()
        );
        assert!(doc["users"][0]["user"].get("client-key-data").is_none());
        assert_eq!(
            decode(&doc["clusters"][0]["cluster"]["certificate-authority-data"]),
            "CA"
        );
    }
}
