//! Placing balancers in the endpoint-slots maps, and the full sync as a reconciliation: the
//! fixed part of the table through `nft`, then every Service's chains and elements in one
//! netlink transaction that also removes what is no longer wanted. The table is never
//! deleted, so traffic flows throughout, and session affinity state survives a restart.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt::Write as _;

use super::{DesiredService, Proxier};
use crate::model::ServiceKey;
use crate::netlink::{NetlinkError, Transaction};
use crate::nft::NftError;
use crate::rules::{self, Balancer, Element, SLOT_MAPS};

/// FNV-1a for the proxier's hundreds of thousands of short keys (elements): several times
/// cheaper than the default SipHash, and nobody outside chooses these keys to collide.
#[derive(Debug, Default, Clone, Copy)]
pub struct Fnv(u64);

impl std::hash::Hasher for Fnv {
    fn finish(&self) -> u64 {
        // FNV's multiplications only carry upwards: mix the high bits into the low ones, which
        // pick the bucket (splitmix64's finaliser).
        let mut h = self.0;
        h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        h ^ (h >> 31)
    }
    fn write(&mut self, bytes: &[u8]) {
        let mut h = if self.0 == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.0
        };
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        self.0 = h;
    }
}

pub type FastHash = std::hash::BuildHasherDefault<Fnv>;

/// The map a chain's balancer uses: spread by a hash of its name.
pub(super) fn slot_map(chain: &str) -> usize {
    let mut h: u32 = 0x811c_9dc5;
    for b in chain.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h as usize % SLOT_MAPS
}

fn slot_map_name(b: &Balancer, map: usize) -> String {
    b.family.set(&format!("endpoint-slots-{map}"))
}

/// The rule that ends a chain with its balancer's choice.
fn balancer_rule(b: &Balancer, map: usize, first: u32) -> String {
    format!(
        "meta l4proto {} dnat {} to numgen random mod {} offset {first} map @{}",
        b.protocol,
        b.family.nft(),
        b.targets.len(),
        slot_map_name(b, map)
    )
}

impl Proxier {
    /// Give each balancer its slots (the ones it had when its choice is unchanged, else fresh
    /// ones; all fresh when `fresh`), ending its chain with the rule and adding the slot
    /// elements, so that the rest of the proxier sees plain chains and elements.
    pub fn place(
        &mut self,
        changes: Vec<(ServiceKey, DesiredService)>,
        fresh: bool,
    ) -> Result<Vec<(ServiceKey, DesiredService)>, NftError> {
        if fresh {
            self.next_slot = 0;
        }
        let mut out = Vec::with_capacity(changes.len());
        for (key, mut ports) in changes {
            let old = if fresh {
                None
            } else {
                self.programmed.get(&key)
            };
            for (name, r) in &mut ports {
                let old_rules = old.and_then(|o| o.iter().find(|(n, _)| n == name).map(|p| &p.1));
                for (chain, b) in &mut r.balancers {
                    if b.placed.is_some() {
                        continue;
                    }
                    let reuse = old_rules
                        .and_then(|o| o.balancers.get(chain))
                        .filter(|ob| ob.same_choice(b))
                        .and_then(|ob| ob.placed);
                    let (map, first) = match reuse {
                        Some(p) => p,
                        None => {
                            let n = b.targets.len() as u32;
                            let first = self.next_slot;
                            self.next_slot =
                                first.checked_add(n).ok_or(NftError::SlotsExhausted)?;
                            (slot_map(chain), first)
                        }
                    };
                    b.placed = Some((map, first));
                    let set = slot_map_name(b, map);
                    for (i, target) in b.targets.iter().enumerate() {
                        r.elements.insert(Element {
                            set: set.clone(),
                            key: (first + i as u32).to_string(),
                            value: Some(target.clone()),
                        });
                    }
                    r.chains
                        .entry(chain.clone())
                        .or_default()
                        .push(balancer_rule(b, map, first));
                }
            }
            out.push((key, ports));
        }
        Ok(out)
    }

    /// The fixed part, made to exist as declared without touching the rest: chains and sets
    /// are added if missing, base chains emptied and refilled, in one `nft` transaction.
    pub fn base_script(&self) -> String {
        let t = &self.table;
        let decl = rules::base_declaration(t, &self.config);
        let mut skeleton = String::new();
        let mut flushes = String::new();
        let mut in_chain = false;
        for line in decl.lines() {
            let trimmed = line.trim();
            if let Some(name) = trimmed
                .strip_prefix("chain ")
                .and_then(|r| r.strip_suffix(" {"))
            {
                in_chain = true;
                let _ = writeln!(flushes, "flush chain inet {t} {name}");
                skeleton.push_str(line);
                skeleton.push('\n');
            } else if in_chain {
                // keep only the hook declaration: rules come in the full declaration
                if trimmed == "}" {
                    in_chain = false;
                    skeleton.push_str(line);
                    skeleton.push('\n');
                } else if trimmed.starts_with("type ") {
                    skeleton.push_str(line);
                    skeleton.push('\n');
                }
            } else if !trimmed.starts_with("add element") {
                skeleton.push_str(line);
                skeleton.push('\n');
            }
        }
        // node addresses may have changed: the set is ours alone, refilled whole
        let mut s = format!("add table inet {t}\n{skeleton}{flushes}");
        for f in rules::Family::ALL {
            let _ = writeln!(s, "flush set inet {t} {}", f.set("nodeport-ips"));
        }
        s.push_str(&decl);
        s
    }

    /// Sets the fixed part declares (their elements belong to the Services, but nodeport-ips).
    fn base_sets(&self) -> BTreeSet<String> {
        rules::base_declaration(&self.table, &self.config)
            .lines()
            .filter_map(|l| {
                let l = l.trim();
                l.strip_prefix("set ")
                    .or_else(|| l.strip_prefix("map "))
                    .and_then(|r| r.split_whitespace().next())
                    .map(String::from)
            })
            .collect()
    }

    fn base_chains(&self) -> HashSet<String> {
        rules::base_declaration(&self.table, &self.config)
            .lines()
            .filter_map(|l| {
                l.trim()
                    .strip_prefix("chain ")
                    .and_then(|r| r.strip_suffix(" {"))
                    .map(String::from)
            })
            .collect()
    }

    /// The per-Service part of the table as one transaction: empty the Services' sets, write
    /// every wanted chain and element, remove chains and sets nobody wants any more.
    pub fn services_script(
        &self,
        desired: &[(ServiceKey, DesiredService)],
        existing_chains: &[String],
        existing_sets: &[String],
    ) -> String {
        let mut script = Script {
            table: &self.table,
            s: String::with_capacity(desired.len() * 1024 + 4096),
        };
        // text takes everything
        let _ = self.write_services(&mut script, desired, existing_chains, existing_sets);
        script.s
    }

    /// The same as [`Proxier::services_script`], as a netlink transaction written straight from
    /// the rules; [`NetlinkError::Unsupported`] when some rule needs `nft`.
    pub fn services_transaction(
        &self,
        desired: &[(ServiceKey, DesiredService)],
        existing_chains: &[String],
        existing_sets: &[String],
    ) -> Result<Transaction, NetlinkError> {
        let elements: usize = desired
            .iter()
            .flat_map(|(_, ports)| ports.iter().map(|(_, r)| r.elements.len()))
            .sum();
        let mut tx = Transaction::with_capacity(&self.table, desired.len() * 512 + elements * 48);
        self.write_services(&mut tx, desired, existing_chains, existing_sets)?;
        Ok(tx)
    }

    fn write_services(
        &self,
        out: &mut impl Sink,
        desired: &[(ServiceKey, DesiredService)],
        existing_chains: &[String],
        existing_sets: &[String],
    ) -> Result<(), NetlinkError> {
        let base_sets = self.base_sets();
        let node_port_sets: HashSet<String> = rules::Family::ALL
            .iter()
            .map(|f| f.set("nodeport-ips"))
            .collect();
        for set in base_sets.iter().filter(|n| !node_port_sets.contains(*n)) {
            out.flush_set(set);
        }
        let existing: HashSet<&str> = existing_chains.iter().map(String::as_str).collect();
        let base_chains = self.base_chains();
        let mut wanted_chains: HashSet<&str, FastHash> = HashSet::default();
        let mut wanted_sets: HashSet<&str, FastHash> = HashSet::default();
        for (_, ports) in desired {
            for (_, r) in ports {
                wanted_chains.extend(r.chains.keys().map(String::as_str));
                wanted_sets.extend(r.sets.keys().map(String::as_str));
            }
        }
        let stale_chains: Vec<&str> = existing_chains
            .iter()
            .map(String::as_str)
            .filter(|c| !base_chains.contains(*c) && !wanted_chains.contains(c))
            .collect();
        for c in &stale_chains {
            out.flush_chain(c);
        }
        let mut elements: BTreeMap<&str, Vec<&Element>> = BTreeMap::new();
        let count = desired
            .iter()
            .flat_map(|(_, ports)| ports.iter().map(|(_, r)| r.elements.len()))
            .sum();
        let mut seen: HashSet<&Element, FastHash> =
            HashSet::with_capacity_and_hasher(count, FastHash::default());
        // every chain exists before a rule jumps to it
        for (_, ports) in desired {
            for (_, r) in ports {
                for name in r.chains.keys() {
                    out.add_chain(name);
                    if existing.contains(name.as_str()) {
                        out.flush_chain(name);
                    }
                }
            }
        }
        for (_, ports) in desired {
            for (_, r) in ports {
                for (name, decl) in &r.sets {
                    out.add_set(name, decl)?;
                }
                for (name, body) in &r.chains {
                    for rule in body {
                        out.add_rule(name, rule)?;
                    }
                }
                for e in &r.elements {
                    if seen.insert(e) {
                        elements.entry(&e.set).or_default().push(e);
                    }
                }
            }
        }
        for (set, items) in elements {
            out.add_elements(set, &items)?;
        }
        for c in &stale_chains {
            out.delete_chain(c);
        }
        for set in existing_sets {
            if !base_sets.contains(set) && !wanted_sets.contains(set.as_str()) {
                out.delete_set(set);
            }
        }
        Ok(())
    }
}

/// Where the per-Service part of a full sync is written: a script for `nft`, or a netlink
/// transaction; the same commands in the same order.
trait Sink {
    fn flush_set(&mut self, set: &str);
    fn add_chain(&mut self, chain: &str);
    fn flush_chain(&mut self, chain: &str);
    fn delete_chain(&mut self, chain: &str);
    fn delete_set(&mut self, set: &str);
    fn add_set(&mut self, set: &str, decl: &str) -> Result<(), NetlinkError>;
    fn add_rule(&mut self, chain: &str, rule: &str) -> Result<(), NetlinkError>;
    fn add_elements(&mut self, set: &str, items: &[&Element]) -> Result<(), NetlinkError>;
}

struct Script<'a> {
    table: &'a str,
    s: String,
}

impl Sink for Script<'_> {
    fn flush_set(&mut self, set: &str) {
        let _ = writeln!(self.s, "flush set inet {} {set}", self.table);
    }
    fn add_chain(&mut self, chain: &str) {
        let _ = writeln!(self.s, "add chain inet {} {chain}", self.table);
    }
    fn flush_chain(&mut self, chain: &str) {
        let _ = writeln!(self.s, "flush chain inet {} {chain}", self.table);
    }
    fn delete_chain(&mut self, chain: &str) {
        let _ = writeln!(self.s, "delete chain inet {} {chain}", self.table);
    }
    fn delete_set(&mut self, set: &str) {
        let _ = writeln!(self.s, "delete set inet {} {set}", self.table);
    }
    fn add_set(&mut self, set: &str, decl: &str) -> Result<(), NetlinkError> {
        let _ = writeln!(self.s, "add set inet {} {set} {{ {decl} }}", self.table);
        Ok(())
    }
    fn add_rule(&mut self, chain: &str, rule: &str) -> Result<(), NetlinkError> {
        let _ = writeln!(self.s, "add rule inet {} {chain} {rule}", self.table);
        Ok(())
    }
    fn add_elements(&mut self, set: &str, items: &[&Element]) -> Result<(), NetlinkError> {
        // chunks keep single commands (and nft's memory for them) bounded
        for chunk in items.chunks(2000) {
            let _ = write!(self.s, "add element inet {} {set} {{ ", self.table);
            for (i, e) in chunk.iter().enumerate() {
                if i > 0 {
                    self.s.push_str(", ");
                }
                self.s.push_str(&e.key);
                if let Some(v) = &e.value {
                    self.s.push_str(" : ");
                    self.s.push_str(v);
                }
            }
            self.s.push_str(" }\n");
        }
        Ok(())
    }
}

impl Sink for Transaction {
    fn flush_set(&mut self, set: &str) {
        Transaction::flush_set(self, set);
    }
    fn add_chain(&mut self, chain: &str) {
        Transaction::add_chain(self, chain);
    }
    fn flush_chain(&mut self, chain: &str) {
        Transaction::flush_chain(self, chain);
    }
    fn delete_chain(&mut self, chain: &str) {
        Transaction::delete_chain(self, chain);
    }
    fn delete_set(&mut self, set: &str) {
        Transaction::delete_set(self, set);
    }
    fn add_set(&mut self, set: &str, decl: &str) -> Result<(), NetlinkError> {
        Transaction::add_set(self, set, decl)
    }
    fn add_rule(&mut self, chain: &str, rule: &str) -> Result<(), NetlinkError> {
        Transaction::add_rule(self, chain, rule)
    }
    fn add_elements(&mut self, set: &str, items: &[&Element]) -> Result<(), NetlinkError> {
        Transaction::add_elements(
            self,
            set,
            items.iter().map(|e| (e.key.as_str(), e.value.as_deref())),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nft::Nft;
    use crate::proxier::Cache;
    use crate::rules::RuleConfig;

    fn proxier_with_web() -> (Proxier, Vec<(ServiceKey, DesiredService)>) {
        let config = RuleConfig {
            node_name: "n1".into(),
            cluster_cidrs: vec!["10.42.0.0/16".into()],
            node_ips: vec!["192.168.0.10".parse().unwrap()],
            ..RuleConfig::default()
        };
        let mut p = Proxier::new("t", config, Nft::default());
        let mut cache = Cache::default();
        cache.upsert_service(&crate::bench::synthetic_service(0));
        cache.upsert_slice(&crate::bench::synthetic_slice(0, 3, 0));
        let desired: Vec<_> = cache
            .service_keys()
            .into_iter()
            .map(|k| {
                let d = cache.desired(&k, &p.config);
                (k, d)
            })
            .collect();
        let desired = p.place(desired, true).unwrap();
        (p, desired)
    }

    #[test]
    fn full_sync_keeps_the_fixed_part_and_removes_what_nobody_wants() {
        let (p, desired) = proxier_with_web();
        let chain = desired[0].1[0].1.chains.keys().next().unwrap().clone();
        let stale = "service-0-bench/gone/tcp/http";
        let existing_chains = vec!["services".to_string(), chain.clone(), stale.to_string()];
        let existing_sets = vec!["cluster-ips".to_string(), "affinity-0-gone".to_string()];
        let s = p.services_script(&desired, &existing_chains, &existing_sets);
        let lines: Vec<&str> = s.lines().collect();
        let at = |l: &str| {
            lines
                .iter()
                .position(|x| *x == l)
                .unwrap_or_else(|| panic!("no {l} in\n{s}"))
        };
        // the Services' sets are emptied and refilled; the node's addresses are left alone
        let flush = at("flush set inet t service-ips");
        assert!(!s.contains("flush set inet t nodeport-ips"), "{s}");
        assert!(flush < at(&format!("flush chain inet t {stale}")));
        assert!(
            at(&format!("flush chain inet t {stale}")) < at(&format!("add chain inet t {chain}"))
        );
        // a chain that exists is emptied before its rules are written again
        let rule = format!(
            "add rule inet t {chain} meta l4proto tcp dnat ip to numgen random mod 3 offset 0 map @endpoint-slots-{}",
            slot_map(&chain)
        );
        assert!(at(&format!("flush chain inet t {chain}")) < at(&rule));
        let slots = format!(
            "add element inet t endpoint-slots-{} {{ 0 : 10.42.0.0 . 8080, 1 : 10.42.0.1 . 8080, 2 : 10.42.0.2 . 8080 }}",
            slot_map(&chain)
        );
        // what is left of a Service gone while we were away goes, once nothing refers to it
        assert!(at(&format!("delete chain inet t {stale}")) > at(&slots));
        assert_eq!(lines.last(), Some(&"delete set inet t affinity-0-gone"));
        assert!(!s.contains("delete chain inet t services"), "{s}");
        assert!(!s.contains("delete set inet t cluster-ips"), "{s}");
    }

    #[test]
    fn the_transaction_says_what_the_script_says() {
        let (p, desired) = proxier_with_web();
        let chain = desired[0].1[0].1.chains.keys().next().unwrap().clone();
        let existing_chains = vec![chain, "service-0-bench/gone/tcp/http".to_string()];
        let existing_sets = vec!["affinity-0-gone".to_string()];
        let script = p.services_script(&desired, &existing_chains, &existing_sets);
        let tx = p
            .services_transaction(&desired, &existing_chains, &existing_sets)
            .unwrap();
        let parsed = crate::netlink::encode_script(&script).unwrap();
        assert!(tx.len() > 1000);
        assert_eq!(tx.bytes(), parsed.bytes());
    }

    #[test]
    fn base_script_empties_base_chains_before_declaring_them() {
        let (p, _) = proxier_with_web();
        let s = p.base_script();
        assert!(s.starts_with("add table inet t\n"), "{s}");
        let flush = s
            .find("flush chain inet t nat-prerouting\n")
            .expect("flushed");
        let declared = s.rfind("\t\tjump services\n").expect("declared");
        assert!(flush < declared, "{s}");
        // the skeleton before the flushes has hooks but no rules
        let skeleton = &s[..flush];
        assert!(
            skeleton.contains("type nat hook prerouting priority -100 ;"),
            "{s}"
        );
        assert!(!skeleton.contains("jump services"), "{s}");
        assert!(s.contains("flush set inet t nodeport-ips\n"), "{s}");
        assert!(
            s.contains("add element inet t nodeport-ips { 192.168.0.10 }"),
            "{s}"
        );
    }

    #[test]
    fn slot_maps_spread_chains() {
        let used: HashSet<usize> = (0..1000)
            .map(|i| slot_map(&format!("service-{i}")))
            .collect();
        assert!(used.len() > SLOT_MAPS / 2, "{used:?}");
        assert!(used.iter().all(|m| *m < SLOT_MAPS));
    }
}
