//! Pure translations from the pod spec to what the runtime takes: cgroup resources, the merged
//! security context, the pod's QoS class and memory limit, and restart decisions.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Pod, PodSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use runtime::container::{Resources, Security};

/// cpu.shares floor and the CFS period, as upstream's `MilliCPUToShares`/`MilliCPUToQuota`.
const MIN_SHARES: u64 = 2;
const SHARES_PER_CPU: u64 = 1024;
const QUOTA_PERIOD: u64 = 100_000;
const MIN_QUOTA: i64 = 1000;

fn quantity(
    map: Option<&BTreeMap<String, Quantity>>,
    key: &str,
) -> Option<api::validation::Quantity> {
    let q = map?.get(key)?;
    api::validation::parse_quantity(&q.0).ok()
}

/// The cgroup settings of one container from its requests and limits.
pub fn container_resources(container: &Container) -> Resources {
    let reqs = container
        .resources
        .as_ref()
        .and_then(|r| r.requests.as_ref());
    let limits = container.resources.as_ref().and_then(|r| r.limits.as_ref());
    let cpu_request = quantity(reqs, "cpu").filter(|q| !q.is_zero());
    let cpu_limit = quantity(limits, "cpu").filter(|q| !q.is_zero());
    // A limit without a request requests the limit (API defaulting does the same).
    let request_milli = cpu_request
        .or(cpu_limit)
        .map(|q| q.milli_value())
        .unwrap_or(0);
    let shares = (request_milli.max(0) as u64 * SHARES_PER_CPU / 1000).max(MIN_SHARES);
    let cpu_quota = cpu_limit.map(|q| {
        let quota = (q.milli_value() as i64).saturating_mul(QUOTA_PERIOD as i64) / 1000;
        quota.max(MIN_QUOTA)
    });
    let memory_limit = quantity(limits, "memory")
        .filter(|q| !q.is_zero())
        .map(|q| q.value() as i64);
    Resources {
        cpu_shares: Some(shares),
        cpu_period: cpu_quota.map(|_| QUOTA_PERIOD),
        cpu_quota,
        memory_limit,
        pids_limit: None,
    }
}

/// The pod's total memory limit for its cgroup: the larger of the sum over its long-running
/// containers and the largest init container's; None when one of them has no limit.
pub fn pod_memory_limit(spec: &PodSpec) -> Option<i64> {
    let limit = |c: &Container| container_resources(c).memory_limit;
    let mut sum: i64 = 0;
    let long_running = spec.containers.iter().chain(
        spec.init_containers
            .iter()
            .flatten()
            .filter(|c| is_sidecar(c)),
    );
    for c in long_running {
        sum = sum.saturating_add(limit(c)?);
    }
    let mut max_init = 0;
    for c in spec
        .init_containers
        .iter()
        .flatten()
        .filter(|c| !is_sidecar(c))
    {
        max_init = max_init.max(limit(c)?);
    }
    Some(sum.max(max_init))
}

/// The QoS class the API server recorded, or computed the same way.
pub fn qos_class(pod: &Pod) -> String {
    if let Some(q) = pod.status.as_ref().and_then(|s| s.qos_class.clone()) {
        return q;
    }
    let spec = serde_json::to_value(pod.spec.clone().unwrap_or_default()).unwrap_or_default();
    api::defaults::pod_qos_class(&spec).to_string()
}

/// The container's securityContext over the pod's, as the runtime applies it.
pub fn merged_security(pod: &Pod, container: &Container) -> Security {
    let pod_sc = pod
        .spec
        .as_ref()
        .and_then(|s| s.security_context.clone())
        .unwrap_or_default();
    let sc = container.security_context.clone().unwrap_or_default();
    let mut supplemental_groups = pod_sc.supplemental_groups.clone().unwrap_or_default();
    if let Some(fs_group) = pod_sc.fs_group
        && !supplemental_groups.contains(&fs_group)
    {
        supplemental_groups.push(fs_group);
    }
    let seccomp = sc
        .seccomp_profile
        .or(pod_sc.seccomp_profile)
        .map(|p| match p.type_.as_str() {
            "Localhost" => format!("Localhost/{}", p.localhost_profile.unwrap_or_default()),
            other => other.to_string(),
        });
    let caps = sc.capabilities.unwrap_or_default();
    Security {
        run_as_user: sc.run_as_user.or(pod_sc.run_as_user),
        run_as_group: sc.run_as_group.or(pod_sc.run_as_group),
        supplemental_groups,
        privileged: sc.privileged.unwrap_or(false),
        allow_privilege_escalation: sc.allow_privilege_escalation,
        read_only_root_filesystem: sc.read_only_root_filesystem.unwrap_or(false),
        capabilities_add: caps.add.unwrap_or_default(),
        capabilities_drop: caps.drop.unwrap_or_default(),
        seccomp,
    }
}

/// The pod's namespaced sysctls.
pub fn sysctls(pod: &Pod) -> BTreeMap<String, String> {
    pod.spec
        .as_ref()
        .and_then(|s| s.security_context.as_ref())
        .and_then(|sc| sc.sysctls.as_ref())
        .map(|list| {
            list.iter()
                .map(|s| (s.name.clone(), s.value.clone()))
                .collect()
        })
        .unwrap_or_default()
}

/// `runAsNonRoot` with a container that would run as root: upstream refuses to create it
/// (CreateContainerConfigError) with this message.
pub fn verify_run_as_non_root(
    pod: &Pod,
    container: &Container,
    image_user: &str,
) -> Result<(), String> {
    let pod_sc = pod.spec.as_ref().and_then(|s| s.security_context.as_ref());
    let sc = container.security_context.as_ref();
    let non_root = sc
        .and_then(|s| s.run_as_non_root)
        .or(pod_sc.and_then(|s| s.run_as_non_root))
        .unwrap_or(false);
    if !non_root {
        return Ok(());
    }
    let uid = sc
        .and_then(|s| s.run_as_user)
        .or(pod_sc.and_then(|s| s.run_as_user));
    match uid {
        Some(0) => Err("container's runAsUser breaks non-root policy".into()),
        Some(_) => Ok(()),
        None => {
            let user = image_user.split(':').next().unwrap_or("");
            match user.parse::<i64>() {
                Ok(0) => Err("container has runAsNonRoot and image will run as root".into()),
                Ok(_) => Ok(()),
                Err(_) if user.is_empty() || user == "root" => {
                    Err("container has runAsNonRoot and image will run as root".into())
                }
                Err(_) => Err(format!(
                    "container has runAsNonRoot and image has non-numeric user ({user}), cannot verify user is non-root"
                )),
            }
        }
    }
}

/// An init container with `restartPolicy: Always`: a sidecar.
pub fn is_sidecar(container: &Container) -> bool {
    container.restart_policy.as_deref() == Some("Always")
}

pub fn restart_policy(pod: &Pod) -> &str {
    pod.spec
        .as_ref()
        .and_then(|s| s.restart_policy.as_deref())
        .unwrap_or("Always")
}

/// Whether an exited regular container runs again, by the pod's restartPolicy.
pub fn should_restart(policy: &str, exit_code: i32) -> bool {
    match policy {
        "Never" => false,
        "OnFailure" => exit_code != 0,
        _ => true,
    }
}

/// The grace period for stopping the pod's containers: the deletion's, else the spec's
/// (default 30 s).
pub fn grace_period(pod: &Pod) -> std::time::Duration {
    let secs = pod
        .metadata
        .deletion_grace_period_seconds
        .or_else(|| {
            pod.spec
                .as_ref()
                .and_then(|s| s.termination_grace_period_seconds)
        })
        .unwrap_or(30);
    std::time::Duration::from_secs(secs.max(0) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        Capabilities, PodSecurityContext, ResourceRequirements, SeccompProfile, SecurityContext,
    };

    fn container(requests: &[(&str, &str)], limits: &[(&str, &str)]) -> Container {
        let map = |list: &[(&str, &str)]| {
            (!list.is_empty()).then(|| {
                list.iter()
                    .map(|(k, v)| (k.to_string(), Quantity(v.to_string())))
                    .collect::<BTreeMap<_, _>>()
            })
        };
        Container {
            name: "c".into(),
            resources: Some(ResourceRequirements {
                requests: map(requests),
                limits: map(limits),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn cpu_and_memory_become_cgroup_settings() {
        let r = container_resources(&container(
            &[("cpu", "250m")],
            &[("cpu", "500m"), ("memory", "64Mi")],
        ));
        assert_eq!(r.cpu_shares, Some(256));
        assert_eq!(r.cpu_quota, Some(50_000));
        assert_eq!(r.cpu_period, Some(100_000));
        assert_eq!(r.memory_limit, Some(64 * 1024 * 1024));
        let none = container_resources(&container(&[], &[]));
        assert_eq!(none.cpu_shares, Some(2));
        assert_eq!(
            (none.cpu_quota, none.cpu_period, none.memory_limit),
            (None, None, None)
        );
        // Tiny values hit upstream's floors; a limit alone sets the shares too.
        let tiny = container_resources(&container(&[("cpu", "1m")], &[("cpu", "1m")]));
        assert_eq!((tiny.cpu_shares, tiny.cpu_quota), (Some(2), Some(1000)));
        let limit_only = container_resources(&container(&[], &[("cpu", "2")]));
        assert_eq!(
            (limit_only.cpu_shares, limit_only.cpu_quota),
            (Some(2048), Some(200_000))
        );
        let mem = container_resources(&container(&[], &[("memory", "1G")]));
        assert_eq!(mem.memory_limit, Some(1_000_000_000));
    }

    #[test]
    fn pod_memory_limit_needs_every_container_limited() {
        let mut spec = PodSpec {
            containers: vec![
                container(&[], &[("memory", "100Mi")]),
                container(&[], &[("memory", "50Mi")]),
            ],
            init_containers: Some(vec![container(&[], &[("memory", "200Mi")])]),
            ..Default::default()
        };
        assert_eq!(pod_memory_limit(&spec), Some(200 * 1024 * 1024));
        spec.init_containers = None;
        assert_eq!(pod_memory_limit(&spec), Some(150 * 1024 * 1024));
        spec.containers.push(container(&[], &[]));
        assert_eq!(pod_memory_limit(&spec), None);
    }

    #[test]
    fn container_security_context_overrides_the_pods() {
        let pod = Pod {
            spec: Some(PodSpec {
                security_context: Some(PodSecurityContext {
                    run_as_user: Some(1000),
                    run_as_group: Some(3000),
                    fs_group: Some(2000),
                    supplemental_groups: Some(vec![4000]),
                    seccomp_profile: Some(SeccompProfile {
                        type_: "RuntimeDefault".into(),
                        localhost_profile: None,
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let c = Container {
            security_context: Some(SecurityContext {
                run_as_user: Some(0),
                privileged: Some(true),
                read_only_root_filesystem: Some(true),
                capabilities: Some(Capabilities {
                    add: Some(vec!["NET_ADMIN".into()]),
                    drop: Some(vec!["ALL".into()]),
                }),
                seccomp_profile: Some(SeccompProfile {
                    type_: "Localhost".into(),
                    localhost_profile: Some("p.json".into()),
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let s = merged_security(&pod, &c);
        assert_eq!(s.run_as_user, Some(0));
        assert_eq!(s.run_as_group, Some(3000));
        assert_eq!(s.supplemental_groups, vec![4000, 2000]);
        assert!(s.privileged && s.read_only_root_filesystem);
        assert_eq!(s.capabilities_add, vec!["NET_ADMIN"]);
        assert_eq!(s.capabilities_drop, vec!["ALL"]);
        assert_eq!(s.seccomp.as_deref(), Some("Localhost/p.json"));
        let plain = merged_security(&pod, &Container::default());
        assert_eq!(plain.run_as_user, Some(1000));
        assert_eq!(plain.seccomp.as_deref(), Some("RuntimeDefault"));
    }

    #[test]
    fn run_as_non_root_is_checked_against_the_image_user() {
        let pod = Pod {
            spec: Some(PodSpec {
                security_context: Some(PodSecurityContext {
                    run_as_non_root: Some(true),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let c = Container::default();
        assert!(verify_run_as_non_root(&pod, &c, "").is_err());
        assert!(verify_run_as_non_root(&pod, &c, "1000:1000").is_ok());
        assert!(
            verify_run_as_non_root(&pod, &c, "nobody")
                .unwrap_err()
                .contains("non-numeric")
        );
        assert!(verify_run_as_non_root(&Pod::default(), &c, "").is_ok());
    }

    #[test]
    fn restart_decisions_follow_the_policy() {
        assert!(should_restart("Always", 0));
        assert!(should_restart("Always", 1));
        assert!(!should_restart("OnFailure", 0));
        assert!(should_restart("OnFailure", 2));
        assert!(!should_restart("Never", 1));
        let mut pod = Pod::default();
        assert_eq!(restart_policy(&pod), "Always");
        assert_eq!(grace_period(&pod).as_secs(), 30);
        pod.spec = Some(PodSpec {
            termination_grace_period_seconds: Some(5),
            ..Default::default()
        });
        assert_eq!(grace_period(&pod).as_secs(), 5);
        pod.metadata.deletion_grace_period_seconds = Some(1);
        assert_eq!(grace_period(&pod).as_secs(), 1);
    }
}
