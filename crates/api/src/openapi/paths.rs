//! The REST paths of a resource, shaped as upstream publishes them: collection, item,
//! all-namespaces list, the deprecated `watch/` paths and the `status`, `scale`, `binding`,
//! `eviction` and `finalize` subresources, with upstream's operation IDs and
//! `x-kubernetes-action` / `x-kubernetes-group-version-kind`.

use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;
use serde_json::{Map, Value, json};

use super::{Document, Flavor, Gvk, group_version_path};
use crate::resources::ResourceInfo;

/// Media types the server answers with (JSON only), and those of list (watchable) responses.
const PRODUCES: &[&str] = &["application/json"];
const PRODUCES_WATCHABLE: &[&str] = &["application/json", "application/json;stream=watch"];
/// Request bodies of create/update/delete; upstream advertises any type.
const CONSUMES_ANY: &[&str] = &["*/*"];
const CONSUMES_PATCH: &[&str] = &[
    "application/apply-patch+yaml",
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/strategic-merge-patch+json",
];

#[derive(Clone, Copy)]
enum Location {
    Path,
    Query,
}

#[derive(Clone, Copy)]
struct Param {
    name: &'static str,
    location: Location,
    ty: &'static str,
    description: &'static str,
}

const fn query(name: &'static str, ty: &'static str, description: &'static str) -> Param {
    Param {
        name,
        location: Location::Query,
        ty,
        description,
    }
}

const PRETTY: Param = query(
    "pretty",
    "string",
    "When 'true', the response is indented for reading.",
);
const NAMESPACE: Param = Param {
    name: "namespace",
    location: Location::Path,
    ty: "string",
    description: "object name and auth scope, such as for teams and projects",
};
const DRY_RUN: Param = query(
    "dryRun",
    "string",
    "When present, the request is processed but not persisted. The only valid value is 'All' (run every stage).",
);
const FIELD_MANAGER: Param = query(
    "fieldManager",
    "string",
    "The name of the actor making the change, recorded in managedFields. At most 128 printable characters.",
);
const FIELD_VALIDATION: Param = query(
    "fieldValidation",
    "string",
    "What the server does with unknown or duplicate fields in the request body: 'Ignore' drops them, 'Warn' drops them with a warning per field, 'Strict' fails the request listing them.",
);
const FORCE: Param = query(
    "force",
    "boolean",
    "Apply requests only: take ownership of fields that conflict with other managers instead of failing.",
);
const LABEL_SELECTOR: Param = query(
    "labelSelector",
    "string",
    "Only objects whose labels match this selector. Defaults to everything.",
);
const FIELD_SELECTOR: Param = query(
    "fieldSelector",
    "string",
    "Only objects whose fields match this selector. Defaults to everything.",
);
const LIMIT: Param = query(
    "limit",
    "integer",
    "The maximum number of objects in one response of a list; when more remain, the list metadata carries a 'continue' token for the next page.",
);
const CONTINUE: Param = query(
    "continue",
    "string",
    "The token from a previous page's list metadata, to fetch the next page of the same list.",
);
const RESOURCE_VERSION: Param = query(
    "resourceVersion",
    "string",
    "The resource version a read is served at (see resourceVersionMatch); for watches, the version the stream starts after.",
);
const RESOURCE_VERSION_MATCH: Param = query(
    "resourceVersionMatch",
    "string",
    "How resourceVersion applies to a list: 'NotOlderThan' or 'Exact'.",
);
const WATCH: Param = query(
    "watch",
    "boolean",
    "Stream the changes to the described objects (ADDED, MODIFIED, DELETED events) instead of listing them.",
);
const TIMEOUT_SECONDS: Param = query(
    "timeoutSeconds",
    "integer",
    "The duration of a list or watch call, after which the server ends it.",
);
const ALLOW_WATCH_BOOKMARKS: Param = query(
    "allowWatchBookmarks",
    "boolean",
    "Lets the server send BOOKMARK events, which carry only a resourceVersion, in a watch stream.",
);
const GRACE_PERIOD_SECONDS: Param = query(
    "gracePeriodSeconds",
    "integer",
    "Seconds before the object is deleted; zero deletes at once. Defaults to the object's own grace period.",
);
const ORPHAN_DEPENDENTS: Param = query(
    "orphanDependents",
    "boolean",
    "Deprecated, use propagationPolicy: whether dependents are orphaned rather than deleted.",
);
const PROPAGATION_POLICY: Param = query(
    "propagationPolicy",
    "string",
    "What happens to dependents: 'Orphan', 'Background' (the default) or 'Foreground' garbage collection.",
);

const LIST_QUERY: &[Param] = &[
    ALLOW_WATCH_BOOKMARKS,
    CONTINUE,
    FIELD_SELECTOR,
    LABEL_SELECTOR,
    LIMIT,
    RESOURCE_VERSION,
    RESOURCE_VERSION_MATCH,
    TIMEOUT_SECONDS,
    WATCH,
];
const WRITE_QUERY: &[Param] = &[DRY_RUN, FIELD_MANAGER, FIELD_VALIDATION];
const PATCH_QUERY: &[Param] = &[DRY_RUN, FIELD_MANAGER, FIELD_VALIDATION, FORCE];
const DELETE_QUERY: &[Param] = &[
    DRY_RUN,
    GRACE_PERIOD_SECONDS,
    ORPHAN_DEPENDENTS,
    PROPAGATION_POLICY,
];
const DELETE_COLLECTION_QUERY: &[Param] = &[
    CONTINUE,
    DRY_RUN,
    FIELD_SELECTOR,
    GRACE_PERIOD_SECONDS,
    LABEL_SELECTOR,
    LIMIT,
    ORPHAN_DEPENDENTS,
    PROPAGATION_POLICY,
    RESOURCE_VERSION,
    RESOURCE_VERSION_MATCH,
    TIMEOUT_SECONDS,
];

fn name_param(kind: &str) -> Value {
    json!({
        "name": "name",
        "in": "path",
        "description": format!("name of the {kind}"),
        "required": true,
        "ty": "string",
    })
}

struct Body {
    schema: Value,
    consumes: &'static [&'static str],
    required: bool,
}

/// One operation, rendered per flavor by [`Document::render_operation`].
struct Operation {
    method: &'static str,
    id: String,
    description: String,
    query: &'static [Param],
    body: Option<Body>,
    /// Status code → response schema.
    responses: Vec<(&'static str, Value)>,
    produces: &'static [&'static str],
    action: &'static str,
    gvk: Gvk,
}

/// The pieces of upstream operation IDs and tags of one group/version:
/// `readAppsV1NamespacedDeployment`, tag `apps_v1`.
struct Naming {
    /// `Core`, `Apps`, `RbacAuthorization`.
    group: String,
    /// `V1`, `V2`, `V1beta1`.
    version: String,
    tag: String,
}

impl Naming {
    fn new(group: &str, version: &str) -> Self {
        let group = if group.is_empty() {
            "Core".to_string()
        } else {
            group
                .trim_end_matches(".k8s.io")
                .split('.')
                .map(upper_first)
                .collect()
        };
        let mut tag = group.clone();
        if let Some(first) = tag.get_mut(..1) {
            first.make_ascii_lowercase();
        }
        let tag = format!("{tag}_{version}");
        Naming {
            group,
            version: upper_first(version),
            tag,
        }
    }

    /// `{verb}{Group}{Version}{rest}`.
    fn id(&self, verb: &str, rest: &str) -> String {
        format!("{verb}{}{}{rest}", self.group, self.version)
    }
}

fn upper_first(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

impl Document {
    /// The paths of one resource, and the schemas they reference.
    pub(super) fn add_resource(&mut self, r: &ResourceInfo) {
        let (kind_ref, list_ref) = self.resource_schemas(r);
        let status = self.subschema::<meta::Status>();
        let delete_options = self.subschema::<meta::DeleteOptions>();
        let watch_event = self.subschema::<meta::WatchEvent<()>>();
        let patch = self.subschema::<meta::Patch>();
        let naming = Naming::new(r.group, r.version);
        let gvk = Gvk {
            group: r.group,
            version: r.version,
            kind: r.kind,
        };
        let prefix = format!("/{}", group_version_path(r.group, r.version));
        let scope = if r.namespaced { "Namespaced" } else { "" };
        let kind = r.kind;
        let (collection, watch_collection) = if r.namespaced {
            (
                format!("{prefix}/namespaces/{{namespace}}/{}", r.plural),
                format!("{prefix}/watch/namespaces/{{namespace}}/{}", r.plural),
            )
        } else {
            (
                format!("{prefix}/{}", r.plural),
                format!("{prefix}/watch/{}", r.plural),
            )
        };
        let item = format!("{collection}/{{name}}");
        let scope_params = |name: Option<&str>| -> Vec<Value> {
            let mut params = Vec::new();
            if let Some(kind) = name {
                params.push(name_param(kind));
            }
            if r.namespaced {
                params.push(param_value(&NAMESPACE, true));
            }
            params.push(param_value(&PRETTY, false));
            params
        };

        let list = Operation {
            method: "get",
            id: naming.id("list", &format!("{scope}{kind}")),
            description: format!("list or watch objects of kind {kind}"),
            query: LIST_QUERY,
            body: None,
            responses: vec![("200", list_ref.clone())],
            produces: PRODUCES_WATCHABLE,
            action: "list",
            gvk,
        };
        let create = Operation {
            method: "post",
            id: naming.id("create", &format!("{scope}{kind}")),
            description: format!("create a {kind}"),
            query: WRITE_QUERY,
            body: Some(Body {
                schema: kind_ref.clone(),
                consumes: CONSUMES_ANY,
                required: true,
            }),
            responses: vec![
                ("200", kind_ref.clone()),
                ("201", kind_ref.clone()),
                ("202", kind_ref.clone()),
            ],
            produces: PRODUCES,
            action: "post",
            gvk,
        };
        let delete_collection = Operation {
            method: "delete",
            id: naming.id("delete", &format!("Collection{scope}{kind}")),
            description: format!("delete collection of {kind}"),
            query: DELETE_COLLECTION_QUERY,
            body: Some(Body {
                schema: delete_options.clone(),
                consumes: CONSUMES_ANY,
                required: false,
            }),
            responses: vec![("200", status.clone())],
            produces: PRODUCES,
            action: "deletecollection",
            gvk,
        };
        self.add_path(
            &collection,
            scope_params(None),
            vec![list, create, delete_collection],
        );

        let read = Operation {
            method: "get",
            id: naming.id("read", &format!("{scope}{kind}")),
            description: format!("read the specified {kind}"),
            query: &[],
            body: None,
            responses: vec![("200", kind_ref.clone())],
            produces: PRODUCES,
            action: "get",
            gvk,
        };
        let replace = Operation {
            method: "put",
            id: naming.id("replace", &format!("{scope}{kind}")),
            description: format!("replace the specified {kind}"),
            query: WRITE_QUERY,
            body: Some(Body {
                schema: kind_ref.clone(),
                consumes: CONSUMES_ANY,
                required: true,
            }),
            responses: vec![("200", kind_ref.clone()), ("201", kind_ref.clone())],
            produces: PRODUCES,
            action: "put",
            gvk,
        };
        let delete = Operation {
            method: "delete",
            id: naming.id("delete", &format!("{scope}{kind}")),
            description: format!("delete a {kind}"),
            query: DELETE_QUERY,
            body: Some(Body {
                schema: delete_options.clone(),
                consumes: CONSUMES_ANY,
                required: false,
            }),
            responses: vec![("200", kind_ref.clone()), ("202", kind_ref.clone())],
            produces: PRODUCES,
            action: "delete",
            gvk,
        };
        let patch_op = Operation {
            method: "patch",
            id: naming.id("patch", &format!("{scope}{kind}")),
            description: format!("partially update the specified {kind}"),
            query: PATCH_QUERY,
            body: Some(Body {
                schema: patch.clone(),
                consumes: CONSUMES_PATCH,
                required: true,
            }),
            responses: vec![("200", kind_ref.clone()), ("201", kind_ref.clone())],
            produces: PRODUCES,
            action: "patch",
            gvk,
        };
        self.add_path(
            &item,
            scope_params(Some(kind)),
            vec![read, replace, delete, patch_op],
        );

        if r.namespaced {
            let list_all = get_list(
                naming.id("list", &format!("{kind}ForAllNamespaces")),
                kind,
                list_ref.clone(),
                "list",
                gvk,
            );
            self.add_path(
                &format!("{prefix}/{}", r.plural),
                vec![param_value(&PRETTY, false)],
                vec![list_all],
            );
        }

        // Deprecated watch paths, still served upstream; they are what references WatchEvent.
        let watch_list = get_list(
            naming.id("watch", &format!("{scope}{kind}List")),
            kind,
            watch_event.clone(),
            "watchlist",
            gvk,
        );
        self.add_path(&watch_collection, scope_params(None), vec![watch_list]);
        let watch_item = get_list(
            naming.id("watch", &format!("{scope}{kind}")),
            kind,
            watch_event.clone(),
            "watch",
            gvk,
        );
        self.add_path(
            &format!("{watch_collection}/{{name}}"),
            scope_params(Some(kind)),
            vec![watch_item],
        );
        if r.namespaced {
            let watch_all = get_list(
                naming.id("watch", &format!("{kind}ListForAllNamespaces")),
                kind,
                watch_event.clone(),
                "watchlist",
                gvk,
            );
            self.add_path(
                &format!("{prefix}/watch/{}", r.plural),
                vec![param_value(&PRETTY, false)],
                vec![watch_all],
            );
        }

        for &sub in r.subresources {
            let path = format!("{item}/{sub}");
            let suffix = upper_first(sub);
            let rest = format!("{scope}{kind}{suffix}");
            match sub {
                "status" | "scale" => {
                    let (schema, sub_gvk, what) = if sub == "status" {
                        (
                            kind_ref.clone(),
                            gvk,
                            format!("status of the specified {kind}"),
                        )
                    } else {
                        let scale_gvk = Gvk {
                            group: "autoscaling",
                            version: "v1",
                            kind: "Scale",
                        };
                        let scale = self.subschema::<k8s_openapi::api::autoscaling::v1::Scale>();
                        self.mark_kind(
                            <k8s_openapi::api::autoscaling::v1::Scale as schemars::JsonSchema>::schema_name().as_ref(),
                            scale_gvk,
                        );
                        (scale, scale_gvk, format!("scale of the specified {kind}"))
                    };
                    let ops = vec![
                        Operation {
                            method: "get",
                            id: naming.id("read", &rest),
                            description: format!("read {what}"),
                            query: &[],
                            body: None,
                            responses: vec![("200", schema.clone())],
                            produces: PRODUCES,
                            action: "get",
                            gvk: sub_gvk,
                        },
                        Operation {
                            method: "put",
                            id: naming.id("replace", &rest),
                            description: format!("replace {what}"),
                            query: WRITE_QUERY,
                            body: Some(Body {
                                schema: schema.clone(),
                                consumes: CONSUMES_ANY,
                                required: true,
                            }),
                            responses: vec![("200", schema.clone()), ("201", schema.clone())],
                            produces: PRODUCES,
                            action: "put",
                            gvk: sub_gvk,
                        },
                        Operation {
                            method: "patch",
                            id: naming.id("patch", &rest),
                            description: format!("partially update {what}"),
                            query: PATCH_QUERY,
                            body: Some(Body {
                                schema: patch.clone(),
                                consumes: CONSUMES_PATCH,
                                required: true,
                            }),
                            responses: vec![("200", schema.clone()), ("201", schema.clone())],
                            produces: PRODUCES,
                            action: "patch",
                            gvk: sub_gvk,
                        },
                    ];
                    let sub_kind = if sub == "status" { kind } else { "Scale" };
                    self.add_path(&path, scope_params(Some(sub_kind)), ops);
                }
                "binding" | "eviction" => {
                    let (schema, sub_gvk) = if sub == "binding" {
                        let schema = self.subschema::<k8s_openapi::api::core::v1::Binding>();
                        let gvk = Gvk {
                            group: "",
                            version: "v1",
                            kind: "Binding",
                        };
                        self.mark_kind(
                            <k8s_openapi::api::core::v1::Binding as schemars::JsonSchema>::schema_name().as_ref(),
                            gvk,
                        );
                        (schema, gvk)
                    } else {
                        let schema = self.subschema::<k8s_openapi::api::policy::v1::Eviction>();
                        let gvk = Gvk {
                            group: "policy",
                            version: "v1",
                            kind: "Eviction",
                        };
                        self.mark_kind(
                            <k8s_openapi::api::policy::v1::Eviction as schemars::JsonSchema>::schema_name().as_ref(),
                            gvk,
                        );
                        (schema, gvk)
                    };
                    let op = Operation {
                        method: "post",
                        id: naming.id("create", &rest),
                        description: format!("create {} of a {kind}", sub_gvk.kind),
                        query: WRITE_QUERY,
                        body: Some(Body {
                            schema: schema.clone(),
                            consumes: CONSUMES_ANY,
                            required: true,
                        }),
                        responses: vec![
                            ("200", schema.clone()),
                            ("201", schema.clone()),
                            ("202", schema.clone()),
                        ],
                        produces: PRODUCES,
                        action: "post",
                        gvk: sub_gvk,
                    };
                    self.add_path(&path, scope_params(Some(sub_gvk.kind)), vec![op]);
                }
                "finalize" => {
                    let op = Operation {
                        method: "put",
                        id: naming.id("replace", &rest),
                        description: format!("replace finalize of the specified {kind}"),
                        query: WRITE_QUERY,
                        body: Some(Body {
                            schema: kind_ref.clone(),
                            consumes: CONSUMES_ANY,
                            required: true,
                        }),
                        responses: vec![("200", kind_ref.clone()), ("201", kind_ref.clone())],
                        produces: PRODUCES,
                        action: "put",
                        gvk,
                    };
                    self.add_path(&path, scope_params(Some(kind)), vec![op]);
                }
                // Connect subresources (log, exec, attach, portforward) stream or upgrade the
                // connection; kubectl does not look them up, so they are not described.
                _ => {}
            }
        }
    }

    /// `GET /api/v1/`, `GET /apis/apps/v1/`: the group version's resource list.
    pub(super) fn add_resource_list_path(&mut self, group: &str, version: &str) {
        let naming = Naming::new(group, version);
        let schema = self.subschema::<meta::APIResourceList>();
        let operation = json!({
            "tags": [naming.tag],
            "description": "get available resources",
            "operationId": naming.id("get", "APIResources"),
        });
        let operation = self.with_responses(operation, &[("200", schema)], PRODUCES);
        let path = format!("/{}/", group_version_path(group, version));
        self.paths.insert(path, json!({ "get": operation }));
    }

    fn add_path(&mut self, path: &str, params: Vec<Value>, operations: Vec<Operation>) {
        let mut item = match self.paths.remove(path) {
            Some(Value::Object(item)) => item,
            _ => Map::new(),
        };
        for op in operations {
            let rendered = self.render_operation(path, &op);
            item.insert(op.method.to_string(), rendered);
        }
        let params: Vec<Value> = params
            .into_iter()
            .map(|p| self.render_param_value(p))
            .collect();
        item.insert("parameters".into(), Value::Array(params));
        self.paths.insert(path.to_string(), Value::Object(item));
    }

    fn render_operation(&self, path: &str, op: &Operation) -> Value {
        let tag = path_tag(path);
        let mut params: Vec<Value> = op
            .query
            .iter()
            .map(|p| self.render_param_value(param_value(p, false)))
            .collect();
        let mut out = Map::new();
        out.insert("tags".into(), json!([tag]));
        out.insert("description".into(), op.description.clone().into());
        out.insert("operationId".into(), op.id.clone().into());
        let mut request_body = None;
        if let Some(body) = &op.body {
            match self.flavor {
                Flavor::V2 => params.push(json!({
                    "name": "body",
                    "in": "body",
                    "required": body.required,
                    "schema": body.schema,
                })),
                Flavor::V3 => {
                    let content: Map<String, Value> = body
                        .consumes
                        .iter()
                        .map(|ct| (ct.to_string(), json!({ "schema": body.schema })))
                        .collect();
                    let mut rb = json!({ "content": content });
                    if body.required {
                        rb["required"] = true.into();
                    }
                    request_body = Some(rb);
                }
            }
        }
        if self.flavor == Flavor::V2 {
            let consumes = op.body.as_ref().map_or(CONSUMES_ANY, |b| b.consumes);
            out.insert("consumes".into(), json!(consumes));
            out.insert("produces".into(), json!(op.produces));
            out.insert("schemes".into(), json!(["https"]));
        }
        if !params.is_empty() {
            out.insert("parameters".into(), Value::Array(params));
        }
        if let Some(rb) = request_body {
            out.insert("requestBody".into(), rb);
        }
        let out = self.with_responses(Value::Object(out), &op.responses, op.produces);
        let Value::Object(mut out) = out else {
            unreachable!("operations are objects")
        };
        out.insert("x-kubernetes-action".into(), op.action.into());
        out.insert("x-kubernetes-group-version-kind".into(), op.gvk.to_value());
        Value::Object(out)
    }

    /// Adds `responses` (and the 401 every operation may answer) to an operation.
    fn with_responses(
        &self,
        mut operation: Value,
        responses: &[(&'static str, Value)],
        produces: &[&str],
    ) -> Value {
        let mut out = Map::new();
        for (code, schema) in responses {
            let description = match *code {
                "200" => "OK",
                "201" => "Created",
                "202" => "Accepted",
                _ => "",
            };
            let response = match self.flavor {
                Flavor::V2 => json!({ "description": description, "schema": schema }),
                Flavor::V3 => {
                    let content: Map<String, Value> = produces
                        .iter()
                        .map(|ct| (ct.to_string(), json!({ "schema": schema })))
                        .collect();
                    json!({ "description": description, "content": content })
                }
            };
            out.insert(code.to_string(), response);
        }
        out.insert("401".into(), json!({ "description": "Unauthorized" }));
        if self.flavor == Flavor::V2 && operation.get("produces").is_none() {
            operation["consumes"] = json!(PRODUCES);
            operation["produces"] = json!(produces);
            operation["schemes"] = json!(["https"]);
        }
        operation["responses"] = Value::Object(out);
        operation
    }

    /// A parameter from its flavor-neutral form (`ty` beside the rest) to v2 (`type` inline)
    /// or v3 (`schema: {type}`).
    fn render_param_value(&self, mut param: Value) -> Value {
        let Some(Value::String(ty)) = param.as_object_mut().and_then(|p| p.remove("ty")) else {
            return param;
        };
        let unique = param["in"] == "query";
        match self.flavor {
            Flavor::V2 => {
                param["type"] = ty.into();
                if unique {
                    param["uniqueItems"] = true.into();
                }
            }
            Flavor::V3 => {
                let mut schema = json!({ "type": ty });
                if unique {
                    schema["uniqueItems"] = true.into();
                }
                param["schema"] = schema;
            }
        }
        param
    }
}

/// A get operation taking the list parameters: a list, or a deprecated watch.
fn get_list(id: String, kind: &str, schema: Value, action: &'static str, gvk: Gvk) -> Operation {
    let description = match action {
        "list" => format!("list or watch objects of kind {kind}"),
        "watch" => format!(
            "watch changes to an object of kind {kind}; deprecated: use the 'watch' parameter with a list operation instead, filtered by a fieldSelector on metadata.name"
        ),
        _ => format!(
            "watch individual changes to a list of {kind}; deprecated: use the 'watch' parameter with a list operation instead"
        ),
    };
    Operation {
        method: "get",
        id,
        description,
        query: LIST_QUERY,
        body: None,
        responses: vec![("200", schema)],
        produces: PRODUCES_WATCHABLE,
        action,
        gvk,
    }
}

/// The tag of a path: `core_v1` for `/api/v1/...`, `apps_v1` for `/apis/apps/v1/...`.
fn path_tag(path: &str) -> String {
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match parts.as_slice() {
        ["api", version, ..] => Naming::new("", version).tag,
        ["apis", group, version, ..] => Naming::new(group, version).tag,
        _ => String::new(),
    }
}

/// A parameter in the flavor-neutral form [`Document::render_param_value`] takes.
fn param_value(p: &Param, required: bool) -> Value {
    let location = match p.location {
        Location::Path => "path",
        Location::Query => "query",
    };
    let mut v = json!({ "name": p.name, "in": location, "description": p.description, "ty": p.ty });
    if required || matches!(p.location, Location::Path) {
        v["required"] = true.into();
    }
    v
}
