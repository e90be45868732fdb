//! Pod IPs of simulated nodes: unique per node, from the node's podCIDR once node IPAM gave it
//! one, else from a fake /24 of 100.64.0.0/10 picked by the node's name.

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;

/// An IPv4 range pods take addresses from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    network: u32,
    prefix: u8,
}

impl Range {
    /// `10.42.3.0/24`; None for IPv6 or malformed ranges.
    pub fn parse(cidr: &str) -> Option<Range> {
        let (ip, prefix) = cidr.split_once('/')?;
        let ip: Ipv4Addr = ip.parse().ok()?;
        let prefix: u8 = prefix.parse().ok()?;
        if !(8..=30).contains(&prefix) {
            return None;
        }
        let mask = u32::MAX << (32 - prefix);
        Some(Range {
            network: u32::from(ip) & mask,
            prefix,
        })
    }

    /// The fake /24 of a node without a podCIDR.
    pub fn fallback(node: &str) -> Range {
        let slot = (crate::node::fnv(node) % (1 << 14)) as u32;
        Range {
            network: u32::from(Ipv4Addr::new(100, 64, 0, 0)) + (slot << 8),
            prefix: 24,
        }
    }

    /// Offsets that may be handed out: not the network, the gateway (.1) or broadcast.
    fn offsets(&self) -> std::ops::Range<u32> {
        2..(1u32 << (32 - self.prefix)) - 1
    }

    fn offset_of(&self, ip: Ipv4Addr) -> Option<u32> {
        let ip = u32::from(ip);
        let offset = ip.checked_sub(self.network)?;
        self.offsets().contains(&offset).then_some(offset)
    }
}

#[derive(Debug)]
struct NodeIps {
    range: Range,
    next: u32,
    by_uid: HashMap<String, u32>,
    used: HashSet<u32>,
}

impl NodeIps {
    fn new(range: Range) -> Self {
        NodeIps {
            next: range.offsets().start,
            range,
            by_uid: HashMap::new(),
            used: HashSet::new(),
        }
    }

    fn take(&mut self, uid: &str, offset: u32) {
        self.used.insert(offset);
        self.by_uid.insert(uid.to_string(), offset);
    }

    /// The next free offset, round robin so that a released IP is not reused at once.
    fn next_free(&mut self) -> Option<u32> {
        let offsets = self.range.offsets();
        let size = offsets.end - offsets.start;
        for _ in 0..size {
            let candidate = self.next;
            self.next = if self.next + 1 >= offsets.end {
                offsets.start
            } else {
                self.next + 1
            };
            if !self.used.contains(&candidate) {
                return Some(candidate);
            }
        }
        None
    }
}

/// Pod IPs handed out, per node.
#[derive(Debug, Default)]
pub struct PodIps {
    nodes: HashMap<String, NodeIps>,
}

impl PodIps {
    fn entry(&mut self, node: &str, range: Range) -> &mut NodeIps {
        let entry = self
            .nodes
            .entry(node.to_string())
            .or_insert_with(|| NodeIps::new(range));
        if entry.range != range {
            *entry = NodeIps::new(range);
        }
        entry
    }

    /// Note an IP a pod already has (from before a restart), so no other pod gets it.
    pub fn observe(&mut self, node: &str, range: Range, uid: &str, ip: &str) {
        if let Ok(ip) = ip.parse::<Ipv4Addr>()
            && let Some(offset) = range.offset_of(ip)
        {
            self.entry(node, range).take(uid, offset);
        }
    }

    /// The IP of pod `uid` on `node`: the one it was given, or a free one. When the range looks
    /// full, `in_use` (the node's live pods and their IPs) rebuilds what is taken first, which
    /// frees the IPs of pods deleted since.
    pub fn allocate(
        &mut self,
        node: &str,
        range: Range,
        uid: &str,
        in_use: impl FnOnce() -> Vec<(String, String)>,
    ) -> Option<Ipv4Addr> {
        let entry = self.entry(node, range);
        if let Some(offset) = entry.by_uid.get(uid) {
            return Some(Ipv4Addr::from(range.network + offset));
        }
        let offset = match entry.next_free() {
            Some(offset) => offset,
            None => {
                let next = entry.next;
                *entry = NodeIps::new(range);
                entry.next = next;
                for (uid, ip) in in_use() {
                    if let Ok(ip) = ip.parse::<Ipv4Addr>()
                        && let Some(offset) = range.offset_of(ip)
                    {
                        entry.take(&uid, offset);
                    }
                }
                if let Some(offset) = entry.by_uid.get(uid) {
                    return Some(Ipv4Addr::from(range.network + offset));
                }
                entry.next_free()?
            }
        };
        entry.take(uid, offset);
        Some(Ipv4Addr::from(range.network + offset))
    }

    /// Forget a pod that is gone.
    pub fn release(&mut self, node: &str, uid: &str) {
        if let Some(entry) = self.nodes.get_mut(node)
            && let Some(offset) = entry.by_uid.remove(uid)
        {
            entry.used.remove(&offset);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocates_unique_ips_from_the_pod_cidr() {
        let range = Range::parse("10.42.7.0/24").unwrap();
        let mut ips = PodIps::default();
        let a = ips.allocate("n", range, "a", Vec::new).unwrap();
        let b = ips.allocate("n", range, "b", Vec::new).unwrap();
        assert_eq!(a, Ipv4Addr::new(10, 42, 7, 2));
        assert_eq!(b, Ipv4Addr::new(10, 42, 7, 3));
        // Asking again for the same pod gives the same IP.
        assert_eq!(ips.allocate("n", range, "a", Vec::new).unwrap(), a);
    }

    #[test]
    fn observed_ips_are_not_handed_out_again() {
        let range = Range::parse("10.42.7.0/24").unwrap();
        let mut ips = PodIps::default();
        ips.observe("n", range, "old", "10.42.7.2");
        assert_eq!(
            ips.allocate("n", range, "new", Vec::new).unwrap(),
            Ipv4Addr::new(10, 42, 7, 3)
        );
    }

    #[test]
    fn a_full_range_is_rebuilt_from_live_pods() {
        let range = Range::parse("10.42.7.0/29").unwrap(); // offsets 2..=6: five IPs
        let mut ips = PodIps::default();
        let mut live = Vec::new();
        for i in 0..5 {
            let uid = format!("p{i}");
            let ip = ips.allocate("n", range, &uid, Vec::new).unwrap();
            live.push((uid, ip.to_string()));
        }
        // p1 is gone (not in the live list): its IP is free again after the rebuild.
        let freed = live.remove(1);
        let ip = ips.allocate("n", range, "p5", || live.clone()).unwrap();
        assert_eq!(ip.to_string(), freed.1);
        live.push(("p5".to_string(), ip.to_string()));
        assert!(ips.allocate("n", range, "p6", || live.clone()).is_none());
    }

    #[test]
    fn fallback_ranges_differ_between_nodes() {
        assert_ne!(Range::fallback("sim-0"), Range::fallback("sim-1"));
        assert!(Range::parse("fd00::/64").is_none());
    }
}
