//! Node IPAM controller: gives each Node a /24 of the cluster CIDR as `spec.podCIDR` (and
//! `spec.podCIDRs`), as upstream's range allocator does.
//!
//! What is taken is rebuilt from the Nodes themselves after every (re)list, so a restart never
//! hands out a range twice; allocation happens in one task, in memory, and only the patches run
//! concurrently.

use std::collections::{BTreeSet, HashMap};
use std::net::Ipv4Addr;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use serde_json::json;
use tokio::sync::mpsc;

use crate::Context;

/// The size of each node's range (upstream's `--node-cidr-mask-size` default for IPv4).
pub const NODE_CIDR_MASK_SIZE: u8 = 24;
/// Patches in flight at once.
const CONCURRENCY: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid cluster CIDR {cidr:?}: {reason}")]
    ClusterCidr { cidr: String, reason: String },
    #[error("setting the podCIDR of node {node}: {source}")]
    Patch { node: String, source: kube::Error },
}

/// The /24 ranges of a cluster CIDR, and which are taken.
#[derive(Debug, Clone)]
pub struct CidrSet {
    base: u32,
    count: u32,
    used: BTreeSet<u32>,
    next: u32,
}

impl CidrSet {
    pub fn new(cluster_cidr: &str) -> Result<CidrSet, Error> {
        let invalid = |reason: &str| Error::ClusterCidr {
            cidr: cluster_cidr.into(),
            reason: reason.into(),
        };
        let (ip, prefix) = cluster_cidr
            .split_once('/')
            .ok_or_else(|| invalid("expected ADDRESS/PREFIX"))?;
        let ip: Ipv4Addr = ip.parse().map_err(|_| invalid("only IPv4 is supported"))?;
        let prefix: u8 = prefix.parse().map_err(|_| invalid("bad prefix length"))?;
        if !(8..=NODE_CIDR_MASK_SIZE).contains(&prefix) {
            return Err(invalid("the prefix must be between /8 and /24"));
        }
        let mask = u32::MAX << (32 - prefix);
        Ok(CidrSet {
            base: u32::from(ip) & mask,
            count: 1 << (NODE_CIDR_MASK_SIZE - prefix),
            used: BTreeSet::new(),
            next: 0,
        })
    }

    fn cidr(&self, index: u32) -> String {
        let ip = Ipv4Addr::from(self.base + (index << (32 - NODE_CIDR_MASK_SIZE)));
        format!("{ip}/{NODE_CIDR_MASK_SIZE}")
    }

    /// The index of `cidr` if it is one of our ranges.
    pub fn index_of(&self, cidr: &str) -> Option<u32> {
        let (ip, prefix) = cidr.split_once('/')?;
        if prefix.parse::<u8>().ok()? != NODE_CIDR_MASK_SIZE {
            return None;
        }
        let ip = u32::from(ip.parse::<Ipv4Addr>().ok()?);
        let index = ip.checked_sub(self.base)? >> (32 - NODE_CIDR_MASK_SIZE);
        (index < self.count && self.cidr(index) == cidr).then_some(index)
    }

    /// Mark a range taken (a node already has it).
    pub fn occupy(&mut self, cidr: &str) -> bool {
        match self.index_of(cidr) {
            Some(i) => {
                self.used.insert(i);
                true
            }
            None => false,
        }
    }

    pub fn release(&mut self, cidr: &str) {
        if let Some(i) = self.index_of(cidr) {
            self.used.remove(&i);
        }
    }

    /// The next free range, round robin; None when all are taken.
    pub fn allocate(&mut self) -> Option<String> {
        if self.used.len() as u32 >= self.count {
            return None;
        }
        for _ in 0..self.count {
            let candidate = self.next;
            self.next = (self.next + 1) % self.count;
            if self.used.insert(candidate) {
                return Some(self.cidr(candidate));
            }
        }
        None
    }

    pub fn free(&self) -> u32 {
        self.count - self.used.len() as u32
    }
}

fn pod_cidr(node: &Node) -> Option<String> {
    node.spec
        .as_ref()?
        .pod_cidr
        .clone()
        .filter(|c| !c.is_empty())
}

/// The allocator's memory: which node got which range (set by us or seen on the node).
struct Allocator {
    set: CidrSet,
    by_node: HashMap<String, String>,
    /// Nodes already told there is no range left (warned once).
    exhausted: std::collections::HashSet<String>,
}

impl Allocator {
    /// A node was seen: note its range, or pick one if it has none. Returns a range to patch.
    fn observe(&mut self, node: &Node) -> Option<String> {
        let name = node.name_any();
        if let Some(cidr) = pod_cidr(node) {
            if let Some(previous) = self.by_node.insert(name.clone(), cidr.clone())
                && previous != cidr
            {
                self.set.release(&previous);
            }
            if !self.set.occupy(&cidr) {
                tracing::debug!(node = %name, %cidr, "node's podCIDR is outside the cluster CIDR");
            }
            return None;
        }
        if self.by_node.contains_key(&name) {
            return None; // Our patch is on its way.
        }
        let cidr = self.set.allocate()?;
        self.by_node.insert(name, cidr.clone());
        Some(cidr)
    }

    fn forget(&mut self, name: &str) {
        if let Some(cidr) = self.by_node.remove(name) {
            self.set.release(&cidr);
        }
        self.exhausted.remove(name);
    }
}

enum Outcome {
    Failed { node: String },
}

pub async fn run(ctx: Arc<Context>) -> anyhow::Result<()> {
    let set = CidrSet::new(&ctx.config.cluster_cidr)?;
    let mut allocator = Allocator {
        set: set.clone(),
        by_node: HashMap::new(),
        exhausted: Default::default(),
    };
    let api: Api<Node> = Api::all(ctx.client.clone());
    let recorder = Recorder::new(
        ctx.client.clone(),
        Reporter {
            controller: "cidrAllocator".into(),
            instance: None,
        },
    );
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Outcome>();
    let semaphore = Arc::new(tokio::sync::Semaphore::new(CONCURRENCY));
    // Nodes from the controllers' shared cache.
    let mut events = ctx.informers.nodes().subscribe().boxed();
    // Nodes of a (re)list wait until the list is complete, so taken ranges are all known.
    let mut listing: Option<Vec<Arc<Node>>> = None;
    let mut nodes: HashMap<String, Arc<Node>> = HashMap::new();
    loop {
        let mut to_patch: Vec<(Arc<Node>, String)> = Vec::new();
        tokio::select! {
            event = events.next() => {
                let Some(event) = event else { anyhow::bail!("the node watch ended") };
                match event {
                    Ok(watcher::Event::Init) => listing = Some(Vec::new()),
                    Ok(watcher::Event::InitApply(node)) => {
                        if let Some(l) = listing.as_mut() { l.push(node) }
                    }
                    Ok(watcher::Event::InitDone) => {
                        let listed = listing.take().unwrap_or_default();
                        allocator = Allocator { set: set.clone(), by_node: HashMap::new(), exhausted: allocator.exhausted };
                        nodes = listed.into_iter().map(|n| (n.name_any(), n)).collect();
                        // Taken ranges first, then allocate, in name order for determinism.
                        let mut names: Vec<&String> = nodes.keys().collect();
                        names.sort();
                        for name in &names {
                            if pod_cidr(&nodes[*name]).is_some() {
                                allocator.observe(&nodes[*name]);
                            }
                        }
                        for name in names {
                            let node = &nodes[name];
                            if pod_cidr(node).is_none() {
                                match allocator.observe(node) {
                                    Some(cidr) => to_patch.push((node.clone(), cidr)),
                                    None => exhausted(&mut allocator, node, &recorder).await,
                                }
                            }
                        }
                    }
                    Ok(watcher::Event::Apply(node)) => {
                        nodes.insert(node.name_any(), node.clone());
                        match allocator.observe(&node) {
                            Some(cidr) => to_patch.push((node, cidr)),
                            None if pod_cidr(&node).is_none() && !allocator.by_node.contains_key(&node.name_any()) => {
                                exhausted(&mut allocator, &node, &recorder).await
                            }
                            None => {}
                        }
                    }
                    Ok(watcher::Event::Delete(node)) => {
                        let name = node.name_any();
                        nodes.remove(&name);
                        allocator.forget(&name);
                        tracing::debug!(node = %name, "released the node's podCIDR");
                    }
                    Err(e) => tracing::warn!(error = %e, "node ipam watch"),
                }
            }
            Some(Outcome::Failed { node }) = done_rx.recv() => {
                // Forget the range and look again at the node as it is now.
                allocator.forget(&node);
                if let Some(current) = nodes.get(&node).cloned()
                    && let Some(cidr) = allocator.observe(&current)
                {
                    to_patch.push((current, cidr));
                }
            }
        }
        for (node, cidr) in to_patch {
            let permit = semaphore.clone().acquire_owned().await?;
            let api = api.clone();
            let done = done_tx.clone();
            tokio::spawn(async move {
                let _permit = permit;
                let name = node.name_any();
                if let Err(e) = set_pod_cidr(&api, &name, &cidr).await {
                    tracing::warn!(error = %e, "node ipam");
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                    let _ = done.send(Outcome::Failed { node: name });
                } else {
                    tracing::info!(node = %name, %cidr, "allocated podCIDR");
                }
            });
        }
    }
}

async fn exhausted(allocator: &mut Allocator, node: &Node, recorder: &Recorder) {
    let name = node.name_any();
    if !allocator.exhausted.insert(name.clone()) {
        return;
    }
    tracing::warn!(node = %name, free = allocator.set.free(), "no podCIDR left in the cluster CIDR");
    let event = Event {
        type_: EventType::Normal,
        reason: "CIDRNotAvailable".into(),
        note: Some(format!("Node {name} status is now: CIDRNotAvailable")),
        action: "AllocateCIDR".into(),
        secondary: None,
    };
    if let Err(e) = recorder.publish(&event, &node.object_ref(&())).await {
        tracing::debug!(error = %e, "recording event");
    }
}

async fn set_pod_cidr(api: &Api<Node>, name: &str, cidr: &str) -> Result<(), Error> {
    let patch = json!({"spec": {"podCIDR": cidr, "podCIDRs": [cidr]}});
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map(|_| ())
        .map_err(|source| Error::Patch {
            node: name.into(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, cidr: Option<&str>) -> Node {
        serde_json::from_value(json!({"metadata": {"name": name}, "spec": {"podCIDR": cidr}}))
            .unwrap()
    }

    fn allocator(cidr: &str) -> Allocator {
        Allocator {
            set: CidrSet::new(cidr).unwrap(),
            by_node: HashMap::new(),
            exhausted: Default::default(),
        }
    }

    #[test]
    fn ranges_of_the_cluster_cidr() {
        let mut set = CidrSet::new("10.42.0.0/16").unwrap();
        assert_eq!(set.free(), 256);
        assert_eq!(set.allocate().as_deref(), Some("10.42.0.0/24"));
        assert_eq!(set.allocate().as_deref(), Some("10.42.1.0/24"));
        assert_eq!(set.index_of("10.42.255.0/24"), Some(255));
        assert_eq!(set.index_of("10.43.0.0/24"), None);
        assert_eq!(set.index_of("10.42.0.0/25"), None);
        assert!(CidrSet::new("10.42.0.0/25").is_err());
        assert!(CidrSet::new("fd00::/48").is_err());
    }

    #[test]
    fn no_collisions_with_ranges_nodes_already_have() {
        let mut a = allocator("10.42.0.0/22"); // four ranges
        assert_eq!(a.observe(&node("old", Some("10.42.0.0/24"))), None);
        assert_eq!(a.observe(&node("b", None)).as_deref(), Some("10.42.1.0/24"));
        // Seen again before the patch landed: no second range.
        assert_eq!(a.observe(&node("b", None)), None);
        assert_eq!(a.observe(&node("c", None)).as_deref(), Some("10.42.2.0/24"));
        assert_eq!(a.observe(&node("d", None)).as_deref(), Some("10.42.3.0/24"));
        assert_eq!(a.observe(&node("e", None)), None, "exhausted");
        a.forget("c");
        assert_eq!(a.observe(&node("e", None)).as_deref(), Some("10.42.2.0/24"));
    }

    #[test]
    fn rebuilt_after_a_restart_from_the_nodes() {
        // A new allocator that first sees the nodes with ranges never hands those out.
        let mut a = allocator("10.42.0.0/23");
        a.observe(&node("x", Some("10.42.0.0/24")));
        assert_eq!(a.observe(&node("y", None)).as_deref(), Some("10.42.1.0/24"));
        assert_eq!(a.observe(&node("z", None)), None);
    }
}
