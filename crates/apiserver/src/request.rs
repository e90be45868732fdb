//! Parsing a request path into what it addresses, as upstream's RequestInfo does.

use std::collections::HashMap;

use api::ResourceInfo;
use http::Method;

use crate::error::{ApiError, ApiResult};

/// What a resource request addresses.
#[derive(Debug, Clone)]
pub struct Target {
    pub resource: &'static ResourceInfo,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub subresource: Option<String>,
    /// Addressed through the deprecated `/watch/` path prefix.
    pub watch_path: bool,
}

/// The verb, as RBAC and metrics name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    Get,
    List,
    Watch,
    Create,
    Update,
    Patch,
    Delete,
    DeleteCollection,
}

impl Verb {
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Get => "get",
            Verb::List => "list",
            Verb::Watch => "watch",
            Verb::Create => "create",
            Verb::Update => "update",
            Verb::Patch => "patch",
            Verb::Delete => "delete",
            Verb::DeleteCollection => "deletecollection",
        }
    }
}

/// Where a path leads.
#[derive(Debug)]
pub enum Route {
    /// `/api`, `/apis`, `/api/v1`, `/apis/<group>`, `/apis/<group>/<version>`.
    Discovery(DiscoveryPath),
    Resource(Target),
    /// A path under /api or /apis that names nothing we serve.
    NotFound,
    /// Anything else (`/healthz`, `/version`, `/openapi/...`, `/metrics`).
    NonResource,
}

#[derive(Debug, PartialEq, Eq)]
pub enum DiscoveryPath {
    Api,
    Apis,
    Group(String),
    GroupVersion(String, String),
}

pub fn route(path: &str) -> Route {
    let trimmed = path.trim_end_matches('/');
    let segments: Vec<&str> = trimmed.split('/').skip(1).collect();
    let (group, version, rest) = match segments.as_slice() {
        ["api"] => return Route::Discovery(DiscoveryPath::Api),
        ["apis"] => return Route::Discovery(DiscoveryPath::Apis),
        ["api", v] => {
            return Route::Discovery(DiscoveryPath::GroupVersion(String::new(), v.to_string()));
        }
        ["apis", g] => return Route::Discovery(DiscoveryPath::Group(g.to_string())),
        ["apis", g, v] => {
            return Route::Discovery(DiscoveryPath::GroupVersion(g.to_string(), v.to_string()));
        }
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return Route::NonResource,
    };
    let mut parts: &[&str] = rest;
    let watch_path = parts.first() == Some(&"watch");
    if watch_path {
        parts = &parts[1..];
    }
    let mut namespace = None;
    if parts.first() == Some(&"namespaces") && parts.len() > 1 {
        namespace = Some(parts[1].to_string());
        if parts.len() > 2 && !matches!(parts[2], "status" | "finalize") {
            parts = &parts[2..];
        } else {
            // `/namespaces/<name>[/status]` addresses the namespace itself.
            namespace = None;
        }
    }
    let Some(resource) = parts
        .first()
        .and_then(|plural| api::resources::lookup(group, version, plural))
    else {
        return Route::NotFound;
    };
    if parts.len() > 3 {
        return Route::NotFound;
    }
    if namespace.is_some() && !resource.namespaced {
        return Route::NotFound;
    }
    let name = parts.get(1).map(|s| percent_decode(s));
    let subresource = parts.get(2).map(|s| s.to_string());
    if let Some(sub) = &subresource
        && !resource.has_subresource(sub)
    {
        return Route::NotFound;
    }
    Route::Resource(Target {
        resource,
        namespace,
        name,
        subresource,
        watch_path,
    })
}

impl Target {
    pub fn verb(&self, method: &Method, query: &Query) -> ApiResult<Verb> {
        let watch = self.watch_path || query.flag("watch");
        let verb = match (method.as_str(), self.name.is_some()) {
            ("GET", false) if watch => Verb::Watch,
            ("GET", false) => Verb::List,
            ("GET", true) if watch => Verb::Watch,
            ("GET", true) => Verb::Get,
            ("POST", false) => Verb::Create,
            ("POST", true) if self.subresource.is_some() => Verb::Create,
            ("PUT", true) => Verb::Update,
            ("PATCH", true) => Verb::Patch,
            ("DELETE", true) => Verb::Delete,
            ("DELETE", false) => Verb::DeleteCollection,
            _ => {
                return Err(ApiError::method_not_allowed(format!(
                    "the server does not allow this method on the requested resource ({} {})",
                    method,
                    self.resource.group_resource()
                )));
            }
        };
        Ok(verb)
    }
}

/// Decoded query parameters (last value wins, as Go's url.Values.Get returns the first; kubectl sends each once).
#[derive(Debug, Default, Clone)]
pub struct Query(pub HashMap<String, String>);

impl Query {
    pub fn parse(query: Option<&str>) -> Self {
        let mut map = HashMap::new();
        for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            map.entry(percent_decode(k))
                .or_insert_with(|| percent_decode(v));
        }
        Query(map)
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .get(key)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    /// `true`/`1` as Go's strconv.ParseBool accepts them.
    pub fn flag(&self, key: &str) -> bool {
        matches!(
            self.get(key),
            Some("1" | "t" | "T" | "true" | "TRUE" | "True")
        )
    }

    pub fn int(&self, key: &str) -> ApiResult<Option<i64>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v.parse().map(Some).map_err(|_| {
                ApiError::bad_request(format!(
                    "invalid value {v:?} for query parameter {key}: not an integer"
                ))
            }),
        }
    }
}

/// Decode `%XX` escapes and `+` (form encoding, as Go's query parser does).
pub fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                    }
                    None => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(path: &str) -> Target {
        match route(path) {
            Route::Resource(t) => t,
            other => panic!("{path}: {other:?}"),
        }
    }

    #[test]
    fn routes() {
        let t = target("/api/v1/namespaces/default/pods/web-1/status");
        assert_eq!(t.resource.plural, "pods");
        assert_eq!(t.namespace.as_deref(), Some("default"));
        assert_eq!(t.name.as_deref(), Some("web-1"));
        assert_eq!(t.subresource.as_deref(), Some("status"));

        let t = target("/api/v1/namespaces/kube-system");
        assert_eq!(t.resource.plural, "namespaces");
        assert_eq!(t.name.as_deref(), Some("kube-system"));
        assert!(t.namespace.is_none());

        let t = target("/api/v1/namespaces/foo/finalize");
        assert_eq!(t.name.as_deref(), Some("foo"));
        assert_eq!(t.subresource.as_deref(), Some("finalize"));

        let t = target("/apis/apps/v1/deployments");
        assert!(t.namespace.is_none() && t.name.is_none());
        assert!(matches!(route("/apis/apps/v1/nothings"), Route::NotFound));
        assert!(matches!(
            route("/api/v1/namespaces/x/pods/a/nope"),
            Route::NotFound
        ));
        assert!(matches!(
            route("/api/v1/namespaces/x/nodes"),
            Route::NotFound
        ));
        assert_eq!(
            match route("/apis/apps/v1") {
                Route::Discovery(d) => d,
                _ => panic!(),
            },
            DiscoveryPath::GroupVersion("apps".into(), "v1".into())
        );
        assert!(matches!(route("/healthz"), Route::NonResource));
        let t = target("/api/v1/watch/namespaces/default/pods/web");
        assert!(t.watch_path);
        assert_eq!(
            t.verb(&Method::GET, &Query::default()).unwrap(),
            Verb::Watch
        );
        assert_eq!(t.name.as_deref(), Some("web"));
    }

    #[test]
    fn query_decoding() {
        let q = Query::parse(Some(
            "labelSelector=app%3Dweb%2Ctier+in+%28a%29&watch=1&limit=5",
        ));
        assert_eq!(q.get("labelSelector"), Some("app=web,tier in (a)"));
        assert!(q.flag("watch"));
        assert_eq!(q.int("limit").unwrap(), Some(5));
        assert!(q.int("watch").is_ok());
        assert!(Query::parse(Some("limit=x")).int("limit").is_err());
    }
}
