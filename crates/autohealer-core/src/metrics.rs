//! The healer's Prometheus metrics, served by the binary's `/metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RoleLabels {
    pub role: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CheckLabels {
    pub role: String,
    pub check: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RepairLabels {
    pub role: String,
    pub action: String,
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ActionLabels {
    pub role: String,
    pub action: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CloudLabels {
    pub service: String,
    pub code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SeverityLabels {
    pub role: String,
    pub severity: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NotificationLabels {
    pub sink: String,
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpdateLabels {
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HeldLabels {
    pub role: String,
    pub gate: String,
}

pub struct Metrics {
    pub registry: Registry,
    pub nodes: Family<RoleLabels, Gauge>,
    pub unhealthy_nodes: Family<CheckLabels, Gauge>,
    pub repairs: Family<RepairLabels, Counter>,
    pub repair_duration: Family<ActionLabels, Histogram>,
    pub detection_lag: Histogram,
    pub leader: Gauge,
    pub cloud_requests: Family<CloudLabels, Counter>,
    pub held: Family<HeldLabels, Gauge>,
    pub short_circuits: Gauge,
    pub paused: Gauge,
    pub pause_watch_errors: Counter,
    pub blind: Gauge,
    pub check_failing: Family<CheckLabels, Gauge>,
    pub detections: Family<SeverityLabels, Counter>,
    pub notifications: Family<NotificationLabels, Counter>,
    pub evaluations: Counter,
    pub evaluation_duration: Histogram,
    pub node_updates: Family<UpdateLabels, Counter>,
    /// Labels are the provider's own facts (`provider`, `strategy`, `magnum_driver`).
    pub provider_info: Family<Vec<(String, String)>, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("autohealer");
        let nodes = Family::<RoleLabels, Gauge>::default();
        registry.register("nodes", "Nodes watched, by role", nodes.clone());
        let unhealthy_nodes = Family::<CheckLabels, Gauge>::default();
        registry.register("unhealthy_nodes", "Nodes a check finds unhealthy, by role and check", unhealthy_nodes.clone());
        let repairs = Family::<RepairLabels, Counter>::default();
        registry.register("repairs", "Repair steps by role, action and result (started, succeeded, failed, dry_run)", repairs.clone());
        let repair_duration = Family::<ActionLabels, Histogram>::new_with_constructor(|| Histogram::new(exponential_buckets(5.0, 2.0, 12)));
        registry.register("repair_duration_seconds", "Time from the start of a repair to the node's recovery", repair_duration.clone());
        let detection_lag = Histogram::new(exponential_buckets(0.01, 2.0, 14));
        registry.register(
            "detection_lag_seconds",
            "Time from the instant a node became actionable to the start of its repair",
            detection_lag.clone(),
        );
        let leader = Gauge::default();
        registry.register("leader", "1 while this replica leads", leader.clone());
        let cloud_requests = Family::<CloudLabels, Counter>::default();
        registry.register("cloud_requests", "Cloud API requests by service and HTTP status code", cloud_requests.clone());
        let held = Family::<HeldLabels, Gauge>::default();
        registry.register("repairs_held", "Repairs held back now, by role and the gate that holds them", held.clone());
        let short_circuits = Gauge::default();
        registry.register(
            "short_circuits",
            "Short-circuits in force (roles over max-unhealthy, zones over their share)",
            short_circuits.clone(),
        );
        let paused = Gauge::default();
        registry.register("paused", "1 while repairs are paused through the healer's ConfigMap", paused.clone());
        let pause_watch_errors = Counter::default();
        registry.register(
            "pause_watch_errors",
            "Failures to watch the healer's ConfigMap; while it fails, the pause state is unknown and new repairs wait",
            pause_watch_errors.clone(),
        );
        let provider_info = Family::<Vec<(String, String)>, Gauge>::default();
        registry.register(
            "provider_info",
            "1 for what the cloud provider found out about the cloud (for OpenStack, the Magnum driver)",
            provider_info.clone(),
        );
        let blind = Gauge::default();
        registry.register(
            "blind",
            "1 while the healer cannot watch the apiserver (deadlines that run meanwhile are extended)",
            blind.clone(),
        );
        let check_failing = Family::<CheckLabels, Gauge>::default();
        registry.register(
            "check_failing",
            "1 while a check cannot get its evidence (its webhook fails, say) and so answers healthy, by role and check",
            check_failing.clone(),
        );
        let detections = Family::<SeverityLabels, Counter>::default();
        registry.register(
            "detections",
            "Node failures detected (a repair began, or a repair or notify-only check was held back), by role and severity",
            detections.clone(),
        );
        let notifications = Family::<NotificationLabels, Counter>::default();
        registry.register(
            "notifications",
            "Notifications by sink and result (sent, failed after retries, dropped when the queue was full, coalesced into a summary)",
            notifications.clone(),
        );
        let evaluations = Counter::default();
        registry.register(
            "evaluations",
            "Evaluations of the fleet (judge, plan, act), each woken by a change, a probe result, a step's end or a deadline",
            evaluations.clone(),
        );
        let evaluation_duration = Histogram::new(exponential_buckets(0.0005, 2.0, 14));
        registry.register(
            "evaluation_duration_seconds",
            "Time one evaluation takes, from reading the cache to handing out its effects",
            evaluation_duration.clone(),
        );
        let node_updates = Family::<UpdateLabels, Counter>::default();
        registry.register(
            "node_updates",
            "Node updates seen by the watch, by result: evaluated (something a check or the planner reads changed) or ignored (only heartbeat times or the resourceVersion moved)",
            node_updates.clone(),
        );
        Self {
            registry,
            evaluations,
            evaluation_duration,
            node_updates,
            nodes,
            unhealthy_nodes,
            repairs,
            repair_duration,
            detection_lag,
            leader,
            cloud_requests,
            held,
            short_circuits,
            paused,
            pause_watch_errors,
            blind,
            check_failing,
            detections,
            notifications,
            provider_info,
        }
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    pub fn detected(&self, role: &str, severity: &str) {
        self.detections.get_or_create(&SeverityLabels { role: role.into(), severity: severity.into() }).inc();
    }

    pub fn notification(&self, sink: &str, result: &str) {
        self.notifications.get_or_create(&NotificationLabels { sink: sink.into(), result: result.into() }).inc();
    }

    /// A Node update from the watch, and whether it woke an evaluation.
    pub fn node_update(&self, evaluated: bool) {
        let result = if evaluated { "evaluated" } else { "ignored" };
        self.node_updates.get_or_create(&UpdateLabels { result: result.into() }).inc();
    }

    pub fn repair(&self, role: &str, action: &str, result: &str) {
        self.repairs.get_or_create(&RepairLabels { role: role.into(), action: action.into(), result: result.into() }).inc();
    }
}
