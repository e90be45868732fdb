//! A container's environment: `env` (values, configMapKeyRef, secretKeyRef, fieldRef,
//! resourceFieldRef), `envFrom`, and the Service variables (`enableServiceLinks`, and always the
//! `kubernetes` Service's `KUBERNETES_SERVICE_HOST`/`PORT`).
//!
//! Order of the result: Service variables, then `envFrom`, then `env`; a later definition of a
//! name replaces the value of an earlier one (in its place).

use std::collections::HashMap;
use std::net::IpAddr;

use k8s_openapi::api::core::v1::{
    ConfigMap, Container, Node, ObjectFieldSelector, Pod, Secret, Service,
};
use kube::api::ListParams;

use super::downward;

/// Facts about the running pod that fieldRefs read.
#[derive(Debug, Clone)]
pub struct EnvContext {
    pub node_name: String,
    pub node_ip: IpAddr,
    pub pod_ips: Vec<IpAddr>,
}

/// A missing ConfigMap/Secret or key (not optional): the kubelet reports
/// CreateContainerConfigError with this message, as upstream (`configmap "x" not found`,
/// `couldn't find key K in ConfigMap ns/x`).
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct EnvError {
    pub message: String,
}

fn env_err(message: impl Into<String>) -> EnvError {
    EnvError {
        message: message.into(),
    }
}

pub async fn container_env(
    client: &kube::Client,
    pod: &Pod,
    container: &Container,
    ctx: &EnvContext,
) -> Result<Vec<(String, String)>, EnvError> {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let enable_service_links = pod
        .spec
        .as_ref()
        .and_then(|s| s.enable_service_links)
        .unwrap_or(true);

    let mut env = OrderedEnv::default();
    for (k, v) in service_env(&fetch_services(client, namespace, enable_service_links).await?) {
        env.set(k, v);
    }

    let mut sources = Sources {
        client,
        namespace,
        config_maps: HashMap::new(),
        secrets: HashMap::new(),
    };

    for from in container.env_from.iter().flatten() {
        let prefix = from.prefix.as_deref().unwrap_or("");
        let mut entries: Vec<(String, String)> = Vec::new();
        let kind;
        let name;
        if let Some(r) = &from.config_map_ref {
            kind = "configMap";
            name = r.name.as_str();
            match sources.config_map(name).await? {
                Some(cm) => entries.extend(
                    cm.data
                        .iter()
                        .flatten()
                        .map(|(k, v)| (k.clone(), v.clone())),
                ),
                None if r.optional == Some(true) => continue,
                None => return Err(env_err(format!("configmap {name:?} not found"))),
            }
        } else if let Some(r) = &from.secret_ref {
            kind = "secret";
            name = r.name.as_str();
            match sources.secret(name).await? {
                Some(s) => entries.extend(
                    s.data
                        .iter()
                        .flatten()
                        .map(|(k, v)| (k.clone(), String::from_utf8_lossy(&v.0).into_owned())),
                ),
                None if r.optional == Some(true) => continue,
                None => return Err(env_err(format!("secret {name:?} not found"))),
            }
        } else {
            continue;
        }
        let mut invalid = Vec::new();
        for (k, v) in entries {
            let key = format!("{prefix}{k}");
            if !api::validation::names::is_env_var_name(&key).is_empty() {
                invalid.push(key);
                continue;
            }
            env.set(key, v);
        }
        if !invalid.is_empty() {
            invalid.sort();
            tracing::warn!(
                pod = pod.metadata.name.as_deref().unwrap_or(""),
                "keys [{}] from the EnvFrom {kind} {namespace}/{name} were skipped since they are considered invalid environment variable names",
                invalid.join(", ")
            );
        }
    }

    let mut allocatable: Option<downward::Allocatable> = None;
    for var in container.env.iter().flatten() {
        let value = var.value.as_deref().unwrap_or("");
        let value = if !value.is_empty() {
            expand(value, |name| env.get(name).map(str::to_string))
        } else if let Some(from) = &var.value_from {
            if let Some(fs) = &from.field_ref {
                field_ref_value(fs, pod, ctx).map_err(env_err)?
            } else if let Some(rs) = &from.resource_field_ref {
                if allocatable.is_none() && downward::needs_allocatable(rs) {
                    allocatable = Some(
                        fetch_node_allocatable(client, &ctx.node_name)
                            .await
                            .map_err(env_err)?,
                    );
                }
                let target = match rs.container_name.as_deref() {
                    Some(n) if !n.is_empty() => downward::find_container(pod, n)
                        .ok_or_else(|| env_err(format!("container {n} not found")))?,
                    _ => container,
                };
                let target = match &allocatable {
                    Some(a) => downward::with_default_limits(target, a),
                    None => target.clone(),
                };
                downward::container_resource_value(rs, &target).map_err(env_err)?
            } else if let Some(r) = &from.config_map_key_ref {
                let optional = r.optional == Some(true);
                let Some(cm) = sources.config_map(&r.name).await? else {
                    if optional {
                        continue;
                    }
                    return Err(env_err(format!("configmap {:?} not found", r.name)));
                };
                match cm.data.as_ref().and_then(|d| d.get(&r.key)) {
                    Some(v) => v.clone(),
                    None if optional => continue,
                    None => {
                        return Err(env_err(format!(
                            "couldn't find key {} in ConfigMap {namespace}/{}",
                            r.key, r.name
                        )));
                    }
                }
            } else if let Some(r) = &from.secret_key_ref {
                let optional = r.optional == Some(true);
                let Some(secret) = sources.secret(&r.name).await? else {
                    if optional {
                        continue;
                    }
                    return Err(env_err(format!("secret {:?} not found", r.name)));
                };
                match secret.data.as_ref().and_then(|d| d.get(&r.key)) {
                    Some(v) => String::from_utf8_lossy(&v.0).into_owned(),
                    None if optional => continue,
                    None => {
                        return Err(env_err(format!(
                            "couldn't find key {} in Secret {namespace}/{}",
                            r.key, r.name
                        )));
                    }
                }
            } else {
                String::new()
            }
        } else {
            String::new()
        };
        env.set(var.name.clone(), value);
    }
    Ok(env.into_vec())
}

/// The environment that can be computed from the pod alone (literal values with `$(VAR)`
/// expansion, and pod/node field refs): what a `subPathExpr` can use when the full environment
/// is not at hand.
pub fn static_env(pod: &Pod, container: &Container) -> Vec<(String, String)> {
    let status = pod.status.as_ref();
    let pod_ips: Vec<IpAddr> = status
        .and_then(|s| s.pod_ips.as_ref())
        .map(|ips| ips.iter().filter_map(|ip| ip.ip.parse().ok()).collect())
        .unwrap_or_default();
    let host_ip = status
        .and_then(|s| s.host_ip.as_deref())
        .and_then(|ip| ip.parse().ok());
    let ctx = EnvContext {
        node_name: pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .unwrap_or_default(),
        node_ip: host_ip.unwrap_or(IpAddr::from([0, 0, 0, 0])),
        pod_ips,
    };
    let mut env = OrderedEnv::default();
    for var in container.env.iter().flatten() {
        let value = var.value.as_deref().unwrap_or("");
        if !value.is_empty() {
            let v = expand(value, |name| env.get(name).map(str::to_string));
            env.set(var.name.clone(), v);
        } else if let Some(fs) = var.value_from.as_ref().and_then(|f| f.field_ref.as_ref()) {
            let host_field = fs.field_path.starts_with("status.host");
            if host_field && host_ip.is_none() {
                continue;
            }
            if let Ok(v) = field_ref_value(fs, pod, &ctx) {
                env.set(var.name.clone(), v);
            }
        } else if var.value_from.is_none() {
            env.set(var.name.clone(), String::new());
        }
    }
    env.into_vec()
}

/// Names in insertion order; setting an existing name replaces its value in place.
#[derive(Default)]
struct OrderedEnv {
    vars: Vec<(String, String)>,
    index: HashMap<String, usize>,
}

impl OrderedEnv {
    fn set(&mut self, name: String, value: String) {
        match self.index.get(&name) {
            Some(&i) => self.vars[i].1 = value,
            None => {
                self.index.insert(name.clone(), self.vars.len());
                self.vars.push((name, value));
            }
        }
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.index.get(name).map(|&i| self.vars[i].1.as_str())
    }

    fn into_vec(self) -> Vec<(String, String)> {
        self.vars
    }
}

/// ConfigMaps and Secrets read once per call.
struct Sources<'a> {
    client: &'a kube::Client,
    namespace: &'a str,
    config_maps: HashMap<String, Option<ConfigMap>>,
    secrets: HashMap<String, Option<Secret>>,
}

impl Sources<'_> {
    async fn config_map(&mut self, name: &str) -> Result<Option<&ConfigMap>, EnvError> {
        if !self.config_maps.contains_key(name) {
            let cm = super::get_namespaced::<ConfigMap>(self.client, self.namespace, name)
                .await
                .map_err(env_err)?;
            self.config_maps.insert(name.to_string(), cm);
        }
        Ok(self.config_maps[name].as_ref())
    }

    async fn secret(&mut self, name: &str) -> Result<Option<&Secret>, EnvError> {
        if !self.secrets.contains_key(name) {
            let s = super::get_namespaced::<Secret>(self.client, self.namespace, name)
                .await
                .map_err(env_err)?;
            self.secrets.insert(name.to_string(), s);
        }
        Ok(self.secrets[name].as_ref())
    }
}

/// The Services whose variables the pod sees: `default/kubernetes` always, and every Service of
/// the pod's namespace when `enableServiceLinks` (a same-named one there wins over the master's).
async fn fetch_services(
    client: &kube::Client,
    namespace: &str,
    enable_service_links: bool,
) -> Result<Vec<Service>, EnvError> {
    let list_failed = |e: kube::Error| {
        env_err(format!(
            "failed to list services when setting up env vars: {e}"
        ))
    };
    let mut by_name: std::collections::BTreeMap<String, Service> = Default::default();
    let master = kube::Api::<Service>::namespaced(client.clone(), "default")
        .get_opt("kubernetes")
        .await
        .map_err(list_failed)?;
    if let Some(m) = master
        && is_service_ip_set(&m)
    {
        by_name.insert("kubernetes".to_string(), m);
    }
    if enable_service_links {
        let list = kube::Api::<Service>::namespaced(client.clone(), namespace)
            .list(&ListParams::default())
            .await
            .map_err(list_failed)?;
        for svc in list.items {
            if is_service_ip_set(&svc) {
                by_name.insert(svc.metadata.name.clone().unwrap_or_default(), svc);
            }
        }
    }
    Ok(by_name.into_values().collect())
}

fn is_service_ip_set(svc: &Service) -> bool {
    let ip = svc
        .spec
        .as_ref()
        .and_then(|s| s.cluster_ip.as_deref())
        .unwrap_or("");
    !ip.is_empty() && ip != "None"
}

/// `my-svc` -> `MY_SVC`.
pub fn service_env_name(name: &str) -> String {
    name.replace('-', "_").to_uppercase()
}

/// The variables of these Services, as upstream's `FromServices` (docker-link style included):
/// `<NAME>_SERVICE_HOST`, `<NAME>_SERVICE_PORT`, `<NAME>_SERVICE_PORT_<PORTNAME>`, `<NAME>_PORT`,
/// `<NAME>_PORT_<port>_<PROTO>{,_PROTO,_PORT,_ADDR}`.
pub fn service_env(services: &[Service]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for svc in services {
        if !is_service_ip_set(svc) {
            continue;
        }
        let spec = svc.spec.as_ref().expect("a service with an IP has a spec");
        let ip = spec.cluster_ip.clone().unwrap_or_default();
        let ports = spec.ports.as_deref().unwrap_or(&[]);
        let prefix = service_env_name(svc.metadata.name.as_deref().unwrap_or(""));
        out.push((format!("{prefix}_SERVICE_HOST"), ip.clone()));
        let Some(first) = ports.first() else {
            continue;
        };
        let port_var = format!("{prefix}_SERVICE_PORT");
        out.push((port_var.clone(), first.port.to_string()));
        for p in ports {
            if let Some(n) = p.name.as_deref().filter(|n| !n.is_empty()) {
                out.push((
                    format!("{port_var}_{}", service_env_name(n)),
                    p.port.to_string(),
                ));
            }
        }
        let host_port = |port: i32| match ip.parse::<IpAddr>() {
            Ok(IpAddr::V6(_)) => format!("[{ip}]:{port}"),
            _ => format!("{ip}:{port}"),
        };
        for (i, p) in ports.iter().enumerate() {
            let protocol = p.protocol.as_deref().unwrap_or("TCP");
            let lower = protocol.to_lowercase();
            let url = format!("{lower}://{}", host_port(p.port));
            if i == 0 {
                out.push((format!("{prefix}_PORT"), url.clone()));
            }
            let pp = format!("{prefix}_PORT_{}_{}", p.port, protocol.to_uppercase());
            out.push((pp.clone(), url));
            out.push((format!("{pp}_PROTO"), lower));
            out.push((format!("{pp}_PORT"), p.port.to_string()));
            out.push((format!("{pp}_ADDR"), ip.clone()));
        }
    }
    out
}

/// Upstream's `$(VAR)` expansion: `$(NAME)` is replaced by `mapping(NAME)` (left as written when
/// unknown), `$$` is an escaped `$`, any other `$` stays as is.
pub fn expand(input: &str, mut mapping: impl FnMut(&str) -> Option<String>) -> String {
    let bytes = input.as_bytes();
    let mut out: Vec<u8> = Vec::with_capacity(bytes.len());
    let mut checkpoint = 0;
    let mut cursor = 0;
    while cursor < bytes.len() {
        if bytes[cursor] == b'$' && cursor + 1 < bytes.len() {
            out.extend_from_slice(&bytes[checkpoint..cursor]);
            let rest = &bytes[cursor + 1..];
            let advance = match rest[0] {
                b'$' => {
                    out.push(b'$');
                    1
                }
                b'(' => match rest.iter().position(|&b| b == b')') {
                    Some(close) => {
                        let name = String::from_utf8_lossy(&rest[1..close]);
                        match mapping(&name) {
                            Some(v) => out.extend_from_slice(v.as_bytes()),
                            None => {
                                out.extend_from_slice(b"$(");
                                out.extend_from_slice(name.as_bytes());
                                out.push(b')');
                            }
                        }
                        close + 1
                    }
                    None => {
                        // An unclosed reference: kept literally.
                        out.extend_from_slice(b"$(");
                        1
                    }
                },
                other => {
                    out.push(b'$');
                    out.push(other);
                    1
                }
            };
            cursor += advance;
            checkpoint = cursor + 1;
        }
        cursor += 1;
    }
    out.extend_from_slice(&bytes[checkpoint.min(bytes.len())..]);
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// Which field paths a `fieldRef` may name, as upstream's `ConvertDownwardAPIFieldLabel`.
fn convert_field_label(api_version: Option<&str>, path: &str) -> Result<String, String> {
    let version = api_version.filter(|v| !v.is_empty()).unwrap_or("v1");
    if version != "v1" {
        return Err(format!("unsupported pod version: {version}"));
    }
    if let Some((p, _)) = downward::split_subscript(path) {
        return match p {
            "metadata.annotations" | "metadata.labels" => Ok(path.to_string()),
            _ => Err(format!("field label does not support subscript: {path}")),
        };
    }
    match path {
        "metadata.annotations"
        | "metadata.labels"
        | "metadata.name"
        | "metadata.namespace"
        | "metadata.uid"
        | "spec.nodeName"
        | "spec.restartPolicy"
        | "spec.serviceAccountName"
        | "spec.schedulerName"
        | "status.phase"
        | "status.hostIP"
        | "status.hostIPs"
        | "status.podIP"
        | "status.podIPs" => Ok(path.to_string()),
        "spec.host" => Ok("spec.nodeName".to_string()),
        _ => Err(format!("field label not supported: {path}")),
    }
}

/// The value of a `fieldRef` for an env var.
pub fn field_ref_value(
    fs: &ObjectFieldSelector,
    pod: &Pod,
    ctx: &EnvContext,
) -> Result<String, String> {
    let path = convert_field_label(fs.api_version.as_deref(), &fs.field_path)?;
    let spec = pod.spec.as_ref();
    let pod_ips: Vec<String> = ctx.pod_ips.iter().map(|ip| ip.to_string()).collect();
    match path.as_str() {
        "spec.nodeName" => Ok(spec
            .and_then(|s| s.node_name.clone())
            .unwrap_or_else(|| ctx.node_name.clone())),
        "spec.serviceAccountName" => Ok(spec
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_default()),
        "spec.restartPolicy" => Ok(spec
            .and_then(|s| s.restart_policy.clone())
            .unwrap_or_default()),
        "spec.schedulerName" => Ok(spec
            .and_then(|s| s.scheduler_name.clone())
            .unwrap_or_default()),
        "status.phase" => Ok(pod
            .status
            .as_ref()
            .and_then(|s| s.phase.clone())
            .unwrap_or_default()),
        "status.hostIP" | "status.hostIPs" => Ok(ctx.node_ip.to_string()),
        "status.podIP" => Ok(pod_ips.first().cloned().unwrap_or_default()),
        "status.podIPs" => Ok(pod_ips.join(",")),
        other => downward::extract_field_path(pod, other),
    }
}

/// The node's allocatable resources (limits default to them).
pub(crate) async fn fetch_node_allocatable(
    client: &kube::Client,
    node_name: &str,
) -> Result<downward::Allocatable, String> {
    let node = kube::Api::<Node>::all(client.clone())
        .get(node_name)
        .await
        .map_err(|e| {
            format!("failed to get node {node_name:?} for its allocatable resources: {e}")
        })?;
    Ok(node.status.and_then(|s| s.allocatable).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        EnvVar, EnvVarSource, PodSpec, PodStatus, ServicePort, ServiceSpec,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn map(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn expansion_as_upstream() {
        let m = map(&[("VAR_A", "A"), ("VAR_B", "B"), ("EMPTY", "")]);
        let cases = [
            ("$(VAR_A)", "A"),
            ("___$(VAR_A)___", "___A___"),
            ("$(VAR_A)-$(VAR_B)", "A-B"),
            ("$(VAR_A)$(VAR_B)", "AB"),
            ("$(UNKNOWN)", "$(UNKNOWN)"),
            ("$(EMPTY)x", "x"),
            ("$$(VAR_A)", "$(VAR_A)"),
            ("$$$(VAR_A)", "$A"),
            ("$$$$(VAR_A)", "$$(VAR_A)"),
            ("$$", "$"),
            ("$", "$"),
            ("x$", "x$"),
            ("$x", "$x"),
            ("$(VAR_A", "$(VAR_A"),
            ("$()", "$()"),
            ("$(VAR_A)$", "A$"),
            ("no refs", "no refs"),
            ("héllo $(VAR_A) wörld", "héllo A wörld"),
            ("$é", "$é"),
        ];
        for (input, want) in cases {
            assert_eq!(expand(input, &m), want, "input {input:?}");
        }
    }

    fn service(name: &str, ip: &str, ports: &[(Option<&str>, i32, Option<&str>)]) -> Service {
        Service {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                cluster_ip: Some(ip.into()),
                ports: Some(
                    ports
                        .iter()
                        .map(|(n, p, proto)| ServicePort {
                            name: n.map(Into::into),
                            port: *p,
                            protocol: proto.map(Into::into),
                            ..Default::default()
                        })
                        .collect(),
                ),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn kubernetes_service_variables() {
        let env = service_env(&[service(
            "kubernetes",
            "10.43.0.1",
            &[(Some("https"), 443, Some("TCP"))],
        )]);
        let want: Vec<(String, String)> = [
            ("KUBERNETES_SERVICE_HOST", "10.43.0.1"),
            ("KUBERNETES_SERVICE_PORT", "443"),
            ("KUBERNETES_SERVICE_PORT_HTTPS", "443"),
            ("KUBERNETES_PORT", "tcp://10.43.0.1:443"),
            ("KUBERNETES_PORT_443_TCP", "tcp://10.43.0.1:443"),
            ("KUBERNETES_PORT_443_TCP_PROTO", "tcp"),
            ("KUBERNETES_PORT_443_TCP_PORT", "443"),
            ("KUBERNETES_PORT_443_TCP_ADDR", "10.43.0.1"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(env, want);
    }

    #[test]
    fn service_names_ports_and_headless() {
        let env = service_env(&[
            service(
                "my-web-svc",
                "fd00::10",
                &[(None, 80, None), (Some("dns-udp"), 53, Some("UDP"))],
            ),
            service("headless", "None", &[(None, 80, None)]),
        ]);
        let get = |k: &str| {
            env.iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.as_str())
                .unwrap_or_else(|| panic!("{k} missing in {env:?}"))
        };
        assert_eq!(get("MY_WEB_SVC_SERVICE_HOST"), "fd00::10");
        assert_eq!(get("MY_WEB_SVC_SERVICE_PORT"), "80");
        assert_eq!(get("MY_WEB_SVC_SERVICE_PORT_DNS_UDP"), "53");
        assert_eq!(get("MY_WEB_SVC_PORT"), "tcp://[fd00::10]:80");
        assert_eq!(get("MY_WEB_SVC_PORT_53_UDP"), "udp://[fd00::10]:53");
        assert_eq!(get("MY_WEB_SVC_PORT_53_UDP_PROTO"), "udp");
        assert!(!env.iter().any(|(k, _)| k.starts_with("HEADLESS")));
        assert_eq!(service_env_name("a-b-c"), "A_B_C");
    }

    fn pod() -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some("web-0".into()),
                namespace: Some("prod".into()),
                uid: Some("u-1".into()),
                labels: Some([("app".to_string(), "web".to_string())].into()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                node_name: Some("node-a".into()),
                service_account_name: Some("builder".into()),
                ..Default::default()
            }),
            status: Some(PodStatus {
                host_ip: Some("192.168.1.5".into()),
                pod_ips: Some(vec![k8s_openapi::api::core::v1::PodIP {
                    ip: "10.42.0.7".into(),
                }]),
                ..Default::default()
            }),
        }
    }

    fn field(path: &str) -> ObjectFieldSelector {
        ObjectFieldSelector {
            api_version: Some("v1".into()),
            field_path: path.into(),
        }
    }

    #[test]
    fn field_refs() {
        let ctx = EnvContext {
            node_name: "node-a".into(),
            node_ip: "192.168.1.5".parse().unwrap(),
            pod_ips: vec!["10.42.0.7".parse().unwrap(), "fd00::7".parse().unwrap()],
        };
        let p = pod();
        let v = |path: &str| field_ref_value(&field(path), &p, &ctx);
        assert_eq!(v("metadata.name").unwrap(), "web-0");
        assert_eq!(v("metadata.namespace").unwrap(), "prod");
        assert_eq!(v("metadata.uid").unwrap(), "u-1");
        assert_eq!(v("metadata.labels['app']").unwrap(), "web");
        assert_eq!(v("metadata.labels").unwrap(), "app=\"web\"");
        assert_eq!(v("spec.nodeName").unwrap(), "node-a");
        assert_eq!(v("spec.host").unwrap(), "node-a");
        assert_eq!(v("spec.serviceAccountName").unwrap(), "builder");
        assert_eq!(v("status.hostIP").unwrap(), "192.168.1.5");
        assert_eq!(v("status.hostIPs").unwrap(), "192.168.1.5");
        assert_eq!(v("status.podIP").unwrap(), "10.42.0.7");
        assert_eq!(v("status.podIPs").unwrap(), "10.42.0.7,fd00::7");
        assert_eq!(
            v("spec.containers").unwrap_err(),
            "field label not supported: spec.containers"
        );
        assert_eq!(
            v("metadata.name['x']").unwrap_err(),
            "field label does not support subscript: metadata.name['x']"
        );
        let mut other = field("metadata.name");
        other.api_version = Some("v2".into());
        assert_eq!(
            field_ref_value(&other, &p, &ctx).unwrap_err(),
            "unsupported pod version: v2"
        );
    }

    #[test]
    fn static_env_for_sub_path_expr() {
        let p = pod();
        let var = |name: &str, value: Option<&str>, field_path: Option<&str>| EnvVar {
            name: name.into(),
            value: value.map(Into::into),
            value_from: field_path.map(|f| EnvVarSource {
                field_ref: Some(field(f)),
                ..Default::default()
            }),
        };
        let c = Container {
            name: "app".into(),
            env: Some(vec![
                var("POD_NAME", None, Some("metadata.name")),
                var("DIR", Some("logs/$(POD_NAME)"), None),
                var("IP", None, Some("status.podIP")),
                var("HOST", None, Some("status.hostIP")),
                var("LATER", Some("$(UNSET)"), None),
            ]),
            ..Default::default()
        };
        let env = static_env(&p, &c);
        assert_eq!(
            env,
            vec![
                ("POD_NAME".to_string(), "web-0".to_string()),
                ("DIR".to_string(), "logs/web-0".to_string()),
                ("IP".to_string(), "10.42.0.7".to_string()),
                ("HOST".to_string(), "192.168.1.5".to_string()),
                ("LATER".to_string(), "$(UNSET)".to_string()),
            ]
        );
    }

    #[test]
    fn later_definitions_replace_in_place() {
        let mut env = OrderedEnv::default();
        env.set("A".into(), "1".into());
        env.set("B".into(), "2".into());
        env.set("A".into(), "3".into());
        assert_eq!(env.get("A"), Some("3"));
        assert_eq!(
            env.into_vec(),
            vec![("A".into(), "3".into()), ("B".into(), "2".into())]
        );
    }
}
