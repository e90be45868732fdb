//! The scheduling framework: plugins at extension points (PreFilter, Filter, PostFilter,
//! PreScore, Score, NormalizeScore, Reserve, Bind) run in a fixed order per profile, as in
//! upstream's `pkg/scheduler/framework`.

pub mod types;

use std::any::Any;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::sync::Arc;

use futures::future::BoxFuture;

use crate::cache::Snapshot;
pub use types::{AffinityTerm, HostPort, NodeInfo, PodInfo, WeightedAffinityTerm};

/// The highest score a Score plugin gives after normalization.
pub const MAX_NODE_SCORE: i64 = 100;

/// How a plugin's run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Code {
    Success,
    /// Something went wrong; the pod is retried with backoff.
    Error,
    /// The node does not fit now; preemption may help.
    Unschedulable,
    /// The node does not fit and preemption cannot change that.
    UnschedulableAndUnresolvable,
    /// The plugin has nothing to do for this pod (from PreFilter/PreScore: skip its Filter/Score).
    Skip,
}

/// A plugin's verdict with its reasons (the words that end up in FailedScheduling events).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub code: Code,
    pub reasons: Vec<String>,
    /// The plugin that failed, set by the framework.
    pub plugin: &'static str,
}

impl Status {
    pub const fn success() -> Status {
        Status {
            code: Code::Success,
            reasons: Vec::new(),
            plugin: "",
        }
    }

    pub fn new(code: Code, reason: impl Into<String>) -> Status {
        Status {
            code,
            reasons: vec![reason.into()],
            plugin: "",
        }
    }

    pub fn with_reasons(code: Code, reasons: Vec<String>) -> Status {
        Status {
            code,
            reasons,
            plugin: "",
        }
    }

    pub fn unschedulable(reason: impl Into<String>) -> Status {
        Status::new(Code::Unschedulable, reason)
    }

    pub fn unresolvable(reason: impl Into<String>) -> Status {
        Status::new(Code::UnschedulableAndUnresolvable, reason)
    }

    pub fn error(reason: impl Into<String>) -> Status {
        Status::new(Code::Error, reason)
    }

    pub const fn skip() -> Status {
        Status {
            code: Code::Skip,
            reasons: Vec::new(),
            plugin: "",
        }
    }

    pub fn is_success(&self) -> bool {
        self.code == Code::Success
    }

    pub fn is_rejected(&self) -> bool {
        matches!(
            self.code,
            Code::Unschedulable | Code::UnschedulableAndUnresolvable
        )
    }

    pub fn message(&self) -> String {
        self.reasons.join(", ")
    }

    fn with_plugin(mut self, plugin: &'static str) -> Status {
        self.plugin = plugin;
        self
    }
}

/// Per-cycle data plugins share between their extension points (computed in PreFilter, read in
/// Filter), cloneable so preemption can dry-run on a copy.
///
/// Filter runs for every node a cycle evaluates (hundreds), each plugin looking up its state:
/// a few entries searched in order (by address first: keys are the plugins' name constants)
/// cost less than hashing the key every time.
#[derive(Default)]
pub struct CycleState {
    data: Vec<(&'static str, Box<dyn StateData>)>,
    skip_filter: Names,
    skip_score: Names,
}

/// A small set of plugin names.
#[derive(Default, Clone)]
struct Names(Vec<&'static str>);

fn same_name(a: &str, b: &str) -> bool {
    std::ptr::eq(a, b) || a == b
}

impl Names {
    fn insert(&mut self, name: &'static str) {
        if !self.contains(name) {
            self.0.push(name);
        }
    }

    fn contains(&self, name: &str) -> bool {
        self.0.iter().any(|n| same_name(n, name))
    }
}

pub trait StateData: Any + Send + Sync {
    fn clone_box(&self) -> Box<dyn StateData>;
    fn as_any(&self) -> &dyn Any;
    fn as_any_mut(&mut self) -> &mut dyn Any;
}

impl<T: Any + Clone + Send + Sync> StateData for T {
    fn clone_box(&self) -> Box<dyn StateData> {
        Box::new(self.clone())
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}

impl Clone for CycleState {
    fn clone(&self) -> Self {
        CycleState {
            data: self
                .data
                .iter()
                .map(|(k, v)| (*k, (**v).clone_box()))
                .collect(),
            skip_filter: self.skip_filter.clone(),
            skip_score: self.skip_score.clone(),
        }
    }
}

impl CycleState {
    pub fn write<T: StateData>(&mut self, key: &'static str, value: T) {
        match self.data.iter_mut().find(|(k, _)| same_name(k, key)) {
            Some((_, slot)) => *slot = Box::new(value),
            None => self.data.push((key, Box::new(value))),
        }
    }

    pub fn read<T: 'static>(&self, key: &'static str) -> Option<&T> {
        let (_, data) = self.data.iter().find(|(k, _)| same_name(k, key))?;
        let data: &dyn StateData = data.as_ref();
        data.as_any().downcast_ref()
    }

    pub fn read_mut<T: 'static>(&mut self, key: &'static str) -> Option<&mut T> {
        let (_, data) = self.data.iter_mut().find(|(k, _)| same_name(k, key))?;
        let data: &mut dyn StateData = data.as_mut();
        data.as_any_mut().downcast_mut()
    }
}

/// A plugin: its name and the extension points it implements.
pub trait Plugin: Send + Sync {
    fn name(&self) -> &'static str;
    fn as_pre_filter(&self) -> Option<&dyn PreFilterPlugin> {
        None
    }
    fn as_filter(&self) -> Option<&dyn FilterPlugin> {
        None
    }
    fn as_post_filter(&self) -> Option<&dyn PostFilterPlugin> {
        None
    }
    fn as_pre_score(&self) -> Option<&dyn PreScorePlugin> {
        None
    }
    fn as_score(&self) -> Option<&dyn ScorePlugin> {
        None
    }
    fn as_reserve(&self) -> Option<&dyn ReservePlugin> {
        None
    }
    fn as_bind(&self) -> Option<&dyn BindPlugin> {
        None
    }
}

pub trait PreFilterPlugin: Send + Sync {
    /// Compute per-cycle state; Skip means this plugin's Filter has nothing to check.
    fn pre_filter(&self, state: &mut CycleState, pod: &PodInfo, snapshot: &Snapshot) -> Status;
    /// Preemption's "what if `other` were (not) on `node`": keep the PreFilter state in step.
    fn add_pod(
        &self,
        _state: &mut CycleState,
        _pod: &PodInfo,
        _other: &PodInfo,
        _node: &NodeInfo,
        _snapshot: &Snapshot,
    ) {
    }
    fn remove_pod(
        &self,
        _state: &mut CycleState,
        _pod: &PodInfo,
        _other: &PodInfo,
        _node: &NodeInfo,
        _snapshot: &Snapshot,
    ) {
    }
}

pub trait FilterPlugin: Send + Sync {
    fn filter(&self, state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status;
}

/// What a PostFilter plugin (preemption) asks for: a node to nominate and pods to evict there.
#[derive(Debug, Clone, Default)]
pub struct PostFilterResult {
    pub nominated_node: Option<String>,
    pub victims: Vec<Arc<PodInfo>>,
}

pub trait PostFilterPlugin: Send + Sync {
    fn post_filter(
        &self,
        framework: &Framework,
        state: &CycleState,
        pod: &PodInfo,
        snapshot: &Snapshot,
        diagnosis: &Diagnosis,
    ) -> (Option<PostFilterResult>, Status);
}

pub trait PreScorePlugin: Send + Sync {
    fn pre_score(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        nodes: &[Arc<NodeInfo>],
        snapshot: &Snapshot,
    ) -> Status;
}

pub trait ScorePlugin: Send + Sync {
    fn score(&self, state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Result<i64, Status>;
    /// Bring raw scores into 0..=MAX_NODE_SCORE (default: they already are).
    fn normalize_score(&self, _state: &CycleState, _pod: &PodInfo, _scores: &mut [i64]) {}
}

pub trait ReservePlugin: Send + Sync {
    fn reserve(&self, state: &mut CycleState, pod: &PodInfo, node: &str) -> Status;
    fn unreserve(&self, state: &mut CycleState, pod: &PodInfo, node: &str);
}

pub trait BindPlugin: Send + Sync {
    /// Bind asynchronously (the scheduling cycle does not wait).
    fn bind(
        &self,
        client: kube::Client,
        pod: Arc<PodInfo>,
        node: String,
    ) -> BoxFuture<'static, Status>;
}

/// Scale raw scores to 0..=MAX_NODE_SCORE by the largest (upstream's `DefaultNormalizeScore`),
/// reversed when a high raw score is bad.
pub fn default_normalize_score(max_priority: i64, reverse: bool, scores: &mut [i64]) {
    let max = scores.iter().copied().max().unwrap_or(0);
    if max == 0 {
        if reverse {
            scores.iter_mut().for_each(|s| *s = max_priority);
        }
        return;
    }
    for s in scores.iter_mut() {
        *s = max_priority * *s / max;
        if reverse {
            *s = max_priority - *s;
        }
    }
}

/// Why a pod fits nowhere: each node's failing status, and what PreFilter/PostFilter said.
#[derive(Debug, Clone, Default)]
pub struct Diagnosis {
    pub node_to_status: HashMap<String, Status>,
    pub unschedulable_plugins: BTreeSet<&'static str>,
    pub pre_filter_msg: Option<String>,
    pub post_filter_msg: Option<String>,
}

/// The error of a pod that fits on no node; its Display is upstream's FailedScheduling message.
#[derive(Debug, Clone)]
pub struct FitError {
    pub num_all_nodes: usize,
    pub diagnosis: Diagnosis,
}

/// `0/N nodes are available: 3 Insufficient cpu, 2 node(s) ...` — counts of each reason over
/// the nodes, sorted as strings (so by count first), as upstream's `FitError.Error`.
pub fn reasons_histogram<'a>(statuses: impl IntoIterator<Item = &'a Status>) -> Vec<String> {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for status in statuses {
        for reason in &status.reasons {
            *counts.entry(reason).or_default() += 1;
        }
    }
    let mut lines: Vec<String> = counts.iter().map(|(r, n)| format!("{n} {r}")).collect();
    lines.sort();
    lines
}

impl fmt::Display for FitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "0/{} nodes are available:", self.num_all_nodes)?;
        if let Some(msg) = &self.diagnosis.pre_filter_msg {
            write!(f, " {msg}.")?;
        } else {
            let lines = reasons_histogram(self.diagnosis.node_to_status.values());
            if !lines.is_empty() {
                write!(f, " {}.", lines.join(", "))?;
            }
        }
        if let Some(msg) = &self.diagnosis.post_filter_msg {
            write!(f, " {msg}")?;
        }
        Ok(())
    }
}

/// The Filter plugins to run in a cycle, in order (see [`Framework::active_filters`]).
pub struct ActiveFilters<'a>(Vec<(&'static str, &'a dyn FilterPlugin)>);

impl ActiveFilters<'_> {
    /// Run them on one node; the first failure is the node's status (as
    /// [`Framework::run_filter`]).
    pub fn run(&self, state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status {
        for (name, plugin) in &self.0 {
            let status = plugin.filter(state, pod, node);
            if !status.is_success() {
                return status.with_plugin(name);
            }
        }
        Status::success()
    }
}

/// One enabled plugin: the instance and its Score weight.
struct Enabled {
    plugin: Arc<dyn Plugin>,
    weight: i64,
}

/// A scheduling profile: the plugins at each extension point, in order.
pub struct Framework {
    pub scheduler_name: String,
    plugins: Vec<Enabled>,
    pre_filter: Vec<usize>,
    filter: Vec<usize>,
    post_filter: Vec<usize>,
    pre_score: Vec<usize>,
    score: Vec<usize>,
    reserve: Vec<usize>,
    bind: Vec<usize>,
}

#[derive(Debug, thiserror::Error)]
pub enum FrameworkError {
    #[error("plugin {0:?} is not in the registry")]
    UnknownPlugin(String),
}

impl Framework {
    /// A profile from (plugin name, score weight) pairs, in the order the plugins run.
    pub fn new(scheduler_name: &str, enabled: &[(&str, i64)]) -> Result<Framework, FrameworkError> {
        let registry = crate::plugins::registry();
        let mut fw = Framework {
            scheduler_name: scheduler_name.to_string(),
            plugins: Vec::new(),
            pre_filter: Vec::new(),
            filter: Vec::new(),
            post_filter: Vec::new(),
            pre_score: Vec::new(),
            score: Vec::new(),
            reserve: Vec::new(),
            bind: Vec::new(),
        };
        for (name, weight) in enabled {
            let constructor = registry
                .get(name)
                .ok_or_else(|| FrameworkError::UnknownPlugin(name.to_string()))?;
            let plugin = constructor();
            let i = fw.plugins.len();
            if plugin.as_pre_filter().is_some() {
                fw.pre_filter.push(i);
            }
            if plugin.as_filter().is_some() {
                fw.filter.push(i);
            }
            if plugin.as_post_filter().is_some() {
                fw.post_filter.push(i);
            }
            if plugin.as_pre_score().is_some() {
                fw.pre_score.push(i);
            }
            if plugin.as_score().is_some() {
                fw.score.push(i);
            }
            if plugin.as_reserve().is_some() {
                fw.reserve.push(i);
            }
            if plugin.as_bind().is_some() {
                fw.bind.push(i);
            }
            fw.plugins.push(Enabled {
                plugin,
                weight: *weight,
            });
        }
        Ok(fw)
    }

    /// Upstream's default profile: its plugins, order and score weights.
    pub fn default_profile() -> Framework {
        Framework::new("default-scheduler", crate::plugins::DEFAULT_PLUGINS)
            .expect("the default plugins are registered")
    }

    /// Swap in another instance of an enabled plugin (same name, same extension points), for
    /// plugins built with informers, such as VolumeBinding's. False if no plugin has the name.
    pub fn replace_plugin(&mut self, plugin: Arc<dyn Plugin>) -> bool {
        match self
            .plugins
            .iter_mut()
            .find(|p| p.plugin.name() == plugin.name())
        {
            Some(enabled) => {
                enabled.plugin = plugin;
                true
            }
            None => false,
        }
    }

    pub fn plugin_names(&self) -> Vec<&'static str> {
        self.plugins.iter().map(|p| p.plugin.name()).collect()
    }

    fn plugin(&self, i: usize) -> &dyn Plugin {
        self.plugins[i].plugin.as_ref()
    }

    /// Run every PreFilter; the first rejection ends the cycle for the pod.
    pub fn run_pre_filter(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        snapshot: &Snapshot,
    ) -> Status {
        for &i in &self.pre_filter {
            let plugin = self.plugin(i);
            let status = plugin
                .as_pre_filter()
                .expect("indexed as PreFilter")
                .pre_filter(state, pod, snapshot);
            match status.code {
                Code::Success => {}
                Code::Skip => {
                    state.skip_filter.insert(plugin.name());
                }
                _ => return status.with_plugin(plugin.name()),
            }
        }
        Status::success()
    }

    /// Run the Filters in order on one node; the first failure is the node's status.
    pub fn run_filter(&self, state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status {
        for &i in &self.filter {
            let plugin = self.plugin(i);
            if state.skip_filter.contains(plugin.name()) {
                continue;
            }
            let status = plugin
                .as_filter()
                .expect("indexed as Filter")
                .filter(state, pod, node);
            if !status.is_success() {
                return status.with_plugin(plugin.name());
            }
        }
        Status::success()
    }

    /// The Filter plugins PreFilter did not skip, looked up once for a cycle that filters
    /// hundreds of nodes.
    pub fn active_filters(&self, state: &CycleState) -> ActiveFilters<'_> {
        ActiveFilters(
            self.filter
                .iter()
                .map(|&i| self.plugin(i))
                .filter(|p| !state.skip_filter.contains(p.name()))
                .map(|p| (p.name(), p.as_filter().expect("indexed as Filter")))
                .collect(),
        )
    }

    /// Filters with the pods nominated to this node that are at least as important as `pod`
    /// counted as if they were already there (so preemptors keep the room they made), then
    /// without them.
    pub fn run_filter_with_nominated(
        &self,
        state: &CycleState,
        pod: &PodInfo,
        node: &NodeInfo,
        nominated: &[Arc<PodInfo>],
        snapshot: &Snapshot,
    ) -> Status {
        let relevant: Vec<&Arc<PodInfo>> = nominated
            .iter()
            .filter(|p| p.priority >= pod.priority && p.key != pod.key)
            .collect();
        if !relevant.is_empty() {
            let mut state = state.clone();
            let mut node = node.clone();
            for p in relevant {
                node.add_pod(p.clone());
                self.run_pre_filter_add_pod(&mut state, pod, p, &node, snapshot);
            }
            let status = self.run_filter(&state, pod, &node);
            if !status.is_success() {
                return status;
            }
        }
        self.run_filter(state, pod, node)
    }

    pub fn run_pre_filter_add_pod(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        other: &PodInfo,
        node: &NodeInfo,
        snapshot: &Snapshot,
    ) {
        for &i in &self.pre_filter {
            let plugin = self.plugin(i);
            if state.skip_filter.contains(plugin.name()) {
                continue;
            }
            plugin
                .as_pre_filter()
                .expect("indexed as PreFilter")
                .add_pod(state, pod, other, node, snapshot);
        }
    }

    pub fn run_pre_filter_remove_pod(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        other: &PodInfo,
        node: &NodeInfo,
        snapshot: &Snapshot,
    ) {
        for &i in &self.pre_filter {
            let plugin = self.plugin(i);
            if state.skip_filter.contains(plugin.name()) {
                continue;
            }
            plugin
                .as_pre_filter()
                .expect("indexed as PreFilter")
                .remove_pod(state, pod, other, node, snapshot);
        }
    }

    /// Run PostFilter plugins until one makes the pod schedulable (nominates a node).
    pub fn run_post_filter(
        &self,
        state: &CycleState,
        pod: &PodInfo,
        snapshot: &Snapshot,
        diagnosis: &Diagnosis,
    ) -> (Option<PostFilterResult>, Status) {
        let mut last = Status::unschedulable("no PostFilter plugin");
        let mut messages = Vec::new();
        for &i in &self.post_filter {
            let plugin = self.plugin(i);
            let (result, status) = plugin
                .as_post_filter()
                .expect("indexed as PostFilter")
                .post_filter(self, state, pod, snapshot, diagnosis);
            if status.is_success() {
                return (result, status);
            }
            if status.code == Code::Error {
                return (None, status.with_plugin(plugin.name()));
            }
            messages.push(status.message());
            last = status.with_plugin(plugin.name());
        }
        if !messages.is_empty() {
            last.reasons = vec![messages.join(" ")];
        }
        (None, last)
    }

    pub fn has_post_filter(&self) -> bool {
        !self.post_filter.is_empty()
    }

    /// Run PreScore then Score and NormalizeScore; the weighted sum per node, in `nodes`' order.
    pub fn run_score(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        nodes: &[Arc<NodeInfo>],
        snapshot: &Snapshot,
    ) -> Result<Vec<i64>, Status> {
        for &i in &self.pre_score {
            let plugin = self.plugin(i);
            let status = plugin
                .as_pre_score()
                .expect("indexed as PreScore")
                .pre_score(state, pod, nodes, snapshot);
            match status.code {
                Code::Success => {}
                Code::Skip => {
                    state.skip_score.insert(plugin.name());
                }
                _ => return Err(status.with_plugin(plugin.name())),
            }
        }
        let mut totals = vec![0i64; nodes.len()];
        let mut scores = vec![0i64; nodes.len()];
        for &i in &self.score {
            let Enabled { plugin, weight } = &self.plugins[i];
            if state.skip_score.contains(plugin.name()) {
                continue;
            }
            let scorer = plugin.as_score().expect("indexed as Score");
            for (slot, node) in scores.iter_mut().zip(nodes) {
                *slot = scorer
                    .score(state, pod, node)
                    .map_err(|s| s.with_plugin(plugin.name()))?;
            }
            scorer.normalize_score(state, pod, &mut scores);
            for (total, s) in totals.iter_mut().zip(&scores) {
                *total += s * weight;
            }
        }
        Ok(totals)
    }

    pub fn run_reserve(&self, state: &mut CycleState, pod: &PodInfo, node: &str) -> Status {
        for (n, &i) in self.reserve.iter().enumerate() {
            let plugin = self.plugin(i);
            let status = plugin
                .as_reserve()
                .expect("indexed as Reserve")
                .reserve(state, pod, node);
            if !status.is_success() {
                // Undo the ones that reserved, in reverse.
                for &j in self.reserve[..n].iter().rev() {
                    self.plugin(j)
                        .as_reserve()
                        .expect("indexed as Reserve")
                        .unreserve(state, pod, node);
                }
                return status.with_plugin(plugin.name());
            }
        }
        Status::success()
    }

    pub fn run_unreserve(&self, state: &mut CycleState, pod: &PodInfo, node: &str) {
        for &i in self.reserve.iter().rev() {
            self.plugin(i)
                .as_reserve()
                .expect("indexed as Reserve")
                .unreserve(state, pod, node);
        }
    }

    /// The Bind plugin (the first one enabled).
    pub fn binder(&self) -> Option<Arc<dyn Plugin>> {
        self.bind.first().map(|&i| self.plugins[i].plugin.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fit_error_message_sorts_reasons_and_appends_post_filter() {
        let mut d = Diagnosis::default();
        for (i, r) in ["Insufficient cpu", "Insufficient cpu", "Insufficient cpu"]
            .iter()
            .enumerate()
        {
            d.node_to_status
                .insert(format!("n{i}"), Status::unschedulable(*r));
        }
        for i in 3..5 {
            d.node_to_status.insert(
                format!("n{i}"),
                Status::unresolvable(
                    "node(s) had untolerated taint {node.kubernetes.io/unreachable: }",
                ),
            );
        }
        d.post_filter_msg = Some(
            "preemption: 0/5 nodes are available: 5 Preemption is not helpful for scheduling."
                .into(),
        );
        let e = FitError {
            num_all_nodes: 5,
            diagnosis: d,
        };
        assert_eq!(
            e.to_string(),
            "0/5 nodes are available: 2 node(s) had untolerated taint {node.kubernetes.io/unreachable: }, 3 Insufficient cpu. preemption: 0/5 nodes are available: 5 Preemption is not helpful for scheduling."
        );
    }

    #[test]
    fn multiple_reasons_of_one_node_each_count() {
        let mut d = Diagnosis::default();
        d.node_to_status.insert(
            "a".into(),
            Status::with_reasons(
                Code::Unschedulable,
                vec!["Insufficient cpu".into(), "Insufficient memory".into()],
            ),
        );
        d.node_to_status
            .insert("b".into(), Status::unschedulable("Insufficient memory"));
        let e = FitError {
            num_all_nodes: 2,
            diagnosis: d,
        };
        assert_eq!(
            e.to_string(),
            "0/2 nodes are available: 1 Insufficient cpu, 2 Insufficient memory."
        );
    }

    #[test]
    fn normalize() {
        let mut s = vec![0, 5, 10];
        default_normalize_score(100, false, &mut s);
        assert_eq!(s, vec![0, 50, 100]);
        let mut s = vec![0, 5, 10];
        default_normalize_score(100, true, &mut s);
        assert_eq!(s, vec![100, 50, 0]);
        let mut s = vec![0, 0];
        default_normalize_score(100, true, &mut s);
        assert_eq!(s, vec![100, 100]);
    }

    #[test]
    fn cycle_state_clones_data() {
        let mut s = CycleState::default();
        s.write("k", 5usize);
        let mut c = s.clone();
        *c.read_mut::<usize>("k").unwrap() = 7;
        assert_eq!(s.read::<usize>("k"), Some(&5));
        assert_eq!(c.read::<usize>("k"), Some(&7));
    }
}
