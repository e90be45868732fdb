//! Upstream's `ControllerExpectations`: after creating or deleting pods a controller waits
//! until its cache has seen them before it counts pods again, so that a sync running on a
//! stale cache does not create (or delete) the same pods twice.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Upstream's `ExpectationsTimeout`: past this a lost watch event no longer blocks a controller.
pub const EXPECTATIONS_TIMEOUT: Duration = Duration::from_secs(5 * 60);

#[derive(Debug)]
struct Expectation {
    /// Pod creations not yet seen in the cache.
    adds: i64,
    /// Names of pods whose deletion the cache has not seen yet.
    deletes: HashSet<String>,
    since: Instant,
}

/// Expectations by controller key (`namespace/name`).
#[derive(Debug, Default)]
pub struct Expectations {
    inner: Mutex<HashMap<String, Expectation>>,
}

impl Expectations {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Expectation>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the controller may count pods again: nothing pending, or pending too long.
    pub fn satisfied(&self, key: &str) -> bool {
        self.satisfied_at(key, Instant::now())
    }

    fn satisfied_at(&self, key: &str, now: Instant) -> bool {
        match self.lock().get(key) {
            None => true,
            Some(e) => {
                (e.adds <= 0 && e.deletes.is_empty())
                    || now.duration_since(e.since) > EXPECTATIONS_TIMEOUT
            }
        }
    }

    pub fn expect_creations(&self, key: &str, count: usize) {
        self.lock().insert(
            key.to_string(),
            Expectation {
                adds: count as i64,
                deletes: HashSet::new(),
                since: Instant::now(),
            },
        );
    }

    pub fn expect_deletions(&self, key: &str, pods: impl IntoIterator<Item = String>) {
        self.lock().insert(
            key.to_string(),
            Expectation {
                adds: 0,
                deletes: pods.into_iter().collect(),
                since: Instant::now(),
            },
        );
    }

    /// A pod of `key` appeared in the cache, or `count` creations will never happen.
    pub fn creations_observed(&self, key: &str, count: usize) {
        if let Some(e) = self.lock().get_mut(key) {
            e.adds -= count as i64;
        }
    }

    /// The cache saw `pod` go (or start terminating), or its deletion failed.
    pub fn deletion_observed(&self, key: &str, pod: &str) {
        if let Some(e) = self.lock().get_mut(key) {
            e.deletes.remove(pod);
        }
    }

    /// The controller is gone.
    pub fn forget(&self, key: &str) {
        self.lock().remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creations_block_until_observed() {
        let e = Expectations::default();
        assert!(e.satisfied("ns/a"), "no record: satisfied");
        e.expect_creations("ns/a", 3);
        assert!(!e.satisfied("ns/a"));
        e.creations_observed("ns/a", 1);
        e.creations_observed("ns/a", 1);
        assert!(!e.satisfied("ns/a"));
        // The third creation failed: it will never be observed.
        e.creations_observed("ns/a", 1);
        assert!(e.satisfied("ns/a"));
        assert!(e.satisfied("ns/b"), "keys are independent");
    }

    #[test]
    fn deletions_block_until_each_pod_is_observed() {
        let e = Expectations::default();
        e.expect_deletions("ns/a", ["p1".to_string(), "p2".to_string()]);
        e.deletion_observed("ns/a", "p1");
        e.deletion_observed("ns/a", "p1");
        e.deletion_observed("ns/a", "unrelated");
        assert!(!e.satisfied("ns/a"));
        e.deletion_observed("ns/a", "p2");
        assert!(e.satisfied("ns/a"));
    }

    #[test]
    fn expectations_expire_and_can_be_forgotten() {
        let e = Expectations::default();
        e.expect_creations("ns/a", 1);
        let later = Instant::now() + EXPECTATIONS_TIMEOUT + Duration::from_secs(1);
        assert!(e.satisfied_at("ns/a", later));
        assert!(!e.satisfied("ns/a"));
        e.forget("ns/a");
        assert!(e.satisfied("ns/a"));
    }
}
