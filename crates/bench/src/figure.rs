//! What a benchmark produces: figures with their unit, reference and target, and the report
//! that holds them with the machine and the command that measured them.

use serde::{Deserialize, Serialize};

/// The unit of a figure; it also says which direction is better and what counts as noise
/// (see [`crate::compare`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Unit {
    /// Operations per second; higher is better.
    PerSecond,
    /// A latency or duration in milliseconds; lower is better.
    Millis,
    /// A size in bytes (memory, files); lower is better.
    Bytes,
    /// A dimensionless ratio of two of our own figures (e.g. RSS over stored bytes); lower
    /// is better.
    Ratio,
}

impl Unit {
    pub fn higher_is_better(self) -> bool {
        matches!(self, Unit::PerSecond)
    }

    /// The value in a human unit, e.g. `12.3 ms`, `4,210/s`, `31.2 MiB`.
    pub fn format(self, value: f64) -> String {
        match self {
            Unit::PerSecond => format!("{}/s", group_thousands(value.round() as u64)),
            Unit::Millis if value < 10.0 => format!("{value:.2} ms"),
            Unit::Millis => format!("{value:.1} ms"),
            Unit::Bytes => format!("{:.1} MiB", value / MIB),
            Unit::Ratio => format!("{value:.2}"),
        }
    }
}

pub(crate) const MIB: f64 = 1024.0 * 1024.0;

fn group_thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// What a figure is compared with: a reference measured in the same run on the same machine
/// (etcd, the store alone) or a published figure of another project (then `published`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reference {
    /// What was measured, e.g. `etcd 3.4.23` or `store alone`.
    pub label: String,
    pub value: f64,
    /// True for a figure taken from another project's documentation rather than measured.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub published: bool,
}

/// The goal a figure is held to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    AtMost(f64),
    AtLeast(f64),
    /// The figure must be at least this many times its reference.
    RatioAtLeast(f64),
}

/// One measured number.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Figure {
    /// The scenario that measured it (`store`, `api`, ...).
    pub scenario: String,
    /// A stable key, unique in a report, e.g. `store.embedded.writes_per_s.16`; `compare`
    /// matches figures of two reports by it.
    pub key: String,
    /// What it is, for people.
    pub description: String,
    pub value: f64,
    pub unit: Unit,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<Reference>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<Target>,
}

impl Figure {
    pub fn new(
        scenario: &str,
        key: &str,
        description: impl Into<String>,
        value: f64,
        unit: Unit,
    ) -> Self {
        Self {
            scenario: scenario.into(),
            key: key.into(),
            description: description.into(),
            value,
            unit,
            reference: None,
            target: None,
        }
    }

    pub fn reference(mut self, label: impl Into<String>, value: f64) -> Self {
        self.reference = Some(Reference {
            label: label.into(),
            value,
            published: false,
        });
        self
    }

    pub fn published_reference(mut self, label: impl Into<String>, value: f64) -> Self {
        self.reference = Some(Reference {
            label: label.into(),
            value,
            published: true,
        });
        self
    }

    pub fn target(mut self, target: Target) -> Self {
        self.target = Some(target);
        self
    }

    /// The figure divided by its reference.
    pub fn ratio(&self) -> Option<f64> {
        let reference = self.reference.as_ref()?;
        (reference.value > 0.0).then(|| self.value / reference.value)
    }

    /// Whether the target is met; `None` without a target (or a ratio target without a
    /// reference).
    pub fn meets_target(&self) -> Option<bool> {
        match self.target.as_ref()? {
            Target::AtMost(limit) => Some(self.value <= *limit),
            Target::AtLeast(limit) => Some(self.value >= *limit),
            Target::RatioAtLeast(times) => self.ratio().map(|r| r >= *times),
        }
    }

    /// The target for people, e.g. `≤ 2.00 ms` or `≥ 5× etcd 3.4.23`.
    pub fn target_text(&self) -> String {
        match &self.target {
            None => String::new(),
            Some(Target::AtMost(limit)) => format!("≤ {}", self.unit.format(*limit)),
            Some(Target::AtLeast(limit)) => format!("≥ {}", self.unit.format(*limit)),
            Some(Target::RatioAtLeast(times)) => match &self.reference {
                Some(reference) => format!("≥ {times}× {}", reference.label),
                None => format!("≥ {times}× reference"),
            },
        }
    }
}

/// The machine a report was measured on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Machine {
    pub cpu: String,
    pub cores: usize,
    pub memory_bytes: u64,
    pub kernel: String,
}

impl Machine {
    /// Reads the CPU model from `/proc/cpuinfo`, the memory from `/proc/meminfo` and the
    /// kernel release from `/proc/sys/kernel/osrelease`; what cannot be read is `unknown`.
    pub fn detect() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find_map(|line| {
                let (name, value) = line.split_once(':')?;
                (name.trim() == "model name").then(|| value.trim().to_string())
            })
            .unwrap_or_else(|| "unknown".into());
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let memory_bytes = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|text| kib_field(&text, "MemTotal:"))
            .map_or(0, |kib| kib * 1024);
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "unknown".into());
        Self {
            cpu,
            cores,
            memory_bytes,
            kernel,
        }
    }

    /// One line, e.g. `Intel Xeon ..., 2 cores, 23.5 GiB, Linux 6.1.0`.
    pub fn summary(&self) -> String {
        format!(
            "{}, {} cores, {:.1} GiB memory, Linux {}",
            self.cpu,
            self.cores,
            self.memory_bytes as f64 / (1024.0 * MIB),
            self.kernel
        )
    }
}

/// The 1-minute load average from `/proc/loadavg`.
pub fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// A `Name:   1234 kB` field of a `/proc` file, in KiB.
pub(crate) fn kib_field(text: &str, name: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with(name))?;
    line[name.len()..].split_whitespace().next()?.parse().ok()
}

/// Everything one `rkube bench` run measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub machine: Machine,
    /// The command line as typed.
    pub command: String,
    /// When the run started, RFC 3339 in UTC.
    pub date: String,
    /// Whether sizes were scaled down (`--quick`); targets are not judged then.
    pub quick: bool,
    /// The 1-minute load average when the run started: other work on the machine skews the
    /// figures, so the document says how busy it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_average: Option<f64>,
    pub figures: Vec<Figure>,
}

impl Report {
    pub fn figure(&self, key: &str) -> Option<&Figure> {
        self.figures.iter().find(|f| f.key == key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratio_and_targets() {
        let f = Figure::new("store", "k", "d", 5000.0, Unit::PerSecond)
            .reference("etcd", 1000.0)
            .target(Target::RatioAtLeast(5.0));
        assert_eq!(f.ratio(), Some(5.0));
        assert_eq!(f.meets_target(), Some(true));
        let slow = Figure {
            value: 4999.0,
            ..f.clone()
        };
        assert_eq!(slow.meets_target(), Some(false));
        assert_eq!(f.target_text(), "≥ 5× etcd");

        let lat = Figure::new("api", "l", "d", 2.5, Unit::Millis).target(Target::AtMost(2.0));
        assert_eq!(lat.meets_target(), Some(false));
        assert_eq!(lat.ratio(), None);
        assert_eq!(lat.target_text(), "≤ 2.00 ms");
    }

    #[test]
    fn formats_units() {
        assert_eq!(Unit::PerSecond.format(1234567.4), "1,234,567/s");
        assert_eq!(Unit::PerSecond.format(999.0), "999/s");
        assert_eq!(Unit::Millis.format(1.234), "1.23 ms");
        assert_eq!(Unit::Millis.format(123.45), "123.5 ms");
        assert_eq!(Unit::Bytes.format(40.0 * MIB), "40.0 MiB");
    }

    #[test]
    fn reads_kib_fields() {
        let status = "Name:\trkube\nVmRSS:\t   31744 kB\nVmHWM:\t 40000 kB\n";
        assert_eq!(kib_field(status, "VmRSS:"), Some(31744));
        assert_eq!(kib_field(status, "VmSwap:"), None);
    }

    #[test]
    fn report_round_trips_through_json() {
        let report = Report {
            machine: Machine {
                cpu: "cpu".into(),
                cores: 2,
                memory_bytes: 1 << 30,
                kernel: "6.1".into(),
            },
            command: "rkube bench all".into(),
            date: "2025-01-01T00:00:00Z".into(),
            quick: false,
            load_average: Some(0.5),
            figures: vec![
                Figure::new(
                    "startup",
                    "startup.binary_bytes",
                    "binary",
                    1e7,
                    Unit::Bytes,
                )
                .published_reference("k3s", 8e7),
            ],
        };
        let json = serde_json::to_string(&report).unwrap();
        let back: Report = serde_json::from_str(&json).unwrap();
        assert_eq!(back, report);
        assert!(json.contains("\"published\":true"));
    }
}
