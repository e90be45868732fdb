//! Where to pull from and with which credentials.
//!
//! [`RegistryConfig`] reads k3s's `registries.yaml`:
//! ```yaml
//! mirrors:
//!   docker.io:
//!     endpoint: ["http://127.0.0.1:5000"]
//!     rewrite: {"^rancher/(.*)": "mirrored/rancher/$1"}
//! configs:
//!   "registry.example.com":
//!     auth: {username: u, password: p}     # or auth: base64(u:p), or identitytoken
//!     tls: {insecure_skip_verify: false, ca_file: /etc/ssl/ca.pem}
//! ```
//! A registry's mirrors are tried in order, then the registry itself (its default endpoint,
//! `registry-1.docker.io` for `docker.io`), as k3s does. The mirror `"*"` applies to every
//! registry without its own entry. `configs` are keyed by the host of the endpoint used.
//!
//! [`Credentials`] holds what `imagePullSecrets` give (dockerconfigjson), looked up by the
//! registry host as upstream's credential keyring does.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde::Deserialize;

use super::{ImageError, Result};

#[derive(Debug, Clone, Default, Deserialize)]
pub struct RegistryConfig {
    #[serde(default)]
    pub mirrors: BTreeMap<String, Mirror>,
    #[serde(default)]
    pub configs: BTreeMap<String, HostConfig>,
    /// Do not fall back to a registry's own endpoint after its mirrors (k3s's
    /// `--disable-default-registry-endpoint`). Not a `registries.yaml` key.
    #[serde(skip)]
    pub disable_default_endpoint: bool,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Mirror {
    #[serde(default)]
    pub endpoint: Vec<String>,
    /// Regular expression on the repository -> replacement (`$1` for groups).
    #[serde(default)]
    pub rewrite: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct HostConfig {
    #[serde(default)]
    pub auth: Option<AuthConfig>,
    #[serde(default)]
    pub tls: Option<TlsConfig>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct AuthConfig {
    #[serde(default)]
    pub username: String,
    #[serde(default)]
    pub password: String,
    /// base64 of `username:password`.
    #[serde(default)]
    pub auth: String,
    #[serde(default)]
    pub identitytoken: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct TlsConfig {
    #[serde(default)]
    pub insecure_skip_verify: bool,
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    #[serde(default)]
    pub key_file: Option<PathBuf>,
}

/// One place to try: `scheme://host[:port]` serving `/v2/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `http` or `https`.
    pub scheme: String,
    /// `host[:port]` as used in URLs and as the key of `configs`.
    pub host: String,
    /// The repository to ask for there (after rewrites).
    pub repository: String,
    /// Whether this is the registry's own endpoint (not a mirror).
    pub is_default: bool,
}

impl Endpoint {
    pub fn url(&self) -> String {
        format!("{}://{}", self.scheme, self.host)
    }
}

/// A user name and password (or an identity token) for one registry.
#[derive(Clone, PartialEq, Eq)]
pub struct Credential {
    pub username: String,
    pub password: String,
    /// An OAuth2 refresh token (Docker's `identitytoken`); sent as the password, which
    /// registries that issue such tokens accept from the token endpoint's basic auth.
    pub identity_token: String,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

impl Credential {
    fn from_parts(
        username: &str,
        password: &str,
        auth: &str,
        identity_token: &str,
    ) -> Option<Self> {
        let (mut username, mut password) = (username.to_string(), password.to_string());
        if username.is_empty() && !auth.is_empty() {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(auth.trim())
                .ok()?;
            let decoded = String::from_utf8(decoded).ok()?;
            let (u, p) = decoded.split_once(':')?;
            (username, password) = (u.to_string(), p.to_string());
        }
        if username.is_empty() && identity_token.is_empty() {
            return None;
        }
        Some(Credential {
            username,
            password,
            identity_token: identity_token.to_string(),
        })
    }
}

impl RegistryConfig {
    /// Reads `registries.yaml`; a missing file is an empty configuration.
    pub fn load(path: &Path) -> Result<RegistryConfig> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(e) => return Err(ImageError::io(path)(e)),
        };
        Self::parse(&text).map_err(|message| ImageError::RegistryConfig {
            path: path.to_path_buf(),
            message,
        })
    }

    pub fn parse(text: &str) -> std::result::Result<RegistryConfig, String> {
        if text.trim().is_empty() {
            return Ok(Self::default());
        }
        let config: RegistryConfig = serde_yaml::from_str(text).map_err(|e| e.to_string())?;
        for (registry, mirror) in &config.mirrors {
            for endpoint in &mirror.endpoint {
                parse_endpoint(endpoint)
                    .map_err(|e| format!("mirrors.{registry}.endpoint {endpoint:?}: {e}"))?;
            }
            for pattern in mirror.rewrite.keys() {
                regex::Regex::new(pattern)
                    .map_err(|e| format!("mirrors.{registry}.rewrite {pattern:?}: {e}"))?;
            }
        }
        Ok(config)
    }

    /// The endpoints to try for `registry`/`repository`, in order.
    pub fn endpoints(&self, registry: &str, repository: &str) -> Vec<Endpoint> {
        let mirror = self.mirrors.get(registry).or_else(|| self.mirrors.get("*"));
        let mut out = Vec::new();
        if let Some(mirror) = mirror {
            let repository = rewrite(&mirror.rewrite, repository);
            for endpoint in &mirror.endpoint {
                let Ok((scheme, host)) = parse_endpoint(endpoint) else {
                    continue;
                };
                let is_default = host == registry || host == default_host(registry);
                out.push(Endpoint {
                    scheme,
                    host,
                    repository: repository.clone(),
                    is_default,
                });
            }
        }
        let has_default = out.iter().any(|e| e.is_default);
        let mirrors_only = self.disable_default_endpoint && !out.is_empty();
        if !has_default && !mirrors_only {
            let host = default_host(registry).to_string();
            // Docker treats loopback registries as plain HTTP by default; so do we.
            let scheme = if is_loopback(&host) { "http" } else { "https" };
            out.push(Endpoint {
                scheme: scheme.into(),
                host,
                repository: repository.to_string(),
                is_default: true,
            });
        }
        out
    }

    /// `configs` for an endpoint host (also under the registry name for its default endpoint).
    pub fn host_config(&self, endpoint: &Endpoint, registry: &str) -> Option<&HostConfig> {
        self.configs.get(&endpoint.host).or_else(|| {
            endpoint
                .is_default
                .then(|| self.configs.get(registry))
                .flatten()
        })
    }

    pub(crate) fn auth_for(&self, endpoint: &Endpoint, registry: &str) -> Option<Credential> {
        let auth = self.host_config(endpoint, registry)?.auth.as_ref()?;
        Credential::from_parts(
            &auth.username,
            &auth.password,
            &auth.auth,
            &auth.identitytoken,
        )
    }
}

/// The host serving a registry's API (Docker Hub's differs from its name).
pub fn default_host(registry: &str) -> &str {
    match registry {
        "docker.io" | "index.docker.io" => "registry-1.docker.io",
        other => other,
    }
}

fn is_loopback(host: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or(rest)
    } else {
        host.rsplit_once(':').map_or(host, |(h, _)| h)
    };
    name == "localhost"
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn parse_endpoint(endpoint: &str) -> std::result::Result<(String, String), String> {
    let (scheme, rest) = match endpoint.split_once("://") {
        Some((scheme @ ("http" | "https"), rest)) => (scheme.to_string(), rest),
        Some((other, _)) => return Err(format!("scheme {other:?}: expected http or https")),
        None => ("https".to_string(), endpoint),
    };
    let host = rest.split('/').next().unwrap_or_default();
    let path = rest[host.len()..].trim_end_matches('/');
    if host.is_empty() {
        return Err("no host".into());
    }
    if !path.is_empty() && path != "/v2" {
        // The OCI client builds URLs from a host alone; say so rather than pull elsewhere.
        return Err(format!(
            "path {path:?}: endpoints with a path are not supported"
        ));
    }
    Ok((scheme, host.to_string()))
}

fn rewrite(rules: &BTreeMap<String, String>, repository: &str) -> String {
    for (pattern, replacement) in rules {
        if let Ok(re) = regex::Regex::new(pattern)
            && re.is_match(repository)
        {
            return re.replace(repository, replacement.as_str()).into_owned();
        }
    }
    repository.to_string()
}

/// Credentials from `imagePullSecrets` (`kubernetes.io/dockerconfigjson` or the older
/// `kubernetes.io/dockercfg`), in the order given: the first matching one wins.
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    entries: Vec<(String, Credential)>,
}

#[derive(Deserialize)]
struct DockerConfigJson {
    #[serde(default)]
    auths: BTreeMap<String, DockerAuth>,
}

#[derive(Deserialize, Default)]
struct DockerAuth {
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    auth: String,
    #[serde(default)]
    identitytoken: String,
}

impl Credentials {
    /// Adds the contents of a `.dockerconfigjson` (`{"auths": {...}}`) or a `.dockercfg`
    /// (the map alone).
    pub fn add_docker_config(&mut self, json: &[u8]) -> Result<()> {
        let bad = |e: serde_json::Error| ImageError::Format {
            what: "image pull secret".into(),
            message: format!("bad docker config JSON: {e}"),
        };
        let value: serde_json::Value = serde_json::from_slice(json).map_err(bad)?;
        let auths: BTreeMap<String, DockerAuth> = if value.get("auths").is_some() {
            serde_json::from_value::<DockerConfigJson>(value)
                .map_err(bad)?
                .auths
        } else {
            serde_json::from_value(value).map_err(bad)?
        };
        for (key, a) in auths {
            if let Some(c) =
                Credential::from_parts(&a.username, &a.password, &a.auth, &a.identitytoken)
            {
                self.entries.push((normalize_key(&key), c));
            }
        }
        Ok(())
    }

    pub fn add(&mut self, registry: &str, credential: Credential) {
        self.entries.push((normalize_key(registry), credential));
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The credential for a registry host (`docker.io`, `127.0.0.1:5000`); keys may use a
    /// leading `*.` wildcard for one label.
    pub fn lookup(&self, registry: &str) -> Option<&Credential> {
        let registry = normalize_key(registry);
        self.entries
            .iter()
            .find(|(key, _)| host_matches(key, &registry))
            .map(|(_, c)| c)
    }
}

/// `https://index.docker.io/v1/` -> `docker.io`; drops scheme and path.
fn normalize_key(key: &str) -> String {
    let key = key.split_once("://").map_or(key, |(_, rest)| rest);
    let host = key.split('/').next().unwrap_or(key).to_ascii_lowercase();
    match host.as_str() {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => {
            "docker.io".into()
        }
        _ => host,
    }
}

fn host_matches(pattern: &str, host: &str) -> bool {
    if pattern == host {
        return true;
    }
    match pattern.strip_prefix("*.") {
        Some(suffix) => host.split_once('.').is_some_and(|(_, rest)| rest == suffix),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const YAML: &str = r#"
mirrors:
  docker.io:
    endpoint:
      - "http://127.0.0.1:5000"
      - "https://mirror.example.com"
    rewrite:
      "^rancher/(.*)": "mirrored/rancher/$1"
  "*":
    endpoint: ["https://everything.example.com"]
configs:
  "127.0.0.1:5000":
    auth: {auth: "dXNlcjpwYXNz"}
  "quay.io":
    auth: {username: q, password: qp}
    tls: {insecure_skip_verify: true, ca_file: /etc/ca.pem}
"#;

    #[test]
    fn mirrors_then_the_default_endpoint() {
        let c = RegistryConfig::parse(YAML).unwrap();
        let e = c.endpoints("docker.io", "library/busybox");
        let urls: Vec<String> = e.iter().map(Endpoint::url).collect();
        assert_eq!(
            urls,
            [
                "http://127.0.0.1:5000",
                "https://mirror.example.com",
                "https://registry-1.docker.io"
            ]
        );
        assert!(e.iter().all(|e| e.repository == "library/busybox"));
        assert!(e[2].is_default && !e[0].is_default);

        let r = c.endpoints("docker.io", "rancher/pause");
        assert_eq!(r[0].repository, "mirrored/rancher/pause");
        assert_eq!(
            r[2].repository, "rancher/pause",
            "rewrites apply to mirrors only"
        );

        let q = c.endpoints("quay.io", "x/y");
        assert_eq!(q[0].url(), "https://everything.example.com");
        assert_eq!(q[1].url(), "https://quay.io");
        let tls = c
            .host_config(&q[1], "quay.io")
            .unwrap()
            .tls
            .as_ref()
            .unwrap();
        assert!(tls.insecure_skip_verify);

        let local = c.endpoints("localhost:5000", "a");
        assert_eq!(local.last().unwrap().url(), "http://localhost:5000");
    }

    #[test]
    fn disabling_the_default_endpoint_keeps_only_mirrors() {
        let mut c = RegistryConfig::parse(YAML).unwrap();
        c.disable_default_endpoint = true;
        assert_eq!(c.endpoints("docker.io", "library/busybox").len(), 2);
    }

    #[test]
    fn auth_comes_from_the_endpoint_host() {
        let c = RegistryConfig::parse(YAML).unwrap();
        let e = c.endpoints("docker.io", "library/busybox");
        let cred = c.auth_for(&e[0], "docker.io").unwrap();
        assert_eq!(
            (cred.username.as_str(), cred.password.as_str()),
            ("user", "pass")
        );
        assert!(c.auth_for(&e[1], "docker.io").is_none());
    }

    #[test]
    fn bad_configs_are_rejected_with_the_field() {
        let err = RegistryConfig::parse("mirrors:\n  docker.io:\n    endpoint: [\"ftp://x\"]\n")
            .unwrap_err();
        assert!(err.contains("mirrors.docker.io.endpoint"), "{err}");
        assert!(RegistryConfig::parse("mirrors: [1, 2]").is_err());
        assert!(RegistryConfig::parse("").unwrap().mirrors.is_empty());
    }

    #[test]
    fn docker_config_json_lookup() {
        let mut creds = Credentials::default();
        creds
            .add_docker_config(
                br#"{"auths":{"https://index.docker.io/v1/":{"auth":"aHViOnNlY3JldA=="},
                   "127.0.0.1:5000":{"username":"u","password":"p"},
                   "*.example.com":{"username":"w","password":"x"}}}"#,
            )
            .unwrap();
        assert_eq!(creds.lookup("docker.io").unwrap().username, "hub");
        assert_eq!(creds.lookup("docker.io").unwrap().password, "secret");
        assert_eq!(creds.lookup("127.0.0.1:5000").unwrap().password, "p");
        assert_eq!(creds.lookup("registry.example.com").unwrap().username, "w");
        assert!(creds.lookup("a.b.example.com").is_none());
        assert!(creds.lookup("quay.io").is_none());
        // The old .dockercfg form.
        let mut old = Credentials::default();
        old.add_docker_config(br#"{"quay.io":{"auth":"YTpi"}}"#)
            .unwrap();
        assert_eq!(old.lookup("quay.io").unwrap().username, "a");
        assert!(format!("{:?}", old.lookup("quay.io").unwrap()).contains("redacted"));
    }
}
