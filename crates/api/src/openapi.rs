//! OpenAPI documents of the served API: Swagger 2.0 (`/openapi/v2`) and OpenAPI 3.0, one
//! document per group/version (`/openapi/v3/<api/v1|apis/<group>/<version>>`).
//!
//! kubectl reads them for `kubectl explain` (it finds a kind's schema by
//! `x-kubernetes-group-version-kind`), to decide whether the server validates fields itself
//! (the `fieldValidation` query parameter of the kind's PATCH operation) and for the strategic
//! merge patch metadata of `kubectl apply` (`x-kubernetes-patch-strategy` /
//! `x-kubernetes-patch-merge-key` on properties).
//!
//! Everything is generated from [`crate::resources::all()`] and the schemars schemas of
//! k8s-openapi, on demand: nothing is built at startup. A document costs a few milliseconds and
//! a few MB while it is built; callers build each once, on first request, and keep the
//! serialized bytes.
//!
//! Serving them:
//! - `GET /openapi/v2` → [`v2()`], as JSON, or as protobuf ([`v2_protobuf`]) when the client
//!   [`accepts_v2_protobuf`] (answered with [`V2_PROTOBUF_CONTENT_TYPE`]). kubectl asks for protobuf only (no JSON
//!   alternative); 1.27 and 1.28 need it for `apply` and `explain`, 1.29+ use v3 instead and
//!   cope with a 406.
//! - `GET /openapi/v3` → [`v3_index`], given a hash per document.
//! - `GET /openapi/v3/<path>` for each `<path>` of [`v3_paths()`] → [`v3_document`].

mod paths;
mod protobuf;

use schemars::generate::{SchemaGenerator, SchemaSettings};
use serde_json::{Map, Value, json};

use crate::patch::merge_keys::patch_meta;
use crate::resources::{self, ResourceInfo};

/// `info.version` of the documents: the Kubernetes API release the types come from.
pub const API_RELEASE: &str = "v1.33.0";

/// The Swagger 2.0 document of every served resource.
pub fn v2() -> Value {
    let mut doc = Document::new(Flavor::V2);
    for r in resources::all() {
        doc.add_resource(r);
    }
    for (group, version) in group_versions() {
        doc.add_resource_list_path(group, version);
    }
    doc.finish()
}

/// The `Content-Type` of [`v2_protobuf`]'s encoding. kubectl asks for it in `Accept` spelled
/// with `@v1.0` (see [`accepts_v2_protobuf`]), but answers with that spelling fail its media
/// type parser ('@' is no token character): upstream answers with this one.
pub const V2_PROTOBUF_CONTENT_TYPE: &str =
    "application/com.github.proto-openapi.spec.v2.v1.0+protobuf";

/// Whether an `Accept` header asks for the protobuf v2 document, in either spelling.
pub fn accepts_v2_protobuf(accept: &str) -> bool {
    accept.split(',').any(|range| {
        let media_type = range.split(';').next().unwrap_or("").trim();
        media_type.eq_ignore_ascii_case(V2_PROTOBUF_CONTENT_TYPE)
            || media_type
                .eq_ignore_ascii_case("application/com.github.proto-openapi.spec.v2@v1.0+protobuf")
    })
}

/// A Swagger 2.0 document (from [`v2()`]) encoded as gnostic's `openapi.v2.Document`
/// protobuf message.
pub fn v2_protobuf(v2: &Value) -> Vec<u8> {
    protobuf::encode_document(v2)
}

/// The document paths served under `/openapi/v3/`: `api/v1`, `apis/apps/v1`, ... in table
/// order.
pub fn v3_paths() -> Vec<String> {
    group_versions()
        .into_iter()
        .map(|(group, version)| group_version_path(group, version))
        .collect()
}

/// The OpenAPI 3.0 document of one group/version, by its path under `/openapi/v3/`
/// (`api/v1`, `apis/apps/v1`); None when no resource is served there.
pub fn v3_document(path: &str) -> Option<Value> {
    let (group, version) = parse_group_version_path(path)?;
    let mut doc = Document::new(Flavor::V3);
    let mut found = false;
    for r in resources::all()
        .iter()
        .filter(|r| r.group == group && r.version == version)
    {
        doc.add_resource(r);
        found = true;
    }
    if !found {
        return None;
    }
    doc.add_resource_list_path(group, version);
    Some(doc.finish())
}

/// The `/openapi/v3` root: `{"paths": {"api/v1": {"serverRelativeURL":
/// "/openapi/v3/api/v1?hash=<hash>"}, ...}}`.
///
/// `hash_of` gets each document path of [`v3_paths()`] and returns a string that changes
/// whenever that document changes (clients cache documents by URL): upstream uses a hash of
/// the serialized document; a hash of the binary's version and the path also works and needs
/// no document built.
pub fn v3_index(hash_of: impl Fn(&str) -> String) -> Value {
    let mut paths = Map::new();
    for path in v3_paths() {
        let url = format!("/openapi/v3/{path}?hash={}", hash_of(&path));
        paths.insert(path, json!({ "serverRelativeURL": url }));
    }
    json!({ "paths": paths })
}

/// Distinct (group, version) pairs of the table, in table order.
fn group_versions() -> Vec<(&'static str, &'static str)> {
    let mut out: Vec<(&'static str, &'static str)> = Vec::new();
    for r in resources::all() {
        if !out.contains(&(r.group, r.version)) {
            out.push((r.group, r.version));
        }
    }
    out
}

/// `api/v1` for the core group, `apis/<group>/<version>` otherwise.
fn group_version_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

fn parse_group_version_path(path: &str) -> Option<(&str, &str)> {
    let path = path.trim_matches('/');
    let parts: Vec<&str> = path.split('/').collect();
    match parts.as_slice() {
        ["api", version] => Some(("", version)),
        ["apis", group, version] => Some((group, version)),
        _ => None,
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Flavor {
    /// Swagger 2.0: definitions under `#/definitions/`.
    V2,
    /// OpenAPI 3.0: schemas under `#/components/schemas/`.
    V3,
}

impl Flavor {
    fn settings(self) -> SchemaSettings {
        match self {
            // Among others, turns `$ref` with siblings into `allOf: [{$ref}]`, as upstream v3 is.
            Flavor::V3 => SchemaSettings::openapi3(),
            // Upstream v2 keeps siblings beside `$ref` (descriptions, patch extensions), and
            // kubectl's v2 model parser follows a `$ref` but not an `allOf`: no transforms.
            Flavor::V2 => SchemaSettings::draft07().with(|s| {
                s.meta_schema = None;
                s.transforms.clear();
            }),
        }
    }

    fn ref_prefix(self) -> &'static str {
        match self {
            Flavor::V2 => "#/definitions/",
            Flavor::V3 => "#/components/schemas/",
        }
    }
}

/// `group`, `version`, `kind` as the extensions spell them.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct Gvk {
    group: &'static str,
    version: &'static str,
    kind: &'static str,
}

impl Gvk {
    fn to_value(self) -> Value {
        json!({ "group": self.group, "kind": self.kind, "version": self.version })
    }
}

/// One document being built: paths, and the schemas they reference in the generator.
struct Document {
    flavor: Flavor,
    generator: SchemaGenerator,
    paths: Map<String, Value>,
    /// Definitions that describe a kind, with the kinds they describe.
    kinds: Vec<(String, Gvk)>,
}

impl Document {
    fn new(flavor: Flavor) -> Self {
        Document {
            flavor,
            generator: flavor.settings().into_generator(),
            paths: Map::new(),
            kinds: Vec::new(),
        }
    }

    fn schema_ref(&self, name: &str) -> Value {
        json!({ "$ref": format!("{}{}", self.flavor.ref_prefix(), name) })
    }

    /// Adds `name` → `gvk` to the kinds annotated at the end (one definition may describe
    /// several kinds, as `DeleteOptions` does for every group).
    fn mark_kind(&mut self, name: &str, gvk: Gvk) {
        if !self.kinds.iter().any(|(n, g)| n == name && *g == gvk) {
            self.kinds.push((name.to_string(), gvk));
        }
    }

    /// The schema of a k8s-openapi type, as a reference; its definitions land in the generator.
    fn subschema<T: schemars::JsonSchema>(&mut self) -> Value {
        self.generator.subschema_for::<T>().to_value()
    }

    /// The reference to a resource's kind schema, and the definition name of its list.
    fn resource_schemas(&mut self, r: &ResourceInfo) -> (Value, Value) {
        let name = (r.typed.schema_name)().into_owned();
        let kind_ref = (r.typed.schema)(&mut self.generator).to_value();
        self.mark_kind(
            &name,
            Gvk {
                group: r.group,
                version: r.version,
                kind: r.kind,
            },
        );
        let list_name = match name.rsplit_once('.') {
            Some((package, _)) => format!("{package}.{}", r.list_kind),
            None => r.list_kind.to_string(),
        };
        if !self.generator.definitions().contains_key(&list_name) {
            let list = self.list_schema(r, &kind_ref);
            self.generator
                .definitions_mut()
                .insert(list_name.clone(), list);
        }
        self.mark_kind(
            &list_name,
            Gvk {
                group: r.group,
                version: r.version,
                kind: r.list_kind,
            },
        );
        let list_ref = self.schema_ref(&list_name);
        (kind_ref, list_ref)
    }

    /// `<Kind>List`: k8s-openapi has no schema for its generic `List<T>`.
    fn list_schema(&mut self, r: &ResourceInfo, kind_ref: &Value) -> Value {
        let mut list_meta =
            self.subschema::<k8s_openapi::apimachinery::pkg::apis::meta::v1::ListMeta>();
        list_meta["description"] = json!("Standard list metadata.");
        json!({
            "description": format!("{} is a list of {} objects.", r.list_kind, r.kind),
            "type": "object",
            "properties": {
                "apiVersion": {
                    "description": "The versioned schema of this representation of an object.",
                    "type": "string",
                },
                "items": {
                    "description": format!("The {} in the list.", r.plural),
                    "type": "array",
                    "items": kind_ref,
                },
                "kind": {
                    "description": "The REST resource this object represents, in CamelCase.",
                    "type": "string",
                },
                "metadata": list_meta,
            },
            "required": ["items"],
        })
    }

    /// Adds the meta kinds (`Status`, `DeleteOptions`, `WatchEvent`) every group version
    /// describes, with this group version among their kinds.
    fn mark_meta_kinds(&mut self, group: &'static str, version: &'static str) {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;
        let names = [
            (
                <meta::DeleteOptions as schemars::JsonSchema>::schema_name(),
                "DeleteOptions",
            ),
            (
                <meta::WatchEvent<()> as schemars::JsonSchema>::schema_name(),
                "WatchEvent",
            ),
        ];
        for (name, kind) in names {
            if self.generator.definitions().contains_key(name.as_ref()) {
                self.mark_kind(
                    &name,
                    Gvk {
                        group,
                        version,
                        kind,
                    },
                );
            }
        }
    }

    /// Definitions post-processed (kinds, patch metadata), transformed for the flavor, and the
    /// document assembled.
    fn finish(mut self) -> Value {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;
        // Status describes only core v1's Status kind, as upstream publishes it.
        if self
            .generator
            .definitions()
            .contains_key(<meta::Status as schemars::JsonSchema>::schema_name().as_ref())
        {
            self.mark_kind(
                &<meta::Status as schemars::JsonSchema>::schema_name(),
                Gvk {
                    group: "",
                    version: "v1",
                    kind: "Status",
                },
            );
        }
        for (group, version) in group_versions() {
            self.mark_meta_kinds(group, version);
        }

        let kinds = std::mem::take(&mut self.kinds);
        let definitions = self.generator.definitions_mut();
        for (name, gvk) in kinds {
            if let Some(Value::Object(schema)) = definitions.get_mut(&name) {
                let entry = schema
                    .entry("x-kubernetes-group-version-kind")
                    .or_insert_with(|| Value::Array(Vec::new()));
                if let Value::Array(list) = entry {
                    list.push(gvk.to_value());
                }
            }
        }
        for (name, schema) in definitions.iter_mut() {
            annotate_patch_meta(name, schema);
            fix_scalar(name, schema);
        }
        // Transforms run after the annotations, so a `$ref` that gained siblings is still
        // rewritten for v3.
        let mut definitions = self.generator.take_definitions(true);
        definitions.sort_keys();
        let mut paths = std::mem::take(&mut self.paths);
        paths.sort_keys();

        let security_scheme = json!({
            "type": "apiKey",
            "description": "Bearer token authentication",
            "name": "authorization",
            "in": "header",
        });
        let info = json!({ "title": "Kubernetes", "version": API_RELEASE });
        match self.flavor {
            Flavor::V2 => json!({
                "swagger": "2.0",
                "info": info,
                "paths": paths,
                "definitions": definitions,
                "securityDefinitions": { "BearerToken": security_scheme },
                "security": [{ "BearerToken": [] }],
            }),
            Flavor::V3 => json!({
                "openapi": "3.0.0",
                "info": info,
                "paths": paths,
                "components": {
                    "schemas": definitions,
                    "securitySchemes": { "BearerToken": security_scheme },
                },
                "security": [{ "BearerToken": [] }],
            }),
        }
    }
}

/// Adds `x-kubernetes-patch-strategy` / `x-kubernetes-patch-merge-key` to the properties of
/// definition `name` that have strategic merge patch tags.
fn annotate_patch_meta(name: &str, schema: &mut Value) {
    let Some(Value::Object(properties)) = schema.get_mut("properties") else {
        return;
    };
    for (field, property) in properties.iter_mut() {
        let (Some(meta), Value::Object(property)) = (patch_meta(name, field), property) else {
            continue;
        };
        if let Some(key) = meta.merge_key {
            property.insert("x-kubernetes-patch-merge-key".into(), key.into());
        }
        property.insert("x-kubernetes-patch-strategy".into(), meta.strategy.into());
    }
}

/// k8s-openapi marks `Quantity` and `IntOrString` only with `x-kubernetes-int-or-string`;
/// upstream also types them as strings (IntOrString with format `int-or-string`), which is what
/// kubectl's explain and v2 validation read.
fn fix_scalar(name: &str, schema: &mut Value) {
    let Value::Object(schema) = schema else {
        return;
    };
    match name {
        "io.k8s.apimachinery.pkg.api.resource.Quantity" => {
            schema.entry("type").or_insert_with(|| "string".into());
        }
        "io.k8s.apimachinery.pkg.util.intstr.IntOrString" => {
            schema.entry("type").or_insert_with(|| "string".into());
            schema
                .entry("format")
                .or_insert_with(|| "int-or-string".into());
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests;
