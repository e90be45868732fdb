//! The dependency graph of the garbage collector: every object the watches have seen (and
//! every owner they referenced, as a "virtual" node until it is seen or verified absent), with
//! edges from owners to dependents. Pure: no IO, so every decision is unit-tested.

use std::collections::{HashMap, HashSet};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

pub const FOREGROUND_FINALIZER: &str = "foregroundDeletion";
pub const ORPHAN_FINALIZER: &str = "orphan";

/// Who an object is: enough to GET it again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub api_version: String,
    pub kind: String,
    pub namespace: Option<String>,
    pub name: String,
    pub uid: String,
}

impl std::fmt::Display for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.namespace {
            Some(ns) => write!(
                f,
                "{}/{}, {}/{} (uid {})",
                self.api_version, self.kind, ns, self.name, self.uid
            ),
            None => write!(
                f,
                "{}/{}, {} (uid {})",
                self.api_version, self.kind, self.name, self.uid
            ),
        }
    }
}

/// What a watch tells about one object.
#[derive(Debug, Clone)]
pub struct Observed {
    pub identity: Identity,
    /// Index of the watched resource it came from.
    pub resource: usize,
    pub owners: Vec<OwnerReference>,
    pub being_deleted: bool,
    pub finalizers: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct Node {
    pub identity: Identity,
    /// The watched resource this object came from; None while virtual.
    pub resource: Option<usize>,
    pub owners: Vec<OwnerReference>,
    pub dependents: HashSet<String>,
    /// Known only as someone's owner: its existence is still to be verified.
    pub is_virtual: bool,
    pub being_deleted: bool,
    /// Being deleted in the foreground: waiting for its blocking dependents to go.
    pub deleting_dependents: bool,
}

/// Work the graph asks the workers to do, by uid.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Work {
    /// Look at the object: should it be deleted (or, being deleted in the foreground, finished)?
    AttemptToDelete(String),
    /// The object is being deleted with the orphan policy: free its dependents.
    AttemptToOrphan(String),
}

#[derive(Debug, Default)]
pub struct Graph {
    nodes: HashMap<String, Node>,
}

impl Graph {
    pub fn new() -> Self {
        Graph::default()
    }

    pub fn get(&self, uid: &str) -> Option<&Node> {
        self.nodes.get(uid)
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Uids of the real (watched) nodes of one resource.
    pub fn uids_of_resource(&self, resource: usize) -> Vec<String> {
        self.nodes
            .values()
            .filter(|n| n.resource == Some(resource))
            .map(|n| n.identity.uid.clone())
            .collect()
    }

    /// Dependents of `uid` whose reference to it has `blockOwnerDeletion: true`.
    pub fn blocking_dependents(&self, uid: &str) -> Vec<String> {
        let Some(node) = self.nodes.get(uid) else {
            return Vec::new();
        };
        let mut blocking: Vec<String> = node
            .dependents
            .iter()
            .filter(|d| {
                self.nodes.get(*d).is_some_and(|dep| {
                    dep.owners
                        .iter()
                        .any(|r| r.uid == uid && r.block_owner_deletion == Some(true))
                })
            })
            .cloned()
            .collect();
        blocking.sort();
        blocking
    }

    pub fn dependents(&self, uid: &str) -> Vec<String> {
        let mut deps: Vec<String> = self
            .nodes
            .get(uid)
            .map(|n| n.dependents.iter().cloned().collect())
            .unwrap_or_default();
        deps.sort();
        deps
    }

    /// An add or update from a watch. `owner_namespace` says, for an owner reference, which
    /// namespace the owner lives in (None for cluster-scoped kinds).
    pub fn observe(
        &mut self,
        observed: Observed,
        owner_namespace: impl Fn(&OwnerReference) -> Option<String>,
    ) -> Vec<Work> {
        let mut work = Vec::new();
        let uid = observed.identity.uid.clone();
        let (old_owners, was_deleting_dependents) = match self.nodes.get_mut(&uid) {
            Some(node) => {
                let old = std::mem::take(&mut node.owners);
                node.identity = observed.identity.clone();
                node.resource = Some(observed.resource);
                node.is_virtual = false;
                (old, node.deleting_dependents)
            }
            None => {
                self.nodes.insert(
                    uid.clone(),
                    Node {
                        identity: observed.identity.clone(),
                        resource: Some(observed.resource),
                        owners: Vec::new(),
                        dependents: HashSet::new(),
                        is_virtual: false,
                        being_deleted: false,
                        deleting_dependents: false,
                    },
                );
                (Vec::new(), false)
            }
        };
        let new_owners = observed.owners.clone();

        // Owners this object no longer blocks may now finish a foreground deletion.
        for old in &old_owners {
            let still = new_owners.iter().find(|r| r.uid == old.uid);
            let unblocked = old.block_owner_deletion == Some(true)
                && still.is_none_or(|r| r.block_owner_deletion != Some(true));
            if unblocked
                && self
                    .nodes
                    .get(&old.uid)
                    .is_some_and(|owner| owner.deleting_dependents)
            {
                work.push(Work::AttemptToDelete(old.uid.clone()));
            }
            if still.is_none()
                && let Some(owner) = self.nodes.get_mut(&old.uid)
            {
                owner.dependents.remove(&uid);
            }
        }
        let mut owner_busy = false;
        for owner_ref in &new_owners {
            match self.nodes.get_mut(&owner_ref.uid) {
                Some(owner) => {
                    owner.dependents.insert(uid.clone());
                    owner_busy |= owner.being_deleted;
                }
                None => {
                    // Not seen yet: a virtual node, verified by a worker.
                    let mut dependents = HashSet::new();
                    dependents.insert(uid.clone());
                    self.nodes.insert(
                        owner_ref.uid.clone(),
                        Node {
                            identity: Identity {
                                api_version: owner_ref.api_version.clone(),
                                kind: owner_ref.kind.clone(),
                                namespace: owner_namespace(owner_ref),
                                name: owner_ref.name.clone(),
                                uid: owner_ref.uid.clone(),
                            },
                            resource: None,
                            owners: Vec::new(),
                            dependents,
                            is_virtual: true,
                            being_deleted: false,
                            deleting_dependents: false,
                        },
                    );
                    work.push(Work::AttemptToDelete(owner_ref.uid.clone()));
                }
            }
        }

        let has = |f: &str| observed.finalizers.iter().any(|x| x == f);
        let node = self.nodes.get_mut(&uid).expect("inserted above");
        node.owners = new_owners;
        node.being_deleted = observed.being_deleted;
        if observed.being_deleted && has(ORPHAN_FINALIZER) {
            work.push(Work::AttemptToOrphan(uid.clone()));
        }
        node.deleting_dependents = observed.being_deleted && has(FOREGROUND_FINALIZER);
        if node.deleting_dependents && !was_deleting_dependents {
            let mut deps: Vec<String> = node.dependents.iter().cloned().collect();
            deps.sort();
            work.extend(deps.into_iter().map(Work::AttemptToDelete));
            work.push(Work::AttemptToDelete(uid.clone()));
        }
        // A dependent that appears while its owner is going away is looked at at once.
        if owner_busy && !observed.being_deleted {
            work.push(Work::AttemptToDelete(uid.clone()));
        }
        work
    }

    /// The object is gone (a watch said so, or a worker found it absent): its dependents are
    /// looked at again, and owners waiting in the foreground for it may finish.
    pub fn remove(&mut self, uid: &str) -> Vec<Work> {
        let mut work = Vec::new();
        let Some(node) = self.nodes.remove(uid) else {
            return work;
        };
        for owner_ref in &node.owners {
            if let Some(owner) = self.nodes.get_mut(&owner_ref.uid) {
                owner.dependents.remove(uid);
                if owner.deleting_dependents {
                    work.push(Work::AttemptToDelete(owner_ref.uid.clone()));
                }
                // A virtual owner nobody references any more is forgotten.
                if owner.is_virtual && owner.dependents.is_empty() {
                    self.nodes.remove(&owner_ref.uid);
                }
            }
        }
        let mut deps: Vec<String> = node.dependents.into_iter().collect();
        deps.sort();
        work.extend(deps.into_iter().map(Work::AttemptToDelete));
        work
    }
}

/// How an owner reference stands, as a worker found it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OwnerState {
    /// The owner exists with this uid and is not being deleted in the foreground.
    Solid,
    /// No object of that name has this uid: the reference dangles.
    Absent,
    /// The owner is being deleted in the foreground, waiting for its dependents.
    WaitingForDependentsDeletion,
}

/// The propagation policy the collector deletes with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Propagation {
    Background,
    Foreground,
    Orphan,
}

impl Propagation {
    pub fn as_str(self) -> &'static str {
        match self {
            Propagation::Background => "Background",
            Propagation::Foreground => "Foreground",
            Propagation::Orphan => "Orphan",
        }
    }
}

/// What to do with a dependent once its owner references are classified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Every owner is there: nothing to do.
    Keep,
    /// Some owner is still there: drop only the references to owners that are gone or
    /// waiting for their dependents.
    RemoveReferences(Vec<String>),
    /// Waiting owners with dependents of its own: first stop blocking owners that wait for
    /// this object (a cycle otherwise), then delete in the foreground.
    UnblockThenDelete(Vec<String>),
    /// Every owner is gone (or waiting): delete it.
    Delete(Propagation),
}

/// Upstream's rules (attemptToDeleteItem): an object with at least one solid owner stays; an
/// object whose every owner is gone is deleted, honouring its own propagation finalizers; one
/// whose owners wait for it and which has dependents of its own goes in the foreground.
pub fn decide(
    references: &[(OwnerReference, OwnerState)],
    has_dependents: bool,
    a_dependent_is_deleting_dependents: bool,
    finalizers: &[String],
) -> Decision {
    if references.is_empty() {
        return Decision::Keep;
    }
    let uids = |state: OwnerState| -> Vec<String> {
        references
            .iter()
            .filter(|(_, s)| *s == state)
            .map(|(r, _)| r.uid.clone())
            .collect()
    };
    let solid = uids(OwnerState::Solid);
    let absent = uids(OwnerState::Absent);
    let waiting = uids(OwnerState::WaitingForDependentsDeletion);
    if !solid.is_empty() {
        if absent.is_empty() && waiting.is_empty() {
            return Decision::Keep;
        }
        let mut remove = absent;
        remove.extend(waiting);
        return Decision::RemoveReferences(remove);
    }
    if !waiting.is_empty() && has_dependents {
        if a_dependent_is_deleting_dependents {
            return Decision::UnblockThenDelete(waiting);
        }
        return Decision::Delete(Propagation::Foreground);
    }
    let has = |f: &str| finalizers.iter().any(|x| x == f);
    let policy = if has(ORPHAN_FINALIZER) {
        Propagation::Orphan
    } else if has(FOREGROUND_FINALIZER) {
        Propagation::Foreground
    } else {
        Propagation::Background
    };
    Decision::Delete(policy)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(kind: &str, name: &str, uid: &str) -> Identity {
        Identity {
            api_version: "v1".into(),
            kind: kind.into(),
            namespace: Some("default".into()),
            name: name.into(),
            uid: uid.into(),
        }
    }

    fn owner(name: &str, uid: &str, block: bool) -> OwnerReference {
        OwnerReference {
            api_version: "v1".into(),
            kind: "ConfigMap".into(),
            name: name.into(),
            uid: uid.into(),
            controller: None,
            block_owner_deletion: block.then_some(true),
        }
    }

    fn observed(name: &str, uid: &str, owners: Vec<OwnerReference>) -> Observed {
        Observed {
            identity: id("ConfigMap", name, uid),
            resource: 0,
            owners,
            being_deleted: false,
            finalizers: Vec::new(),
        }
    }

    fn same_ns(_: &OwnerReference) -> Option<String> {
        Some("default".into())
    }

    #[test]
    fn an_unseen_owner_becomes_a_virtual_node_to_verify() {
        let mut g = Graph::new();
        let work = g.observe(
            observed("child", "c", vec![owner("parent", "p", false)]),
            same_ns,
        );
        assert_eq!(work, vec![Work::AttemptToDelete("p".into())]);
        let p = g.get("p").unwrap();
        assert!(p.is_virtual);
        assert_eq!(p.identity.name, "parent");
        assert_eq!(g.dependents("p"), vec!["c".to_string()]);
        // Seeing the owner makes it real, keeping its dependents.
        let work = g.observe(observed("parent", "p", vec![]), same_ns);
        assert!(work.is_empty());
        assert!(!g.get("p").unwrap().is_virtual);
        assert_eq!(g.dependents("p"), vec!["c".to_string()]);
    }

    #[test]
    fn removing_an_owner_queues_its_dependents() {
        let mut g = Graph::new();
        g.observe(observed("parent", "p", vec![]), same_ns);
        g.observe(
            observed("a", "a", vec![owner("parent", "p", false)]),
            same_ns,
        );
        g.observe(
            observed("b", "b", vec![owner("parent", "p", true)]),
            same_ns,
        );
        let work = g.remove("p");
        assert_eq!(
            work,
            vec![
                Work::AttemptToDelete("a".into()),
                Work::AttemptToDelete("b".into())
            ]
        );
        assert!(g.get("p").is_none());
    }

    #[test]
    fn foreground_deletion_queues_dependents_and_blocking_ones_hold_it() {
        let mut g = Graph::new();
        g.observe(observed("parent", "p", vec![]), same_ns);
        g.observe(
            observed("a", "a", vec![owner("parent", "p", true)]),
            same_ns,
        );
        g.observe(
            observed("b", "b", vec![owner("parent", "p", false)]),
            same_ns,
        );
        let mut deleting = observed("parent", "p", vec![]);
        deleting.being_deleted = true;
        deleting.finalizers = vec![FOREGROUND_FINALIZER.into()];
        let work = g.observe(deleting.clone(), same_ns);
        assert_eq!(
            work,
            vec![
                Work::AttemptToDelete("a".into()),
                Work::AttemptToDelete("b".into()),
                Work::AttemptToDelete("p".into())
            ]
        );
        assert!(g.get("p").unwrap().deleting_dependents);
        assert_eq!(g.blocking_dependents("p"), vec!["a".to_string()]);
        // The same state again starts nothing new.
        assert!(g.observe(deleting, same_ns).is_empty());
        // The non-blocking dependent going does not wake the owner... but the blocking one does.
        assert_eq!(g.remove("b"), vec![Work::AttemptToDelete("p".into())]);
        assert_eq!(g.remove("a"), vec![Work::AttemptToDelete("p".into())]);
        assert!(g.blocking_dependents("p").is_empty());
    }

    #[test]
    fn dropping_a_blocking_reference_unblocks_a_waiting_owner() {
        let mut g = Graph::new();
        let mut parent = observed("parent", "p", vec![]);
        parent.being_deleted = true;
        parent.finalizers = vec![FOREGROUND_FINALIZER.into()];
        g.observe(
            observed("a", "a", vec![owner("parent", "p", true)]),
            same_ns,
        );
        g.observe(parent, same_ns);
        let work = g.observe(observed("a", "a", vec![]), same_ns);
        assert_eq!(work, vec![Work::AttemptToDelete("p".into())]);
        assert!(g.dependents("p").is_empty());
    }

    #[test]
    fn orphan_finalizer_on_a_deleted_object_asks_for_orphaning() {
        let mut g = Graph::new();
        let mut parent = observed("parent", "p", vec![]);
        parent.being_deleted = true;
        parent.finalizers = vec![ORPHAN_FINALIZER.into()];
        assert_eq!(
            g.observe(parent.clone(), same_ns),
            vec![Work::AttemptToOrphan("p".into())]
        );
        // Without a deletionTimestamp the finalizer is only a preference.
        parent.being_deleted = false;
        assert!(g.observe(parent, same_ns).is_empty());
    }

    #[test]
    fn a_dependent_created_under_a_departing_owner_is_looked_at() {
        let mut g = Graph::new();
        let mut parent = observed("parent", "p", vec![]);
        parent.being_deleted = true;
        parent.finalizers = vec!["example.com/hold".into()];
        g.observe(parent, same_ns);
        let work = g.observe(
            observed("a", "a", vec![owner("parent", "p", false)]),
            same_ns,
        );
        assert_eq!(work, vec![Work::AttemptToDelete("a".into())]);
    }

    #[test]
    fn removing_the_last_dependent_forgets_a_virtual_owner() {
        let mut g = Graph::new();
        g.observe(
            observed("a", "a", vec![owner("ghost", "g", false)]),
            same_ns,
        );
        assert!(g.get("g").is_some());
        g.remove("a");
        assert!(g.get("g").is_none());
        assert!(g.is_empty());
    }

    fn refs(states: &[(&str, OwnerState)]) -> Vec<(OwnerReference, OwnerState)> {
        states
            .iter()
            .map(|(uid, s)| (owner(uid, uid, true), *s))
            .collect()
    }

    #[test]
    fn decisions_follow_upstream() {
        use OwnerState::*;
        assert_eq!(decide(&[], false, false, &[]), Decision::Keep);
        assert_eq!(
            decide(&refs(&[("a", Solid)]), false, false, &[]),
            Decision::Keep
        );
        assert_eq!(
            decide(
                &refs(&[
                    ("a", Solid),
                    ("b", Absent),
                    ("c", WaitingForDependentsDeletion)
                ]),
                false,
                false,
                &[]
            ),
            Decision::RemoveReferences(vec!["b".into(), "c".into()])
        );
        assert_eq!(
            decide(&refs(&[("a", Absent), ("b", Absent)]), true, false, &[]),
            Decision::Delete(Propagation::Background)
        );
        assert_eq!(
            decide(
                &refs(&[("a", WaitingForDependentsDeletion)]),
                true,
                false,
                &[]
            ),
            Decision::Delete(Propagation::Foreground)
        );
        assert_eq!(
            decide(
                &refs(&[("a", WaitingForDependentsDeletion)]),
                true,
                true,
                &[]
            ),
            Decision::UnblockThenDelete(vec!["a".into()])
        );
        // Without dependents of its own, a waited-for object goes in the background.
        assert_eq!(
            decide(
                &refs(&[("a", WaitingForDependentsDeletion)]),
                false,
                false,
                &[]
            ),
            Decision::Delete(Propagation::Background)
        );
        assert_eq!(
            decide(
                &refs(&[("a", Absent)]),
                false,
                false,
                &[ORPHAN_FINALIZER.into()]
            ),
            Decision::Delete(Propagation::Orphan)
        );
        assert_eq!(
            decide(
                &refs(&[("a", Absent)]),
                false,
                false,
                &[FOREGROUND_FINALIZER.into()]
            ),
            Decision::Delete(Propagation::Foreground)
        );
    }
}
