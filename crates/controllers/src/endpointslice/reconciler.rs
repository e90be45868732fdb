//! What the EndpointSlices of one Service should become: the desired endpoints (grouped by the
//! ports they serve) packed into the existing slices with the least churn, as upstream's
//! reconciler does. Pure; the controller carries the plan out.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

use crate::endpoints::{
    HEADLESS_LABEL, find_port, hostname_for, is_headless, pod_ipv4, publish_not_ready,
    should_pod_be_in_endpoints, target_ref,
};

pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
pub const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
pub const CONTROLLER_NAME: &str = "endpointslice-controller.k8s.io";
pub const MAX_ENDPOINTS_PER_SLICE: usize = 100;
pub const ADDRESS_TYPE: &str = "IPv4";

/// The ports a group of endpoints serves, as a sortable key.
pub type PortsKey = Vec<(String, i32, String)>;

fn ports_key(ports: &[EndpointPort]) -> PortsKey {
    let mut key: PortsKey = ports
        .iter()
        .map(|p| {
            (
                p.name.clone().unwrap_or_default(),
                p.port.unwrap_or(0),
                p.protocol.clone().unwrap_or_else(|| "TCP".into()),
            )
        })
        .collect();
    key.sort();
    key
}

fn ports_of(key: &PortsKey) -> Vec<EndpointPort> {
    key.iter()
        .map(|(name, port, protocol)| EndpointPort {
            name: Some(name.clone()),
            port: Some(*port),
            protocol: Some(protocol.clone()),
            app_protocol: None,
        })
        .collect()
}

/// An endpoint's identity across syncs: its address and the pod behind it.
fn endpoint_key(e: &Endpoint) -> String {
    let target = e
        .target_ref
        .as_ref()
        .and_then(|r| r.name.clone())
        .unwrap_or_default();
    format!("{}/{}", e.addresses.join(","), target)
}

/// The endpoints a service should have, grouped by port set and keyed by [`endpoint_key`].
pub fn desired_endpoints(
    service: &Service,
    pods: &[Arc<Pod>],
    zone_of: impl Fn(&str) -> Option<String>,
) -> BTreeMap<PortsKey, BTreeMap<String, Endpoint>> {
    let mut desired: BTreeMap<PortsKey, BTreeMap<String, Endpoint>> = BTreeMap::new();
    let service_ports = service
        .spec
        .as_ref()
        .and_then(|s| s.ports.clone())
        .unwrap_or_default();
    let publish = publish_not_ready(service);
    for pod in pods {
        if !should_pod_be_in_endpoints(pod, true) {
            continue;
        }
        let Some(ip) = pod_ipv4(pod) else {
            continue;
        };
        let serving = crate::util::is_pod_ready(pod);
        let terminating = pod.metadata.deletion_timestamp.is_some();
        // Ready is never true for a terminating pod, unless not-ready addresses are published.
        let ready = publish || (serving && !terminating);
        let node_name = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .filter(|n| !n.is_empty());
        let endpoint = Endpoint {
            addresses: vec![ip],
            conditions: Some(EndpointConditions {
                ready: Some(ready),
                serving: Some(serving),
                terminating: Some(terminating),
            }),
            hostname: hostname_for(pod, service),
            zone: node_name.as_deref().and_then(&zone_of),
            node_name,
            target_ref: Some(target_ref(pod)),
            ..Default::default()
        };
        let mut ports: Vec<EndpointPort> = Vec::new();
        for port in &service_ports {
            if let Some(number) = find_port(pod, port) {
                ports.push(EndpointPort {
                    name: Some(port.name.clone().unwrap_or_default()),
                    port: Some(number),
                    protocol: Some(port.protocol.clone().unwrap_or_else(|| "TCP".into())),
                    app_protocol: port.app_protocol.clone(),
                });
            }
        }
        desired
            .entry(ports_key(&ports))
            .or_default()
            .insert(endpoint_key(&endpoint), endpoint);
    }
    desired
}

/// The labels every slice of the service carries.
pub fn slice_labels(service: &Service) -> BTreeMap<String, String> {
    let mut labels = service.metadata.labels.clone().unwrap_or_default();
    labels.remove(HEADLESS_LABEL);
    if is_headless(service) {
        labels.insert(HEADLESS_LABEL.into(), String::new());
    }
    labels.insert(
        SERVICE_NAME_LABEL.into(),
        service.metadata.name.clone().unwrap_or_default(),
    );
    labels.insert(MANAGED_BY_LABEL.into(), CONTROLLER_NAME.into());
    labels
}

pub fn service_owner(service: &Service) -> Option<OwnerReference> {
    crate::util::controller_ref(service)
}

/// A new slice for the service; the API server names it from generateName.
pub fn new_slice(service: &Service, ports: &PortsKey, endpoints: Vec<Endpoint>) -> EndpointSlice {
    let name = service.metadata.name.clone().unwrap_or_default();
    // Leave room for the random suffix within the 63 characters of a name.
    let prefix: String = name.chars().take(57).collect();
    EndpointSlice {
        metadata: ObjectMeta {
            generate_name: Some(format!("{prefix}-")),
            namespace: service.metadata.namespace.clone(),
            labels: Some(slice_labels(service)),
            owner_references: service_owner(service).map(|o| vec![o]),
            ..Default::default()
        },
        address_type: ADDRESS_TYPE.into(),
        endpoints,
        ports: Some(ports_of(ports)),
    }
}

#[derive(Debug, Default, Clone, PartialEq)]
pub struct Plan {
    pub create: Vec<EndpointSlice>,
    pub update: Vec<EndpointSlice>,
    pub delete: Vec<EndpointSlice>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.create.is_empty() && self.update.is_empty() && self.delete.is_empty()
    }
}

fn metadata_current(slice: &EndpointSlice, service: &Service) -> bool {
    let labels = slice.metadata.labels.clone().unwrap_or_default();
    let owners = slice.metadata.owner_references.clone().unwrap_or_default();
    labels == slice_labels(service)
        && service_owner(service).is_none_or(|o| owners.iter().any(|r| r.uid == o.uid))
}

fn with_current_metadata(mut slice: EndpointSlice, service: &Service) -> EndpointSlice {
    slice.metadata.labels = Some(slice_labels(service));
    if let Some(owner) = service_owner(service) {
        let mut owners = slice.metadata.owner_references.take().unwrap_or_default();
        owners.retain(|r| r.kind != "Service");
        owners.push(owner);
        slice.metadata.owner_references = Some(owners);
    }
    slice
}

fn is_placeholder(slice: &EndpointSlice) -> bool {
    slice.endpoints.is_empty() && slice.ports.as_ref().is_none_or(|p| p.is_empty())
}

/// Pack `desired` into `existing` (the service's managed IPv4 slices):
/// 1. each existing slice keeps the desired endpoints it has (updated in place), drops the
///    others, and is deleted once empty; slices of port sets no longer served go;
/// 2. endpoints still to place fill the slices being updated anyway, then one unchanged
///    slice with room for all of them, then new slices of at most `max` endpoints;
/// 3. a service with no endpoints keeps (or gets) one empty placeholder slice.
pub fn plan(
    service: &Service,
    existing: &[EndpointSlice],
    desired: &BTreeMap<PortsKey, BTreeMap<String, Endpoint>>,
    max: usize,
) -> Plan {
    let mut plan = Plan::default();
    let mut by_ports: BTreeMap<PortsKey, Vec<&EndpointSlice>> = BTreeMap::new();
    let mut sorted: Vec<&EndpointSlice> = existing.iter().collect();
    sorted.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    for slice in sorted {
        if slice.address_type != ADDRESS_TYPE {
            plan.delete.push(slice.clone());
            continue;
        }
        by_ports
            .entry(ports_key(slice.ports.as_deref().unwrap_or(&[])))
            .or_default()
            .push(slice);
    }
    for (key, slices) in &by_ports {
        if !desired.contains_key(key) {
            plan.delete.extend(slices.iter().map(|s| (*s).clone()));
        }
    }
    for (key, wanted) in desired {
        let mut remaining = wanted.clone();
        let mut updates: Vec<EndpointSlice> = Vec::new();
        let mut unchanged: Vec<EndpointSlice> = Vec::new();
        for slice in by_ports.get(key).into_iter().flatten() {
            let mut changed = !metadata_current(slice, service);
            let mut kept = Vec::with_capacity(slice.endpoints.len());
            for endpoint in &slice.endpoints {
                match remaining.remove(&endpoint_key(endpoint)) {
                    Some(want) => {
                        changed |= &want != endpoint;
                        kept.push(want);
                    }
                    None => changed = true,
                }
            }
            if kept.len() > max {
                // Over-full (written by someone else): the excess is placed again.
                for endpoint in kept.split_off(max) {
                    remaining.insert(endpoint_key(&endpoint), endpoint);
                }
                changed = true;
            }
            if !changed {
                unchanged.push((*slice).clone());
            } else if kept.is_empty() {
                plan.delete.push((*slice).clone());
            } else {
                let mut updated = with_current_metadata((*slice).clone(), service);
                updated.endpoints = kept;
                updates.push(updated);
            }
        }
        let mut to_place: Vec<Endpoint> = remaining.into_values().collect();
        for slice in &mut updates {
            while slice.endpoints.len() < max && !to_place.is_empty() {
                slice.endpoints.push(to_place.remove(0));
            }
        }
        if !to_place.is_empty() && to_place.len() < max {
            // One unchanged slice with room for the rest takes them all: the fullest that fits.
            unchanged.sort_by_key(|s| std::cmp::Reverse(s.endpoints.len()));
            if let Some(i) = unchanged
                .iter()
                .position(|s| s.endpoints.len() + to_place.len() <= max)
            {
                let mut slice = unchanged.remove(i);
                slice.endpoints.append(&mut to_place);
                updates.push(slice);
            }
        }
        for chunk in to_place.chunks(max) {
            plan.create.push(new_slice(service, key, chunk.to_vec()));
        }
        // Merge: a slice rewritten anyway whose endpoints fit in the others' room is folded
        // into them and deleted, so slices do not stay fragmented as pods go.
        while let Some(i) = (0..updates.len()).min_by_key(|i| updates[*i].endpoints.len()) {
            let room: usize = updates
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .map(|(_, s)| max.saturating_sub(s.endpoints.len()))
                .chain(
                    unchanged
                        .iter()
                        .map(|s| max.saturating_sub(s.endpoints.len())),
                )
                .sum();
            if room < updates[i].endpoints.len() {
                break;
            }
            let folded = updates.remove(i);
            let mut moving = folded.endpoints.clone();
            for slice in &mut updates {
                while slice.endpoints.len() < max && !moving.is_empty() {
                    slice.endpoints.push(moving.remove(0));
                }
            }
            unchanged.sort_by_key(|s| std::cmp::Reverse(s.endpoints.len()));
            while !moving.is_empty() {
                let Some(j) = unchanged.iter().position(|s| s.endpoints.len() < max) else {
                    break;
                };
                let mut slice = unchanged.remove(j);
                while slice.endpoints.len() < max && !moving.is_empty() {
                    slice.endpoints.push(moving.remove(0));
                }
                updates.push(slice);
            }
            plan.delete.push(folded);
        }
        plan.update.extend(updates);
    }
    // No endpoints at all: one placeholder slice stays, so consumers see the service.
    let total: usize = desired.values().map(BTreeMap::len).sum();
    if total == 0 && plan.create.is_empty() && plan.update.is_empty() {
        let kept = existing.len() - plan.delete.len();
        if kept == 0 {
            match plan.delete.iter().position(|s| {
                is_placeholder(s) && s.address_type == ADDRESS_TYPE && metadata_current(s, service)
            }) {
                Some(i) => {
                    plan.delete.remove(i);
                }
                None => plan
                    .create
                    .push(new_slice(service, &Vec::new(), Vec::new())),
            }
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        Container, PodCondition, PodIP, PodSpec, PodStatus, ServicePort, ServiceSpec,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    use k8s_openapi::jiff::Timestamp;

    fn service() -> Service {
        Service {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("default".into()),
                uid: Some("svc-uid".into()),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                selector: Some([("app".to_string(), "web".to_string())].into()),
                ports: Some(vec![ServicePort {
                    name: Some("http".into()),
                    port: 80,
                    protocol: Some("TCP".into()),
                    target_port: Some(IntOrString::Int(8080)),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn pod(i: usize, ready: bool) -> Arc<Pod> {
        Arc::new(Pod {
            metadata: ObjectMeta {
                name: Some(format!("p{i:04}")),
                namespace: Some("default".into()),
                uid: Some(format!("uid-{i}")),
                ..Default::default()
            },
            spec: Some(PodSpec {
                node_name: Some(format!("sim-{}", i % 2)),
                containers: vec![Container {
                    name: "c".into(),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            status: Some(PodStatus {
                phase: Some("Running".into()),
                pod_ips: Some(vec![PodIP {
                    ip: format!("10.42.{}.{}", i / 200, i % 200),
                }]),
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: if ready { "True" } else { "False" }.into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
        })
    }

    fn pods(range: std::ops::Range<usize>) -> Vec<Arc<Pod>> {
        range.map(|i| pod(i, true)).collect()
    }

    fn zone(node: &str) -> Option<String> {
        (node == "sim-0").then(|| "zone-a".to_string())
    }

    /// Carry a plan out on an in-memory set of slices, naming created ones.
    fn apply(existing: Vec<EndpointSlice>, plan: Plan, counter: &mut usize) -> Vec<EndpointSlice> {
        let deleted: Vec<Option<String>> = plan
            .delete
            .iter()
            .map(|s| s.metadata.name.clone())
            .collect();
        let updated: BTreeMap<Option<String>, EndpointSlice> = plan
            .update
            .into_iter()
            .map(|s| (s.metadata.name.clone(), s))
            .collect();
        let mut result: Vec<EndpointSlice> = existing
            .into_iter()
            .filter(|s| !deleted.contains(&s.metadata.name))
            .map(|s| updated.get(&s.metadata.name).cloned().unwrap_or(s))
            .collect();
        for mut s in plan.create {
            *counter += 1;
            s.metadata.name = Some(format!("web-{counter:03}"));
            result.push(s);
        }
        result
    }

    fn total(slices: &[EndpointSlice]) -> usize {
        slices.iter().map(|s| s.endpoints.len()).sum()
    }

    #[test]
    fn endpoints_carry_conditions_zone_and_target() {
        let svc = service();
        let mut terminating = (*pod(2, true)).clone();
        terminating.metadata.deletion_timestamp = Some(Time(Timestamp::now()));
        let desired = desired_endpoints(
            &svc,
            &[pod(0, true), pod(1, false), Arc::new(terminating)],
            zone,
        );
        let key: PortsKey = vec![("http".into(), 8080, "TCP".into())];
        let endpoints: Vec<&Endpoint> = desired[&key].values().collect();
        assert_eq!(endpoints.len(), 3);
        let conditions = |i: usize| endpoints[i].conditions.clone().unwrap();
        assert_eq!(
            conditions(0),
            EndpointConditions {
                ready: Some(true),
                serving: Some(true),
                terminating: Some(false)
            }
        );
        assert_eq!(
            conditions(1),
            EndpointConditions {
                ready: Some(false),
                serving: Some(false),
                terminating: Some(false)
            }
        );
        assert_eq!(
            conditions(2),
            EndpointConditions {
                ready: Some(false),
                serving: Some(true),
                terminating: Some(true)
            }
        );
        assert_eq!(endpoints[0].zone.as_deref(), Some("zone-a"));
        assert_eq!(endpoints[1].zone, None);
        assert_eq!(endpoints[1].node_name.as_deref(), Some("sim-1"));
        assert_eq!(
            endpoints[0].target_ref.as_ref().unwrap().name.as_deref(),
            Some("p0000")
        );
        // publishNotReadyAddresses makes every endpoint ready.
        let mut publish = svc.clone();
        publish.spec.as_mut().unwrap().publish_not_ready_addresses = Some(true);
        let desired = desired_endpoints(&publish, &[pod(1, false)], zone);
        let e = desired[&key].values().next().unwrap();
        assert_eq!(e.conditions.as_ref().unwrap().ready, Some(true));
        assert_eq!(e.conditions.as_ref().unwrap().serving, Some(false));
    }

    #[test]
    fn slices_hold_at_most_max_endpoints_and_grow_and_shrink_with_little_churn() {
        let svc = service();
        let mut n = 0;
        let desired = desired_endpoints(&svc, &pods(0..250), zone);
        let p = plan(&svc, &[], &desired, MAX_ENDPOINTS_PER_SLICE);
        assert_eq!(p.create.len(), 3);
        assert!(p.create.iter().all(|s| s.endpoints.len() <= 100));
        let slice = &p.create[0];
        let labels = slice.metadata.labels.as_ref().unwrap();
        assert_eq!(labels[SERVICE_NAME_LABEL], "web");
        assert_eq!(labels[MANAGED_BY_LABEL], CONTROLLER_NAME);
        assert_eq!(
            slice.metadata.owner_references.as_ref().unwrap()[0].uid,
            "svc-uid"
        );
        assert_eq!(slice.metadata.generate_name.as_deref(), Some("web-"));
        assert_eq!(slice.address_type, "IPv4");
        assert_eq!(
            slice.ports.as_ref().unwrap()[0].name.as_deref(),
            Some("http")
        );
        let slices = apply(Vec::new(), p, &mut n);
        assert_eq!(total(&slices), 250);

        // Nothing changed: nothing to do.
        assert!(plan(&svc, &slices, &desired, 100).is_empty());

        // Ten more pods go into the slice with room, touching only it.
        let desired = desired_endpoints(&svc, &pods(0..260), zone);
        let p = plan(&svc, &slices, &desired, 100);
        assert!(p.create.is_empty() && p.delete.is_empty());
        assert_eq!(p.update.len(), 1);
        let slices = apply(slices, p, &mut n);
        assert_eq!(total(&slices), 260);
        assert!(slices.iter().all(|s| s.endpoints.len() <= 100));

        // Scaling down to 50 empties slices, which are deleted.
        let desired = desired_endpoints(&svc, &pods(0..50), zone);
        let p = plan(&svc, &slices, &desired, 100);
        assert!(!p.delete.is_empty());
        let slices = apply(slices, p, &mut n);
        assert_eq!(total(&slices), 50);
        assert_eq!(slices.len(), 1);
        assert!(plan(&svc, &slices, &desired, 100).is_empty());

        // A readiness change updates the endpoint in place.
        let mut changed = pods(0..50);
        changed[3] = pod(3, false);
        let desired = desired_endpoints(&svc, &changed, zone);
        let p = plan(&svc, &slices, &desired, 100);
        assert_eq!((p.create.len(), p.update.len(), p.delete.len()), (0, 1, 0));
        let slices = apply(slices, p, &mut n);
        let not_ready = slices[0]
            .endpoints
            .iter()
            .filter(|e| e.conditions.as_ref().unwrap().ready == Some(false))
            .count();
        assert_eq!(not_ready, 1);
    }

    #[test]
    fn no_endpoints_leave_a_single_placeholder() {
        let svc = service();
        let mut n = 0;
        let empty = BTreeMap::new();
        let p = plan(&svc, &[], &empty, 100);
        assert_eq!(p.create.len(), 1);
        assert!(p.create[0].endpoints.is_empty());
        assert_eq!(p.create[0].ports.as_deref(), Some(&[][..]));
        let slices = apply(Vec::new(), p, &mut n);
        // The placeholder is kept, not recreated.
        assert!(plan(&svc, &slices, &empty, 100).is_empty());
        // Pods arrive: a real slice is created and the placeholder goes.
        let desired = desired_endpoints(&svc, &pods(0..3), zone);
        let p = plan(&svc, &slices, &desired, 100);
        assert_eq!((p.create.len(), p.delete.len()), (1, 1));
        let slices = apply(slices, p, &mut n);
        // And leave: the real slice is deleted and a placeholder takes its place.
        let p = plan(&svc, &slices, &empty, 100);
        assert_eq!((p.create.len(), p.delete.len()), (1, 1));
        assert!(p.create[0].endpoints.is_empty());
    }

    #[test]
    fn port_changes_move_endpoints_to_new_slices() {
        let svc = service();
        let mut n = 0;
        let desired = desired_endpoints(&svc, &pods(0..5), zone);
        let slices = apply(Vec::new(), plan(&svc, &[], &desired, 100), &mut n);
        let mut moved = svc.clone();
        moved.spec.as_mut().unwrap().ports.as_mut().unwrap()[0].target_port =
            Some(IntOrString::Int(9090));
        let desired = desired_endpoints(&moved, &pods(0..5), zone);
        let p = plan(&moved, &slices, &desired, 100);
        assert_eq!((p.create.len(), p.update.len(), p.delete.len()), (1, 0, 1));
        assert_eq!(p.create[0].ports.as_ref().unwrap()[0].port, Some(9090));
    }

    #[test]
    fn stale_labels_are_corrected() {
        let svc = service();
        let mut n = 0;
        let desired = desired_endpoints(&svc, &pods(0..2), zone);
        let slices = apply(Vec::new(), plan(&svc, &[], &desired, 100), &mut n);
        let mut labelled = svc.clone();
        labelled.metadata.labels = Some([("tier".to_string(), "front".to_string())].into());
        let p = plan(&labelled, &slices, &desired, 100);
        assert_eq!(p.update.len(), 1);
        assert_eq!(
            p.update[0].metadata.labels.as_ref().unwrap()["tier"],
            "front"
        );
    }
}
