//! Resource arithmetic as the scheduler counts it: requests of a pod (init containers, sidecars
//! and overhead as upstream's `PodRequests`) and what a node can allocate.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Pod};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

pub const CPU: &str = "cpu";
pub const MEMORY: &str = "memory";
pub const EPHEMERAL_STORAGE: &str = "ephemeral-storage";
pub const PODS: &str = "pods";

/// What a container without a cpu request counts as when scoring (upstream's
/// `DefaultMilliCPURequest`), so that many request-less pods still spread.
pub const DEFAULT_MILLI_CPU_REQUEST: i64 = 100;
/// Likewise for memory (`DefaultMemoryRequest`, 200 MiB).
pub const DEFAULT_MEMORY_REQUEST: i64 = 200 * 1024 * 1024;

/// An amount of each resource: cpu in millicores, the rest in units (bytes, pods, devices).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resource {
    pub milli_cpu: i64,
    pub memory: i64,
    pub ephemeral_storage: i64,
    pub allowed_pod_number: i64,
    /// Extended resources, hugepages and anything else by name.
    pub scalar: BTreeMap<String, i64>,
}

/// A quantity in millis (`cpu`) or units (everything else), 0 when unparsable.
pub fn quantity_value(name: &str, q: &Quantity) -> i64 {
    let Ok(parsed) = api::validation::parse_quantity(&q.0) else {
        return 0;
    };
    let v = if name == CPU {
        parsed.milli_value()
    } else {
        parsed.value()
    };
    v.clamp(i64::MIN as i128, i64::MAX as i128) as i64
}

impl Resource {
    pub fn from_list(list: &BTreeMap<String, Quantity>) -> Resource {
        let mut r = Resource::default();
        for (name, q) in list {
            r.set(name, quantity_value(name, q));
        }
        r
    }

    pub fn get(&self, name: &str) -> i64 {
        match name {
            CPU => self.milli_cpu,
            MEMORY => self.memory,
            EPHEMERAL_STORAGE => self.ephemeral_storage,
            PODS => self.allowed_pod_number,
            other => self.scalar.get(other).copied().unwrap_or(0),
        }
    }

    pub fn set(&mut self, name: &str, value: i64) {
        match name {
            CPU => self.milli_cpu = value,
            MEMORY => self.memory = value,
            EPHEMERAL_STORAGE => self.ephemeral_storage = value,
            PODS => self.allowed_pod_number = value,
            other => {
                self.scalar.insert(other.to_string(), value);
            }
        }
    }

    pub fn add(&mut self, other: &Resource) {
        self.milli_cpu += other.milli_cpu;
        self.memory += other.memory;
        self.ephemeral_storage += other.ephemeral_storage;
        self.allowed_pod_number += other.allowed_pod_number;
        for (k, v) in &other.scalar {
            *self.scalar.entry(k.clone()).or_default() += v;
        }
    }

    pub fn sub(&mut self, other: &Resource) {
        self.milli_cpu -= other.milli_cpu;
        self.memory -= other.memory;
        self.ephemeral_storage -= other.ephemeral_storage;
        self.allowed_pod_number -= other.allowed_pod_number;
        for (k, v) in &other.scalar {
            *self.scalar.entry(k.clone()).or_default() -= v;
        }
    }

    /// Each resource the larger of the two.
    pub fn set_max(&mut self, other: &Resource) {
        self.milli_cpu = self.milli_cpu.max(other.milli_cpu);
        self.memory = self.memory.max(other.memory);
        self.ephemeral_storage = self.ephemeral_storage.max(other.ephemeral_storage);
        self.allowed_pod_number = self.allowed_pod_number.max(other.allowed_pod_number);
        for (k, v) in &other.scalar {
            let e = self.scalar.entry(k.clone()).or_default();
            *e = (*e).max(*v);
        }
    }

    pub fn is_zero(&self) -> bool {
        self.milli_cpu == 0
            && self.memory == 0
            && self.ephemeral_storage == 0
            && self.scalar.values().all(|v| *v == 0)
    }
}

fn container_requests(c: &Container, non_zero: bool) -> Resource {
    let mut r = c
        .resources
        .as_ref()
        .and_then(|r| r.requests.as_ref())
        .map(Resource::from_list)
        .unwrap_or_default();
    if non_zero {
        let requests = c.resources.as_ref().and_then(|r| r.requests.as_ref());
        if requests.is_none_or(|m| !m.contains_key(CPU)) {
            r.milli_cpu = DEFAULT_MILLI_CPU_REQUEST;
        }
        if requests.is_none_or(|m| !m.contains_key(MEMORY)) {
            r.memory = DEFAULT_MEMORY_REQUEST;
        }
    }
    r
}

/// A sidecar: an init container that keeps running beside the app containers.
pub fn is_restartable_init_container(c: &Container) -> bool {
    c.restart_policy.as_deref() == Some("Always")
}

/// The pod's effective requests (upstream `resourcehelper.PodRequests`): app containers plus
/// sidecars, or the largest init step (an init container plus the sidecars started before it)
/// if that is larger; plus the pod overhead. With `non_zero`, containers without cpu/memory
/// requests count the scoring defaults.
pub fn pod_requests(pod: &Pod, non_zero: bool) -> Resource {
    let Some(spec) = pod.spec.as_ref() else {
        return Resource::default();
    };
    let mut reqs = Resource::default();
    for c in &spec.containers {
        reqs.add(&container_requests(c, non_zero));
    }
    let mut sidecars = Resource::default();
    let mut init_max = Resource::default();
    for c in spec.init_containers.iter().flatten() {
        let mut step = container_requests(c, non_zero);
        if is_restartable_init_container(c) {
            reqs.add(&step);
            sidecars.add(&step);
            step = sidecars.clone();
        } else {
            step.add(&sidecars);
        }
        init_max.set_max(&step);
    }
    reqs.set_max(&init_max);
    if let Some(overhead) = spec.overhead.as_ref() {
        reqs.add(&Resource::from_list(overhead));
    }
    reqs
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(spec: serde_json::Value) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": spec})).unwrap()
    }

    fn c(name: &str, cpu: &str, mem: &str) -> serde_json::Value {
        json!({"name": name, "image": "i", "resources": {"requests": {"cpu": cpu, "memory": mem}}})
    }

    #[test]
    fn quantities() {
        assert_eq!(quantity_value("cpu", &Quantity("100m".into())), 100);
        assert_eq!(quantity_value("cpu", &Quantity("2".into())), 2000);
        assert_eq!(quantity_value("memory", &Quantity("1Gi".into())), 1 << 30);
        assert_eq!(quantity_value("memory", &Quantity("bogus".into())), 0);
    }

    #[test]
    fn requests_table() {
        let cases = [
            (
                "sum of app containers",
                json!({"containers": [c("a", "100m", "1Mi"), c("b", "200m", "2Mi")]}),
                300,
                3 << 20,
            ),
            (
                "init container larger than the sum",
                json!({"containers": [c("a", "100m", "1Mi")], "initContainers": [c("i", "1", "1Mi")]}),
                1000,
                1 << 20,
            ),
            (
                "init container smaller than the sum",
                json!({"containers": [c("a", "500m", "4Mi")], "initContainers": [c("i", "100m", "8Mi")]}),
                500,
                8 << 20,
            ),
            (
                "sidecar adds to app containers and to later init steps",
                json!({
                    "containers": [c("a", "500m", "1Mi")],
                    "initContainers": [
                        {"name": "s", "image": "i", "restartPolicy": "Always", "resources": {"requests": {"cpu": "200m", "memory": "1Mi"}}},
                        c("i", "600m", "1Mi"),
                    ]
                }),
                // app 500m + sidecar 200m = 700m; init step 600m + 200m = 800m.
                800,
                2 << 20,
            ),
            (
                "overhead",
                json!({"containers": [c("a", "100m", "1Mi")], "overhead": {"cpu": "50m", "memory": "1Mi"}}),
                150,
                2 << 20,
            ),
        ];
        for (what, spec, cpu, mem) in cases {
            let r = pod_requests(&pod(spec), false);
            assert_eq!((r.milli_cpu, r.memory), (cpu, mem), "{what}");
        }
    }

    #[test]
    fn non_zero_defaults() {
        let p = pod(json!({"containers": [{"name": "a", "image": "i"}]}));
        let r = pod_requests(&p, true);
        assert_eq!(r.milli_cpu, DEFAULT_MILLI_CPU_REQUEST);
        assert_eq!(r.memory, DEFAULT_MEMORY_REQUEST);
        assert!(pod_requests(&p, false).is_zero());
    }

    #[test]
    fn extended_resources() {
        let p = pod(
            json!({"containers": [{"name": "a", "image": "i", "resources": {"requests": {"example.com/gpu": "2"}}}]}),
        );
        assert_eq!(pod_requests(&p, false).get("example.com/gpu"), 2);
    }
}
