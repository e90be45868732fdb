//! A simplified server-side apply.
//!
//! The applied configuration merges into the live object as a strategic merge patch would,
//! and the set of fields it names is recorded in `metadata.managedFields` (FieldsV1) under
//! the field manager with operation `Apply`. Fields this manager applied before and no longer
//! applies are removed, unless another `Apply` manager also owns them.
//!
//! List items are identified by their list-map keys (`port` and `protocol` of a Service's
//! ports, for instance), as upstream's structured merge does.
//!
//! Not (yet) upstream: no conflict detection (so `force` changes nothing), and `Update`
//! operations are not tracked.

use serde_json::{Map, Value};

use super::PatchError;
use super::merge_keys::MapKey;
use super::schema::{Schemas, TypeNode};
use super::strategic;
use crate::ResourceInfo;

/// The query parameters of an apply request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApplyOptions<'a> {
    /// `fieldManager`: required for apply.
    pub field_manager: &'a str,
    /// `force`: take ownership of conflicting fields. Conflicts are not detected yet.
    pub force: bool,
}

/// Fields no manager owns (upstream strips them from every field set).
const TOP_LEVEL_IGNORED: &[&str] = &["apiVersion", "kind"];
const METADATA_IGNORED: &[&str] = &[
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "selfLink",
    "managedFields",
];

/// Applies a configuration (YAML or JSON) to `original` (`null` or `{}` when the object does
/// not exist yet) and returns the object with its managed fields updated.
pub fn server_side_apply(
    resource: &ResourceInfo,
    original: &Value,
    patch: &[u8],
    options: &ApplyOptions<'_>,
) -> Result<Value, PatchError> {
    if options.field_manager.is_empty() {
        return Err(PatchError::Invalid(
            "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch".into(),
        ));
    }
    let mut applied = decode_yaml_object(patch)?;
    if let Some(Value::Object(meta)) = applied.get_mut("metadata") {
        meta.shift_remove("managedFields");
    }
    let schemas = Schemas::of(resource);
    let root = schemas.apply_root();

    let mut live = match original {
        Value::Object(map) => map.clone(),
        _ => Map::new(),
    };
    let mut managed: Vec<Value> = match live
        .get_mut("metadata")
        .and_then(|m| m.as_object_mut())
        .and_then(|m| m.shift_remove("managedFields"))
    {
        Some(Value::Array(entries)) => entries,
        _ => Vec::new(),
    };
    let is_mine = |entry: &Value| {
        entry.get("manager").and_then(Value::as_str) == Some(options.field_manager)
            && entry.get("operation").and_then(Value::as_str) == Some("Apply")
    };
    let previous = managed
        .iter()
        .find(|e| is_mine(e))
        .and_then(|e| e.get("fieldsV1"))
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let others: Vec<Map<String, Value>> = managed
        .iter()
        .filter(|e| !is_mine(e) && e.get("operation").and_then(Value::as_str) == Some("Apply"))
        .filter_map(|e| e.get("fieldsV1").and_then(Value::as_object).cloned())
        .collect();

    let fields = field_set(&applied, root, 0);
    let mut merged = Value::Object(strategic::merge_map(live, applied, root)?);
    let others: Vec<&Map<String, Value>> = others.iter().collect();
    remove_released(&mut merged, &previous, &fields, &others);

    managed.retain(|e| !is_mine(e));
    let mut entry = Map::new();
    entry.insert("manager".into(), options.field_manager.into());
    entry.insert("operation".into(), "Apply".into());
    entry.insert("apiVersion".into(), resource.api_version().into());
    entry.insert(
        "time".into(),
        chrono::Utc::now()
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            .into(),
    );
    entry.insert("fieldsType".into(), "FieldsV1".into());
    entry.insert("fieldsV1".into(), Value::Object(fields));
    managed.push(Value::Object(entry));

    if let Value::Object(object) = &mut merged {
        let metadata = object
            .entry("metadata")
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(metadata) = metadata {
            metadata.insert("managedFields".into(), Value::Array(managed));
        }
    }
    Ok(merged)
}

fn decode_yaml_object(patch: &[u8]) -> Result<Map<String, Value>, PatchError> {
    // JSON first: what kubectl sends, and it keeps integers exact.
    let value: Value = match serde_json::from_slice(patch) {
        Ok(v) => v,
        Err(_) => serde_yaml::from_slice(patch)
            .map_err(|e| PatchError::BadRequest(format!("error decoding YAML: {e}")))?,
    };
    match value {
        Value::Object(map) => Ok(map),
        _ => Err(PatchError::BadRequest(
            "error decoding YAML: the applied configuration must be an object".into(),
        )),
    }
}

/// The FieldsV1 set of the fields a configuration names.
fn field_set(object: &Map<String, Value>, node: TypeNode<'_>, depth: usize) -> Map<String, Value> {
    let mut set = Map::new();
    for (key, value) in object {
        if key.starts_with('$') || value.is_null() {
            continue;
        }
        if depth == 0 && TOP_LEVEL_IGNORED.contains(&key.as_str()) {
            continue;
        }
        let child = node.field(key);
        let entry = match value {
            Value::Object(map) => {
                let ignored: &[&str] = if depth == 0 && key == "metadata" {
                    METADATA_IGNORED
                } else {
                    &[]
                };
                let filtered: Map<String, Value> = map
                    .iter()
                    .filter(|(k, _)| !ignored.contains(&k.as_str()))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                if depth == 0 && key == "metadata" && filtered.is_empty() {
                    continue;
                }
                field_set(&filtered, child, depth + 1)
            }
            Value::Array(items) => list_set(items, node, key, child, depth),
            _ => Map::new(),
        };
        set.insert(format!("f:{key}"), Value::Object(entry));
    }
    set
}

fn list_set(
    items: &[Value],
    parent: TypeNode<'_>,
    field: &str,
    child: TypeNode<'_>,
    depth: usize,
) -> Map<String, Value> {
    let mut set = Map::new();
    let Some(meta) = parent.meta(field).filter(|m| m.merges()) else {
        return set; // atomic: the field itself is the leaf
    };
    for item in items {
        match (item, meta.merge_key) {
            (Value::Object(map), Some(key)) => {
                let Some(id) = item_key(map, key, meta.map_keys) else {
                    continue;
                };
                let mut item_set = Map::new();
                item_set.insert(".".into(), Value::Object(Map::new()));
                item_set.extend(field_set(map, child.items(), depth + 1));
                set.insert(id, Value::Object(item_set));
            }
            (Value::Object(_), None) => {}
            (scalar, _) => {
                set.insert(format!("v:{scalar}"), Value::Object(Map::new()));
            }
        }
    }
    set
}

/// The FieldsV1 path segment of a list item: `k:{"port":53,"protocol":"UDP"}`, with the
/// list-map keys' defaults filled in as upstream does; None when a key without a default is
/// missing.
fn item_key(item: &Map<String, Value>, key: &str, map_keys: &[MapKey]) -> Option<String> {
    let mut id = Map::new();
    if map_keys.is_empty() {
        id.insert(key.to_string(), item.get(key)?.clone());
    }
    for k in map_keys {
        let value = item
            .get(k.field)
            .cloned()
            .or_else(|| k.default.map(Value::from))?;
        id.insert(k.field.to_string(), value);
    }
    Some(format!("k:{}", Value::Object(id)))
}

/// Removes what `previous` owned and `current` no longer names, unless another manager owns
/// it too.
fn remove_released(
    value: &mut Value,
    previous: &Map<String, Value>,
    current: &Map<String, Value>,
    others: &[&Map<String, Value>],
) {
    for (path, previous_child) in previous {
        if path == "." {
            continue;
        }
        let current_child = current.get(path).and_then(Value::as_object);
        let others_child: Vec<&Map<String, Value>> = others
            .iter()
            .filter_map(|o| o.get(path).and_then(Value::as_object))
            .collect();
        if current_child.is_none() && others_child.is_empty() {
            remove_at(value, path);
            continue;
        }
        let Some(previous_child) = previous_child.as_object().filter(|c| !c.is_empty()) else {
            continue;
        };
        let empty = Map::new();
        if let Some(element) = element_at(value, path) {
            remove_released(
                element,
                previous_child,
                current_child.unwrap_or(&empty),
                &others_child,
            );
        }
    }
}

/// The element a FieldsV1 path segment names: `f:<field>`, `k:<key json>`, `v:<value json>`.
fn element_at<'v>(value: &'v mut Value, path: &str) -> Option<&'v mut Value> {
    match (value, path.split_at_checked(2)?) {
        (Value::Object(map), ("f:", field)) => map.get_mut(field),
        (Value::Array(items), ("k:", key)) => {
            let key: Map<String, Value> = serde_json::from_str(key).ok()?;
            items.iter_mut().find(|item| matches_key(item, &key))
        }
        _ => None,
    }
}

fn remove_at(value: &mut Value, path: &str) {
    let Some((prefix, rest)) = path.split_at_checked(2) else {
        return;
    };
    match (value, prefix) {
        (Value::Object(map), "f:") => {
            map.shift_remove(rest);
        }
        (Value::Array(items), "k:") => {
            if let Ok(key) = serde_json::from_str::<Map<String, Value>>(rest) {
                items.retain(|item| !matches_key(item, &key));
            }
        }
        (Value::Array(items), "v:") => {
            if let Ok(v) = serde_json::from_str::<Value>(rest) {
                items.retain(|item| *item != v);
            }
        }
        _ => {}
    }
}

fn matches_key(item: &Value, key: &Map<String, Value>) -> bool {
    key.iter().all(|(k, v)| item.get(k) == Some(v))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::resources;

    fn deployments() -> &'static ResourceInfo {
        resources::lookup("apps", "v1", "deployments").unwrap()
    }

    fn apply(original: &Value, config: &Value, manager: &str) -> Value {
        let options = ApplyOptions {
            field_manager: manager,
            force: false,
        };
        server_side_apply(
            deployments(),
            original,
            config.to_string().as_bytes(),
            &options,
        )
        .unwrap()
    }

    fn config(containers: Value, labels: Value) -> Value {
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "labels": labels},
            "spec": {"replicas": 2, "template": {"spec": {"containers": containers}}}
        })
    }

    #[test]
    fn records_managed_fields_and_removes_released_fields() {
        let first = apply(
            &Value::Null,
            &config(
                json!([{"name": "web", "image": "nginx"}, {"name": "side", "image": "busybox"}]),
                json!({"app": "web", "tier": "fe"}),
            ),
            "kubectl",
        );
        assert_eq!(first["spec"]["replicas"], 2);
        let managed = first["metadata"]["managedFields"].as_array().unwrap();
        assert_eq!(managed.len(), 1);
        assert_eq!(managed[0]["manager"], "kubectl");
        assert_eq!(managed[0]["operation"], "Apply");
        assert_eq!(managed[0]["apiVersion"], "apps/v1");
        let fields = &managed[0]["fieldsV1"];
        assert_eq!(
            fields["f:metadata"],
            json!({"f:labels": {"f:app": {}, "f:tier": {}}})
        );
        assert!(fields.get("f:apiVersion").is_none());
        assert_eq!(
            fields["f:spec"]["f:template"]["f:spec"]["f:containers"]["k:{\"name\":\"web\"}"],
            json!({".": {}, "f:name": {}, "f:image": {}})
        );

        // Something else sets a field the manager never applied: it must survive.
        let mut live = first.clone();
        live["spec"]["paused"] = json!(true);
        let second = apply(
            &live,
            &config(
                json!([{"name": "web", "image": "nginx:2"}]),
                json!({"app": "web"}),
            ),
            "kubectl",
        );
        assert_eq!(
            second["spec"]["template"]["spec"]["containers"],
            json!([{"name": "web", "image": "nginx:2"}])
        );
        assert_eq!(second["metadata"]["labels"], json!({"app": "web"}));
        assert_eq!(second["spec"]["paused"], true);
        assert_eq!(
            second["metadata"]["managedFields"]
                .as_array()
                .unwrap()
                .len(),
            1
        );
    }

    #[test]
    fn fields_shared_with_another_applier_are_kept() {
        let first = apply(&Value::Null, &config(json!([]), json!({"a": "1"})), "one");
        let second = apply(
            &first,
            &config(json!([]), json!({"a": "1", "b": "2"})),
            "two",
        );
        let third = apply(&second, &config(json!([]), json!({})), "one");
        assert_eq!(third["metadata"]["labels"], json!({"a": "1", "b": "2"}));
        let managers: Vec<&str> = third["metadata"]["managedFields"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["manager"].as_str().unwrap())
            .collect();
        assert_eq!(managers, ["two", "one"]);
        let fourth = apply(&third, &config(json!([]), json!({"a": "1"})), "two");
        assert_eq!(fourth["metadata"]["labels"], json!({"a": "1"}));
    }

    #[test]
    fn yaml_bodies_and_errors() {
        let options = ApplyOptions {
            field_manager: "m",
            force: false,
        };
        let yaml = b"apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: 3\n";
        let out = server_side_apply(deployments(), &Value::Null, yaml, &options).unwrap();
        assert_eq!(out["spec"]["replicas"], 3);

        let err = server_side_apply(deployments(), &Value::Null, b"- a\n- b\n", &options)
            .expect_err("list");
        assert_eq!(err.status_code(), 400);
        let err = server_side_apply(deployments(), &Value::Null, b"a: [", &options)
            .expect_err("bad yaml");
        assert!(err.to_string().starts_with("error decoding YAML"), "{err}");
        let anonymous = ApplyOptions {
            field_manager: "",
            force: false,
        };
        let err = server_side_apply(deployments(), &Value::Null, yaml, &anonymous)
            .expect_err("manager required");
        assert_eq!(err.status_code(), 422);
        assert!(
            err.to_string().contains("fieldManager: Required value"),
            "{err}"
        );
    }

    #[test]
    fn service_ports_are_told_apart_by_port_and_protocol() {
        let services = resources::lookup("", "v1", "services").unwrap();
        let options = ApplyOptions {
            field_manager: "m",
            force: false,
        };
        let service = |ports: Value| {
            json!({
                "apiVersion": "v1", "kind": "Service",
                "metadata": {"name": "dns"},
                "spec": {"ports": ports}
            })
            .to_string()
        };
        let both = service(json!([
            {"name": "dns", "port": 53, "protocol": "UDP"},
            {"name": "dns-tcp", "port": 53, "protocol": "TCP"}
        ]));
        let first = server_side_apply(services, &Value::Null, both.as_bytes(), &options).unwrap();
        let ports = first["spec"]["ports"].as_array().unwrap();
        assert_eq!(ports.len(), 2, "{ports:?}");
        assert_eq!(ports[0]["protocol"], "UDP");
        assert_eq!(ports[1]["name"], "dns-tcp");
        let fields = &first["metadata"]["managedFields"][0]["fieldsV1"]["f:spec"]["f:ports"];
        assert!(
            fields.get(r#"k:{"port":53,"protocol":"UDP"}"#).is_some(),
            "{fields}"
        );
        assert!(
            fields.get(r#"k:{"port":53,"protocol":"TCP"}"#).is_some(),
            "{fields}"
        );

        // Leaving the protocol out means TCP: the TCP item is updated, and the UDP one,
        // no longer applied, is removed. (The server's defaulting sets the protocol again.)
        let tcp_only = service(json!([{"name": "dns-tcp", "port": 53, "targetPort": 5353}]));
        let second = server_side_apply(services, &first, tcp_only.as_bytes(), &options).unwrap();
        let ports = second["spec"]["ports"].as_array().unwrap();
        assert_eq!(ports.len(), 1, "{ports:?}");
        assert_eq!(ports[0]["name"], "dns-tcp");
        assert_eq!(ports[0]["targetPort"], 5353);
    }
}
