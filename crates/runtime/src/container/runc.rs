//! The runc commands the agent runs itself (the shim runs create, start and delete).

use std::process::Stdio;

use super::RuntimeConfig;

pub(crate) fn command(config: &RuntimeConfig) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(&config.runc);
    cmd.arg("--root").arg(&config.runc_root);
    cmd
}

/// Runs `runc <args> <id>`; Err carries runc's message.
async fn run(config: &RuntimeConfig, args: &[&str]) -> Result<Vec<u8>, String> {
    let out = command(config)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|e| format!("running {}: {e}", config.runc.display()))?;
    if out.status.success() {
        Ok(out.stdout)
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

/// runc's status of a container: created, running, paused or stopped.
pub(crate) async fn state(config: &RuntimeConfig, id: &str) -> Result<String, String> {
    let out = run(config, &["state", id]).await?;
    let v: serde_json::Value =
        serde_json::from_slice(&out).map_err(|e| format!("runc state {id}: {e}"))?;
    Ok(v["status"].as_str().unwrap_or_default().to_string())
}

/// `runc kill <id> <signal>` (names as SIGTERM, TERM or numbers).
pub(crate) async fn kill(config: &RuntimeConfig, id: &str, signal: &str) -> Result<(), String> {
    run(config, &["kill", id, signal]).await.map(drop)
}

pub(crate) async fn delete_force(config: &RuntimeConfig, id: &str) -> Result<(), String> {
    run(config, &["delete", "--force", id]).await.map(drop)
}
