//! Image names as Docker Hub spells them (`nginx:1.14.2` is `docker.io/library/nginx:1.14.2`)
//! and `imagePullPolicy`.

use oci_client::Reference;

use super::{ImageError, Result};

/// Parses an image name with Docker's normalization: no registry means `docker.io`, a
/// single-component Docker Hub repository gets `library/`, no tag and no digest means `latest`.
pub fn parse(name: &str) -> Result<Reference> {
    let invalid = |message: String| ImageError::InvalidReference {
        reference: name.to_string(),
        message,
    };
    if name.is_empty() {
        return Err(invalid("empty name".into()));
    }
    if name.trim() != name {
        return Err(invalid("leading or trailing whitespace".into()));
    }
    let reference: Reference = name.parse().map_err(|e| invalid(format!("{e}")))?;
    if let Some(digest) = reference.digest() {
        super::digest::hex_of(digest).map_err(|e| invalid(e.to_string()))?;
    }
    Ok(reference)
}

/// The full name of an image (`busybox` -> `docker.io/library/busybox:latest`).
pub fn normalize_name(name: &str) -> Result<String> {
    Ok(full_name(&parse(name)?))
}

/// `registry/repository[:tag][@digest]` of a parsed reference.
pub(crate) fn full_name(reference: &Reference) -> String {
    let mut out = format!("{}/{}", reference.registry(), reference.repository());
    if let Some(tag) = reference.tag() {
        out.push(':');
        out.push_str(tag);
    }
    if let Some(digest) = reference.digest() {
        out.push('@');
        out.push_str(digest);
    }
    out
}

/// `registry/repository` without tag or digest.
pub(crate) fn repository_name(reference: &Reference) -> String {
    format!("{}/{}", reference.registry(), reference.repository())
}

/// `imagePullPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullPolicy {
    Always,
    IfNotPresent,
    Never,
}

impl PullPolicy {
    /// The policy a container gets: the one it names, or upstream's default: `Always` for
    /// `:latest` or no tag (unless a digest pins it), `IfNotPresent` otherwise.
    pub fn for_container(policy: Option<&str>, image: &str) -> Result<PullPolicy> {
        match policy.filter(|p| !p.is_empty()) {
            Some("Always") => Ok(PullPolicy::Always),
            Some("IfNotPresent") => Ok(PullPolicy::IfNotPresent),
            Some("Never") => Ok(PullPolicy::Never),
            Some(other) => Err(ImageError::InvalidReference {
                reference: image.to_string(),
                message: format!(
                    "unsupported imagePullPolicy {other:?}: supported values: \"Always\", \"IfNotPresent\", \"Never\""
                ),
            }),
            None => Ok(PullPolicy::default_for(image)),
        }
    }

    /// Upstream's defaulting: the tag `latest`, written or implied, means `Always`.
    pub fn default_for(image: &str) -> PullPolicy {
        // Parse the tag by hand: a digest-only name has no tag (not an implied `latest`).
        let without_digest = image.split('@').next().unwrap_or(image);
        let last = without_digest.rsplit('/').next().unwrap_or(without_digest);
        let tag = last.split_once(':').map(|(_, tag)| tag);
        let pinned = image.contains('@');
        match tag {
            Some("latest") => PullPolicy::Always,
            None if !pinned => PullPolicy::Always,
            _ => PullPolicy::IfNotPresent,
        }
    }

    /// Whether to pull, given whether the image is already present. `Never` with the image
    /// missing is an error ([`ImageError::NotPresent`]), reported by the caller.
    pub fn should_pull(self, present: bool) -> bool {
        match self {
            PullPolicy::Always => true,
            PullPolicy::IfNotPresent => !present,
            PullPolicy::Never => false,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            PullPolicy::Always => "Always",
            PullPolicy::IfNotPresent => "IfNotPresent",
            PullPolicy::Never => "Never",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_hub_names_are_normalized() {
        let cases = [
            ("nginx:1.14.2", "docker.io/library/nginx:1.14.2"),
            ("busybox", "docker.io/library/busybox:latest"),
            ("bitnami/redis:7", "docker.io/bitnami/redis:7"),
            ("docker.io/nginx:1", "docker.io/library/nginx:1"),
            ("127.0.0.1:5000/web:1.0", "127.0.0.1:5000/web:1.0"),
            ("localhost:5000/a/b/c:x", "localhost:5000/a/b/c:x"),
            ("quay.io/coreos/etcd:v3.5", "quay.io/coreos/etcd:v3.5"),
        ];
        for (input, want) in cases {
            assert_eq!(normalize_name(input).unwrap(), want, "{input}");
        }
        let digest = format!("sha256:{}", "a".repeat(64));
        assert_eq!(
            normalize_name(&format!("nginx@{digest}")).unwrap(),
            format!("docker.io/library/nginx@{digest}")
        );
    }

    #[test]
    fn bad_names_are_invalid() {
        for bad in ["", "Nginx", "nginx:", " nginx", "nginx@sha256:xyz", "a//b"] {
            assert!(
                matches!(parse(bad), Err(ImageError::InvalidReference { .. })),
                "{bad:?} should be invalid"
            );
        }
    }

    #[test]
    fn pull_policy_defaults_as_upstream() {
        let digest = format!("sha256:{}", "a".repeat(64));
        assert_eq!(PullPolicy::default_for("nginx"), PullPolicy::Always);
        assert_eq!(PullPolicy::default_for("nginx:latest"), PullPolicy::Always);
        assert_eq!(
            PullPolicy::default_for("127.0.0.1:5000/nginx"),
            PullPolicy::Always
        );
        assert_eq!(
            PullPolicy::default_for("nginx:1.14.2"),
            PullPolicy::IfNotPresent
        );
        assert_eq!(
            PullPolicy::default_for("127.0.0.1:5000/nginx:1"),
            PullPolicy::IfNotPresent
        );
        assert_eq!(
            PullPolicy::default_for(&format!("nginx@{digest}")),
            PullPolicy::IfNotPresent
        );
        assert_eq!(
            PullPolicy::for_container(Some("Never"), "nginx").unwrap(),
            PullPolicy::Never
        );
        assert_eq!(
            PullPolicy::for_container(Some(""), "nginx:1").unwrap(),
            PullPolicy::IfNotPresent
        );
        assert!(PullPolicy::for_container(Some("Sometimes"), "nginx").is_err());
        assert!(PullPolicy::Always.should_pull(true));
        assert!(!PullPolicy::IfNotPresent.should_pull(true));
        assert!(PullPolicy::IfNotPresent.should_pull(false));
        assert!(!PullPolicy::Never.should_pull(false));
    }
}
