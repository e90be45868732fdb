//! postStart/preStop handlers (upstream's lifecycle HandlerRunner): exec, httpGet and sleep.
//! Upstream bounds none of them itself: preStop is cut short by the caller at the end of the
//! grace period, by dropping the future.

use std::time::Duration;

use k8s_openapi::api::core::v1::{LifecycleHandler, Pod};

use super::http::{self, Request};
use super::{LIFECYCLE_USER_AGENT, ProbeTarget};

/// An exec hook runs until it ends (upstream passes no timeout); the runtime still needs one.
const EXEC_HOOK_TIMEOUT: Duration = Duration::from_secs(24 * 60 * 60);

pub(super) async fn run(handler: &LifecycleHandler, target: &ProbeTarget) -> Result<(), String> {
    let container = &target.container.name;
    let pod = format_pod(&target.pod);
    if let Some(action) = &handler.exec {
        let command = action.command.clone().unwrap_or_default();
        let result = target
            .runtime
            .exec_sync(&target.container_id, &command, EXEC_HOOK_TIMEOUT)
            .await;
        return exec_result(&command, container, &pod, result);
    }
    if let Some(action) = &handler.http_get {
        let path = action.path.as_deref().unwrap_or_default();
        let failed = |error: String| {
            format!(
                "HTTP lifecycle hook ({path}) for Container {container:?} in Pod {pod:?} failed - error: {error}"
            )
        };
        let request = Request::for_action(action, target, LIFECYCLE_USER_AGENT).map_err(failed)?;
        return http_get(request).await.map_err(failed);
    }
    if let Some(action) = &handler.sleep {
        tokio::time::sleep(Duration::from_secs(action.seconds.max(0) as u64)).await;
        return Ok(());
    }
    // tcpSocket is accepted by the API only for compatibility: hooks with it fail at runtime.
    let what = if handler.tcp_socket.is_some() {
        "tcpSocket is not supported as a lifecycle handler"
    } else {
        "no exec, httpGet or sleep action"
    };
    Err(format!("Cannot run handler: invalid handler: {what}"))
}

/// An exec hook passes when the command exits 0; the message otherwise quotes the command, the
/// runtime's error and the output, as upstream's FailedPostStartHook/FailedPreStopHook events.
fn exec_result(
    command: &[String],
    container: &str,
    pod: &str,
    result: Result<(i32, Vec<u8>), runtime::container::RuntimeError>,
) -> Result<(), String> {
    let (error, output) = match result {
        Ok((0, _)) => return Ok(()),
        Ok((code, output)) => {
            let output = String::from_utf8_lossy(&output).into_owned();
            (
                format!(
                    "command '{}' exited with {code}: {output}",
                    command.join(" ")
                ),
                output,
            )
        }
        Err(e) => (e.to_string(), String::new()),
    };
    Err(format!(
        "Exec lifecycle hook ([{}]) for Container {container:?} in Pod {pod:?} failed - error: {error}, message: {output:?}",
        command.join(" ")
    ))
}

/// An httpGet hook fails only when no response comes (the status code is not checked, as
/// upstream). An HTTPS hook answered in plain HTTP is retried over HTTP, without credentials.
async fn http_get(request: Request) -> Result<(), String> {
    match http::get(&request).await {
        Ok(_) => Ok(()),
        Err(e) if e.plain_http_reply && request.url.scheme == "https" => {
            let mut fallback = request.clone();
            fallback.url.scheme = "http".into();
            fallback
                .headers
                .retain(|(name, _)| !name.eq_ignore_ascii_case("Authorization"));
            match http::get(&fallback).await {
                Ok(_) => {
                    tracing::warn!(
                        host = %request.url.host,
                        "HTTPS lifecycle hook got an HTTP response; the retry over HTTP succeeded"
                    );
                    Ok(())
                }
                Err(_) => Err(e.message),
            }
        }
        Err(e) => Err(e.message),
    }
}

/// `name_namespace(uid)`, how upstream names a pod in messages.
fn format_pod(pod: &Pod) -> String {
    format!(
        "{}_{}({})",
        pod.metadata.name.as_deref().unwrap_or_default(),
        pod.metadata.namespace.as_deref().unwrap_or_default(),
        pod.metadata.uid.as_deref().unwrap_or_default()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prober::http::tests::serve;
    use crate::prober::run_handler;
    use crate::prober::tests::{container_with_port, target};
    use k8s_openapi::api::core::v1::{HTTPGetAction, SleepAction, TCPSocketAction};
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

    fn http_hook(path: &str, port: IntOrString) -> LifecycleHandler {
        LifecycleHandler {
            http_get: Some(HTTPGetAction {
                path: Some(path.into()),
                port,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn http_hook_ignores_status_but_not_transport_errors() {
        let server = serve().await;
        let port = server.port;
        let (t, _dir) = target(container_with_port("http", i32::from(port)));
        let named = IntOrString::String("http".into());
        assert_eq!(
            run_handler(&http_hook("/status/500", named.clone()), &t).await,
            Ok(())
        );
        let seen = server.seen.lock().unwrap().clone();
        assert_eq!(seen[0].headers["user-agent"], "kube-lifecycle/1.33");
        drop(server);
        tokio::time::sleep(Duration::from_millis(50)).await;
        let err = run_handler(&http_hook("/hook", named), &t)
            .await
            .unwrap_err();
        assert_eq!(
            err,
            format!(
                "HTTP lifecycle hook (/hook) for Container \"app\" in Pod \"web_default(uid-1)\" failed - error: \
                 Get \"http://127.0.0.1:{port}/hook\": dial tcp 127.0.0.1:{port}: connect: connection refused"
            )
        );
    }

    #[tokio::test]
    async fn https_hook_answered_in_http_falls_back() {
        let server = serve().await;
        let (t, _dir) = target(container_with_port("http", i32::from(server.port)));
        let mut hook = http_hook("/ok", IntOrString::Int(i32::from(server.port)));
        hook.http_get.as_mut().unwrap().scheme = Some("HTTPS".into());
        assert_eq!(run_handler(&hook, &t).await, Ok(()));
        let paths: Vec<_> = server
            .seen
            .lock()
            .unwrap()
            .iter()
            .map(|s| s.path.clone())
            .collect();
        assert_eq!(paths, ["/ok"]);
    }

    #[tokio::test(start_paused = true)]
    async fn sleep_hook_sleeps() {
        let (t, _dir) = target(Default::default());
        let hook = LifecycleHandler {
            sleep: Some(SleepAction { seconds: 5 }),
            ..Default::default()
        };
        let started = tokio::time::Instant::now();
        assert_eq!(run_handler(&hook, &t).await, Ok(()));
        assert_eq!(started.elapsed().as_secs(), 5);
    }

    #[tokio::test]
    async fn tcp_socket_hook_fails() {
        let (t, _dir) = target(Default::default());
        let hook = LifecycleHandler {
            tcp_socket: Some(TCPSocketAction {
                port: IntOrString::Int(80),
                host: None,
            }),
            ..Default::default()
        };
        let err = run_handler(&hook, &t).await.unwrap_err();
        assert!(
            err.starts_with("Cannot run handler: invalid handler"),
            "{err}"
        );
    }

    #[test]
    fn exec_hook_messages() {
        let command: Vec<String> = ["sh", "-c", "echo no; exit 3"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(
            exec_result(&command, "app", "web_default(u)", Ok((0, b"x".to_vec()))),
            Ok(())
        );
        assert_eq!(
            exec_result(&command, "app", "web_default(u)", Ok((3, b"no\n".to_vec()))).unwrap_err(),
            "Exec lifecycle hook ([sh -c echo no; exit 3]) for Container \"app\" in Pod \"web_default(u)\" \
             failed - error: command 'sh -c echo no; exit 3' exited with 3: no\n, message: \"no\\n\""
        );
        let gone = runtime::container::RuntimeError::NotFound { id: "c1".into() };
        assert_eq!(
            exec_result(&command, "app", "p", Err(gone)).unwrap_err(),
            "Exec lifecycle hook ([sh -c echo no; exit 3]) for Container \"app\" in Pod \"p\" \
             failed - error: container c1: not found, message: \"\""
        );
    }
}
