//! Table-driven tests with the bodies real `kubectl` sends.

use serde_json::{Value, json};

use super::*;
use crate::resources;

fn resource(plural: &str) -> &'static ResourceInfo {
    let found = resources::all().iter().find(|r| r.plural == plural);
    found.unwrap_or_else(|| panic!("no resource {plural}"))
}

fn apply(
    plural: &str,
    ty: PatchType,
    original: &Value,
    patch: &Value,
) -> Result<Value, PatchError> {
    apply_patch(resource(plural), original, ty, patch.to_string().as_bytes())
}

struct Case {
    name: &'static str,
    plural: &'static str,
    original: Value,
    patch: Value,
    expected: Value,
}

fn check(ty: PatchType, cases: Vec<Case>) {
    for case in cases {
        let got = apply(case.plural, ty, &case.original, &case.patch)
            .unwrap_or_else(|e| panic!("{}: {e}", case.name));
        assert_eq!(
            got,
            case.expected,
            "{}:\n got      {}\n expected {}",
            case.name,
            serde_json::to_string_pretty(&got).unwrap(),
            serde_json::to_string_pretty(&case.expected).unwrap()
        );
    }
}

fn deployment(containers: Value) -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default", "labels": {"app": "web"}},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": containers}
            }
        }
    })
}

fn pod_spec(spec: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": spec})
}

fn template_spec(patch: Value) -> Value {
    json!({"spec": {"template": {"spec": patch}}})
}

#[test]
fn content_types() {
    for (ct, expected) in [
        ("application/json-patch+json", Some(PatchType::Json)),
        ("application/merge-patch+json", Some(PatchType::Merge)),
        (
            "application/strategic-merge-patch+json",
            Some(PatchType::StrategicMerge),
        ),
        ("application/apply-patch+yaml", Some(PatchType::Apply)),
        (
            "application/merge-patch+json; charset=utf-8",
            Some(PatchType::Merge),
        ),
        ("Application/JSON-Patch+JSON", Some(PatchType::Json)),
        ("application/json", None),
        ("", None),
    ] {
        assert_eq!(PatchType::from_content_type(ct), expected, "{ct}");
    }
    for ty in PatchType::all() {
        assert_eq!(PatchType::from_content_type(ty.content_type()), Some(ty));
    }
}

#[test]
fn strategic_merge_patches_from_kubectl() {
    let web = json!({"name": "web", "image": "nginx:1.24", "ports": [{"containerPort": 80}]});
    let sidecar = json!({"name": "sidecar", "image": "busybox", "command": ["sleep", "3600"]});
    check(
        PatchType::StrategicMerge,
        vec![
            Case {
                name: "kubectl label",
                plural: "deployments",
                original: deployment(json!([web])),
                patch: json!({"metadata": {"labels": {"tier": "frontend"}}}),
                expected: {
                    let mut d = deployment(json!([web]));
                    d["metadata"]["labels"]["tier"] = json!("frontend");
                    d
                },
            },
            Case {
                name: "kubectl label app- (null removes the label)",
                plural: "deployments",
                original: deployment(json!([web])),
                patch: json!({"metadata": {"labels": {"app": null}}}),
                expected: {
                    let mut d = deployment(json!([web]));
                    d["metadata"]["labels"] = json!({});
                    d
                },
            },
            Case {
                name: "kubectl annotate on an object without annotations",
                plural: "pods",
                original: pod_spec(json!({"containers": [web]})),
                patch: json!({"metadata": {"annotations": {"note": "x", "gone": null}}}),
                expected: json!({"apiVersion": "v1", "kind": "Pod",
                    "metadata": {"name": "p", "annotations": {"note": "x"}},
                    "spec": {"containers": [web]}}),
            },
            Case {
                name: "kubectl set image keeps the rest of the container",
                plural: "deployments",
                original: deployment(json!([web, sidecar])),
                patch: template_spec(
                    json!({"containers": [{"name": "web", "image": "nginx:1.25"}]}),
                ),
                expected: deployment(json!([
                    {"name": "web", "image": "nginx:1.25", "ports": [{"containerPort": 80}]},
                    sidecar
                ])),
            },
            Case {
                name: "kubectl apply adds a container",
                plural: "deployments",
                original: deployment(json!([web])),
                patch: template_spec(json!({
                    "$setElementOrder/containers": [{"name": "web"}, {"name": "sidecar"}],
                    "containers": [sidecar]
                })),
                expected: deployment(json!([web, sidecar])),
            },
            Case {
                name: "kubectl apply adds a container in front",
                plural: "deployments",
                original: deployment(json!([web])),
                patch: template_spec(json!({
                    "$setElementOrder/containers": [{"name": "sidecar"}, {"name": "web"}],
                    "containers": [sidecar]
                })),
                expected: deployment(json!([sidecar, web])),
            },
            Case {
                name: "kubectl apply removes a container",
                plural: "deployments",
                original: deployment(json!([web, sidecar])),
                patch: template_spec(json!({
                    "$setElementOrder/containers": [{"name": "web"}],
                    "containers": [{"$patch": "delete", "name": "sidecar"}]
                })),
                expected: deployment(json!([web])),
            },
            Case {
                name: "kubectl apply changes a container's image and drops its command",
                plural: "deployments",
                original: deployment(json!([web, sidecar])),
                patch: template_spec(json!({
                    "$setElementOrder/containers": [{"name": "web"}, {"name": "sidecar"}],
                    "containers": [{"name": "sidecar", "image": "busybox:1.36", "command": null}]
                })),
                expected: deployment(json!([web, {"name": "sidecar", "image": "busybox:1.36"}])),
            },
            Case {
                name: "$setElementOrder alone reorders",
                plural: "deployments",
                original: deployment(json!([web, sidecar])),
                patch: template_spec(json!({
                    "$setElementOrder/containers": [{"name": "sidecar"}, {"name": "web"}]
                })),
                expected: deployment(json!([sidecar, web])),
            },
            Case {
                name: "server-only items keep their live position",
                plural: "deployments",
                original: deployment(json!([web, {"name": "injected", "image": "proxy"}, sidecar])),
                patch: template_spec(json!({
                    "$setElementOrder/containers": [{"name": "web"}, {"name": "sidecar"}],
                    "containers": [{"name": "sidecar", "image": "busybox:2"}]
                })),
                expected: deployment(json!([
                    web,
                    {"name": "injected", "image": "proxy"},
                    {"name": "sidecar", "image": "busybox:2", "command": ["sleep", "3600"]}
                ])),
            },
            Case {
                name: "kubectl set env: env merges by name, $patch delete removes one",
                plural: "deployments",
                original: deployment(json!([{"name": "web", "image": "nginx",
                    "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]}])),
                patch: template_spec(json!({"containers": [{"name": "web", "env": [
                    {"$patch": "delete", "name": "B"},
                    {"name": "A", "value": "10"},
                    {"name": "C", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}
                ]}]})),
                expected: deployment(json!([{"name": "web", "image": "nginx", "env": [
                    {"name": "A", "value": "10"},
                    {"name": "C", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}
                ]}])),
            },
            Case {
                name: "container ports merge by containerPort",
                plural: "deployments",
                original: deployment(json!([web])),
                patch: template_spec(json!({"containers": [{"name": "web", "ports": [
                    {"containerPort": 80, "name": "http"}, {"containerPort": 443}
                ]}]})),
                expected: deployment(json!([{"name": "web", "image": "nginx:1.24", "ports": [
                    {"containerPort": 80, "name": "http"}, {"containerPort": 443}
                ]}])),
            },
            Case {
                name: "$patch: replace replaces the whole list",
                plural: "deployments",
                original: deployment(json!([web, sidecar])),
                patch: template_spec(json!({"containers": [
                    {"name": "only", "image": "x"}, {"$patch": "replace"}
                ]})),
                expected: deployment(json!([{"name": "only", "image": "x"}])),
            },
            Case {
                name: "$patch: replace replaces a map",
                plural: "pods",
                original: pod_spec(json!({"nodeSelector": {"a": "1", "b": "2"}})),
                patch: json!({"spec": {"nodeSelector": {"c": "3", "$patch": "replace"}}}),
                expected: pod_spec(json!({"nodeSelector": {"c": "3"}})),
            },
            Case {
                name: "$patch: delete empties a map",
                plural: "pods",
                original: pod_spec(json!({"nodeSelector": {"a": "1"}})),
                patch: json!({"spec": {"nodeSelector": {"$patch": "delete"}}}),
                expected: pod_spec(json!({"nodeSelector": {}})),
            },
            Case {
                name: "$patch: delete of an absent item is a no-op",
                plural: "deployments",
                original: deployment(json!([web])),
                patch: template_spec(json!({"containers": [{"$patch": "delete", "name": "nope"}]})),
                expected: deployment(json!([web])),
            },
            Case {
                name: "$patch: merge is the default",
                plural: "pods",
                original: pod_spec(json!({"nodeSelector": {"a": "1"}})),
                patch: json!({"spec": {"nodeSelector": {"$patch": "merge", "b": "2"}}}),
                expected: pod_spec(json!({"nodeSelector": {"a": "1", "b": "2"}})),
            },
            Case {
                name: "lists without a strategy are replaced (tolerations, args)",
                plural: "pods",
                original: pod_spec(json!({
                    "tolerations": [{"key": "a", "operator": "Exists"}],
                    "containers": [{"name": "c", "image": "i", "args": ["a", "b"]}]
                })),
                patch: json!({"spec": {
                    "tolerations": [{"key": "b", "operator": "Exists"}],
                    "containers": [{"name": "c", "args": ["z"]}]
                }}),
                expected: pod_spec(json!({
                    "tolerations": [{"key": "b", "operator": "Exists"}],
                    "containers": [{"name": "c", "image": "i", "args": ["z"]}]
                })),
            },
            Case {
                name: "finalizers are unioned",
                plural: "configmaps",
                original: json!({"metadata": {"name": "c", "finalizers": ["a", "b"]}}),
                patch: json!({"metadata": {"finalizers": ["b", "c"]}}),
                expected: json!({"metadata": {"name": "c", "finalizers": ["a", "b", "c"]}}),
            },
            Case {
                name: "$deleteFromPrimitiveList removes a finalizer",
                plural: "namespaces",
                original: json!({"metadata": {"name": "n", "finalizers": ["a", "b", "c"]}}),
                patch: json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["b"]}}),
                expected: json!({"metadata": {"name": "n", "finalizers": ["a", "c"]}}),
            },
            Case {
                name: "kubectl apply on a primitive list: order and deletion",
                plural: "configmaps",
                original: json!({"metadata": {"name": "c", "finalizers": ["a", "b", "c"]}}),
                patch: json!({"metadata": {
                    "$setElementOrder/finalizers": ["c", "a", "d"],
                    "$deleteFromPrimitiveList/finalizers": ["b"],
                    "finalizers": ["d"]
                }}),
                expected: json!({"metadata": {"name": "c", "finalizers": ["c", "a", "d"]}}),
            },
            Case {
                name: "service ports merge by port",
                plural: "services",
                original: json!({"spec": {"ports": [
                    {"name": "http", "port": 80, "targetPort": 80},
                    {"name": "https", "port": 443, "targetPort": 443}
                ]}}),
                patch: json!({"spec": {"ports": [
                    {"port": 80, "targetPort": 8080},
                    {"name": "metrics", "port": 9090}
                ]}}),
                // As upstream: patched and new items first, in patch order; a server-only
                // item goes before a patch item only if the live list relates the two.
                expected: json!({"spec": {"ports": [
                    {"name": "http", "port": 80, "targetPort": 8080},
                    {"name": "metrics", "port": 9090},
                    {"name": "https", "port": 443, "targetPort": 443}
                ]}}),
            },
            Case {
                name: "deployment strategy switch with $retainKeys",
                plural: "deployments",
                original: json!({"spec": {"strategy": {"type": "RollingUpdate",
                    "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}}}}),
                patch: json!({"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}}),
                expected: json!({"spec": {"strategy": {"type": "Recreate"}}}),
            },
            Case {
                name: "volume source switch with $retainKeys",
                plural: "pods",
                original: pod_spec(json!({"volumes": [
                    {"name": "data", "emptyDir": {}},
                    {"name": "cfg", "configMap": {"name": "c"}}
                ]})),
                patch: json!({"spec": {"volumes": [
                    {"$retainKeys": ["hostPath", "name"], "name": "data", "hostPath": {"path": "/srv"}}
                ]}}),
                expected: pod_spec(json!({"volumes": [
                    {"name": "data", "hostPath": {"path": "/srv"}},
                    {"name": "cfg", "configMap": {"name": "c"}}
                ]})),
            },
            Case {
                name: "status conditions merge by type",
                plural: "pods",
                original: json!({"status": {"phase": "Pending", "conditions": [
                    {"type": "PodScheduled", "status": "True"},
                    {"type": "Ready", "status": "False"}
                ]}}),
                patch: json!({"status": {"phase": "Running", "conditions": [
                    {"type": "Ready", "status": "True"},
                    {"type": "Initialized", "status": "True"}
                ], "podIPs": [{"ip": "10.0.0.5"}]}}),
                expected: json!({"status": {"phase": "Running", "conditions": [
                    {"type": "PodScheduled", "status": "True"},
                    {"type": "Ready", "status": "True"},
                    {"type": "Initialized", "status": "True"}
                ], "podIPs": [{"ip": "10.0.0.5"}]}}),
            },
            Case {
                name: "node addresses merge by type",
                plural: "nodes",
                original: json!({"status": {"addresses": [
                    {"type": "InternalIP", "address": "10.0.0.1"},
                    {"type": "Hostname", "address": "n1"}
                ]}}),
                patch: json!({"status": {"addresses": [{"type": "InternalIP", "address": "10.0.0.2"}]}}),
                expected: json!({"status": {"addresses": [
                    {"type": "InternalIP", "address": "10.0.0.2"},
                    {"type": "Hostname", "address": "n1"}
                ]}}),
            },
            Case {
                name: "ownerReferences merge by uid",
                plural: "replicasets",
                original: json!({"metadata": {"ownerReferences": [
                    {"uid": "1", "kind": "Deployment", "name": "d", "controller": true}
                ]}}),
                patch: json!({"metadata": {"ownerReferences": [
                    {"uid": "1", "blockOwnerDeletion": true},
                    {"uid": "2", "kind": "Thing", "name": "t"}
                ]}}),
                expected: json!({"metadata": {"ownerReferences": [
                    {"uid": "1", "kind": "Deployment", "name": "d", "controller": true, "blockOwnerDeletion": true},
                    {"uid": "2", "kind": "Thing", "name": "t"}
                ]}}),
            },
            Case {
                name: "kubectl rollout restart",
                plural: "deployments",
                original: deployment(json!([web])),
                patch: json!({"spec": {"template": {"metadata": {"annotations": {
                    "kubectl.kubernetes.io/restartedAt": "2024-01-01T00:00:00Z"}}}}}),
                expected: {
                    let mut d = deployment(json!([web]));
                    d["spec"]["template"]["metadata"]["annotations"] =
                        json!({"kubectl.kubernetes.io/restartedAt": "2024-01-01T00:00:00Z"});
                    d
                },
            },
            Case {
                name: "kubectl rollout pause",
                plural: "deployments",
                original: deployment(json!([web])),
                patch: json!({"spec": {"paused": true}}),
                expected: {
                    let mut d = deployment(json!([web]));
                    d["spec"]["paused"] = json!(true);
                    d
                },
            },
            Case {
                name: "free-form maps merge (configmap data)",
                plural: "configmaps",
                original: json!({"data": {"a": "1", "b": "2"}}),
                patch: json!({"data": {"b": null, "c": "3"}}),
                expected: json!({"data": {"a": "1", "c": "3"}}),
            },
            Case {
                name: "new list with directives is cleaned",
                plural: "deployments",
                original: deployment(json!([{"name": "web", "image": "nginx"}])),
                patch: template_spec(json!({"containers": [{"name": "web", "env": [
                    {"name": "A", "value": "1"}, {"$patch": "delete", "name": "B"}
                ]}]})),
                expected: deployment(json!([{"name": "web", "image": "nginx",
                    "env": [{"name": "A", "value": "1"}]}])),
            },
            Case {
                name: "a type change takes the patch value",
                plural: "configmaps",
                original: json!({"metadata": {"annotations": "oops"}}),
                patch: json!({"metadata": {"annotations": {"a": "b"}}}),
                expected: json!({"metadata": {"annotations": {"a": "b"}}}),
            },
            Case {
                name: "hostAliases by ip and imagePullSecrets by name",
                plural: "pods",
                original: pod_spec(json!({
                    "hostAliases": [{"ip": "1.1.1.1", "hostnames": ["a"]}],
                    "imagePullSecrets": [{"name": "s1"}]
                })),
                patch: json!({"spec": {
                    "hostAliases": [{"ip": "2.2.2.2", "hostnames": ["b"]}],
                    "imagePullSecrets": [{"name": "s2"}]
                }}),
                // New items land before server-only ones, as upstream (the "kubectl patch"
                // task page shows the added container first).
                expected: pod_spec(json!({
                    "hostAliases": [{"ip": "2.2.2.2", "hostnames": ["b"]}, {"ip": "1.1.1.1", "hostnames": ["a"]}],
                    "imagePullSecrets": [{"name": "s2"}, {"name": "s1"}]
                })),
            },
        ],
    );
}

#[test]
fn strategic_merge_patch_errors() {
    let d = deployment(json!([{"name": "web", "image": "nginx"}]));
    let cases: Vec<(&str, Value, u16, &str)> = vec![
        (
            "list item without its merge key",
            template_spec(json!({"containers": [{"image": "x"}]})),
            400,
            "does not contain declared merge key: name",
        ),
        (
            "delete item without its merge key",
            template_spec(json!({"containers": [{"$patch": "delete"}]})),
            400,
            "does not contain declared merge key: name",
        ),
        (
            "unknown directive in a map",
            json!({"metadata": {"labels": {"$patch": "explode"}}}),
            400,
            "unknown patch type",
        ),
        (
            "unknown directive in a list",
            template_spec(json!({"containers": [{"name": "web", "$patch": "explode"}]})),
            400,
            "unknown patch type",
        ),
        (
            "$setElementOrder not matching the patch list",
            template_spec(json!({
                "$setElementOrder/containers": [{"name": "web"}],
                "containers": [{"name": "other", "image": "x"}]
            })),
            400,
            "setElementOrder",
        ),
        (
            "$setElementOrder not a list",
            template_spec(json!({"$setElementOrder/containers": "web"})),
            400,
            "setElementOrder",
        ),
        (
            "$retainKeys not a list",
            json!({"spec": {"strategy": {"$retainKeys": "type", "type": "Recreate"}}}),
            400,
            "retainKeys",
        ),
        (
            "patch content outside $retainKeys",
            json!({"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate",
                "rollingUpdate": {"maxSurge": 1}}}}),
            422,
            "doesn't match retainKeys",
        ),
    ];
    for (name, patch, code, message) in cases {
        let err = apply("deployments", PatchType::StrategicMerge, &d, &patch).expect_err(name);
        assert_eq!(err.status_code(), code, "{name}: {err}");
        assert!(err.to_string().contains(message), "{name}: {err}");
    }
    for body in [&b"{not json"[..], b"[1]", b"\"x\"", b"null"] {
        let err = apply_patch(resource("deployments"), &d, PatchType::StrategicMerge, body)
            .expect_err("malformed body");
        assert_eq!(err.status_code(), 400, "{err}");
        assert_eq!(err.reason(), "BadRequest");
    }
}

#[test]
fn merge_patches() {
    check(
        PatchType::Merge,
        vec![
            Case {
                name: "kubectl scale on the scale subresource",
                plural: "deployments",
                original: json!({"apiVersion": "autoscaling/v1", "kind": "Scale",
                    "metadata": {"name": "web"}, "spec": {"replicas": 1}, "status": {"replicas": 1}}),
                patch: json!({"spec": {"replicas": 5}}),
                expected: json!({"apiVersion": "autoscaling/v1", "kind": "Scale",
                    "metadata": {"name": "web"}, "spec": {"replicas": 5}, "status": {"replicas": 1}}),
            },
            Case {
                name: "null deletes, lists are replaced whole",
                plural: "deployments",
                original: deployment(
                    json!([{"name": "a", "image": "a"}, {"name": "b", "image": "b"}]),
                ),
                patch: json!({"metadata": {"labels": null},
                    "spec": {"template": {"spec": {"containers": [{"name": "b", "image": "b2"}]}}}}),
                expected: json!({"apiVersion": "apps/v1", "kind": "Deployment",
                    "metadata": {"name": "web", "namespace": "default"},
                    "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
                        "template": {"metadata": {"labels": {"app": "web"}},
                            "spec": {"containers": [{"name": "b", "image": "b2"}]}}}}),
            },
            Case {
                name: "directives are plain keys in a merge patch",
                plural: "configmaps",
                original: json!({"data": {"a": "1"}}),
                patch: json!({"data": {"$patch": "delete"}}),
                expected: json!({"data": {"a": "1", "$patch": "delete"}}),
            },
        ],
    );
    let err =
        apply_patch(resource("pods"), &json!({}), PatchType::Merge, b"{").expect_err("bad json");
    assert_eq!(err.status_code(), 400);
    assert!(err.to_string().starts_with("error decoding patch"), "{err}");
}

#[test]
fn json_patches() {
    let original = deployment(json!([{"name": "web", "image": "nginx"}]));
    let ok: Vec<(&str, Value, Value)> = vec![
        (
            "add, replace, remove, test",
            json!([
                {"op": "test", "path": "/spec/replicas", "value": 1},
                {"op": "replace", "path": "/spec/replicas", "value": 3},
                {"op": "add", "path": "/metadata/labels/tier", "value": "web"},
                {"op": "remove", "path": "/metadata/namespace"},
                {"op": "add", "path": "/spec/template/spec/containers/-",
                    "value": {"name": "side", "image": "busybox"}},
                {"op": "replace", "path": "/spec/template/spec/containers/0/image", "value": "nginx:2"}
            ]),
            json!({"apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": "web", "labels": {"app": "web", "tier": "web"}},
                "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
                    "template": {"metadata": {"labels": {"app": "web"}},
                        "spec": {"containers": [{"name": "web", "image": "nginx:2"},
                            {"name": "side", "image": "busybox"}]}}}}),
        ),
        (
            "escaped keys, copy and move",
            json!([
                {"op": "add", "path": "/metadata/annotations", "value": {}},
                {"op": "add", "path": "/metadata/annotations/example.com~1a", "value": "x"},
                {"op": "copy", "from": "/metadata/annotations/example.com~1a", "path": "/metadata/annotations/b"},
                {"op": "move", "from": "/metadata/labels", "path": "/metadata/oldLabels"}
            ]),
            {
                let mut d = original.clone();
                let meta = d["metadata"].as_object_mut().unwrap();
                let labels = meta.shift_remove("labels").unwrap();
                meta.insert(
                    "annotations".into(),
                    json!({"example.com/a": "x", "b": "x"}),
                );
                meta.insert("oldLabels".into(), labels);
                d
            },
        ),
    ];
    for (name, patch, expected) in ok {
        let got = apply("deployments", PatchType::Json, &original, &patch).expect(name);
        assert_eq!(got, expected, "{name}");
    }

    let failing: Vec<(&str, Value, u16, &str)> = vec![
        (
            "test failure",
            json!([{"op": "replace", "path": "/spec/replicas", "value": 9},
                   {"op": "test", "path": "/spec/replicas", "value": 1}]),
            422,
            "testing value /spec/replicas failed",
        ),
        (
            "remove of a missing path",
            json!([{"op": "remove", "path": "/spec/paused"}]),
            422,
            "remove operation does not apply: doc is missing path: /spec/paused",
        ),
        (
            "replace of a missing path",
            json!([{"op": "replace", "path": "/status/replicas", "value": 1}]),
            422,
            "replace operation does not apply",
        ),
        (
            "move from a missing path",
            json!([{"op": "move", "from": "/nope", "path": "/x"}]),
            422,
            "doc is missing from path: /nope",
        ),
        (
            "unknown operation",
            json!([{"op": "frobnicate", "path": "/x"}]),
            400,
            "error decoding patch",
        ),
        (
            "not a list",
            json!({"op": "add", "path": "/x", "value": 1}),
            400,
            "error decoding patch",
        ),
    ];
    for (name, patch, code, message) in failing {
        let err = apply("deployments", PatchType::Json, &original, &patch).expect_err(name);
        assert_eq!(err.status_code(), code, "{name}: {err}");
        assert!(err.to_string().contains(message), "{name}: {err}");
    }
}

#[test]
fn json_patch_operation_limit() {
    let ops: Vec<Value> = (0..=MAX_JSON_PATCH_OPERATIONS)
        .map(|_| json!({"op": "test", "path": "/a", "value": 1}))
        .collect();
    let err = apply(
        "configmaps",
        PatchType::Json,
        &json!({"a": 1}),
        &Value::Array(ops),
    )
    .expect_err("too many");
    assert_eq!(err.status_code(), 413);
}

#[test]
fn apply_through_apply_patch_records_the_default_manager() {
    let out = apply_patch(
        resource("configmaps"),
        &json!({"metadata": {"name": "c"}, "data": {"a": "1"}}),
        PatchType::Apply,
        b"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\ndata:\n  b: \"2\"\n",
    )
    .unwrap();
    assert_eq!(out["data"], json!({"a": "1", "b": "2"}));
    assert_eq!(
        out["metadata"]["managedFields"][0]["manager"],
        DEFAULT_APPLY_MANAGER
    );
    assert_eq!(
        out["metadata"]["managedFields"][0]["fieldsV1"],
        json!({"f:data": {"f:b": {}}})
    );
}
