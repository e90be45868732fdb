//! The files of configMap, secret, downwardAPI and projected volumes, computed from their
//! sources (pure: the objects are fetched by the caller).

use k8s_openapi::api::core::v1::{ConfigMap, DownwardAPIVolumeFile, KeyToPath, Pod, Secret};

use super::atomic_writer::{FileProjection, Payload};
use super::downward;

/// Mode of volume files when the pod gives none (upstream's default for all four sources).
pub const DEFAULT_MODE: i32 = 0o644;

fn mode(m: Option<i32>, default_mode: i32) -> u32 {
    (m.unwrap_or(default_mode) & 0o7777) as u32
}

/// Every key of the ConfigMap (data and binaryData), or only `items` mapped to their paths.
pub fn config_map_payload(
    items: Option<&[KeyToPath]>,
    cm: &ConfigMap,
    default_mode: i32,
    optional: bool,
) -> Result<Payload, String> {
    let mut payload = Payload::new();
    let string_data = cm.data.as_ref();
    let binary_data = cm.binary_data.as_ref();
    let lookup = |key: &str| -> Option<Vec<u8>> {
        string_data
            .and_then(|d| d.get(key))
            .map(|s| s.as_bytes().to_vec())
            .or_else(|| binary_data.and_then(|d| d.get(key)).map(|b| b.0.clone()))
    };
    match items.filter(|i| !i.is_empty()) {
        None => {
            for (k, v) in string_data.into_iter().flatten() {
                payload.insert(k.clone(), file(v.as_bytes().to_vec(), None, default_mode));
            }
            for (k, v) in binary_data.into_iter().flatten() {
                payload.insert(k.clone(), file(v.0.clone(), None, default_mode));
            }
        }
        Some(items) => {
            for item in items {
                match lookup(&item.key) {
                    Some(data) => {
                        payload.insert(item.path.clone(), file(data, item.mode, default_mode));
                    }
                    None if optional => continue,
                    None => {
                        return Err(format!(
                            "configmap references non-existent config key: {}",
                            item.key
                        ));
                    }
                }
            }
        }
    }
    Ok(payload)
}

/// Every key of the Secret (decoded bytes), or only `items` mapped to their paths.
pub fn secret_payload(
    items: Option<&[KeyToPath]>,
    secret: &Secret,
    default_mode: i32,
    optional: bool,
) -> Result<Payload, String> {
    let mut payload = Payload::new();
    let data = secret.data.as_ref();
    match items.filter(|i| !i.is_empty()) {
        None => {
            for (k, v) in data.into_iter().flatten() {
                payload.insert(k.clone(), file(v.0.clone(), None, default_mode));
            }
        }
        Some(items) => {
            for item in items {
                match data.and_then(|d| d.get(&item.key)) {
                    Some(v) => {
                        payload.insert(
                            item.path.clone(),
                            file(v.0.clone(), item.mode, default_mode),
                        );
                    }
                    None if optional => continue,
                    None => {
                        return Err(format!("references non-existent secret key: {}", item.key));
                    }
                }
            }
        }
    }
    Ok(payload)
}

/// The downward API files. `allocatable` is needed only for items that read a limit (see
/// [`needs_allocatable`]); all item errors are reported together.
pub fn downward_api_payload(
    items: &[DownwardAPIVolumeFile],
    pod: &Pod,
    default_mode: i32,
    allocatable: Option<&downward::Allocatable>,
) -> Result<Payload, String> {
    let mut payload = Payload::new();
    let mut errors = Vec::new();
    for item in items {
        let mut data = Vec::new();
        if let Some(fs) = &item.field_ref {
            match downward::extract_field_path(pod, &fs.field_path) {
                Ok(v) => data = v.into_bytes(),
                Err(e) => errors.push(e),
            }
        } else if let Some(rs) = &item.resource_field_ref {
            let name = rs.container_name.as_deref().unwrap_or("");
            match downward::find_container(pod, name) {
                None => errors.push(format!("container {name} not found")),
                Some(c) => {
                    let c = match allocatable {
                        Some(a) => downward::with_default_limits(c, a),
                        None => c.clone(),
                    };
                    match downward::container_resource_value(rs, &c) {
                        Ok(v) => data = v.into_bytes(),
                        Err(e) => errors.push(e),
                    }
                }
            }
        }
        let path = item
            .path
            .split('/')
            .filter(|s| !s.is_empty() && *s != ".")
            .collect::<Vec<_>>()
            .join("/");
        payload.insert(path, file(data, item.mode, default_mode));
    }
    match errors.len() {
        0 => Ok(payload),
        1 => Err(errors.remove(0)),
        _ => Err(format!("[{}]", errors.join(", "))),
    }
}

/// Whether any item reads a container limit (node allocatable must be fetched).
pub fn needs_allocatable(items: &[DownwardAPIVolumeFile]) -> bool {
    items
        .iter()
        .filter_map(|i| i.resource_field_ref.as_ref())
        .any(downward::needs_allocatable)
}

fn file(data: Vec<u8>, item_mode: Option<i32>, default_mode: i32) -> FileProjection {
    FileProjection {
        data,
        mode: mode(item_mode, default_mode),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;
    use k8s_openapi::api::core::v1::{
        Container, ObjectFieldSelector, PodSpec, ResourceFieldSelector, ResourceRequirements,
    };
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use std::collections::BTreeMap;

    fn cm() -> ConfigMap {
        ConfigMap {
            data: Some(BTreeMap::from([
                ("GREETING".into(), "hello".into()),
                ("LEVEL".into(), "debug".into()),
            ])),
            binary_data: Some(BTreeMap::from([("blob".into(), ByteString(vec![0, 1, 2]))])),
            ..Default::default()
        }
    }

    fn item(key: &str, path: &str, mode: Option<i32>) -> KeyToPath {
        KeyToPath {
            key: key.into(),
            path: path.into(),
            mode,
        }
    }

    #[test]
    fn config_map_all_keys_with_default_mode() {
        let p = config_map_payload(None, &cm(), DEFAULT_MODE, false).unwrap();
        assert_eq!(p.len(), 3);
        assert_eq!(p["LEVEL"].data, b"debug");
        assert_eq!(p["LEVEL"].mode, 0o644);
        assert_eq!(p["blob"].data, vec![0, 1, 2]);
    }

    #[test]
    fn config_map_items_and_modes() {
        let items = [
            item("LEVEL", "conf/level", Some(0o400)),
            item("blob", "b", None),
        ];
        let p = config_map_payload(Some(&items), &cm(), 0o600, false).unwrap();
        assert_eq!(p.keys().collect::<Vec<_>>(), vec!["b", "conf/level"]);
        assert_eq!(p["conf/level"].mode, 0o400);
        assert_eq!(p["b"].mode, 0o600);
        let missing = [item("NOPE", "n", None)];
        assert_eq!(
            config_map_payload(Some(&missing), &cm(), DEFAULT_MODE, false).unwrap_err(),
            "configmap references non-existent config key: NOPE"
        );
        assert!(
            config_map_payload(Some(&missing), &cm(), DEFAULT_MODE, true)
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn secret_bytes_and_items() {
        let s = Secret {
            data: Some(BTreeMap::from([(
                "PASSWORD".into(),
                ByteString(b"s3cr3t!".to_vec()),
            )])),
            ..Default::default()
        };
        let p = secret_payload(None, &s, DEFAULT_MODE, false).unwrap();
        assert_eq!(p["PASSWORD"].data, b"s3cr3t!");
        assert_eq!(p["PASSWORD"].mode, 0o644);
        let items = [item("PASSWORD", "pw", Some(0o440))];
        let p = secret_payload(Some(&items), &s, DEFAULT_MODE, false).unwrap();
        assert_eq!(p["pw"].mode, 0o440);
        let missing = [item("TOKEN", "t", None)];
        assert_eq!(
            secret_payload(Some(&missing), &s, DEFAULT_MODE, false).unwrap_err(),
            "references non-existent secret key: TOKEN"
        );
    }

    #[test]
    fn downward_api_files() {
        let pod = Pod {
            metadata: ObjectMeta {
                name: Some("p".into()),
                labels: Some(BTreeMap::from([
                    ("b".into(), "2".into()),
                    ("a".into(), "1".into()),
                ])),
                ..Default::default()
            },
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "app".into(),
                    resources: Some(ResourceRequirements {
                        requests: Some(BTreeMap::from([(
                            "memory".into(),
                            Quantity("32Mi".into()),
                        )])),
                        ..Default::default()
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        };
        let field = |path: &str, fp: &str| DownwardAPIVolumeFile {
            path: path.into(),
            field_ref: Some(ObjectFieldSelector {
                api_version: None,
                field_path: fp.into(),
            }),
            ..Default::default()
        };
        let res = |path: &str, c: &str, r: &str| DownwardAPIVolumeFile {
            path: path.into(),
            resource_field_ref: Some(ResourceFieldSelector {
                container_name: Some(c.into()),
                resource: r.into(),
                divisor: Some(Quantity("1Mi".into())),
            }),
            mode: Some(0o400),
            ..Default::default()
        };
        let items = [
            field("labels", "metadata.labels"),
            field("name", "metadata.name"),
            res("mem_req", "app", "requests.memory"),
            res("mem_limit", "app", "limits.memory"),
        ];
        assert!(needs_allocatable(&items));
        let alloc = BTreeMap::from([("memory".to_string(), Quantity("2Gi".into()))]);
        let p = downward_api_payload(&items, &pod, DEFAULT_MODE, Some(&alloc)).unwrap();
        assert_eq!(p["labels"].data, b"a=\"1\"\nb=\"2\"");
        assert_eq!(p["name"].data, b"p");
        assert_eq!(p["name"].mode, 0o644);
        assert_eq!(p["mem_req"].data, b"32");
        assert_eq!(p["mem_req"].mode, 0o400);
        assert_eq!(p["mem_limit"].data, b"2048");

        let bad = [field("x", "spec.nodeName"), res("y", "nope", "limits.cpu")];
        assert_eq!(
            downward_api_payload(&bad, &pod, DEFAULT_MODE, None).unwrap_err(),
            "[unsupported fieldPath: spec.nodeName, container nope not found]"
        );
    }
}
