//! `rkube images`: the node's image store (`<data-dir>/images`): list, remove, import, pull.

use std::collections::HashMap;
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use clap::{Args, Subcommand};
use runtime::images::pull::{ProgressFn, Puller};
use runtime::images::{ImageStore, PullOptions, PullProgress, RegistryConfig};

#[derive(Args, Debug)]
pub struct ImagesArgs {
    /// The node's data dir (as `rkube server`); images live in `<data-dir>/images`.
    #[arg(
        long,
        global = true,
        default_value = "/var/lib/rkube",
        env = "RKUBE_DATA_DIR"
    )]
    pub data_dir: PathBuf,
    #[command(subcommand)]
    pub command: ImagesCommand,
}

#[derive(Subcommand, Debug)]
pub enum ImagesCommand {
    /// List the images on this node.
    #[command(alias = "list")]
    Ls,
    /// Remove images (by name or ID) and the layers no other image uses.
    #[command(alias = "remove")]
    Rm {
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Load images from a `docker save` archive or an OCI layout tarball.
    Import {
        file: PathBuf,
        /// Name for the image when the archive has none (or to rename a single image).
        #[arg(long)]
        name: Option<String>,
    },
    /// Pull an image from its registry (or the mirrors of `registries.yaml`).
    Pull {
        name: String,
        /// k3s-style registries.yaml (default: `<data-dir>/registries.yaml`).
        #[arg(long)]
        registry_config: Option<PathBuf>,
        /// A docker config JSON with credentials (`{"auths": {...}}`), as in an image pull secret.
        #[arg(long)]
        docker_config: Option<PathBuf>,
    },
}

pub fn run(args: ImagesArgs) -> anyhow::Result<()> {
    let root = args.data_dir.join("images");
    let store = ImageStore::open(&root)
        .with_context(|| format!("opening the image store {}", root.display()))?;
    match args.command {
        ImagesCommand::Ls => list(&store),
        ImagesCommand::Rm { names } => {
            for name in names {
                for image in store.remove(&name)? {
                    println!("Deleted: {} ({})", image.name, image.id);
                }
            }
            Ok(())
        }
        ImagesCommand::Import { file, name } => {
            for image in store
                .import(&file, name.as_deref())
                .with_context(|| format!("importing {}", file.display()))?
            {
                println!("Loaded image: {} ({})", image.name, image.id);
            }
            Ok(())
        }
        ImagesCommand::Pull {
            name,
            registry_config,
            docker_config,
        } => {
            let path = registry_config.unwrap_or_else(|| args.data_dir.join("registries.yaml"));
            let config = RegistryConfig::load(&path)?;
            let mut options = PullOptions::default();
            if let Some(path) = docker_config {
                let bytes =
                    std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
                options.credentials.add_docker_config(&bytes)?;
            }
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("starting the async runtime")?;
            let image = runtime.block_on(async {
                Puller::new(config)
                    .pull(&store, &name, &options, progress_printer())
                    .await
            })?;
            println!("Pulled {} ({})", image.name, image.repo_digest());
            Ok(())
        }
    }
}

fn list(store: &ImageStore) -> anyhow::Result<()> {
    let mut rows = vec![[
        "IMAGE".to_string(),
        "TAG".to_string(),
        "IMAGE ID".to_string(),
        "SIZE".to_string(),
    ]];
    for image in store.list()? {
        let (repository, tag) = split_name(&image.name);
        let id = image.id.trim_start_matches("sha256:");
        rows.push([
            repository.to_string(),
            tag.to_string(),
            id[..id.len().min(13)].to_string(),
            human_size(image.size),
        ]);
    }
    let widths: Vec<usize> = (0..4)
        .map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0))
        .collect();
    let mut out = std::io::stdout().lock();
    for row in rows {
        let line = format!(
            "{:w0$}   {:w1$}   {:w2$}   {}",
            row[0],
            row[1],
            row[2],
            row[3],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2]
        );
        writeln!(out, "{}", line.trim_end())?;
    }
    Ok(())
}

/// `docker.io/library/busybox:1.36` -> (`docker.io/library/busybox`, `1.36`); digests show
/// as tag `<none>` as crictl does.
fn split_name(name: &str) -> (&str, &str) {
    if let Some((repository, _)) = name.split_once('@') {
        return (repository, "<none>");
    }
    let slash = name.rfind('/').map_or(0, |i| i + 1);
    match name[slash..].rfind(':') {
        Some(i) => (&name[..slash + i], &name[slash + i + 1..]),
        None => (name, "<none>"),
    }
}

fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["B", "kB", "MB", "GB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit < UNITS.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes}B")
    } else {
        format!("{value:.1}{}", UNITS[unit])
    }
}

/// Prints one line per layer event: start, each tenth of the download, and the end.
fn progress_printer() -> ProgressFn {
    let last_tenth: Mutex<HashMap<String, u64>> = Mutex::new(HashMap::new());
    Arc::new(move |event| match event {
        PullProgress::Resolving { endpoint } => eprintln!("resolving at {endpoint}"),
        PullProgress::Resolved {
            manifest_digest,
            layers,
            total_bytes,
            ..
        } => eprintln!(
            "manifest {manifest_digest}: {layers} layers, {}",
            human_size(total_bytes)
        ),
        PullProgress::Layer {
            digest,
            done,
            total,
        } => {
            let tenth = (done * 10).checked_div(total).unwrap_or(10);
            let mut seen = last_tenth.lock().unwrap_or_else(|e| e.into_inner());
            if seen.get(&digest) != Some(&tenth) || done == 0 {
                seen.insert(digest.clone(), tenth);
                eprintln!(
                    "{}: {} / {}",
                    short(&digest),
                    human_size(done),
                    human_size(total)
                );
            }
        }
        PullProgress::LayerExists { digest, .. } => {
            eprintln!("{}: already present", short(&digest))
        }
        PullProgress::Unpacked { diff_id, reused } => eprintln!(
            "{}: {}",
            short(&diff_id),
            if reused {
                "already unpacked"
            } else {
                "unpacked"
            }
        ),
    })
}

fn short(digest: &str) -> &str {
    let hex = digest.trim_start_matches("sha256:");
    &hex[..hex.len().min(12)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_split_into_repository_and_tag() {
        assert_eq!(
            split_name("127.0.0.1:5000/web:1.0"),
            ("127.0.0.1:5000/web", "1.0")
        );
        assert_eq!(
            split_name("docker.io/library/busybox@sha256:abc"),
            ("docker.io/library/busybox", "<none>")
        );
        assert_eq!(human_size(999), "999B");
        assert_eq!(human_size(1_084_118), "1.1MB");
    }
}
