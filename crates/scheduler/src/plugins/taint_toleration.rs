//! TaintToleration: NoSchedule/NoExecute taints keep out pods that do not tolerate them;
//! PreferNoSchedule taints lower a node's score.

use std::sync::Arc;

use k8s_openapi::api::core::v1::{Taint, Toleration};

use crate::framework::{
    CycleState, FilterPlugin, MAX_NODE_SCORE, NodeInfo, Plugin, PodInfo, ScorePlugin, Status,
    default_normalize_score,
};

pub const NAME: &str = "TaintToleration";

pub struct TaintToleration;

pub fn new() -> Arc<dyn Plugin> {
    Arc::new(TaintToleration)
}

/// Whether `toleration` tolerates `taint` (upstream's `ToleratesTaint`).
pub fn tolerates(toleration: &Toleration, taint: &Taint) -> bool {
    if let Some(effect) = toleration.effect.as_deref().filter(|e| !e.is_empty())
        && effect != taint.effect
    {
        return false;
    }
    if let Some(key) = toleration.key.as_deref().filter(|k| !k.is_empty())
        && key != taint.key
    {
        return false;
    }
    match toleration.operator.as_deref().unwrap_or("Equal") {
        "Exists" => true,
        "Equal" | "" => {
            toleration.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or("")
        }
        _ => false,
    }
}

/// The first taint with one of `effects` that no toleration tolerates.
pub fn find_untolerated_taint<'a>(
    taints: &'a [Taint],
    tolerations: &[Toleration],
    effects: &[&str],
) -> Option<&'a Taint> {
    taints
        .iter()
        .filter(|t| effects.contains(&t.effect.as_str()))
        .find(|t| !tolerations.iter().any(|tol| tolerates(tol, t)))
}

/// The Filter's reason for an untolerated taint, e.g. `node(s) had untolerated taint {k: v}`.
pub fn untolerated_reason(taint: &Taint) -> String {
    format!(
        "node(s) had untolerated taint {{{}: {}}}",
        taint.key,
        taint.value.as_deref().unwrap_or("")
    )
}

/// How many PreferNoSchedule taints the pod does not tolerate (its tolerations with an
/// empty or PreferNoSchedule effect count).
pub fn count_intolerable_prefer_no_schedule(taints: &[Taint], tolerations: &[Toleration]) -> i64 {
    let relevant: Vec<&Toleration> = tolerations
        .iter()
        .filter(|t| {
            matches!(
                t.effect.as_deref(),
                None | Some("") | Some("PreferNoSchedule")
            )
        })
        .collect();
    taints
        .iter()
        .filter(|t| t.effect == "PreferNoSchedule")
        .filter(|t| !relevant.iter().any(|tol| tolerates(tol, t)))
        .count() as i64
}

fn tolerations(pod: &PodInfo) -> &[Toleration] {
    pod.pod
        .spec
        .as_ref()
        .and_then(|s| s.tolerations.as_deref())
        .unwrap_or(&[])
}

impl Plugin for TaintToleration {
    fn name(&self) -> &'static str {
        NAME
    }
    fn as_filter(&self) -> Option<&dyn FilterPlugin> {
        Some(self)
    }
    fn as_score(&self) -> Option<&dyn ScorePlugin> {
        Some(self)
    }
}

impl FilterPlugin for TaintToleration {
    fn filter(&self, _state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status {
        match find_untolerated_taint(
            node.taints(),
            tolerations(pod),
            &["NoSchedule", "NoExecute"],
        ) {
            None => Status::success(),
            Some(taint) => Status::unresolvable(untolerated_reason(taint)),
        }
    }
}

impl ScorePlugin for TaintToleration {
    fn score(&self, _state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Result<i64, Status> {
        Ok(count_intolerable_prefer_no_schedule(
            node.taints(),
            tolerations(pod),
        ))
    }
    fn normalize_score(&self, _state: &CycleState, _pod: &PodInfo, scores: &mut [i64]) {
        default_normalize_score(MAX_NODE_SCORE, true, scores);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn taint(key: &str, value: &str, effect: &str) -> Taint {
        Taint {
            key: key.into(),
            value: Some(value.into()),
            effect: effect.into(),
            ..Default::default()
        }
    }

    fn tol(key: &str, op: &str, value: &str, effect: &str) -> Toleration {
        let opt = |s: &str| (!s.is_empty()).then(|| s.to_string());
        Toleration {
            key: opt(key),
            operator: opt(op),
            value: opt(value),
            effect: opt(effect),
            ..Default::default()
        }
    }

    #[test]
    fn tolerates_table() {
        let t = taint("dedicated", "gpu", "NoSchedule");
        let cases = [
            (
                "equal key value effect",
                tol("dedicated", "Equal", "gpu", "NoSchedule"),
                true,
            ),
            (
                "default operator is Equal",
                tol("dedicated", "", "gpu", ""),
                true,
            ),
            ("other value", tol("dedicated", "Equal", "cpu", ""), false),
            ("exists on key", tol("dedicated", "Exists", "", ""), true),
            ("exists everything", tol("", "Exists", "", ""), true),
            (
                "other effect",
                tol("dedicated", "Exists", "", "NoExecute"),
                false,
            ),
            ("other key", tol("team", "Exists", "", ""), false),
        ];
        for (what, toleration, want) in cases {
            assert_eq!(tolerates(&toleration, &t), want, "{what}");
        }
    }

    #[test]
    fn filter_reason_and_prefer_no_schedule() {
        let taints = vec![
            taint("soft", "x", "PreferNoSchedule"),
            taint("node.kubernetes.io/unreachable", "", "NoExecute"),
        ];
        let found = find_untolerated_taint(&taints, &[], &["NoSchedule", "NoExecute"]).unwrap();
        assert_eq!(
            untolerated_reason(found),
            "node(s) had untolerated taint {node.kubernetes.io/unreachable: }"
        );
        assert!(
            find_untolerated_taint(
                &taints,
                &[tol(
                    "node.kubernetes.io/unreachable",
                    "Exists",
                    "",
                    "NoExecute"
                )],
                &["NoSchedule", "NoExecute"]
            )
            .is_none()
        );
        assert_eq!(count_intolerable_prefer_no_schedule(&taints, &[]), 1);
        assert_eq!(
            count_intolerable_prefer_no_schedule(
                &taints,
                &[tol("soft", "Exists", "", "PreferNoSchedule")]
            ),
            0
        );
        // A NoSchedule toleration does not help with PreferNoSchedule.
        assert_eq!(
            count_intolerable_prefer_no_schedule(
                &taints,
                &[tol("soft", "Exists", "", "NoSchedule")]
            ),
            1
        );
    }
}
