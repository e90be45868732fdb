//! exec probes: run a command in the container; exit code 0 is success.

use std::time::Duration;

use k8s_openapi::api::core::v1::Container;
use runtime::container::RuntimeError;

use super::{Outcome, ProbeTarget};

/// Extra time given to the runtime beyond timeoutSeconds before the probe gives up on it (the
/// runtime enforces the timeout itself; this only guards against a hung exec).
const EXEC_GRACE: Duration = Duration::from_secs(2);

pub(super) async fn probe(target: &ProbeTarget, command: &[String], timeout: Duration) -> Outcome {
    let run = target
        .runtime
        .exec_sync(&target.container_id, command, timeout);
    match tokio::time::timeout(timeout + EXEC_GRACE, run).await {
        Ok(result) => outcome(command, result),
        Err(_) => Outcome::Failure(timed_out(command)),
    }
}

/// Maps the runtime's answer to a probe outcome: exit 0 passes, another exit code fails with
/// the command's output as the message, a timeout fails, and any other runtime error means the
/// probe could not run.
pub(super) fn outcome(command: &[String], result: Result<(i32, Vec<u8>), RuntimeError>) -> Outcome {
    match result {
        Ok((0, output)) => Outcome::Success(String::from_utf8_lossy(&output).into_owned()),
        Ok((_, output)) => Outcome::Failure(String::from_utf8_lossy(&output).into_owned()),
        Err(e) if is_timeout(&e) => Outcome::Failure(timed_out(command)),
        Err(e) => Outcome::Error(e.to_string()),
    }
}

/// Whether the runtime gave up on the command because its timeout passed.
fn is_timeout(e: &RuntimeError) -> bool {
    match e {
        RuntimeError::Io { source, .. } => source.kind() == std::io::ErrorKind::TimedOut,
        other => other.to_string().contains("timed out"),
    }
}

fn timed_out(command: &[String]) -> String {
    format!("command {:?} timed out", command.join(" "))
}

/// Upstream expands `$(VAR)` in probe commands with the container's plain `env` values only
/// (not valueFrom): `$$` escapes a `$`, and unknown references stay as written.
pub(super) fn expand_command(command: &[String], container: &Container) -> Vec<String> {
    let lookup = |name: &str| -> Option<String> {
        container
            .env
            .iter()
            .flatten()
            .rev()
            .find(|e| e.name == name && e.value_from.is_none())
            .map(|e| e.value.clone().unwrap_or_default())
    };
    command.iter().map(|arg| expand(arg, &lookup)).collect()
}

fn expand(input: &str, lookup: &impl Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(stripped) = after.strip_prefix('$') {
            out.push('$');
            rest = stripped;
        } else if let Some(inner) = after.strip_prefix('(')
            && let Some(end) = inner.find(')')
        {
            let name = &inner[..end];
            match lookup(name) {
                Some(value) => out.push_str(&value),
                None => {
                    out.push_str("$(");
                    out.push_str(name);
                    out.push(')');
                }
            }
            rest = &inner[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{EnvVar, EnvVarSource, ObjectFieldSelector};

    fn cmd(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn exit_codes_map_to_outcomes() {
        let c = cmd(&["cat", "/tmp/healthy"]);
        assert_eq!(
            outcome(&c, Ok((0, b"ok\n".to_vec()))),
            Outcome::Success("ok\n".into())
        );
        assert_eq!(
            outcome(
                &c,
                Ok((
                    1,
                    b"cat: can't open '/tmp/healthy': No such file or directory\n".to_vec()
                ))
            ),
            Outcome::Failure("cat: can't open '/tmp/healthy': No such file or directory\n".into())
        );
        let timeout = RuntimeError::Io {
            path: "/proc".into(),
            source: std::io::Error::from(std::io::ErrorKind::TimedOut),
        };
        assert_eq!(
            outcome(&c, Err(timeout)),
            Outcome::Failure("command \"cat /tmp/healthy\" timed out".into())
        );
        let gone = RuntimeError::NotFound { id: "c1".into() };
        assert_eq!(
            outcome(&c, Err(gone)),
            Outcome::Error("container c1: not found".into())
        );
    }

    #[test]
    fn commands_expand_static_env_only() {
        let container = Container {
            env: Some(vec![
                EnvVar {
                    name: "FILE".into(),
                    value: Some("/tmp/healthy".into()),
                    value_from: None,
                },
                EnvVar {
                    name: "NODE".into(),
                    value: None,
                    value_from: Some(EnvVarSource {
                        field_ref: Some(ObjectFieldSelector {
                            field_path: "spec.nodeName".into(),
                            api_version: None,
                        }),
                        ..Default::default()
                    }),
                },
            ]),
            ..Default::default()
        };
        let expanded = expand_command(
            &cmd(&["cat", "$(FILE)", "$(NODE)", "$$(FILE)", "$HOME", "$(UNSET"]),
            &container,
        );
        assert_eq!(
            expanded,
            cmd(&[
                "cat",
                "/tmp/healthy",
                "$(NODE)",
                "$(FILE)",
                "$HOME",
                "$(UNSET"
            ])
        );
    }
}
