//! The scheduler's cache of nodes and the pods on them (bound or assumed), and the snapshot a
//! scheduling cycle reads, as upstream's `internal/cache`: assumed pods count at once, so the
//! next cycle sees them before their binding is confirmed by a watch event.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Node;

use crate::framework::types::Labels;
use crate::framework::{NodeInfo, PodInfo};

struct PodState {
    info: Arc<PodInfo>,
    node: String,
    assumed: bool,
    /// When the binding call returned; an assumed pod never confirmed expires after a while.
    binding_finished: Option<Instant>,
}

#[derive(Default)]
pub struct Cache {
    nodes: HashMap<String, Arc<NodeInfo>>,
    pods: HashMap<String, PodState>,
    /// Image name → on how many nodes it is present.
    image_nodes: Arc<HashMap<String, usize>>,
    namespaces: Arc<HashMap<String, Labels>>,
    /// Nodes changed since the last snapshot update.
    dirty: HashSet<String>,
    /// Nodes were added or removed since the last snapshot update.
    structure_changed: bool,
}

impl Cache {
    pub fn new() -> Cache {
        Cache::default()
    }

    fn node_mut(&mut self, name: &str) -> &mut NodeInfo {
        self.dirty.insert(name.to_string());
        let entry = self
            .nodes
            .entry(name.to_string())
            .or_insert_with(|| Arc::new(NodeInfo::new(name)));
        Arc::make_mut(entry)
    }

    fn count_images(&mut self, info: &NodeInfo, delta: isize) {
        let counts = Arc::make_mut(&mut self.image_nodes);
        for image in info.images.keys() {
            let c = counts.entry(image.clone()).or_default();
            *c = c.saturating_add_signed(delta);
            if *c == 0 {
                counts.remove(image);
            }
        }
    }

    pub fn add_or_update_node(&mut self, node: Arc<Node>) {
        let name = node.metadata.name.clone().unwrap_or_default();
        let had_node = self.nodes.get(&name).is_some_and(|n| n.node.is_some());
        if let Some(old) = self.nodes.get(&name).cloned() {
            self.count_images(&old, -1);
        }
        let info = self.node_mut(&name);
        info.set_node(node);
        let info = info.clone();
        self.count_images(&info, 1);
        if !had_node {
            self.structure_changed = true;
        }
    }

    pub fn remove_node(&mut self, name: &str) {
        let Some(old) = self.nodes.get(name).cloned() else {
            return;
        };
        self.count_images(&old, -1);
        // Pods still bound to the node stay (as upstream) until they are deleted themselves.
        if old.pods.is_empty() {
            self.nodes.remove(name);
        } else {
            let info = self.node_mut(name);
            info.node = None;
            info.unschedulable = false;
            info.has_taints = false;
        }
        self.dirty.insert(name.to_string());
        self.structure_changed = true;
    }

    pub fn node(&self, name: &str) -> Option<&Arc<Node>> {
        self.nodes.get(name).and_then(|n| n.node.as_ref())
    }

    pub fn node_names(&self) -> Vec<String> {
        self.nodes
            .values()
            .filter(|n| n.node.is_some())
            .map(|n| n.name.clone())
            .collect()
    }

    pub fn set_namespace(&mut self, name: &str, labels: Option<Labels>) {
        let ns = Arc::make_mut(&mut self.namespaces);
        match labels {
            Some(l) => ns.insert(name.to_string(), l),
            None => ns.remove(name),
        };
    }

    /// A pod bound to a node (from the API): confirms an assumed pod or updates a known one.
    pub fn add_or_update_pod(&mut self, info: Arc<PodInfo>) {
        let Some(node) = info.node_name().map(str::to_string) else {
            return;
        };
        if let Some(old) = self.pods.remove(&info.key) {
            self.node_mut(&old.node).remove_pod(&old.info.key);
        }
        self.node_mut(&node).add_pod(info.clone());
        self.pods.insert(
            info.key.clone(),
            PodState {
                info,
                node,
                assumed: false,
                binding_finished: None,
            },
        );
    }

    pub fn remove_pod(&mut self, key: &str) {
        if let Some(old) = self.pods.remove(key) {
            let info = self.node_mut(&old.node);
            info.remove_pod(key);
            if info.node.is_none() && info.pods.is_empty() {
                self.nodes.remove(&old.node);
                self.dirty.remove(&old.node);
            }
        }
    }

    /// Count `info` on `node` before the binding is confirmed (upstream's AssumePod).
    pub fn assume_pod(&mut self, info: Arc<PodInfo>, node: &str) {
        self.remove_pod(&info.key);
        self.node_mut(node).add_pod(info.clone());
        self.pods.insert(
            info.key.clone(),
            PodState {
                info,
                node: node.to_string(),
                assumed: true,
                binding_finished: None,
            },
        );
    }

    pub fn finish_binding(&mut self, key: &str, now: Instant) {
        if let Some(state) = self.pods.get_mut(key).filter(|s| s.assumed) {
            state.binding_finished = Some(now);
        }
    }

    /// Undo an assumption (the binding failed).
    pub fn forget_pod(&mut self, key: &str) {
        if self.pods.get(key).is_some_and(|s| s.assumed) {
            self.remove_pod(key);
        }
    }

    pub fn is_assumed(&self, key: &str) -> bool {
        self.pods.get(key).is_some_and(|s| s.assumed)
    }

    pub fn contains_pod(&self, key: &str) -> bool {
        self.pods.contains_key(key)
    }

    /// Drop assumed pods whose binding finished more than `ttl` ago without the watch
    /// confirming them (the pod was deleted meanwhile, or the event was lost in a relist).
    pub fn cleanup_assumed(&mut self, now: Instant, ttl: Duration) -> Vec<String> {
        let expired: Vec<String> = self
            .pods
            .iter()
            .filter(|(_, s)| s.assumed && s.binding_finished.is_some_and(|t| now - t > ttl))
            .map(|(k, _)| k.clone())
            .collect();
        for key in &expired {
            self.remove_pod(key);
        }
        expired
    }

    /// Keys of the confirmed (not assumed) pods, for reconciling after a relist.
    pub fn bound_pod_keys(&self) -> Vec<String> {
        self.pods
            .iter()
            .filter(|(_, s)| !s.assumed)
            .map(|(k, _)| k.clone())
            .collect()
    }

    pub fn pod(&self, key: &str) -> Option<&Arc<PodInfo>> {
        self.pods.get(key).map(|s| &s.info)
    }

    /// Bring `snapshot` up to date, copying only what changed.
    pub fn update_snapshot(&mut self, snapshot: &mut Snapshot) {
        snapshot.image_nodes = self.image_nodes.clone();
        snapshot.namespaces = self.namespaces.clone();
        let mut affinity_changed = false;
        if self.structure_changed {
            let mut names: Vec<&String> = self
                .nodes
                .iter()
                .filter(|(_, n)| n.node.is_some())
                .map(|(k, _)| k)
                .collect();
            names.sort();
            snapshot.node_infos = names.iter().map(|n| self.nodes[*n].clone()).collect();
            snapshot.index = names
                .iter()
                .enumerate()
                .map(|(i, n)| ((*n).clone(), i))
                .collect();
            affinity_changed = true;
        } else {
            for name in &self.dirty {
                let (Some(&i), Some(info)) = (snapshot.index.get(name), self.nodes.get(name))
                else {
                    continue;
                };
                let old = &snapshot.node_infos[i];
                if (old.pods_with_affinity > 0) != (info.pods_with_affinity > 0)
                    || (old.pods_with_required_anti_affinity > 0)
                        != (info.pods_with_required_anti_affinity > 0)
                {
                    affinity_changed = true;
                }
                snapshot.node_infos[i] = info.clone();
            }
        }
        if affinity_changed {
            snapshot.have_pods_with_affinity = (0..snapshot.node_infos.len())
                .filter(|&i| snapshot.node_infos[i].pods_with_affinity > 0)
                .collect();
            snapshot.have_pods_with_required_anti_affinity = (0..snapshot.node_infos.len())
                .filter(|&i| snapshot.node_infos[i].pods_with_required_anti_affinity > 0)
                .collect();
        }
        self.dirty.clear();
        self.structure_changed = false;
    }
}

/// What one scheduling cycle sees: every node (with a Node object) and its pods, unchanged
/// for the cycle.
#[derive(Default, Clone)]
pub struct Snapshot {
    pub node_infos: Vec<Arc<NodeInfo>>,
    index: HashMap<String, usize>,
    /// Nodes (indices) with pods that have any pod (anti-)affinity.
    pub have_pods_with_affinity: Vec<usize>,
    /// Nodes (indices) with pods that have required anti-affinity.
    pub have_pods_with_required_anti_affinity: Vec<usize>,
    pub image_nodes: Arc<HashMap<String, usize>>,
    pub namespaces: Arc<HashMap<String, Labels>>,
}

impl Snapshot {
    /// A snapshot of these nodes, for tests and tools.
    pub fn from_nodes(nodes: Vec<NodeInfo>) -> Snapshot {
        let mut cache = Cache::new();
        for n in nodes {
            if let Some(node) = n.node.clone() {
                cache.add_or_update_node(node);
            }
            for p in &n.pods {
                let mut pod = (*p.pod).clone();
                pod.spec.get_or_insert_with(Default::default).node_name = Some(n.name.clone());
                let info = PodInfo::new(Arc::new(pod), p.priority);
                cache.add_or_update_pod(Arc::new(info));
            }
        }
        let mut s = Snapshot::default();
        cache.update_snapshot(&mut s);
        s
    }

    pub fn num_nodes(&self) -> usize {
        self.node_infos.len()
    }

    pub fn get(&self, name: &str) -> Option<&Arc<NodeInfo>> {
        self.index.get(name).map(|&i| &self.node_infos[i])
    }

    pub fn all_pods(&self) -> impl Iterator<Item = (&Arc<NodeInfo>, &Arc<PodInfo>)> {
        self.node_infos
            .iter()
            .flat_map(|n| n.pods.iter().map(move |p| (n, p)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Pod;
    use serde_json::json;

    fn node(name: &str) -> Arc<Node> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": name},
                "status": {"allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"},
                           "images": [{"names": ["nginx:1.25"], "sizeBytes": 100}]}
            }))
            .unwrap(),
        )
    }

    fn pod(name: &str, node: Option<&str>, cpu: &str) -> Arc<PodInfo> {
        let p: Pod = serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": "nginx", "resources": {"requests": {"cpu": cpu}}}]}
        }))
        .unwrap();
        Arc::new(PodInfo::new(Arc::new(p), 0))
    }

    #[test]
    fn assume_confirm_forget() {
        let mut cache = Cache::new();
        cache.add_or_update_node(node("a"));
        cache.add_or_update_node(node("b"));
        let mut snap = Snapshot::default();
        cache.update_snapshot(&mut snap);
        assert_eq!(snap.num_nodes(), 2);
        assert_eq!(snap.image_nodes.get("nginx:1.25"), Some(&2));

        cache.assume_pod(pod("p", None, "1"), "a");
        assert!(cache.is_assumed("default/p"));
        // The snapshot taken before is unchanged (copy on write) until updated.
        assert_eq!(snap.get("a").unwrap().requested.milli_cpu, 0);
        cache.update_snapshot(&mut snap);
        assert_eq!(snap.get("a").unwrap().requested.milli_cpu, 1000);

        // The watch confirms the binding: counted once.
        cache.add_or_update_pod(pod("p", Some("a"), "1"));
        assert!(!cache.is_assumed("default/p"));
        cache.update_snapshot(&mut snap);
        assert_eq!(snap.get("a").unwrap().pods.len(), 1);

        cache.assume_pod(pod("q", None, "500m"), "b");
        cache.forget_pod("default/q");
        cache.update_snapshot(&mut snap);
        assert_eq!(snap.get("b").unwrap().requested.milli_cpu, 0);
    }

    #[test]
    fn assumed_pods_expire_after_binding() {
        let mut cache = Cache::new();
        cache.add_or_update_node(node("a"));
        cache.assume_pod(pod("p", None, "1"), "a");
        let t0 = Instant::now();
        // Not expired while the binding is in flight.
        assert!(
            cache
                .cleanup_assumed(t0 + Duration::from_secs(100), Duration::from_secs(30))
                .is_empty()
        );
        cache.finish_binding("default/p", t0);
        assert_eq!(
            cache.cleanup_assumed(t0 + Duration::from_secs(31), Duration::from_secs(30)),
            vec!["default/p".to_string()]
        );
        assert!(!cache.contains_pod("default/p"));
    }

    #[test]
    fn node_removal_and_readd() {
        let mut cache = Cache::new();
        cache.add_or_update_node(node("a"));
        cache.add_or_update_pod(pod("p", Some("a"), "1"));
        cache.remove_node("a");
        let mut snap = Snapshot::default();
        cache.update_snapshot(&mut snap);
        assert_eq!(snap.num_nodes(), 0);
        assert!(snap.image_nodes.is_empty());
        cache.add_or_update_node(node("a"));
        cache.update_snapshot(&mut snap);
        assert_eq!(snap.get("a").unwrap().pods.len(), 1);
        cache.remove_pod("default/p");
        cache.update_snapshot(&mut snap);
        assert_eq!(snap.get("a").unwrap().pods.len(), 0);
    }
}
