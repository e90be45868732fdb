//! Allocation of Service cluster IPs and node ports.
//!
//! Every allocated value is also a reservation key in the store, written in the same
//! transaction as the Service: two Services can never hold the same IP or port, even with
//! several API servers on one etcd. Values are picked at random and retried on collision.

use std::net::{IpAddr, Ipv4Addr};
use std::str::FromStr;

use rand::Rng;

/// An IPv4 CIDR block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cidr {
    pub network: Ipv4Addr,
    pub prefix: u8,
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (ip, prefix) = s
            .split_once('/')
            .ok_or_else(|| format!("invalid CIDR {s:?}: expected address/prefix"))?;
        let ip: Ipv4Addr = ip.parse().map_err(|e| format!("invalid CIDR {s:?}: {e}"))?;
        let prefix: u8 = prefix
            .parse()
            .map_err(|e| format!("invalid CIDR {s:?}: {e}"))?;
        if !(8..=30).contains(&prefix) {
            return Err(format!(
                "invalid CIDR {s:?}: prefix must be between /8 and /30"
            ));
        }
        let mask = u32::MAX << (32 - prefix);
        Ok(Cidr {
            network: Ipv4Addr::from(u32::from(ip) & mask),
            prefix,
        })
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

impl Cidr {
    fn size(&self) -> u32 {
        1u32 << (32 - self.prefix)
    }

    /// The n-th address of the block (the first usable one is n = 1).
    pub fn nth(&self, n: u32) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) + n)
    }

    /// Whether `ip` is a usable address of the block (not the network or broadcast address).
    pub fn contains_usable(&self, ip: IpAddr) -> bool {
        let IpAddr::V4(ip) = ip else { return false };
        let offset = u32::from(ip).wrapping_sub(u32::from(self.network));
        offset > 0 && offset < self.size() - 1
    }
}

#[derive(Debug, Clone)]
pub struct Allocator {
    pub service_cidr: Cidr,
    pub node_ports: (u16, u16),
}

pub const SERVICE_IP_PREFIX: &str = "/registry/serviceips/";
pub const NODE_PORT_PREFIX: &str = "/registry/servicenodeports/";

impl Allocator {
    pub fn new(service_cidr: Cidr, node_ports: (u16, u16)) -> Self {
        Allocator {
            service_cidr,
            node_ports,
        }
    }

    /// A random usable service IP. The first address is left to the `kubernetes` Service and
    /// the first ten to well-known services (cluster DNS takes the tenth), as upstream's
    /// allocator prefers the upper range for dynamic allocation.
    pub fn random_ip(&self) -> Ipv4Addr {
        let size = self.service_cidr.size();
        let low = if size > 64 { 16 } else { 1 };
        let n = rand::rng().random_range(low..size - 1);
        self.service_cidr.nth(n)
    }

    pub fn random_node_port(&self) -> u16 {
        rand::rng().random_range(self.node_ports.0..=self.node_ports.1)
    }

    pub fn ip_key(ip: &str) -> String {
        format!("{SERVICE_IP_PREFIX}{ip}")
    }

    pub fn node_port_key(port: i64) -> String {
        format!("{NODE_PORT_PREFIX}{port}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_parsing_and_ranges() {
        let cidr: Cidr = "10.43.7.9/16".parse().unwrap();
        assert_eq!(cidr.to_string(), "10.43.0.0/16");
        assert_eq!(cidr.nth(1), Ipv4Addr::new(10, 43, 0, 1));
        assert!(cidr.contains_usable("10.43.255.254".parse().unwrap()));
        assert!(!cidr.contains_usable("10.43.255.255".parse().unwrap()));
        assert!(!cidr.contains_usable("10.43.0.0".parse().unwrap()));
        assert!(!cidr.contains_usable("10.44.0.1".parse().unwrap()));
        assert!("10.0.0.0".parse::<Cidr>().is_err());
        assert!("10.0.0.0/31".parse::<Cidr>().is_err());
        let alloc = Allocator::new(cidr.clone(), (30000, 32767));
        for _ in 0..1000 {
            let ip = alloc.random_ip();
            assert!(cidr.contains_usable(IpAddr::V4(ip)));
            assert!(u32::from(ip) - u32::from(cidr.network) >= 16);
            let port = alloc.random_node_port();
            assert!((30000..=32767).contains(&port));
        }
    }
}
