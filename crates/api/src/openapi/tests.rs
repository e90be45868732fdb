use std::collections::HashSet;

use serde_json::Value;

use super::*;

fn v3_all() -> Vec<(String, Value)> {
    v3_paths()
        .into_iter()
        .map(|p| {
            let doc = v3_document(&p).unwrap_or_else(|| panic!("no document for {p}"));
            (p, doc)
        })
        .collect()
}

fn schemas(doc: &Value) -> &Map<String, Value> {
    doc.get("definitions")
        .or_else(|| doc.pointer("/components/schemas"))
        .and_then(Value::as_object)
        .expect("document has schemas")
}

/// Every `$ref` string in `v`, with the JSON pointer of where it is.
fn refs<'a>(v: &'a Value, at: String, out: &mut Vec<(String, &'a str)>) {
    match v {
        Value::Object(map) => {
            for (k, child) in map {
                if k == "$ref" {
                    if let Value::String(s) = child {
                        out.push((at.clone(), s));
                    }
                } else {
                    refs(child, format!("{at}/{k}"), out);
                }
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                refs(child, format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
}

fn assert_refs_resolve(name: &str, doc: &Value) {
    let mut found = Vec::new();
    refs(doc, String::new(), &mut found);
    assert!(!found.is_empty(), "{name}: no references at all");
    for (at, reference) in found {
        let pointer = reference
            .strip_prefix('#')
            .unwrap_or_else(|| panic!("{name}: non-local $ref {reference} at {at}"));
        assert!(
            doc.pointer(pointer).is_some(),
            "{name}: $ref {reference} at {at} does not resolve"
        );
    }
}

fn gvk_matches(v: &Value, r: &ResourceInfo) -> bool {
    v["group"] == r.group && v["version"] == r.version && v["kind"] == r.kind
}

/// The PATCH operations of `doc` whose `x-kubernetes-group-version-kind` is `r`'s kind.
fn patch_operations<'a>(doc: &'a Value, r: &ResourceInfo) -> Vec<(&'a String, &'a Value)> {
    doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .filter_map(|(path, item)| item.get("patch").map(|op| (path, op)))
        .filter(|(_, op)| gvk_matches(&op["x-kubernetes-group-version-kind"], r))
        .collect()
}

fn has_query_param(op: &Value, name: &str) -> bool {
    op["parameters"]
        .as_array()
        .is_some_and(|ps| ps.iter().any(|p| p["name"] == name && p["in"] == "query"))
}

fn document_of(r: &ResourceInfo) -> Value {
    v3_document(&group_version_path(r.group, r.version)).unwrap()
}

#[test]
fn v3_paths_cover_every_group_version_and_unknown_paths_have_no_document() {
    let paths = v3_paths();
    assert_eq!(paths[0], "api/v1");
    assert!(paths.contains(&"apis/apps/v1".to_string()));
    assert!(paths.contains(&"apis/autoscaling/v1".to_string()));
    assert!(paths.contains(&"apis/rbac.authorization.k8s.io/v1".to_string()));
    for r in resources::all() {
        assert!(paths.contains(&group_version_path(r.group, r.version)));
    }
    assert_eq!(paths.iter().collect::<HashSet<_>>().len(), paths.len());
    assert!(v3_document("apis/apps/v9").is_none());
    assert!(v3_document("apis/nothing.example.com/v1").is_none());
    assert!(v3_document("api").is_none());
    assert!(v3_document("/apis/apps/v1/").is_some());
}

#[test]
fn index_points_at_each_document_with_its_hash() {
    let index = v3_index(|path| format!("h-{}", path.len()));
    let paths = index["paths"].as_object().unwrap();
    assert_eq!(paths.len(), v3_paths().len());
    assert_eq!(
        paths["apis/apps/v1"]["serverRelativeURL"],
        "/openapi/v3/apis/apps/v1?hash=h-12"
    );
    assert_eq!(
        paths["api/v1"]["serverRelativeURL"],
        "/openapi/v3/api/v1?hash=h-6"
    );
}

#[test]
fn every_resource_patch_operation_takes_field_validation() {
    let v2 = v2();
    for r in resources::all() {
        for (flavor, doc) in [("v3", document_of(r)), ("v2", v2.clone())] {
            let ops = patch_operations(&doc, r);
            assert!(
                !ops.is_empty(),
                "{flavor}: no PATCH operation for {}",
                r.group_resource()
            );
            for (path, op) in ops {
                assert!(
                    has_query_param(op, "fieldValidation"),
                    "{flavor}: PATCH {path} has no fieldValidation"
                );
                assert_eq!(op["x-kubernetes-action"], "patch");
                // kubectl apply only computes a strategic merge patch where it is accepted.
                let accepts_smp = match flavor {
                    "v3" => op
                        .pointer("/requestBody/content/application~1strategic-merge-patch+json")
                        .is_some(),
                    _ => op["consumes"]
                        .as_array()
                        .unwrap()
                        .contains(&"application/strategic-merge-patch+json".into()),
                };
                assert!(
                    accepts_smp,
                    "{flavor}: PATCH {path} takes no strategic merge patch"
                );
            }
        }
    }
}

#[test]
fn upstream_paths_and_operation_ids() {
    let core = v3_document("api/v1").unwrap();
    let paths = &core["paths"];
    let op = |path: &str, method: &str| -> &Value {
        paths
            .get(path)
            .and_then(|item| item.get(method))
            .unwrap_or_else(|| panic!("no {method} {path}"))
    };
    assert_eq!(
        op("/api/v1/namespaces/{namespace}/pods", "get")["operationId"],
        "listCoreV1NamespacedPod"
    );
    assert_eq!(
        op("/api/v1/namespaces/{namespace}/pods", "delete")["operationId"],
        "deleteCoreV1CollectionNamespacedPod"
    );
    assert_eq!(
        op("/api/v1/pods", "get")["operationId"],
        "listCoreV1PodForAllNamespaces"
    );
    assert_eq!(
        op("/api/v1/namespaces/{namespace}/pods/{name}", "patch")["operationId"],
        "patchCoreV1NamespacedPod"
    );
    assert_eq!(
        op("/api/v1/namespaces/{namespace}/pods/{name}/status", "put")["operationId"],
        "replaceCoreV1NamespacedPodStatus"
    );
    let binding = op("/api/v1/namespaces/{namespace}/pods/{name}/binding", "post");
    assert_eq!(binding["operationId"], "createCoreV1NamespacedPodBinding");
    assert_eq!(
        binding["x-kubernetes-group-version-kind"]["kind"],
        "Binding"
    );
    assert_eq!(
        op("/api/v1/nodes/{name}", "get")["operationId"],
        "readCoreV1Node"
    );
    assert_eq!(
        op("/api/v1/namespaces/{name}/finalize", "put")["operationId"],
        "replaceCoreV1NamespaceFinalize"
    );
    assert_eq!(
        op("/api/v1/watch/namespaces/{namespace}/pods", "get")["x-kubernetes-action"],
        "watchlist"
    );
    assert!(paths.get("/api/v1/nodes/{name}/binding").is_none());
    // Cluster-scoped resources have no all-namespaces path and no namespace parameter.
    let node_item = &paths["/api/v1/nodes/{name}"]["parameters"];
    assert!(
        !node_item
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "namespace")
    );
    let pod_item = &paths["/api/v1/namespaces/{namespace}/pods/{name}"]["parameters"];
    let namespace = pod_item
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "namespace")
        .unwrap();
    assert_eq!(namespace["in"], "path");
    assert_eq!(namespace["required"], true);
    assert_eq!(namespace["schema"]["type"], "string");

    let list = op("/api/v1/namespaces/{namespace}/pods", "get");
    for name in [
        "labelSelector",
        "fieldSelector",
        "limit",
        "continue",
        "resourceVersion",
        "resourceVersionMatch",
        "watch",
        "timeoutSeconds",
        "allowWatchBookmarks",
    ] {
        assert!(has_query_param(list, name), "list has no {name}");
    }
    let delete = op("/api/v1/namespaces/{namespace}/pods/{name}", "delete");
    for name in ["dryRun", "propagationPolicy", "gracePeriodSeconds"] {
        assert!(has_query_param(delete, name), "delete has no {name}");
    }
    let create = op("/api/v1/namespaces/{namespace}/pods", "post");
    for name in ["dryRun", "fieldManager", "fieldValidation"] {
        assert!(has_query_param(create, name), "create has no {name}");
    }
    assert_eq!(
        create.pointer("/requestBody/content/*~1*/schema/$ref"),
        Some(&Value::from("#/components/schemas/io.k8s.api.core.v1.Pod"))
    );
    assert_eq!(
        list.pointer("/responses/200/content/application~1json/schema/$ref"),
        Some(&Value::from(
            "#/components/schemas/io.k8s.api.core.v1.PodList"
        ))
    );

    let apps = v3_document("apis/apps/v1").unwrap();
    let scale = &apps["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}/scale"];
    assert_eq!(
        scale["patch"]["operationId"],
        "patchAppsV1NamespacedDeploymentScale"
    );
    assert_eq!(
        scale["patch"]["x-kubernetes-group-version-kind"],
        serde_json::json!({"group": "autoscaling", "kind": "Scale", "version": "v1"})
    );
    assert!(has_query_param(&scale["patch"], "fieldValidation"));
    assert_eq!(
        scale["get"].pointer("/responses/200/content/application~1json/schema/$ref"),
        Some(&Value::from(
            "#/components/schemas/io.k8s.api.autoscaling.v1.Scale"
        ))
    );
    let rbac = v3_document("apis/rbac.authorization.k8s.io/v1").unwrap();
    let roles = &rbac["paths"]["/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}/roles"];
    assert_eq!(
        roles["get"]["operationId"],
        "listRbacAuthorizationV1NamespacedRole"
    );
    assert_eq!(roles["get"]["tags"][0], "rbacAuthorization_v1");
    // A group version document describes only its own resources.
    assert!(apps["paths"].get("/api/v1/pods").is_none());
    assert!(schemas(&apps).get("io.k8s.api.core.v1.Service").is_none());
}

#[test]
fn operation_ids_are_unique() {
    let v2 = v2();
    let mut seen = HashSet::new();
    for (path, item) in v2["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            if method == "parameters" {
                continue;
            }
            let id = op["operationId"].as_str().unwrap();
            assert!(
                seen.insert(id.to_string()),
                "{method} {path}: duplicate {id}"
            );
        }
    }
    assert!(seen.len() > 300, "only {} operations", seen.len());
}

#[test]
fn every_kind_and_list_schema_has_its_group_version_kind() {
    let v2 = v2();
    for r in resources::all() {
        let name = (r.typed.schema_name)();
        let (package, _) = name.rsplit_once('.').unwrap();
        let list_name = format!("{package}.{}", r.list_kind);
        for (flavor, doc) in [("v3", document_of(r)), ("v2", v2.clone())] {
            let schemas = schemas(&doc);
            for (schema, kind) in [(name.as_ref(), r.kind), (list_name.as_str(), r.list_kind)] {
                let gvks = schemas
                    .get(schema)
                    .unwrap_or_else(|| panic!("{flavor}: no schema {schema}"))
                    ["x-kubernetes-group-version-kind"]
                    .as_array()
                    .unwrap_or_else(|| panic!("{flavor}: {schema} has no group-version-kind"));
                assert!(
                    gvks.iter().any(|g| g["group"] == r.group
                        && g["version"] == r.version
                        && g["kind"] == kind),
                    "{flavor}: {schema} lacks {}/{kind}",
                    r.api_version()
                );
            }
        }
    }
    let core = v3_document("api/v1").unwrap();
    let status = &schemas(&core)["io.k8s.apimachinery.pkg.apis.meta.v1.Status"];
    assert_eq!(
        status["x-kubernetes-group-version-kind"][0]["kind"],
        "Status"
    );
    let delete_options = &schemas(&core)["io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions"];
    assert!(
        delete_options["x-kubernetes-group-version-kind"]
            .as_array()
            .unwrap()
            .iter()
            .any(|g| g["group"] == "apps" && g["kind"] == "DeleteOptions")
    );
    assert!(schemas(&core).contains_key("io.k8s.apimachinery.pkg.apis.meta.v1.WatchEvent"));
}

#[test]
fn patch_metadata_is_on_properties() {
    let v2 = v2();
    let core = v3_document("api/v1").unwrap();
    for (flavor, doc) in [("v3", &core), ("v2", &v2)] {
        let schemas = schemas(doc);
        let ports = &schemas["io.k8s.api.core.v1.Container"]["properties"]["ports"];
        assert_eq!(
            ports["x-kubernetes-patch-merge-key"], "containerPort",
            "{flavor}"
        );
        assert_eq!(ports["x-kubernetes-patch-strategy"], "merge", "{flavor}");
        let containers = &schemas["io.k8s.api.core.v1.PodSpec"]["properties"]["containers"];
        assert_eq!(
            containers["x-kubernetes-patch-merge-key"], "name",
            "{flavor}"
        );
        let volumes = &schemas["io.k8s.api.core.v1.PodSpec"]["properties"]["volumes"];
        assert_eq!(volumes["x-kubernetes-patch-strategy"], "merge,retainKeys");
        // Untagged fields carry nothing.
        let args = &schemas["io.k8s.api.core.v1.Container"]["properties"]["args"];
        assert!(
            args.get("x-kubernetes-patch-strategy").is_none(),
            "{flavor}"
        );
    }
    // A tag on a field whose schema is a reference: v2 keeps `$ref` with siblings (what
    // kubectl's v2 parser follows), v3 wraps it in `allOf`.
    let apps = v3_document("apis/apps/v1").unwrap();
    let strategy = &schemas(&apps)["io.k8s.api.apps.v1.DeploymentSpec"]["properties"]["strategy"];
    assert_eq!(strategy["x-kubernetes-patch-strategy"], "retainKeys");
    assert_eq!(
        strategy["allOf"][0]["$ref"],
        "#/components/schemas/io.k8s.api.apps.v1.DeploymentStrategy"
    );
    let strategy = &schemas(&v2)["io.k8s.api.apps.v1.DeploymentSpec"]["properties"]["strategy"];
    assert_eq!(strategy["x-kubernetes-patch-strategy"], "retainKeys");
    assert_eq!(
        strategy["$ref"],
        "#/definitions/io.k8s.api.apps.v1.DeploymentStrategy"
    );
    // Every tagged field of every type in a document is annotated.
    for doc in [&v2, &core, &apps] {
        for (ty, field, meta) in crate::patch::merge_keys::all() {
            let Some(schema) = schemas(doc).get(ty) else {
                continue;
            };
            let property = &schema["properties"][field];
            assert_eq!(
                property["x-kubernetes-patch-strategy"], meta.strategy,
                "{ty}.{field}"
            );
            assert_eq!(
                property
                    .get("x-kubernetes-patch-merge-key")
                    .and_then(Value::as_str),
                meta.merge_key,
                "{ty}.{field}"
            );
        }
    }
}

#[test]
fn every_reference_resolves() {
    assert_refs_resolve("v2", &v2());
    for (path, doc) in v3_all() {
        assert_refs_resolve(&path, &doc);
    }
}

/// OpenAPI 3.0 ignores the siblings of `$ref`, so no description or extension may sit there.
#[test]
fn v3_references_have_no_siblings() {
    fn check(v: &Value, at: &str) {
        match v {
            Value::Object(map) => {
                if map.contains_key("$ref") {
                    assert_eq!(map.len(), 1, "$ref with siblings at {at}: {v}");
                }
                for (k, child) in map {
                    check(child, &format!("{at}/{k}"));
                }
            }
            Value::Array(items) => items.iter().for_each(|c| check(c, at)),
            _ => {}
        }
    }
    for (path, doc) in v3_all() {
        assert_eq!(doc["openapi"], "3.0.0");
        check(&doc, &path);
    }
}

#[test]
fn v2_is_swagger_and_operations_are_complete() {
    let doc = v2();
    assert_eq!(doc["swagger"], "2.0");
    let pod_create = &doc["paths"]["/api/v1/namespaces/{namespace}/pods"]["post"];
    let body = pod_create["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["in"] == "body")
        .expect("create has a body parameter");
    assert_eq!(
        body["schema"]["$ref"],
        "#/definitions/io.k8s.api.core.v1.Pod"
    );
    assert_eq!(
        pod_create["responses"]["201"]["schema"]["$ref"],
        "#/definitions/io.k8s.api.core.v1.Pod"
    );
    let dry_run = pod_create["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "dryRun")
        .unwrap();
    assert_eq!(dry_run["type"], "string");
    assert!(dry_run.get("schema").is_none());
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            if method == "parameters" {
                continue;
            }
            for key in ["operationId", "responses", "produces", "consumes"] {
                assert!(op.get(key).is_some(), "{method} {path} has no {key}");
            }
        }
    }
    let intstr = &schemas(&doc)["io.k8s.apimachinery.pkg.util.intstr.IntOrString"];
    assert_eq!(intstr["type"], "string");
    assert_eq!(intstr["format"], "int-or-string");
}

#[test]
fn generation_is_cheap() {
    let start = std::time::Instant::now();
    let doc = v2();
    let bytes = serde_json::to_vec(&doc).unwrap();
    let v2_time = start.elapsed();
    let start = std::time::Instant::now();
    let core = serde_json::to_vec(&v3_document("api/v1").unwrap()).unwrap();
    let v3_time = start.elapsed();
    eprintln!(
        "v2: {} bytes in {v2_time:?}; v3 api/v1: {} bytes in {v3_time:?}",
        bytes.len(),
        core.len()
    );
    // Generous bounds for unoptimised builds on a busy machine.
    assert!(v2_time.as_secs() < 5 && v3_time.as_secs() < 5);
}

/// A protobuf field as read back: (field number, varint or length-delimited bytes).
#[derive(Debug)]
enum Field<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
}

fn read_varint(buf: &[u8], pos: &mut usize) -> u64 {
    let mut v = 0u64;
    let mut shift = 0;
    loop {
        let b = buf[*pos];
        *pos += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return v;
        }
        shift += 7;
    }
}

/// Splits one message into its fields; panics on malformed input.
fn fields(buf: &[u8]) -> Vec<(u64, Field<'_>)> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < buf.len() {
        let key = read_varint(buf, &mut pos);
        let field = match key & 7 {
            0 => Field::Varint(read_varint(buf, &mut pos)),
            1 => {
                pos += 8;
                Field::Varint(0)
            }
            2 => {
                let len = read_varint(buf, &mut pos) as usize;
                let bytes = &buf[pos..pos + len];
                pos += len;
                Field::Bytes(bytes)
            }
            t => panic!("unexpected wire type {t} at {pos}"),
        };
        out.push((key >> 3, field));
    }
    assert_eq!(pos, buf.len(), "message overruns its buffer");
    out
}

fn bytes_of(msg: &[u8], number: u64) -> Vec<&[u8]> {
    fields(msg)
        .into_iter()
        .filter_map(|(n, f)| match (n, f) {
            (n, Field::Bytes(b)) if n == number => Some(b),
            _ => None,
        })
        .collect()
}

fn string_of(msg: &[u8], number: u64) -> String {
    bytes_of(msg, number)
        .first()
        .map(|b| String::from_utf8(b.to_vec()).unwrap())
        .unwrap_or_default()
}

/// The value of the `NamedX` entry called `name` in repeated field `number`.
fn named_entry<'a>(msg: &'a [u8], number: u64, name: &str) -> Option<&'a [u8]> {
    bytes_of(msg, number)
        .into_iter()
        .find(|entry| string_of(entry, 1) == name)
        .and_then(|entry| bytes_of(entry, 2).first().copied())
}

#[test]
fn protobuf_is_negotiated_in_both_spellings() {
    assert!(accepts_v2_protobuf(
        "application/com.github.proto-openapi.spec.v2@v1.0+protobuf"
    ));
    assert!(accepts_v2_protobuf(
        "application/json;q=0.5, application/com.github.proto-openapi.spec.v2.v1.0+protobuf"
    ));
    assert!(!accepts_v2_protobuf("application/json, */*"));
    assert!(!accepts_v2_protobuf(""));
}

#[test]
fn v2_protobuf_encodes_the_document() {
    let doc = v2();
    let pb = v2_protobuf(&doc);
    assert_eq!(string_of(&pb, 1), "2.0");
    // Definitions (9) → NamedSchema (1) → Schema.
    let definitions = bytes_of(&pb, 9)[0];
    assert_eq!(
        bytes_of(definitions, 1).len(),
        schemas(&doc).len(),
        "every definition is encoded"
    );
    let pod = named_entry(definitions, 1, "io.k8s.api.core.v1.Pod").expect("Pod definition");
    assert!(string_of(pod, 4).starts_with("Pod is a collection of containers"));
    assert_eq!(string_of(bytes_of(pod, 22)[0], 1), "object");
    assert_eq!(bytes_of(pod, 19).len(), 1, "required: metadata");
    // Vendor extension (31) as NamedAny → Any.yaml (2).
    let gvk = named_entry(pod, 31, "x-kubernetes-group-version-kind").expect("gvk extension");
    let gvk: Value = serde_json::from_slice(bytes_of(gvk, 2)[0]).unwrap();
    assert_eq!(gvk[0]["kind"], "Pod");
    // Properties (25) → NamedSchema; a property that references: `_ref` (1).
    let container = named_entry(definitions, 1, "io.k8s.api.core.v1.Container").unwrap();
    let properties = bytes_of(container, 25)[0];
    let ports = named_entry(properties, 1, "ports").unwrap();
    let merge_key = named_entry(ports, 31, "x-kubernetes-patch-merge-key").unwrap();
    assert_eq!(bytes_of(merge_key, 2)[0], b"\"containerPort\"");
    let items = bytes_of(bytes_of(ports, 23)[0], 1)[0];
    assert_eq!(
        string_of(items, 1),
        "#/definitions/io.k8s.api.core.v1.ContainerPort"
    );

    // Paths (8) → NamedPathItem (2) → PathItem.patch (8) → Operation.
    let paths = bytes_of(&pb, 8)[0];
    let item = named_entry(
        paths,
        2,
        "/apis/apps/v1/namespaces/{namespace}/deployments/{name}",
    )
    .expect("deployment item path");
    let patch = bytes_of(item, 8)[0];
    assert_eq!(string_of(patch, 5), "patchAppsV1NamespacedDeployment");
    let consumes: Vec<String> = bytes_of(patch, 7)
        .into_iter()
        .map(|b| String::from_utf8(b.to_vec()).unwrap())
        .collect();
    assert!(consumes.contains(&"application/strategic-merge-patch+json".to_string()));
    // Parameters (8) → ParametersItem.parameter (1) → Parameter.non_body (2) →
    // NonBodyParameter.query (3) → name (4).
    let query_names: Vec<String> = bytes_of(patch, 8)
        .into_iter()
        .filter_map(|item| bytes_of(item, 1).first().copied())
        .filter_map(|param| bytes_of(param, 2).first().copied())
        .filter_map(|non_body| bytes_of(non_body, 3).first().copied())
        .map(|query| string_of(query, 4))
        .collect();
    assert!(
        query_names.contains(&"fieldValidation".to_string()),
        "{query_names:?}"
    );
    let op_gvk = named_entry(patch, 13, "x-kubernetes-group-version-kind").unwrap();
    let op_gvk: Value = serde_json::from_slice(bytes_of(op_gvk, 2)[0]).unwrap();
    assert_eq!(op_gvk["kind"], "Deployment");
    // Path-level parameters (9): the path parameter sub-schema (4) is required (1 = true).
    let name_param = bytes_of(item, 9)
        .into_iter()
        .map(|item| bytes_of(bytes_of(bytes_of(item, 1)[0], 2)[0], 4))
        .find(|sub| !sub.is_empty())
        .expect("a path parameter")[0];
    assert!(
        fields(name_param)
            .iter()
            .any(|(n, f)| *n == 1 && matches!(f, Field::Varint(1)))
    );
}

/// Writes the documents to the temp dir for inspection with other tools:
/// `cargo test -p api openapi::tests::dump -- --ignored`.
#[test]
#[ignore = "writes files for manual inspection"]
fn dump() {
    let dir = std::env::temp_dir();
    let doc = v2();
    std::fs::write(
        dir.join("openapi-v2.json"),
        serde_json::to_vec_pretty(&doc).unwrap(),
    )
    .unwrap();
    std::fs::write(dir.join("openapi-v2.pb"), v2_protobuf(&doc)).unwrap();
    for (path, doc) in v3_all() {
        let file = format!("openapi-v3-{}.json", path.replace('/', "_"));
        std::fs::write(dir.join(file), serde_json::to_vec_pretty(&doc).unwrap()).unwrap();
    }
}
