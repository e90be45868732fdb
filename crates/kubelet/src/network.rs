//! Routes between nodes (host-gw): for every other Node with a podCIDR, a route to that CIDR
//! via the node's InternalIP; removed when the node goes. Only routes this agent added are touched.
//!
//! Our routes carry a routing protocol number of their own ([`ROUTE_PROTOCOL`]), so they can be
//! told apart from everyone else's: routes of other protocols are never replaced or deleted.
//! host-gw needs the nodes on one link: a node whose InternalIP is not on a directly
//! connected network gets no route (logged once).

use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use futures::StreamExt as _;
use k8s_openapi::api::core::v1::Node;
use kube::runtime::{WatchStreamExt as _, reflector, watcher};

/// The `proto` of the routes we add (190: unassigned in `/etc/iproute2/rt_protos`).
pub const ROUTE_PROTOCOL: &str = "0xbe";

/// Re-check the routes this often even without Node changes (someone may have removed one).
const RESYNC_PERIOD: Duration = Duration::from_secs(30);

pub async fn run_routes(
    client: kube::Client,
    node_name: String,
    node_ip: IpAddr,
    bridge: String,
) -> anyhow::Result<()> {
    let (store, writer) = reflector::store::<Node>();
    let changed = Arc::new(tokio::sync::Notify::new());
    let driver = {
        let changed = changed.clone();
        watcher(kube::Api::<Node>::all(client), watcher::Config::default())
            .default_backoff()
            .reflect(writer)
            .for_each(move |event| {
                if event.is_ok() {
                    changed.notify_one();
                }
                futures::future::ready(())
            })
    };
    let syncer = async {
        store
            .wait_until_ready()
            .await
            .context("waiting for the node list")?;
        let mut routes = RouteSyncer::new(node_name.clone(), node_ip);
        let mut applied_masquerade = String::new();
        loop {
            let nodes = store.state();
            routes.sync(nodes.iter().map(|n| n.as_ref())).await;
            let script = masquerade_script(&bridge, &node_name, nodes.iter().map(|n| n.as_ref()));
            if script != applied_masquerade {
                match apply_nft(&script).await {
                    Ok(()) => applied_masquerade = script,
                    Err(e) => tracing::warn!(error = %e, "programming pod masquerading"),
                }
            }
            tokio::select! {
                () = changed.notified() => {}
                () = tokio::time::sleep(RESYNC_PERIOD) => {}
            }
        }
    };
    tokio::select! {
        () = driver => anyhow::bail!("the node watch ended"),
        result = syncer => result,
    }
}

/// The routes this node wants: for every other node, each of its pod CIDRs of the same IP
/// family as its InternalIP, via that IP. Keyed by CIDR; if two nodes claim one CIDR, the
/// node whose name sorts first wins.
pub fn desired_routes<'a>(
    nodes: impl IntoIterator<Item = &'a Node>,
    node_name: &str,
    node_ip: IpAddr,
) -> BTreeMap<String, NodeRoute> {
    let mut nodes: Vec<&Node> = nodes
        .into_iter()
        .filter(|n| {
            n.metadata
                .name
                .as_deref()
                .is_some_and(|name| name != node_name)
        })
        .collect();
    nodes.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    let mut routes = BTreeMap::new();
    for node in nodes {
        let name = node.metadata.name.clone().unwrap_or_default();
        let internal_ips: Vec<IpAddr> = node
            .status
            .iter()
            .flat_map(|s| s.addresses.iter().flatten())
            .filter(|a| a.type_ == "InternalIP")
            .filter_map(|a| a.address.parse().ok())
            .collect();
        let spec = node.spec.as_ref();
        let cidrs: Vec<&String> = match spec.and_then(|s| s.pod_cidrs.as_ref()) {
            Some(cidrs) if !cidrs.is_empty() => cidrs.iter().collect(),
            _ => spec.and_then(|s| s.pod_cidr.as_ref()).into_iter().collect(),
        };
        for cidr in cidrs {
            let Some(cidr) = normalize_cidr(cidr) else {
                continue;
            };
            let Some(via) = internal_ips
                .iter()
                .copied()
                .find(|ip| ip.is_ipv4() == cidr.1)
            else {
                continue;
            };
            if via == node_ip {
                continue; // ourselves under another name: never route our own traffic away
            }
            routes.entry(cidr.0).or_insert(NodeRoute {
                node: name.clone(),
                via,
            });
        }
    }
    routes
}

/// Pods keep their own source address towards every pod CIDR of the cluster (so a pod on
/// another node sees the real client), and are masqueraded behind the node's address towards
/// everything else. The CNI bridge plugin's own `ipMasq` only knows the node's subnet, so it is
/// off and this table (one per bridge, so that test agents sharing a host stay apart) does it.
pub fn masquerade_script<'a>(
    bridge: &str,
    node_name: &str,
    nodes: impl IntoIterator<Item = &'a Node>,
) -> String {
    let mut own = Vec::new();
    let mut all = std::collections::BTreeSet::new();
    for node in nodes {
        let spec = node.spec.as_ref();
        let cidrs: Vec<&String> = match spec.and_then(|s| s.pod_cidrs.as_ref()) {
            Some(cidrs) if !cidrs.is_empty() => cidrs.iter().collect(),
            _ => spec.and_then(|s| s.pod_cidr.as_ref()).into_iter().collect(),
        };
        for (cidr, v4) in cidrs.into_iter().filter_map(|c| normalize_cidr(c)) {
            if !v4 {
                continue;
            }
            if node.metadata.name.as_deref() == Some(node_name) {
                own.push(cidr.clone());
            }
            all.insert(cidr);
        }
    }
    let table = masquerade_table(bridge);
    let mut script = format!("table ip {table} {{}}\ndelete table ip {table}\n");
    if own.is_empty() {
        return script;
    }
    let all: Vec<String> = all.into_iter().collect();
    script.push_str(&format!(
        "table ip {table} {{\n  set pod-cidrs {{ type ipv4_addr; flags interval; elements = {{ {} }} }}\n  chain postrouting {{\n    type nat hook postrouting priority srcnat; policy accept;\n    ip saddr {{ {} }} ip daddr != @pod-cidrs ip daddr != 224.0.0.0/4 oifname != \"{bridge}\" masquerade\n  }}\n}}\n",
        all.join(", "),
        own.join(", "),
    ));
    script
}

/// `rkube-masq-<bridge>`.
pub fn masquerade_table(bridge: &str) -> String {
    format!("rkube-masq-{bridge}")
}

async fn apply_nft(script: &str) -> anyhow::Result<()> {
    use tokio::io::AsyncWriteExt as _;
    let mut child = tokio::process::Command::new("nft")
        .args(["-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .context("running nft")?;
    child
        .stdin
        .take()
        .context("nft stdin")?
        .write_all(script.as_bytes())
        .await?;
    let out = child.wait_with_output().await?;
    anyhow::ensure!(
        out.status.success(),
        "nft -f: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

/// A route to another node's pod CIDR.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRoute {
    /// The node whose pods are behind it.
    pub node: String,
    /// Its InternalIP.
    pub via: IpAddr,
}

/// What to change so that our routes (`current`: CIDR to gateway) become `desired`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RoutePlan {
    /// `ip route replace <cidr> via <ip>`: missing, or via another gateway.
    pub replace: Vec<(String, NodeRoute)>,
    /// `ip route del <cidr>`: ours, for a node that is gone (or whose CIDR moved).
    pub delete: Vec<String>,
}

pub fn plan_routes(
    current: &BTreeMap<String, IpAddr>,
    desired: &BTreeMap<String, NodeRoute>,
) -> RoutePlan {
    let replace = desired
        .iter()
        .filter(|(cidr, route)| current.get(*cidr) != Some(&route.via))
        .map(|(cidr, route)| (cidr.clone(), route.clone()))
        .collect();
    let delete = current
        .keys()
        .filter(|cidr| !desired.contains_key(*cidr))
        .cloned()
        .collect();
    RoutePlan { replace, delete }
}

/// `(canonical CIDR, is IPv4)`: host bits cleared, so it compares equal to what `ip` prints.
fn normalize_cidr(cidr: &str) -> Option<(String, bool)> {
    let (addr, prefix) = cidr.trim().split_once('/')?;
    let addr: IpAddr = addr.parse().ok()?;
    let prefix: u32 = prefix.parse().ok()?;
    let network = match addr {
        IpAddr::V4(a) if prefix <= 32 => {
            let mask = u32::MAX.checked_shl(32 - prefix).unwrap_or(0);
            IpAddr::V4((u32::from(a) & mask).into())
        }
        IpAddr::V6(a) if prefix <= 128 => {
            let mask = u128::MAX.checked_shl(128 - prefix).unwrap_or(0);
            IpAddr::V6((u128::from(a) & mask).into())
        }
        _ => return None,
    };
    Some((format!("{network}/{prefix}"), network.is_ipv4()))
}

/// Routes in `ip -j route show` output: destination CIDR to gateway (routes without one are
/// skipped; a host route's destination gets its `/32` or `/128`).
fn parse_routes(json: &str) -> BTreeMap<String, IpAddr> {
    let routes: Vec<serde_json::Value> = serde_json::from_str(json).unwrap_or_default();
    routes
        .iter()
        .filter_map(|r| {
            let dst = r.get("dst")?.as_str()?;
            let via: IpAddr = r.get("gateway")?.as_str()?.parse().ok()?;
            let dst = if dst.contains('/') {
                dst.to_owned()
            } else {
                let ip: IpAddr = dst.parse().ok()?;
                format!("{ip}/{}", if ip.is_ipv4() { 32 } else { 128 })
            };
            Some((normalize_cidr(&dst)?.0, via))
        })
        .collect()
}

/// Whether `ip -j route get <ip>` says the address is on a directly connected network (no
/// gateway, not one of our own addresses).
fn is_directly_connected(route_get_json: &str) -> bool {
    let routes: Vec<serde_json::Value> = serde_json::from_str(route_get_json).unwrap_or_default();
    routes.first().is_some_and(|r| {
        r.get("gateway").is_none()
            && r.get("dst").is_some()
            && r.get("type")
                .and_then(|t| t.as_str())
                .is_none_or(|t| t == "unicast")
    })
}

/// Keeps this node's routes in line with the Nodes, remembering what it already complained
/// about so that each problem is logged once.
struct RouteSyncer {
    node_name: String,
    node_ip: IpAddr,
    warned: HashSet<String>,
}

impl RouteSyncer {
    fn new(node_name: String, node_ip: IpAddr) -> RouteSyncer {
        RouteSyncer {
            node_name,
            node_ip,
            warned: HashSet::new(),
        }
    }

    fn warn_once(&mut self, key: String, message: impl FnOnce() -> String) {
        if self.warned.insert(key) {
            tracing::warn!("{}", message());
        }
    }

    async fn sync<'a>(&mut self, nodes: impl IntoIterator<Item = &'a Node>) {
        let desired = desired_routes(nodes, &self.node_name, self.node_ip);
        let mut current = BTreeMap::new();
        for family in ["-4", "-6"] {
            match ip(&["-j", family, "route", "show", "proto", ROUTE_PROTOCOL]).await {
                Ok(out) => current.extend(parse_routes(&out)),
                Err(e) => {
                    tracing::error!(error = %e, "listing the routes to other nodes");
                    return;
                }
            }
        }
        let plan = plan_routes(&current, &desired);
        let mut delete = plan.delete;
        for (cidr, route) in plan.replace {
            let key = format!("{}/{}/{cidr}", route.node, route.via);
            let get = ip(&["-j", "route", "get", &route.via.to_string()]).await;
            if !get.as_deref().is_ok_and(is_directly_connected) {
                self.warn_once(format!("unreachable/{key}"), || {
                    format!(
                        "no route to node {}'s pods ({cidr}): its InternalIP {} is not on a directly connected network",
                        route.node, route.via
                    )
                });
                if current.contains_key(&cidr) {
                    delete.push(cidr);
                }
                continue;
            }
            if self.foreign_route_exists(&cidr).await {
                self.warn_once(format!("foreign/{key}"), || {
                    format!(
                        "no route to node {}'s pods: a route to {cidr} that this agent did not add is in the way",
                        route.node
                    )
                });
                continue;
            }
            let via = route.via.to_string();
            match ip(&[
                "route",
                "replace",
                &cidr,
                "via",
                &via,
                "proto",
                ROUTE_PROTOCOL,
            ])
            .await
            {
                Ok(_) => {
                    self.warned.retain(|k| !k.ends_with(&key));
                    tracing::info!(node = %route.node, %cidr, via = %route.via, "added a route to a node's pods");
                }
                Err(e) => self.warn_once(format!("failed/{key}"), || {
                    format!("adding the route to node {}'s pods: {e}", route.node)
                }),
            }
        }
        for cidr in delete {
            match ip(&["route", "del", &cidr, "proto", ROUTE_PROTOCOL]).await {
                Ok(_) => tracing::info!(%cidr, "removed the route to a node that is gone"),
                Err(e) => {
                    tracing::warn!(%cidr, error = %e, "removing a route to a node that is gone")
                }
            }
        }
    }

    /// Whether a route to `cidr` exists that is not ours (we leave it alone).
    async fn foreign_route_exists(&self, cidr: &str) -> bool {
        let family = if cidr.contains(':') { "-6" } else { "-4" };
        let all = ip(&["-j", family, "route", "show", "exact", cidr]).await;
        let ours = ip(&[
            "-j",
            family,
            "route",
            "show",
            "exact",
            cidr,
            "proto",
            ROUTE_PROTOCOL,
        ])
        .await;
        let count =
            |out: &str| serde_json::from_str::<Vec<serde_json::Value>>(out).map_or(0, |v| v.len());
        match (all, ours) {
            (Ok(all), Ok(ours)) => count(&all) > count(&ours),
            _ => false,
        }
    }
}

async fn ip(args: &[&str]) -> anyhow::Result<String> {
    let output = tokio::process::Command::new("ip")
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .context("running ip")?;
    if !output.status.success() {
        anyhow::bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{NodeAddress, NodeSpec, NodeStatus};

    fn node(name: &str, cidrs: &[&str], ips: &[(&str, &str)]) -> Node {
        Node {
            metadata: kube::api::ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            spec: Some(NodeSpec {
                pod_cidr: cidrs.first().map(|c| (*c).to_owned()),
                pod_cidrs: Some(cidrs.iter().map(|c| (*c).to_owned()).collect()),
                ..Default::default()
            }),
            status: Some(NodeStatus {
                addresses: Some(
                    ips.iter()
                        .map(|(t, a)| NodeAddress {
                            type_: (*t).into(),
                            address: (*a).into(),
                        })
                        .collect(),
                ),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn pods_are_masqueraded_only_outside_the_cluster_pod_cidrs() {
        let nodes = [
            node("a", &["10.42.0.0/24"], &[("InternalIP", "10.0.0.1")]),
            node("b", &["10.42.1.0/24"], &[("InternalIP", "10.0.0.2")]),
        ];
        let script = masquerade_script("cni0", "a", &nodes);
        assert!(
            script.starts_with("table ip rkube-masq-cni0 {}\ndelete table ip rkube-masq-cni0\n")
        );
        assert!(
            script.contains("elements = { 10.42.0.0/24, 10.42.1.0/24 }"),
            "{script}"
        );
        assert!(
            script.contains("ip saddr { 10.42.0.0/24 } ip daddr != @pod-cidrs"),
            "{script}"
        );
        assert!(
            script.contains("oifname != \"cni0\" masquerade"),
            "{script}"
        );
        // Without a pod CIDR of our own there is nothing to masquerade yet: the table goes.
        let script = masquerade_script("cni0", "c", &nodes);
        assert!(!script.contains("masquerade"), "{script}");
        assert!(script.contains("delete table ip rkube-masq-cni0"));
    }

    fn route(node: &str, via: &str) -> NodeRoute {
        NodeRoute {
            node: node.into(),
            via: via.parse().unwrap(),
        }
    }

    const ME: &str = "10.77.0.2";

    #[test]
    fn other_nodes_with_a_cidr_and_an_internal_ip_are_routed() {
        let nodes = [
            node("a", &["10.42.0.0/24"], &[("InternalIP", ME)]),
            node(
                "b",
                &["10.42.1.0/24"],
                &[("Hostname", "b"), ("InternalIP", "10.77.0.3")],
            ),
            // No podCIDR yet, or no InternalIP: nothing to route.
            node("c", &[], &[("InternalIP", "10.77.0.4")]),
            node("d", &["10.42.3.0/24"], &[("ExternalIP", "192.0.2.9")]),
            // Dual stack: each CIDR via the address of its family; host bits are cleared.
            node(
                "e",
                &["10.42.4.7/24", "fd00:42:4::/64"],
                &[("InternalIP", "fd00::5"), ("InternalIP", "10.77.0.5")],
            ),
        ];
        let desired = desired_routes(&nodes, "a", ME.parse().unwrap());
        let expected = BTreeMap::from([
            ("10.42.1.0/24".to_owned(), route("b", "10.77.0.3")),
            ("10.42.4.0/24".to_owned(), route("e", "10.77.0.5")),
            ("fd00:42:4::/64".to_owned(), route("e", "fd00::5")),
        ]);
        assert_eq!(desired, expected);
    }

    #[test]
    fn the_old_single_pod_cidr_field_is_used_too() {
        let mut n = node("b", &[], &[("InternalIP", "10.77.0.3")]);
        n.spec.as_mut().unwrap().pod_cidr = Some("10.42.1.0/24".into());
        let desired = desired_routes([&n], "a", ME.parse().unwrap());
        assert_eq!(desired.keys().collect::<Vec<_>>(), ["10.42.1.0/24"]);
    }

    #[test]
    fn a_cidr_claimed_twice_goes_to_the_first_node_by_name() {
        let nodes = [
            node("z", &["10.42.1.0/24"], &[("InternalIP", "10.77.0.9")]),
            node("b", &["10.42.1.0/24"], &[("InternalIP", "10.77.0.3")]),
        ];
        let desired = desired_routes(&nodes, "a", ME.parse().unwrap());
        assert_eq!(desired["10.42.1.0/24"], route("b", "10.77.0.3"));
        // Nodes claiming our own address are never routed to.
        let me = [node("other-name", &["10.42.9.0/24"], &[("InternalIP", ME)])];
        assert!(desired_routes(&me, "a", ME.parse().unwrap()).is_empty());
    }

    #[test]
    fn the_plan_adds_missing_and_moved_routes_and_deletes_vanished_ones() {
        let current = BTreeMap::from([
            ("10.42.1.0/24".to_owned(), "10.77.0.3".parse().unwrap()),
            ("10.42.2.0/24".to_owned(), "10.77.0.4".parse().unwrap()),
            ("10.42.3.0/24".to_owned(), "10.77.0.5".parse().unwrap()),
        ]);
        let desired = BTreeMap::from([
            ("10.42.1.0/24".to_owned(), route("b", "10.77.0.3")),
            ("10.42.2.0/24".to_owned(), route("c", "10.77.0.40")),
            ("10.42.5.0/24".to_owned(), route("f", "10.77.0.7")),
        ]);
        let plan = plan_routes(&current, &desired);
        assert_eq!(
            plan.replace,
            [
                ("10.42.2.0/24".to_owned(), route("c", "10.77.0.40")),
                ("10.42.5.0/24".to_owned(), route("f", "10.77.0.7")),
            ]
        );
        assert_eq!(plan.delete, ["10.42.3.0/24"]);
        // In line: nothing to do.
        let done = BTreeMap::from([("10.42.1.0/24".to_owned(), "10.77.0.3".parse().unwrap())]);
        let wanted = BTreeMap::from([("10.42.1.0/24".to_owned(), route("b", "10.77.0.3"))]);
        assert_eq!(plan_routes(&done, &wanted), RoutePlan::default());
    }

    #[test]
    fn ip_route_json_is_parsed() {
        let out = r#"[{"dst":"10.42.1.0/24","gateway":"10.9.0.3","dev":"rkx1","flags":["linkdown"]},
            {"dst":"10.1.2.3","gateway":"10.9.0.4","dev":"rkx1","flags":[]},
            {"dst":"10.9.0.0/24","dev":"rkx1","flags":[]}]"#;
        let routes = parse_routes(out);
        assert_eq!(
            routes,
            BTreeMap::from([
                ("10.42.1.0/24".to_owned(), "10.9.0.3".parse().unwrap()),
                ("10.1.2.3/32".to_owned(), "10.9.0.4".parse().unwrap()),
            ])
        );
        assert!(parse_routes("").is_empty());
    }

    #[test]
    fn directly_connected_means_no_gateway_and_not_local() {
        let direct = r#"[{"dst":"10.9.0.3","dev":"rkx1","prefsrc":"10.9.0.2","flags":[],"uid":0,"cache":[]}]"#;
        let via = r#"[{"dst":"8.8.8.8","gateway":"192.0.2.1","dev":"eth0","prefsrc":"192.0.2.2","flags":[],"uid":0,"cache":[]}]"#;
        let local = r#"[{"type":"local","dst":"10.9.0.2","dev":"lo","prefsrc":"10.9.0.2","flags":[],"uid":0,"cache":["local"]}]"#;
        assert!(is_directly_connected(direct));
        assert!(!is_directly_connected(via));
        assert!(!is_directly_connected(local));
        assert!(!is_directly_connected(""));
    }
}
