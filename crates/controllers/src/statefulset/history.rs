//! ControllerRevisions: the recorded pod templates of a StatefulSet or DaemonSet (upstream
//! `controller/history`). A revision's data is the strategic merge patch
//! `{"spec":{"template":{…,"$patch":"replace"}}}` that restores its template, which is also
//! what `kubectl rollout undo` applies.

use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::api::core::v1::PodTemplateSpec;
use serde_json::{Value, json};

use crate::util;

/// Upstream caps the name prefix so that `<prefix>-<hash>` stays a valid name.
const MAX_PREFIX_LENGTH: usize = 223;

/// The patch recorded in a revision for `template`.
pub fn template_patch(template: &PodTemplateSpec) -> Value {
    let mut template = serde_json::to_value(template).unwrap_or_else(|_| json!({}));
    if let Some(t) = template.as_object_mut() {
        t.insert("$patch".into(), json!("replace"));
    }
    json!({ "spec": { "template": template } })
}

/// The pod template a revision restores, if its data has one.
pub fn template_of(revision: &ControllerRevision) -> Option<PodTemplateSpec> {
    let mut template = revision.data.as_ref()?.0.pointer("/spec/template")?.clone();
    if let Some(t) = template.as_object_mut() {
        t.remove("$patch");
    }
    serde_json::from_value(template).ok()
}

/// Whether two revisions record the same state (compared as JSON values, so key order and
/// formatting do not matter).
pub fn same_data(revision: &ControllerRevision, data: &Value) -> bool {
    revision.data.as_ref().is_some_and(|d| &d.0 == data)
}

/// Upstream `HashControllerRevision`: FNV-1 of the data, then of the collision count if any,
/// safely encoded.
pub fn hash_revision_data(data: &Value, collision_count: Option<i32>) -> String {
    let bytes = serde_json::to_vec(data).unwrap_or_default();
    let probe = collision_count.map(|c| c.to_string()).unwrap_or_default();
    let hash = fnv_hash(&bytes, probe.as_bytes());
    util::safe_encode_string(&hash.to_string())
}

fn fnv_hash(data: &[u8], probe: &[u8]) -> u32 {
    util::fnv32(&[data, probe])
}

/// `<prefix>-<hash>`, with the prefix cut to keep the name valid.
pub fn revision_name(prefix: &str, hash: &str) -> String {
    let prefix = if prefix.len() > MAX_PREFIX_LENGTH {
        let mut end = MAX_PREFIX_LENGTH;
        while !prefix.is_char_boundary(end) {
            end -= 1;
        }
        &prefix[..end]
    } else {
        prefix
    };
    format!("{prefix}-{hash}")
}

/// One more than the highest revision number (1 when there is none).
pub fn next_revision<'a>(revisions: impl IntoIterator<Item = &'a ControllerRevision>) -> i64 {
    revisions
        .into_iter()
        .map(|r| r.revision)
        .max()
        .map_or(1, |m| m + 1)
}

/// Sort by revision number, then name, as upstream's `SortControllerRevisions`.
pub fn sort_revisions<T: AsRef<ControllerRevision>>(revisions: &mut [T]) {
    revisions.sort_by(|a, b| {
        let (a, b) = (a.as_ref(), b.as_ref());
        a.revision
            .cmp(&b.revision)
            .then_with(|| a.metadata.name.cmp(&b.metadata.name))
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{Container, PodSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use k8s_openapi::apimachinery::pkg::runtime::RawExtension;

    fn template(image: &str) -> PodTemplateSpec {
        PodTemplateSpec {
            metadata: Some(ObjectMeta {
                labels: Some([("app".to_string(), "web".to_string())].into()),
                ..Default::default()
            }),
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "c".into(),
                    image: Some(image.into()),
                    ..Default::default()
                }],
                ..Default::default()
            }),
        }
    }

    #[test]
    fn hash_is_stable_and_depends_on_data_and_collisions() {
        let a = template_patch(&template("nginx:1"));
        let b = template_patch(&template("nginx:2"));
        assert_eq!(
            hash_revision_data(&a, None),
            hash_revision_data(&a.clone(), None)
        );
        assert_ne!(hash_revision_data(&a, None), hash_revision_data(&b, None));
        assert_ne!(
            hash_revision_data(&a, None),
            hash_revision_data(&a, Some(1))
        );
        let hash = hash_revision_data(&a, None);
        assert!(
            hash.chars()
                .all(|c| "bcdfghjklmnpqrstvwxz2456789".contains(c)),
            "{hash}"
        );
    }

    #[test]
    fn patch_round_trips_the_template() {
        let t = template("nginx:1");
        let patch = template_patch(&t);
        assert_eq!(patch["spec"]["template"]["$patch"], "replace");
        let revision = ControllerRevision {
            data: Some(RawExtension(patch.clone())),
            ..Default::default()
        };
        assert_eq!(template_of(&revision), Some(t));
        assert!(same_data(&revision, &patch));
        assert!(!same_data(&revision, &template_patch(&template("nginx:2"))));
    }

    #[test]
    fn names_and_numbers() {
        assert_eq!(revision_name("web", "abc"), "web-abc");
        assert_eq!(revision_name(&"x".repeat(300), "h").len(), 225);
        let revs: Vec<ControllerRevision> = [3, 1]
            .into_iter()
            .map(|revision| ControllerRevision {
                revision,
                ..Default::default()
            })
            .collect();
        assert_eq!(next_revision(&revs), 4);
        assert_eq!(next_revision(&[] as &[ControllerRevision]), 1);
    }
}
