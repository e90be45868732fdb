//! DefaultStorageClass, as upstream's admission plugin (`storageclass/setdefault`): a
//! PersistentVolumeClaim created with no class at all (neither `spec.storageClassName` nor the
//! beta annotation; an empty name means "no class" and stays) gets the default StorageClass.

use k8s_openapi::api::storage::v1::StorageClass;
use serde_json::{Value, json};

use crate::ApiServer;

const IS_DEFAULT_CLASS: &str = "storageclass.kubernetes.io/is-default-class";
const BETA_IS_DEFAULT_CLASS: &str = "storageclass.beta.kubernetes.io/is-default-class";
const BETA_STORAGE_CLASS: &str = "volume.beta.kubernetes.io/storage-class";

/// Set the default class on a claim that has none, from the watch cache's classes.
pub fn admit(server: &ApiServer, claim: &mut Value) {
    if has_class(claim) {
        return;
    }
    let classes: Vec<StorageClass> = super::cached_objects(server, "storageclasses", "");
    if let Some(name) = default_class(&classes) {
        set_class(claim, &name);
    }
}

/// The claim names a class, or explicitly none (`""`).
pub fn has_class(claim: &Value) -> bool {
    claim
        .pointer("/metadata/annotations")
        .and_then(Value::as_object)
        .is_some_and(|a| a.contains_key(BETA_STORAGE_CLASS))
        || claim
            .pointer("/spec/storageClassName")
            .is_some_and(|c| !c.is_null())
}

fn set_class(claim: &mut Value, name: &str) {
    if !claim.get("spec").is_some_and(Value::is_object) {
        claim["spec"] = json!({});
    }
    claim["spec"]["storageClassName"] = json!(name);
}

/// Of the classes marked default, the newest; of equally new ones the first by name
/// (upstream `GetDefaultClass`).
pub fn default_class(classes: &[StorageClass]) -> Option<String> {
    let marked = |c: &&StorageClass| {
        c.metadata.annotations.as_ref().is_some_and(|a| {
            [IS_DEFAULT_CLASS, BETA_IS_DEFAULT_CLASS]
                .iter()
                .any(|k| a.get(*k).map(String::as_str) == Some("true"))
        })
    };
    classes
        .iter()
        .filter(marked)
        .max_by(|a, b| {
            let created = |c: &StorageClass| c.metadata.creation_timestamp.as_ref().map(|t| t.0);
            created(a)
                .cmp(&created(b))
                .then_with(|| b.metadata.name.cmp(&a.metadata.name))
        })
        .and_then(|c| c.metadata.name.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(name: &str, default: Option<&str>, created: &str) -> StorageClass {
        let annotations = default.map(|d| json!({IS_DEFAULT_CLASS: d}));
        serde_json::from_value(
            json!({"metadata": {"name": name, "creationTimestamp": created,
            "annotations": annotations}, "provisioner": "p"}),
        )
        .unwrap()
    }

    #[test]
    fn newest_default_wins_then_name() {
        let classes = [
            class("old", Some("true"), "2024-01-01T00:00:00Z"),
            class("new", Some("true"), "2024-02-01T00:00:00Z"),
            class("plain", None, "2024-03-01T00:00:00Z"),
            class("no", Some("false"), "2024-03-01T00:00:00Z"),
        ];
        assert_eq!(default_class(&classes).as_deref(), Some("new"));
        let ties = [
            class("b", Some("true"), "2024-01-01T00:00:00Z"),
            class("a", Some("true"), "2024-01-01T00:00:00Z"),
        ];
        assert_eq!(default_class(&ties).as_deref(), Some("a"));
        assert_eq!(default_class(&classes[2..]), None);
    }

    #[test]
    fn only_claims_without_any_class_get_one() {
        assert!(!has_class(&json!({"spec": {}})));
        assert!(!has_class(&json!({"spec": {"storageClassName": null}})));
        assert!(has_class(&json!({"spec": {"storageClassName": ""}})));
        assert!(has_class(&json!({"spec": {"storageClassName": "fast"}})));
        assert!(has_class(
            &json!({"metadata": {"annotations": {BETA_STORAGE_CLASS: "x"}}, "spec": {}})
        ));
        let mut claim = json!({"metadata": {"name": "c"}});
        set_class(&mut claim, "local-path");
        assert_eq!(claim["spec"]["storageClassName"], "local-path");
    }
}
