//! End to end: Jobs, CronJobs and TTL-after-finished, with simulated nodes running the pods
//! (`sh -c "exit N"` finishes with N).

mod support;

use std::time::Duration;

use serde_json::Value;
use support::{Server, eventually};

fn start() -> Server {
    Server::start_with(&["--sim-nodes", "2"])
}

/// A Job manifest; `extra` is spliced into its spec.
fn job_yaml(name: &str, command: &str, extra: &str) -> String {
    format!(
        r#"apiVersion: batch/v1
kind: Job
metadata:
  name: {name}
spec:
{extra}
  template:
    spec:
      restartPolicy: Never
      containers:
      - name: main
        image: busybox
        command: ["sh", "-c", "{command}"]
"#
    )
}

fn condition(job: &Value, type_: &str) -> Option<Value> {
    job["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_ && c["status"] == "True")
        .cloned()
}

/// Wait (bounded) for the Job to get the condition; returns the Job.
fn wait_condition(server: &Server, name: &str, type_: &str, timeout: Duration) -> Value {
    eventually(timeout, &format!("job {name} {type_}"), || {
        let job = server.get_json(&["job", name]);
        condition(&job, type_).map(|_| job)
    })
}

fn pods_of(server: &Server, job: &str) -> Vec<Value> {
    let list = server.get_json(&["pods", "-l", &format!("batch.kubernetes.io/job-name={job}")]);
    list["items"].as_array().cloned().unwrap_or_default()
}

/// Seconds since the epoch of a UTC RFC 3339 time (`2024-03-01T10:05:00Z`).
fn epoch_seconds(text: &str) -> i64 {
    let n = |r: std::ops::Range<usize>| text[r].parse::<i64>().unwrap();
    let (y, m, d) = (n(0..4), n(5..7), n(8..10));
    let (hh, mm, ss) = (n(11..13), n(14..16), n(17..19));
    assert!(text.ends_with('Z'), "{text}");
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    days * 86_400 + hh * 3600 + mm * 60 + ss
}

#[test]
fn epoch_seconds_of_utc_times() {
    assert_eq!(epoch_seconds("1970-01-01T00:00:00Z"), 0);
    assert_eq!(epoch_seconds("2024-03-01T10:05:00Z"), 1_709_287_500);
}

fn events_for(server: &Server, name: &str) -> String {
    server.kubectl_ok(&[
        "get",
        "events",
        "--field-selector",
        &format!("involvedObject.name={name}"),
        "-o",
        "custom-columns=REASON:.reason,MESSAGE:.message",
    ])
}

#[test]
fn job_with_completions_and_parallelism_completes() {
    let server = start();
    server.apply(&job_yaml(
        "pi",
        "exit 0",
        "  completions: 3\n  parallelism: 2",
    ));
    server.kubectl_ok(&[
        "wait",
        "--for=condition=complete",
        "job/pi",
        "--timeout=90s",
    ]);
    let job = server.get_json(&["job", "pi"]);
    let status = &job["status"];
    assert_eq!(status["succeeded"], 3, "{status}");
    assert_eq!(status["active"].as_i64().unwrap_or(0), 0, "{status}");
    assert!(status["completionTime"].is_string(), "{status}");
    assert!(status["startTime"].is_string(), "{status}");
    let met = condition(&job, "SuccessCriteriaMet").expect("SuccessCriteriaMet condition");
    assert_eq!(met["reason"], "CompletionsReached");
    assert_eq!(
        condition(&job, "Complete").unwrap()["message"],
        "Reached expected number of succeeded pods"
    );
    // The selector the API server generated matches the pods, which the Job controls and no
    // longer hold the tracking finalizer once counted.
    let uid = job["metadata"]["uid"].as_str().unwrap();
    assert_eq!(
        job["spec"]["selector"]["matchLabels"]["batch.kubernetes.io/controller-uid"],
        uid
    );
    let pods = pods_of(&server, "pi");
    assert!(pods.len() >= 3, "{pods:?}");
    for pod in &pods {
        let owner = &pod["metadata"]["ownerReferences"][0];
        assert_eq!(
            (
                owner["kind"].as_str(),
                owner["uid"].as_str(),
                owner["controller"].as_bool()
            ),
            (Some("Job"), Some(uid), Some(true))
        );
        let finalizers = pod["metadata"]["finalizers"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert!(
            !finalizers
                .iter()
                .any(|f| f == "batch.kubernetes.io/job-tracking"),
            "{pod}"
        );
    }
    let succeeded = pods
        .iter()
        .filter(|p| p["status"]["phase"] == "Succeeded")
        .count();
    assert_eq!(succeeded, 3);
    let events = eventually(Duration::from_secs(10), "job events", || {
        let e = events_for(&server, "pi");
        (e.contains("SuccessfulCreate") && e.contains("Completed")).then_some(e)
    });
    assert!(events.contains("Created pod: pi-"), "{events}");
    assert!(events.contains("Job completed"), "{events}");
}

#[test]
fn failing_jobs_fail_with_upstream_reasons() {
    let server = start();
    // Two failures exceed backoffLimit 1 (the second pod comes after a 10 s backoff).
    server.apply(&job_yaml("flaky", "exit 1", "  backoffLimit: 1"));
    // A FailJob rule fails the Job at the first matching exit code.
    server.apply(&job_yaml(
        "policy",
        "exit 42",
        "  backoffLimit: 6
  podFailurePolicy:
    rules:
    - action: FailJob
      onExitCodes:
        containerName: main
        operator: In
        values: [42]",
    ));
    // A pod that never finishes outlives activeDeadlineSeconds.
    server.apply(&job_yaml(
        "slow",
        "sleep 3600",
        "  activeDeadlineSeconds: 3",
    ));

    let policy = wait_condition(&server, "policy", "Failed", Duration::from_secs(60));
    let failed = condition(&policy, "Failed").unwrap();
    assert_eq!(failed["reason"], "PodFailurePolicy", "{policy}");
    let message = failed["message"].as_str().unwrap();
    assert!(
        message.starts_with("Container main for pod default/policy-")
            && message.ends_with("failed with exit code 42 matching FailJob rule at index 0"),
        "{message}"
    );
    assert!(condition(&policy, "FailureTarget").is_some(), "{policy}");
    assert_eq!(policy["status"]["failed"], 1);

    let slow = wait_condition(&server, "slow", "Failed", Duration::from_secs(60));
    assert_eq!(
        condition(&slow, "Failed").unwrap()["reason"],
        "DeadlineExceeded",
        "{slow}"
    );
    assert_eq!(
        condition(&slow, "Failed").unwrap()["message"],
        "Job was active longer than specified deadline"
    );
    assert_eq!(slow["status"]["active"].as_i64().unwrap_or(0), 0, "{slow}");

    let flaky = wait_condition(&server, "flaky", "Failed", Duration::from_secs(90));
    let failed = condition(&flaky, "Failed").unwrap();
    assert_eq!(failed["reason"], "BackoffLimitExceeded", "{flaky}");
    assert_eq!(
        failed["message"],
        "Job has reached the specified backoff limit"
    );
    assert_eq!(flaky["status"]["failed"], 2, "{flaky}");
    assert_eq!(flaky["status"]["succeeded"].as_i64().unwrap_or(0), 0);
    // The replacement came only after the backoff.
    let pods = pods_of(&server, "flaky");
    assert_eq!(pods.len(), 2, "{pods:?}");
    let mut created: Vec<String> = pods
        .iter()
        .map(|p| {
            p["metadata"]["creationTimestamp"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    created.sort();
    let gap = epoch_seconds(&created[1]) - epoch_seconds(&created[0]);
    assert!(gap >= 9, "replacement after {gap} s");
    let events = eventually(Duration::from_secs(10), "failure event", || {
        let e = events_for(&server, "flaky");
        e.contains("BackoffLimitExceeded").then_some(e)
    });
    assert!(
        events.contains("Job has reached the specified backoff limit"),
        "{events}"
    );
}

#[test]
fn indexed_job_completes_every_index() {
    let server = start();
    server.apply(&job_yaml(
        "indexed",
        "exit 0",
        "  completions: 4\n  parallelism: 2\n  completionMode: Indexed",
    ));
    server.kubectl_ok(&[
        "wait",
        "--for=condition=complete",
        "job/indexed",
        "--timeout=90s",
    ]);
    let job = server.get_json(&["job", "indexed"]);
    assert_eq!(job["status"]["completedIndexes"], "0-3", "{job}");
    assert_eq!(job["status"]["succeeded"], 4);
    let pods = pods_of(&server, "indexed");
    let mut indexes: Vec<String> = Vec::new();
    for pod in &pods {
        let index = pod["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"]
            .as_str()
            .expect("index annotation")
            .to_string();
        assert_eq!(
            pod["metadata"]["labels"]["batch.kubernetes.io/job-completion-index"],
            index.as_str()
        );
        assert_eq!(pod["spec"]["hostname"], format!("indexed-{index}"));
        assert!(
            pod["metadata"]["name"]
                .as_str()
                .unwrap()
                .starts_with(&format!("indexed-{index}-")),
            "{pod}"
        );
        let env = &pod["spec"]["containers"][0]["env"];
        assert!(env.to_string().contains("JOB_COMPLETION_INDEX"), "{env}");
        if pod["status"]["phase"] == "Succeeded" {
            indexes.push(index);
        }
    }
    indexes.sort();
    indexes.dedup();
    assert_eq!(indexes, ["0", "1", "2", "3"]);
}

#[test]
fn suspended_job_resumes_and_finished_job_expires() {
    let server = start();
    server.apply(&job_yaml(
        "later",
        "exit 0",
        "  suspend: true\n  parallelism: 2\n  completions: 2",
    ));
    let suspended = wait_condition(&server, "later", "Suspended", Duration::from_secs(30));
    assert_eq!(
        condition(&suspended, "Suspended").unwrap()["reason"],
        "JobSuspended"
    );
    assert!(suspended["status"]["startTime"].is_null(), "{suspended}");
    assert!(pods_of(&server, "later").is_empty());

    server.kubectl_ok(&[
        "patch",
        "job",
        "later",
        "--type=merge",
        "-p",
        r#"{"spec":{"suspend":false}}"#,
    ]);
    server.kubectl_ok(&[
        "wait",
        "--for=condition=complete",
        "job/later",
        "--timeout=90s",
    ]);
    let job = server.get_json(&["job", "later"]);
    let resumed = job["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Suspended")
        .cloned()
        .expect("Suspended condition kept");
    assert_eq!(
        (resumed["status"].as_str(), resumed["reason"].as_str()),
        (Some("False"), Some("JobResumed"))
    );
    let events = events_for(&server, "later");
    assert!(
        events.contains("Suspended") && events.contains("Resumed"),
        "{events}"
    );

    // Suspending a running Job removes its active pods.
    server.apply(&job_yaml(
        "paused",
        "sleep 3600",
        "  parallelism: 2\n  completions: 2",
    ));
    eventually(Duration::from_secs(30), "paused pods active", || {
        let j = server.get_json(&["job", "paused"]);
        (j["status"]["active"] == 2).then_some(())
    });
    server.kubectl_ok(&[
        "patch",
        "job",
        "paused",
        "--type=merge",
        "-p",
        r#"{"spec":{"suspend":true}}"#,
    ]);
    eventually(Duration::from_secs(30), "paused pods gone", || {
        let j = server.get_json(&["job", "paused"]);
        let active = j["status"]["active"].as_i64().unwrap_or(0);
        let live = pods_of(&server, "paused")
            .iter()
            .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
            .count();
        (active == 0 && live == 0 && condition(&j, "Suspended").is_some()).then_some(())
    });

    // ttlSecondsAfterFinished: the finished Job is deleted (foreground, as upstream; the
    // garbage collector completes it).
    server.apply(&job_yaml(
        "short-lived",
        "exit 0",
        "  ttlSecondsAfterFinished: 2",
    ));
    server.kubectl_ok(&[
        "wait",
        "--for=condition=complete",
        "job/short-lived",
        "--timeout=90s",
    ]);
    eventually(Duration::from_secs(30), "expired job deleted", || {
        let out = server.kubectl(&["get", "job", "short-lived", "-o", "json"]);
        if !out.status.success() {
            return String::from_utf8_lossy(&out.stderr)
                .contains("NotFound")
                .then_some(());
        }
        let j: Value = serde_json::from_slice(&out.stdout).unwrap();
        j["metadata"]["deletionTimestamp"].is_string().then_some(())
    });
}

#[test]
fn cronjob_fires_and_jobs_can_be_created_from_it() {
    let server = start();
    server.apply(
        r#"apiVersion: batch/v1
kind: CronJob
metadata:
  name: hello
spec:
  schedule: "* * * * *"
  timeZone: "Etc/UTC"
  jobTemplate:
    metadata:
      labels:
        app: hello
    spec:
      template:
        spec:
          restartPolicy: Never
          containers:
          - name: main
            image: busybox
            command: ["sh", "-c", "exit 0"]
"#,
    );
    // kubectl builds the Job client-side from the template, owned by the CronJob.
    let out = server.kubectl_ok(&["create", "job", "manual", "--from=cronjob/hello"]);
    assert!(out.contains("job.batch/manual created"), "{out}");
    let manual = server.get_json(&["job", "manual"]);
    assert_eq!(manual["metadata"]["ownerReferences"][0]["kind"], "CronJob");
    assert_eq!(
        manual["metadata"]["annotations"]["cronjob.kubernetes.io/instantiate"],
        "manual"
    );
    server.kubectl_ok(&[
        "wait",
        "--for=condition=complete",
        "job/manual",
        "--timeout=60s",
    ]);

    // The next minute's run (at most ~60 s away).
    let scheduled = eventually(Duration::from_secs(90), "a scheduled job", || {
        let jobs = server.get_json(&["jobs", "-l", "app=hello"]);
        jobs["items"].as_array()?.iter().find_map(|j| {
            let name = j["metadata"]["name"].as_str()?;
            let minutes = name.strip_prefix("hello-")?.parse::<i64>().ok()?;
            Some((name.to_string(), minutes, j.clone()))
        })
    });
    let (name, minutes, job) = scheduled;
    let stamp = job["metadata"]["annotations"]["batch.kubernetes.io/cronjob-scheduled-timestamp"]
        .as_str()
        .expect("scheduled timestamp annotation")
        .to_string();
    assert!(stamp.ends_with('Z'), "{stamp}");
    assert_eq!(epoch_seconds(&stamp), minutes * 60, "{stamp}");
    let owner = &job["metadata"]["ownerReferences"][0];
    assert_eq!(
        (owner["kind"].as_str(), owner["name"].as_str()),
        (Some("CronJob"), Some("hello"))
    );
    server.kubectl_ok(&[
        "wait",
        "--for=condition=complete",
        &format!("job/{name}"),
        "--timeout=60s",
    ]);
    let cronjob = eventually(Duration::from_secs(20), "cronjob status", || {
        let cj = server.get_json(&["cronjob", "hello"]);
        (cj["status"]["lastSuccessfulTime"].is_string() && cj["status"]["active"].is_null())
            .then_some(cj)
    });
    let last = cronjob["status"]["lastScheduleTime"].as_str().unwrap();
    assert_eq!(epoch_seconds(last), minutes * 60, "{last}");
    let events = events_for(&server, "hello");
    assert!(events.contains(&format!("Created job {name}")), "{events}");
    assert!(events.contains("SawCompletedJob"), "{events}");
}
