//! The shell that runs the healer: a reflector keeps the Node cache current, a prober
//! runs network checks on `monitor-interval`, and each evaluation runs the pure layer —
//! [`observe`] (nodes to states), [`planner`] (states to decisions), [`effects`]
//! (decisions to effects) — and then carries the effects out. It evaluates whenever a
//! node changes, a probe result changes, leadership changes, a step finishes, or the
//! planner's own wake-up instant arrives — never on a fixed tick. What it decides by
//! itself is only what it cannot know purely: whether it is blind, whether it leads.

use crate::actor::{Actor, Context};
use crate::effects::{self, Count, Effect, Memory, Work};
use crate::fleet::{FLEET_ANNOTATION, FleetState};
use crate::leader::LeaderElector;
use crate::metrics::{CheckLabels, HeldLabels, Metrics, RoleLabels};
use crate::node;
use crate::notice::{self, Kind, NoNotifier, Notification, Notifier, Severity};
pub use crate::observe::Checks;
use crate::observe::{self, CheckVerdict, Observations};
use crate::planner::{self, Decision, Gate, Input, NodeState, Pause, Plan, Policy};
use crate::reason::Reason;
use autohealer_cloud::{Action, CloudProvider, HealthReport, RepairGate, Role};
use autohealer_healthcheck::NodeView;
use autohealer_healthcheck::{CheckKind, Health, HealthCheck};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Node};
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::ResourceExt;
use kube::api::{Patch, PatchParams};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone)]
pub struct HealerSettings {
    pub policy: Policy,
    pub checks: Checks,
    pub monitor_interval: Duration,
    pub identity: String,
    /// Probes in flight at once.
    pub probe_concurrency: usize,
    /// Node changes arriving within this window are judged together.
    pub debounce: Duration,
    /// A label selector limiting the nodes the healer watches; `None` for all.
    pub node_selector: Option<String>,
    pub evidence: crate::actor::EvidenceSettings,
    pub drain: crate::drain::DrainSettings,
    /// The ConfigMap (namespace, name) whose `autohealer.dev/paused` annotation pauses
    /// new repairs.
    pub pause_configmap: Option<(String, String)>,
    pub fencing: crate::actor::FencingSettings,
    /// The leader Lease (namespace, name) that keeps the fleet state across failover;
    /// `None` without leader election (then it lives as long as the process).
    pub fleet_lease: Option<(String, String)>,
}

/// The steps the cloud performs itself, by role and action, with who does them.
type Delegations = BTreeMap<(Role, Action), String>;

pub const PAUSED_ANNOTATION: &str = "autohealer.dev/paused";

/// How soon after a node update that woke nothing (a kubelet's heartbeat-only status
/// write) an evaluation comes all the same: the kept states hold the views they were
/// judged from, and only an evaluation swaps them for the cache's newer copies, so until
/// then both are held (at 65,000 nodes, 217 such writes a second: 10 s of them is
/// 6 MiB). It judges nothing again; it costs a walk over the cache.
const LET_GO_OF_VIEWS: Duration = Duration::from_secs(10);

/// How often everything observed is looked over for nodes gone unjudged.
const SWEEP_EVERY: Duration = Duration::from_secs(60);

const ALL_GATES: &[Gate] = &[
    Gate::Removing,
    Gate::Correlated,
    Gate::RepeatedRepairs,
    Gate::SlowStart,
    Gate::Approval,
    Gate::Unreadable,
    Gate::Skip,
    Gate::Leader,
    Gate::Paused,
    Gate::Provider,
    Gate::MaxUnhealthy,
    Gate::Zone,
    Gate::StormCooldown,
    Gate::RetryBudget,
    Gate::Concurrency,
    Gate::Rate,
    Gate::Unsupported,
];

/// What `/readyz` reports.
#[derive(Debug, Default)]
pub struct Status {
    pub synced: AtomicBool,
}

pub struct Healer {
    client: kube::Client,
    provider: Arc<dyn CloudProvider>,
    leader: Arc<dyn LeaderElector>,
    settings: HealerSettings,
    metrics: Arc<Metrics>,
    status: Arc<Status>,
    reload: Option<mpsc::Receiver<HealerSettings>>,
    notifier: Arc<dyn Notifier>,
    recorder: Option<kube::runtime::events::Recorder>,
    /// The labels of `autohealer_provider_info` last set, so a change clears the old series.
    provider_info: Mutex<Option<Vec<(String, String)>>>,
}

/// One node's row of an evaluation, for `autohealer plan`.
#[derive(Debug, Clone)]
pub struct Row {
    pub name: String,
    pub role: Role,
    pub verdicts: Vec<CheckVerdict>,
    pub decision: Decision,
    pub severity: Option<(Severity, String)>,
}

/// The provider's last answer to `repair_allowed`, reused for `monitor-interval`.
struct GateCache {
    value: RepairGate,
    at: tokio::time::Instant,
}

/// Whether the healer could see the apiserver: while it cannot, neither can the
/// kubelets, and deadlines that ran meanwhile wait for nodes to report again.
#[derive(Debug, Default)]
struct Sight {
    /// A watch failed at this instant: whether the apiserver is gone or a stream was
    /// only dropped (it resumes by itself) is asked with one small read.
    suspect_since: Option<Timestamp>,
    blind_since: Option<Timestamp>,
    regained: Option<Timestamp>,
}

impl Sight {
    fn lost(&mut self) {
        self.suspect_since.get_or_insert_with(Timestamp::now);
    }

    fn seen(&mut self) {
        self.suspect_since = None;
        if self.blind_since.take().is_some() {
            self.regained = Some(Timestamp::now());
        }
    }

    /// The small read failed too: blind since the watch failed.
    fn unreachable(&mut self) {
        if self.blind_since.is_none() {
            self.blind_since = Some(self.suspect_since.unwrap_or_else(Timestamp::now));
        }
    }

    fn in_doubt(&self) -> bool {
        self.suspect_since.is_some() || self.blind_since.is_some()
    }

    /// Until when deadlines wait: while blind, past now; after, the grace from when
    /// sight came back. A dropped watch that resumes is not blindness.
    fn blind_until(&self, now: Timestamp, grace: Duration) -> Option<Timestamp> {
        if self.blind_since.is_some() {
            return Some(planner::add(now, grace));
        }
        self.regained.map(|r| planner::add(r, grace)).filter(|u| *u > now)
    }
}

/// Per node Lease: its `renewTime` and when this healer saw it change. The Heartbeat
/// check judges by the latter, as the node-lifecycle controller does, so a node whose
/// clock lags is not stale for ever.
type Renewals = Arc<Mutex<observe::SeenRenewals>>;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Healer {
    pub fn new(
        client: kube::Client,
        provider: Arc<dyn CloudProvider>,
        leader: Arc<dyn LeaderElector>,
        settings: HealerSettings,
        metrics: Arc<Metrics>,
        status: Arc<Status>,
    ) -> Self {
        Self {
            client,
            provider,
            leader,
            settings,
            metrics,
            status,
            reload: None,
            notifier: Arc::new(NoNotifier),
            recorder: None,
            provider_info: Mutex::new(None),
        }
    }

    /// The process's one Event recorder (one of its own without it).
    pub fn with_recorder(mut self, recorder: kube::runtime::events::Recorder) -> Self {
        self.recorder = Some(recorder);
        self
    }

    /// Where notifications go (Slack, PagerDuty, email, ...); none without it.
    pub fn with_notifier(mut self, notifier: Arc<dyn Notifier>) -> Self {
        self.notifier = notifier;
        self
    }

    /// A cluster-wide notification (no node), from the leader only.
    fn tell(&self, kind: Kind, severity: Severity, incident: String, summary: String) {
        if self.leader.is_leader() {
            self.notifier.notify(Notification {
                kind,
                severity,
                node: None,
                role: None,
                summary,
                incident,
                dry_run: self.settings.policy.dry_run,
                at: Timestamp::now(),
            });
        }
    }

    /// New settings arriving here (a validated config change) apply without a restart:
    /// checks, policy, limits and probe schedule from the next evaluation on.
    pub fn with_reload(mut self, reload: mpsc::Receiver<HealerSettings>) -> Self {
        self.reload = Some(reload);
        self
    }

    /// What the provider does and what it leaves to the cloud, asked at every
    /// evaluation: a provider learns it from the cloud (the Magnum driver) when the gate
    /// is first asked.
    fn capabilities(&self) -> (BTreeSet<(Role, Action)>, Delegations) {
        let pairs =
            || [Role::Master, Role::Worker].into_iter().flat_map(|r| [Action::Reboot, Action::Replace].into_iter().map(move |a| (r, a)));
        let supported = pairs().filter(|(r, a)| self.provider.supports(*a, *r)).collect();
        let delegated = pairs().filter_map(|(r, a)| self.provider.delegated(a, r).map(|to| ((r, a), to))).collect();
        (supported, delegated)
    }

    fn publish_provider_info(&self) {
        let labels: Vec<(String, String)> = std::iter::once(("provider".to_string(), self.provider.name().to_string()))
            .chain(self.provider.describe())
            .filter(|(k, _)| k != "magnum-driver-from")
            .map(|(k, v)| (k.replace('-', "_"), v))
            .collect();
        let mut last = lock(&self.provider_info);
        if last.as_ref() != Some(&labels) {
            if let Some(old) = last.take() {
                self.metrics.provider_info.get_or_create(&old).set(0);
            }
            self.metrics.provider_info.get_or_create(&labels).set(1);
            *last = Some(labels);
        }
    }

    fn context(&self, recorder: &kube::runtime::events::Recorder, started: &mpsc::UnboundedSender<(String, String)>) -> Arc<Context> {
        let mut cx = Context::new(
            self.client.clone(),
            self.provider.clone(),
            self.leader.clone(),
            self.metrics.clone(),
            self.notifier.clone(),
            self.settings.identity.clone(),
            recorder.clone(),
        );
        cx.evidence = self.settings.evidence.clone();
        cx.drain = self.settings.drain.clone();
        cx.fencing = self.settings.fencing.clone();
        cx.dry_run = self.settings.policy.dry_run;
        cx.max_stalls = self.settings.policy.limits.max_stalls;
        cx.workloads = self.settings.policy.workloads.clone();
        cx.started = Some(started.clone());
        Arc::new(cx)
    }

    /// Runs until `shutdown` is cancelled. Returns an error only when the healer
    /// cannot start (e.g. the node watch never syncs before shutdown).
    pub async fn run(mut self, shutdown: CancellationToken) -> anyhow::Result<()> {
        self.settings.checks.keep_in_views();
        let nodes: Api<NodeView> = Api::all(self.client.clone());
        let (reader, mut writer) = reflector::store();
        let changed = Arc::new(Notify::new());
        let sight: Arc<Mutex<Sight>> = Arc::default();
        let mut wc = watcher::Config::default().any_semantic();
        if let Some(sel) = &self.settings.node_selector {
            wc = wc.labels(sel);
        }
        let stream = watcher(nodes, wc).default_backoff();
        let notify = changed.clone();
        let seen = sight.clone();
        let cached = reader.clone();
        let updates = self.metrics.clone();
        let replaced = Arc::new(AtomicBool::new(false));
        let unjudged = replaced.clone();
        let watch_task = tokio::spawn(async move {
            futures::pin_mut!(stream);
            loop {
                match stream.try_next().await {
                    Ok(Some(event)) => {
                        let wakes = changes_state(&cached, &event);
                        writer.apply_watcher_event(&event);
                        lock(&seen).seen();
                        if let watcher::Event::Apply(_) = event {
                            updates.node_update(wakes);
                            unjudged.store(true, Ordering::Relaxed);
                        }
                        if wakes {
                            notify.notify_one();
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        lock(&seen).lost();
                        tracing::warn!(error = %e, "node watch error; retrying with backoff");
                        notify.notify_one();
                    }
                }
            }
        });
        tokio::select! {
            _ = shutdown.cancelled() => { watch_task.abort(); return Ok(()); }
            r = reader.wait_until_ready() => r.map_err(|e| anyhow::anyhow!("the node watch ended before it synced: {e}"))?,
        }
        self.status.synced.store(true, Ordering::Relaxed);
        tracing::info!(nodes = reader.state().len(), "node cache synced");

        let recorder = self.recorder.clone().unwrap_or_else(|| Context::recorder(&self.client, &self.settings.identity));
        let mut leases = self.settings.checks.need_leases().then(|| self.watch_leases(sight.clone(), changed.clone()));
        // A stale Lease is a change no event announces: look again every monitor-interval.
        let mut tick = tokio::time::interval(self.settings.monitor_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let obs = Arc::new(Mutex::new(Observations::default()));
        let mut judged = observe::Judged::default();
        let trouble = TroubleReport { metrics: self.metrics.clone(), leader: self.leader.clone(), recorder: recorder.clone() };
        let mut probe_task =
            tokio::spawn(prober(reader.clone(), self.settings.clone(), obs.clone(), changed.clone(), shutdown.clone(), trouble.clone()));
        let mut reload = self.reload.take();
        let (started_tx, mut started_rx) = mpsc::unbounded_channel::<(String, String)>();
        let mut cx = self.context(&recorder, &started_tx);
        let mut actor = Arc::new(Actor::new(cx.clone()));
        let mut leader_rx = self.leader.subscribe();
        // A task's end: the node, and whether it failed (a failing node waits a while
        // before the next task: a write refused for good must not spin).
        let (done_tx, mut done_rx) = mpsc::unbounded_channel::<(String, bool)>();
        let mut retry_after: HashMap<String, (tokio::time::Instant, u32)> = HashMap::new();
        let mut in_flight: HashMap<String, tokio::task::JoinHandle<()>> = HashMap::new();
        let mut memory = Memory::default();
        let mut term = CancellationToken::new();
        let mut gate: Option<GateCache> = None;
        let pause = self.watch_pause(changed.clone(), recorder.clone());
        let mut fleet: Option<FleetState> = None;
        let fleet_out = self.fleet_writer();
        // Nodes whose new repair was handed out and not yet seen written (true once its
        // first write succeeded).
        let mut starting: HashMap<String, Starting> = HashMap::new();
        let last_report: Arc<Mutex<Option<HealthReport>>> = Arc::default();

        let mut swept = tokio::time::Instant::now();
        let probe_nodes: Api<Node> = Api::all(self.client.clone());
        self.publish_provider_info();
        loop {
            // A resumed watch says nothing until something changes: while blind, one
            // small read says whether the apiserver answers again.
            if lock(&sight).in_doubt() {
                let lp = kube::api::ListParams::default().limit(1);
                let answered = matches!(tokio::time::timeout(Duration::from_secs(5), probe_nodes.list_metadata(&lp)).await, Ok(Ok(_)));
                let mut sight = lock(&sight);
                match (answered, sight.blind_since.is_some()) {
                    (true, true) => {
                        sight.seen();
                        tracing::info!("the apiserver answers again");
                    }
                    (true, false) => sight.seen(),
                    (false, _) => sight.unreachable(),
                }
            }
            let leader = self.leader.is_leader();
            self.metrics.leader.set(i64::from(leader));
            if leader && fleet.is_none() {
                fleet = self.load_fleet().await;
            }
            // The evaluation's own time, without the cloud's answer to the gate.
            let evaluating = std::time::Instant::now();
            let mut asking = Duration::ZERO;
            replaced.store(false, Ordering::Relaxed);
            let snapshot = reader.state();
            let now = Timestamp::now();
            let empty = FleetState::default();
            let recent = fleet.as_ref().unwrap_or(&empty).recent_starts(now);
            // A new repair's first write shows in the cache soon after it is made; until
            // then its task holds its budgets.
            starting.retain(|uid, s| {
                snapshot.iter().any(|n| n.metadata.uid.as_deref() == Some(uid.as_str()) && !node_in_repair(n) && !s.seen_in(n))
            });
            let starting_now: BTreeSet<String> = starting.keys().cloned().collect();
            let keep: HashSet<&str> = starting_now.iter().map(String::as_str).chain(recent.iter().map(|(uid, _)| uid.as_str())).collect();
            let sweep = swept.elapsed() >= SWEEP_EVERY;
            if sweep {
                swept = tokio::time::Instant::now();
            }
            let judgement = {
                // Read under the Lease watch's lock, released before anything awaits.
                let seen = leases.as_ref().map(|r| lock(r));
                let no_leases = observe::LeaseRenewals::new();
                let renewals: &dyn observe::Renewed = match &seen {
                    Some(seen) => &**seen,
                    None => &no_leases,
                };
                self.evaluate(&mut judged, &snapshot, &obs, now, renewals, &keep, true, sweep)
            };
            let (states, rest) = (judgement.nodes, judgement.rest);
            // The snapshot's objects of the nodes planned: the work on a node is made
            // against the one its decision was made on, so a write over a newer one fails.
            let views: HashMap<&str, &Arc<NodeView>> = judgement.views().map(|n| (n.name(), n)).collect();
            let pause_now = *lock(&pause);
            let blind_until = {
                let sight = lock(&sight);
                self.metrics.blind.set(i64::from(sight.blind_since.is_some()));
                sight.blind_until(now, self.settings.policy.blind_grace)
            };
            let unsure = (leader && fleet.is_none())
                .then_some("the fleet state on the leader Lease (annotation autohealer.dev/fleet) is not read yet, or unreadable");
            let (supported, delegated) = self.capabilities();
            let mut probe = Input {
                nodes: states,
                rest,
                leader,
                pause: pause_now,
                gate: &RepairGate::Allowed,
                supported: &supported,
                delegated: &delegated,
                policy: &self.settings.policy,
                cooldowns: &BTreeMap::new(),
                recent_starts: &recent,
                unsure,
                starting: &starting_now,
                blind_until,
                now,
            };
            let circuits = planner::short_circuits(&probe);
            if leader && let Some(f) = fleet.as_mut() {
                self.track_storms(f, &circuits, now);
            }
            let cooldowns = fleet.as_ref().map(|f| f.cooldowns(now)).unwrap_or_default();
            probe.cooldowns = &cooldowns;
            let mut p = planner::plan(&probe);
            let wants_new_step = p.nodes.iter().any(|n| matches!(n.decision, Decision::Repair { .. }));
            if wants_new_step {
                let fresh = gate.as_ref().is_some_and(|g| g.at.elapsed() < self.settings.monitor_interval);
                if !fresh {
                    let asked = std::time::Instant::now();
                    let value = match self.provider.repair_allowed().await {
                        Ok(v) => v,
                        Err(e) => RepairGate::Denied(format!("cannot ask the cloud: {e}")),
                    };
                    asking = asked.elapsed();
                    gate = Some(GateCache { value, at: tokio::time::Instant::now() });
                }
                let g = gate.as_ref().map_or(RepairGate::Allowed, |g| g.value.clone());
                // The first plan goes before the second is made: two of a large fleet's
                // plans at once would double the evaluation's peak.
                drop(std::mem::take(&mut p));
                // The gate may have taught the provider what it can do.
                let (supported, delegated) = self.capabilities();
                p = planner::plan(&Input { gate: &g, supported: &supported, delegated: &delegated, ..probe });
                self.publish_provider_info();
            }
            tracing::debug!(
                leader,
                pause = ?pause_now,
                blind_until = ?blind_until,
                unsure = unsure.unwrap_or_default(),
                wake_at = ?p.wake_at,
                decisions = ?p.nodes.iter().filter(|n| !matches!(n.decision, Decision::Healthy)).map(|n| (&n.name, &n.decision)).collect::<Vec<_>>(),
                "evaluated"
            );
            self.publish_metrics(states, rest, &p);
            // Notify-only findings are not the planner's: their instants wake the loop too.
            let alert_at = states.iter().flat_map(|s| &s.alerts).map(|f| f.actionable_at()).filter(|t| *t > now).min();
            let wake_at = match (p.wake_at, alert_at) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let wake = wake_at.map(|w| tokio::time::Instant::now() + Duration::try_from(w.duration_since(now)).unwrap_or(Duration::ZERO));
            if leader {
                let waiting = tokio::time::Instant::now();
                retry_after.retain(|_, (until, _)| *until > waiting);
                let busy: HashSet<String> = in_flight.keys().chain(retry_after.keys()).cloned().collect();
                let provider = self.provider.clone();
                let impossible = |s: &NodeState| {
                    views.get(s.name.as_str()).and_then(|n| provider.check_node(&node::info(n)).err()).map(|e| e.to_string())
                };
                let present = |name: &str, uid: &str| reader.get(&ObjectRef::new(name)).is_some_and(|n| n.uid() == uid);
                let ecx =
                    effects::Context { policy: &self.settings.policy, in_flight: &busy, impossible: &impossible, present: &present, now };
                let list = effects::effects(&p, states, &mut memory, &ecx);
                for uid in self.execute(list, &views, &actor, &mut in_flight, &done_tx, &term) {
                    starting.insert(uid, Starting::default());
                }
                if let Some(f) = fleet.as_ref() {
                    save_fleet(&fleet_out, f);
                }
                if !self.settings.policy.dry_run {
                    self.persist_probe_times(&snapshot, &actor, &mut in_flight, &done_tx, &obs);
                    self.report_health(states, now, &last_report);
                }
            }
            self.metrics.evaluations.inc();
            self.metrics.evaluation_duration.observe(evaluating.elapsed().saturating_sub(asking).as_secs_f64());

            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = changed.notified() => tokio::time::sleep(self.settings.debounce).await,
                _ = leader_rx.changed() => {
                    let leads = *leader_rx.borrow_and_update();
                    tracing::info!(leader = leads, identity = %self.settings.identity, "leadership changed");
                    if !leads {
                        // A step cut here is finished by whoever leads next, from its phase.
                        term.cancel();
                        term = CancellationToken::new();
                        in_flight.clear();
                        memory = Memory::default();
                        fleet = None;
                        starting.clear();
                    }
                }
                Some((uid, failed)) = done_rx.recv() => {
                    in_flight.remove(&uid);
                    match starting.get_mut(&uid) {
                        // Never written: it holds nothing.
                        Some(s) if s.written.is_none() => { starting.remove(&uid); }
                        Some(s) => s.done = true,
                        None => {}
                    }
                    if failed {
                        let n = retry_after.get(&uid).map_or(0, |(_, n)| *n).saturating_add(1);
                        let wait = Duration::from_secs(1u64 << n.min(6)).min(Duration::from_secs(60));
                        retry_after.insert(uid, (tokio::time::Instant::now() + wait, n));
                    } else {
                        retry_after.remove(&uid);
                    }
                }
                Some((uid, rv)) = started_rx.recv() => {
                    starting.entry(uid.clone()).or_default().written = Some(rv);
                    if let Some(f) = fleet.as_mut() {
                        f.record_start(&uid, Timestamp::now());
                        save_fleet(&fleet_out, f);
                    }
                }
                _ = async {
                    match retry_after.values().map(|(u, _)| *u).min() {
                        Some(u) => tokio::time::sleep_until(u).await,
                        None => std::future::pending().await,
                    }
                } => {}
                _ = tick.tick(), if leases.is_some() => {}
                _ = tokio::time::sleep(LET_GO_OF_VIEWS), if replaced.load(Ordering::Relaxed) => {}
                _ = tokio::time::sleep(Duration::from_secs(1)), if lock(&sight).in_doubt() => {}
                Some(new) = async { match reload.as_mut() { Some(r) => r.recv().await, None => std::future::pending().await } } => {
                    tracing::info!("configuration reloaded");
                    self.settings = new;
                    self.settings.checks.keep_in_views();
                    if leases.is_none() && self.settings.checks.need_leases() {
                        leases = Some(self.watch_leases(sight.clone(), changed.clone()));
                    }
                    probe_task.abort();
                    probe_task = tokio::spawn(prober(reader.clone(), self.settings.clone(), obs.clone(), changed.clone(), shutdown.clone(), trouble.clone()));
                    cx = self.context(&recorder, &started_tx);
                    actor = Arc::new(Actor::new(cx.clone()));
                    // Check indices may have moved: forget what the old checks observed.
                    *lock(&obs) = Observations::default();
                    judged = observe::Judged::default();
                    memory = Memory::default();
                }
                _ = async { match wake { Some(w) => tokio::time::sleep_until(w).await, None => std::future::pending().await } } => {}
            }
        }
        term.cancel();
        watch_task.abort();
        probe_task.abort();
        self.metrics.leader.set(0);
        Ok(())
    }

    /// Carries out the effects of one evaluation; returns the uids of the nodes whose
    /// new repair was started (for the fleet's rate budget).
    fn execute(
        &self,
        list: Vec<Effect>,
        views: &HashMap<&str, &Arc<NodeView>>,
        actor: &Arc<Actor>,
        in_flight: &mut HashMap<String, tokio::task::JoinHandle<()>>,
        done: &mpsc::UnboundedSender<(String, bool)>,
        term: &CancellationToken,
    ) -> Vec<String> {
        let mut started = Vec::new();
        for effect in list {
            let n = effect.node().and_then(|name| views.get(name)).map(|n| (*n).clone());
            match (effect, n) {
                (Effect::Count(Count::Detected { role, severity }), _) => self.metrics.detected(role.as_str(), severity.as_str()),
                (Effect::Count(Count::DryRun { role, action }), _) => self.metrics.repair(role.as_str(), action.as_str(), "dry_run"),
                (Effect::Notify(note), _) => self.notifier.notify(note),
                (Effect::Event { reason, action, note, .. }, Some(n)) => {
                    tracing::info!(node = %n.name_any(), %reason, note = %note, "decision");
                    let cx = actor.cx.clone();
                    tokio::spawn(async move { cx.event_about(&n, reason, action, note).await });
                }
                (Effect::RecordHeld { entry, .. }, Some(n)) => {
                    let actor = actor.clone();
                    tokio::spawn(async move {
                        if let Err(e) = actor.record_detection(&n, entry).await {
                            tracing::debug!(node = %n.name_any(), error = %e, "held detection not recorded; the next evaluation tries again");
                        }
                    });
                }
                (Effect::Work { work, .. }, Some(n)) => {
                    let uid = n.metadata.uid.clone().unwrap_or_default();
                    if matches!(work, Work::Start { attempt: 1, .. }) {
                        started.push(uid.clone());
                    }
                    let (actor, done, term, key) = (actor.clone(), done.clone(), term.clone(), uid.clone());
                    let task = tokio::spawn(async move {
                        let failed = tokio::select! {
                            _ = term.cancelled() => {
                                tracing::warn!(node = %n.name_any(), "leadership lost; the step goes on under the next leader from its recorded phase");
                                false
                            }
                            r = actor.run(&n, work) => match r {
                                Err(e) => {
                                    tracing::info!(node = %n.name_any(), error = %e, "step not carried out");
                                    !matches!(e, crate::actor::ActError::Conflict(_) | crate::actor::ActError::NotLeader)
                                }
                                Ok(()) => false,
                            },
                        };
                        let _ = done.send((key, failed));
                    });
                    in_flight.insert(uid, task);
                }
                (_, None) => {}
            }
        }
        started
    }

    /// Remembers when short-circuits start and clear (for the storm cooldown, kept in
    /// the fleet state) and says so.
    fn track_storms(&self, fleet: &mut FleetState, circuits: &[(planner::Scope, String)], now: Timestamp) {
        let storms = fleet.track(circuits, self.settings.policy.limits.storm_cooldown, now);
        // Cohorts of the same failing nodes (kernel and OS image changed together) share
        // one reason: people are told once.
        let mut told: BTreeSet<String> = BTreeSet::new();
        for (scope, why) in storms.on {
            if !told.insert(why.clone()) {
                continue;
            }
            tracing::warn!(scope = %scope, why = %why, severity = "critical", "short-circuit: no new repairs");
            self.tell(
                Kind::ShortCircuitOn,
                Severity::Critical,
                format!("short-circuit/{scope}"),
                format!("Short-circuit ({scope}): no new repairs. {why}"),
            );
        }
        for (scope, until) in storms.off {
            tracing::info!(scope = %scope, until = %until, "short-circuit cleared; storm cooldown");
            self.tell(
                Kind::ShortCircuitOff,
                Severity::Critical,
                format!("short-circuit/{scope}"),
                format!("Short-circuit ({scope}) cleared; new repairs there after {until}"),
            );
        }
        self.metrics.short_circuits.set(circuits.len() as i64);
    }

    /// Reads the fleet state from the leader Lease; `None` (new repairs wait) while it
    /// cannot be read. Without a fleet Lease it starts empty.
    async fn load_fleet(&self) -> Option<FleetState> {
        let Some((ns, name)) = &self.settings.fleet_lease else { return Some(FleetState::default()) };
        let api: Api<Lease> = Api::namespaced(self.client.clone(), ns);
        match tokio::time::timeout(Duration::from_secs(10), api.get_opt(name)).await {
            Ok(Ok(lease)) => {
                let value = lease.as_ref().and_then(|l| l.metadata.annotations.as_ref()).and_then(|a| a.get(FLEET_ANNOTATION));
                match FleetState::parse(value.map(String::as_str)) {
                    Ok(f) => Some(f),
                    // Without it, a new leader could repair the stragglers of an outage the
                    // old one was holding back: new repairs wait, and the log says how out.
                    Err(e) => {
                        tracing::error!(lease = %format!("{ns}/{name}"), error = %e, "fleet state unreadable: new repairs wait; remove the annotation from the Lease to start afresh");
                        None
                    }
                }
            }
            Ok(Err(e)) => {
                tracing::warn!(lease = %format!("{ns}/{name}"), error = %e, "cannot read the fleet state (get leases); new repairs wait");
                None
            }
            Err(_) => {
                tracing::warn!(lease = %format!("{ns}/{name}"), "reading the fleet state timed out; new repairs wait");
                None
            }
        }
    }

    /// The one writer of the fleet state to the leader Lease: writes go out in order,
    /// the latest wins, only while this replica leads; a failed write is tried again.
    /// Each write tests that the Lease still names this replica, so a write still in
    /// flight when leadership moved cannot land over the new leader's state.
    fn fleet_writer(&self) -> Option<tokio::sync::watch::Sender<String>> {
        let (ns, name) = self.settings.fleet_lease.clone()?;
        let (tx, mut rx) = tokio::sync::watch::channel(String::new());
        let api: Api<Lease> = Api::namespaced(self.client.clone(), &ns);
        let leader = self.leader.clone();
        let identity = self.settings.identity.clone();
        tokio::spawn(async move {
            while rx.changed().await.is_ok() {
                loop {
                    let json = rx.borrow_and_update().clone();
                    if json.is_empty() || !leader.is_leader() {
                        break;
                    }
                    match tokio::time::timeout(Duration::from_secs(10), write_fleet(&api, &name, &identity, &json)).await {
                        Ok(Ok(())) => break,
                        Ok(Err(FleetWrite::NotHolder)) => {
                            tracing::info!(lease = %format!("{ns}/{name}"), "the Lease no longer names this replica: the fleet state is not written");
                            break;
                        }
                        Ok(Err(FleetWrite::Failed(e))) => {
                            tracing::warn!(lease = %format!("{ns}/{name}"), error = %e, "cannot keep the fleet state (patch leases); trying again");
                            tokio::time::sleep(Duration::from_secs(5)).await;
                        }
                        Err(_) => {
                            tracing::warn!(lease = %format!("{ns}/{name}"), "writing the fleet state timed out; trying again");
                        }
                    }
                }
            }
        });
        Some(tx)
    }

    /// Follows the node Leases for the Heartbeat check: when each `renewTime` was seen
    /// to change. A broken watch makes the healer blind like a broken node watch.
    fn watch_leases(&self, sight: Arc<Mutex<Sight>>, changed: Arc<Notify>) -> Renewals {
        let api: Api<observe::NodeLease> = Api::namespaced(self.client.clone(), "kube-node-lease");
        let seen: Renewals = Arc::default();
        let map = seen.clone();
        // Raw events, not touched objects: a deleted Lease (a node gone) is forgotten.
        let stream = watcher(api, watcher::Config::default().any_semantic()).default_backoff();
        tokio::spawn(async move {
            futures::pin_mut!(stream);
            while let Some(r) = stream.next().await {
                match r {
                    Ok(watcher::Event::Apply(l) | watcher::Event::InitApply(l)) => {
                        let Some((name, renewed)) = lease_renewal(&l) else { continue };
                        observe::saw_renewal(&mut lock(&map), &name, renewed, Timestamp::now());
                    }
                    Ok(watcher::Event::Delete(l)) => {
                        if let Some(name) = &l.metadata.name {
                            lock(&map).remove(name);
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        lock(&sight).lost();
                        changed.notify_one();
                        tracing::warn!(error = %e, "watching node Leases; retrying with backoff");
                    }
                }
            }
        });
        seen
    }

    /// Follows the pause annotation on the healer's ConfigMap. Until it is read, and
    /// from a failure of its watch until it is read again (a fresh list: a resumed
    /// watch says nothing of what changed meanwhile), the pause state is unknown and new
    /// repairs wait.
    fn watch_pause(&self, changed: Arc<Notify>, recorder: kube::runtime::events::Recorder) -> Arc<Mutex<Pause>> {
        let Some((ns, name)) = self.settings.pause_configmap.clone() else { return Arc::new(Mutex::new(Pause::Running)) };
        let state = Arc::new(Mutex::new(Pause::Unknown));
        let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), &ns);
        let flag = state.clone();
        let metrics = self.metrics.clone();
        let leader = self.leader.clone();
        let notifier = self.notifier.clone();
        let dry_run = self.settings.policy.dry_run;
        tokio::spawn(async move {
            let mut known: Option<bool> = None;
            let mut failures: u32 = 0;
            loop {
                let cfg = watcher::Config::default().fields(&format!("metadata.name={name}"));
                let mut events = watcher(api.clone(), cfg).boxed();
                let mut listed = false;
                let error = loop {
                    let now = match events.next().await {
                        None => break None,
                        Some(Err(e)) => break Some(e),
                        Some(Ok(watcher::Event::Apply(cm) | watcher::Event::InitApply(cm))) => {
                            listed = true;
                            cm.metadata
                                .annotations
                                .as_ref()
                                .and_then(|a| a.get(PAUSED_ANNOTATION))
                                .is_some_and(|v| v.eq_ignore_ascii_case("true"))
                        }
                        Some(Ok(watcher::Event::Delete(_))) => false,
                        Some(Ok(watcher::Event::Init)) => continue,
                        // Listed, and not there: nothing pauses repairs.
                        Some(Ok(watcher::Event::InitDone)) if !listed => false,
                        Some(Ok(watcher::Event::InitDone)) => continue,
                    };
                    failures = 0;
                    *lock(&flag) = if now { Pause::Paused } else { Pause::Running };
                    if known != Some(now) {
                        metrics.paused.set(i64::from(now));
                        if known.is_some() || now {
                            let what = if now { "paused" } else { "resumed" };
                            tracing::info!(paused = now, configmap = %format!("{ns}/{name}"), "repairs {what}");
                            if leader.is_leader() {
                                notifier.notify(Notification {
                                    kind: if now { Kind::Paused } else { Kind::Resumed },
                                    severity: Severity::Medium,
                                    node: None,
                                    role: None,
                                    summary: format!("Repairs {what} through ConfigMap {ns}/{name}"),
                                    incident: format!("paused/{ns}/{name}"),
                                    dry_run,
                                    at: Timestamp::now(),
                                });
                            }
                        }
                        known = Some(now);
                    }
                    changed.notify_one();
                };
                *lock(&flag) = Pause::Unknown;
                changed.notify_one();
                if let Some(e) = error {
                    metrics.pause_watch_errors.inc();
                    tracing::error!(error = %e, configmap = %format!("{ns}/{name}"), "cannot watch the healer's ConfigMap: whether repairs are paused is unknown, new repairs wait");
                    if failures == 0 && leader.is_leader() {
                        let note =
                            format!("Cannot watch this ConfigMap ({e}): whether repairs are paused is unknown, so new repairs wait.");
                        configmap_event(&recorder, &ns, &name, Reason::PauseUnknown, "Pause", note).await;
                    }
                }
                failures = failures.saturating_add(1);
                // As kube-runtime's default backoff: from 0.8 s, doubling, at most 30 s.
                let wait = Duration::from_millis(800).saturating_mul(1 << failures.saturating_sub(1).min(6)).min(Duration::from_secs(30));
                tokio::time::sleep(wait).await;
            }
        });
        state
    }

    /// Tells the cloud which nodes are unhealthy past their duration (Magnum's
    /// `health_status`), only when that changes.
    fn report_health(&self, states: &[NodeState], now: Timestamp, last: &Arc<Mutex<Option<HealthReport>>>) {
        let unhealthy_nodes: Vec<(String, String)> = states
            .iter()
            .filter_map(|s| {
                let due: Vec<&str> = s.findings.iter().filter(|f| f.actionable_at() <= now).map(|f| f.check.as_str()).collect();
                (!due.is_empty()).then(|| (s.name.clone(), due.join(",")))
            })
            .collect();
        let report = HealthReport { healthy: unhealthy_nodes.is_empty(), unhealthy_nodes };
        {
            let mut g = last.lock().unwrap_or_else(|p| p.into_inner());
            if g.as_ref() == Some(&report) {
                return;
            }
            *g = Some(report.clone());
        }
        let provider = self.provider.clone();
        let last = last.clone();
        tokio::spawn(async move {
            if let Err(e) = provider.report_health(&report).await {
                tracing::warn!(error = %e, "cannot report the cluster's health to the cloud");
                // Forgotten, so the next evaluation sends it again.
                let mut g = last.lock().unwrap_or_else(|p| p.into_inner());
                if g.as_ref() == Some(&report) {
                    *g = None;
                }
            }
        });
    }

    /// Judges the nodes that may have changed since `judged` last saw them (see
    /// [`observe::Judged`]) and forgets what it observed of nodes gone: those the update
    /// found gone, and with `sweep` any other (a node probed and deleted before it was
    /// ever judged).
    #[allow(clippy::too_many_arguments)]
    fn evaluate<'j>(
        &self,
        judged: &'j mut observe::Judged,
        snapshot: &[Arc<NodeView>],
        obs: &Mutex<Observations>,
        now: Timestamp,
        leases: &dyn observe::Renewed,
        keep: &HashSet<&str>,
        apart: bool,
        sweep: bool,
    ) -> observe::Judgement<'j> {
        let mut obs = obs.lock().unwrap_or_else(|p| p.into_inner());
        let judging = observe::Judging { checks: &self.settings.checks, policy: &self.settings.policy, now, leases, keep, apart };
        let judgement = judged.update(snapshot, &mut obs, &judging);
        if sweep {
            let uids: HashSet<&str> = snapshot.iter().map(|n| n.uid()).collect();
            obs.probes.retain(|(uid, _), _| uids.contains(uid.as_str()));
            obs.first_seen.retain(|(uid, _), _| uids.contains(uid.as_str()));
            obs.healthy_since.retain(|uid, _| uids.contains(uid.as_str()));
        } else if !judgement.gone.is_empty() {
            let gone: HashSet<&str> = judgement.gone.iter().map(String::as_str).collect();
            obs.probes.retain(|(uid, _), _| !gone.contains(uid.as_str()));
            obs.first_seen.retain(|(uid, _), _| !gone.contains(uid.as_str()));
            for uid in &judgement.gone {
                obs.healthy_since.remove(uid);
            }
        }
        judgement
    }

    /// One evaluation without acting: what `autohealer plan` prints.
    pub async fn plan_once(&self) -> anyhow::Result<(Vec<Row>, Plan)> {
        self.settings.checks.keep_in_views();
        let nodes: Api<NodeView> = Api::all(self.client.clone());
        let list = nodes.list(&Default::default()).await.map_err(|e| anyhow::anyhow!("list nodes failed: {e}"))?;
        let snapshot: Vec<Arc<NodeView>> = list.items.into_iter().map(Arc::new).collect();
        let obs = Mutex::new(Observations::default());
        probe_all(&snapshot, &self.settings, &obs).await;
        let now = Timestamp::now();
        let renewals: observe::LeaseRenewals = if self.settings.checks.need_leases() {
            let leases: Api<observe::NodeLease> = Api::namespaced(self.client.clone(), "kube-node-lease");
            let list = leases.list(&Default::default()).await.map_err(|e| anyhow::anyhow!("list leases in kube-node-lease failed: {e}"))?;
            // One look cannot see a renewal change: the kubelet's own renewTime is all there is.
            list.items.iter().filter_map(lease_renewal).collect()
        } else {
            Default::default()
        };
        let mut judged = observe::Judged::default();
        // Every node one by one: the plan shows each.
        let judgement = self.evaluate(&mut judged, &snapshot, &obs, now, &renewals, &HashSet::new(), false, false);
        let (states, verdicts) = (judgement.nodes, judgement.verdicts);
        let gate = self.provider.repair_allowed().await.unwrap_or_else(|e| RepairGate::Denied(format!("cannot ask the cloud: {e}")));
        let (supported, delegated) = self.capabilities();
        let p = planner::plan(&Input {
            nodes: states,
            rest: &planner::Rest::default(),
            leader: true,
            pause: Pause::Running,
            gate: &gate,
            supported: &supported,
            delegated: &delegated,
            policy: &self.settings.policy,
            cooldowns: &BTreeMap::new(),
            recent_starts: &[],
            unsure: None,
            starting: &BTreeSet::new(),
            blind_until: None,
            now,
        });
        let rows = p
            .nodes
            .iter()
            .zip(verdicts)
            .zip(states)
            .map(|((np, v), st)| Row {
                name: np.name.clone(),
                role: np.role,
                verdicts: v.clone(),
                decision: np.decision.clone(),
                severity: notice::of_decision(st, &np.decision, now),
            })
            .collect();
        Ok((rows, p))
    }

    /// From the nodes planned one by one and the counts of the rest (which are healthy
    /// and held by nothing).
    fn publish_metrics(&self, states: &[NodeState], rest: &planner::Rest, p: &Plan) {
        let mut held: HashMap<(Role, Gate), i64> = HashMap::new();
        for n in &p.nodes {
            if let Decision::Held { gate, .. } = &n.decision {
                *held.entry((n.role, *gate)).or_default() += 1;
            }
        }
        for role in [Role::Master, Role::Worker] {
            let count = states.iter().filter(|s| s.role == role).count() + rest.of_role(role);
            self.metrics.nodes.get_or_create(&RoleLabels { role: role.as_str().into() }).set(count as i64);
            for g in ALL_GATES {
                let held = held.get(&(role, *g)).copied().unwrap_or(0);
                self.metrics.held.get_or_create(&HeldLabels { role: role.as_str().into(), gate: g.as_str().into() }).set(held);
            }
            let mut per_check: HashMap<&str, i64> = HashMap::new();
            for check in self.settings.checks.for_role(role) {
                per_check.insert(check.type_name(), 0);
            }
            for s in states.iter().filter(|s| s.role == role) {
                let names: BTreeSet<&str> = s.findings.iter().map(|f| f.check.as_str()).collect();
                for name in names {
                    *per_check.entry(name).or_default() += 1;
                }
            }
            for (check, n) in per_check {
                self.metrics.unhealthy_nodes.get_or_create(&CheckLabels { role: role.as_str().into(), check: check.into() }).set(n);
            }
        }
    }

    /// Writes the first failure time of probing checks to their annotation (and
    /// clears it when they pass), so a new leader continues the count. Checks that
    /// share an annotation share it as [`effects::probe_time_write`] says: one write per
    /// node at most, never two checks rewriting it in turn.
    fn persist_probe_times(
        &self,
        snapshot: &[Arc<NodeView>],
        actor: &Arc<Actor>,
        in_flight: &mut HashMap<String, tokio::task::JoinHandle<()>>,
        done: &mpsc::UnboundedSender<(String, bool)>,
        obs: &Mutex<Observations>,
    ) {
        let obs = lock(obs);
        let persists = |role| self.settings.checks.for_role(role).iter().any(|c| c.unhealthy_annotation().is_some());
        let (masters, workers) = (persists(Role::Master), persists(Role::Worker));
        if !masters && !workers {
            return;
        }
        for n in snapshot {
            let role = node::role(n);
            if !(if role == Role::Master { masters } else { workers }) || in_flight.contains_key(n.uid()) {
                continue;
            }
            let uid = n.uid().to_string();
            let checks = self.settings.checks.for_role(role);
            let probes: Vec<(Option<&str>, Option<Option<Timestamp>>)> = checks
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    let key = (uid.clone(), i);
                    let h = obs.probes.get(&key).map(|h| match h {
                        Health::Unhealthy { .. } => Some(obs.first_seen.get(&key).copied().unwrap_or_else(Timestamp::now)),
                        Health::Healthy => None,
                    });
                    (c.unhealthy_annotation(), h)
                })
                .collect();
            let present = |a: &str| node::annotation(n, a).map(String::from);
            let Some((annotation, value)) = effects::probe_time_write(&probes, &present, &observe::format_probe_time) else { continue };
            let (actor, n, done, key) = (actor.clone(), n.clone(), done.clone(), uid.clone());
            in_flight.insert(
                uid,
                tokio::spawn(async move {
                    let failed = match actor.mark_probe(&n, &annotation, value).await {
                        Err(e) => {
                            tracing::debug!(node = %n.name_any(), error = %e, "probe time not persisted");
                            !matches!(e, crate::actor::ActError::Conflict(_) | crate::actor::ActError::NotLeader)
                        }
                        Ok(()) => false,
                    };
                    let _ = done.send((key, failed));
                }),
            );
        }
    }
}

/// Hands the fleet state to its writer when it changed.
fn save_fleet(out: &Option<tokio::sync::watch::Sender<String>>, fleet: &FleetState) {
    if let Some(tx) = out {
        let json = fleet.to_json();
        tx.send_if_modified(|cur| {
            let changed = *cur != json;
            if changed {
                *cur = json;
            }
            changed
        });
    }
}

/// A new repair handed to a task, holding its budgets until the cache shows its
/// first write (or the task ended without one).
#[derive(Debug, Default)]
struct Starting {
    /// The resourceVersion of the first write, once it went through.
    written: Option<String>,
    done: bool,
}

impl Starting {
    /// Whether the cached node is at or past the first write: from then on the node's
    /// own record counts. resourceVersions are compared as numbers, as every
    /// apiserver backed by etcd gives them; one that is not a number counts once the
    /// task ended.
    fn seen_in(&self, n: &NodeView) -> bool {
        let Some(w) = &self.written else { return false };
        match (w.parse::<u64>(), n.metadata.resource_version.as_deref().map(str::parse::<u64>)) {
            (Ok(w), Some(Ok(have))) => have >= w,
            _ => self.done,
        }
    }
}

/// Whether the node's ledger holds a repair under way.
fn node_in_repair(n: &NodeView) -> bool {
    matches!(crate::ledger::Ledger::parse(node::annotation(n, crate::ledger::REPAIR_ANNOTATION)), crate::ledger::Ledger::Record(r) if r.failed.is_none())
}

/// Whether a watch event changes what an evaluation reads, judged before the cache
/// takes it: a Node update whose view equals the cached one (a kubelet's status report
/// that only moved heartbeat times) does not; a new, changed or deleted node, and the
/// end of a (re)list, do.
fn changes_state(cached: &Store<NodeView>, event: &watcher::Event<NodeView>) -> bool {
    match event {
        watcher::Event::Apply(n) => cached.get(&reflector::ObjectRef::from_obj(n)).is_none_or(|old| !old.same_state(n)),
        watcher::Event::Delete(_) | watcher::Event::InitDone => true,
        watcher::Event::Init | watcher::Event::InitApply(_) => false,
    }
}

fn lease_renewal(l: &observe::NodeLease) -> Option<(String, Timestamp)> {
    Some((l.metadata.name.clone()?, l.renew_time?))
}

async fn probe_all(snapshot: &[Arc<NodeView>], settings: &HealerSettings, obs: &Mutex<Observations>) -> bool {
    let limit = Arc::new(tokio::sync::Semaphore::new(settings.probe_concurrency.max(1)));
    let mut set = tokio::task::JoinSet::new();
    for n in snapshot {
        let checks = settings.checks.for_role(node::role(n));
        for (i, c) in checks.iter().enumerate().filter(|(_, c)| c.kind() == CheckKind::Probe) {
            let Ok(permit) = limit.clone().acquire_owned().await else {
                break;
            };
            let (n, c): (Arc<NodeView>, Arc<dyn HealthCheck>) = (n.clone(), c.clone());
            set.spawn(async move {
                let h = c.probe(&n).await;
                drop(permit);
                (n.metadata.uid.clone().unwrap_or_default(), i, h)
            });
        }
    }
    let results = set.join_all().await;
    let mut obs = obs.lock().unwrap_or_else(|p| p.into_inner());
    let mut changed = false;
    for (uid, i, h) in results {
        let was_healthy = obs.probes.get(&(uid.clone(), i)).map(Health::is_healthy);
        let healthy = h.is_healthy();
        obs.probed(uid, i, h);
        changed |= was_healthy != Some(healthy);
    }
    changed
}

/// Where the prober reports checks that cannot get their evidence.
#[derive(Clone)]
struct TroubleReport {
    metrics: Arc<Metrics>,
    leader: Arc<dyn LeaderElector>,
    recorder: kube::runtime::events::Recorder,
}

async fn prober(
    reader: Store<NodeView>,
    settings: HealerSettings,
    obs: Arc<Mutex<Observations>>,
    changed: Arc<Notify>,
    shutdown: CancellationToken,
    report: TroubleReport,
) {
    let any_probe = [Role::Master, Role::Worker].iter().any(|r| settings.checks.for_role(*r).iter().any(|c| c.kind() == CheckKind::Probe));
    if !any_probe {
        return;
    }
    let mut tick = tokio::time::interval(settings.monitor_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut told: HashMap<(Role, usize), String> = HashMap::new();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        if probe_all(&reader.state(), &settings, &obs).await {
            changed.notify_one();
        }
        tell_trouble(&settings, &report, &mut told).await;
    }
}

/// A check that cannot get its evidence answers healthy; say so once per trouble: a
/// gauge, and a Warning Event on the healer's ConfigMap from the leader.
async fn tell_trouble(settings: &HealerSettings, report: &TroubleReport, told: &mut HashMap<(Role, usize), String>) {
    for role in [Role::Master, Role::Worker] {
        for (i, check) in settings.checks.for_role(role).iter().enumerate() {
            let trouble = check.trouble();
            let labels = CheckLabels { role: role.as_str().into(), check: check.type_name().into() };
            report.metrics.check_failing.get_or_create(&labels).set(i64::from(trouble.is_some()));
            let Some(why) = trouble else {
                told.remove(&(role, i));
                continue;
            };
            if told.get(&(role, i)) == Some(&why) || !report.leader.is_leader() {
                continue;
            }
            told.insert((role, i), why.clone());
            tracing::warn!(check = check.type_name(), %role, trouble = %why, "a check cannot get its evidence: it answers healthy");
            let Some((ns, name)) = &settings.pause_configmap else { continue };
            let note = format!(
                "The {} check of {role} nodes cannot get its evidence ({why}): it answers healthy until it can, so it repairs nothing meanwhile.",
                check.type_name()
            );
            configmap_event(&report.recorder, ns, name, Reason::CheckFailing, "Notify", note).await;
        }
    }
}

/// A Warning Event on the healer's own ConfigMap: about the healer, not a node.
async fn configmap_event(recorder: &kube::runtime::events::Recorder, ns: &str, name: &str, reason: Reason, action: &str, note: String) {
    let reference = k8s_openapi::api::core::v1::ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("ConfigMap".into()),
        name: Some(name.to_string()),
        namespace: Some(ns.to_string()),
        ..Default::default()
    };
    let ev = kube::runtime::events::Event {
        type_: kube::runtime::events::EventType::Warning,
        reason: reason.as_str().into(),
        note: Some(note),
        action: action.into(),
        secondary: None,
    };
    if let Err(e) = recorder.publish(&ev, &reference).await {
        tracing::warn!(%reason, error = %e, "cannot publish an Event");
    }
}

enum FleetWrite {
    NotHolder,
    Failed(kube::Error),
}

/// The fleet state into the Lease's annotations, if the Lease names `identity`: a JSON
/// patch with a `test` of the holder. A Lease without annotations yet gets its map in a
/// second patch that also tests the resourceVersion read, so no one else's is replaced.
async fn write_fleet(api: &Api<Lease>, name: &str, identity: &str, json: &str) -> Result<(), FleetWrite> {
    let patch = |ops: serde_json::Value| serde_json::from_value::<json_patch::Patch>(ops).map(Patch::<()>::Json);
    let holder = serde_json::json!({"op": "test", "path": "/spec/holderIdentity", "value": identity});
    let key = format!("/metadata/annotations/{}", FLEET_ANNOTATION.replace('~', "~0").replace('/', "~1"));
    let first = patch(serde_json::json!([holder, {"op": "add", "path": key, "value": json}]))
        .map_err(|e| FleetWrite::Failed(kube::Error::SerdeError(e)))?;
    match api.patch(name, &PatchParams::default(), &first).await {
        Ok(_) => return Ok(()),
        Err(kube::Error::Api(s)) if s.code == 422 => {}
        Err(e) => return Err(FleetWrite::Failed(e)),
    }
    // Refused: not the holder any more, or no annotations to add the key to.
    let lease = api.get_opt(name).await.map_err(FleetWrite::Failed)?.ok_or(FleetWrite::NotHolder)?;
    if lease.spec.as_ref().and_then(|s| s.holder_identity.as_deref()) != Some(identity) {
        return Err(FleetWrite::NotHolder);
    }
    if lease.metadata.annotations.is_some() {
        return Err(FleetWrite::Failed(kube::Error::Service("the Lease changed while the fleet state was written".into())));
    }
    let rv = lease.metadata.resource_version.unwrap_or_default();
    let second = patch(serde_json::json!([
        holder,
        {"op": "test", "path": "/metadata/resourceVersion", "value": rv},
        {"op": "add", "path": "/metadata/annotations", "value": {FLEET_ANNOTATION: json}},
    ]))
    .map_err(|e| FleetWrite::Failed(kube::Error::SerdeError(e)))?;
    api.patch(name, &PatchParams::default(), &second).await.map(|_| ()).map_err(FleetWrite::Failed)
}
