//! The loop that runs the healer: a reflector keeps the Node cache current, a prober
//! runs network checks on `monitor-interval`, and the planner is evaluated whenever a
//! node changes, a probe result changes, leadership changes, a step finishes, or the
//! planner's own wake-up instant arrives — never on a fixed tick.

use crate::actor::Actor;
use crate::leader::LeaderElector;
use crate::metrics::{CheckLabels, HeldLabels, Metrics, RoleLabels};
use crate::node;
use crate::notice::{self, Kind, NoNotifier, Notification, Notifier, Severity};
pub use crate::observe::Checks;
use crate::observe::{self, CheckVerdict, Observations};
use crate::planner::{self, Decision, Gate, Input, NodeState, Plan, Policy, Scope};
use autohealer_cloud::{Action, CloudProvider, HealthReport, RepairGate, Role};
use autohealer_healthcheck::{CheckKind, Health, HealthCheck};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::ResourceExt;
use kube::runtime::reflector::{self, Store};
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
}

pub const PAUSED_ANNOTATION: &str = "autohealer.dev/paused";

const ALL_GATES: &[Gate] = &[
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

/// What the leader has said about nodes that hold: one Event per node and gate, and
/// the incidents it opened, to close when the node heals without a repair.
#[derive(Default)]
struct Announced {
    keys: HashSet<(String, String)>,
    open: HashMap<String, (String, Severity)>,
}

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

impl Healer {
    pub fn new(
        client: kube::Client,
        provider: Arc<dyn CloudProvider>,
        leader: Arc<dyn LeaderElector>,
        settings: HealerSettings,
        metrics: Arc<Metrics>,
        status: Arc<Status>,
    ) -> Self {
        Self { client, provider, leader, settings, metrics, status, reload: None, notifier: Arc::new(NoNotifier) }
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

    fn supported(&self) -> BTreeSet<(Role, Action)> {
        [Role::Master, Role::Worker]
            .into_iter()
            .flat_map(|r| [Action::Reboot, Action::Replace].into_iter().map(move |a| (r, a)))
            .filter(|(r, a)| self.provider.supports(*a, *r))
            .collect()
    }

    /// Runs until `shutdown` is cancelled. Returns an error only when the healer
    /// cannot start (e.g. the node watch never syncs before shutdown).
    pub async fn run(mut self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let nodes: Api<Node> = Api::all(self.client.clone());
        let (reader, writer) = reflector::store();
        let changed = Arc::new(Notify::new());
        let mut wc = watcher::Config::default().any_semantic();
        if let Some(sel) = &self.settings.node_selector {
            wc = wc.labels(sel);
        }
        let stream = watcher(nodes, wc).default_backoff().modify(node::trim).reflect(writer).touched_objects();
        let notify = changed.clone();
        let watch_task = tokio::spawn(async move {
            futures::pin_mut!(stream);
            loop {
                match stream.try_next().await {
                    Ok(Some(_)) => notify.notify_one(),
                    Ok(None) => break,
                    Err(e) => tracing::warn!(error = %e, "node watch error; retrying with backoff"),
                }
            }
        });
        tokio::select! {
            _ = shutdown.cancelled() => { watch_task.abort(); return Ok(()); }
            r = reader.wait_until_ready() => r.map_err(|e| anyhow::anyhow!("the node watch ended before it synced: {e}"))?,
        }
        self.status.synced.store(true, Ordering::Relaxed);
        tracing::info!(nodes = reader.state().len(), "node cache synced");

        let mut leases = self.settings.checks.need_leases().then(|| self.watch_leases());
        // A stale Lease is a change no event announces: look again every monitor-interval.
        let mut tick = tokio::time::interval(self.settings.monitor_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let obs = Arc::new(Mutex::new(Observations::default()));
        let mut probe_task = tokio::spawn(prober(reader.clone(), self.settings.clone(), obs.clone(), changed.clone(), shutdown.clone()));
        let mut reload = self.reload.take();
        let mut actor = self.actor();
        let mut leader_rx = self.leader.subscribe();
        let (done_tx, mut done_rx) = mpsc::unbounded_channel::<String>();
        let mut in_flight: HashMap<String, tokio::task::JoinHandle<()>> = HashMap::new();
        let mut announced = Announced::default();
        let mut alerted: HashSet<(String, String)> = HashSet::new();
        let mut term = CancellationToken::new();
        let mut gate: Option<GateCache> = None;
        let paused = self.watch_pause(changed.clone());
        let mut cooldowns: BTreeMap<Scope, Timestamp> = BTreeMap::new();
        let mut shorted: BTreeSet<Scope> = BTreeSet::new();
        let supported = self.supported();
        let last_report: Arc<Mutex<Option<HealthReport>>> = Arc::default();

        loop {
            let leader = self.leader.is_leader();
            self.metrics.leader.set(i64::from(leader));
            let snapshot = reader.state();
            let now = Timestamp::now();
            let renewals = leases.as_ref().map(renewals).unwrap_or_default();
            let (states, _) = self.evaluate(&snapshot, &obs, now, &renewals);
            cooldowns.retain(|_, until| *until > now);
            let is_paused = paused.load(Ordering::Relaxed);
            let probe = Input {
                nodes: &states,
                leader,
                paused: is_paused,
                gate: &RepairGate::Allowed,
                supported: &supported,
                policy: &self.settings.policy,
                cooldowns: &BTreeMap::new(),
                now,
            };
            self.track_storms(&planner::short_circuits(&probe), &mut shorted, &mut cooldowns, now);
            let mut p = planner::plan(&Input { cooldowns: &cooldowns, ..probe });
            let wants_new_step = p.nodes.iter().any(|n| matches!(n.decision, Decision::Repair { .. }));
            if wants_new_step {
                let fresh = gate.as_ref().is_some_and(|g| g.at.elapsed() < self.settings.monitor_interval);
                if !fresh {
                    let value = match self.provider.repair_allowed().await {
                        Ok(v) => v,
                        Err(e) => RepairGate::Denied(format!("cannot ask the cloud: {e}")),
                    };
                    gate = Some(GateCache { value, at: tokio::time::Instant::now() });
                }
                let g = gate.as_ref().map_or(RepairGate::Allowed, |g| g.value.clone());
                p = planner::plan(&Input {
                    nodes: &states,
                    leader,
                    paused: is_paused,
                    gate: &g,
                    supported: &supported,
                    policy: &self.settings.policy,
                    cooldowns: &cooldowns,
                    now,
                });
            }
            self.publish_metrics(&states, &p);
            // Notify-only findings are not the planner's: their instants wake the loop too.
            let alert_at = states.iter().flat_map(|s| &s.alerts).map(|f| f.actionable_at()).filter(|t| *t > now).min();
            let wake_at = match (p.wake_at, alert_at) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let wake = wake_at.map(|w| tokio::time::Instant::now() + Duration::try_from(w.duration_since(now)).unwrap_or(Duration::ZERO));
            if leader {
                self.act(&p, &states, &snapshot, &actor, &mut in_flight, &mut announced, &done_tx, &term, &obs);
                self.alert(&states, &snapshot, &actor, &mut alerted, now);
                if !self.settings.policy.dry_run {
                    self.report_health(&states, now, &last_report);
                }
            }

            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = changed.notified() => tokio::time::sleep(self.settings.debounce).await,
                _ = leader_rx.changed() => {
                    let leads = *leader_rx.borrow_and_update();
                    tracing::info!(leader = leads, identity = %self.settings.identity, "leadership changed");
                    if !leads {
                        term.cancel();
                        term = CancellationToken::new();
                        in_flight.clear();
                        announced = Announced::default();
                        alerted.clear();
                    }
                }
                Some(uid) = done_rx.recv() => { in_flight.remove(&uid); }
                _ = tick.tick(), if leases.is_some() => {}
                Some(new) = async { match reload.as_mut() { Some(r) => r.recv().await, None => std::future::pending().await } } => {
                    tracing::info!("configuration reloaded");
                    self.settings = new;
                    if leases.is_none() && self.settings.checks.need_leases() {
                        leases = Some(self.watch_leases());
                    }
                    probe_task.abort();
                    probe_task = tokio::spawn(prober(reader.clone(), self.settings.clone(), obs.clone(), changed.clone(), shutdown.clone()));
                    actor = self.actor();
                    // Check indices may have moved: forget what the old checks observed.
                    *obs.lock().unwrap_or_else(|p| p.into_inner()) = Observations::default();
                    announced.keys.clear();
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

    fn actor(&self) -> Arc<Actor> {
        Arc::new(Actor::new(
            self.client.clone(),
            self.provider.clone(),
            self.leader.clone(),
            self.metrics.clone(),
            self.settings.identity.clone(),
            self.settings.evidence.clone(),
            self.settings.drain.clone(),
            self.notifier.clone(),
            self.settings.policy.dry_run,
            self.settings.fencing.clone(),
        ))
    }

    /// The history entry of a failure a gate holds back, for the gates that leave the
    /// node to the healer (not `skip`, not an unreadable ledger, not dry-run: those
    /// write nothing to the node).
    fn held_detection(&self, state: &NodeState, d: &Decision, severity: Severity, why: String) -> Option<crate::ledger::HistoryEntry> {
        let Decision::Held { gate, .. } = d else { return None };
        // A repair under way (or failed) already answers the failure in the history.
        if matches!(state.ledger, crate::ledger::Ledger::Record(_)) {
            return None;
        }
        if self.settings.policy.dry_run || matches!(gate, Gate::Skip | Gate::Unreadable | Gate::RetryBudget | Gate::Leader) {
            return None;
        }
        let detected = state.findings.iter().map(|f| f.actionable_at()).min()?;
        let steps = match state.role {
            Role::Master => &self.settings.policy.master_steps,
            Role::Worker => &self.settings.policy.worker_steps,
        };
        Some(crate::ledger::HistoryEntry {
            action: steps.first().copied().unwrap_or(Action::Reboot),
            started: detected,
            ended: detected,
            succeeded: false,
            reason: why,
            severity: Some(severity),
            held: true,
        })
    }

    /// Notify-only checks: an Event and a notification once per node and check when
    /// the problem has lasted its unhealthy-duration; never a repair.
    fn alert(
        &self,
        states: &[NodeState],
        snapshot: &[Arc<Node>],
        actor: &Arc<Actor>,
        alerted: &mut HashSet<(String, String)>,
        now: Timestamp,
    ) {
        let mut current = HashSet::new();
        for (state, n) in states.iter().zip(snapshot) {
            for f in state.alerts.iter().filter(|f| f.actionable_at() <= now) {
                let key = (state.name.clone(), f.check.clone());
                current.insert(key.clone());
                if alerted.insert(key) {
                    let (sev, why) = notice::severity(state.role, &state.history, now, false);
                    self.metrics.detected(state.role.as_str(), sev.as_str());
                    tracing::warn!(node = %state.name, check = %f.check, reason = %f.reason, severity = %sev, "notify-only check failed");
                    let note = format!("{}: {} (notify-only check: no repair). Severity: {sev} ({why}).", f.check, f.reason);
                    actor.tell(
                        n,
                        Kind::Detected,
                        sev,
                        format!("alert/{}/{}/{}", state.name, f.check, f.since.as_second()),
                        format!("Node {}: {}: {}", state.name, f.check, f.reason),
                    );
                    let (actor, n) = (actor.clone(), n.clone());
                    tokio::spawn(async move { actor.event(&n, true, "NodeProblem", "Notify", note).await });
                }
            }
        }
        alerted.retain(|k| current.contains(k));
    }

    /// Remembers when short-circuits clear (for the storm cooldown) and says when they
    /// start and end.
    fn track_storms(
        &self,
        circuits: &[(Scope, String)],
        shorted: &mut BTreeSet<Scope>,
        cooldowns: &mut BTreeMap<Scope, Timestamp>,
        now: Timestamp,
    ) {
        let active: BTreeSet<Scope> = circuits.iter().map(|(s, _)| s.clone()).collect();
        for (scope, why) in circuits {
            if !shorted.contains(scope) {
                tracing::warn!(scope = %scope, why = %why, severity = "critical", "short-circuit: no new repairs");
                self.tell(
                    Kind::ShortCircuitOn,
                    Severity::Critical,
                    format!("short-circuit/{scope}"),
                    format!("Short-circuit ({scope}): no new repairs. {why}"),
                );
            }
        }
        for scope in shorted.difference(&active) {
            let until = planner::add(now, self.settings.policy.limits.storm_cooldown);
            tracing::info!(scope = %scope, until = %until, "short-circuit cleared; storm cooldown");
            self.tell(
                Kind::ShortCircuitOff,
                Severity::Critical,
                format!("short-circuit/{scope}"),
                format!("Short-circuit ({scope}) cleared; new repairs there after {until}"),
            );
            cooldowns.insert(scope.clone(), until);
        }
        self.metrics.short_circuits.set(active.len() as i64);
        *shorted = active;
    }

    /// Keeps a cache of the nodes' Leases for the Heartbeat check, reduced to what it reads.
    fn watch_leases(&self) -> Store<Lease> {
        let api: Api<Lease> = Api::namespaced(self.client.clone(), "kube-node-lease");
        let (reader, writer) = reflector::store();
        let stream = watcher(api, watcher::Config::default().any_semantic())
            .default_backoff()
            .modify(|l: &mut Lease| {
                l.metadata.managed_fields = None;
            })
            .reflect(writer)
            .touched_objects();
        tokio::spawn(async move {
            futures::pin_mut!(stream);
            while let Some(r) = stream.next().await {
                if let Err(e) = r {
                    tracing::debug!(error = %e, "watching node Leases");
                }
            }
        });
        reader
    }

    /// Follows the pause annotation on the healer's ConfigMap.
    fn watch_pause(&self, changed: Arc<Notify>) -> Arc<AtomicBool> {
        let paused = Arc::new(AtomicBool::new(false));
        let Some((ns, name)) = self.settings.pause_configmap.clone() else { return paused };
        let api: Api<k8s_openapi::api::core::v1::ConfigMap> = Api::namespaced(self.client.clone(), &ns);
        let flag = paused.clone();
        let metrics = self.metrics.clone();
        let leader = self.leader.clone();
        let notifier = self.notifier.clone();
        let dry_run = self.settings.policy.dry_run;
        tokio::spawn(async move {
            let cfg = watcher::Config::default().fields(&format!("metadata.name={name}"));
            let mut events = watcher(api, cfg).default_backoff().boxed();
            while let Some(ev) = events.next().await {
                let now = match ev {
                    Ok(watcher::Event::Apply(cm) | watcher::Event::InitApply(cm)) => cm
                        .metadata
                        .annotations
                        .as_ref()
                        .and_then(|a| a.get(PAUSED_ANNOTATION))
                        .is_some_and(|v| v.eq_ignore_ascii_case("true")),
                    Ok(watcher::Event::Delete(_)) => false,
                    Ok(_) => continue,
                    Err(e) => {
                        tracing::debug!(error = %e, "watching the healer's ConfigMap");
                        continue;
                    }
                };
                if flag.swap(now, Ordering::Relaxed) != now {
                    tracing::info!(paused = now, configmap = %format!("{ns}/{name}"), "repairs {}", if now { "paused" } else { "resumed" });
                    metrics.paused.set(i64::from(now));
                    if leader.is_leader() {
                        notifier.notify(Notification {
                            kind: if now { Kind::Paused } else { Kind::Resumed },
                            severity: Severity::Medium,
                            node: None,
                            role: None,
                            summary: format!("Repairs {} through ConfigMap {ns}/{name}", if now { "paused" } else { "resumed" }),
                            incident: format!("paused/{ns}/{name}"),
                            dry_run,
                            at: Timestamp::now(),
                        });
                    }
                    changed.notify_one();
                }
            }
        });
        paused
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

    fn evaluate(
        &self,
        snapshot: &[Arc<Node>],
        obs: &Mutex<Observations>,
        now: Timestamp,
        leases: &observe::LeaseRenewals,
    ) -> (Vec<NodeState>, Vec<Vec<CheckVerdict>>) {
        let mut obs = obs.lock().unwrap_or_else(|p| p.into_inner());
        let uids: HashSet<String> = snapshot.iter().filter_map(|n| n.metadata.uid.clone()).collect();
        obs.probes.retain(|(uid, _), _| uids.contains(uid));
        obs.first_seen.retain(|(uid, _), _| uids.contains(uid));
        obs.healthy_since.retain(|uid, _| uids.contains(uid));
        snapshot.iter().map(|n| observe::evaluate(n, &self.settings.checks, &mut obs, now, leases)).unzip()
    }

    /// One evaluation without acting: what `autohealer plan` prints.
    pub async fn plan_once(&self) -> anyhow::Result<(Vec<Row>, Plan)> {
        let nodes: Api<Node> = Api::all(self.client.clone());
        let list = nodes.list(&Default::default()).await.map_err(|e| anyhow::anyhow!("list nodes failed: {e}"))?;
        let snapshot: Vec<Arc<Node>> = list
            .items
            .into_iter()
            .map(|mut n| {
                node::trim(&mut n);
                Arc::new(n)
            })
            .collect();
        let obs = Mutex::new(Observations::default());
        probe_all(&snapshot, &self.settings, &obs).await;
        let now = Timestamp::now();
        let renewals = if self.settings.checks.need_leases() {
            let leases: Api<Lease> = Api::namespaced(self.client.clone(), "kube-node-lease");
            let list = leases.list(&Default::default()).await.map_err(|e| anyhow::anyhow!("list leases in kube-node-lease failed: {e}"))?;
            list.items.iter().filter_map(lease_renewal).collect()
        } else {
            Default::default()
        };
        let (states, verdicts) = self.evaluate(&snapshot, &obs, now, &renewals);
        let gate = self.provider.repair_allowed().await.unwrap_or_else(|e| RepairGate::Denied(format!("cannot ask the cloud: {e}")));
        let supported = self.supported();
        let p = planner::plan(&Input {
            nodes: &states,
            leader: true,
            paused: false,
            gate: &gate,
            supported: &supported,
            policy: &self.settings.policy,
            cooldowns: &BTreeMap::new(),
            now,
        });
        let rows = p
            .nodes
            .iter()
            .zip(verdicts)
            .zip(&states)
            .map(|((np, v), st)| Row {
                name: np.name.clone(),
                role: np.role,
                verdicts: v,
                decision: np.decision.clone(),
                severity: notice::of_decision(st, &np.decision, now),
            })
            .collect();
        Ok((rows, p))
    }

    fn publish_metrics(&self, states: &[NodeState], p: &Plan) {
        for role in [Role::Master, Role::Worker] {
            let count = states.iter().filter(|s| s.role == role).count();
            self.metrics.nodes.get_or_create(&RoleLabels { role: role.as_str().into() }).set(count as i64);
            for g in ALL_GATES {
                let held =
                    p.nodes.iter().filter(|n| n.role == role && matches!(&n.decision, Decision::Held { gate, .. } if gate == g)).count();
                self.metrics.held.get_or_create(&HeldLabels { role: role.as_str().into(), gate: g.as_str().into() }).set(held as i64);
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

    #[allow(clippy::too_many_arguments)]
    fn act(
        &self,
        p: &Plan,
        states: &[NodeState],
        snapshot: &[Arc<Node>],
        actor: &Arc<Actor>,
        in_flight: &mut HashMap<String, tokio::task::JoinHandle<()>>,
        announced: &mut Announced,
        done: &mpsc::UnboundedSender<String>,
        term: &CancellationToken,
        obs: &Mutex<Observations>,
    ) {
        let by_name: HashMap<&str, &Arc<Node>> = snapshot.iter().map(|n| (node::name(n), n)).collect();
        let now = Timestamp::now();
        for (np, state) in p.nodes.iter().zip(states) {
            let Some(n) = by_name.get(np.name.as_str()).map(|n| (*n).clone()) else {
                continue;
            };
            let uid = n.metadata.uid.clone().unwrap_or_default();
            if in_flight.contains_key(&uid) {
                continue;
            }
            if !matches!(np.decision, Decision::Held { .. } | Decision::Repair { .. }) {
                announced.keys.retain(|(u, _)| u != &uid);
            }
            if let Some((incident, sev)) = announced.open.get(&uid).cloned() {
                match &np.decision {
                    Decision::Healthy | Decision::NotMonitored => {
                        announced.open.remove(&uid);
                        actor.tell(&n, Kind::Recovered, sev, incident, format!("Node {} is healthy again", np.name));
                    }
                    // A repair under way closes the incident when it succeeds.
                    Decision::InProgress { .. } | Decision::Repair { .. } => {
                        announced.open.remove(&uid);
                    }
                    _ => {}
                }
            }
            // A node the provider cannot act on is never cordoned or recorded.
            let impossible = match &np.decision {
                Decision::Repair { action, .. } => {
                    self.provider.check_node(&node::info(&n)).err().map(|e| ("RepairImpossible", format!("Cannot {action} this node: {e}")))
                }
                _ => None,
            };
            // Events for states that hold, once per node and reason.
            let notice = impossible.or_else(|| match &np.decision {
                Decision::Held { gate, why, .. } => {
                    Some((if *gate == Gate::RetryBudget { "RetryBudgetExhausted" } else { "RepairHeld" }, why.clone()))
                }
                Decision::Repair { action, reason, .. } if self.settings.policy.dry_run => {
                    Some(("DryRun", format!("Would {action} node: {reason} (dry-run: nothing was changed)")))
                }
                _ => None,
            });
            if let Some((reason, note)) = notice {
                // Once per node and gate, not once per evaluation (counts in the text change).
                let key = match &np.decision {
                    Decision::Held { gate, .. } => gate.as_str().to_string(),
                    _ => note.clone(),
                };
                if announced.keys.insert((uid.clone(), key)) {
                    let actor = actor.clone();
                    let n = n.clone();
                    let (sev, why) = notice::of_decision(state, &np.decision, now).unwrap_or((Severity::Medium, String::new()));
                    tracing::info!(node = %np.name, reason, note = %note, severity = %sev, "decision");
                    let kind = match (reason, &np.decision) {
                        ("DryRun", _) => Kind::RepairStarted,
                        ("RetryBudgetExhausted", _) => Kind::RetryBudgetExhausted,
                        _ => Kind::Detected,
                    };
                    if let (true, Decision::Repair { action, .. }) = (reason == "DryRun", &np.decision) {
                        self.metrics.repair(np.role.as_str(), action.as_str(), "dry_run");
                    }
                    if kind != Kind::RetryBudgetExhausted {
                        self.metrics.detected(np.role.as_str(), sev.as_str());
                    }
                    let incident = notice::incident_of(state, now);
                    if kind != Kind::RepairStarted {
                        announced.open.insert(uid.clone(), (incident.clone(), sev));
                    }
                    actor.tell(&n, kind, sev, incident, format!("Node {}: {note}", np.name));
                    if let Some(entry) = self.held_detection(state, &np.decision, sev, note.clone()) {
                        let (actor, n) = (actor.clone(), n.clone());
                        tokio::spawn(async move {
                            if let Err(e) = actor.record_detection(&n, entry).await {
                                tracing::debug!(node = %n.name_any(), error = %e, "held detection not recorded; the next evaluation tries again");
                            }
                        });
                    }
                    let note = format!("{}. Severity: {sev} ({why}).", note.trim_end_matches('.'));
                    tokio::spawn(async move { actor.event(&n, reason != "DryRun", reason, "Decide", note).await });
                }
                continue;
            }
            if self.settings.policy.dry_run || !np.decision.acts() {
                continue;
            }
            let actor = actor.clone();
            let decision = np.decision.clone();
            let severity = notice::of_decision(state, &np.decision, now).unwrap_or((Severity::Medium, String::new()));
            let done = done.clone();
            let term = term.clone();
            let key = uid.clone();
            let task = tokio::spawn(async move {
                let work = async {
                    match &decision {
                        Decision::Repair { action, attempt, reason, actionable_since, cordon } => {
                            actor.start_step(&n, *action, *attempt, reason, *actionable_since, *cordon, severity).await
                        }
                        Decision::Recovered { record } => actor.recovered(&n, record).await,
                        Decision::Failed { record, why } => actor.failed(&n, record, why).await,
                        _ => Ok(()),
                    }
                };
                tokio::select! {
                    _ = term.cancelled() => tracing::warn!(node = %n.name_any(), "leadership lost; step abandoned before its next write"),
                    r = work => if let Err(e) = r { tracing::info!(node = %n.name_any(), error = %e, "step not carried out") },
                }
                let _ = done.send(key);
            });
            in_flight.insert(uid, task);
        }
        if !self.settings.policy.dry_run {
            self.persist_probe_times(snapshot, actor, in_flight, done, obs);
        }
    }

    /// Writes the first failure time of probing checks to their annotation (and
    /// clears it when they pass), so a new leader continues the count.
    fn persist_probe_times(
        &self,
        snapshot: &[Arc<Node>],
        actor: &Arc<Actor>,
        in_flight: &mut HashMap<String, tokio::task::JoinHandle<()>>,
        done: &mpsc::UnboundedSender<String>,
        obs: &Mutex<Observations>,
    ) {
        let obs = obs.lock().unwrap_or_else(|p| p.into_inner());
        for n in snapshot {
            let uid = n.metadata.uid.clone().unwrap_or_default();
            if in_flight.contains_key(&uid) {
                continue;
            }
            let role = node::role(n);
            for (i, check) in self.settings.checks.for_role(role).iter().enumerate() {
                let Some(annotation) = check.unhealthy_annotation() else {
                    continue;
                };
                let present = node::annotation(n, annotation).is_some();
                let want = match obs.probes.get(&(uid.clone(), i)) {
                    Some(Health::Unhealthy { .. }) if !present => Some(Some(observe::format_probe_time(
                        obs.first_seen.get(&(uid.clone(), i)).copied().unwrap_or_else(Timestamp::now),
                    ))),
                    Some(Health::Healthy) if present => Some(None),
                    _ => None,
                };
                if let Some(value) = want {
                    let actor = actor.clone();
                    let n = n.clone();
                    let annotation = annotation.to_string();
                    let done = done.clone();
                    let key = uid.clone();
                    in_flight.insert(
                        uid.clone(),
                        tokio::spawn(async move {
                            if let Err(e) = actor.mark_probe(&n, &annotation, value).await {
                                tracing::debug!(node = %n.name_any(), error = %e, "probe time not persisted");
                            }
                            let _ = done.send(key);
                        }),
                    );
                    break;
                }
            }
        }
    }
}

fn lease_renewal(l: &Lease) -> Option<(String, Timestamp)> {
    Some((l.metadata.name.clone()?, l.spec.as_ref()?.renew_time.as_ref()?.0))
}

fn renewals(store: &Store<Lease>) -> observe::LeaseRenewals {
    store.state().iter().filter_map(|l| lease_renewal(l)).collect()
}

async fn probe_all(snapshot: &[Arc<Node>], settings: &HealerSettings, obs: &Mutex<Observations>) -> bool {
    let limit = Arc::new(tokio::sync::Semaphore::new(settings.probe_concurrency.max(1)));
    let mut set = tokio::task::JoinSet::new();
    for n in snapshot {
        let checks = settings.checks.for_role(node::role(n));
        for (i, c) in checks.iter().enumerate().filter(|(_, c)| c.kind() == CheckKind::Probe) {
            let Ok(permit) = limit.clone().acquire_owned().await else {
                break;
            };
            let (n, c): (Arc<Node>, Arc<dyn HealthCheck>) = (n.clone(), c.clone());
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
        let prev = obs.probes.insert((uid, i), h.clone());
        changed |= prev.is_none_or(|p| p.is_healthy() != h.is_healthy());
    }
    changed
}

async fn prober(
    reader: Store<Node>,
    settings: HealerSettings,
    obs: Arc<Mutex<Observations>>,
    changed: Arc<Notify>,
    shutdown: CancellationToken,
) {
    let any_probe = [Role::Master, Role::Worker].iter().any(|r| settings.checks.for_role(*r).iter().any(|c| c.kind() == CheckKind::Probe));
    if !any_probe {
        return;
    }
    let mut tick = tokio::time::interval(settings.monitor_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        if probe_all(&reader.state(), &settings, &obs).await {
            changed.notify_one();
        }
    }
}
