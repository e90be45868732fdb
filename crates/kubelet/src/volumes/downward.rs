//! The downward API shared by env vars and downwardAPI volumes: pod field paths
//! (`metadata.labels['app']`) and container resources (`limits.cpu` with a divisor), formatted as
//! upstream formats them.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Pod, ResourceFieldSelector};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

/// `metadata.labels['app']` -> (`metadata.labels`, `app`).
pub fn split_subscript(field_path: &str) -> Option<(&str, &str)> {
    let inner = field_path.strip_suffix("']")?;
    let (path, subscript) = inner.split_once("['")?;
    if path.is_empty() {
        return None;
    }
    Some((path, subscript))
}

/// The value of a pod metadata field path, as downwardAPI volumes and `fieldRef` env vars see it
/// (the metadata part; node and status fields are the caller's).
pub fn extract_field_path(pod: &Pod, field_path: &str) -> Result<String, String> {
    let meta = &pod.metadata;
    let empty = BTreeMap::new();
    let labels = meta.labels.as_ref().unwrap_or(&empty);
    let annotations = meta.annotations.as_ref().unwrap_or(&empty);
    if let Some((path, subscript)) = split_subscript(field_path) {
        return match path {
            "metadata.annotations" => {
                let errs =
                    api::validation::names::is_qualified_name(&subscript.to_ascii_lowercase());
                if !errs.is_empty() {
                    return Err(format!(
                        "invalid key subscript in {field_path}: {}",
                        errs.join(";")
                    ));
                }
                Ok(annotations.get(subscript).cloned().unwrap_or_default())
            }
            "metadata.labels" => {
                let errs = api::validation::names::is_qualified_name(subscript);
                if !errs.is_empty() {
                    return Err(format!(
                        "invalid key subscript in {field_path}: {}",
                        errs.join(";")
                    ));
                }
                Ok(labels.get(subscript).cloned().unwrap_or_default())
            }
            _ => Err(format!(
                "fieldPath {field_path:?} does not support subscript"
            )),
        };
    }
    match field_path {
        "metadata.annotations" => Ok(format_map(annotations)),
        "metadata.labels" => Ok(format_map(labels)),
        "metadata.name" => Ok(meta.name.clone().unwrap_or_default()),
        "metadata.namespace" => Ok(meta.namespace.clone().unwrap_or_default()),
        "metadata.uid" => Ok(meta.uid.clone().unwrap_or_default()),
        _ => Err(format!("unsupported fieldPath: {field_path}")),
    }
}

/// `key="value"` lines sorted by key, values quoted like Go's `%q`, no trailing newline.
pub fn format_map(map: &BTreeMap<String, String>) -> String {
    map.iter()
        .map(|(k, v)| format!("{k}={}", go_quote(v)))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A double-quoted string with Go's escapes (`strconv.Quote`).
pub fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\x07' => out.push_str("\\a"),
            '\x08' => out.push_str("\\b"),
            '\x0c' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\x0b' => out.push_str("\\v"),
            ' ' => out.push(' '),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c if c.is_control() || c.is_whitespace() || is_unprintable_format(c) => {
                if (c as u32) < 0x10000 {
                    out.push_str(&format!("\\u{:04x}", c as u32));
                } else {
                    out.push_str(&format!("\\U{:08x}", c as u32));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Format characters Go does not print as is (zero-width and direction marks, BOM).
fn is_unprintable_format(c: char) -> bool {
    matches!(c as u32, 0xad | 0x200b..=0x200f | 0x2028..=0x202e | 0x2060..=0x2064 | 0xfeff)
}

/// Node allocatable resources used when a container sets no limit.
pub type Allocatable = BTreeMap<String, Quantity>;

/// The container with its missing `cpu`, `memory` and `ephemeral-storage` limits set to the
/// node's allocatable amounts (upstream's defaulting for the downward API).
pub fn with_default_limits(container: &Container, allocatable: &Allocatable) -> Container {
    let mut c = container.clone();
    let resources = c.resources.get_or_insert_with(Default::default);
    let limits = resources.limits.get_or_insert_with(BTreeMap::new);
    for name in ["cpu", "memory", "ephemeral-storage"] {
        if !limits.contains_key(name)
            && let Some(q) = allocatable.get(name)
        {
            limits.insert(name.to_string(), q.clone());
        }
    }
    c
}

/// Does this selector read a limit (so that node allocatable is needed for defaults)?
pub fn needs_allocatable(selector: &ResourceFieldSelector) -> bool {
    selector.resource.starts_with("limits.")
}

/// The value of `requests.cpu`, `limits.memory`, ... of a container, divided by the divisor
/// and rounded up.
pub fn container_resource_value(
    selector: &ResourceFieldSelector,
    container: &Container,
) -> Result<String, String> {
    let divisor = match &selector.divisor {
        Some(q) => parse(q)?,
        None => None,
    };
    let divisor = divisor.filter(|d| !d.is_zero());
    let (kind, name) = selector
        .resource
        .split_once('.')
        .ok_or_else(|| unsupported(&selector.resource))?;
    let list = match kind {
        "limits" => container.resources.as_ref().and_then(|r| r.limits.as_ref()),
        "requests" => container
            .resources
            .as_ref()
            .and_then(|r| r.requests.as_ref()),
        _ => return Err(unsupported(&selector.resource)),
    };
    let amount = match list.and_then(|l| l.get(name)) {
        Some(q) => parse(q)?.unwrap_or_else(zero),
        None => zero(),
    };
    let value = match name {
        "cpu" => {
            let d = divisor.map(|d| d.milli_value()).unwrap_or(1000);
            div_ceil(amount.milli_value(), d)
        }
        "memory" | "ephemeral-storage" => {
            let d = divisor.map(|d| d.value()).unwrap_or(1);
            div_ceil(amount.value(), d)
        }
        n if n.starts_with("hugepages-") => {
            let d = divisor.map(|d| d.value()).unwrap_or(1);
            div_ceil(amount.value(), d)
        }
        _ => return Err(unsupported(&selector.resource)),
    };
    Ok(value.to_string())
}

/// The named container (regular, init or ephemeral) of the pod.
pub fn find_container<'a>(pod: &'a Pod, name: &str) -> Option<&'a Container> {
    let spec = pod.spec.as_ref()?;
    spec.containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .find(|c| c.name == name)
}

fn unsupported(resource: &str) -> String {
    format!("unsupported container resource : {resource}")
}

fn zero() -> api::validation::Quantity {
    api::validation::Quantity::from_nanos(0, api::validation::quantity::QuantityFormat::DecimalSI)
}

fn parse(q: &Quantity) -> Result<Option<api::validation::Quantity>, String> {
    if q.0.is_empty() {
        return Ok(None);
    }
    api::validation::parse_quantity(&q.0)
        .map(Some)
        .map_err(|e| format!("invalid quantity {:?}: {e}", q.0))
}

fn div_ceil(a: i128, b: i128) -> i128 {
    if b == 0 {
        return 0;
    }
    let q = a / b;
    if (a % b != 0) && ((a > 0) == (b > 0)) {
        q + 1
    } else {
        q
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodSpec, ResourceRequirements};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn pod() -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some("web-0".into()),
                namespace: Some("prod".into()),
                uid: Some("1234".into()),
                labels: Some(BTreeMap::from([
                    ("tier".into(), "front".into()),
                    ("app".into(), "web".into()),
                ])),
                annotations: Some(BTreeMap::from([("note".into(), "say \"hi\"\nbye".into())])),
                ..Default::default()
            },
            spec: Some(PodSpec {
                containers: vec![container(Some(("500m", "128Mi")), Some(("250m", "64Mi")))],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn container(limits: Option<(&str, &str)>, requests: Option<(&str, &str)>) -> Container {
        let list = |(cpu, mem): (&str, &str)| {
            BTreeMap::from([
                ("cpu".to_string(), Quantity(cpu.into())),
                ("memory".to_string(), Quantity(mem.into())),
            ])
        };
        Container {
            name: "app".into(),
            resources: Some(ResourceRequirements {
                limits: limits.map(list),
                requests: requests.map(list),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn sel(resource: &str, divisor: Option<&str>) -> ResourceFieldSelector {
        ResourceFieldSelector {
            resource: resource.into(),
            divisor: divisor.map(|d| Quantity(d.into())),
            container_name: None,
        }
    }

    #[test]
    fn metadata_fields() {
        let p = pod();
        assert_eq!(extract_field_path(&p, "metadata.name").unwrap(), "web-0");
        assert_eq!(
            extract_field_path(&p, "metadata.namespace").unwrap(),
            "prod"
        );
        assert_eq!(extract_field_path(&p, "metadata.uid").unwrap(), "1234");
        assert_eq!(
            extract_field_path(&p, "metadata.labels").unwrap(),
            "app=\"web\"\ntier=\"front\""
        );
        assert_eq!(
            extract_field_path(&p, "metadata.annotations").unwrap(),
            "note=\"say \\\"hi\\\"\\nbye\""
        );
        assert_eq!(
            extract_field_path(&p, "metadata.labels['app']").unwrap(),
            "web"
        );
        assert_eq!(
            extract_field_path(&p, "metadata.labels['none']").unwrap(),
            ""
        );
        assert_eq!(
            extract_field_path(&p, "spec.nodeName").unwrap_err(),
            "unsupported fieldPath: spec.nodeName"
        );
        assert_eq!(
            extract_field_path(&p, "metadata.name['x']").unwrap_err(),
            "fieldPath \"metadata.name['x']\" does not support subscript"
        );
    }

    #[test]
    fn subscripts_split_like_upstream() {
        assert_eq!(
            split_subscript("metadata.labels['a.b/c']"),
            Some(("metadata.labels", "a.b/c"))
        );
        assert_eq!(split_subscript("metadata.labels"), None);
        assert_eq!(split_subscript("['x']"), None);
    }

    #[test]
    fn go_quoting() {
        assert_eq!(go_quote("plain"), "\"plain\"");
        assert_eq!(go_quote("tab\there"), "\"tab\\there\"");
        assert_eq!(go_quote("a\\b"), "\"a\\\\b\"");
        assert_eq!(go_quote("\x01"), "\"\\x01\"");
        assert_eq!(go_quote("héllo ☃"), "\"héllo ☃\"");
        assert_eq!(go_quote("\u{a0}"), "\"\\u00a0\"");
        assert_eq!(format_map(&BTreeMap::new()), "");
    }

    #[test]
    fn resources_with_divisors_round_up() {
        let c = container(Some(("500m", "128Mi")), Some(("250m", "64Mi")));
        let v = |r, d| container_resource_value(&sel(r, d), &c).unwrap();
        assert_eq!(v("limits.cpu", None), "1");
        assert_eq!(v("limits.cpu", Some("1m")), "500");
        assert_eq!(v("requests.cpu", Some("100m")), "3");
        assert_eq!(v("limits.memory", None), "134217728");
        assert_eq!(v("limits.memory", Some("1Mi")), "128");
        assert_eq!(v("requests.memory", Some("1Gi")), "1");
        assert_eq!(v("requests.memory", Some("0")), "67108864");
        assert_eq!(v("requests.ephemeral-storage", None), "0");
        assert_eq!(
            container_resource_value(&sel("limits.gpu", None), &c).unwrap_err(),
            "unsupported container resource : limits.gpu"
        );
    }

    #[test]
    fn missing_limits_default_to_allocatable() {
        let c = container(None, Some(("250m", "64Mi")));
        let alloc = BTreeMap::from([
            ("cpu".to_string(), Quantity("4".into())),
            ("memory".to_string(), Quantity("8Gi".into())),
        ]);
        let d = with_default_limits(&c, &alloc);
        assert_eq!(
            container_resource_value(&sel("limits.cpu", None), &d).unwrap(),
            "4"
        );
        assert_eq!(
            container_resource_value(&sel("limits.memory", Some("1Gi")), &d).unwrap(),
            "8"
        );
        // A set limit wins over allocatable.
        let c = container(Some(("2", "1Gi")), None);
        let d = with_default_limits(&c, &alloc);
        assert_eq!(
            container_resource_value(&sel("limits.cpu", None), &d).unwrap(),
            "2"
        );
    }
}
