//! Carrying out the work the pure layer decided ([`crate::effects::Work`]): one fenced
//! ledger write (a resourceVersion precondition), then one cloud call, as the pure
//! transitions of [`crate::step`] say; cordon and uncordon, drain, fencing, Events.
//! No decision is taken here that a unit test of the pure layer cannot reach.

use crate::drain::{DrainContext, DrainSettings};
use crate::effects::{Work, record_incident};
use crate::leader::LeaderElector;
use crate::ledger::{HISTORY_ANNOTATION, HistoryEntry, Ledger, REPAIR_ANNOTATION, RepairRecord, push_history};
use crate::metrics::{ActionLabels, Metrics};
use crate::node;
use crate::notice::{Kind, Notification, Notifier, Severity};
use crate::reason::Reason;
use crate::step::{self, After, Facts};
use autohealer_cloud::{Action, CloudProvider, Progress};
use autohealer_healthcheck::NodeView;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Resource, ResourceExt};
use serde_json::{Value, json};
use std::sync::Arc;

pub const FIELD_MANAGER: &str = "autohealer";

/// Where the evidence a provider hands back (console output before a destructive
/// step) is kept: ConfigMaps in `namespace`, the newest `keep` per node.
#[derive(Debug, Clone)]
pub struct EvidenceSettings {
    pub namespace: String,
    pub keep: usize,
}

/// The largest evidence kept, well under a ConfigMap's 1 MiB.
const EVIDENCE_MAX_BYTES: usize = 256 * 1024;

/// Tainting a node out-of-service once the cloud confirms it is down, so Kubernetes
/// force-deletes its pods and detaches their volumes instead of waiting for a kubelet
/// that will never answer.
#[derive(Debug, Clone)]
pub struct FencingSettings {
    pub enabled: bool,
    /// How long after a replace began the cloud is asked whether the machine is down.
    pub confirm_timeout: std::time::Duration,
    /// How often it is asked within that time.
    pub poll: std::time::Duration,
}

/// The taint Kubernetes' pod GC acts on (GA since 1.28).
pub const OUT_OF_SERVICE_TAINT: &str = "node.kubernetes.io/out-of-service";

/// Why a step was not carried out.
#[derive(Debug, thiserror::Error)]
pub enum ActError {
    #[error("leadership was lost before the write")]
    NotLeader,
    #[error("node {0} changed since it was read (409 Conflict on patch nodes/{0}); the next evaluation decides again")]
    Conflict(String),
    #[error("patch nodes/{node} failed: {source}")]
    Kube { node: String, source: kube::Error },
}

/// What every step needs, built once per process (one Event recorder) and shared.
pub struct Context {
    pub client: kube::Client,
    pub nodes: Api<NodeView>,
    pub recorder: Recorder,
    pub provider: Arc<dyn CloudProvider>,
    pub leader: Arc<dyn LeaderElector>,
    pub metrics: Arc<Metrics>,
    pub notifier: Arc<dyn Notifier>,
    pub identity: String,
    pub evidence: EvidenceSettings,
    pub drain: DrainSettings,
    pub fencing: FencingSettings,
    pub dry_run: bool,
    /// `Limits::max_stalls`, for the Event that says what comes next.
    pub max_stalls: u32,
    /// Told the uid of each node whose new repair's first write went through: the
    /// fleet state counts it for `repairs-per-hour`, even once the node is gone.
    pub started: Option<tokio::sync::mpsc::UnboundedSender<(String, String)>>,
    pub workloads: crate::planner::WorkloadCheck,
}

impl Context {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        client: kube::Client,
        provider: Arc<dyn CloudProvider>,
        leader: Arc<dyn LeaderElector>,
        metrics: Arc<Metrics>,
        notifier: Arc<dyn Notifier>,
        identity: String,
        recorder: Recorder,
    ) -> Self {
        Self {
            nodes: Api::all(client.clone()),
            client,
            recorder,
            provider,
            leader,
            metrics,
            notifier,
            identity,
            evidence: EvidenceSettings { namespace: "kube-system".into(), keep: 0 },
            drain: DrainSettings::default(),
            fencing: FencingSettings {
                enabled: false,
                confirm_timeout: std::time::Duration::ZERO,
                poll: std::time::Duration::from_secs(1),
            },
            dry_run: false,
            max_stalls: crate::planner::Limits::default().max_stalls,
            started: None,
            workloads: Default::default(),
        }
    }

    /// The one Event recorder of the process: Events of every replica are told apart by
    /// their reporting instance.
    pub fn recorder(client: &kube::Client, identity: &str) -> Recorder {
        Recorder::new(client.clone(), Reporter { controller: "autohealer".into(), instance: Some(reporting_instance(identity)) })
    }

    /// Hands a notification about node `n` to the notifier (which never waits).
    pub fn tell(&self, n: &NodeView, kind: Kind, severity: Severity, incident: String, summary: String) {
        self.notifier.notify(Notification {
            kind,
            severity,
            node: Some(n.name_any()),
            role: Some(node::role(n)),
            summary,
            incident,
            dry_run: self.dry_run,
            at: Timestamp::now(),
        });
    }

    pub async fn event(&self, n: &NodeView, reason: Reason, note: String) {
        self.event_as(n, reason, reason.warning(), note).await
    }

    pub async fn event_as(&self, n: &NodeView, reason: Reason, warning: bool, note: String) {
        self.publish(n, reason, action_of(reason), warning, note).await
    }

    /// An Event about a step: its action is the step's, so that the Events of a
    /// node's reboot and of its replace are told apart (the recorder folds Events of one
    /// object, reason and action into one series).
    pub async fn step_event(&self, n: &NodeView, reason: Reason, step: Action, warning: bool, note: String) {
        self.publish(n, reason, action_name(step), warning, note).await
    }

    /// An Event whose action says what it is about (a gate, for a held repair).
    pub async fn event_about(&self, n: &NodeView, reason: Reason, action: &str, note: String) {
        self.publish(n, reason, action, reason.warning(), note).await
    }

    async fn publish(&self, n: &NodeView, reason: Reason, action: &str, warning: bool, note: String) {
        let ev = Event {
            type_: if warning { EventType::Warning } else { EventType::Normal },
            reason: reason.as_str().into(),
            note: Some(truncate(note, 1000)),
            action: action.into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&ev, &n.object_ref(&())).await {
            tracing::warn!(node = %n.name_any(), %reason, error = %e, "cannot publish an Event");
        }
    }

    /// A merge patch of the node that only succeeds if the node is unchanged since
    /// `n` was read: the fence that makes a step start exactly once.
    pub async fn fenced_patch(&self, n: &NodeView, mut patch: Value) -> Result<NodeView, ActError> {
        if !self.leader.is_leader() {
            return Err(ActError::NotLeader);
        }
        let name = n.name_any();
        patch["metadata"]["resourceVersion"] = json!(n.resource_version());
        let pp = PatchParams { field_manager: Some(FIELD_MANAGER.into()), ..Default::default() };
        match self.nodes.patch(&name, &pp, &Patch::Merge(&patch)).await {
            Ok(n) => Ok(n),
            Err(kube::Error::Api(s)) if s.code == 409 => Err(ActError::Conflict(name)),
            Err(source) => Err(ActError::Kube { node: name, source }),
        }
    }

    /// Whether this step drains the node first (workers only, per the settings).
    pub fn drains(&self, n: &NodeView, action: Action) -> bool {
        node::role(n) == autohealer_cloud::Role::Worker
            && match action {
                Action::Reboot => self.drain.before_reboot,
                Action::Replace => self.drain.before_replace,
            }
    }
}

/// Why the node's workloads are not running again, if they are not: a pod on it whose
/// container is in `CrashLoopBackOff` while another pod of the same owner, on another
/// node, is not. A workload that crash-loops everywhere is the workload's fault, not the
/// node's; one with no pod elsewhere cannot be compared. Read with the pod access the
/// drain has: pods by `spec.nodeName`, then the owners' namespace.
async fn crash_looping(client: &kube::Client, node: &str) -> Option<String> {
    use k8s_openapi::api::core::v1::Pod;
    let looping = |p: &Pod| {
        p.status.as_ref().and_then(|s| s.container_statuses.as_ref()).is_some_and(|cs| {
            cs.iter()
                .any(|c| c.state.as_ref().and_then(|s| s.waiting.as_ref()).and_then(|w| w.reason.as_deref()) == Some("CrashLoopBackOff"))
        })
    };
    let owner =
        |p: &Pod| p.metadata.owner_references.as_ref().and_then(|o| o.iter().find(|r| r.controller == Some(true))).map(|r| r.uid.clone());
    let all: Api<Pod> = Api::all(client.clone());
    let here = all.list(&kube::api::ListParams::default().fields(&format!("spec.nodeName={node}"))).await.ok()?;
    for p in here.items.iter().filter(|p| looping(p)) {
        let (Some(uid), Some(ns)) = (owner(p), p.metadata.namespace.clone()) else { continue };
        let Ok(peers) = Api::<Pod>::namespaced(client.clone(), &ns).list(&Default::default()).await else { continue };
        let elsewhere: Vec<&Pod> = peers
            .items
            .iter()
            .filter(|q| owner(q).as_deref() == Some(uid.as_str()) && q.spec.as_ref().and_then(|s| s.node_name.as_deref()) != Some(node))
            .collect();
        if elsewhere.iter().any(|q| !looping(q)) {
            return Some(format!(
                "pod {ns}/{} crash-loops on it while {} of its owner's {} pods elsewhere run",
                p.name_any(),
                elsewhere.iter().filter(|q| !looping(q)).count(),
                elsewhere.len()
            ));
        }
    }
    None
}

/// The apiserver refuses an Event whose `reportingInstance` is over 128 bytes
/// (`pkg/apis/core/validation/events.go`): a longer identity (a long hostname) is cut.
fn reporting_instance(identity: &str) -> String {
    let mut end = identity.len().min(128);
    while !identity.is_char_boundary(end) {
        end -= 1;
    }
    identity[..end].to_string()
}

/// A node name as a label value: at most 63 characters, beginning and ending with an
/// alphanumeric, as the apiserver requires (a node name may be up to 253).
fn label_value(name: &str) -> String {
    let cut: String = name.chars().take(63).collect();
    cut.trim_end_matches(|c: char| !c.is_ascii_alphanumeric()).to_string()
}

fn action_name(a: Action) -> &'static str {
    match a {
        Action::Reboot => "Reboot",
        Action::Replace => "Replace",
    }
}

/// The action column of an Event: the phase of the lifecycle it belongs to.
fn action_of(reason: Reason) -> &'static str {
    match reason {
        Reason::RepairHeld | Reason::RetryBudgetExhausted | Reason::RepairImpossible | Reason::DryRun | Reason::RepairProposed => "Decide",
        Reason::RepairStarted | Reason::RepairResumed | Reason::RepairIssued | Reason::RepairStalled => "Repair",
        Reason::MachineRestored | Reason::RestoreFailed => "Restore",
        Reason::Drained => "Drain",
        Reason::Recovered | Reason::RepairFailed | Reason::RepairDelegated => "Verify",
        Reason::Fenced => "Fence",
        Reason::NodeProblem | Reason::CheckFailing => "Notify",
        Reason::ConfigRejected | Reason::ConfigReloaded => "Reload",
        Reason::PauseUnknown => "Pause",
    }
}

/// One node's work, carried out.
pub struct Actor {
    pub cx: Arc<Context>,
}

impl Actor {
    pub fn new(cx: Arc<Context>) -> Self {
        Self { cx }
    }

    pub async fn run(self: &Arc<Self>, n: &NodeView, work: Work) -> Result<(), ActError> {
        match work {
            Work::Start { action, attempt, reason, actionable_since, cordon, severity } => {
                self.start(n, action, attempt, &reason, actionable_since, cordon, severity).await
            }
            Work::Continue { record } => {
                let claimed = step::claim(&record, &self.cx.identity);
                let written = self.write(n, &claimed).await?;
                tracing::info!(node = %n.name_any(), action = %record.action, phase = ?record.phase.as_ref().map(|p| &p.name), "continuing a step begun earlier");
                let at = match (&record.phase, record.draining) {
                    (_, true) => "its drain".to_string(),
                    (Some(p), _) => format!("phase {}", p.name),
                    (None, _) => "its first call".to_string(),
                };
                let by = if record.by == self.cx.identity { String::new() } else { format!(", begun by {}", record.by) };
                let stalled = record.stalled.as_ref().map(|s| format!(" Last try: {s}.")).unwrap_or_default();
                self.cx
                    .step_event(
                        &written,
                        Reason::RepairResumed,
                        record.action,
                        false,
                        format!("Continuing {} (attempt {}) from {at}{by}.{stalled}", record.action, record.attempt),
                    )
                    .await;
                // Its call may have gone out, unless the last try was refused for sure.
                let resumed = !claimed.unsent;
                self.carry_on(written, claimed, resumed).await
            }
            Work::Restore { record } => {
                let record = step::claim(&record, &self.cx.identity);
                let written = self.write(n, &record).await?;
                self.restore(&written, record).await
            }
            Work::Recovered { record } => self.recovered(n, &record).await,
            Work::Failed { record, why } => self.failed(n, &record, &why).await,
            Work::Delegate { record, action, to } => self.delegate(n, &record, action, &to).await,
        }
    }

    /// Starts a repair step: ledger (and cordon) first, then the cloud calls.
    #[allow(clippy::too_many_arguments)]
    async fn start(
        self: &Arc<Self>,
        n: &NodeView,
        action: Action,
        attempt: u32,
        reason: &str,
        actionable_since: Timestamp,
        cordon: bool,
        severity: (Severity, String),
    ) -> Result<(), ActError> {
        let cx = &self.cx;
        let now = Timestamp::now();
        let facts =
            Facts { boot_id: node::boot_id(n).map(String::from), unschedulable: node::unschedulable(n), drains: cx.drains(n, action) };
        let previous = Ledger::parse(node::annotation(n, REPAIR_ANNOTATION));
        let (record, cordon_now) =
            step::begin(&previous, action, attempt, reason, actionable_since, cordon, severity.0, &facts, &cx.identity, now);
        let mut patch = json!({"metadata": {"annotations": {REPAIR_ANNOTATION: record.to_json(), node::REMEDIATE_ANNOTATION: null}}});
        if cordon_now {
            patch["spec"] = json!({"unschedulable": true});
        }
        let written = cx.fenced_patch(n, patch).await?;
        if attempt == 1
            && let Some(tx) = &cx.started
        {
            let _ = tx.send((n.metadata.uid.clone().unwrap_or_default(), written.resource_version().unwrap_or_default()));
        }
        let role = node::role(n);
        let lag = now.duration_since(actionable_since).as_secs_f64().max(0.0);
        if attempt == 1 {
            cx.metrics.detection_lag.observe(lag);
            cx.metrics.detected(role.as_str(), severity.0.as_str());
        }
        cx.metrics.repair(role.as_str(), action.as_str(), "started");
        let (sev, why) = &severity;
        tracing::info!(node = %n.name_any(), %role, %action, attempt, reason, severity = %sev, cordoned = cordon_now, "repair step started");
        let verb = if action == Action::Reboot { "Rebooting" } else { "Replacing" };
        let cordoned = if cordon_now { " Cordoned." } else { "" };
        let draining = if facts.drains { " Draining first." } else { "" };
        cx.step_event(
            n,
            Reason::RepairStarted,
            action,
            false,
            format!("{verb} node (attempt {attempt}): {reason}.{cordoned}{draining} Severity: {sev} ({why})."),
        )
        .await;
        cx.tell(
            n,
            Kind::RepairStarted,
            *sev,
            record_incident(&n.name_any(), &record),
            format!("{verb} node {} (attempt {attempt}): {reason}", n.name_any()),
        );
        self.carry_on(written, record, false).await
    }

    /// Drains if the record says so, then makes the step's calls, writing the record
    /// before each one as [`step::after_call`] says.
    async fn carry_on(self: &Arc<Self>, mut written: NodeView, mut record: RepairRecord, mut resumed: bool) -> Result<(), ActError> {
        let cx = &self.cx;
        if record.draining {
            let name = written.name_any();
            let machine_down = match cx.provider.machine_down(&node::info(&written)).await {
                Ok(down) => down.is_some(),
                Err(_) => false,
            };
            let dc = DrainContext { unreachable: node_unreachable(&written), machine_down };
            let report = crate::drain::drain(&cx.client, &name, dc, &cx.drain, &tokio_util::sync::CancellationToken::new())
                .await
                .map_err(|source| ActError::Kube { node: name.clone(), source })?;
            tracing::info!(node = %name, summary = %report.summary(), "drain finished");
            cx.step_event(&written, Reason::Drained, record.action, !report.left.is_empty(), report.summary()).await;
            if report.blocked {
                let why = format!("{} not started: the drain is blocked ({})", record.action, report.summary());
                return self.fail_over(&written, &record, &record, &why).await;
            }
            let r = step::drained(&record);
            written = self.write_over(&written, &record, &r).await?;
            record = r;
            // The drain ended right before the first call: it has not been made.
            resumed = false;
        }
        let info = node::info(&written);
        let mut uncertain = 0;
        loop {
            if !cx.leader.is_leader() {
                return Err(ActError::NotLeader);
            }
            let result = match record.action {
                Action::Reboot => cx.provider.reboot(&info).await.map(Progress::Done),
                Action::Replace => cx.provider.replace(&info, record.phase.as_ref(), resumed).await,
            };
            match step::after_call(&record, result, uncertain, Timestamp::now()) {
                After::Call { record: next, resumed: r } => {
                    tracing::debug!(node = %written.name_any(), phase = ?next.phase.as_ref().map(|p| &p.name), "next call of the step");
                    written = self.write_over(&written, &record, &next).await?;
                    record = next;
                    resumed = r;
                    uncertain = 0;
                }
                After::Verify => {
                    tracing::warn!(node = %written.name_any(), "no answer from the cloud: asking again, verifying first");
                    resumed = true;
                    uncertain += 1;
                }
                After::Issued { record: done, outcome, uncertain } => {
                    let note = match &uncertain {
                        Some(e) => format!("{e}. The step is treated as issued and verified like one; it is not sent again."),
                        None => {
                            let kept = match &outcome.evidence {
                                Some(text) => self.keep_evidence(&written, done.action, outcome.server_id.as_deref(), text).await,
                                None => None,
                            };
                            match kept {
                                Some(at) => format!("{} Console output before the step kept in ConfigMap {at}.", outcome.detail),
                                None => outcome.detail.clone(),
                            }
                        }
                    };
                    tracing::info!(node = %written.name_any(), action = %done.action, detail = %note, "cloud accepted the step");
                    // Said even if the record cannot be written: the cloud has the step.
                    cx.step_event(&written, Reason::RepairIssued, done.action, uncertain.is_some(), note).await;
                    written = self.write_over(&written, &record, &done).await?;
                    // On its own: waiting for the cloud to confirm must not hold the node's
                    // next step (a fence that comes late loses its write to the newer node).
                    if done.action == Action::Replace && cx.fencing.enabled && !done.fenced {
                        let me = self.clone();
                        let (sev, incident) = (done.severity.unwrap_or(Severity::Medium), record_incident(&written.name_any(), &done));
                        tokio::spawn(async move { me.fence(written, done, sev, incident).await });
                    }
                    return Ok(());
                }
                After::Stalled { record: stalled, why } => {
                    written = self.write_over(&written, &record, &stalled).await?;
                    let at = stalled.retry_at.map(|t| t.to_string()).unwrap_or_default();
                    tracing::warn!(node = %written.name_any(), why, stalls = stalled.stalls, "step stalled with the machine out of service");
                    let then = if stalled.stalls >= cx.max_stalls {
                        "the machine is restored next".to_string()
                    } else {
                        format!("tried again at {at}")
                    };
                    cx.step_event(
                        &written,
                        Reason::RepairStalled,
                        stalled.action,
                        true,
                        format!("{why}. The machine may be out of service: the step is not dropped; {then} (stall {}).", stalled.stalls),
                    )
                    .await;
                    return Ok(());
                }
                After::Failed { why } => {
                    tracing::warn!(node = %written.name_any(), why, "repair step failed");
                    return self.fail_over(&written, &record, &record, &why).await;
                }
            }
        }
    }

    /// Writes the record (the phase about to be called) with the fence.
    async fn write(&self, n: &NodeView, r: &RepairRecord) -> Result<NodeView, ActError> {
        self.cx.fenced_patch(n, json!({"metadata": {"annotations": {REPAIR_ANNOTATION: r.to_json()}}})).await
    }

    /// Writes `next` over `mine`, the record this task last wrote. The node changes on
    /// its own meanwhile (its kubelet reports status): on a conflict it is read again,
    /// and the write goes on only while the ledger still holds `mine` — the fence is
    /// the ledger, not the rest of the node. Right before the first cloud call (the end
    /// of a drain) this is what keeps a new leader from draining again or making a call
    /// twice.
    async fn write_over(&self, last: &NodeView, mine: &RepairRecord, next: &RepairRecord) -> Result<NodeView, ActError> {
        let mut current = last.clone();
        for _ in 0..5 {
            match self.write(&current, next).await {
                Err(ActError::Conflict(name)) => current = self.still_mine(&name, mine).await?,
                other => return other,
            }
        }
        Err(ActError::Conflict(last.name_any()))
    }

    /// After a conflict: the node read again, if its ledger still holds `mine` (then
    /// the write is this task's to make again); a conflict if anything else wrote it.
    async fn still_mine(&self, name: &str, mine: &RepairRecord) -> Result<NodeView, ActError> {
        let fresh = self.cx.nodes.get(name).await.map_err(|source| ActError::Kube { node: name.to_string(), source })?;
        match Ledger::parse(node::annotation(&fresh, REPAIR_ANNOTATION)) {
            Ledger::Record(x) if *x == *mine => Ok(fresh),
            _ => Err(ActError::Conflict(name.to_string())),
        }
    }

    /// Brings back the machine of a step that kept stalling with it out of service.
    async fn restore(&self, n: &NodeView, record: RepairRecord) -> Result<(), ActError> {
        let cx = &self.cx;
        // A replace issued (or thought issued) that did not bring the node back: its
        // machine may still be the stopped one.
        let phase = record.phase.clone().unwrap_or_else(|| autohealer_cloud::Phase::new("issued").out_of_service());
        let result = cx.provider.restore(&node::info(n), &phase).await;
        match step::after_restore(&record, &result, Timestamp::now()) {
            step::Restored::Back { record: restored, why } => {
                cx.step_event(
                    n,
                    Reason::MachineRestored,
                    record.action,
                    false,
                    format!("{why}. The repair ends as failed and is retried within the node's retry budget."),
                )
                .await;
                self.fail_over(n, &record, &restored, &why).await
            }
            step::Restored::Again { record: again } => {
                let written = self.write(n, &again).await?;
                let why = again.stalled.clone().unwrap_or_default();
                tracing::error!(node = %n.name_any(), why, "the machine stays out of service");
                cx.step_event(
                    &written,
                    Reason::RestoreFailed,
                    again.action,
                    true,
                    format!(
                        "{why}. The machine stays out of service; restoring is tried again at {}.",
                        again.retry_at.map(|t| t.to_string()).unwrap_or_default()
                    ),
                )
                .await;
                Ok(())
            }
        }
    }

    /// Keeps `text` in a ConfigMap named after the node and the time, and prunes the
    /// node's older ones beyond `keep`. Returns where it is, for the Event.
    async fn keep_evidence(&self, n: &NodeView, action: Action, server: Option<&str>, text: &str) -> Option<String> {
        use k8s_openapi::api::core::v1::ConfigMap;
        let cx = &self.cx;
        if cx.evidence.keep == 0 {
            return None;
        }
        let api: Api<ConfigMap> = Api::namespaced(cx.client.clone(), &cx.evidence.namespace);
        let node = n.name_any();
        let stamp = Timestamp::now().strftime("%Y%m%d-%H%M%S").to_string();
        let base: String = node.chars().take(200).collect();
        let name = format!("autohealer-evidence-{base}-{stamp}");
        let mut body = text.to_string();
        if body.len() > EVIDENCE_MAX_BYTES {
            let mut cut = body.len() - EVIDENCE_MAX_BYTES;
            while !body.is_char_boundary(cut) {
                cut += 1;
            }
            body = body.split_off(cut);
        }
        let label = label_value(&node);
        let cm: ConfigMap = match serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {"app.kubernetes.io/managed-by": "autohealer", "autohealer.dev/evidence-for": label}},
            "data": {"node": node, "action": action.as_str(), "server": server.unwrap_or_default(), "console.log": body},
        })) {
            Ok(cm) => cm,
            Err(e) => {
                tracing::warn!(error = %e, "cannot build the evidence ConfigMap");
                return None;
            }
        };
        if let Err(e) = api.create(&Default::default(), &cm).await {
            tracing::warn!(node = %node, error = %e, "cannot keep the console output (create configmaps {}/{name})", cx.evidence.namespace);
            return None;
        }
        if let Ok(list) = api.list(&kube::api::ListParams::default().labels(&format!("autohealer.dev/evidence-for={label}"))).await {
            let mut names: Vec<String> = list.items.iter().map(|c| c.name_any()).collect();
            names.sort();
            let excess = names.len().saturating_sub(cx.evidence.keep);
            for old in names.into_iter().take(excess) {
                let _ = api.delete(&old, &Default::default()).await;
            }
        }
        Some(format!("{}/{name}", cx.evidence.namespace))
    }

    /// Taints the node out-of-service once the cloud confirms its machine is down, so
    /// Kubernetes deletes its pods and detaches their volumes. Asks until
    /// `fencing.confirm-timeout`; a machine never confirmed down is never tainted.
    async fn fence(&self, mut last: NodeView, record: RepairRecord, severity: Severity, incident: String) {
        let info = node::info(&last);
        let cx = &self.cx;
        let deadline = tokio::time::Instant::now() + cx.fencing.confirm_timeout;
        let evidence = loop {
            match cx.provider.machine_down(&info).await {
                Ok(Some(why)) => break why,
                Ok(None) => {}
                Err(e) => tracing::debug!(node = %last.name_any(), error = %e, "cannot tell whether the machine is down"),
            }
            if tokio::time::Instant::now() + cx.fencing.poll > deadline {
                tracing::info!(node = %last.name_any(), "machine not confirmed down in time: not fenced");
                return;
            }
            tokio::time::sleep(cx.fencing.poll).await;
        };
        let mut r = record.clone();
        r.fenced = true;
        let mut tainted = false;
        for _ in 0..5 {
            let mut taints = taints_without_fence(&last);
            taints.push(json!({"key": OUT_OF_SERVICE_TAINT, "value": "nodeshutdown", "effect": "NoExecute"}));
            let patch = json!({"metadata": {"annotations": {REPAIR_ANNOTATION: r.to_json()}}, "spec": {"taints": taints}});
            match cx.fenced_patch(&last, patch).await {
                Ok(_) => {
                    tainted = true;
                    break;
                }
                Err(ActError::Conflict(name)) => {
                    let Ok(fresh) = cx.nodes.get(&name).await else { return };
                    // Fence only while the ledger still holds this repair.
                    match Ledger::parse(node::annotation(&fresh, REPAIR_ANNOTATION)) {
                        Ledger::Record(x) if x.started == record.started && x.action == record.action && x.failed.is_none() => last = fresh,
                        _ => return,
                    }
                }
                Err(ActError::Kube { source: kube::Error::Api(s), .. }) if s.code == 404 => {
                    tracing::debug!(node = %last.name_any(), "node deleted before it was fenced: nothing to fence");
                    return;
                }
                Err(e) => {
                    tracing::warn!(node = %last.name_any(), error = %e, "cannot taint the node out-of-service");
                    return;
                }
            }
        }
        if !tainted {
            tracing::warn!(node = %last.name_any(), "the node kept changing: not fenced");
            return;
        }
        let pods = crate::drain::pods_on(&cx.client, &last.name_any()).await.unwrap_or_default();
        let listed = if pods.is_empty() {
            "no pods were on it".to_string()
        } else {
            let shown: Vec<&str> = pods.iter().take(20).map(String::as_str).collect();
            let more = pods.len().saturating_sub(shown.len());
            format!("pods on it: {}{}", shown.join(", "), if more > 0 { format!(" and {more} more") } else { String::new() })
        };
        tracing::info!(node = %last.name_any(), evidence, pods = pods.len(), "node fenced");
        cx.event(
            &last,
            Reason::Fenced,
            format!(
                "Machine confirmed down ({evidence}): tainted {OUT_OF_SERVICE_TAINT}=nodeshutdown:NoExecute so Kubernetes deletes its pods and detaches their volumes; {listed}."
            ),
        )
        .await;
        cx.tell(&last, Kind::Fenced, severity, incident, format!("Node {} fenced ({evidence}); {listed}", last.name_any()));
    }

    /// Records the failure of `failing` over `mine`, the record this task last wrote:
    /// the node changes on its own meanwhile, and a failure lost to a conflict would
    /// leave a step that never happened looking issued (a refused reboot "verified" for
    /// `rebuild-delay-after-reboot`, then escalated). Re-read and written again while the
    /// ledger still holds `mine`.
    async fn fail_over(&self, last: &NodeView, mine: &RepairRecord, failing: &RepairRecord, why: &str) -> Result<(), ActError> {
        let mut current = last.clone();
        for _ in 0..5 {
            match self.failed(&current, failing, why).await {
                Err(ActError::Conflict(name)) => current = self.still_mine(&name, mine).await?,
                other => return other,
            }
        }
        Err(ActError::Conflict(last.name_any()))
    }

    /// The node is healthy again: clear the ledger, uncordon what the healer cordoned
    /// and lift the out-of-service taint it set.
    pub async fn recovered(&self, n: &NodeView, record: &RepairRecord) -> Result<(), ActError> {
        let cx = &self.cx;
        if record.failed.is_none()
            && cx.workloads.applies(node::role(n))
            && let Some(why) = crash_looping(&cx.client, &n.name_any()).await
        {
            let r = step::workloads_failed(record, &why);
            cx.fenced_patch(n, json!({"metadata": {"annotations": {REPAIR_ANNOTATION: r.to_json()}}})).await?;
            tracing::warn!(node = %n.name_any(), why, "the node is back, its workloads are not");
            cx.step_event(
                n,
                Reason::RepairFailed,
                record.action,
                true,
                format!("{} brought the node back, but {why}: the step did not repair it, the next one follows", record.action),
            )
            .await;
            return Ok(());
        }
        let now = Timestamp::now();
        let mut patch = json!({"metadata": {"annotations": {REPAIR_ANNOTATION: null}}});
        if let Some(entry) = step::recovered(record, now) {
            patch["metadata"]["annotations"][HISTORY_ANNOTATION] =
                json!(push_history(node::annotation(n, HISTORY_ANNOTATION), entry, record.detected));
        }
        if record.cordoned {
            patch["spec"]["unschedulable"] = Value::Null;
        }
        let tainted = n.taints.iter().any(|t| t.key == OUT_OF_SERVICE_TAINT);
        if record.fenced && tainted {
            patch["spec"]["taints"] = json!(taints_without_fence(n));
        }
        cx.fenced_patch(n, patch).await?;
        let role = node::role(n);
        let took = now.duration_since(record.first_started).as_secs_f64().max(0.0);
        cx.metrics.repair(role.as_str(), record.action.as_str(), "succeeded");
        cx.metrics
            .repair_duration
            .get_or_create(&ActionLabels { role: role.as_str().into(), action: record.action.as_str().into() })
            .observe(took);
        let how = match (&record.boot_id, node::boot_id(n)) {
            (Some(a), Some(b)) if a != b => " (boot ID changed)",
            _ => "",
        };
        let uncordon = if record.cordoned { " Uncordoned." } else { "" };
        let unfence = if record.fenced && tainted { " Out-of-service taint removed." } else { "" };
        tracing::info!(node = %n.name_any(), action = %record.action, seconds = took, "node recovered");
        cx.step_event(
            n,
            Reason::Recovered,
            record.action,
            false,
            format!("Node is healthy again after {}{how}, {:.0}s after the repair began.{uncordon}{unfence}", record.action, took),
        )
        .await;
        if record.failed.is_none() {
            cx.tell(
                n,
                Kind::RepairSucceeded,
                record.severity.unwrap_or(Severity::Medium),
                record_incident(&n.name_any(), record),
                format!("Node {} is healthy again after {} ({took:.0}s)", n.name_any(), record.action),
            );
        }
        Ok(())
    }

    /// The step failed or did not bring the node back in time: record the failure in
    /// the ledger (the node stays cordoned) and in the history the retry budget counts.
    pub async fn failed(&self, n: &NodeView, record: &RepairRecord, why: &str) -> Result<(), ActError> {
        let cx = &self.cx;
        let (r, entry) = step::failed(record, why, Timestamp::now());
        let history = push_history(node::annotation(n, HISTORY_ANNOTATION), entry, record.detected);
        cx.fenced_patch(n, json!({"metadata": {"annotations": {REPAIR_ANNOTATION: r.to_json(), HISTORY_ANNOTATION: history}}})).await?;
        cx.metrics.repair(node::role(n).as_str(), record.action.as_str(), "failed");
        tracing::warn!(node = %n.name_any(), why, "repair failed");
        cx.step_event(
            n,
            Reason::RepairFailed,
            record.action,
            true,
            format!("{why}. It is retried after repair-retry-delay, within the node's retry budget."),
        )
        .await;
        cx.tell(
            n,
            Kind::RepairFailed,
            record.severity.unwrap_or(Severity::Medium),
            record_incident(&n.name_any(), record),
            format!("Repair of node {} failed: {why}", n.name_any()),
        );
        Ok(())
    }

    /// The step did not bring the node back and the next is the cloud's own: recorded,
    /// so the healer waits for it instead of failing the repair, and said once.
    pub async fn delegate(&self, n: &NodeView, record: &RepairRecord, action: Action, to: &str) -> Result<(), ActError> {
        let cx = &self.cx;
        let r = step::delegated(record, action, to, Timestamp::now());
        cx.fenced_patch(n, json!({"metadata": {"annotations": {REPAIR_ANNOTATION: r.to_json()}}})).await?;
        cx.metrics.repair(node::role(n).as_str(), action.as_str(), "delegated");
        tracing::info!(node = %n.name_any(), %action, to, "next step delegated");
        cx.step_event(
            n,
            Reason::RepairDelegated,
            action,
            false,
            format!(
                "{} did not recover the node; the {action} is left to {to}. The healer takes no further step until replace-timeout has passed.",
                record.action
            ),
        )
        .await;
        Ok(())
    }

    /// Keeps a detection that a gate holds back in the node's history, once per failure,
    /// so that the next failure's severity counts it, after a failover too. Replaced by
    /// the repair's own entry if the failure is repaired later.
    pub async fn record_detection(&self, n: &NodeView, entry: HistoryEntry) -> Result<(), ActError> {
        let mut current = n.clone();
        for _ in 0..3 {
            let before = node::annotation(&current, HISTORY_ANNOTATION);
            if crate::ledger::parse_history(before).iter().any(|h| h.started == entry.started) {
                return Ok(());
            }
            let history = push_history(before, entry.clone(), None);
            match self.cx.fenced_patch(&current, json!({"metadata": {"annotations": {HISTORY_ANNOTATION: history}}})).await {
                Err(ActError::Conflict(name)) => {
                    current = self.cx.nodes.get(&name).await.map_err(|source| ActError::Kube { node: name.clone(), source })?;
                }
                other => return other.map(|_| ()),
            }
        }
        Err(ActError::Conflict(n.name_any()))
    }

    /// Persists (or clears) a probing check's first-failure time, as upstream does.
    pub async fn mark_probe(&self, n: &NodeView, annotation: &str, value: Option<String>) -> Result<(), ActError> {
        self.cx.fenced_patch(n, json!({"metadata": {"annotations": {annotation: value}}})).await.map(|_| ())
    }
}

/// The node's taints but the out-of-service one: a taint list is replaced whole by a
/// merge patch, behind the resourceVersion precondition.
fn taints_without_fence(n: &NodeView) -> Vec<Value> {
    n.taints.iter().filter(|t| t.key != OUT_OF_SERVICE_TAINT).filter_map(|t| serde_json::to_value(t).ok()).collect()
}

fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}

/// A node whose kubelet stopped reporting: its pods cannot terminate, so a drain does
/// not wait for them.
fn node_unreachable(n: &NodeView) -> bool {
    n.condition("Ready").is_some_and(|c| c.status == "Unknown")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_and_reporting_instances_are_what_the_apiserver_takes() {
        let long = format!("{}-.{}", "a".repeat(62), "b".repeat(100));
        let v = label_value(&long);
        assert!(v.len() <= 63 && v.ends_with('a'), "{v}");
        assert_eq!(label_value("worker-1"), "worker-1");
        assert_eq!(reporting_instance(&"é".repeat(100)).len(), 128);
        assert_eq!(reporting_instance("replica-a"), "replica-a");
    }
}
