//! Which PersistentVolume a claim may bind to (upstream `FindMatchingVolume` and the helpers
//! around it), with no IO, so the binder and the scheduler's VolumeBinding plugin decide alike.

use std::collections::BTreeMap;

use api::validation::{Quantity, parse_quantity};
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::StorageClass;

/// On a claim: the binder finished binding it (upstream `AnnBindCompleted`).
pub const ANN_BIND_COMPLETED: &str = "pv.kubernetes.io/bind-completed";
/// On a claim or volume: the binder (not the user) set the reference to the other side.
pub const ANN_BOUND_BY_CONTROLLER: &str = "pv.kubernetes.io/bound-by-controller";
/// On a claim: the provisioner expected to create its volume.
pub const ANN_STORAGE_PROVISIONER: &str = "volume.kubernetes.io/storage-provisioner";
pub const ANN_BETA_STORAGE_PROVISIONER: &str = "volume.beta.kubernetes.io/storage-provisioner";
/// On a claim of a WaitForFirstConsumer class: the node its first consumer was scheduled to.
pub const ANN_SELECTED_NODE: &str = "volume.kubernetes.io/selected-node";
/// On a volume: the provisioner that created it (upstream `AnnDynamicallyProvisioned`).
pub const ANN_DYNAMICALLY_PROVISIONED: &str = "pv.kubernetes.io/provisioned-by";
/// The class of claims and volumes from before `storageClassName` existed.
pub const ANN_BETA_STORAGE_CLASS: &str = "volume.beta.kubernetes.io/storage-class";
/// On a StorageClass: claims without a class get this one.
pub const ANN_IS_DEFAULT_CLASS: &str = "storageclass.kubernetes.io/is-default-class";
pub const ANN_BETA_IS_DEFAULT_CLASS: &str = "storageclass.beta.kubernetes.io/is-default-class";
/// The provisioner of classes whose volumes are only ever created by hand.
pub const NO_PROVISIONER: &str = "kubernetes.io/no-provisioner";
/// The annotation value upstream writes for its boolean annotations.
pub const YES: &str = "yes";

pub const BINDING_MODE_WAIT_FOR_FIRST_CONSUMER: &str = "WaitForFirstConsumer";

fn annotation<'a>(
    meta: &'a k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    key: &str,
) -> Option<&'a str> {
    meta.annotations.as_ref()?.get(key).map(String::as_str)
}

pub fn has_annotation(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    key: &str,
) -> bool {
    annotation(meta, key).is_some()
}

/// The claim's class: `spec.storageClassName`, else the beta annotation, else "" (no class).
pub fn claim_class(claim: &PersistentVolumeClaim) -> &str {
    if let Some(class) = annotation(&claim.metadata, ANN_BETA_STORAGE_CLASS) {
        return class;
    }
    claim
        .spec
        .as_ref()
        .and_then(|s| s.storage_class_name.as_deref())
        .unwrap_or("")
}

/// The volume's class, as [`claim_class`].
pub fn volume_class(volume: &PersistentVolume) -> &str {
    if let Some(class) = annotation(&volume.metadata, ANN_BETA_STORAGE_CLASS) {
        return class;
    }
    volume
        .spec
        .as_ref()
        .and_then(|s| s.storage_class_name.as_deref())
        .unwrap_or("")
}

/// `resources.requests.storage` of the claim (zero when absent or unparsable).
pub fn claim_request(claim: &PersistentVolumeClaim) -> Quantity {
    claim
        .spec
        .as_ref()
        .and_then(|s| s.resources.as_ref())
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get("storage"))
        .and_then(|q| parse_quantity(&q.0).ok())
        .unwrap_or_else(zero)
}

/// `capacity.storage` of the volume (zero when absent or unparsable).
pub fn volume_capacity(volume: &PersistentVolume) -> Quantity {
    volume
        .spec
        .as_ref()
        .and_then(|s| s.capacity.as_ref())
        .and_then(|c| c.get("storage"))
        .and_then(|q| parse_quantity(&q.0).ok())
        .unwrap_or_else(zero)
}

fn zero() -> Quantity {
    Quantity::from_nanos(0, api::validation::quantity::QuantityFormat::DecimalSI)
}

pub fn claim_access_modes(claim: &PersistentVolumeClaim) -> &[String] {
    claim
        .spec
        .as_ref()
        .and_then(|s| s.access_modes.as_deref())
        .unwrap_or_default()
}

pub fn volume_access_modes(volume: &PersistentVolume) -> &[String] {
    volume
        .spec
        .as_ref()
        .and_then(|s| s.access_modes.as_deref())
        .unwrap_or_default()
}

/// Every mode the claim asks for is one the volume offers.
pub fn access_modes_satisfied(claim: &PersistentVolumeClaim, volume: &PersistentVolume) -> bool {
    let offered = volume_access_modes(volume);
    claim_access_modes(claim)
        .iter()
        .all(|m| offered.contains(m))
}

/// A Block claim cannot use a Filesystem volume and the reverse (unset means Filesystem).
pub fn volume_mode_mismatch(claim: &PersistentVolumeClaim, volume: &PersistentVolume) -> bool {
    let claim_mode = claim
        .spec
        .as_ref()
        .and_then(|s| s.volume_mode.as_deref())
        .unwrap_or("Filesystem");
    let volume_mode = volume
        .spec
        .as_ref()
        .and_then(|s| s.volume_mode.as_deref())
        .unwrap_or("Filesystem");
    claim_mode != volume_mode
}

/// Whether the volume's required node affinity admits the node (no affinity admits all).
pub fn node_affinity_matches(
    volume: &PersistentVolume,
    node_name: &str,
    labels: &BTreeMap<String, String>,
) -> bool {
    let Some(required) = volume
        .spec
        .as_ref()
        .and_then(|s| s.node_affinity.as_ref())
        .and_then(|a| a.required.as_ref())
    else {
        return true;
    };
    crate::util::node_selector_terms_match(&required.node_selector_terms, node_name, labels)
}

/// The volume's claimRef names this claim (and its uid, when the reference has one).
pub fn is_volume_bound_to_claim(volume: &PersistentVolume, claim: &PersistentVolumeClaim) -> bool {
    let Some(claim_ref) = volume.spec.as_ref().and_then(|s| s.claim_ref.as_ref()) else {
        return false;
    };
    if claim_ref.name.as_deref() != claim.metadata.name.as_deref()
        || claim_ref.namespace.as_deref() != claim.metadata.namespace.as_deref()
    {
        return false;
    }
    match claim_ref.uid.as_deref() {
        None | Some("") => true,
        uid => uid == claim.metadata.uid.as_deref(),
    }
}

fn volume_phase(volume: &PersistentVolume) -> &str {
    volume
        .status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

/// Whether the class binds only once a pod uses the claim.
pub fn is_delay_binding(class: Option<&StorageClass>) -> bool {
    class.and_then(|c| c.volume_binding_mode.as_deref())
        == Some(BINDING_MODE_WAIT_FOR_FIRST_CONSUMER)
}

/// The best volume for the claim among `volumes` (upstream `FindMatchingVolume`): a volume
/// already pre-bound to the claim wins; otherwise the Available, unclaimed volume of the
/// claim's class whose labels match the claim's selector, whose access modes cover the
/// claim's and whose capacity is at least the request, with the fewest access modes and then
/// the smallest capacity. With `node`, only volumes whose node affinity admits it count;
/// without a node, a delayed-binding claim matches only a pre-bound volume (the scheduler's
/// choice of node decides the rest).
pub fn find_matching_volume<'a>(
    claim: &PersistentVolumeClaim,
    volumes: impl IntoIterator<Item = &'a PersistentVolume>,
    node: Option<(&str, &BTreeMap<String, String>)>,
    delay_binding: bool,
) -> Option<&'a PersistentVolume> {
    let requested = claim_request(claim);
    let class = claim_class(claim);
    let selector = claim.spec.as_ref().and_then(|s| s.selector.as_ref());
    // No selector: any volume.
    let selector = match selector.map_or(Ok(api::selector::LabelSelector::everything()), |s| {
        api::selector::LabelSelector::from_label_selector(s)
    }) {
        Ok(s) => s,
        // An invalid selector matches nothing (validation rejects it anyway).
        Err(_) => return None,
    };
    let mut best: Option<(&PersistentVolume, usize, Quantity)> = None;
    for volume in volumes {
        if volume_mode_mismatch(claim, volume) || volume.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let affinity_ok =
            node.is_none_or(|(name, labels)| node_affinity_matches(volume, name, labels));
        if is_volume_bound_to_claim(volume, claim) {
            return affinity_ok.then_some(volume);
        }
        if node.is_none() && delay_binding {
            continue;
        }
        if volume_phase(volume) != "Available"
            || volume.spec.as_ref().is_some_and(|s| s.claim_ref.is_some())
            || !selector.matches(volume.metadata.labels.as_ref().unwrap_or(&BTreeMap::new()))
            || volume_class(volume) != class
            || !affinity_ok
            || !access_modes_satisfied(claim, volume)
        {
            continue;
        }
        let capacity = volume_capacity(volume);
        if capacity < requested {
            continue;
        }
        let modes = volume_access_modes(volume).len();
        let better = match &best {
            None => true,
            Some((_, best_modes, best_capacity)) => {
                (modes, capacity) < (*best_modes, *best_capacity)
            }
        };
        if better {
            best = Some((volume, modes, capacity));
        }
    }
    best.map(|(v, _, _)| v)
}

/// Why a volume the claim names in `spec.volumeName` cannot serve it (upstream
/// `checkVolumeSatisfyClaim`), or Ok.
pub fn check_volume_satisfies_claim(
    volume: &PersistentVolume,
    claim: &PersistentVolumeClaim,
) -> Result<(), String> {
    let requested = claim_request(claim);
    if volume_capacity(volume) < requested {
        return Err("requested PV is too small".into());
    }
    if volume_class(volume) != claim_class(claim) {
        return Err("storageClassName does not match".into());
    }
    if volume_mode_mismatch(claim, volume) {
        return Err("incompatible volumeMode".into());
    }
    if !access_modes_satisfied(claim, volume) {
        return Err("incompatible accessMode".into());
    }
    Ok(())
}

/// The default StorageClass (upstream `GetDefaultClass`): of the classes marked default, the
/// newest, and of equally new ones the first by name.
pub fn default_class<'a>(
    classes: impl IntoIterator<Item = &'a StorageClass>,
) -> Option<&'a StorageClass> {
    classes
        .into_iter()
        .filter(|c| is_default_class(c))
        .max_by(|a, b| {
            let created = |c: &StorageClass| c.metadata.creation_timestamp.as_ref().map(|t| t.0);
            created(a)
                .cmp(&created(b))
                .then_with(|| b.metadata.name.cmp(&a.metadata.name))
        })
}

/// The class carries the default-class annotation with the value "true".
pub fn is_default_class(class: &StorageClass) -> bool {
    [ANN_IS_DEFAULT_CLASS, ANN_BETA_IS_DEFAULT_CLASS]
        .iter()
        .any(|k| annotation(&class.metadata, k) == Some("true"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    /// JSON merge patch of `patch` onto `base` (objects merge, everything else replaces).
    fn merge(base: &mut Value, patch: &Value) {
        match (base, patch) {
            (Value::Object(b), Value::Object(p)) => {
                for (k, v) in p {
                    merge(b.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
            (b, p) => *b = p.clone(),
        }
    }

    fn claim(v: Value) -> PersistentVolumeClaim {
        let mut base = json!({
            "metadata": {"name": "data", "namespace": "ns", "uid": "c-1"},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}},
                     "storageClassName": "manual"},
        });
        merge(&mut base, &v);
        serde_json::from_value(base).unwrap()
    }

    fn volume(name: &str, v: Value) -> PersistentVolume {
        let mut base = json!({
            "metadata": {"name": name},
            "spec": {"accessModes": ["ReadWriteOnce"], "capacity": {"storage": "1Gi"},
                     "storageClassName": "manual", "hostPath": {"path": "/tmp"}},
            "status": {"phase": "Available"},
        });
        merge(&mut base, &v);
        serde_json::from_value(base).unwrap()
    }

    fn best<'a>(c: &PersistentVolumeClaim, vs: &'a [PersistentVolume]) -> Option<&'a str> {
        find_matching_volume(c, vs, None, false).and_then(|v| v.metadata.name.as_deref())
    }

    #[test]
    fn smallest_volume_that_fits_wins() {
        let vs = [
            volume("big", json!({"spec": {"capacity": {"storage": "10Gi"}}})),
            volume("small", json!({"spec": {"capacity": {"storage": "500Mi"}}})),
            volume("fit", json!({"spec": {"capacity": {"storage": "2Gi"}}})),
        ];
        assert_eq!(best(&claim(json!({})), &vs), Some("fit"));
        let huge = claim(json!({"spec": {"resources": {"requests": {"storage": "20Gi"}}}}));
        assert_eq!(best(&huge, &vs), None);
    }

    #[test]
    fn fewer_access_modes_are_preferred_and_all_asked_modes_are_needed() {
        let vs = [
            volume(
                "many",
                json!({"spec": {"accessModes": ["ReadWriteOnce", "ReadOnlyMany"], "capacity": {"storage": "1Gi"}}}),
            ),
            volume("one", json!({"spec": {"capacity": {"storage": "5Gi"}}})),
        ];
        assert_eq!(best(&claim(json!({})), &vs), Some("one"));
        let rox = claim(json!({"spec": {"accessModes": ["ReadOnlyMany"]}}));
        assert_eq!(best(&rox, &vs), Some("many"));
        let rwx = claim(json!({"spec": {"accessModes": ["ReadWriteMany"]}}));
        assert_eq!(best(&rwx, &vs), None);
    }

    #[test]
    fn class_phase_claim_ref_and_selector_filter() {
        let vs = [
            volume("other-class", json!({"spec": {"storageClassName": "fast"}})),
            volume("released", json!({"status": {"phase": "Released"}})),
            volume(
                "taken",
                json!({"spec": {"claimRef": {"name": "x", "namespace": "ns", "uid": "u"}}}),
            ),
            volume(
                "labelled",
                json!({"metadata": {"labels": {"tier": "gold"}}}),
            ),
        ];
        assert_eq!(best(&claim(json!({})), &vs), Some("labelled"));
        let selective = claim(json!({"spec": {"selector": {"matchLabels": {"tier": "silver"}}}}));
        assert_eq!(best(&selective, &vs), None);
        let gold = claim(json!({"spec": {"selector": {"matchLabels": {"tier": "gold"}}}}));
        assert_eq!(best(&gold, &vs), Some("labelled"));
        let fast = claim(json!({"spec": {"storageClassName": "fast"}}));
        assert_eq!(best(&fast, &vs), Some("other-class"));
        let block = claim(json!({"spec": {"volumeMode": "Block"}}));
        assert_eq!(best(&block, &vs), None);
    }

    #[test]
    fn pre_bound_volume_wins_even_if_larger_or_delayed() {
        let vs = [
            volume("fit", json!({})),
            volume(
                "mine",
                json!({"spec": {"capacity": {"storage": "9Gi"},
                "claimRef": {"name": "data", "namespace": "ns"}}, "status": {"phase": "Available"}}),
            ),
        ];
        assert_eq!(best(&claim(json!({})), &vs), Some("mine"));
        let found = find_matching_volume(&claim(json!({})), &vs, None, true);
        assert_eq!(found.and_then(|v| v.metadata.name.as_deref()), Some("mine"));
        // A reference to a previous claim of the same name (other uid) does not count.
        let stale = [volume(
            "stale",
            json!({"spec": {"claimRef": {"name": "data", "namespace": "ns", "uid": "old"}}}),
        )];
        assert_eq!(best(&claim(json!({})), &stale), None);
        // Delayed binding without a node binds only pre-bound volumes.
        assert!(find_matching_volume(&claim(json!({})), &vs[..1], None, true).is_none());
    }

    #[test]
    fn node_affinity_restricts_with_a_node() {
        let local = volume(
            "local",
            json!({"spec": {"nodeAffinity": {"required": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": ["n1"]}]}]}}}}),
        );
        let vs = [local];
        let labels =
            |n: &str| BTreeMap::from([("kubernetes.io/hostname".to_string(), n.to_string())]);
        let c = claim(json!({}));
        assert!(find_matching_volume(&c, &vs, Some(("n1", &labels("n1"))), true).is_some());
        assert!(find_matching_volume(&c, &vs, Some(("n2", &labels("n2"))), true).is_none());
        assert!(node_affinity_matches(&vs[0], "n1", &labels("n1")));
        assert!(!node_affinity_matches(&vs[0], "n2", &labels("n2")));
        assert!(node_affinity_matches(
            &volume("any", json!({})),
            "n2",
            &labels("n2")
        ));
    }

    #[test]
    fn satisfies_claim_reasons() {
        let c = claim(json!({}));
        assert!(check_volume_satisfies_claim(&volume("v", json!({})), &c).is_ok());
        let small = volume("v", json!({"spec": {"capacity": {"storage": "1Mi"}}}));
        assert_eq!(
            check_volume_satisfies_claim(&small, &c).unwrap_err(),
            "requested PV is too small"
        );
        let other = volume("v", json!({"spec": {"storageClassName": "x"}}));
        assert_eq!(
            check_volume_satisfies_claim(&other, &c).unwrap_err(),
            "storageClassName does not match"
        );
    }

    #[test]
    fn default_class_is_the_newest_marked_one() {
        let class = |name: &str, default: &str, created: &str| -> StorageClass {
            serde_json::from_value(
                json!({"metadata": {"name": name, "creationTimestamp": created,
                "annotations": {ANN_IS_DEFAULT_CLASS: default}}, "provisioner": "p"}),
            )
            .unwrap()
        };
        let classes = [
            class("old", "true", "2024-01-01T00:00:00Z"),
            class("new", "true", "2024-02-01T00:00:00Z"),
            class("newest-not-default", "false", "2024-03-01T00:00:00Z"),
        ];
        assert_eq!(
            default_class(&classes).and_then(|c| c.metadata.name.as_deref()),
            Some("new")
        );
        let ties = [
            class("b", "true", "2024-01-01T00:00:00Z"),
            class("a", "true", "2024-01-01T00:00:00Z"),
        ];
        assert_eq!(
            default_class(&ties).and_then(|c| c.metadata.name.as_deref()),
            Some("a")
        );
        assert!(default_class(&classes[2..]).is_none());
    }
}
