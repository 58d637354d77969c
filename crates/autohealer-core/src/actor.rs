//! Carrying out the planner's decisions: ledger writes with a resourceVersion
//! precondition before every cloud call, cordon and uncordon, cloud calls, Events.

use crate::drain::DrainSettings;
use crate::leader::LeaderElector;
use crate::ledger::{HISTORY_ANNOTATION, HistoryEntry, Ledger, REPAIR_ANNOTATION, RepairRecord, push_history};
use crate::metrics::{ActionLabels, Metrics};
use crate::node;
use crate::notice::{Kind, Notification, Notifier, Severity, node_incident};
use autohealer_cloud::{Action, CloudProvider};
use k8s_openapi::api::core::v1::Node;
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

pub struct Actor {
    pub nodes: Api<Node>,
    pub client: kube::Client,
    pub evidence: EvidenceSettings,
    pub drain: DrainSettings,
    pub recorder: Recorder,
    pub provider: Arc<dyn CloudProvider>,
    pub leader: Arc<dyn LeaderElector>,
    pub metrics: Arc<Metrics>,
    pub identity: String,
    pub notifier: Arc<dyn Notifier>,
    pub dry_run: bool,
    pub fencing: FencingSettings,
}

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

impl Actor {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        client: kube::Client,
        provider: Arc<dyn CloudProvider>,
        leader: Arc<dyn LeaderElector>,
        metrics: Arc<Metrics>,
        identity: String,
        evidence: EvidenceSettings,
        drain: DrainSettings,
        notifier: Arc<dyn Notifier>,
        dry_run: bool,
        fencing: FencingSettings,
    ) -> Self {
        let reporter = Reporter { controller: "autohealer".into(), instance: Some(identity.clone()) };
        Self {
            nodes: Api::all(client.clone()),
            recorder: Recorder::new(client.clone(), reporter),
            client,
            evidence,
            drain,
            provider,
            leader,
            metrics,
            identity,
            notifier,
            dry_run,
            fencing,
        }
    }

    /// Hands a notification about node `n` to the notifier (which never waits).
    pub fn tell(&self, n: &Node, kind: Kind, severity: Severity, incident: String, summary: String) {
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

    /// Whether this step drains the node first (workers only, per the settings).
    pub fn drains(&self, n: &Node, action: Action) -> bool {
        node::role(n) == autohealer_cloud::Role::Worker
            && match action {
                Action::Reboot => self.drain.before_reboot,
                Action::Replace => self.drain.before_replace,
            }
    }

    /// Ends the drain phase in the ledger, right before the cloud call, so that a new
    /// leader never makes the call a second time. The node may have changed during the
    /// drain: re-read it, and go on only while the record is still this drain.
    async fn end_drain(&self, last: &Node, record: &RepairRecord) -> Result<Node, ActError> {
        let mut r = record.clone();
        r.draining = false;
        let mut current = last.clone();
        for _ in 0..5 {
            match self.fenced_patch(&current, json!({"metadata": {"annotations": {REPAIR_ANNOTATION: r.to_json()}}})).await {
                Err(ActError::Conflict(name)) => {
                    let fresh = self.nodes.get(&name).await.map_err(|source| ActError::Kube { node: name.clone(), source })?;
                    match Ledger::parse(node::annotation(&fresh, REPAIR_ANNOTATION)) {
                        Ledger::Record(x) if x.draining && x.by == self.identity && x.started == record.started => current = fresh,
                        _ => return Err(ActError::Conflict(name)),
                    }
                }
                other => return other,
            }
        }
        Err(ActError::Conflict(last.name_any()))
    }

    /// Keeps `text` in a ConfigMap named after the node and the time, and prunes the
    /// node's older ones beyond `keep`. Returns where it is, for the Event.
    async fn keep_evidence(&self, n: &Node, action: Action, server: Option<&str>, text: &str) -> Option<String> {
        use k8s_openapi::api::core::v1::ConfigMap;
        if self.evidence.keep == 0 {
            return None;
        }
        let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), &self.evidence.namespace);
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
        let label: String = node.chars().take(63).collect();
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
            tracing::warn!(node = %node, error = %e, "cannot keep the console output (create configmaps {}/{name})", self.evidence.namespace);
            return None;
        }
        if let Ok(list) = api.list(&kube::api::ListParams::default().labels(&format!("autohealer.dev/evidence-for={label}"))).await {
            let mut names: Vec<String> = list.items.iter().map(|c| c.name_any()).collect();
            names.sort();
            let excess = names.len().saturating_sub(self.evidence.keep);
            for old in names.into_iter().take(excess) {
                let _ = api.delete(&old, &Default::default()).await;
            }
        }
        Some(format!("{}/{name}", self.evidence.namespace))
    }

    pub async fn event(&self, n: &Node, warning: bool, reason: &str, action: &str, note: String) {
        let ev = Event {
            type_: if warning { EventType::Warning } else { EventType::Normal },
            reason: reason.into(),
            note: Some(truncate(note, 1000)),
            action: action.into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&ev, &n.object_ref(&())).await {
            tracing::warn!(node = %n.name_any(), reason, error = %e, "cannot publish an Event");
        }
    }

    /// A merge patch of the node that only succeeds if the node is unchanged since
    /// `n` was read: the fence that makes a step start exactly once.
    async fn fenced_patch(&self, n: &Node, mut patch: Value) -> Result<Node, ActError> {
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

    /// Starts a repair step: ledger (and cordon) first, then the cloud call.
    #[allow(clippy::too_many_arguments)]
    pub async fn start_step(
        self: &Arc<Self>,
        n: &Node,
        action: Action,
        attempt: u32,
        reason: &str,
        actionable_since: Timestamp,
        cordon: bool,
        severity: (Severity, String),
    ) -> Result<(), ActError> {
        let now = Timestamp::now();
        let previous = match Ledger::parse(node::annotation(n, REPAIR_ANNOTATION)) {
            Ledger::Record(r) => Some(r),
            _ => None,
        };
        // After a failed repair, a retry is a new repair that keeps only the cordon.
        let continuing = previous.as_ref().filter(|p| p.failed.is_none());
        // A drain that a previous leader left unfinished is resumed, not restarted.
        let resuming = continuing.filter(|p| p.draining && p.action == action);
        let drain = self.drains(n, action);
        let cordon_now = cordon && !node::unschedulable(n);
        let record = RepairRecord {
            action,
            attempt,
            started: resuming.map_or(now, |p| p.started),
            first_started: continuing.map_or(now, |p| p.first_started),
            reason: reason.to_string(),
            boot_id: node::boot_id(n).map(String::from),
            server_id: previous.as_ref().and_then(|p| p.server_id.clone()),
            cordoned: cordon_now || previous.as_ref().is_some_and(|p| p.cordoned),
            failed: None,
            failed_at: None,
            by: self.identity.clone(),
            draining: drain,
            detected: continuing.and_then(|p| p.detected).or(Some(actionable_since)),
            severity: Some(severity.0),
            fenced: previous.as_ref().is_some_and(|p| p.fenced),
        };
        let incident = node_incident(&n.name_any(), record.detected.unwrap_or(record.first_started));
        let mut patch = json!({"metadata": {"annotations": {REPAIR_ANNOTATION: record.to_json(), node::REMEDIATE_ANNOTATION: null}}});
        if cordon_now {
            patch["spec"] = json!({"unschedulable": true});
        }
        let mut written = self.fenced_patch(n, patch).await?;
        let role = node::role(n);
        if resuming.is_some() {
            tracing::info!(node = %n.name_any(), %action, "resuming a drain a previous leader left unfinished");
            self.event(
                n,
                false,
                "RepairResumed",
                action_name(action),
                format!(
                    "Resuming the drain before {action} (attempt {attempt}), left unfinished by {}.",
                    resuming.map(|p| p.by.as_str()).unwrap_or_default()
                ),
            )
            .await;
        } else {
            let lag = now.duration_since(actionable_since).as_secs_f64().max(0.0);
            if attempt == 1 {
                self.metrics.detection_lag.observe(lag);
                self.metrics.detected(role.as_str(), severity.0.as_str());
            }
            self.metrics.repair(role.as_str(), action.as_str(), "started");
            let (sev, why) = &severity;
            tracing::info!(node = %n.name_any(), %role, %action, attempt, reason, severity = %sev, cordoned = cordon_now, "repair step started");
            let verb = if action == Action::Reboot { "Rebooting" } else { "Replacing" };
            let cordoned = if cordon_now { " Cordoned." } else { "" };
            let draining = if drain { " Draining first." } else { "" };
            self.event(
                n,
                false,
                "RepairStarted",
                action_name(action),
                format!("{verb} node (attempt {attempt}): {reason}.{cordoned}{draining} Severity: {sev} ({why})."),
            )
            .await;
            self.tell(
                n,
                Kind::RepairStarted,
                *sev,
                incident.clone(),
                format!("{verb} node {} (attempt {attempt}): {reason}", n.name_any()),
            );
        }
        if drain {
            let unreachable = node_unreachable(n);
            let name = n.name_any();
            let report = crate::drain::drain(&self.client, &name, unreachable, &self.drain, &tokio_util::sync::CancellationToken::new())
                .await
                .map_err(|source| ActError::Kube { node: name.clone(), source })?;
            let warn = !report.left.is_empty();
            tracing::info!(node = %name, summary = %report.summary(), "drain finished");
            self.event(n, warn, "Drained", "Drain", report.summary()).await;
            written = self.end_drain(&written, &record).await?;
        }

        if !self.leader.is_leader() {
            return Err(ActError::NotLeader);
        }
        let info = node::info(n);
        let result = match action {
            Action::Reboot => self.provider.reboot(&info).await,
            Action::Replace => self.provider.replace(std::slice::from_ref(&info)).await.map(|mut v| {
                v.pop().unwrap_or_else(|| autohealer_cloud::ActionOutcome {
                    server_id: None,
                    detail: "replace accepted".into(),
                    already_in_progress: false,
                    evidence: None,
                })
            }),
        };
        match result {
            Ok(outcome) => {
                tracing::info!(node = %n.name_any(), %action, detail = %outcome.detail, "cloud accepted the step");
                let kept = match &outcome.evidence {
                    Some(text) => self.keep_evidence(n, action, outcome.server_id.as_deref(), text).await,
                    None => None,
                };
                let note = match kept {
                    Some(at) => format!("{} Console output before the step kept in ConfigMap {at}.", outcome.detail),
                    None => outcome.detail.clone(),
                };
                self.event(n, false, "RepairIssued", action_name(action), note).await;
                let mut record = record;
                if outcome.server_id.is_some() && outcome.server_id != record.server_id {
                    record.server_id = outcome.server_id;
                    if let Ok(w) =
                        self.fenced_patch(&written, json!({"metadata": {"annotations": {REPAIR_ANNOTATION: record.to_json()}}})).await
                    {
                        written = w;
                    }
                }
                // On its own: waiting for the cloud to confirm must not hold the node's
                // next step (a fence that comes late loses its write to the newer node).
                if action == Action::Replace && self.fencing.enabled && !record.fenced {
                    let me = self.clone();
                    tokio::spawn(async move { me.fence(written, record, severity.0, incident).await });
                }
                Ok(())
            }
            Err(e) if e.is_uncertain() => {
                tracing::warn!(node = %n.name_any(), %action, error = %e, "no answer from the cloud: the step is treated as issued");
                self.event(
                    n,
                    true,
                    "RepairIssued",
                    action_name(action),
                    format!("{e}. The step is treated as issued and verified like one; it is not sent again."),
                )
                .await;
                Ok(())
            }
            Err(e) => {
                tracing::warn!(node = %n.name_any(), %action, error = %e, "repair step failed");
                let why = format!("{action} failed: {e}");
                self.failed(&written, &record, &why).await
            }
        }
    }

    /// Taints the node out-of-service once the cloud confirms its machine is down, so
    /// Kubernetes deletes its pods and detaches their volumes. Asks until
    /// `fencing.confirm-timeout`; a machine never confirmed down is never tainted.
    async fn fence(&self, mut last: Node, record: RepairRecord, severity: Severity, incident: String) {
        let info = node::info(&last);
        let deadline = tokio::time::Instant::now() + self.fencing.confirm_timeout;
        let evidence = loop {
            match self.provider.machine_down(&info).await {
                Ok(Some(why)) => break why,
                Ok(None) => {}
                Err(e) => tracing::debug!(node = %last.name_any(), error = %e, "cannot tell whether the machine is down"),
            }
            if tokio::time::Instant::now() + self.fencing.poll > deadline {
                tracing::info!(node = %last.name_any(), "machine not confirmed down in time: not fenced");
                return;
            }
            tokio::time::sleep(self.fencing.poll).await;
        };
        let mut r = record.clone();
        r.fenced = true;
        let mut tainted = false;
        for _ in 0..5 {
            let mut taints = taints_without_fence(&last);
            taints.push(json!({"key": OUT_OF_SERVICE_TAINT, "value": "nodeshutdown", "effect": "NoExecute"}));
            let patch = json!({"metadata": {"annotations": {REPAIR_ANNOTATION: r.to_json()}}, "spec": {"taints": taints}});
            match self.fenced_patch(&last, patch).await {
                Ok(_) => {
                    tainted = true;
                    break;
                }
                Err(ActError::Conflict(name)) => {
                    let Ok(fresh) = self.nodes.get(&name).await else { return };
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
        let pods = crate::drain::pods_on(&self.client, &last.name_any()).await.unwrap_or_default();
        let listed = if pods.is_empty() {
            "no pods were on it".to_string()
        } else {
            let shown: Vec<&str> = pods.iter().take(20).map(String::as_str).collect();
            let more = pods.len().saturating_sub(shown.len());
            format!("pods on it: {}{}", shown.join(", "), if more > 0 { format!(" and {more} more") } else { String::new() })
        };
        tracing::info!(node = %last.name_any(), evidence, pods = pods.len(), "node fenced");
        self.event(
            &last,
            true,
            "Fenced",
            "Fence",
            format!(
                "Machine confirmed down ({evidence}): tainted {OUT_OF_SERVICE_TAINT}=nodeshutdown:NoExecute so Kubernetes deletes its pods and detaches their volumes; {listed}."
            ),
        )
        .await;
        self.tell(&last, Kind::Fenced, severity, incident, format!("Node {} fenced ({evidence}); {listed}", last.name_any()));
    }

    /// The node is healthy again: clear the ledger, uncordon what the healer cordoned
    /// and lift the out-of-service taint it set.
    pub async fn recovered(&self, n: &Node, record: &RepairRecord) -> Result<(), ActError> {
        let mut patch = json!({"metadata": {"annotations": {REPAIR_ANNOTATION: null}}});
        // A failed repair is already in the history; a node that recovers after it is not a success of the healer's.
        if record.failed.is_none() {
            let entry = HistoryEntry {
                action: record.action,
                started: record.first_started,
                ended: Timestamp::now(),
                succeeded: true,
                reason: record.reason.clone(),
                severity: record.severity,
                held: false,
            };
            patch["metadata"]["annotations"][HISTORY_ANNOTATION] =
                json!(push_history(node::annotation(n, HISTORY_ANNOTATION), entry, record.detected));
        }
        if record.cordoned {
            patch["spec"]["unschedulable"] = Value::Null;
        }
        let tainted = n.spec.as_ref().and_then(|s| s.taints.as_ref()).is_some_and(|t| t.iter().any(|t| t.key == OUT_OF_SERVICE_TAINT));
        if record.fenced && tainted {
            patch["spec"]["taints"] = json!(taints_without_fence(n));
        }
        self.fenced_patch(n, patch).await?;
        let role = node::role(n);
        let took = Timestamp::now().duration_since(record.first_started).as_secs_f64().max(0.0);
        self.metrics.repair(role.as_str(), record.action.as_str(), "succeeded");
        self.metrics
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
        self.event(
            n,
            false,
            "Recovered",
            "Verify",
            format!("Node is healthy again after {}{how}, {:.0}s after the repair began.{uncordon}{unfence}", record.action, took),
        )
        .await;
        if record.failed.is_none() {
            self.tell(
                n,
                Kind::RepairSucceeded,
                record.severity.unwrap_or(Severity::Medium),
                node_incident(&n.name_any(), record.detected.unwrap_or(record.first_started)),
                format!("Node {} is healthy again after {} ({took:.0}s)", n.name_any(), record.action),
            );
        }
        Ok(())
    }

    /// The step failed or did not bring the node back in time: record the failure in
    /// the ledger (the node stays cordoned) and in the history the retry budget counts.
    pub async fn failed(&self, n: &Node, record: &RepairRecord, why: &str) -> Result<(), ActError> {
        let now = Timestamp::now();
        let mut r = record.clone();
        r.failed = Some(why.to_string());
        r.failed_at = Some(now);
        let entry = HistoryEntry {
            action: record.action,
            started: record.first_started,
            ended: now,
            succeeded: false,
            reason: why.to_string(),
            severity: record.severity,
            held: false,
        };
        let history = push_history(node::annotation(n, HISTORY_ANNOTATION), entry, record.detected);
        self.fenced_patch(n, json!({"metadata": {"annotations": {REPAIR_ANNOTATION: r.to_json(), HISTORY_ANNOTATION: history}}})).await?;
        self.metrics.repair(node::role(n).as_str(), record.action.as_str(), "failed");
        tracing::warn!(node = %n.name_any(), why, "repair failed");
        self.event(
            n,
            true,
            "RepairFailed",
            "Verify",
            format!("{why}. It is retried after repair-retry-delay, within the node's retry budget."),
        )
        .await;
        self.tell(
            n,
            Kind::RepairFailed,
            record.severity.unwrap_or(Severity::Medium),
            node_incident(&n.name_any(), record.detected.unwrap_or(record.first_started)),
            format!("Repair of node {} failed: {why}", n.name_any()),
        );
        Ok(())
    }

    /// Keeps a detection that a gate holds back in the node's history, once per failure,
    /// so that the next failure's severity counts it, after a failover too. Replaced by
    /// the repair's own entry if the failure is repaired later.
    pub async fn record_detection(&self, n: &Node, entry: HistoryEntry) -> Result<(), ActError> {
        let mut current = n.clone();
        for _ in 0..3 {
            let before = node::annotation(&current, HISTORY_ANNOTATION);
            if crate::ledger::parse_history(before).iter().any(|h| h.started == entry.started) {
                return Ok(());
            }
            let history = push_history(before, entry.clone(), None);
            match self.fenced_patch(&current, json!({"metadata": {"annotations": {HISTORY_ANNOTATION: history}}})).await {
                Err(ActError::Conflict(name)) => {
                    current = self.nodes.get(&name).await.map_err(|source| ActError::Kube { node: name.clone(), source })?;
                }
                other => return other.map(|_| ()),
            }
        }
        Err(ActError::Conflict(n.name_any()))
    }

    /// Persists (or clears) a probing check's first-failure time, as upstream does.
    pub async fn mark_probe(&self, n: &Node, annotation: &str, value: Option<String>) -> Result<(), ActError> {
        self.fenced_patch(n, json!({"metadata": {"annotations": {annotation: value}}})).await.map(|_| ())
    }
}

/// The node's taints but the out-of-service one: a taint list is replaced whole by a
/// merge patch, behind the resourceVersion precondition.
fn taints_without_fence(n: &Node) -> Vec<Value> {
    n.spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .map(|t| t.iter().filter(|t| t.key != OUT_OF_SERVICE_TAINT).filter_map(|t| serde_json::to_value(t).ok()).collect())
        .unwrap_or_default()
}

fn action_name(a: Action) -> &'static str {
    match a {
        Action::Reboot => "Reboot",
        Action::Replace => "Replace",
    }
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
fn node_unreachable(n: &Node) -> bool {
    n.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
        .is_some_and(|c| c.status == "Unknown")
}
