//! The proxier: a cache of Services and EndpointSlices (what is wanted) and the table as last
//! programmed (what is there), and the scripts that move one to the other: the whole table at
//! start, or only the chains and elements of the Services that changed.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::net::IpAddr;
use std::sync::{Arc, RwLock};

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

use crate::model::{self, ServiceKey, ServicePort, ServicePortName, SliceInfo};
use crate::netlink::NetlinkError;
use crate::nft::{Nft, NftError};
use crate::rules::{self, Element, RuleConfig, ServiceRules};

/// Services and EndpointSlices as the watches report them, and which Services changed.
#[derive(Debug, Default)]
pub struct Cache {
    services: HashMap<ServiceKey, Vec<ServicePort>>,
    slices: HashMap<ServiceKey, BTreeMap<String, SliceInfo>>,
    dirty: HashSet<ServiceKey>,
}

/// The rules one Service wants, port by port.
pub type DesiredService = Vec<(ServicePortName, ServiceRules)>;

impl Cache {
    pub fn upsert_service(&mut self, svc: &Service) {
        let (Some(ns), Some(name)) = (&svc.metadata.namespace, &svc.metadata.name) else {
            return;
        };
        let key = ServiceKey::new(ns, name);
        let ports = model::service_ports(svc);
        if self.services.get(&key) != Some(&ports) {
            self.services.insert(key.clone(), ports);
            self.dirty.insert(key);
        }
    }

    pub fn remove_service(&mut self, svc: &Service) {
        let (Some(ns), Some(name)) = (&svc.metadata.namespace, &svc.metadata.name) else {
            return;
        };
        let key = ServiceKey::new(ns, name);
        if self.services.remove(&key).is_some() {
            self.dirty.insert(key);
        }
    }

    /// A re-list: everything not listed is gone.
    pub fn replace_services(&mut self, all: &[Service]) {
        let before: HashSet<ServiceKey> = self.services.keys().cloned().collect();
        let mut seen = HashSet::new();
        for svc in all {
            if let (Some(ns), Some(name)) = (&svc.metadata.namespace, &svc.metadata.name) {
                seen.insert(ServiceKey::new(ns, name));
            }
            self.upsert_service(svc);
        }
        for key in before.difference(&seen) {
            self.services.remove(key);
            self.dirty.insert(key.clone());
        }
    }

    pub fn upsert_slice(&mut self, slice: &EndpointSlice) {
        let Some((key, name)) = model::slice_owner(slice) else {
            return;
        };
        let info = model::slice_info(slice);
        let slices = self.slices.entry(key.clone()).or_default();
        if slices.get(&name) != Some(&info) {
            slices.insert(name, info);
            self.dirty.insert(key);
        }
    }

    pub fn remove_slice(&mut self, slice: &EndpointSlice) {
        let Some((key, name)) = model::slice_owner(slice) else {
            return;
        };
        if let Some(slices) = self.slices.get_mut(&key) {
            if slices.remove(&name).is_some() {
                self.dirty.insert(key.clone());
            }
            if slices.is_empty() {
                self.slices.remove(&key);
            }
        }
    }

    pub fn replace_slices(&mut self, all: &[EndpointSlice]) {
        let mut listed: HashMap<ServiceKey, BTreeMap<String, SliceInfo>> = HashMap::new();
        for slice in all {
            if let Some((key, name)) = model::slice_owner(slice) {
                listed
                    .entry(key)
                    .or_default()
                    .insert(name, model::slice_info(slice));
            }
        }
        for (key, old) in &self.slices {
            if listed.get(key) != Some(old) {
                self.dirty.insert(key.clone());
            }
        }
        for key in listed.keys() {
            if !self.slices.contains_key(key) {
                self.dirty.insert(key.clone());
            }
        }
        self.slices = listed;
    }

    /// Services changed since the last call.
    pub fn take_dirty(&mut self) -> Vec<ServiceKey> {
        let mut keys: Vec<ServiceKey> = self.dirty.drain().collect();
        keys.sort();
        keys
    }

    pub fn service_keys(&self) -> Vec<ServiceKey> {
        let mut keys: Vec<ServiceKey> = self.services.keys().cloned().collect();
        keys.sort();
        keys
    }

    /// What a Service wants now (nothing once it is gone).
    pub fn desired(&self, key: &ServiceKey, cfg: &RuleConfig) -> DesiredService {
        let Some(ports) = self.services.get(key) else {
            return Vec::new();
        };
        let slices = self.slices.get(key);
        ports
            .iter()
            .map(|sp| {
                let eps =
                    model::port_endpoints(slices.into_iter().flat_map(|s| s.values()), &sp.name);
                (sp.name.clone(), rules::service_port_rules(sp, &eps, cfg))
            })
            .collect()
    }
}

/// The endpoint addresses that the programmed table may send new connections to, shared with
/// the kubelet of the same node: it stops a deleted pod's containers once no Service here
/// routes to the pod any more.
#[derive(Debug, Clone, Default)]
pub struct Routes(Arc<RwLock<HashMap<IpAddr, usize>>>);

impl Routes {
    /// Whether some programmed Service may send a new connection to `ip`.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(&ip)
    }

    fn apply(&self, delta: &HashMap<IpAddr, isize>, replace: bool) {
        let mut refs = self.0.write().unwrap_or_else(|e| e.into_inner());
        if replace {
            refs.clear();
        }
        for (ip, d) in delta {
            let n = refs.get(ip).copied().unwrap_or(0) as isize + d;
            if n > 0 {
                refs.insert(*ip, n as usize);
            } else {
                refs.remove(ip);
            }
        }
    }
}

fn add_targets(delta: &mut HashMap<IpAddr, isize>, ports: &DesiredService, sign: isize) {
    for (_, r) in ports {
        for ip in &r.targets {
            *delta.entry(*ip).or_default() += sign;
        }
    }
}

/// What the proxier keeps of a full set of Services besides the Services themselves.
struct Bookkeeping {
    element_refs: HashMap<Element, usize, full::FastHash>,
    targets: HashMap<IpAddr, isize>,
    chains: usize,
    rules: usize,
}

impl Bookkeeping {
    fn of(desired: &[(ServiceKey, DesiredService)]) -> Bookkeeping {
        let count = desired
            .iter()
            .flat_map(|(_, ports)| ports.iter().map(|(_, r)| r.elements.len()))
            .sum();
        let mut b = Bookkeeping {
            element_refs: HashMap::with_capacity_and_hasher(count, Default::default()),
            targets: HashMap::new(),
            chains: 0,
            rules: 0,
        };
        for (_, ports) in desired {
            add_targets(&mut b.targets, ports, 1);
            for (_, r) in ports {
                b.chains += r.chains.len();
                b.rules += r.rule_count();
                for e in &r.elements {
                    match b.element_refs.get_mut(e) {
                        Some(n) => *n += 1,
                        None => {
                            b.element_refs.insert(e.clone(), 1);
                        }
                    }
                }
            }
        }
        b
    }
}

/// What one sync did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SyncStats {
    pub services: usize,
    /// What went to the kernel: script text, or netlink messages for the Services' part.
    pub script_bytes: usize,
}

/// The table as programmed, and how to change it.
#[derive(Debug)]
pub struct Proxier {
    pub table: String,
    pub config: RuleConfig,
    pub nft: Nft,
    programmed: HashMap<ServiceKey, DesiredService>,
    /// Elements are shared (a ClusterIP by its ports, a pod by its Services): added on the
    /// first user, deleted after the last.
    element_refs: HashMap<Element, usize, full::FastHash>,
    chains: usize,
    rules: usize,
    /// The next free slot of the endpoint-slots maps (see [`Proxier::place`]).
    next_slot: u32,
    /// Where the programmed table sends new connections (updated after each commit).
    pub routes: Routes,
}

impl Proxier {
    pub fn new(table: &str, config: RuleConfig, nft: Nft) -> Proxier {
        Proxier {
            table: table.to_string(),
            config,
            nft,
            programmed: HashMap::new(),
            element_refs: HashMap::default(),
            chains: 0,
            rules: 0,
            next_slot: 0,
            routes: Routes::default(),
        }
    }

    /// Chains and rules in the table, fixed part included.
    pub fn counts(&self) -> (usize, usize) {
        (rules::BASE_CHAINS + self.chains, self.rules)
    }

    /// The script that replaces the whole table in one transaction: traffic keeps flowing,
    /// since established connections live in conntrack and new ones see the old table or
    /// the new, never an empty one.
    pub fn full_script(&self, desired: &[(ServiceKey, DesiredService)]) -> String {
        let t = &self.table;
        let mut s = String::with_capacity(desired.len() * 2048 + 8192);
        let _ = writeln!(s, "add table inet {t}\ndelete table inet {t}");
        s.push_str(&rules::base_declaration(t, &self.config));
        let _ = writeln!(s, "table inet {t} {{");
        let mut elements: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        let mut seen: HashSet<&Element> = HashSet::new();
        for (_, ports) in desired {
            for (_, r) in ports {
                for (name, decl) in &r.sets {
                    let _ = writeln!(s, "\tset {name} {{ {decl} }}");
                }
                for (name, body) in &r.chains {
                    let _ = writeln!(s, "\tchain {name} {{");
                    for rule in body {
                        let _ = writeln!(s, "\t\t{rule}");
                    }
                    s.push_str("\t}\n");
                }
                for e in &r.elements {
                    if seen.insert(e) {
                        elements.entry(&e.set).or_default().push(e.text());
                    }
                }
            }
        }
        s.push_str("}\n");
        for (set, items) in elements {
            // chunks keep single commands (and nft's memory for them) bounded
            for chunk in items.chunks(2000) {
                let _ = writeln!(s, "add element inet {t} {set} {{ {} }}", chunk.join(", "));
            }
        }
        s
    }

    /// Replace the table with `desired`.
    pub fn full_sync(
        &mut self,
        desired: Vec<(ServiceKey, DesiredService)>,
    ) -> Result<SyncStats, NftError> {
        let desired = self.place(desired, true)?;
        // The fixed part goes first (unchanged on a restart), by `nft` in a process of its own,
        // while the Services' transaction is written here. It adds only its own chains and
        // sets, so what the table holds of the Services can be listed before.
        let base = self.base_script();
        let (mut chains, mut sets) = self.nft.list(&self.table)?;
        let (replaced, written) = std::thread::scope(|s| {
            let base_job = s.spawn(|| self.nft.apply_base(&self.table, &base));
            let written = self.services_transaction(&desired, &chains, &sets);
            let replaced = base_job
                .join()
                .unwrap_or_else(|_| Err(NftError::Spawn(std::io::Error::other("panicked"))));
            (replaced, written)
        });
        let written = if replaced? {
            // a table of an older layout was replaced: nothing of it is left
            (chains, sets) = self.nft.list(&self.table)?;
            self.services_transaction(&desired, &chains, &sets)
        } else {
            written
        };
        // The bookkeeping of what is programmed is prepared while the kernel commits.
        let (committed, book) = std::thread::scope(|s| {
            let book = s.spawn(|| Bookkeeping::of(&desired));
            // Straight from the rules to netlink; a rule netlink cannot say sends all to `nft`.
            let committed = match written {
                Ok(tx) => {
                    let bytes = tx.len();
                    self.nft.commit(tx).map(|()| base.len() + bytes)
                }
                Err(NetlinkError::Unsupported(line)) => {
                    tracing::debug!(%line, "service proxy script goes to nft");
                    let script = self.services_script(&desired, &chains, &sets);
                    self.nft.apply(&script).map(|()| base.len() + script.len())
                }
                Err(e) => Err(e.into()),
            };
            (committed, book.join())
        });
        let script_bytes = committed?;
        let book = book.unwrap_or_else(|_| Bookkeeping::of(&desired));
        self.element_refs = book.element_refs;
        self.chains = book.chains;
        self.rules = book.rules;
        self.routes.apply(&book.targets, true);
        let services = desired.len();
        self.programmed.clear();
        for (key, ports) in desired {
            if !ports.is_empty() {
                self.programmed.insert(key, ports);
            }
        }
        Ok(SyncStats {
            services,
            script_bytes,
        })
    }

    /// The script that moves the given Services from what is programmed to `changes`, and the
    /// element reference counts after it.
    pub fn partial_script(
        &self,
        changes: &[(ServiceKey, DesiredService)],
    ) -> (String, HashMap<Element, isize>) {
        let t = &self.table;
        let empty = Vec::new();
        // Sets and chains are all declared before any rule: a rule may jump to a chain that
        // comes later (an `external-…` chain goes to its `service-…` chain).
        let mut declare = String::new();
        let mut rewrite = String::new();
        let mut stale_chains: Vec<&str> = Vec::new();
        let mut stale_sets: Vec<&str> = Vec::new();
        let mut delta: HashMap<Element, isize> = HashMap::new();
        for (key, new_ports) in changes {
            let old_ports = self.programmed.get(key).unwrap_or(&empty);
            let old_chains: BTreeMap<&str, &Vec<String>> = old_ports
                .iter()
                .flat_map(|(_, r)| r.chains.iter().map(|(n, b)| (n.as_str(), b)))
                .collect();
            let old_sets: BTreeMap<&str, &String> = old_ports
                .iter()
                .flat_map(|(_, r)| r.sets.iter().map(|(n, d)| (n.as_str(), d)))
                .collect();
            let mut new_chains: HashSet<&str> = HashSet::new();
            let mut new_sets: HashSet<&str> = HashSet::new();
            for (_, r) in new_ports {
                for (name, decl) in &r.sets {
                    new_sets.insert(name);
                    if old_sets.get(name.as_str()) != Some(&decl) {
                        if old_sets.contains_key(name.as_str()) {
                            // a new timeout: sets cannot be redeclared
                            let _ = writeln!(declare, "flush set inet {t} {name}");
                        }
                        let _ = writeln!(declare, "add set inet {t} {name} {{ {decl} }}");
                    }
                }
            }
            for (_, r) in new_ports {
                for (name, body) in &r.chains {
                    new_chains.insert(name);
                    if old_chains.get(name.as_str()) == Some(&body) {
                        continue;
                    }
                    let _ = writeln!(declare, "add chain inet {t} {name}");
                    if old_chains.contains_key(name.as_str()) {
                        let _ = writeln!(declare, "flush chain inet {t} {name}");
                    }
                    for rule in body {
                        let _ = writeln!(rewrite, "add rule inet {t} {name} {rule}");
                    }
                }
                for e in &r.elements {
                    *delta.entry(e.clone()).or_default() += 1;
                }
            }
            for (_, r) in old_ports {
                for e in &r.elements {
                    *delta.entry(e.clone()).or_default() -= 1;
                }
            }
            stale_chains.extend(old_chains.keys().filter(|n| !new_chains.contains(*n)));
            stale_sets.extend(old_sets.keys().filter(|n| !new_sets.contains(*n)));
        }
        let mut s = declare;
        s.push_str(&rewrite);
        let mut deletes: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        let mut adds: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for (e, d) in &delta {
            let before = self.element_refs.get(e).copied().unwrap_or(0) as isize;
            let after = before + d;
            if before > 0 && after <= 0 {
                deletes.entry(&e.set).or_default().push(&e.key);
            } else if before <= 0 && after > 0 {
                adds.entry(&e.set).or_default().push(e.text());
            }
        }
        // Deletes first: an element may come back under the same key with another verdict.
        for (set, mut keys) in deletes {
            keys.sort();
            let _ = writeln!(s, "delete element inet {t} {set} {{ {} }}", keys.join(", "));
        }
        for (set, mut items) in adds {
            items.sort();
            let _ = writeln!(s, "add element inet {t} {set} {{ {} }}", items.join(", "));
        }
        // Unreferenced now: empty them first, as they may still jump to one another.
        for c in &stale_chains {
            let _ = writeln!(s, "flush chain inet {t} {c}");
        }
        for c in &stale_chains {
            let _ = writeln!(s, "delete chain inet {t} {c}");
        }
        for set in &stale_sets {
            let _ = writeln!(s, "delete set inet {t} {set}");
        }
        (s, delta)
    }

    /// Program the new state of some Services.
    pub fn partial_sync(
        &mut self,
        changes: Vec<(ServiceKey, DesiredService)>,
    ) -> Result<SyncStats, NftError> {
        let changes = self.place(changes, false)?;
        let (script, delta) = self.partial_script(&changes);
        if !script.is_empty() {
            self.nft.apply_services(&script)?;
        }
        let stats = SyncStats {
            services: changes.len(),
            script_bytes: script.len(),
        };
        self.record(changes, delta);
        Ok(stats)
    }

    /// Take a committed partial script's changes as the programmed state.
    fn record(
        &mut self,
        changes: Vec<(ServiceKey, DesiredService)>,
        delta: HashMap<Element, isize>,
    ) {
        for (e, d) in delta {
            let refs = self.element_refs.entry(e).or_default();
            *refs = (*refs as isize + d).max(0) as usize;
        }
        self.element_refs.retain(|_, n| *n > 0);
        let mut targets = HashMap::new();
        for (key, ports) in &changes {
            if let Some(old) = self.programmed.get(key) {
                add_targets(&mut targets, old, -1);
            }
            add_targets(&mut targets, ports, 1);
        }
        self.routes.apply(&targets, false);
        for (key, ports) in changes {
            if let Some(old) = self.programmed.remove(&key) {
                for (_, r) in &old {
                    self.chains -= r.chains.len();
                    self.rules -= r.rule_count();
                }
            }
            for (_, r) in &ports {
                self.chains += r.chains.len();
                self.rules += r.rule_count();
            }
            if !ports.is_empty() {
                self.programmed.insert(key, ports);
            }
        }
    }
}

mod full;
#[cfg(test)]
mod tests;
