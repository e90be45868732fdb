//! `rkube bench compare OLD.json NEW.json`: which figures got worse by more than their noise.
//!
//! Noise, by unit (what repeated runs on one idle machine vary by):
//! - throughput (per second): worse when it drops by more than 10%;
//! - latency and duration (ms): worse when it grows by more than 20% plus 0.2 ms (the fixed
//!   part keeps sub-millisecond figures from flagging on scheduler jitter);
//! - bytes: worse when they grow by more than 10%;
//! - ratios (and shares of a core): worse when they grow by more than 10% plus 0.5 (the
//!   fixed part keeps an idle process's CPU, 0.0% in one run and 0.3% in the next, from
//!   flagging).

use crate::figure::{Report, Unit};

pub const THROUGHPUT_DROP: f64 = 0.10;
pub const LATENCY_GROWTH: f64 = 0.20;
pub const LATENCY_SLACK_MS: f64 = 0.2;
pub const SIZE_GROWTH: f64 = 0.10;
pub const RATIO_SLACK: f64 = 0.5;

/// The noise rules in words, for help texts and the generated document.
pub fn noise_rules() -> String {
    format!(
        "throughput worse by more than {:.0}%; latencies and durations worse by more than {:.0}% + {} ms; \
         sizes worse by more than {:.0}%; ratios and CPU shares worse by more than {:.0}% + {}",
        THROUGHPUT_DROP * 100.0,
        LATENCY_GROWTH * 100.0,
        LATENCY_SLACK_MS,
        SIZE_GROWTH * 100.0,
        SIZE_GROWTH * 100.0,
        RATIO_SLACK
    )
}

/// Whether going from `old` to `new` is a regression beyond noise.
pub fn is_worse(unit: Unit, old: f64, new: f64) -> bool {
    match unit {
        Unit::PerSecond => new < old * (1.0 - THROUGHPUT_DROP),
        Unit::Millis => new > old * (1.0 + LATENCY_GROWTH) + LATENCY_SLACK_MS,
        Unit::Bytes => new > old * (1.0 + SIZE_GROWTH),
        Unit::Ratio => new > old * (1.0 + SIZE_GROWTH) + RATIO_SLACK,
    }
}

/// One figure present in both reports.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub key: String,
    pub unit: Unit,
    pub old: f64,
    pub new: f64,
    pub worse: bool,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Comparison {
    pub changes: Vec<Change>,
    /// Keys in the old report that the new one lacks (a scenario not run, or a figure gone).
    pub missing: Vec<String>,
    /// Warnings about comparing unlike runs (another machine, `--quick` against a full run).
    pub warnings: Vec<String>,
}

impl Comparison {
    pub fn regressions(&self) -> impl Iterator<Item = &Change> {
        self.changes.iter().filter(|c| c.worse)
    }
}

pub fn compare(old: &Report, new: &Report) -> Comparison {
    let mut comparison = Comparison::default();
    if old.machine != new.machine {
        comparison.warnings.push(format!(
            "the runs are from different machines ({} / {})",
            old.machine.summary(),
            new.machine.summary()
        ));
    }
    if old.quick != new.quick {
        comparison
            .warnings
            .push("one run used --quick and the other did not: sizes differ".into());
    }
    for before in &old.figures {
        match new.figure(&before.key) {
            Some(after) => comparison.changes.push(Change {
                key: before.key.clone(),
                unit: after.unit,
                old: before.value,
                new: after.value,
                worse: is_worse(after.unit, before.value, after.value),
            }),
            None => comparison.missing.push(before.key.clone()),
        }
    }
    comparison
}

/// A table of every shared figure with its change, then the regressions.
pub fn render(comparison: &Comparison) -> String {
    let mut rows = vec![vec![
        "figure".to_string(),
        "old".into(),
        "new".into(),
        "change".into(),
        "verdict".into(),
    ]];
    for c in &comparison.changes {
        let change = if c.old != 0.0 {
            format!("{:+.1}%", (c.new / c.old - 1.0) * 100.0)
        } else {
            "n/a".into()
        };
        let verdict = if c.worse { "WORSE" } else { "ok" };
        rows.push(vec![
            c.key.clone(),
            c.unit.format(c.old),
            c.unit.format(c.new),
            change,
            verdict.into(),
        ]);
    }
    let mut out = crate::output::align(&rows);
    for warning in &comparison.warnings {
        out.push_str(&format!("warning: {warning}\n"));
    }
    for key in &comparison.missing {
        out.push_str(&format!("missing in the new report: {key}\n"));
    }
    let worse: Vec<&str> = comparison.regressions().map(|c| c.key.as_str()).collect();
    if worse.is_empty() {
        out.push_str("no figure got worse beyond its noise\n");
    } else {
        out.push_str(&format!(
            "{} figure(s) got worse beyond their noise: {}\n",
            worse.len(),
            worse.join(", ")
        ));
    }
    out.push_str(&format!("noise: {}\n", noise_rules()));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::figure::{Figure, Machine};

    #[test]
    fn noise_thresholds() {
        assert!(!is_worse(Unit::PerSecond, 1000.0, 901.0));
        assert!(is_worse(Unit::PerSecond, 1000.0, 899.0));
        assert!(!is_worse(Unit::PerSecond, 1000.0, 5000.0));
        // 1 ms may grow to 1.4 ms (20% + 0.2 ms).
        assert!(!is_worse(Unit::Millis, 1.0, 1.39));
        assert!(is_worse(Unit::Millis, 1.0, 1.41));
        assert!(!is_worse(Unit::Millis, 100.0, 120.1));
        assert!(is_worse(Unit::Millis, 100.0, 120.3));
        assert!(!is_worse(Unit::Bytes, 100.0, 110.0));
        assert!(is_worse(Unit::Bytes, 100.0, 110.1));
        // 2.0 may grow to 2.7 (10% + 0.5); an idle 0% of a core to 0.5%.
        assert!(!is_worse(Unit::Ratio, 2.0, 2.69));
        assert!(is_worse(Unit::Ratio, 2.0, 2.71));
        assert!(!is_worse(Unit::Ratio, 0.0, 0.3));
        assert!(is_worse(Unit::Ratio, 0.0, 0.6));
    }

    fn report(figures: Vec<Figure>) -> Report {
        Report {
            machine: Machine {
                cpu: "cpu".into(),
                cores: 2,
                memory_bytes: 1,
                kernel: "k".into(),
            },
            command: "rkube bench all".into(),
            date: "d".into(),
            quick: false,
            load_average: None,
            figures,
        }
    }

    #[test]
    fn finds_regressions_and_missing_figures() {
        let old = report(vec![
            Figure::new("s", "a.rate", "", 1000.0, Unit::PerSecond),
            Figure::new("s", "a.p99", "", 2.0, Unit::Millis),
            Figure::new("s", "gone", "", 1.0, Unit::Bytes),
        ]);
        let new = report(vec![
            Figure::new("s", "a.rate", "", 700.0, Unit::PerSecond),
            Figure::new("s", "a.p99", "", 1.5, Unit::Millis),
        ]);
        let c = compare(&old, &new);
        let worse: Vec<&str> = c.regressions().map(|c| c.key.as_str()).collect();
        assert_eq!(worse, ["a.rate"]);
        assert_eq!(c.missing, ["gone"]);
        let text = render(&c);
        assert!(
            text.contains("1 figure(s) got worse beyond their noise: a.rate"),
            "{text}"
        );
        assert!(text.contains("-30.0%"), "{text}");
        assert!(text.contains("missing in the new report: gone"), "{text}");
    }

    #[test]
    fn warns_about_unlike_runs() {
        let old = report(vec![]);
        let mut new = report(vec![]);
        new.quick = true;
        let c = compare(&old, &new);
        assert_eq!(c.warnings.len(), 1);
        assert!(render(&c).contains("no figure got worse"));
    }
}
