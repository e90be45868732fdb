//! Image garbage collection at disk thresholds, as the kubelet's image GC manager does: once
//! usage of the filesystem holding the images reaches `high_threshold_percent`, delete unused
//! images, least recently used first, until usage is at `low_threshold_percent`.

use std::collections::HashSet;
use std::io;
use std::path::PathBuf;
use std::time::Duration;

use super::store::{ImageStore, now};
use super::{ImageError, Result};

/// Upstream's `imageGCHighThresholdPercent`, `imageGCLowThresholdPercent` and
/// `imageMinimumGCAge` (defaults 85, 80, 2m).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GcPolicy {
    pub high_threshold_percent: u8,
    pub low_threshold_percent: u8,
    /// Images stored or used more recently than this are kept.
    pub min_age: Duration,
}

impl Default for GcPolicy {
    fn default() -> Self {
        GcPolicy {
            high_threshold_percent: 85,
            low_threshold_percent: 80,
            min_age: Duration::from_secs(120),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskStats {
    pub capacity: u64,
    pub available: u64,
}

impl DiskStats {
    pub fn usage_percent(&self) -> u64 {
        if self.capacity == 0 {
            return 0;
        }
        100 - (self.available.min(self.capacity) as u128 * 100 / self.capacity as u128) as u64
    }
}

/// Where disk usage comes from: the real filesystem, or a fake in tests.
pub trait DiskUsage: Send + Sync {
    fn stats(&self) -> io::Result<DiskStats>;
}

/// The filesystem holding a path, through statvfs.
pub struct FsDiskUsage(pub PathBuf);

impl DiskUsage for FsDiskUsage {
    fn stats(&self) -> io::Result<DiskStats> {
        let s = rustix::fs::statvfs(&self.0)?;
        Ok(DiskStats {
            capacity: s.f_blocks * s.f_frsize,
            available: s.f_bavail * s.f_frsize,
        })
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcReport {
    /// Names of the images deleted.
    pub removed: Vec<String>,
    pub usage_before_percent: u64,
    pub usage_after_percent: u64,
    /// Bytes that had to be freed to reach the low threshold (0 below the high one).
    pub wanted_bytes: u64,
    /// Bytes freed, as the disk reports them.
    pub freed_bytes: u64,
}

impl GcReport {
    /// Whether usage got down to the low threshold (upstream logs an error otherwise).
    pub fn satisfied(&self) -> bool {
        self.freed_bytes >= self.wanted_bytes
    }
}

impl ImageStore {
    /// Runs one image garbage collection. `in_use` holds the names or IDs of images that
    /// containers use (they are never deleted). Skipped while a pull holds the store.
    pub fn gc(
        &self,
        policy: &GcPolicy,
        disk: &dyn DiskUsage,
        in_use: &HashSet<String>,
    ) -> Result<GcReport> {
        if policy.low_threshold_percent > policy.high_threshold_percent
            || policy.high_threshold_percent > 100
        {
            return Err(ImageError::Format {
                what: "image garbage collection policy".into(),
                message: format!(
                    "low threshold {}% must not exceed high threshold {}% (at most 100%)",
                    policy.low_threshold_percent, policy.high_threshold_percent
                ),
            });
        }
        let path = self.root().to_path_buf();
        let stats = disk.stats().map_err(ImageError::io(&path))?;
        let mut report = GcReport {
            usage_before_percent: stats.usage_percent(),
            usage_after_percent: stats.usage_percent(),
            ..GcReport::default()
        };
        if stats.usage_percent() < policy.high_threshold_percent as u64 {
            return Ok(report);
        }
        let goal_available =
            (stats.capacity as u128 * (100 - policy.low_threshold_percent as u128) / 100) as u64;
        report.wanted_bytes = goal_available.saturating_sub(stats.available);
        let Some(_guard) = self.try_lock_exclusive()? else {
            return Ok(report);
        };
        // Blobs and layers that lost their images earlier (e.g. an interrupted remove).
        self.prune_locked()?;
        let mut candidates: Vec<_> = self
            .list()?
            .into_iter()
            .filter(|i| !in_use.contains(&i.name) && !in_use.contains(&i.id))
            .filter(|i| {
                now().saturating_sub(i.last_used.max(i.created)) >= policy.min_age.as_secs()
            })
            .collect();
        candidates.sort_by_key(|i| (i.last_used, i.created));
        let mut current = disk.stats().map_err(ImageError::io(&path))?;
        for image in candidates {
            if current.available >= goal_available {
                break;
            }
            self.forget(&image.name)?;
            self.prune_locked()?;
            report.removed.push(image.name);
            current = disk.stats().map_err(ImageError::io(&path))?;
        }
        report.freed_bytes = current.available.saturating_sub(stats.available);
        report.usage_after_percent = current.usage_percent();
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_percent_rounds_like_upstream() {
        let s = DiskStats {
            capacity: 1000,
            available: 151,
        };
        assert_eq!(s.usage_percent(), 85);
        assert_eq!(
            DiskStats {
                capacity: 0,
                available: 0
            }
            .usage_percent(),
            0
        );
    }

    #[test]
    fn real_disk_usage_is_sane() {
        let s = FsDiskUsage(std::env::temp_dir()).stats().unwrap();
        assert!(s.capacity > 0 && s.available <= s.capacity);
    }
}
