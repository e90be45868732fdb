//! What the framework hands to plugins: a pod with everything parsed once (`PodInfo`) and a
//! node with the pods on it and their sums (`NodeInfo`), as upstream's `framework.PodInfo` and
//! `framework.NodeInfo`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, OnceLock};

use api::selector::LabelSelector;
use k8s_openapi::api::core::v1::{Node, Pod, PodAffinityTerm, Taint};
use k8s_openapi::apimachinery::pkg::apis::meta::v1 as metav1;

use crate::resource::{self, Resource};

pub type Labels = BTreeMap<String, String>;

pub fn empty_labels() -> &'static Labels {
    static EMPTY: OnceLock<Labels> = OnceLock::new();
    EMPTY.get_or_init(BTreeMap::new)
}

/// `namespace/name`, the key pods are known by in the cache and the queue.
pub fn pod_key(pod: &Pod) -> String {
    format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or(""),
        pod.metadata.name.as_deref().unwrap_or("")
    )
}

/// A label selector, with `matchLabelKeys` folded in from the owning pod's labels (as upstream
/// does for pod affinity and topology spread); an invalid selector selects nothing.
pub fn selector_with_match_label_keys(
    selector: Option<&metav1::LabelSelector>,
    match_label_keys: Option<&Vec<String>>,
    pod_labels: &Labels,
) -> LabelSelector {
    let Some(selector) = selector else {
        return LabelSelector::nothing();
    };
    let mut selector = selector.clone();
    for key in match_label_keys.into_iter().flatten() {
        if let Some(value) = pod_labels.get(key) {
            selector
                .match_expressions
                .get_or_insert_with(Vec::new)
                .push(metav1::LabelSelectorRequirement {
                    key: key.clone(),
                    operator: "In".into(),
                    values: Some(vec![value.clone()]),
                });
        }
    }
    LabelSelector::from_label_selector(&selector).unwrap_or_else(|_| LabelSelector::nothing())
}

/// One pod (anti-)affinity term, parsed.
#[derive(Debug, Clone)]
pub struct AffinityTerm {
    pub selector: LabelSelector,
    pub namespaces: BTreeSet<String>,
    /// `None` when the term has no namespaceSelector (only `namespaces` count).
    pub namespace_selector: Option<LabelSelector>,
    pub topology_key: String,
}

impl AffinityTerm {
    pub fn new(owner_namespace: &str, owner_labels: &Labels, term: &PodAffinityTerm) -> Self {
        let mut namespaces: BTreeSet<String> = term.namespaces.iter().flatten().cloned().collect();
        let namespace_selector = term.namespace_selector.as_ref().map(|s| {
            LabelSelector::from_label_selector(s).unwrap_or_else(|_| LabelSelector::nothing())
        });
        if namespaces.is_empty() && namespace_selector.is_none() {
            namespaces.insert(owner_namespace.to_string());
        }
        AffinityTerm {
            selector: selector_with_match_label_keys(
                term.label_selector.as_ref(),
                term.match_label_keys.as_ref(),
                owner_labels,
            ),
            namespaces,
            namespace_selector,
            topology_key: term.topology_key.clone(),
        }
    }

    /// Whether `pod` is one of the pods this term selects.
    pub fn matches(&self, pod: &PodInfo, namespace_labels: &HashMap<String, Labels>) -> bool {
        let in_namespace = self.namespaces.contains(&pod.namespace)
            || self.namespace_selector.as_ref().is_some_and(|s| {
                s.matches(
                    namespace_labels
                        .get(&pod.namespace)
                        .unwrap_or(empty_labels()),
                )
            });
        in_namespace && self.selector.matches(pod.labels())
    }
}

#[derive(Debug, Clone)]
pub struct WeightedAffinityTerm {
    pub term: AffinityTerm,
    pub weight: i64,
}

/// A host port a pod wants: (ip, protocol, port); ip `0.0.0.0` means every address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HostPort {
    pub ip: String,
    pub protocol: String,
    pub port: i32,
}

impl HostPort {
    pub fn conflicts(&self, other: &HostPort) -> bool {
        self.port == other.port
            && self.protocol == other.protocol
            && (self.ip == other.ip || self.ip == "0.0.0.0" || other.ip == "0.0.0.0")
    }
}

/// A pod with what the plugins need computed once.
#[derive(Debug, Clone)]
pub struct PodInfo {
    pub pod: Arc<Pod>,
    pub key: String,
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub priority: i32,
    pub requests: Resource,
    /// Requests with the scoring defaults for containers that request no cpu/memory.
    pub non_zero_requests: Resource,
    pub required_affinity: Vec<AffinityTerm>,
    pub required_anti_affinity: Vec<AffinityTerm>,
    pub preferred_affinity: Vec<WeightedAffinityTerm>,
    pub preferred_anti_affinity: Vec<WeightedAffinityTerm>,
    pub host_ports: Vec<HostPort>,
}

impl PodInfo {
    /// `priority` is the pod's resolved priority (spec.priority or its PriorityClass's value).
    pub fn new(pod: Arc<Pod>, priority: i32) -> PodInfo {
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        let labels = pod.metadata.labels.as_ref().unwrap_or(empty_labels());
        let spec = pod.spec.as_ref();
        let affinity = spec.and_then(|s| s.affinity.as_ref());
        let pod_affinity = affinity.and_then(|a| a.pod_affinity.as_ref());
        let pod_anti_affinity = affinity.and_then(|a| a.pod_anti_affinity.as_ref());
        let required = |terms: Option<&Vec<PodAffinityTerm>>| -> Vec<AffinityTerm> {
            terms
                .into_iter()
                .flatten()
                .map(|t| AffinityTerm::new(&namespace, labels, t))
                .collect()
        };
        let required_affinity = required(pod_affinity.and_then(|a| {
            a.required_during_scheduling_ignored_during_execution
                .as_ref()
        }));
        let required_anti_affinity = required(pod_anti_affinity.and_then(|a| {
            a.required_during_scheduling_ignored_during_execution
                .as_ref()
        }));
        let weighted =
            |terms: Option<&Vec<k8s_openapi::api::core::v1::WeightedPodAffinityTerm>>| {
                terms
                    .into_iter()
                    .flatten()
                    .map(|t| WeightedAffinityTerm {
                        term: AffinityTerm::new(&namespace, labels, &t.pod_affinity_term),
                        weight: i64::from(t.weight),
                    })
                    .collect::<Vec<_>>()
            };
        let preferred_affinity = weighted(pod_affinity.and_then(|a| {
            a.preferred_during_scheduling_ignored_during_execution
                .as_ref()
        }));
        let preferred_anti_affinity = weighted(pod_anti_affinity.and_then(|a| {
            a.preferred_during_scheduling_ignored_during_execution
                .as_ref()
        }));
        let mut host_ports = Vec::new();
        if let Some(spec) = spec {
            for c in spec
                .containers
                .iter()
                .chain(spec.init_containers.iter().flatten())
            {
                for p in c.ports.iter().flatten() {
                    if let Some(port) = p.host_port.filter(|p| *p > 0) {
                        host_ports.push(HostPort {
                            ip: p
                                .host_ip
                                .clone()
                                .filter(|ip| !ip.is_empty())
                                .unwrap_or_else(|| "0.0.0.0".into()),
                            protocol: p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                            port,
                        });
                    }
                }
            }
        }
        PodInfo {
            key: pod_key(&pod),
            name: pod.metadata.name.clone().unwrap_or_default(),
            uid: pod.metadata.uid.clone().unwrap_or_default(),
            requests: resource::pod_requests(&pod, false),
            non_zero_requests: resource::pod_requests(&pod, true),
            namespace,
            priority,
            required_affinity,
            required_anti_affinity,
            preferred_affinity,
            preferred_anti_affinity,
            host_ports,
            pod,
        }
    }

    pub fn labels(&self) -> &Labels {
        self.pod.metadata.labels.as_ref().unwrap_or(empty_labels())
    }

    pub fn has_affinity(&self) -> bool {
        !self.required_affinity.is_empty()
            || !self.required_anti_affinity.is_empty()
            || !self.preferred_affinity.is_empty()
            || !self.preferred_anti_affinity.is_empty()
    }

    pub fn is_terminating(&self) -> bool {
        self.pod.metadata.deletion_timestamp.is_some()
    }

    pub fn nominated_node(&self) -> Option<&str> {
        self.pod
            .status
            .as_ref()
            .and_then(|s| s.nominated_node_name.as_deref())
            .filter(|n| !n.is_empty())
    }

    pub fn node_name(&self) -> Option<&str> {
        self.pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.as_deref())
            .filter(|n| !n.is_empty())
    }
}

/// Image names as the kubelet reports them and pods name them: a missing tag means `latest`.
pub fn normalized_image_name(name: &str) -> String {
    if name.contains('@') {
        return name.to_string();
    }
    let last = name.rsplit('/').next().unwrap_or(name);
    if last.contains(':') {
        name.to_string()
    } else {
        format!("{name}:latest")
    }
}

/// A node with the pods on it (bound or assumed) and what they use.
#[derive(Debug, Clone, Default)]
pub struct NodeInfo {
    pub name: String,
    pub node: Option<Arc<Node>>,
    pub pods: Vec<Arc<PodInfo>>,
    pub pods_with_affinity: usize,
    pub pods_with_required_anti_affinity: usize,
    pub used_ports: Vec<HostPort>,
    pub requested: Resource,
    pub non_zero_requested: Resource,
    pub allocatable: Resource,
    /// Normalized image name → size in bytes, from node.status.images.
    pub images: Arc<HashMap<String, i64>>,
    /// `spec.unschedulable`, and whether the node has taints: read for every node of every
    /// cycle, so kept here rather than behind another pointer.
    pub unschedulable: bool,
    pub has_taints: bool,
}

impl NodeInfo {
    pub fn new(name: &str) -> NodeInfo {
        NodeInfo {
            name: name.to_string(),
            ..Default::default()
        }
    }

    /// A node made from a Node object and pods, for tests and dry runs.
    pub fn with_pods(node: Node, pods: impl IntoIterator<Item = Arc<PodInfo>>) -> NodeInfo {
        let mut info = NodeInfo::new(node.metadata.name.as_deref().unwrap_or(""));
        info.set_node(Arc::new(node));
        for p in pods {
            info.add_pod(p);
        }
        info
    }

    pub fn set_node(&mut self, node: Arc<Node>) {
        self.allocatable = node
            .status
            .as_ref()
            .and_then(|s| s.allocatable.as_ref().or(s.capacity.as_ref()))
            .map(Resource::from_list)
            .unwrap_or_default();
        let mut images = HashMap::new();
        for image in node
            .status
            .as_ref()
            .and_then(|s| s.images.as_ref())
            .into_iter()
            .flatten()
        {
            for name in image.names.iter().flatten() {
                images.insert(normalized_image_name(name), image.size_bytes.unwrap_or(0));
            }
        }
        self.images = Arc::new(images);
        let spec = node.spec.as_ref();
        self.unschedulable = spec.and_then(|s| s.unschedulable).unwrap_or(false);
        self.has_taints = spec
            .and_then(|s| s.taints.as_ref())
            .is_some_and(|t| !t.is_empty());
        self.node = Some(node);
    }

    pub fn labels(&self) -> &Labels {
        self.node
            .as_ref()
            .and_then(|n| n.metadata.labels.as_ref())
            .unwrap_or(empty_labels())
    }

    pub fn taints(&self) -> &[Taint] {
        if !self.has_taints {
            return &[];
        }
        self.node
            .as_ref()
            .and_then(|n| n.spec.as_ref())
            .and_then(|s| s.taints.as_deref())
            .unwrap_or(&[])
    }

    pub fn add_pod(&mut self, pod: Arc<PodInfo>) {
        self.requested.add(&pod.requests);
        self.non_zero_requested.milli_cpu += pod.non_zero_requests.milli_cpu;
        self.non_zero_requested.memory += pod.non_zero_requests.memory;
        if pod.has_affinity() {
            self.pods_with_affinity += 1;
        }
        if !pod.required_anti_affinity.is_empty() {
            self.pods_with_required_anti_affinity += 1;
        }
        self.used_ports.extend(pod.host_ports.iter().cloned());
        self.pods.push(pod);
    }

    /// Remove the pod with this key; false if it was not here.
    pub fn remove_pod(&mut self, key: &str) -> bool {
        let Some(i) = self.pods.iter().position(|p| p.key == key) else {
            return false;
        };
        let pod = self.pods.swap_remove(i);
        self.requested.sub(&pod.requests);
        self.non_zero_requested.milli_cpu -= pod.non_zero_requests.milli_cpu;
        self.non_zero_requested.memory -= pod.non_zero_requests.memory;
        if pod.has_affinity() {
            self.pods_with_affinity -= 1;
        }
        if !pod.required_anti_affinity.is_empty() {
            self.pods_with_required_anti_affinity -= 1;
        }
        for port in &pod.host_ports {
            if let Some(j) = self.used_ports.iter().position(|p| p == port) {
                self.used_ports.swap_remove(j);
            }
        }
        true
    }
}
