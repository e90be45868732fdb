//! `spec.podFailurePolicy`: which rule a failed pod matches and what that means for the Job.

use k8s_openapi::api::batch::v1::{
    PodFailurePolicy, PodFailurePolicyOnExitCodesRequirement,
    PodFailurePolicyOnPodConditionsPattern,
};
use k8s_openapi::api::core::v1::{ContainerStatus, Pod};

/// The action of the first rule a failed pod matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    FailJob,
    FailIndex,
    Ignore,
    Count,
}

impl Action {
    fn parse(action: &str) -> Option<Action> {
        match action {
            "FailJob" => Some(Action::FailJob),
            "FailIndex" => Some(Action::FailIndex),
            "Ignore" => Some(Action::Ignore),
            "Count" => Some(Action::Count),
            _ => None,
        }
    }
}

/// What the policy says about one failed pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// Set when the Job must fail (a FailJob rule matched): the condition message.
    pub fail_job_message: Option<String>,
    /// Whether the failure counts against `backoffLimit`.
    pub count_failed: bool,
    /// The matched rule's action, if any rule matched.
    pub action: Option<Action>,
}

/// Match a failed pod against the rules in order; no match counts the failure, as upstream.
pub fn match_pod(policy: &PodFailurePolicy, pod: &Pod) -> Verdict {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or_default();
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    for (index, rule) in policy.rules.iter().enumerate() {
        let Some(action) = Action::parse(&rule.action) else {
            continue;
        };
        let fail_message = if let Some(requirement) = &rule.on_exit_codes {
            let Some((container, code)) = match_exit_codes(pod, requirement) else {
                continue;
            };
            format!(
                "Container {container} for pod {namespace}/{name} failed with exit code {code} matching {} rule at index {index}",
                rule.action
            )
        } else if let Some(patterns) = &rule.on_pod_conditions {
            let Some(condition) = match_pod_conditions(pod, patterns) else {
                continue;
            };
            format!(
                "Pod {namespace}/{name} has condition {condition} matching {} rule at index {index}",
                rule.action
            )
        } else {
            continue;
        };
        return match action {
            Action::Ignore => Verdict {
                fail_job_message: None,
                count_failed: false,
                action: Some(action),
            },
            Action::Count | Action::FailIndex => Verdict {
                fail_job_message: None,
                count_failed: true,
                action: Some(action),
            },
            Action::FailJob => Verdict {
                fail_job_message: Some(fail_message),
                count_failed: true,
                action: Some(action),
            },
        };
    }
    Verdict {
        fail_job_message: None,
        count_failed: true,
        action: None,
    }
}

/// The first terminated container (regular, then init) with a non-zero exit code the
/// requirement selects: its name and exit code.
fn match_exit_codes(
    pod: &Pod,
    requirement: &PodFailurePolicyOnExitCodesRequirement,
) -> Option<(String, i32)> {
    let status = pod.status.as_ref()?;
    let lists: [&Option<Vec<ContainerStatus>>; 2] =
        [&status.container_statuses, &status.init_container_statuses];
    for statuses in lists.into_iter().flatten() {
        for cs in statuses {
            let Some(terminated) = cs.state.as_ref().and_then(|s| s.terminated.as_ref()) else {
                continue;
            };
            if requirement
                .container_name
                .as_ref()
                .is_some_and(|n| *n != cs.name)
            {
                continue;
            }
            let code = terminated.exit_code;
            if code == 0 {
                continue;
            }
            let listed = requirement.values.contains(&code);
            let matches = match requirement.operator.as_str() {
                "In" => listed,
                "NotIn" => !listed,
                _ => false,
            };
            if matches {
                return Some((cs.name.clone(), code));
            }
        }
    }
    None
}

fn match_pod_conditions(
    pod: &Pod,
    patterns: &[PodFailurePolicyOnPodConditionsPattern],
) -> Option<String> {
    let conditions = pod.status.as_ref()?.conditions.as_ref()?;
    for pattern in patterns {
        let want_status = if pattern.status.is_empty() {
            "True"
        } else {
            pattern.status.as_str()
        };
        if let Some(c) = conditions
            .iter()
            .find(|c| c.type_ == pattern.type_ && c.status == want_status)
        {
            return Some(c.type_.clone());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn policy(rules: serde_json::Value) -> PodFailurePolicy {
        serde_json::from_value(json!({ "rules": rules })).unwrap()
    }

    fn failed_pod(exit_codes: &[(&str, i32)], conditions: &[(&str, &str)]) -> Pod {
        let statuses: Vec<_> = exit_codes
            .iter()
            .map(|(name, code)| {
                json!({"name": name, "image": "x", "imageID": "", "ready": false, "restartCount": 0,
                       "state": {"terminated": {"exitCode": code}}})
            })
            .collect();
        let conditions: Vec<_> = conditions
            .iter()
            .map(|(t, s)| json!({"type": t, "status": s}))
            .collect();
        serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "ns"},
            "status": {"phase": "Failed", "containerStatuses": statuses, "conditions": conditions}
        }))
        .unwrap()
    }

    #[test]
    fn fail_job_on_exit_code() {
        let p = policy(json!([
            {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
            {"action": "FailJob", "onExitCodes": {"containerName": "main", "operator": "In", "values": [42]}},
        ]));
        let v = match_pod(&p, &failed_pod(&[("main", 42)], &[]));
        assert_eq!(v.action, Some(Action::FailJob));
        assert!(v.count_failed);
        assert_eq!(
            v.fail_job_message.as_deref(),
            Some(
                "Container main for pod ns/p failed with exit code 42 matching FailJob rule at index 1"
            )
        );
        // Another container name does not match; the default is to count.
        let v = match_pod(&p, &failed_pod(&[("side", 42)], &[]));
        assert_eq!(v.action, None);
        assert!(v.count_failed);
    }

    #[test]
    fn ignore_on_condition_and_not_in() {
        let p = policy(json!([
            {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
            {"action": "Count", "onExitCodes": {"operator": "NotIn", "values": [1, 2]}},
        ]));
        let v = match_pod(
            &p,
            &failed_pod(&[("c", 1)], &[("DisruptionTarget", "True")]),
        );
        assert_eq!(v.action, Some(Action::Ignore));
        assert!(!v.count_failed);
        let v = match_pod(
            &p,
            &failed_pod(&[("c", 3)], &[("DisruptionTarget", "False")]),
        );
        assert_eq!(v.action, Some(Action::Count));
        let v = match_pod(&p, &failed_pod(&[("c", 2)], &[]));
        assert_eq!(v.action, None);
    }

    #[test]
    fn exit_code_zero_never_matches() {
        let p = policy(json!([
            {"action": "FailJob", "onExitCodes": {"operator": "NotIn", "values": [5]}},
        ]));
        assert_eq!(match_pod(&p, &failed_pod(&[("c", 0)], &[])).action, None);
    }
}
