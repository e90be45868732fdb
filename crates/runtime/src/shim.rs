//! The per-container shim: a small process of its own (`rkube shim ...`, started with
//! `setsid`) that owns one container: it creates and starts it with runc, copies its stdout and
//! stderr into the log file in the CRI format, reaps it and records how it exited. The agent
//! can restart while containers keep running.

use std::path::PathBuf;

/// `rkube shim ...` (hidden): arguments the runtime passes to the shim.
#[derive(Debug, Clone, clap::Args)]
pub struct ShimArgs {
    /// The container's ID.
    #[arg(long)]
    pub id: String,
    /// The container's directory (bundle, meta, exit record).
    #[arg(long)]
    pub bundle: PathBuf,
    #[arg(long)]
    pub runc: PathBuf,
    #[arg(long)]
    pub runc_root: PathBuf,
    #[arg(long)]
    pub log_path: PathBuf,
    #[arg(long, default_value_t = 10 * 1024 * 1024)]
    pub log_max_size: u64,
    /// Internal: set by the shim when it re-executes itself detached.
    #[arg(long, hide = true)]
    pub detached: bool,
}

/// The shim's whole life; runs before any async runtime exists, and exits the process.
pub fn main(args: ShimArgs) -> anyhow::Result<()> {
    let _ = args;
    todo!("runtime helper")
}
