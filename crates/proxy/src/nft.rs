//! Running `nft -f -`: one script, one atomic transaction.

use std::io::Write;
use std::process::{Command, Stdio};

#[derive(Debug, thiserror::Error)]
pub enum NftError {
    #[error("run nft: {0}")]
    Spawn(#[source] std::io::Error),
    #[error("nft rejected the transaction: {stderr}")]
    Failed { stderr: String },
}

/// Where scripts go: this network namespace, or a named one (`ip netns exec`), as tests and
/// the benchmark use.
#[derive(Debug, Clone, Default)]
pub struct Nft {
    pub netns: Option<String>,
}

impl Nft {
    pub fn in_netns(name: &str) -> Nft {
        Nft {
            netns: Some(name.to_string()),
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, "nft"]).args(args);
                c
            }
            None => {
                let mut c = Command::new("nft");
                c.args(args);
                c
            }
        }
    }

    /// Apply a script as one transaction: all of it or nothing.
    pub fn apply(&self, script: &str) -> Result<(), NftError> {
        let mut child = self
            .command(&["-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(NftError::Spawn)?;
        let mut stdin = child.stdin.take().expect("stdin is piped");
        // Write from another thread: nft may report errors before reading all of a large script.
        let input = script.to_string();
        let writer = std::thread::spawn(move || {
            let _ = stdin.write_all(input.as_bytes());
        });
        let out = child.wait_with_output().map_err(NftError::Spawn)?;
        let _ = writer.join();
        if out.status.success() {
            Ok(())
        } else {
            let mut stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
            if stderr.len() > 4000 {
                let cut = (0..=4000)
                    .rev()
                    .find(|i| stderr.is_char_boundary(*i))
                    .unwrap_or(0);
                stderr.truncate(cut);
            }
            Err(NftError::Failed { stderr })
        }
    }

    /// Whether `inet <table>` exists.
    pub fn table_exists(&self, table: &str) -> bool {
        self.command(&["list", "chain", "inet", table, "masquerading"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// Remove `inet <table>` if present.
    pub fn delete_table(&self, table: &str) -> Result<(), NftError> {
        self.apply(&format!(
            "add table inet {table}\ndelete table inet {table}\n"
        ))
    }
}
