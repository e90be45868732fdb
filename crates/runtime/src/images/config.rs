//! The image configuration: what a container runs by default (OCI image config, which Docker's
//! image JSON matches field for field).

use serde::{Deserialize, Serialize};

use super::{ImageError, Result};

/// The parts of an image config that the kubelet needs to build a container.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageConfig {
    /// `Entrypoint`: replaced by the container's `command`.
    pub entrypoint: Vec<String>,
    /// `Cmd`: replaced by the container's `args` (and dropped when `command` is set).
    pub cmd: Vec<String>,
    /// `Env` as `NAME=value` strings.
    pub env: Vec<String>,
    /// `WorkingDir`, empty for `/`.
    pub working_dir: String,
    /// `User` as written: `name`, `uid`, `uid:gid` or `name:group`; empty for root.
    pub user: String,
    /// `ExposedPorts` keys, such as `80/tcp`.
    pub exposed_ports: Vec<String>,
    /// `StopSignal`, e.g. `SIGQUIT`; empty for the default (SIGTERM).
    pub stop_signal: String,
    pub labels: std::collections::BTreeMap<String, String>,
    pub architecture: String,
    pub os: String,
}

/// The on-disk image config JSON (OCI `application/vnd.oci.image.config.v1+json`).
#[derive(Debug, Default, Deserialize)]
pub(crate) struct RawConfig {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub config: Option<RawContainerConfig>,
    pub rootfs: RawRootfs,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct RawContainerConfig {
    #[serde(default)]
    pub entrypoint: Option<Vec<String>>,
    #[serde(default)]
    pub cmd: Option<Vec<String>>,
    #[serde(default)]
    pub env: Option<Vec<String>>,
    #[serde(default)]
    pub working_dir: Option<String>,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub exposed_ports: Option<std::collections::BTreeMap<String, serde_json::Value>>,
    #[serde(default)]
    pub stop_signal: Option<String>,
    #[serde(default)]
    pub labels: Option<std::collections::BTreeMap<String, String>>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct RawRootfs {
    #[serde(default, rename = "type")]
    pub kind: String,
    pub diff_ids: Vec<String>,
}

impl RawConfig {
    pub(crate) fn parse(bytes: &[u8], what: &str) -> Result<RawConfig> {
        let raw: RawConfig = serde_json::from_slice(bytes).map_err(|e| ImageError::Format {
            what: what.to_string(),
            message: format!("bad image config: {e}"),
        })?;
        if raw.rootfs.kind != "layers" {
            return Err(ImageError::Format {
                what: what.to_string(),
                message: format!("rootfs type {:?}, expected \"layers\"", raw.rootfs.kind),
            });
        }
        Ok(raw)
    }

    pub(crate) fn image_config(&self) -> ImageConfig {
        let empty = RawContainerConfig::default();
        let c = self.config.as_ref().unwrap_or(&empty);
        ImageConfig {
            entrypoint: c.entrypoint.clone().unwrap_or_default(),
            cmd: c.cmd.clone().unwrap_or_default(),
            env: c.env.clone().unwrap_or_default(),
            working_dir: c.working_dir.clone().unwrap_or_default(),
            user: c.user.clone().unwrap_or_default(),
            exposed_ports: c
                .exposed_ports
                .as_ref()
                .map(|p| p.keys().cloned().collect())
                .unwrap_or_default(),
            stop_signal: c.stop_signal.clone().unwrap_or_default(),
            labels: c.labels.clone().unwrap_or_default(),
            architecture: self.architecture.clone(),
            os: self.os.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_container_defaults_and_diff_ids() {
        let json = br#"{"architecture":"amd64","os":"linux",
          "config":{"Entrypoint":["/docker-entrypoint.sh"],"Cmd":["nginx","-g","daemon off;"],
            "Env":["PATH=/bin"],"WorkingDir":"/www","User":"101:101",
            "ExposedPorts":{"80/tcp":{}},"StopSignal":"SIGQUIT","Labels":{"a":"b"}},
          "rootfs":{"type":"layers","diff_ids":["sha256:aa","sha256:bb"]}}"#;
        let raw = RawConfig::parse(json, "cfg").unwrap();
        assert_eq!(raw.rootfs.diff_ids, vec!["sha256:aa", "sha256:bb"]);
        let c = raw.image_config();
        assert_eq!(c.entrypoint, vec!["/docker-entrypoint.sh"]);
        assert_eq!(c.cmd, vec!["nginx", "-g", "daemon off;"]);
        assert_eq!(c.env, vec!["PATH=/bin"]);
        assert_eq!(c.working_dir, "/www");
        assert_eq!(c.user, "101:101");
        assert_eq!(c.exposed_ports, vec!["80/tcp"]);
        assert_eq!(c.stop_signal, "SIGQUIT");
        assert_eq!(c.labels.get("a").map(String::as_str), Some("b"));
    }

    #[test]
    fn a_config_without_container_defaults_is_empty_not_an_error() {
        let raw =
            RawConfig::parse(br#"{"rootfs":{"type":"layers","diff_ids":[]}}"#, "cfg").unwrap();
        assert_eq!(raw.image_config(), ImageConfig::default());
        assert!(RawConfig::parse(br#"{"rootfs":{"type":"x","diff_ids":[]}}"#, "cfg").is_err());
    }
}
