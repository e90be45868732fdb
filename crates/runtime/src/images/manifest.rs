//! The JSON documents of an image: manifests (OCI and Docker schema2, which share their field
//! names) and indexes (OCI image index, Docker manifest list). Kept as small serde types that
//! ignore what we do not use, so both formats parse the same way.

use serde::{Deserialize, Serialize};

use super::{ImageError, Result};

pub(crate) const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub(crate) const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub(crate) const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub(crate) const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub(crate) const DOCKER_LAYER_TAR: &str = "application/vnd.docker.image.rootfs.diff.tar";
pub(crate) const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
pub(crate) const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";

/// What we ask registries for, most wanted first.
pub(crate) const ACCEPTED: &[&str] = &[OCI_INDEX, DOCKER_LIST, OCI_MANIFEST, DOCKER_MANIFEST];

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Descriptor {
    #[serde(default)]
    pub media_type: String,
    pub digest: String,
    #[serde(default)]
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<std::collections::BTreeMap<String, String>>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub(crate) struct Platform {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Manifest {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Index {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    pub manifests: Vec<Descriptor>,
}

/// A fetched manifest-like document.
pub(crate) enum Document {
    Manifest(Manifest),
    Index(Index),
}

/// Parses a manifest or an index. `media_type` (from the HTTP response or the descriptor)
/// wins; without one, the document's own `mediaType` or shape decides.
pub(crate) fn parse_document(
    bytes: &[u8],
    media_type: Option<&str>,
    what: &str,
) -> Result<Document> {
    let bad = |message: String| ImageError::Format {
        what: what.to_string(),
        message,
    };
    let value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| bad(format!("not JSON: {e}")))?;
    let declared = media_type
        .filter(|m| !m.is_empty())
        .map(str::to_string)
        .or_else(|| {
            value
                .get("mediaType")
                .and_then(|m| m.as_str())
                .map(str::to_string)
        });
    let is_index = match declared.as_deref() {
        Some(OCI_INDEX | DOCKER_LIST) => true,
        Some(OCI_MANIFEST | DOCKER_MANIFEST) => false,
        Some(other) if value.get("manifests").is_none() && value.get("layers").is_none() => {
            return Err(ImageError::Unsupported {
                reference: what.to_string(),
                message: format!("media type {other}"),
            });
        }
        _ => value.get("manifests").is_some(),
    };
    if value.get("schemaVersion").and_then(|v| v.as_u64()) == Some(1) {
        return Err(ImageError::Unsupported {
            reference: what.to_string(),
            message: "Docker schema 1 manifests are not supported".into(),
        });
    }
    if is_index {
        serde_json::from_value(value)
            .map(Document::Index)
            .map_err(|e| bad(format!("bad image index: {e}")))
    } else {
        serde_json::from_value(value)
            .map(Document::Manifest)
            .map_err(|e| bad(format!("bad image manifest: {e}")))
    }
}

/// The architecture name OCI uses for the machine we run on.
pub(crate) fn host_architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "arm" => "arm",
        "powerpc64" => "ppc64le",
        "s390x" => "s390x",
        "riscv64" => "riscv64",
        other => other,
    }
}

/// Picks the linux image for `architecture` from an index; entries without a platform count
/// as a match only when nothing else does (single-image indexes written by some tools).
pub(crate) fn select_platform<'a>(index: &'a Index, architecture: &str) -> Option<&'a Descriptor> {
    let manifests = || {
        index
            .manifests
            .iter()
            .filter(|d| !matches!(d.media_type.as_str(), OCI_INDEX | DOCKER_LIST))
    };
    manifests()
        .find(|d| {
            d.platform
                .as_ref()
                .is_some_and(|p| p.os == "linux" && p.architecture == architecture)
        })
        .or_else(|| manifests().find(|d| d.platform.is_none()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_docker_schema2_and_oci_manifests_alike() {
        let docker = br#"{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json",
          "config":{"mediaType":"application/vnd.docker.container.image.v1+json","size":1,"digest":"sha256:aa"},
          "layers":[{"mediaType":"application/vnd.docker.image.rootfs.diff.tar.gzip","size":2,"digest":"sha256:bb"}]}"#;
        let Document::Manifest(m) = parse_document(docker, None, "x").unwrap() else {
            panic!("expected a manifest")
        };
        assert_eq!(m.layers[0].digest, "sha256:bb");
        let oci = br#"{"schemaVersion":2,"config":{"mediaType":"application/vnd.oci.image.config.v1+json","size":1,"digest":"sha256:aa"},"layers":[]}"#;
        assert!(matches!(
            parse_document(oci, Some(OCI_MANIFEST), "x").unwrap(),
            Document::Manifest(_)
        ));
        let schema1 = br#"{"schemaVersion":1,"name":"x","fsLayers":[]}"#;
        assert!(matches!(
            parse_document(schema1, None, "x"),
            Err(ImageError::Unsupported { .. })
        ));
    }

    #[test]
    fn index_selects_linux_for_the_architecture_and_skips_attestations() {
        let index = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[
          {"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:arm","size":1,"platform":{"architecture":"arm64","os":"linux","variant":"v8"}},
          {"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:win","size":1,"platform":{"architecture":"amd64","os":"windows"}},
          {"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:amd","size":1,"platform":{"architecture":"amd64","os":"linux"}},
          {"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:att","size":1,"platform":{"architecture":"unknown","os":"unknown"}}]}"#;
        let Document::Index(i) = parse_document(index, None, "x").unwrap() else {
            panic!("expected an index")
        };
        assert_eq!(select_platform(&i, "amd64").unwrap().digest, "sha256:amd");
        assert_eq!(select_platform(&i, "arm64").unwrap().digest, "sha256:arm");
        assert!(select_platform(&i, "s390x").is_none());
    }
}
