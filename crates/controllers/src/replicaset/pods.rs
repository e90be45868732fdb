//! A pod cache indexed by controller UID (and orphans by namespace), fed by one watch, so that
//! a sync reads only the pods it may own rather than every pod in the cluster.
//!
//! It turns the watcher's events into informer-style changes (old, new), including the pods a
//! re-list found gone, so that expectations and queues see every deletion.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use kube::runtime::watcher;

use crate::util::controller_of;

/// `namespace/name`.
pub type PodKey = String;

pub fn pod_key(pod: &Pod) -> PodKey {
    format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or_default(),
        pod.metadata.name.as_deref().unwrap_or_default()
    )
}

/// One pod changed: absent `old` is an add, absent `new` a delete.
#[derive(Debug, Clone)]
pub struct Change {
    pub old: Option<Arc<Pod>>,
    pub new: Option<Arc<Pod>>,
}

#[derive(Debug, Default)]
struct Index {
    pods: HashMap<PodKey, Arc<Pod>>,
    by_controller: HashMap<String, HashSet<PodKey>>,
    orphans: HashMap<String, HashSet<PodKey>>,
}

impl Index {
    fn insert(&mut self, pod: Arc<Pod>) -> Option<Arc<Pod>> {
        let key = pod_key(&pod);
        let old = self.remove(&key);
        match controller_of(&pod.metadata) {
            Some(r) => self
                .by_controller
                .entry(r.uid.clone())
                .or_default()
                .insert(key.clone()),
            None => self
                .orphans
                .entry(pod.metadata.namespace.clone().unwrap_or_default())
                .or_default()
                .insert(key.clone()),
        };
        self.pods.insert(key, pod);
        old
    }

    fn remove(&mut self, key: &str) -> Option<Arc<Pod>> {
        let old = self.pods.remove(key)?;
        let (map, slot) = match controller_of(&old.metadata) {
            Some(r) => (&mut self.by_controller, r.uid.clone()),
            None => (
                &mut self.orphans,
                old.metadata.namespace.clone().unwrap_or_default(),
            ),
        };
        if let Some(set) = map.get_mut(&slot) {
            set.remove(key);
            if set.is_empty() {
                map.remove(&slot);
            }
        }
        Some(old)
    }
}

#[derive(Debug, Default)]
pub struct PodCache {
    index: Index,
    /// A re-list in progress: replaces `index` when it completes.
    relist: Option<Index>,
    synced: bool,
}

impl PodCache {
    /// Apply one watcher event; returns what changed (nothing until a re-list completes).
    pub fn apply(&mut self, event: watcher::Event<Arc<Pod>>) -> Vec<Change> {
        match event {
            watcher::Event::Apply(pod) => {
                let new = pod;
                let old = self.index.insert(new.clone());
                vec![Change {
                    old,
                    new: Some(new),
                }]
            }
            watcher::Event::Delete(pod) => {
                let old = self.index.remove(&pod_key(&pod)).or_else(|| Some(pod));
                vec![Change { old, new: None }]
            }
            watcher::Event::Init => {
                self.relist = Some(Index::default());
                Vec::new()
            }
            watcher::Event::InitApply(pod) => {
                self.relist.get_or_insert_with(Index::default).insert(pod);
                Vec::new()
            }
            watcher::Event::InitDone => {
                let fresh = self.relist.take().unwrap_or_default();
                let mut changes = Vec::new();
                for (key, old) in &self.index.pods {
                    if !fresh.pods.contains_key(key) {
                        changes.push(Change {
                            old: Some(old.clone()),
                            new: None,
                        });
                    }
                }
                for (key, new) in &fresh.pods {
                    let old = self.index.pods.get(key).cloned();
                    // An unchanged pod is no news.
                    if old.as_ref().is_some_and(|o| {
                        o.metadata.resource_version.is_some()
                            && o.metadata.resource_version == new.metadata.resource_version
                    }) {
                        continue;
                    }
                    changes.push(Change {
                        old,
                        new: Some(new.clone()),
                    });
                }
                self.index = fresh;
                self.synced = true;
                changes
            }
        }
    }

    /// Whether a first full list has been seen.
    pub fn synced(&self) -> bool {
        self.synced
    }

    /// The pods controlled by `uid`.
    pub fn controlled_by(&self, uid: &str) -> Vec<Arc<Pod>> {
        self.collect(self.index.by_controller.get(uid))
    }

    /// The pods of `namespace` that have no controller.
    pub fn orphans(&self, namespace: &str) -> Vec<Arc<Pod>> {
        self.collect(self.index.orphans.get(namespace))
    }

    fn collect(&self, keys: Option<&HashSet<PodKey>>) -> Vec<Arc<Pod>> {
        keys.into_iter()
            .flatten()
            .filter_map(|k| self.index.pods.get(k).cloned())
            .collect()
    }

    pub fn len(&self) -> usize {
        self.index.pods.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.pods.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

    fn pod(name: &str, owner: Option<&str>, rv: &str) -> Arc<Pod> {
        Arc::new(Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("ns".into()),
                resource_version: Some(rv.into()),
                owner_references: owner.map(|uid| {
                    vec![OwnerReference {
                        api_version: "apps/v1".into(),
                        kind: "ReplicaSet".into(),
                        name: "rs".into(),
                        uid: uid.into(),
                        controller: Some(true),
                        block_owner_deletion: None,
                    }]
                }),
                ..Default::default()
            },
            ..Default::default()
        })
    }

    fn names(pods: Vec<Arc<Pod>>) -> Vec<String> {
        let mut names: Vec<String> = pods
            .iter()
            .map(|p| p.metadata.name.clone().unwrap())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn index_follows_adoption_release_and_deletion() {
        let mut cache = PodCache::default();
        cache.apply(watcher::Event::Init);
        cache.apply(watcher::Event::InitApply(pod("a", Some("u1"), "1")));
        cache.apply(watcher::Event::InitApply(pod("b", None, "2")));
        assert_eq!(cache.len(), 0, "a re-list applies only when done");
        let changes = cache.apply(watcher::Event::InitDone);
        assert_eq!(changes.len(), 2);
        assert!(cache.synced());
        assert_eq!(names(cache.controlled_by("u1")), ["a"]);
        assert_eq!(names(cache.orphans("ns")), ["b"]);

        // b is adopted, a released.
        cache.apply(watcher::Event::Apply(pod("b", Some("u1"), "3")));
        let changes = cache.apply(watcher::Event::Apply(pod("a", None, "4")));
        assert!(
            changes[0]
                .old
                .as_ref()
                .unwrap()
                .metadata
                .owner_references
                .is_some()
        );
        assert_eq!(names(cache.controlled_by("u1")), ["b"]);
        assert_eq!(names(cache.orphans("ns")), ["a"]);

        cache.apply(watcher::Event::Delete(pod("b", Some("u1"), "5")));
        assert!(cache.controlled_by("u1").is_empty());
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn relist_reports_vanished_and_changed_pods_only() {
        let mut cache = PodCache::default();
        cache.apply(watcher::Event::Init);
        cache.apply(watcher::Event::InitApply(pod("same", Some("u1"), "1")));
        cache.apply(watcher::Event::InitApply(pod("gone", Some("u1"), "2")));
        cache.apply(watcher::Event::InitApply(pod("changed", Some("u1"), "3")));
        cache.apply(watcher::Event::InitDone);

        cache.apply(watcher::Event::Init);
        cache.apply(watcher::Event::InitApply(pod("same", Some("u1"), "1")));
        cache.apply(watcher::Event::InitApply(pod("changed", Some("u1"), "7")));
        cache.apply(watcher::Event::InitApply(pod("new", Some("u1"), "8")));
        let changes = cache.apply(watcher::Event::InitDone);
        let mut seen: Vec<(Option<String>, Option<String>)> = changes
            .iter()
            .map(|c| {
                (
                    c.old.as_ref().and_then(|p| p.metadata.name.clone()),
                    c.new.as_ref().and_then(|p| p.metadata.name.clone()),
                )
            })
            .collect();
        seen.sort();
        assert_eq!(
            seen,
            vec![
                (None, Some("new".into())),
                (Some("changed".into()), Some("changed".into())),
                (Some("gone".into()), None),
            ]
        );
        assert_eq!(names(cache.controlled_by("u1")), ["changed", "new", "same"]);
    }
}
