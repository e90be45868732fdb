//! Discovery documents, legacy (`/api`, `/apis`, `/apis/<g>/<v>`) and aggregated
//! (`apidiscovery.k8s.io/v2`), all derived from the resource table.

use api::ResourceInfo;
use serde_json::{Value, json};

/// The media type kubectl asks for to get aggregated discovery.
pub const AGGREGATED_V2: &str =
    "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";
/// The older form kubectl 1.27 … 1.29 ask for.
pub const AGGREGATED_V2BETA1: &str =
    "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList";

/// The aggregated discovery version the client prefers, if any: the first media type in
/// `Accept` that we serve decides, as content negotiation does.
pub fn negotiate_aggregated(accept: &str) -> Option<&'static str> {
    for part in accept.split(',') {
        let params: Vec<&str> = part.split(';').map(str::trim).collect();
        let media = params.first().copied().unwrap_or("");
        let has = |p: &str| params.contains(&p);
        if has("as=APIGroupDiscoveryList") && has("g=apidiscovery.k8s.io") {
            if has("v=v2") {
                return Some("v2");
            }
            if has("v=v2beta1") {
                return Some("v2beta1");
            }
            continue;
        }
        if matches!(media, "application/json" | "*/*" | "application/*") {
            return None;
        }
    }
    None
}

/// Kind, group, version and verbs of a subresource as discovery reports them.
fn subresource_shape(
    r: &ResourceInfo,
    sub: &str,
) -> (
    &'static str,
    &'static str,
    &'static str,
    &'static [&'static str],
) {
    let kind: &'static str = r.kind;
    match sub {
        "status" => ("", "", kind, &["get", "patch", "update"]),
        "scale" => ("autoscaling", "v1", "Scale", &["get", "patch", "update"]),
        "binding" => ("", "v1", "Binding", &["create"]),
        "eviction" => ("policy", "v1", "Eviction", &["create"]),
        "log" => ("", "v1", "Pod", &["get"]),
        "exec" => ("", "v1", "PodExecOptions", &["create", "get"]),
        "attach" => ("", "v1", "PodAttachOptions", &["create", "get"]),
        "portforward" => ("", "v1", "PodPortForwardOptions", &["create", "get"]),
        "finalize" => ("", "", kind, &["update"]),
        _ => ("", "", kind, &["get"]),
    }
}

fn served(group: &str, version: &str) -> impl Iterator<Item = &'static ResourceInfo> {
    let group = group.to_string();
    let version = version.to_string();
    api::resources::all()
        .iter()
        .filter(move |r| r.group == group && r.version == version)
}

pub fn api_versions(server_address: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}],
    })
}

fn api_group(name: &str, versions: &[&str]) -> Value {
    let versions: Vec<Value> = versions
        .iter()
        .map(|v| json!({"groupVersion": format!("{name}/{v}"), "version": v}))
        .collect();
    json!({"name": name, "versions": versions.clone(), "preferredVersion": versions[0]})
}

pub fn api_group_list() -> Value {
    let groups: Vec<Value> = api::resources::groups()
        .into_iter()
        .filter(|(g, _)| !g.is_empty())
        .map(|(g, versions)| api_group(g, &versions))
        .chain([crate::metrics_api::api_group()])
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

pub fn api_group_doc(group: &str) -> Option<Value> {
    if group == crate::metrics_api::GROUP {
        let mut doc = crate::metrics_api::api_group();
        doc["kind"] = json!("APIGroup");
        doc["apiVersion"] = json!("v1");
        return Some(doc);
    }
    let (_, versions) = api::resources::groups()
        .into_iter()
        .find(|(g, _)| *g == group && !g.is_empty())?;
    let mut doc = api_group(group, &versions);
    doc["kind"] = json!("APIGroup");
    doc["apiVersion"] = json!("v1");
    Some(doc)
}

pub fn api_resource_list(group: &str, version: &str) -> Option<Value> {
    if group == crate::metrics_api::GROUP {
        return (version == crate::metrics_api::VERSION)
            .then(crate::metrics_api::api_resource_list);
    }
    let mut resources = Vec::new();
    for r in served(group, version) {
        let mut entry = json!({
            "name": r.plural,
            "singularName": r.singular,
            "namespaced": r.namespaced,
            "kind": r.kind,
            "verbs": r.verbs(),
        });
        if !r.short_names.is_empty() {
            entry["shortNames"] = json!(r.short_names);
        }
        if !r.categories.is_empty() {
            entry["categories"] = json!(r.categories);
        }
        resources.push(entry);
        for sub in r.subresources {
            let (g, v, kind, verbs) = subresource_shape(r, sub);
            let mut entry = json!({
                "name": format!("{}/{}", r.plural, sub),
                "singularName": "",
                "namespaced": r.namespaced,
                "kind": kind,
                "verbs": verbs,
            });
            if !g.is_empty() || !v.is_empty() {
                entry["group"] = json!(g);
                entry["version"] = json!(v);
            }
            resources.push(entry);
        }
    }
    if resources.is_empty() {
        return None;
    }
    let group_version = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Some(
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": resources}),
    )
}

fn aggregated_version(group: &str, version: &str) -> Value {
    let resources: Vec<Value> = served(group, version)
        .map(|r| {
            let subresources: Vec<Value> = r
                .subresources
                .iter()
                .map(|sub| {
                    let (g, v, kind, verbs) = subresource_shape(r, sub);
                    let (g, v) = if g.is_empty() && v.is_empty() { (group, version) } else { (g, v) };
                    json!({"subresource": sub, "responseKind": {"group": g, "version": v, "kind": kind}, "verbs": verbs})
                })
                .collect();
            let mut entry = json!({
                "resource": r.plural,
                "responseKind": {"group": group, "version": version, "kind": r.kind},
                "scope": if r.namespaced { "Namespaced" } else { "Cluster" },
                "singularResource": r.singular,
                "verbs": r.verbs(),
            });
            if !r.short_names.is_empty() {
                entry["shortNames"] = json!(r.short_names);
            }
            if !r.categories.is_empty() {
                entry["categories"] = json!(r.categories);
            }
            if !subresources.is_empty() {
                entry["subresources"] = Value::Array(subresources);
            }
            entry
        })
        .collect();
    json!({"version": version, "resources": resources, "freshness": "Current"})
}

/// `/api` (core only) or `/apis` (every named group) as an `APIGroupDiscoveryList`.
pub fn aggregated(core: bool, version: &str) -> Value {
    let items: Vec<Value> = api::resources::groups()
        .into_iter()
        .filter(|(g, _)| g.is_empty() == core)
        .map(|(g, versions)| {
            let versions: Vec<Value> = versions.iter().map(|v| aggregated_version(g, v)).collect();
            let metadata = if g.is_empty() {
                json!({"creationTimestamp": null})
            } else {
                json!({"name": g, "creationTimestamp": null})
            };
            json!({"metadata": metadata, "versions": versions})
        })
        .chain((!core).then(crate::metrics_api::aggregated_group))
        .collect();
    json!({"kind": "APIGroupDiscoveryList", "apiVersion": format!("apidiscovery.k8s.io/{version}"), "metadata": {}, "items": items})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legacy_documents() {
        let core = api_resource_list("", "v1").unwrap();
        let names: Vec<&str> = core["resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["name"].as_str().unwrap())
            .collect();
        assert!(
            names.contains(&"pods")
                && names.contains(&"pods/status")
                && names.contains(&"pods/binding")
        );
        let scale = api_resource_list("apps", "v1").unwrap()["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == "deployments/scale")
            .cloned()
            .unwrap();
        assert_eq!(scale["kind"], "Scale");
        assert_eq!(scale["group"], "autoscaling");
        let groups = api_group_list();
        let autoscaling = groups["groups"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["name"] == "autoscaling")
            .unwrap();
        assert_eq!(autoscaling["preferredVersion"]["version"], "v2");
        assert!(api_resource_list("nope", "v1").is_none());
        assert!(api_group_doc("apps").is_some());
    }

    #[test]
    fn negotiates_the_aggregated_version() {
        assert_eq!(negotiate_aggregated(AGGREGATED_V2), Some("v2"));
        let kubectl_127 = "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json";
        assert_eq!(negotiate_aggregated(kubectl_127), Some("v2beta1"));
        let kubectl_132 = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json";
        assert_eq!(negotiate_aggregated(kubectl_132), Some("v2"));
        assert_eq!(negotiate_aggregated("application/json"), None);
        assert_eq!(negotiate_aggregated(""), None);
    }

    #[test]
    fn aggregated_documents() {
        let apis = aggregated(false, "v2");
        let items = apis["items"].as_array().unwrap();
        assert!(items.iter().all(|i| i["metadata"]["name"].is_string()));
        let core = aggregated(true, "v2");
        assert_eq!(core["items"].as_array().unwrap().len(), 1);
        let pods = core["items"][0]["versions"][0]["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["resource"] == "pods")
            .unwrap();
        assert_eq!(pods["scope"], "Namespaced");
        assert_eq!(pods["shortNames"][0], "po");
    }
}
