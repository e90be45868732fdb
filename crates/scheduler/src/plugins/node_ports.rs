//! NodePorts: a pod's hostPorts must be free on the node.

use std::sync::Arc;

use crate::cache::Snapshot;
use crate::framework::{
    CycleState, FilterPlugin, HostPort, NodeInfo, Plugin, PodInfo, PreFilterPlugin, Status,
};

pub const NAME: &str = "NodePorts";
pub const ERR_REASON: &str = "node(s) didn't have free ports for the requested pod ports";

pub struct NodePorts;

pub fn new() -> Arc<dyn Plugin> {
    Arc::new(NodePorts)
}

/// Whether none of `wanted` conflicts with `used` (same protocol and port, same address or
/// either on 0.0.0.0).
pub fn fits_ports(wanted: &[HostPort], used: &[HostPort]) -> bool {
    !wanted.iter().any(|w| used.iter().any(|u| w.conflicts(u)))
}

impl Plugin for NodePorts {
    fn name(&self) -> &'static str {
        NAME
    }
    fn as_pre_filter(&self) -> Option<&dyn PreFilterPlugin> {
        Some(self)
    }
    fn as_filter(&self) -> Option<&dyn FilterPlugin> {
        Some(self)
    }
}

impl PreFilterPlugin for NodePorts {
    fn pre_filter(&self, _state: &mut CycleState, pod: &PodInfo, _snapshot: &Snapshot) -> Status {
        if pod.host_ports.is_empty() {
            Status::skip()
        } else {
            Status::success()
        }
    }
}

impl FilterPlugin for NodePorts {
    fn filter(&self, _state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status {
        if fits_ports(&pod.host_ports, &node.used_ports) {
            Status::success()
        } else {
            Status::unschedulable(ERR_REASON)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hp(ip: &str, proto: &str, port: i32) -> HostPort {
        HostPort {
            ip: ip.into(),
            protocol: proto.into(),
            port,
        }
    }

    #[test]
    fn table() {
        let used = vec![hp("127.0.0.1", "TCP", 8080), hp("0.0.0.0", "UDP", 53)];
        let cases = [
            ("free port", hp("0.0.0.0", "TCP", 9090), true),
            ("same ip and port", hp("127.0.0.1", "TCP", 8080), false),
            ("wildcard ip conflicts", hp("0.0.0.0", "TCP", 8080), false),
            ("other ip", hp("127.0.0.2", "TCP", 8080), true),
            ("other protocol", hp("127.0.0.1", "UDP", 8080), true),
            ("used on every ip", hp("10.0.0.1", "UDP", 53), false),
        ];
        for (what, want_port, want) in cases {
            assert_eq!(fits_ports(&[want_port], &used), want, "{what}");
        }
    }
}
