//! The data-driven registry of every resource the API server serves.
//!
//! One row a resource (per served version). Everything generic in the API server (routing,
//! discovery, OpenAPI, storage keys, decoding) is driven from this table, so adding a resource
//! is adding a row.

use std::borrow::Cow;

use k8s_openapi::api;
use k8s_openapi::{ListableResource, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// Operations that need the resource's Rust type, erased so the table can hold them.
#[derive(Debug)]
pub struct TypedOps {
    /// Decode into the typed struct and encode again: drops unknown fields and normalises
    /// (nulls removed, quantities kept as given). Errors are type mismatches.
    pub roundtrip: fn(Value) -> Result<Value, serde_json::Error>,
    /// The OpenAPI schema of the type (definitions land in the generator).
    pub schema: fn(&mut schemars::SchemaGenerator) -> schemars::Schema,
    /// The fully-qualified OpenAPI name, e.g. `io.k8s.api.core.v1.Pod`.
    pub schema_name: fn() -> Cow<'static, str>,
}

fn roundtrip<T: DeserializeOwned + Serialize>(value: Value) -> Result<Value, serde_json::Error> {
    let typed: T = serde_json::from_value(value)?;
    serde_json::to_value(typed)
}

fn schema<T: schemars::JsonSchema>(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
    generator.subschema_for::<T>()
}

fn ops<T>() -> TypedOps
where
    T: DeserializeOwned + Serialize + schemars::JsonSchema,
{
    TypedOps {
        roundtrip: roundtrip::<T>,
        schema: schema::<T>,
        schema_name: T::schema_name,
    }
}

/// A resource as served at one group/version.
#[derive(Debug)]
pub struct ResourceInfo {
    /// API group; empty for the core (legacy) group.
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    pub list_kind: &'static str,
    /// The URL segment, lower-case plural (`pods`).
    pub plural: &'static str,
    pub singular: &'static str,
    pub short_names: &'static [&'static str],
    pub categories: &'static [&'static str],
    pub namespaced: bool,
    /// Subresources served (`status`, `scale`, `binding`, ...).
    pub subresources: &'static [&'static str],
    /// The resource segment of the storage key (`/registry/<storage>/...`). Several served
    /// versions (or groups) may share one storage resource, as `events` does.
    pub storage: &'static str,
    /// Whether this row is the version objects are stored in. Other rows sharing `storage`
    /// convert through [`crate::conversion`].
    pub storage_version: bool,
    pub typed: TypedOps,
}

impl ResourceInfo {
    /// `v1` for the core group, `apps/v1` otherwise.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `pods`, `deployments.apps`: the name RBAC and error messages use.
    pub fn group_resource(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    pub fn has_subresource(&self, name: &str) -> bool {
        self.subresources.contains(&name)
    }

    /// Verbs served on the collection and items (all of them, for every built-in resource).
    pub fn verbs(&self) -> &'static [&'static str] {
        &[
            "create",
            "delete",
            "deletecollection",
            "get",
            "list",
            "patch",
            "update",
            "watch",
        ]
    }

    /// The store key of one object.
    pub fn key(&self, namespace: Option<&str>, name: &str) -> String {
        match namespace {
            Some(ns) if self.namespaced => format!("/registry/{}/{}/{}", self.storage, ns, name),
            _ => format!("/registry/{}/{}", self.storage, name),
        }
    }

    /// The store prefix of a collection (all namespaces when `namespace` is None).
    pub fn prefix(&self, namespace: Option<&str>) -> String {
        match namespace {
            Some(ns) if self.namespaced => format!("/registry/{}/{}/", self.storage, ns),
            _ => format!("/registry/{}/", self.storage),
        }
    }
}

macro_rules! resource {
    ($ty:ty, plural: $plural:literal, singular: $singular:literal, short: [$($short:literal),*],
     namespaced: $ns:literal, sub: [$($sub:literal),*] $(, categories: [$($cat:literal),*])?
     $(, storage: $storage:literal, storage_version: $sv:literal)?) => {
        ResourceInfo {
            group: <$ty as Resource>::GROUP,
            version: <$ty as Resource>::VERSION,
            kind: <$ty as Resource>::KIND,
            list_kind: <$ty as ListableResource>::LIST_KIND,
            plural: $plural,
            singular: $singular,
            short_names: &[$($short),*],
            categories: &[$($($cat),*)?],
            namespaced: $ns,
            subresources: &[$($sub),*],
            storage: resource!(@storage $plural $(, $storage)?),
            storage_version: resource!(@sv $($sv)?),
            typed: ops::<$ty>(),
        }
    };
    (@storage $plural:literal) => { $plural };
    (@storage $plural:literal, $storage:literal) => { $storage };
    (@sv) => { true };
    (@sv $sv:literal) => { $sv };
}

/// Every served resource. Order is the order of discovery documents.
pub fn all() -> &'static [ResourceInfo] {
    static ALL: std::sync::OnceLock<Vec<ResourceInfo>> = std::sync::OnceLock::new();
    ALL.get_or_init(build)
}

fn build() -> Vec<ResourceInfo> {
    use api::core::v1 as core;
    vec![
        resource!(core::Namespace, plural: "namespaces", singular: "namespace", short: ["ns"], namespaced: false, sub: ["status", "finalize"]),
        resource!(core::Pod, plural: "pods", singular: "pod", short: ["po"], namespaced: true, sub: ["status", "binding", "eviction", "log", "exec", "attach", "portforward"], categories: ["all"]),
        resource!(core::Service, plural: "services", singular: "service", short: ["svc"], namespaced: true, sub: ["status"], categories: ["all"]),
        resource!(core::Endpoints, plural: "endpoints", singular: "endpoints", short: ["ep"], namespaced: true, sub: []),
        resource!(core::ConfigMap, plural: "configmaps", singular: "configmap", short: ["cm"], namespaced: true, sub: []),
        resource!(core::Secret, plural: "secrets", singular: "secret", short: [], namespaced: true, sub: []),
        resource!(core::ServiceAccount, plural: "serviceaccounts", singular: "serviceaccount", short: ["sa"], namespaced: true, sub: []),
        resource!(core::Node, plural: "nodes", singular: "node", short: ["no"], namespaced: false, sub: ["status"]),
        resource!(core::Event, plural: "events", singular: "event", short: ["ev"], namespaced: true, sub: []),
        resource!(core::PersistentVolume, plural: "persistentvolumes", singular: "persistentvolume", short: ["pv"], namespaced: false, sub: ["status"]),
        resource!(core::PersistentVolumeClaim, plural: "persistentvolumeclaims", singular: "persistentvolumeclaim", short: ["pvc"], namespaced: true, sub: ["status"]),
        resource!(core::ResourceQuota, plural: "resourcequotas", singular: "resourcequota", short: ["quota"], namespaced: true, sub: ["status"]),
        resource!(core::LimitRange, plural: "limitranges", singular: "limitrange", short: ["limits"], namespaced: true, sub: []),
        resource!(core::ReplicationController, plural: "replicationcontrollers", singular: "replicationcontroller", short: ["rc"], namespaced: true, sub: ["status", "scale"], categories: ["all"]),
        resource!(core::PodTemplate, plural: "podtemplates", singular: "podtemplate", short: [], namespaced: true, sub: []),
        resource!(api::apps::v1::Deployment, plural: "deployments", singular: "deployment", short: ["deploy"], namespaced: true, sub: ["status", "scale"], categories: ["all"]),
        resource!(api::apps::v1::ReplicaSet, plural: "replicasets", singular: "replicaset", short: ["rs"], namespaced: true, sub: ["status", "scale"], categories: ["all"]),
        resource!(api::apps::v1::StatefulSet, plural: "statefulsets", singular: "statefulset", short: ["sts"], namespaced: true, sub: ["status", "scale"], categories: ["all"]),
        resource!(api::apps::v1::DaemonSet, plural: "daemonsets", singular: "daemonset", short: ["ds"], namespaced: true, sub: ["status"], categories: ["all"]),
        resource!(api::apps::v1::ControllerRevision, plural: "controllerrevisions", singular: "controllerrevision", short: [], namespaced: true, sub: []),
        resource!(api::batch::v1::Job, plural: "jobs", singular: "job", short: [], namespaced: true, sub: ["status"], categories: ["all"]),
        resource!(api::batch::v1::CronJob, plural: "cronjobs", singular: "cronjob", short: ["cj"], namespaced: true, sub: ["status"], categories: ["all"]),
        resource!(api::autoscaling::v2::HorizontalPodAutoscaler, plural: "horizontalpodautoscalers", singular: "horizontalpodautoscaler", short: ["hpa"], namespaced: true, sub: ["status"], categories: ["all"]),
        resource!(api::autoscaling::v1::HorizontalPodAutoscaler, plural: "horizontalpodautoscalers", singular: "horizontalpodautoscaler", short: ["hpa"], namespaced: true, sub: ["status"], categories: ["all"], storage: "horizontalpodautoscalers", storage_version: false),
        resource!(api::coordination::v1::Lease, plural: "leases", singular: "lease", short: [], namespaced: true, sub: []),
        resource!(api::discovery::v1::EndpointSlice, plural: "endpointslices", singular: "endpointslice", short: [], namespaced: true, sub: []),
        resource!(api::events::v1::Event, plural: "events", singular: "event", short: ["ev"], namespaced: true, sub: [], storage: "events", storage_version: false),
        resource!(api::networking::v1::Ingress, plural: "ingresses", singular: "ingress", short: ["ing"], namespaced: true, sub: ["status"]),
        resource!(api::networking::v1::IngressClass, plural: "ingressclasses", singular: "ingressclass", short: [], namespaced: false, sub: []),
        resource!(api::networking::v1::NetworkPolicy, plural: "networkpolicies", singular: "networkpolicy", short: ["netpol"], namespaced: true, sub: []),
        resource!(api::policy::v1::PodDisruptionBudget, plural: "poddisruptionbudgets", singular: "poddisruptionbudget", short: ["pdb"], namespaced: true, sub: ["status"]),
        resource!(api::rbac::v1::Role, plural: "roles", singular: "role", short: [], namespaced: true, sub: []),
        resource!(api::rbac::v1::RoleBinding, plural: "rolebindings", singular: "rolebinding", short: [], namespaced: true, sub: []),
        resource!(api::rbac::v1::ClusterRole, plural: "clusterroles", singular: "clusterrole", short: [], namespaced: false, sub: []),
        resource!(api::rbac::v1::ClusterRoleBinding, plural: "clusterrolebindings", singular: "clusterrolebinding", short: [], namespaced: false, sub: []),
        resource!(api::storage::v1::StorageClass, plural: "storageclasses", singular: "storageclass", short: ["sc"], namespaced: false, sub: []),
        resource!(api::scheduling::v1::PriorityClass, plural: "priorityclasses", singular: "priorityclass", short: ["pc"], namespaced: false, sub: []),
    ]
}

/// The resource served at `group`/`version` under the URL segment `plural`.
pub fn lookup(group: &str, version: &str, plural: &str) -> Option<&'static ResourceInfo> {
    all()
        .iter()
        .find(|r| r.group == group && r.version == version && r.plural == plural)
}

/// The resource of a kind at an apiVersion (`apps/v1`, `Deployment`).
pub fn by_kind(api_version: &str, kind: &str) -> Option<&'static ResourceInfo> {
    let (group, version) = split_api_version(api_version);
    all()
        .iter()
        .find(|r| r.group == group && r.version == version && r.kind == kind)
}

/// The storage-version row of a storage resource.
pub fn storage_row(storage: &str) -> Option<&'static ResourceInfo> {
    all()
        .iter()
        .find(|r| r.storage == storage && r.storage_version)
}

/// `apps/v1` → (`apps`, `v1`); `v1` → (``, `v1`).
pub fn split_api_version(api_version: &str) -> (&str, &str) {
    match api_version.split_once('/') {
        Some((g, v)) => (g, v),
        None => ("", api_version),
    }
}

/// Groups with their versions, preferred (first) version first, in table order.
pub fn groups() -> Vec<(&'static str, Vec<&'static str>)> {
    let mut groups: Vec<(&'static str, Vec<&'static str>)> = Vec::new();
    for r in all() {
        match groups.iter_mut().find(|(g, _)| *g == r.group) {
            Some((_, versions)) => {
                if !versions.contains(&r.version) {
                    versions.push(r.version);
                }
            }
            None => groups.push((r.group, vec![r.version])),
        }
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_resource_has_a_unique_route() {
        let mut seen = std::collections::HashSet::new();
        for r in all() {
            assert!(
                seen.insert((r.group, r.version, r.plural)),
                "duplicate {}",
                r.group_resource()
            );
        }
        assert!(all().len() >= 37);
    }

    #[test]
    fn every_storage_resource_has_one_storage_version() {
        for r in all() {
            let count = all()
                .iter()
                .filter(|o| o.storage == r.storage && o.storage_version)
                .count();
            assert_eq!(
                count, 1,
                "storage {} must have exactly one storage version",
                r.storage
            );
        }
    }

    #[test]
    fn lookups() {
        let deploy = lookup("apps", "v1", "deployments").unwrap();
        assert_eq!(deploy.kind, "Deployment");
        assert_eq!(deploy.list_kind, "DeploymentList");
        assert_eq!(
            deploy.key(Some("default"), "web"),
            "/registry/deployments/default/web"
        );
        assert_eq!(by_kind("v1", "Pod").unwrap().plural, "pods");
        let ns = lookup("", "v1", "namespaces").unwrap();
        assert_eq!(ns.key(None, "default"), "/registry/namespaces/default");
        assert_eq!(ns.prefix(Some("x")), "/registry/namespaces/");
        assert_eq!((ns.typed.schema_name)(), "io.k8s.api.core.v1.Namespace");
        let preferred = groups();
        let autoscaling = preferred.iter().find(|(g, _)| *g == "autoscaling").unwrap();
        assert_eq!(autoscaling.1, vec!["v2", "v1"]);
    }

    #[test]
    fn roundtrip_drops_unknown_fields() {
        let pod = lookup("", "v1", "pods").unwrap();
        let v = serde_json::json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "a"}, "bogus": 1});
        let out = (pod.typed.roundtrip)(v).unwrap();
        assert!(out.get("bogus").is_none());
        assert_eq!(out["metadata"]["name"], "a");
    }
}
