//! VolumeBinding: a pod's PersistentVolumeClaims decide where it may run (upstream
//! `plugins/volumebinding`).
//!
//! - PreFilter: every claim must exist and not be lost or deleted; an unbound claim of an
//!   Immediate class makes the pod wait for the binder (`pod has unbound immediate
//!   PersistentVolumeClaims`); an unbound claim of a WaitForFirstConsumer class does not.
//! - Filter: a bound claim's volume must admit the node by its node affinity; a delayed claim
//!   needs, on the node, an Available matching volume or a class that can provision there
//!   (not `kubernetes.io/no-provisioner`, allowedTopologies matching), and once the claim has
//!   a selected node, that node.
//!
//! Selecting the node of a delayed claim (upstream's PreBind) is the binder's job here: see
//! `controllers::persistentvolume`. The plugin reads claims, volumes and classes from the
//! informers in [`VolumeListers`]; without them ([`new`]) it passes every pod.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use controllers::persistentvolume::matching::{
    ANN_BIND_COMPLETED, ANN_SELECTED_NODE, NO_PROVISIONER, claim_class, find_matching_volume,
    has_annotation, is_delay_binding, node_affinity_matches, volume_class,
};
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::runtime::reflector::{ObjectRef, Store};

use crate::cache::Snapshot;
use crate::framework::types::empty_labels;
use crate::framework::{
    CycleState, FilterPlugin, NodeInfo, Plugin, PodInfo, PreFilterPlugin, ReservePlugin, Status,
};

pub const NAME: &str = "VolumeBinding";
pub const ERR_REASON_NODE_CONFLICT: &str = "node(s) didn't match PersistentVolume's node affinity";
pub const ERR_REASON_BIND_CONFLICT: &str =
    "node(s) didn't find available persistent volumes to bind";
pub const ERR_REASON_PV_NOT_EXIST: &str =
    "node(s) unavailable due to one or more pvc(s) bound to non-existent pv(s)";
pub const ERR_UNBOUND_IMMEDIATE: &str = "pod has unbound immediate PersistentVolumeClaims";

/// The informers the plugin reads.
#[derive(Clone)]
pub struct VolumeListers {
    pub claims: Store<PersistentVolumeClaim>,
    pub volumes: Store<PersistentVolume>,
    pub classes: Store<StorageClass>,
}

pub struct VolumeBinding {
    listers: Option<VolumeListers>,
}

/// The plugin with no informers: it lets every pod through.
pub fn new() -> Arc<dyn Plugin> {
    Arc::new(VolumeBinding { listers: None })
}

/// The plugin reading claims, volumes and classes from these informers.
pub fn with_listers(listers: VolumeListers) -> Arc<dyn Plugin> {
    Arc::new(VolumeBinding {
        listers: Some(listers),
    })
}

/// Whether the pod uses any PersistentVolumeClaim (directly or as an ephemeral volume).
pub fn has_claims(pod: &PodInfo) -> bool {
    pod.pod
        .spec
        .as_ref()
        .and_then(|s| s.volumes.as_ref())
        .is_some_and(|vs| {
            vs.iter()
                .any(|v| v.persistent_volume_claim.is_some() || v.ephemeral.is_some())
        })
}

const STATE_KEY: &str = NAME;

/// What PreFilter learned about the pod's claims.
#[derive(Clone, Default)]
struct PodClaims {
    /// The volumes of fully bound claims (None: the volume does not exist).
    bound: Vec<Option<Arc<PersistentVolume>>>,
    delayed: Vec<DelayedClaim>,
}

#[derive(Clone)]
struct DelayedClaim {
    claim: Arc<PersistentVolumeClaim>,
    selected_node: Option<String>,
    /// Volumes of the claim's class, to match per node.
    candidates: Vec<Arc<PersistentVolume>>,
    /// The class, if it can provision volumes.
    provisioner: Option<Arc<StorageClass>>,
}

/// Why a pod's claims stop it everywhere, from the claims alone; otherwise what Filter needs.
fn pod_claims(pod: &PodInfo, listers: &VolumeListers) -> Result<PodClaims, Status> {
    let namespace = pod.pod.metadata.namespace.as_deref().unwrap_or("");
    let pod_name = pod.pod.metadata.name.as_deref().unwrap_or("");
    let volumes = pod
        .pod
        .spec
        .as_ref()
        .and_then(|s| s.volumes.as_deref())
        .unwrap_or_default();
    let mut out = PodClaims::default();
    let mut immediate = false;
    for volume in volumes {
        let (name, ephemeral) = if let Some(c) = &volume.persistent_volume_claim {
            (c.claim_name.clone(), false)
        } else if volume.ephemeral.is_some() {
            (format!("{pod_name}-{}", volume.name), true)
        } else {
            continue;
        };
        let Some(claim) = listers.claims.get(&ObjectRef::new(&name).within(namespace)) else {
            return Err(Status::unresolvable(if ephemeral {
                format!(
                    "waiting for ephemeral volume controller to create the persistentvolumeclaim \"{name}\""
                )
            } else {
                format!("persistentvolumeclaim \"{name}\" not found")
            }));
        };
        let volume_name = claim
            .spec
            .as_ref()
            .and_then(|s| s.volume_name.clone())
            .unwrap_or_default();
        if claim.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Lost") {
            return Err(Status::unresolvable(format!(
                "persistentvolumeclaim \"{name}\" bound to non-existent persistentvolume \"{volume_name}\""
            )));
        }
        if claim.metadata.deletion_timestamp.is_some() {
            return Err(Status::unresolvable(format!(
                "persistentvolumeclaim \"{name}\" is being deleted"
            )));
        }
        if !volume_name.is_empty() && has_annotation(&claim.metadata, ANN_BIND_COMPLETED) {
            out.bound
                .push(listers.volumes.get(&ObjectRef::new(&volume_name)));
            continue;
        }
        let class_name = claim_class(&claim);
        let class = (!class_name.is_empty())
            .then(|| listers.classes.get(&ObjectRef::new(class_name)))
            .flatten();
        if !is_delay_binding(class.as_deref()) || !volume_name.is_empty() {
            immediate = true;
            continue;
        }
        let candidates = listers
            .volumes
            .state()
            .into_iter()
            .filter(|v| volume_class(v) == class_name)
            .collect();
        out.delayed.push(DelayedClaim {
            selected_node: claim
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(ANN_SELECTED_NODE))
                .cloned(),
            provisioner: class.filter(|c| c.provisioner != NO_PROVISIONER),
            claim,
            candidates,
        });
    }
    if immediate {
        return Err(Status::unresolvable(ERR_UNBOUND_IMMEDIATE));
    }
    Ok(out)
}

/// The class's allowedTopologies admit a node with these labels (none: every node).
fn topology_allows(class: &StorageClass, labels: &BTreeMap<String, String>) -> bool {
    let Some(terms) = class.allowed_topologies.as_ref().filter(|t| !t.is_empty()) else {
        return true;
    };
    terms.iter().any(|term| {
        term.match_label_expressions.iter().flatten().all(|r| {
            labels
                .get(&r.key)
                .is_some_and(|v| r.values.iter().any(|x| x == v))
        })
    })
}

/// The reasons the node cannot serve the pod's claims (empty: it can).
fn node_reasons(
    claims: &PodClaims,
    node_name: &str,
    labels: &BTreeMap<String, String>,
) -> Vec<String> {
    let mut node_conflict = false;
    let mut bind_conflict = false;
    let mut pv_missing = false;
    for volume in &claims.bound {
        match volume {
            Some(v) => node_conflict |= !node_affinity_matches(v, node_name, labels),
            None => pv_missing = true,
        }
    }
    // Volumes already matched to another claim of this pod on this node.
    let mut taken: HashSet<&str> = HashSet::new();
    for delayed in &claims.delayed {
        if delayed
            .selected_node
            .as_deref()
            .is_some_and(|n| n != node_name)
        {
            bind_conflict = true;
            break;
        }
        let free = delayed
            .candidates
            .iter()
            .map(|v| v.as_ref())
            .filter(|v| !taken.contains(v.metadata.name.as_deref().unwrap_or("")));
        if let Some(v) = find_matching_volume(&delayed.claim, free, Some((node_name, labels)), true)
        {
            taken.insert(v.metadata.name.as_deref().unwrap_or(""));
            continue;
        }
        let provisionable = delayed
            .provisioner
            .as_ref()
            .is_some_and(|c| topology_allows(c, labels));
        bind_conflict |= !provisionable;
    }
    let mut reasons = Vec::new();
    if node_conflict {
        reasons.push(ERR_REASON_NODE_CONFLICT.to_string());
    }
    if bind_conflict {
        reasons.push(ERR_REASON_BIND_CONFLICT.to_string());
    }
    if pv_missing {
        reasons.push(ERR_REASON_PV_NOT_EXIST.to_string());
    }
    reasons
}

impl Plugin for VolumeBinding {
    fn name(&self) -> &'static str {
        NAME
    }
    fn as_pre_filter(&self) -> Option<&dyn PreFilterPlugin> {
        Some(self)
    }
    fn as_filter(&self) -> Option<&dyn FilterPlugin> {
        Some(self)
    }
    fn as_reserve(&self) -> Option<&dyn ReservePlugin> {
        Some(self)
    }
}

impl PreFilterPlugin for VolumeBinding {
    fn pre_filter(&self, state: &mut CycleState, pod: &PodInfo, _snapshot: &Snapshot) -> Status {
        let Some(listers) = self.listers.as_ref().filter(|_| has_claims(pod)) else {
            return Status::skip();
        };
        match pod_claims(pod, listers) {
            Ok(claims) if claims.bound.is_empty() && claims.delayed.is_empty() => Status::skip(),
            Ok(claims) => {
                state.write(STATE_KEY, claims);
                Status::success()
            }
            Err(status) => status,
        }
    }
}

impl FilterPlugin for VolumeBinding {
    fn filter(&self, state: &CycleState, _pod: &PodInfo, node: &NodeInfo) -> Status {
        let Some(claims) = state.read::<PodClaims>(STATE_KEY) else {
            return Status::success();
        };
        let labels = node
            .node
            .as_ref()
            .and_then(|n| n.metadata.labels.as_ref())
            .unwrap_or(empty_labels());
        let reasons = node_reasons(claims, &node.name, labels);
        if reasons.is_empty() {
            Status::success()
        } else {
            Status::with_reasons(
                crate::framework::Code::UnschedulableAndUnresolvable,
                reasons,
            )
        }
    }
}

impl ReservePlugin for VolumeBinding {
    fn reserve(&self, _state: &mut CycleState, _pod: &PodInfo, _node: &str) -> Status {
        Status::success()
    }
    fn unreserve(&self, _state: &mut CycleState, _pod: &PodInfo, _node: &str) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framework::Code;
    use crate::plugins::testutil::{node_info, pod_info, simple_node};
    use kube::runtime::reflector::store::Writer;
    use kube::runtime::watcher;
    use serde_json::{Value, json};

    fn store<K>(objects: Vec<Value>) -> Store<K>
    where
        K: kube::Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + 'static,
        K: kube::runtime::reflector::Lookup<DynamicType = ()>,
    {
        let mut writer: Writer<K> = Writer::default();
        writer.apply_watcher_event(&watcher::Event::Init);
        for o in objects {
            writer.apply_watcher_event(&watcher::Event::InitApply(
                serde_json::from_value(o).unwrap(),
            ));
        }
        writer.apply_watcher_event(&watcher::Event::InitDone);
        writer.as_reader()
    }

    fn listers(claims: Vec<Value>, volumes: Vec<Value>) -> VolumeListers {
        VolumeListers {
            claims: store(claims),
            volumes: store(volumes),
            classes: store(vec![
                json!({"metadata": {"name": "local-path"}, "provisioner": "rancher.io/local-path",
                       "volumeBindingMode": "WaitForFirstConsumer"}),
                json!({"metadata": {"name": "manual"}, "provisioner": NO_PROVISIONER,
                       "volumeBindingMode": "WaitForFirstConsumer"}),
                json!({"metadata": {"name": "zoned"}, "provisioner": "p",
                       "volumeBindingMode": "WaitForFirstConsumer",
                       "allowedTopologies": [{"matchLabelExpressions": [{"key": "zone", "values": ["a"]}]}]}),
                json!({"metadata": {"name": "fast"}, "provisioner": "p", "volumeBindingMode": "Immediate"}),
            ]),
        }
    }

    fn claim(name: &str, class: &str, extra: Value) -> Value {
        let mut c = json!({"metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}")},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}},
                     "storageClassName": class}});
        if let Some(meta) = extra.get("metadata") {
            for (k, v) in meta.as_object().unwrap() {
                c["metadata"][k] = v.clone();
            }
        }
        if let Some(spec) = extra.get("spec") {
            for (k, v) in spec.as_object().unwrap() {
                c["spec"][k] = v.clone();
            }
        }
        if let Some(status) = extra.get("status") {
            c["status"] = status.clone();
        }
        c
    }

    fn local_volume(name: &str, class: &str, node: &str, extra_spec: Value) -> Value {
        let mut v = json!({"metadata": {"name": name}, "spec": {
            "accessModes": ["ReadWriteOnce"], "capacity": {"storage": "1Gi"}, "storageClassName": class,
            "local": {"path": "/x"},
            "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                {"key": "kubernetes.io/hostname", "operator": "In", "values": [node]}]}]}}},
            "status": {"phase": "Available"}});
        for (k, val) in extra_spec.as_object().unwrap() {
            v["spec"][k] = val.clone();
        }
        v
    }

    fn pod_with(claims: &[&str]) -> Arc<PodInfo> {
        let volumes: Vec<_> = claims
            .iter()
            .map(|c| json!({"name": c, "persistentVolumeClaim": {"claimName": c}}))
            .collect();
        pod_info(json!({"metadata": {"name": "p", "namespace": "default"},
            "spec": {"containers": [{"name": "c", "image": "i"}], "volumes": volumes}}))
    }

    fn node(name: &str, zone: &str) -> NodeInfo {
        node_info(
            simple_node(name, json!({"kubernetes.io/hostname": name, "zone": zone})),
            vec![],
        )
    }

    /// PreFilter, then Filter on each node; the PreFilter status if it stopped the pod.
    fn run(l: &VolumeListers, claims: &[&str], nodes: &[NodeInfo]) -> Result<Vec<Status>, Status> {
        let plugin = VolumeBinding {
            listers: Some(l.clone()),
        };
        let mut state = CycleState::default();
        let pod = pod_with(claims);
        let status = plugin.pre_filter(&mut state, &pod, &Snapshot::default());
        match status.code {
            Code::Success => Ok(nodes
                .iter()
                .map(|n| plugin.filter(&state, &pod, n))
                .collect()),
            Code::Skip => Ok(nodes.iter().map(|_| Status::success()).collect()),
            _ => Err(status),
        }
    }

    #[test]
    fn claims() {
        let without = pod_info(json!({}));
        assert!(!has_claims(&without));
        let with = pod_info(json!({"spec": {"containers": [{"name": "c", "image": "i"}],
            "volumes": [{"name": "d", "persistentVolumeClaim": {"claimName": "data"}}]}}));
        assert!(has_claims(&with));
    }

    #[test]
    fn missing_deleted_lost_and_unbound_immediate_claims_stop_the_pod() {
        let l = listers(
            vec![
                claim(
                    "gone",
                    "local-path",
                    json!({"metadata": {"deletionTimestamp": "2024-01-01T00:00:00Z"}}),
                ),
                claim(
                    "lost",
                    "local-path",
                    json!({"spec": {"volumeName": "pv-x"}, "status": {"phase": "Lost"}}),
                ),
                claim("fast", "fast", json!({})),
                claim("unknown-class", "nope", json!({})),
            ],
            vec![],
        );
        let n = [node("n1", "a")];
        let err = run(&l, &["missing"], &n).unwrap_err();
        assert_eq!(err.code, Code::UnschedulableAndUnresolvable);
        assert_eq!(err.message(), "persistentvolumeclaim \"missing\" not found");
        assert_eq!(
            run(&l, &["gone"], &n).unwrap_err().message(),
            "persistentvolumeclaim \"gone\" is being deleted"
        );
        assert_eq!(
            run(&l, &["lost"], &n).unwrap_err().message(),
            "persistentvolumeclaim \"lost\" bound to non-existent persistentvolume \"pv-x\""
        );
        assert_eq!(
            run(&l, &["fast"], &n).unwrap_err().message(),
            ERR_UNBOUND_IMMEDIATE
        );
        assert_eq!(
            run(&l, &["unknown-class"], &n).unwrap_err().message(),
            ERR_UNBOUND_IMMEDIATE
        );
    }

    #[test]
    fn unbound_wait_for_first_consumer_claim_fits_any_node() {
        let l = listers(vec![claim("data", "local-path", json!({}))], vec![]);
        let statuses = run(&l, &["data"], &[node("n1", "a"), node("n2", "b")]).unwrap();
        assert!(statuses.iter().all(Status::is_success));
    }

    #[test]
    fn bound_volume_node_affinity_restricts_nodes() {
        let bound = claim(
            "data",
            "local-path",
            json!({"spec": {"volumeName": "pv-1"},
            "metadata": {"annotations": {ANN_BIND_COMPLETED: "yes"}}, "status": {"phase": "Bound"}}),
        );
        let l = listers(
            vec![bound.clone()],
            vec![local_volume("pv-1", "local-path", "n2", json!({}))],
        );
        let s = run(&l, &["data"], &[node("n1", "a"), node("n2", "b")]).unwrap();
        assert_eq!(s[0].code, Code::UnschedulableAndUnresolvable);
        assert_eq!(s[0].reasons, vec![ERR_REASON_NODE_CONFLICT.to_string()]);
        assert!(s[1].is_success());
        // The volume is gone.
        let l = listers(vec![bound], vec![]);
        let s = run(&l, &["data"], &[node("n1", "a")]).unwrap();
        assert_eq!(s[0].reasons, vec![ERR_REASON_PV_NOT_EXIST.to_string()]);
    }

    #[test]
    fn selected_node_is_the_only_fit() {
        let c = claim(
            "data",
            "local-path",
            json!({"metadata": {"annotations": {ANN_SELECTED_NODE: "n2"}}}),
        );
        let l = listers(vec![c], vec![]);
        let s = run(&l, &["data"], &[node("n1", "a"), node("n2", "b")]).unwrap();
        assert_eq!(s[0].reasons, vec![ERR_REASON_BIND_CONFLICT.to_string()]);
        assert!(s[1].is_success());
    }

    #[test]
    fn no_provisioner_needs_a_static_volume_on_the_node() {
        let l = listers(
            vec![
                claim("a", "manual", json!({})),
                claim("b", "manual", json!({})),
            ],
            vec![local_volume("pv-n2", "manual", "n2", json!({}))],
        );
        let s = run(&l, &["a"], &[node("n1", "a"), node("n2", "b")]).unwrap();
        assert_eq!(s[0].reasons, vec![ERR_REASON_BIND_CONFLICT.to_string()]);
        assert!(s[1].is_success());
        // Two claims cannot both take the one volume.
        let s = run(&l, &["a", "b"], &[node("n2", "b")]).unwrap();
        assert_eq!(s[0].reasons, vec![ERR_REASON_BIND_CONFLICT.to_string()]);
    }

    #[test]
    fn allowed_topologies_limit_provisioning() {
        let l = listers(vec![claim("z", "zoned", json!({}))], vec![]);
        let s = run(&l, &["z"], &[node("n1", "a"), node("n2", "b")]).unwrap();
        assert!(s[0].is_success());
        assert_eq!(s[1].reasons, vec![ERR_REASON_BIND_CONFLICT.to_string()]);
    }

    #[test]
    fn without_listers_every_pod_passes() {
        let plugin = VolumeBinding { listers: None };
        let mut state = CycleState::default();
        let status = plugin.pre_filter(&mut state, &pod_with(&["x"]), &Snapshot::default());
        assert_eq!(status.code, Code::Skip);
    }
}
