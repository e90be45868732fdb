//! Server-side `kubectl get` tables (`meta.k8s.io/v1` `Table`) and `PartialObjectMetadata`.
//!
//! kubectl asks for `application/json;as=Table;v=v1;g=meta.k8s.io` and prints what the server
//! computes, so columns and cells follow upstream's printers (`pkg/printers/internalversion`):
//! names, types, formats, priorities (1 = `-o wide` only), descriptions and cell rendering.
//! Cells are always computed with wide output on, as upstream's server does; kubectl drops
//! the priority-1 columns itself. Kinds without a printer get upstream's default table
//! convertor: NAME and CREATED AT.
//!
//! Architecture Invariant: pure functions of JSON objects and a caller-given `now`; objects
//! are borrowed, never cloned whole (except for `includeObject=Object`).

mod cells;
mod columns;
mod format;
mod pod;

use std::sync::OnceLock;

use chrono::{DateTime, Duration, Utc};
use serde_json::{Map, Value};

use crate::resources::ResourceInfo;

/// The group/version of `Table` and `PartialObjectMetadata` served here.
pub const META_API_VERSION: &str = "meta.k8s.io/v1";

/// The `includeObject` query parameter: what each row's `object` carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IncludeObject {
    /// No object.
    None,
    /// A `PartialObjectMetadata` with the object's metadata (kubectl needs it for labels,
    /// `--show-labels`, namespaces and watch).
    #[default]
    Metadata,
    /// The whole object.
    Object,
}

impl IncludeObject {
    /// Parses the query value (`None`, `Metadata`, `Object`); an empty value is the default.
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "None" => Some(Self::None),
            "" | "Metadata" => Some(Self::Metadata),
            "Object" => Some(Self::Object),
            _ => None,
        }
    }
}

/// Which upstream printer renders a resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Printer {
    Pod,
    PodTemplate,
    PodDisruptionBudget,
    ReplicationController,
    ReplicaSet,
    DaemonSet,
    Job,
    CronJob,
    Service,
    Ingress,
    IngressClass,
    StatefulSet,
    Endpoints,
    Node,
    Event,
    EventsV1,
    Namespace,
    Secret,
    ServiceAccount,
    PersistentVolume,
    PersistentVolumeClaim,
    Deployment,
    HorizontalPodAutoscaler,
    ConfigMap,
    NetworkPolicy,
    RoleBinding,
    ClusterRoleBinding,
    Lease,
    StorageClass,
    ControllerRevision,
    ResourceQuota,
    PriorityClass,
    EndpointSlice,
    Default,
}

impl Printer {
    const COUNT: usize = Printer::Default as usize + 1;

    fn of(resource: &ResourceInfo) -> Self {
        use Printer as P;
        match (resource.group, resource.kind) {
            ("", "Pod") => P::Pod,
            ("", "PodTemplate") => P::PodTemplate,
            ("", "ReplicationController") => P::ReplicationController,
            ("", "Service") => P::Service,
            ("", "Endpoints") => P::Endpoints,
            ("", "Node") => P::Node,
            ("", "Event") => P::Event,
            ("", "Namespace") => P::Namespace,
            ("", "Secret") => P::Secret,
            ("", "ServiceAccount") => P::ServiceAccount,
            ("", "PersistentVolume") => P::PersistentVolume,
            ("", "PersistentVolumeClaim") => P::PersistentVolumeClaim,
            ("", "ConfigMap") => P::ConfigMap,
            ("", "ResourceQuota") => P::ResourceQuota,
            ("events.k8s.io", "Event") => P::EventsV1,
            ("policy", "PodDisruptionBudget") => P::PodDisruptionBudget,
            ("apps", "ReplicaSet") => P::ReplicaSet,
            ("apps", "DaemonSet") => P::DaemonSet,
            ("apps", "StatefulSet") => P::StatefulSet,
            ("apps", "Deployment") => P::Deployment,
            ("apps", "ControllerRevision") => P::ControllerRevision,
            ("batch", "Job") => P::Job,
            ("batch", "CronJob") => P::CronJob,
            ("networking.k8s.io", "Ingress") => P::Ingress,
            ("networking.k8s.io", "IngressClass") => P::IngressClass,
            ("networking.k8s.io", "NetworkPolicy") => P::NetworkPolicy,
            ("autoscaling", "HorizontalPodAutoscaler") => P::HorizontalPodAutoscaler,
            ("rbac.authorization.k8s.io", "RoleBinding") => P::RoleBinding,
            ("rbac.authorization.k8s.io", "ClusterRoleBinding") => P::ClusterRoleBinding,
            ("coordination.k8s.io", "Lease") => P::Lease,
            ("storage.k8s.io", "StorageClass") => P::StorageClass,
            ("scheduling.k8s.io", "PriorityClass") => P::PriorityClass,
            ("discovery.k8s.io", "EndpointSlice") => P::EndpointSlice,
            _ => P::Default,
        }
    }
}

/// Column definitions of a printer, built once (descriptions come from schemas).
fn cached_columns(printer: Printer) -> &'static [Value] {
    static CACHE: [OnceLock<Vec<Value>>; Printer::COUNT] =
        [const { OnceLock::new() }; Printer::COUNT];
    CACHE[printer as usize].get_or_init(|| columns::build(printer))
}

/// The `columnDefinitions` of a resource's table: objects with name, type, format,
/// description and priority.
pub fn column_definitions(resource: &ResourceInfo) -> Vec<Value> {
    cached_columns(Printer::of(resource)).to_vec()
}

/// The cells of one object's row, one per column definition, wide columns included.
pub fn row_cells(resource: &ResourceInfo, obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    cells::cells(Printer::of(resource), obj, now)
}

/// A `PartialObjectMetadata` carrying `obj`'s metadata.
pub fn partial_object_metadata(obj: &Value) -> Value {
    let mut out = Map::with_capacity(3);
    out.insert("kind".into(), "PartialObjectMetadata".into());
    out.insert("apiVersion".into(), META_API_VERSION.into());
    out.insert(
        "metadata".into(),
        obj.get("metadata")
            .cloned()
            .unwrap_or_else(|| Value::Object(Map::new())),
    );
    Value::Object(out)
}

/// A `PartialObjectMetadataList` (`as=PartialObjectMetadataList` requests).
pub fn partial_object_metadata_list<'a, I>(objects: I, list_metadata: Value) -> Value
where
    I: IntoIterator<Item = &'a Value>,
{
    let items: Vec<Value> = objects.into_iter().map(partial_object_metadata).collect();
    let mut out = Map::with_capacity(4);
    out.insert("kind".into(), "PartialObjectMetadataList".into());
    out.insert("apiVersion".into(), META_API_VERSION.into());
    out.insert("metadata".into(), metadata_or_empty(list_metadata));
    out.insert("items".into(), Value::Array(items));
    Value::Object(out)
}

fn metadata_or_empty(metadata: Value) -> Value {
    if metadata.is_object() {
        metadata
    } else {
        Value::Object(Map::new())
    }
}

/// Options of a table request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TableOptions {
    pub include_object: IncludeObject,
    /// Leave out `columnDefinitions` (null), as upstream does for every watch event after
    /// the first one.
    pub no_headers: bool,
}

/// The whole `Table`. `list_metadata` becomes the table's metadata (resourceVersion,
/// continue, remainingItemCount of the list; for a single object, its resourceVersion).
pub fn build_table<'a, I>(
    resource: &ResourceInfo,
    objects: I,
    list_metadata: Value,
    include_object: IncludeObject,
    now: DateTime<Utc>,
) -> Value
where
    I: IntoIterator<Item = &'a Value>,
{
    let options = TableOptions {
        include_object,
        no_headers: false,
    };
    build_table_with_options(resource, objects, list_metadata, options, now)
}

/// [`build_table`] with every option; for watch events pass `no_headers` after the first.
pub fn build_table_with_options<'a, I>(
    resource: &ResourceInfo,
    objects: I,
    list_metadata: Value,
    options: TableOptions,
    now: DateTime<Utc>,
) -> Value
where
    I: IntoIterator<Item = &'a Value>,
{
    let printer = Printer::of(resource);
    let objects = objects.into_iter();
    let mut rows = Vec::with_capacity(objects.size_hint().0);
    for obj in objects {
        let mut row = Map::with_capacity(3);
        row.insert(
            "cells".into(),
            Value::Array(cells::cells(printer, obj, now)),
        );
        if printer == Printer::Pod
            && let Some(conditions) = pod::row_conditions(obj)
        {
            row.insert("conditions".into(), conditions);
        }
        match options.include_object {
            IncludeObject::None => {}
            IncludeObject::Metadata => {
                row.insert("object".into(), partial_object_metadata(obj));
            }
            IncludeObject::Object => {
                row.insert("object".into(), obj.clone());
            }
        }
        rows.push(Value::Object(row));
    }
    let mut table = Map::with_capacity(5);
    table.insert("kind".into(), "Table".into());
    table.insert("apiVersion".into(), META_API_VERSION.into());
    table.insert("metadata".into(), metadata_or_empty(list_metadata));
    let columns = if options.no_headers {
        Value::Null
    } else {
        Value::Array(cached_columns(printer).to_vec())
    };
    table.insert("columnDefinitions".into(), columns);
    table.insert("rows".into(), Value::Array(rows));
    Value::Object(table)
}

/// A short human duration, as upstream's `duration.HumanDuration`: exact seconds below two
/// minutes, minutes with seconds below ten minutes, and coarser units further out ("5s",
/// "3m20s", "10m", "3h5m", "2d3h", "45d", "2y3d", "9y"). Up to a second in the future
/// reads "0s" (clock skew); further is "<invalid>".
pub fn human_duration(d: Duration) -> String {
    // `num_seconds` truncates toward zero, like Go's int(d.Seconds()).
    let seconds = d.num_seconds();
    if seconds < -1 {
        return "<invalid>".to_string();
    }
    if seconds < 0 {
        return "0s".to_string();
    }
    if seconds < 60 * 2 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    if minutes < 10 {
        let s = seconds % 60;
        return if s == 0 {
            format!("{minutes}m")
        } else {
            format!("{minutes}m{s}s")
        };
    }
    if minutes < 60 * 3 {
        return format!("{minutes}m");
    }
    let hours = minutes / 60;
    if hours < 8 {
        let m = minutes % 60;
        return if m == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{m}m")
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    let days = hours / 24;
    if hours < 24 * 8 {
        let h = hours % 24;
        return if h == 0 {
            format!("{days}d")
        } else {
            format!("{days}d{h}h")
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{days}d");
    }
    let years = days / 365;
    if hours < 24 * 365 * 8 {
        let dy = days % 365;
        return if dy == 0 {
            format!("{years}y")
        } else {
            format!("{years}y{dy}d")
        };
    }
    format!("{years}y")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::{all, lookup};
    use chrono::TimeZone;
    use serde_json::json;

    fn secs(s: i64) -> String {
        human_duration(Duration::seconds(s))
    }

    #[test]
    fn human_duration_thresholds() {
        let (m, h, d, y) = (60, 3600, 86400, 365 * 86400);
        assert_eq!(human_duration(Duration::milliseconds(-1500)), "0s");
        assert_eq!(secs(-2), "<invalid>");
        assert_eq!(secs(0), "0s");
        assert_eq!(secs(5), "5s");
        assert_eq!(secs(119), "119s");
        assert_eq!(secs(120), "2m");
        assert_eq!(secs(200), "3m20s");
        assert_eq!(secs(9 * m + 59), "9m59s");
        assert_eq!(secs(10 * m + 30), "10m");
        assert_eq!(secs(179 * m), "179m");
        assert_eq!(secs(3 * h), "3h");
        assert_eq!(secs(3 * h + 5 * m), "3h5m");
        assert_eq!(secs(7 * h + 59 * m), "7h59m");
        assert_eq!(secs(8 * h + 30 * m), "8h");
        assert_eq!(secs(47 * h), "47h");
        assert_eq!(secs(2 * d), "2d");
        assert_eq!(secs(2 * d + 3 * h), "2d3h");
        assert_eq!(secs(7 * d + 23 * h), "7d23h");
        assert_eq!(secs(8 * d + 5 * h), "8d");
        assert_eq!(secs(45 * d), "45d");
        assert_eq!(secs(729 * d), "729d");
        assert_eq!(secs(2 * y), "2y");
        assert_eq!(secs(2 * y + 3 * d), "2y3d");
        assert_eq!(secs(8 * y + 100 * d), "8y");
    }

    #[test]
    fn every_resource_has_columns_matching_its_cells() {
        let now = Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap();
        let empty = json!({"metadata": {"name": "x"}});
        for r in all() {
            let cols = column_definitions(r);
            assert!(!cols.is_empty(), "{} has no columns", r.group_resource());
            for c in &cols {
                for key in ["name", "type", "format", "description", "priority"] {
                    assert!(
                        c.get(key).is_some(),
                        "{}: column lacks {key}",
                        r.group_resource()
                    );
                }
            }
            // Schema-derived descriptions must resolve (a typo in a field name yields "").
            let described = cols
                .iter()
                .filter(|c| !c["description"].as_str().unwrap().is_empty())
                .count();
            assert_eq!(
                described,
                cols.len(),
                "{}: empty description",
                r.group_resource()
            );
            assert_eq!(
                row_cells(r, &empty, now).len(),
                cols.len(),
                "{}: cell count",
                r.group_resource()
            );
        }
    }

    #[test]
    fn known_column_layouts() {
        let names = |group: &str, version: &str, plural: &str| -> Vec<(String, i64)> {
            column_definitions(lookup(group, version, plural).unwrap())
                .iter()
                .map(|c| {
                    (
                        c["name"].as_str().unwrap().to_string(),
                        c["priority"].as_i64().unwrap(),
                    )
                })
                .collect()
        };
        let shown = |cols: Vec<(String, i64)>, priority: i64| -> Vec<String> {
            cols.into_iter()
                .filter(|(_, p)| *p == priority)
                .map(|(n, _)| n)
                .collect()
        };
        assert_eq!(
            shown(names("", "v1", "pods"), 0),
            ["Name", "Ready", "Status", "Restarts", "Age"]
        );
        assert_eq!(
            shown(names("", "v1", "pods"), 1),
            ["IP", "Node", "Nominated Node", "Readiness Gates"]
        );
        assert_eq!(
            shown(names("apps", "v1", "deployments"), 0),
            ["Name", "Ready", "Up-to-date", "Available", "Age"]
        );
        assert_eq!(
            shown(names("", "v1", "services"), 0),
            [
                "Name",
                "Type",
                "Cluster-IP",
                "External-IP",
                "Port(s)",
                "Age"
            ]
        );
        assert_eq!(
            shown(names("batch", "v1", "jobs"), 0),
            ["Name", "Status", "Completions", "Duration", "Age"]
        );
        assert_eq!(
            shown(names("", "v1", "events"), 0),
            ["Last Seen", "Type", "Reason", "Object", "Message"]
        );
        assert_eq!(
            names("events.k8s.io", "v1", "events"),
            names("", "v1", "events")
        );
        assert_eq!(
            shown(names("rbac.authorization.k8s.io", "v1", "roles"), 0),
            ["Name", "Created At"]
        );
        let pod_cols = column_definitions(lookup("", "v1", "pods").unwrap());
        assert_eq!(pod_cols[0]["format"], "name");
        assert!(
            pod_cols[0]["description"]
                .as_str()
                .unwrap()
                .starts_with("Name must be unique within a namespace")
        );
    }

    #[test]
    fn table_with_metadata_rows() {
        let pods = lookup("", "v1", "pods").unwrap();
        let now = Utc.with_ymd_and_hms(2024, 1, 1, 0, 10, 0).unwrap();
        let objects = vec![
            json!({"kind": "Pod", "apiVersion": "v1",
                   "metadata": {"name": "a", "namespace": "default", "labels": {"app": "a"},
                                "creationTimestamp": "2024-01-01T00:00:00Z", "resourceVersion": "7"},
                   "spec": {"containers": [{"name": "c"}]},
                   "status": {"phase": "Succeeded"}}),
            json!({"metadata": {"name": "b"}, "spec": {}}),
        ];
        let table = build_table(
            pods,
            &objects,
            json!({"resourceVersion": "9"}),
            IncludeObject::default(),
            now,
        );
        assert_eq!(table["kind"], "Table");
        assert_eq!(table["apiVersion"], "meta.k8s.io/v1");
        assert_eq!(table["metadata"]["resourceVersion"], "9");
        assert_eq!(table["columnDefinitions"].as_array().unwrap().len(), 9);
        let rows = table["rows"].as_array().unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0]["cells"][0], "a");
        assert_eq!(rows[0]["cells"][2], "Succeeded");
        assert_eq!(rows[0]["cells"][4], "10m");
        assert_eq!(rows[0]["conditions"][0]["type"], "Completed");
        assert!(rows[1].get("conditions").is_none());
        let object = &rows[0]["object"];
        assert_eq!(object["kind"], "PartialObjectMetadata");
        assert_eq!(object["apiVersion"], "meta.k8s.io/v1");
        assert_eq!(object["metadata"]["labels"]["app"], "a");
        assert!(object.get("spec").is_none());

        let none = build_table(pods, &objects, Value::Null, IncludeObject::None, now);
        assert!(none["rows"][0].get("object").is_none());
        assert_eq!(none["metadata"], json!({}));
        let full = build_table(pods, &objects, Value::Null, IncludeObject::Object, now);
        assert_eq!(full["rows"][0]["object"], objects[0]);

        let headless = build_table_with_options(
            pods,
            &objects[..1],
            json!({"resourceVersion": "7"}),
            TableOptions {
                include_object: IncludeObject::None,
                no_headers: true,
            },
            now,
        );
        assert_eq!(headless["columnDefinitions"], Value::Null);
        assert_eq!(headless["rows"][0]["cells"][0], "a");

        let empty = build_table(pods, &[], Value::Null, IncludeObject::Metadata, now);
        assert_eq!(empty["rows"], json!([]));
    }

    #[test]
    fn partial_object_metadata_list_shape() {
        let objects = [json!({"metadata": {"name": "a"}, "data": {"k": "v"}})];
        let list = partial_object_metadata_list(&objects, json!({"resourceVersion": "3"}));
        assert_eq!(list["kind"], "PartialObjectMetadataList");
        assert_eq!(list["apiVersion"], "meta.k8s.io/v1");
        assert_eq!(list["metadata"]["resourceVersion"], "3");
        assert_eq!(list["items"][0]["metadata"]["name"], "a");
        assert!(list["items"][0].get("data").is_none());
    }

    #[test]
    fn include_object_parsing() {
        assert_eq!(IncludeObject::parse(""), Some(IncludeObject::Metadata));
        assert_eq!(IncludeObject::parse("None"), Some(IncludeObject::None));
        assert_eq!(IncludeObject::parse("Object"), Some(IncludeObject::Object));
        assert_eq!(IncludeObject::parse("bogus"), None);
    }

    #[test]
    fn ten_thousand_pods_table_quickly() {
        let pods = lookup("", "v1", "pods").unwrap();
        let now = Utc.with_ymd_and_hms(2024, 1, 1, 1, 0, 0).unwrap();
        let objects: Vec<Value> = (0..10_000)
            .map(|i| {
                json!({"metadata": {"name": format!("p{i}"), "namespace": "default",
                                    "creationTimestamp": "2024-01-01T00:00:00Z"},
                       "spec": {"containers": [{"name": "c", "image": "busybox"}], "nodeName": "n1"},
                       "status": {"phase": "Running", "podIP": "10.0.0.1", "containerStatuses": [
                           {"name": "c", "ready": true, "restartCount": 0, "state": {"running": {}}}]}})
            })
            .collect();
        let start = std::time::Instant::now();
        let table = build_table(pods, &objects, json!({}), IncludeObject::Metadata, now);
        let elapsed = start.elapsed();
        assert_eq!(table["rows"].as_array().unwrap().len(), 10_000);
        assert_eq!(table["rows"][9999]["cells"][1], "1/1");
        // Generous bound for unoptimised debug builds on a shared machine.
        assert!(elapsed.as_secs() < 5, "took {elapsed:?}");
    }
}
