//! The pod row: READY, the STATUS reason (init containers, waiting/terminated reasons,
//! Terminating), RESTARTS with the time of the last restart, and the wide columns.

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::format::{age, arr_at, bool_at, get, int_at, name, since, str_at, time_at};

/// `node.NodeUnreachablePodReason`: set by the node lifecycle controller.
const NODE_UNREACHABLE_REASON: &str = "NodeLost";

fn is_restartable_init(init_specs: &[Value], container: &str) -> bool {
    init_specs
        .iter()
        .any(|c| str_at(c, &["name"]) == container && str_at(c, &["restartPolicy"]) == "Always")
}

fn condition_true(status: &Value, ty: &str) -> bool {
    arr_at(status, &["conditions"])
        .iter()
        .find(|c| str_at(c, &["type"]) == ty)
        .is_some_and(|c| str_at(c, &["status"]) == "True")
}

/// Keeps the later of the two, as the `lastRestartDate.Before(&terminatedDate)` updates do.
fn keep_latest(latest: &mut Option<DateTime<Utc>>, candidate: Option<DateTime<Utc>>) {
    if let Some(c) = candidate
        && latest.is_none_or(|l| l < c)
    {
        *latest = Some(c);
    }
}

/// When the container last terminated (from `lastState.terminated.finishedAt`).
fn last_finished(status: &Value) -> Option<DateTime<Utc>> {
    time_at(status, &["lastState", "terminated", "finishedAt"])
}

/// `Signal:9` / `ExitCode:1` for a termination without a reason.
fn exit_reason(terminated: &Value) -> String {
    let signal = int_at(terminated, &["signal"]);
    if signal != 0 {
        format!("Signal:{signal}")
    } else {
        format!("ExitCode:{}", int_at(terminated, &["exitCode"]))
    }
}

pub(super) fn cells(pod: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let null = Value::Null;
    let spec = get(pod, &["spec"]).unwrap_or(&null);
    let status = get(pod, &["status"]).unwrap_or(&null);
    let init_specs = arr_at(spec, &["initContainers"]);

    let total = arr_at(spec, &["containers"]).len()
        + init_specs
            .iter()
            .filter(|c| str_at(c, &["restartPolicy"]) == "Always")
            .count();
    let mut ready = 0usize;
    let mut restarts = 0i64;
    let mut restartable_init_restarts = 0i64;
    let mut last_restart = None;
    let mut last_restartable_init_restart = None;

    let phase = str_at(status, &["phase"]);
    let status_reason = str_at(status, &["reason"]);
    let mut reason = if status_reason.is_empty() {
        phase.to_string()
    } else {
        status_reason.to_string()
    };
    if arr_at(status, &["conditions"]).iter().any(|c| {
        str_at(c, &["type"]) == "PodScheduled" && str_at(c, &["reason"]) == "SchedulingGated"
    }) {
        reason = "SchedulingGated".to_string();
    }

    let mut initializing = false;
    for (i, cs) in arr_at(status, &["initContainerStatuses"])
        .iter()
        .enumerate()
    {
        let count = int_at(cs, &["restartCount"]);
        let finished = last_finished(cs);
        restarts += count;
        keep_latest(&mut last_restart, finished);
        let restartable = is_restartable_init(init_specs, str_at(cs, &["name"]));
        if restartable {
            restartable_init_restarts += count;
            keep_latest(&mut last_restartable_init_restart, finished);
        }
        let terminated = get(cs, &["state", "terminated"]);
        let waiting = get(cs, &["state", "waiting"]);
        if terminated.is_some_and(|t| int_at(t, &["exitCode"]) == 0) {
            continue;
        }
        // A started sidecar counts like a regular container for READY.
        if restartable && bool_at(cs, &["started"]) {
            if bool_at(cs, &["ready"]) {
                ready += 1;
            }
            continue;
        }
        if let Some(t) = terminated {
            let r = str_at(t, &["reason"]);
            reason = if r.is_empty() {
                format!("Init:{}", exit_reason(t))
            } else {
                format!("Init:{r}")
            };
        } else if let Some(w) = waiting
            && !str_at(w, &["reason"]).is_empty()
            && str_at(w, &["reason"]) != "PodInitializing"
        {
            reason = format!("Init:{}", str_at(w, &["reason"]));
        } else {
            reason = format!("Init:{i}/{}", init_specs.len());
        }
        initializing = true;
        break;
    }

    if !initializing || condition_true(status, "Initialized") {
        restarts = restartable_init_restarts;
        last_restart = last_restartable_init_restart;
        let mut has_running = false;
        for cs in arr_at(status, &["containerStatuses"]).iter().rev() {
            restarts += int_at(cs, &["restartCount"]);
            keep_latest(&mut last_restart, last_finished(cs));
            let waiting_reason = get(cs, &["state", "waiting"]).map(|w| str_at(w, &["reason"]));
            let terminated = get(cs, &["state", "terminated"]);
            if let Some(r) = waiting_reason
                && !r.is_empty()
            {
                reason = r.to_string();
            } else if let Some(t) = terminated {
                let r = str_at(t, &["reason"]);
                reason = if r.is_empty() {
                    exit_reason(t)
                } else {
                    r.to_string()
                };
            } else if bool_at(cs, &["ready"]) && get(cs, &["state", "running"]).is_some() {
                has_running = true;
                ready += 1;
            }
        }
        // A pod whose last container completed but another still runs is not "Completed".
        if reason == "Completed" && has_running {
            reason = if condition_true(status, "Ready") {
                "Running".to_string()
            } else {
                "NotReady".to_string()
            };
        }
    }

    let deleting = get(pod, &["metadata", "deletionTimestamp"]).is_some();
    if deleting && status_reason == NODE_UNREACHABLE_REASON {
        reason = "Unknown".to_string();
    } else if deleting && phase != "Succeeded" && phase != "Failed" {
        reason = "Terminating".to_string();
    }

    let restarts_cell = match last_restart {
        Some(t) if restarts != 0 => format!("{restarts} ({} ago)", since(Some(t), now)),
        _ => restarts.to_string(),
    };

    // Wide columns.
    let mut pod_ip = arr_at(status, &["podIPs"])
        .first()
        .map(|ip| str_at(ip, &["ip"]))
        .unwrap_or_else(|| str_at(status, &["podIP"]));
    if pod_ip.is_empty() {
        pod_ip = "<none>";
    }
    let node = none_if_empty(str_at(spec, &["nodeName"]));
    let nominated = none_if_empty(str_at(status, &["nominatedNodeName"]));
    let gates = arr_at(spec, &["readinessGates"]);
    let readiness_gates = if gates.is_empty() {
        "<none>".to_string()
    } else {
        let conditions = arr_at(status, &["conditions"]);
        let true_count = gates
            .iter()
            .filter(|g| {
                let ty = str_at(g, &["conditionType"]);
                conditions
                    .iter()
                    .find(|c| str_at(c, &["type"]) == ty)
                    .is_some_and(|c| str_at(c, &["status"]) == "True")
            })
            .count();
        format!("{true_count}/{}", gates.len())
    };

    vec![
        Value::from(name(pod)),
        Value::String(format!("{ready}/{total}")),
        Value::String(reason),
        Value::String(restarts_cell),
        age(pod, now),
        Value::from(pod_ip),
        Value::from(node),
        Value::from(nominated),
        Value::String(readiness_gates),
    ]
}

fn none_if_empty(s: &str) -> &str {
    if s.is_empty() { "<none>" } else { s }
}

/// Row conditions marking finished pods, which clients may use to hide them.
pub(super) fn row_conditions(pod: &Value) -> Option<Value> {
    match str_at(pod, &["status", "phase"]) {
        "Succeeded" => Some(json!([{
            "type": "Completed",
            "status": "True",
            "reason": "Succeeded",
            "message": "The pod has completed successfully.",
        }])),
        "Failed" => Some(json!([{
            "type": "Completed",
            "status": "True",
            "reason": "Failed",
            "message": "The pod failed.",
        }])),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2024, 1, 1, 12, 0, 0).unwrap()
    }

    fn pod(spec: Value, status: Value) -> Value {
        json!({
            "metadata": {"name": "p", "creationTimestamp": "2024-01-01T11:55:00Z"},
            "spec": spec,
            "status": status,
        })
    }

    fn ready_status_reason_restarts(p: &Value) -> (String, String, String) {
        let c = cells(p, now());
        (
            c[1].as_str().unwrap().to_string(),
            c[2].as_str().unwrap().to_string(),
            c[3].as_str().unwrap().to_string(),
        )
    }

    fn running(name: &str, ready: bool, restarts: i64) -> Value {
        json!({"name": name, "ready": ready, "restartCount": restarts,
               "state": {"running": {"startedAt": "2024-01-01T11:56:00Z"}}})
    }

    #[test]
    fn running_pod_counts_ready_containers() {
        let p = pod(
            json!({"containers": [{"name": "a"}, {"name": "b"}], "nodeName": "n1"}),
            json!({"phase": "Running", "podIP": "10.0.0.5",
                   "containerStatuses": [running("a", true, 0), running("b", false, 0)]}),
        );
        let c = cells(&p, now());
        assert_eq!(c[0], "p");
        assert_eq!(c[1], "1/2");
        assert_eq!(c[2], "Running");
        assert_eq!(c[3], "0");
        assert_eq!(c[4], "5m");
        assert_eq!(c[5], "10.0.0.5");
        assert_eq!(c[6], "n1");
        assert_eq!(c[7], "<none>");
        assert_eq!(c[8], "<none>");
    }

    #[test]
    fn pending_pod_without_statuses_shows_phase() {
        let p = pod(
            json!({"containers": [{"name": "a"}]}),
            json!({"phase": "Pending"}),
        );
        assert_eq!(
            ready_status_reason_restarts(&p),
            ("0/1".into(), "Pending".into(), "0".into())
        );
        let c = cells(&p, now());
        assert_eq!(c[5], "<none>");
        assert_eq!(c[6], "<none>");
    }

    #[test]
    fn waiting_reason_and_restarts_with_last_restart_time() {
        let p = pod(
            json!({"containers": [{"name": "a"}]}),
            json!({"phase": "Running", "containerStatuses": [{
                "name": "a", "ready": false, "restartCount": 5,
                "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                "lastState": {"terminated": {"exitCode": 1, "finishedAt": "2024-01-01T11:57:00Z"}}
            }]}),
        );
        assert_eq!(
            ready_status_reason_restarts(&p),
            ("0/1".into(), "CrashLoopBackOff".into(), "5 (3m ago)".into())
        );
    }

    #[test]
    fn terminated_reasons_and_exit_codes() {
        let completed = pod(
            json!({"containers": [{"name": "a"}]}),
            json!({"phase": "Succeeded", "containerStatuses": [{
                "name": "a", "ready": false, "restartCount": 0,
                "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}]}),
        );
        assert_eq!(ready_status_reason_restarts(&completed).1, "Completed");
        assert!(row_conditions(&completed).is_some());

        let signal = pod(
            json!({"containers": [{"name": "a"}]}),
            json!({"phase": "Failed", "containerStatuses": [{
                "name": "a", "state": {"terminated": {"exitCode": 137, "signal": 9}}}]}),
        );
        assert_eq!(ready_status_reason_restarts(&signal).1, "Signal:9");

        let exit = pod(
            json!({"containers": [{"name": "a"}]}),
            json!({"phase": "Failed", "containerStatuses": [{
                "name": "a", "state": {"terminated": {"exitCode": 2}}}]}),
        );
        assert_eq!(ready_status_reason_restarts(&exit).1, "ExitCode:2");
        assert_eq!(row_conditions(&exit).unwrap()[0]["reason"], "Failed");
    }

    #[test]
    fn completed_container_with_running_sibling_is_running_or_not_ready() {
        let statuses = json!([
            {"name": "a", "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}},
            running("b", true, 0),
        ]);
        // Containers are walked last-first, so "a" (Completed) sets the reason last.
        let ready_pod = pod(
            json!({"containers": [{"name": "a"}, {"name": "b"}]}),
            json!({"phase": "Running", "containerStatuses": statuses,
                   "conditions": [{"type": "Ready", "status": "True"}]}),
        );
        assert_eq!(
            ready_status_reason_restarts(&ready_pod),
            ("1/2".into(), "Running".into(), "0".into())
        );
        let not_ready = pod(
            json!({"containers": [{"name": "a"}, {"name": "b"}]}),
            json!({"phase": "Running", "containerStatuses": statuses,
                   "conditions": [{"type": "Ready", "status": "False"}]}),
        );
        assert_eq!(ready_status_reason_restarts(&not_ready).1, "NotReady");
    }

    #[test]
    fn init_container_progress_and_failures() {
        let spec = json!({"initContainers": [{"name": "i1"}, {"name": "i2"}],
                          "containers": [{"name": "a"}]});
        let waiting_main =
            json!([{"name": "a", "state": {"waiting": {"reason": "PodInitializing"}}}]);

        let first_running = pod(
            spec.clone(),
            json!({"phase": "Pending", "containerStatuses": waiting_main,
                   "initContainerStatuses": [
                       {"name": "i1", "state": {"running": {}}},
                       {"name": "i2", "state": {"waiting": {"reason": "PodInitializing"}}}]}),
        );
        assert_eq!(
            ready_status_reason_restarts(&first_running),
            ("0/1".into(), "Init:0/2".into(), "0".into())
        );

        let second_running = pod(
            spec.clone(),
            json!({"phase": "Pending", "initContainerStatuses": [
                       {"name": "i1", "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}},
                       {"name": "i2", "state": {"running": {}}}]}),
        );
        assert_eq!(ready_status_reason_restarts(&second_running).1, "Init:1/2");

        let crash = pod(
            spec.clone(),
            json!({"phase": "Pending", "initContainerStatuses": [
                       {"name": "i1", "restartCount": 3,
                        "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                        "lastState": {"terminated": {"exitCode": 1, "finishedAt": "2024-01-01T11:59:00Z"}}}]}),
        );
        assert_eq!(
            ready_status_reason_restarts(&crash),
            (
                "0/1".into(),
                "Init:CrashLoopBackOff".into(),
                "3 (60s ago)".into()
            )
        );

        let failed = pod(
            spec.clone(),
            json!({"phase": "Failed", "initContainerStatuses": [
                       {"name": "i1", "state": {"terminated": {"exitCode": 1, "reason": "Error"}}}]}),
        );
        assert_eq!(ready_status_reason_restarts(&failed).1, "Init:Error");

        let no_reason = pod(
            spec,
            json!({"phase": "Pending", "initContainerStatuses": [
                       {"name": "i1", "state": {"terminated": {"exitCode": 3}}}]}),
        );
        assert_eq!(
            ready_status_reason_restarts(&no_reason).1,
            "Init:ExitCode:3"
        );
    }

    #[test]
    fn sidecar_init_containers_count_towards_ready() {
        let p = pod(
            json!({"initContainers": [{"name": "side", "restartPolicy": "Always"}],
                   "containers": [{"name": "a"}]}),
            json!({"phase": "Running",
                   "conditions": [{"type": "Initialized", "status": "True"}],
                   "initContainerStatuses": [{"name": "side", "started": true, "ready": true,
                       "restartCount": 2, "state": {"running": {}},
                       "lastState": {"terminated": {"exitCode": 1, "finishedAt": "2024-01-01T11:50:00Z"}}}],
                   "containerStatuses": [running("a", true, 1)]}),
        );
        assert_eq!(
            ready_status_reason_restarts(&p),
            ("2/2".into(), "Running".into(), "3 (10m ago)".into())
        );
    }

    #[test]
    fn deletion_gives_terminating_or_unknown() {
        let mut p = pod(
            json!({"containers": [{"name": "a"}]}),
            json!({"phase": "Running", "containerStatuses": [running("a", true, 0)]}),
        );
        p["metadata"]["deletionTimestamp"] = json!("2024-01-01T12:00:00Z");
        assert_eq!(ready_status_reason_restarts(&p).1, "Terminating");

        p["status"]["reason"] = json!("NodeLost");
        assert_eq!(ready_status_reason_restarts(&p).1, "Unknown");

        let mut done = pod(json!({"containers": []}), json!({"phase": "Succeeded"}));
        done["metadata"]["deletionTimestamp"] = json!("2024-01-01T12:00:00Z");
        assert_eq!(ready_status_reason_restarts(&done).1, "Succeeded");
    }

    #[test]
    fn scheduling_gated_and_readiness_gates() {
        let p = pod(
            json!({"containers": [{"name": "a"}],
                   "readinessGates": [{"conditionType": "x/one"}, {"conditionType": "x/two"}]}),
            json!({"phase": "Pending", "nominatedNodeName": "n2", "conditions": [
                {"type": "PodScheduled", "status": "False", "reason": "SchedulingGated"},
                {"type": "x/one", "status": "True"},
                {"type": "x/two", "status": "False"}]}),
        );
        let c = cells(&p, now());
        assert_eq!(c[2], "SchedulingGated");
        assert_eq!(c[7], "n2");
        assert_eq!(c[8], "1/2");
    }
}
