//! Type information for the strategic merge patch: walks a resource's schemars schema field by
//! field, so that at every level the patch knows the OpenAPI type name to look up in
//! [`super::merge_keys`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use serde_json::{Map, Value};

use super::merge_keys::{PatchMeta, apply_map_keys, patch_meta};
use crate::ResourceInfo;

/// The schema of one resource type with every definition it references.
pub(crate) struct Schemas {
    root: Value,
    definitions: Map<String, Value>,
}

impl Schemas {
    /// Generates the schema of a resource's type. Cached per type: a Pod's schema has
    /// hundreds of definitions.
    pub(crate) fn of(resource: &ResourceInfo) -> Arc<Schemas> {
        static CACHE: OnceLock<Mutex<HashMap<String, Arc<Schemas>>>> = OnceLock::new();
        let name = (resource.typed.schema_name)().into_owned();
        let cache = CACHE.get_or_init(Default::default);
        if let Some(found) = lock(cache).get(&name) {
            return found.clone();
        }
        // Generated outside the lock; a concurrent duplicate is harmless.
        let mut generator = schemars::SchemaGenerator::default();
        let root = (resource.typed.schema)(&mut generator).to_value();
        let schemas = Arc::new(Schemas {
            root,
            definitions: generator.take_definitions(false),
        });
        lock(cache).insert(name, schemas.clone());
        schemas
    }

    pub(crate) fn root(&self) -> TypeNode<'_> {
        TypeNode::resolve(self, &self.root, false)
    }

    /// The root for server-side apply: list items are identified by their list-map keys.
    pub(crate) fn apply_root(&self) -> TypeNode<'_> {
        TypeNode::resolve(self, &self.root, true)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A position in the schema: the type of the value being merged, when known.
#[derive(Clone, Copy, Default)]
pub(crate) struct TypeNode<'a> {
    schemas: Option<&'a Schemas>,
    /// OpenAPI name of a named (`$ref`'d) type.
    name: Option<&'a str>,
    schema: Option<&'a Value>,
    /// Server-side apply rather than a strategic merge patch.
    apply: bool,
}

impl<'a> TypeNode<'a> {
    /// No type information: maps merge, lists are replaced.
    pub(crate) fn unknown() -> Self {
        Self::default()
    }

    fn resolve(schemas: &'a Schemas, schema: &'a Value, apply: bool) -> Self {
        if let Some(name) = reference(schema) {
            return Self {
                schemas: Some(schemas),
                name: Some(name),
                schema: schemas.definitions.get(name),
                apply,
            };
        }
        Self {
            schemas: Some(schemas),
            name: None,
            schema: Some(schema),
            apply,
        }
    }

    fn child(&self, schema: Option<&'a Value>) -> Self {
        match (self.schemas, schema) {
            (Some(schemas), Some(schema)) => Self::resolve(schemas, schema, self.apply),
            _ => Self::unknown(),
        }
    }

    /// The OpenAPI type name, for named types.
    #[cfg(test)]
    pub(crate) fn name(&self) -> Option<&'a str> {
        self.name
    }

    /// The type of a field of this object, or of the values of this map.
    pub(crate) fn field(&self, key: &str) -> Self {
        let Some(schema) = self.schema else {
            return Self::unknown();
        };
        let property = schema
            .get("properties")
            .and_then(|p| p.get(key))
            .or_else(|| schema.get("additionalProperties").filter(|a| a.is_object()));
        self.child(property)
    }

    /// The type of the items of this list.
    pub(crate) fn items(&self) -> Self {
        self.child(self.schema.and_then(|s| s.get("items")))
    }

    /// The patch strategy of a field of this type.
    pub(crate) fn meta(&self, key: &str) -> Option<PatchMeta> {
        let name = self.name?;
        let mut meta = patch_meta(name, key)?;
        if self.apply {
            meta.map_keys = apply_map_keys(name, key);
        }
        Some(meta)
    }
}

/// The definition name a schema refers to: `#/$defs/io.k8s.api.core.v1.PodSpec` →
/// `io.k8s.api.core.v1.PodSpec`. Also looks through a lone `allOf` wrapper.
fn reference(schema: &Value) -> Option<&str> {
    if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
        return r.rsplit('/').next();
    }
    match schema.get("allOf").and_then(Value::as_array) {
        Some(all) if all.len() == 1 => reference(&all[0]),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources;

    #[test]
    fn walks_from_a_deployment_to_its_containers() {
        let deploy = resources::lookup("apps", "v1", "deployments").unwrap();
        let schemas = Schemas::of(deploy);
        let root = schemas.root();
        assert_eq!(root.name(), Some("io.k8s.api.apps.v1.Deployment"));
        let pod_spec = root.field("spec").field("template").field("spec");
        assert_eq!(pod_spec.name(), Some("io.k8s.api.core.v1.PodSpec"));
        let meta = pod_spec.meta("containers").unwrap();
        assert_eq!(meta.merge_key, Some("name"));
        let container = pod_spec.field("containers").items();
        assert_eq!(container.name(), Some("io.k8s.api.core.v1.Container"));
        assert_eq!(
            container.meta("ports").unwrap().merge_key,
            Some("containerPort")
        );
        assert!(container.meta("command").is_none());
        let metadata = root.field("metadata");
        assert_eq!(
            metadata.name(),
            Some("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta")
        );
        // labels is a map[string]string: its values have no named type
        assert!(metadata.field("labels").field("app").name().is_none());
        assert!(root.field("bogus").name().is_none());
    }

    /// Every row of the merge-key table names a real field of a type some served resource
    /// uses, and the merge key is a field of the list's items: catches typos in the table.
    #[test]
    fn merge_key_table_matches_the_schemas() {
        let all: Vec<Arc<Schemas>> = resources::all().iter().map(Schemas::of).collect();
        for (type_name, field, meta) in super::super::merge_keys::all() {
            let definition = all
                .iter()
                .find_map(|s| s.definitions.get(type_name).map(|d| (s, d)));
            let Some((schemas, definition)) = definition else {
                panic!("{type_name} is not used by any served resource");
            };
            let property = definition
                .get("properties")
                .and_then(|p| p.get(field))
                .unwrap_or_else(|| panic!("{type_name} has no field {field}"));
            let node = TypeNode::resolve(schemas, property, false);
            let kind = node
                .schema
                .and_then(|s| s.get("type"))
                .and_then(Value::as_str);
            if let Some(key) = meta.merge_key {
                assert_eq!(kind, Some("array"), "{type_name}.{field}");
                let items = node.items();
                let has_key = items
                    .schema
                    .and_then(|s| s.get("properties"))
                    .and_then(|p| p.get(key))
                    .is_some();
                assert!(has_key, "{type_name}.{field} items have no {key}");
            } else if meta.merges() {
                assert_eq!(kind, Some("array"), "{type_name}.{field}");
            }
        }
    }
}
