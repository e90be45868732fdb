//! Running `nft -f -`: one script, one atomic transaction; and the same scripts of
//! per-Service commands through netlink ([`crate::netlink`]), which skips the program.

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use crate::netlink::{Netlink, NetlinkError, Transaction};

#[derive(Debug, thiserror::Error)]
pub enum NftError {
    #[error("run nft: {0}")]
    Spawn(#[source] std::io::Error),
    #[error("nft rejected the transaction: {stderr}")]
    Failed { stderr: String },
    #[error(transparent)]
    Netlink(#[from] NetlinkError),
    #[error("the endpoint-slots maps have no free slot left: the table must be rewritten")]
    SlotsExhausted,
}

/// Where scripts go: this network namespace, or a named one (`ip netns exec`), as tests and
/// the benchmark use.
#[derive(Debug, Clone, Default)]
pub struct Nft {
    pub netns: Option<String>,
    /// Opened on first use, kept for the next transactions.
    netlink: Arc<Mutex<Option<Netlink>>>,
}

impl Nft {
    pub fn in_netns(name: &str) -> Nft {
        Nft {
            netns: Some(name.to_string()),
            netlink: Arc::default(),
        }
    }

    fn with_netlink<T>(
        &self,
        f: impl FnOnce(&mut Netlink) -> Result<T, NetlinkError>,
    ) -> Result<T, NftError> {
        let mut guard = self.netlink.lock().unwrap_or_else(|e| e.into_inner());
        if guard.is_none() {
            *guard = Some(Netlink::open(self.netns.as_deref())?);
        }
        let nl = guard.as_mut().expect("opened above");
        let result = f(nl);
        if let Err(NetlinkError::Io(_)) = &result {
            // a broken socket: the next call opens another
            *guard = None;
        }
        Ok(result?)
    }

    /// Apply a script of per-Service commands as one transaction: through netlink, or `nft`
    /// for a line netlink cannot say.
    pub fn apply_services(&self, script: &str) -> Result<(), NftError> {
        match self.with_netlink(|nl| nl.apply(script)) {
            Err(NftError::Netlink(NetlinkError::Unsupported(line))) => {
                tracing::debug!(%line, "service proxy script goes to nft");
                self.apply(script)
            }
            other => other,
        }
    }

    /// Commit a transaction written through netlink.
    pub fn commit(&self, tx: Transaction) -> Result<(), NftError> {
        self.with_netlink(|nl| nl.commit(tx))
    }

    /// Declare the table's fixed part; a table from an older layout that refuses it is
    /// replaced whole (then true: what was in the table is gone).
    pub fn apply_base(&self, table: &str, script: &str) -> Result<bool, NftError> {
        match self.apply(script) {
            Ok(()) => Ok(false),
            Err(NftError::Failed { stderr }) if self.table_exists(table) => {
                tracing::warn!(table, error = %stderr, "replacing the service proxy's table");
                self.apply(&format!(
                    "add table inet {table}\ndelete table inet {table}\n{script}"
                ))?;
                Ok(true)
            }
            Err(e) => Err(e),
        }
    }

    /// Names of the chains and of the sets of `inet <table>`.
    pub fn list(&self, table: &str) -> Result<(Vec<String>, Vec<String>), NftError> {
        self.with_netlink(|nl| Ok((nl.list_chains(table)?, nl.list_sets(table)?)))
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
