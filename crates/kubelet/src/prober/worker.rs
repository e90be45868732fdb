//! The probe workers of one container (upstream's prober worker): one task per configured
//! probe, waiting initialDelaySeconds from the container's start, then probing every
//! periodSeconds, with successThreshold/failureThreshold deciding when a result counts.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::{Container, Probe};
use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior};

use super::{Outcome, ProbeTarget, run_probe};

const DEFAULT_PERIOD_SECONDS: i32 = 10;
const DEFAULT_SUCCESS_THRESHOLD: i32 = 1;
const DEFAULT_FAILURE_THRESHOLD: i32 = 3;
/// A probe that errors (rather than fails) is retried this often before its attempt is dropped
/// (upstream's maxProbeRetries).
const MAX_PROBE_ATTEMPTS: usize = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Liveness,
    Readiness,
    Startup,
}

impl Kind {
    /// As the events say it: `Liveness probe failed: ...`.
    fn name(self) -> &'static str {
        match self {
            Kind::Liveness => "Liveness",
            Kind::Readiness => "Readiness",
            Kind::Startup => "Startup",
        }
    }

    fn spec(self, container: &Container) -> Option<&Probe> {
        match self {
            Kind::Liveness => container.liveness_probe.as_ref(),
            Kind::Readiness => container.readiness_probe.as_ref(),
            Kind::Startup => container.startup_probe.as_ref(),
        }
    }
}

/// Runs one attempt of a container's probe of the given kind.
type ProbeFn = Arc<dyn Fn(Kind) -> BoxFuture<'static, Outcome> + Send + Sync>;
/// Records a Warning event on the container: (reason, message).
type EventFn = Arc<dyn Fn(&'static str, String) + Send + Sync>;

/// What the workers publish. The senders live as long as the [`ContainerProbes`], so that a
/// receiver's `changed()` waits instead of failing at once.
struct Published {
    ready: watch::Sender<bool>,
    started: watch::Sender<bool>,
    failures: watch::Sender<u64>,
}

/// The probe workers of one running container. Dropping it stops them.
pub struct ContainerProbes {
    /// The readiness probe's verdict (true at once when the container has no readiness
    /// probe, false until it first passes when it has one; readiness waits for startup).
    pub ready: tokio::sync::watch::Receiver<bool>,
    /// The startup probe has passed (true at once without one).
    pub started: tokio::sync::watch::Receiver<bool>,
    /// Counts how often the liveness probe (or the startup probe) reached its
    /// failureThreshold: each increment means "kill and restart this container".
    pub failures: tokio::sync::watch::Receiver<u64>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    _published: Arc<Published>,
}

impl ContainerProbes {
    /// Start the container's liveness, readiness and startup probe workers (initialDelaySeconds,
    /// periodSeconds, timeoutSeconds, successThreshold, failureThreshold as upstream), recording
    /// Unhealthy events (`Liveness probe failed: ...`).
    ///
    /// Call it when the container has just started: initialDelaySeconds counts from here.
    /// Liveness and readiness wait until the startup probe passes; a probe that reaches its
    /// failureThreshold for liveness or startup bumps `failures` once and then stops (as
    /// upstream's worker holds until a new container: the kubelet starts new probes for it).
    pub fn start(target: ProbeTarget, events: crate::events::EventRecorder) -> ContainerProbes {
        let target = Arc::new(target);
        let container = target.container.clone();
        let probe: ProbeFn = {
            let target = target.clone();
            Arc::new(move |kind| {
                let target = target.clone();
                Box::pin(async move {
                    match kind.spec(&target.container) {
                        Some(spec) => run_probe(spec, &target).await,
                        None => Outcome::Error(format!("no {} probe", kind.name())),
                    }
                })
            })
        };
        let event: EventFn = Arc::new(move |reason, message| {
            let name = target.container.name.as_str();
            let init = target
                .pod
                .spec
                .as_ref()
                .and_then(|s| s.init_containers.as_ref())
                .is_some_and(|cs| cs.iter().any(|c| c.name == name));
            events.pod_event(&target.pod, Some((name, init)), "Warning", reason, message);
        });
        start_workers(&container, probe, event)
    }
}

impl Drop for ContainerProbes {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

fn start_workers(container: &Container, probe: ProbeFn, event: EventFn) -> ContainerProbes {
    let (ready, ready_rx) = watch::channel(container.readiness_probe.is_none());
    let (started, started_rx) = watch::channel(container.startup_probe.is_none());
    let (failures, failures_rx) = watch::channel(0);
    let published = Arc::new(Published {
        ready,
        started,
        failures,
    });
    let container_started = Instant::now();
    let tasks = [Kind::Startup, Kind::Readiness, Kind::Liveness]
        .into_iter()
        .filter_map(|kind| Some((kind, kind.spec(container)?.clone())))
        .map(|(kind, spec)| {
            let worker = Worker {
                kind,
                settings: Settings::of(kind, &spec),
                probe: probe.clone(),
                event: event.clone(),
                published: published.clone(),
            };
            tokio::spawn(worker.run(container_started))
        })
        .collect();
    ContainerProbes {
        ready: ready_rx,
        started: started_rx,
        failures: failures_rx,
        tasks,
        _published: published,
    }
}

/// A probe's timing and thresholds with upstream's defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Settings {
    initial_delay: Duration,
    period: Duration,
    success_threshold: u32,
    failure_threshold: u32,
}

impl Settings {
    fn of(kind: Kind, spec: &Probe) -> Settings {
        let positive =
            |v: Option<i32>, default: i32| v.filter(|v| *v > 0).unwrap_or(default) as u32;
        Settings {
            initial_delay: Duration::from_secs(
                spec.initial_delay_seconds.unwrap_or(0).max(0) as u64
            ),
            period: Duration::from_secs(u64::from(positive(
                spec.period_seconds,
                DEFAULT_PERIOD_SECONDS,
            ))),
            // Validation holds liveness and startup to 1; a stray value must not delay a
            // restart or a start.
            success_threshold: match kind {
                Kind::Readiness => positive(spec.success_threshold, DEFAULT_SUCCESS_THRESHOLD),
                Kind::Liveness | Kind::Startup => 1,
            },
            failure_threshold: positive(spec.failure_threshold, DEFAULT_FAILURE_THRESHOLD),
        }
    }
}

struct Worker {
    kind: Kind,
    settings: Settings,
    probe: ProbeFn,
    event: EventFn,
    published: Arc<Published>,
}

impl Worker {
    async fn run(self, container_started: Instant) {
        tokio::time::sleep_until(container_started + self.settings.initial_delay).await;
        if self.kind != Kind::Startup {
            // Probe right when the startup probe passes (upstream triggers readiness then).
            let mut started = self.published.started.subscribe();
            if started.wait_for(|s| *s).await.is_err() {
                return;
            }
        }
        let mut ticker = tokio::time::interval(self.settings.period);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut last: Option<bool> = None;
        let mut run = 0u32;
        loop {
            ticker.tick().await;
            let Some(success) = self.attempt().await else {
                continue;
            };
            if last == Some(success) {
                run = run.saturating_add(1);
            } else {
                last = Some(success);
                run = 1;
            }
            let threshold = if success {
                self.settings.success_threshold
            } else {
                self.settings.failure_threshold
            };
            if run < threshold {
                continue;
            }
            match (self.kind, success) {
                (Kind::Readiness, ready) => {
                    self.published
                        .ready
                        .send_if_modified(|r| std::mem::replace(r, ready) != ready);
                }
                (Kind::Liveness, true) => {}
                (Kind::Startup, true) => {
                    // Started for good: the startup probe is done with this container.
                    self.published.started.send_replace(true);
                    return;
                }
                (Kind::Liveness | Kind::Startup, false) => {
                    // The kubelet restarts the container; this one is not probed again.
                    self.published.failures.send_modify(|n| *n += 1);
                    return;
                }
            }
        }
    }

    /// One probe, retried when it errors; records the events of its outcome. None when it
    /// could not be run at all (the result is discarded, as upstream).
    async fn attempt(&self) -> Option<bool> {
        let name = self.kind.name();
        let mut outcome = (self.probe)(self.kind).await;
        for _ in 1..MAX_PROBE_ATTEMPTS {
            if !matches!(outcome, Outcome::Error(_)) {
                break;
            }
            outcome = (self.probe)(self.kind).await;
        }
        match outcome {
            Outcome::Success(_) => Some(true),
            Outcome::Warning(message) => {
                (self.event)("ProbeWarning", format!("{name} probe warning: {message}"));
                Some(true)
            }
            Outcome::Failure(message) => {
                (self.event)("Unhealthy", format!("{name} probe failed: {message}"));
                Some(false)
            }
            Outcome::Error(message) => {
                (self.event)(
                    "Unhealthy",
                    format!("{name} probe errored and resulted in unknown state: {message}"),
                );
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{HashMap, VecDeque};
    use std::sync::Mutex;

    /// Scripted outcomes per probe kind (the last one repeats), with the time of each call.
    #[derive(Clone, Default)]
    struct Fake {
        script: Arc<Mutex<HashMap<&'static str, VecDeque<Outcome>>>>,
        calls: Arc<Mutex<Vec<(&'static str, Duration)>>>,
        events: Arc<Mutex<Vec<(&'static str, String)>>>,
    }

    impl Fake {
        fn script(&self, kind: Kind, outcomes: Vec<Outcome>) {
            self.script
                .lock()
                .unwrap()
                .insert(kind.name(), outcomes.into());
        }

        fn start(&self, container: &Container) -> ContainerProbes {
            let origin = Instant::now();
            let fake = self.clone();
            let probe: ProbeFn = Arc::new(move |kind| {
                let fake = fake.clone();
                Box::pin(async move {
                    fake.calls
                        .lock()
                        .unwrap()
                        .push((kind.name(), origin.elapsed()));
                    let mut script = fake.script.lock().unwrap();
                    let queue = script.get_mut(kind.name()).expect("a scripted probe kind");
                    if queue.len() > 1 {
                        queue.pop_front().unwrap()
                    } else {
                        queue.front().cloned().unwrap()
                    }
                })
            });
            let events = self.events.clone();
            let event: EventFn =
                Arc::new(move |reason, message| events.lock().unwrap().push((reason, message)));
            start_workers(container, probe, event)
        }

        /// Seconds (from the start) at which the given kind was probed.
        fn calls_of(&self, kind: Kind) -> Vec<f64> {
            self.calls
                .lock()
                .unwrap()
                .iter()
                .filter(|(k, _)| *k == kind.name())
                .map(|(_, at)| (at.as_secs_f64() * 10.0).round() / 10.0)
                .collect()
        }

        fn events(&self) -> Vec<(&'static str, String)> {
            self.events.lock().unwrap().clone()
        }
    }

    fn probe(initial_delay: i32, period: i32, success: Option<i32>, failure: Option<i32>) -> Probe {
        Probe {
            initial_delay_seconds: Some(initial_delay),
            period_seconds: Some(period),
            success_threshold: success,
            failure_threshold: failure,
            ..Default::default()
        }
    }

    fn ok() -> Outcome {
        Outcome::Success(String::new())
    }

    fn fail(message: &str) -> Outcome {
        Outcome::Failure(message.into())
    }

    /// Lets the paused clock run to `secs` after `origin` (and the workers act up to then).
    async fn at(origin: Instant, secs: f64) {
        tokio::time::sleep_until(origin + Duration::from_secs_f64(secs)).await;
    }

    #[tokio::test(start_paused = true)]
    async fn without_probes_ready_and_started_at_once() {
        let probes = Fake::default().start(&Container::default());
        assert!(*probes.ready.borrow());
        assert!(*probes.started.borrow());
        assert_eq!(*probes.failures.borrow(), 0);
        assert!(probes.tasks.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn readiness_waits_initial_delay_then_follows_thresholds() {
        let fake = Fake::default();
        fake.script(
            Kind::Readiness,
            vec![fail("no"), ok(), ok(), fail("a"), fail("b"), ok()],
        );
        let container = Container {
            readiness_probe: Some(probe(5, 1, Some(2), Some(2))),
            ..Default::default()
        };
        let origin = Instant::now();
        let mut probes = fake.start(&container);
        assert!(!*probes.ready.borrow());
        assert!(*probes.started.borrow());
        at(origin, 4.9).await;
        assert!(fake.calls_of(Kind::Readiness).is_empty());
        // 5: fail, 6: ok (1 of 2), 7: ok -> ready.
        at(origin, 6.5).await;
        assert!(!*probes.ready.borrow());
        probes.ready.changed().await.unwrap();
        assert!(*probes.ready.borrow());
        assert_eq!(origin.elapsed(), Duration::from_secs(7));
        // 8: fail (1 of 2), 9: fail -> not ready; 10: ok (1 of 2) keeps it not ready.
        at(origin, 8.5).await;
        assert!(*probes.ready.borrow());
        at(origin, 10.5).await;
        assert!(!*probes.ready.borrow());
        assert_eq!(
            fake.calls_of(Kind::Readiness),
            [5.0, 6.0, 7.0, 8.0, 9.0, 10.0]
        );
        let events = fake.events();
        assert_eq!(
            events,
            [
                ("Unhealthy", "Readiness probe failed: no".to_string()),
                ("Unhealthy", "Readiness probe failed: a".to_string()),
                ("Unhealthy", "Readiness probe failed: b".to_string()),
            ]
        );
        assert_eq!(*probes.failures.borrow(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn liveness_failure_threshold_counts_once_and_holds() {
        let fake = Fake::default();
        fake.script(Kind::Liveness, vec![ok(), fail("boom")]);
        fake.script(Kind::Readiness, vec![ok()]);
        let container = Container {
            liveness_probe: Some(probe(0, 10, None, None)),
            readiness_probe: Some(probe(0, 10, None, None)),
            ..Default::default()
        };
        let origin = Instant::now();
        let mut probes = fake.start(&container);
        probes.failures.changed().await.unwrap();
        // 0: ok, 10, 20, 30: failures 1..3 -> restart.
        assert_eq!(origin.elapsed(), Duration::from_secs(30));
        assert_eq!(*probes.failures.borrow(), 1);
        at(origin, 100.5).await;
        assert_eq!(
            *probes.failures.borrow(),
            1,
            "held until the container is replaced"
        );
        assert_eq!(fake.calls_of(Kind::Liveness), [0.0, 10.0, 20.0, 30.0]);
        // Readiness is not changed by liveness (as upstream): it keeps probing.
        assert!(*probes.ready.borrow());
        assert_eq!(fake.calls_of(Kind::Readiness).len(), 11);
        let failed = fake
            .events()
            .iter()
            .filter(|e| e.1 == "Liveness probe failed: boom")
            .count();
        assert_eq!(failed, 3);
    }

    #[tokio::test(start_paused = true)]
    async fn startup_gates_liveness_and_readiness() {
        let fake = Fake::default();
        fake.script(
            Kind::Startup,
            vec![fail("starting"), fail("starting"), ok()],
        );
        fake.script(Kind::Readiness, vec![ok()]);
        fake.script(Kind::Liveness, vec![ok()]);
        let container = Container {
            startup_probe: Some(probe(1, 2, Some(5), Some(30))),
            readiness_probe: Some(probe(0, 10, None, None)),
            liveness_probe: Some(probe(0, 10, None, None)),
            ..Default::default()
        };
        let origin = Instant::now();
        let mut probes = fake.start(&container);
        assert!(!*probes.started.borrow());
        assert!(!*probes.ready.borrow());
        probes.started.changed().await.unwrap();
        // 1, 3: fail; 5: ok (a stray successThreshold is ignored for startup).
        assert_eq!(origin.elapsed(), Duration::from_secs(5));
        assert!(*probes.started.borrow());
        probes.ready.changed().await.unwrap();
        assert_eq!(
            origin.elapsed(),
            Duration::from_secs(5),
            "readiness probes right after startup"
        );
        at(origin, 30.0).await;
        assert_eq!(fake.calls_of(Kind::Startup), [1.0, 3.0, 5.0]);
        assert_eq!(fake.calls_of(Kind::Readiness), [5.0, 15.0, 25.0]);
        assert_eq!(fake.calls_of(Kind::Liveness), [5.0, 15.0, 25.0]);
        assert_eq!(
            fake.events(),
            [
                ("Unhealthy", "Startup probe failed: starting".to_string()),
                ("Unhealthy", "Startup probe failed: starting".to_string()),
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn startup_failure_restarts_and_nothing_else_runs() {
        let fake = Fake::default();
        fake.script(Kind::Startup, vec![fail("nope")]);
        fake.script(Kind::Liveness, vec![ok()]);
        let container = Container {
            startup_probe: Some(probe(0, 1, None, Some(2))),
            liveness_probe: Some(probe(0, 1, None, None)),
            ..Default::default()
        };
        let origin = Instant::now();
        let mut probes = fake.start(&container);
        probes.failures.changed().await.unwrap();
        assert_eq!(origin.elapsed(), Duration::from_secs(1));
        at(origin, 10.0).await;
        assert_eq!(*probes.failures.borrow(), 1);
        assert!(!*probes.started.borrow());
        assert!(fake.calls_of(Kind::Liveness).is_empty());
        assert_eq!(fake.calls_of(Kind::Startup), [0.0, 1.0]);
    }

    #[tokio::test(start_paused = true)]
    async fn warnings_pass_and_errors_are_discarded() {
        let fake = Fake::default();
        fake.script(
            Kind::Readiness,
            vec![
                Outcome::Error("port \"http\" not found".into()),
                Outcome::Error("again".into()),
                Outcome::Error("and again".into()),
                Outcome::Warning("Probe terminated redirects, Response body: ".into()),
            ],
        );
        let container = Container {
            readiness_probe: Some(probe(0, 1, None, None)),
            ..Default::default()
        };
        let origin = Instant::now();
        let probes = fake.start(&container);
        at(origin, 0.5).await;
        // Three attempts at 0 all errored: no verdict.
        assert!(!*probes.ready.borrow());
        at(origin, 1.5).await;
        assert!(*probes.ready.borrow());
        assert_eq!(fake.calls_of(Kind::Readiness), [0.0, 0.0, 0.0, 1.0]);
        assert_eq!(
            fake.events(),
            [
                (
                    "Unhealthy",
                    "Readiness probe errored and resulted in unknown state: and again".to_string()
                ),
                (
                    "ProbeWarning",
                    "Readiness probe warning: Probe terminated redirects, Response body: "
                        .to_string()
                ),
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn dropping_stops_the_workers() {
        let fake = Fake::default();
        fake.script(Kind::Liveness, vec![ok()]);
        let container = Container {
            liveness_probe: Some(probe(0, 1, None, None)),
            ..Default::default()
        };
        let origin = Instant::now();
        let probes = fake.start(&container);
        at(origin, 2.5).await;
        drop(probes);
        at(origin, 10.0).await;
        assert_eq!(fake.calls_of(Kind::Liveness), [0.0, 1.0, 2.0]);
    }

    #[test]
    fn defaults_as_upstream() {
        let settings = Settings::of(Kind::Liveness, &Probe::default());
        assert_eq!(
            settings,
            Settings {
                initial_delay: Duration::ZERO,
                period: Duration::from_secs(10),
                success_threshold: 1,
                failure_threshold: 3,
            }
        );
        let readiness = Settings::of(Kind::Readiness, &probe(3, 1, Some(2), Some(1)));
        assert_eq!(readiness.success_threshold, 2);
        assert_eq!(readiness.failure_threshold, 1);
        assert_eq!(readiness.period, Duration::from_secs(1));
    }
}
