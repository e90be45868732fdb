//! Strategic-merge-patch metadata of built-in types: the `patchStrategy` and
//! `patchMergeKey` struct tags of upstream `k8s.io/api`, keyed by OpenAPI type name and JSON
//! field name. The OpenAPI generator reads the same table to emit
//! `x-kubernetes-patch-strategy` / `x-kubernetes-patch-merge-key`.

/// How a field merges under a strategic merge patch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PatchMeta {
    /// `merge`, `replace`, `retainKeys` or `merge,retainKeys`.
    pub strategy: &'static str,
    /// The key identifying list items, for lists of objects with strategy `merge`.
    pub merge_key: Option<&'static str>,
    /// Under server-side apply, the fields that together identify a list item
    /// (`x-kubernetes-list-map-keys`) when they differ from the merge key alone; empty
    /// otherwise, and always empty for strategic merge patches, which use the merge key.
    pub map_keys: &'static [MapKey],
}

/// One field of a list item's identity under server-side apply, with the value it has when
/// the item leaves it out (upstream matches `protocol` as `TCP` when it is unset).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MapKey {
    pub field: &'static str,
    pub default: Option<&'static str>,
}

impl PatchMeta {
    /// Whether the list (or map) merges rather than being replaced.
    pub fn merges(&self) -> bool {
        self.strategy.split(',').any(|s| s == "merge")
    }

    /// Whether `$retainKeys` applies to this field's value.
    pub fn retains_keys(&self) -> bool {
        self.strategy.split(',').any(|s| s == "retainKeys")
    }
}

/// The patch metadata of `field` in the OpenAPI type `type_name`
/// (`io.k8s.api.core.v1.PodSpec`, `containers`), or None when the field has no patch tags
/// (maps then merge, lists are replaced).
pub fn patch_meta(type_name: &str, field: &str) -> Option<PatchMeta> {
    TABLE
        .iter()
        .find(|(t, f, _, _)| *t == type_name && *f == field)
        .map(|&(_, _, strategy, merge_key)| PatchMeta {
            strategy,
            merge_key,
            map_keys: &[],
        })
}

/// The list-map keys of `field` in `type_name` under server-side apply, where upstream's
/// `+listMapKey` markers name more than the patch merge key.
pub fn apply_map_keys(type_name: &str, field: &str) -> &'static [MapKey] {
    const PORT_PROTOCOL: &[MapKey] = &[
        MapKey {
            field: "port",
            default: None,
        },
        MapKey {
            field: "protocol",
            default: Some("TCP"),
        },
    ];
    const CONTAINER_PORT_PROTOCOL: &[MapKey] = &[
        MapKey {
            field: "containerPort",
            default: None,
        },
        MapKey {
            field: "protocol",
            default: Some("TCP"),
        },
    ];
    const TOPOLOGY_SPREAD: &[MapKey] = &[
        MapKey {
            field: "topologyKey",
            default: None,
        },
        MapKey {
            field: "whenUnsatisfiable",
            default: None,
        },
    ];
    match (type_name, field) {
        ("io.k8s.api.core.v1.ServiceSpec", "ports") => PORT_PROTOCOL,
        (CORE_CONTAINER | CORE_EPHEMERAL_CONTAINER, "ports") => CONTAINER_PORT_PROTOCOL,
        (CORE_POD_SPEC, "topologySpreadConstraints") => TOPOLOGY_SPREAD,
        _ => &[],
    }
}

/// Every tagged field: (type, field, strategy, merge key).
pub fn all() -> impl Iterator<Item = (&'static str, &'static str, PatchMeta)> {
    TABLE.iter().map(|&(t, f, strategy, merge_key)| {
        (
            t,
            f,
            PatchMeta {
                strategy,
                merge_key,
                map_keys: &[],
            },
        )
    })
}

type Row = (
    &'static str,
    &'static str,
    &'static str,
    Option<&'static str>,
);

/// Upstream struct tags, type by type. A field absent here has no patch strategy: under a
/// strategic merge patch its maps merge and its lists are replaced whole (`atomic`).
const TABLE: &[Row] = &[
    // meta/v1
    (META_OBJECT_META, "finalizers", "merge", None),
    (META_OBJECT_META, "ownerReferences", "merge", Some("uid")),
    // core/v1 Pod
    (CORE_POD_SPEC, "volumes", "merge,retainKeys", Some("name")),
    (CORE_POD_SPEC, "initContainers", "merge", Some("name")),
    (CORE_POD_SPEC, "containers", "merge", Some("name")),
    (CORE_POD_SPEC, "ephemeralContainers", "merge", Some("name")),
    (CORE_POD_SPEC, "imagePullSecrets", "merge", Some("name")),
    (CORE_POD_SPEC, "hostAliases", "merge", Some("ip")),
    (
        CORE_POD_SPEC,
        "topologySpreadConstraints",
        "merge",
        Some("topologyKey"),
    ),
    (CORE_POD_SPEC, "schedulingGates", "merge", Some("name")),
    (
        CORE_POD_SPEC,
        "resourceClaims",
        "merge,retainKeys",
        Some("name"),
    ),
    (CORE_CONTAINER, "ports", "merge", Some("containerPort")),
    (CORE_CONTAINER, "env", "merge", Some("name")),
    (CORE_CONTAINER, "volumeMounts", "merge", Some("mountPath")),
    (CORE_CONTAINER, "volumeDevices", "merge", Some("devicePath")),
    (
        CORE_EPHEMERAL_CONTAINER,
        "ports",
        "merge",
        Some("containerPort"),
    ),
    (CORE_EPHEMERAL_CONTAINER, "env", "merge", Some("name")),
    (
        CORE_EPHEMERAL_CONTAINER,
        "volumeMounts",
        "merge",
        Some("mountPath"),
    ),
    (
        CORE_EPHEMERAL_CONTAINER,
        "volumeDevices",
        "merge",
        Some("devicePath"),
    ),
    (
        "io.k8s.api.core.v1.PodStatus",
        "conditions",
        "merge",
        Some("type"),
    ),
    (
        "io.k8s.api.core.v1.PodStatus",
        "podIPs",
        "merge",
        Some("ip"),
    ),
    (
        "io.k8s.api.core.v1.PodStatus",
        "hostIPs",
        "merge",
        Some("ip"),
    ),
    (
        "io.k8s.api.core.v1.PodStatus",
        "resourceClaimStatuses",
        "merge,retainKeys",
        Some("name"),
    ),
    // core/v1 others
    (
        "io.k8s.api.core.v1.ServiceSpec",
        "ports",
        "merge",
        Some("port"),
    ),
    (
        "io.k8s.api.core.v1.ServiceStatus",
        "conditions",
        "merge",
        Some("type"),
    ),
    (
        "io.k8s.api.core.v1.ServiceAccount",
        "secrets",
        "merge",
        Some("name"),
    ),
    ("io.k8s.api.core.v1.NodeSpec", "podCIDRs", "merge", None),
    (
        "io.k8s.api.core.v1.NodeStatus",
        "conditions",
        "merge",
        Some("type"),
    ),
    (
        "io.k8s.api.core.v1.NodeStatus",
        "addresses",
        "merge",
        Some("type"),
    ),
    (
        "io.k8s.api.core.v1.NamespaceStatus",
        "conditions",
        "merge",
        Some("type"),
    ),
    (
        "io.k8s.api.core.v1.PersistentVolumeClaimStatus",
        "conditions",
        "merge",
        Some("type"),
    ),
    (
        "io.k8s.api.core.v1.ReplicationControllerStatus",
        "conditions",
        "merge",
        Some("type"),
    ),
    // apps/v1
    (
        "io.k8s.api.apps.v1.DeploymentSpec",
        "strategy",
        "retainKeys",
        None,
    ),
    (
        "io.k8s.api.apps.v1.DeploymentStatus",
        "conditions",
        "merge",
        Some("type"),
    ),
    (
        "io.k8s.api.apps.v1.ReplicaSetStatus",
        "conditions",
        "merge",
        Some("type"),
    ),
    (
        "io.k8s.api.apps.v1.StatefulSetStatus",
        "conditions",
        "merge",
        Some("type"),
    ),
    (
        "io.k8s.api.apps.v1.DaemonSetStatus",
        "conditions",
        "merge",
        Some("type"),
    ),
    // batch/v1
    (
        "io.k8s.api.batch.v1.JobStatus",
        "conditions",
        "merge",
        Some("type"),
    ),
    // autoscaling/v2
    (
        "io.k8s.api.autoscaling.v2.HorizontalPodAutoscalerStatus",
        "conditions",
        "merge",
        Some("type"),
    ),
    // policy/v1
    (
        "io.k8s.api.policy.v1.PodDisruptionBudgetStatus",
        "conditions",
        "merge",
        Some("type"),
    ),
];

const META_OBJECT_META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta";
const CORE_POD_SPEC: &str = "io.k8s.api.core.v1.PodSpec";
const CORE_CONTAINER: &str = "io.k8s.api.core.v1.Container";
const CORE_EPHEMERAL_CONTAINER: &str = "io.k8s.api.core.v1.EphemeralContainer";
