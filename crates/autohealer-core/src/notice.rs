//! What the healer tells people: the severity of a failure and the notifications it
//! hands to whatever delivers them (Slack, PagerDuty, email: `autohealer-notify`).
//! Handing one over never waits, so delivery can never hold up a repair.

use crate::ledger::{HistoryEntry, Ledger};
use crate::planner::{Decision, Gate, NodeState};
use autohealer_cloud::Role;
use k8s_openapi::jiff::Timestamp;
use serde::{Deserialize, Serialize};
use std::fmt;

pub use crate::severity::Severity;

/// A node failure's severity: the role's base (a master holds the control plane),
/// raised with how often the same node failed in the last hour, because a node that
/// keeps failing is one a repair does not fix. `recent` counts the node's earlier
/// failures (finished repairs) that began within the hour before `now`; the failure
/// at hand is one more.
pub fn severity(role: Role, history: &[HistoryEntry], now: Timestamp, short_circuited: bool) -> (Severity, String) {
    let hour_ago = crate::planner::sub(now, std::time::Duration::from_secs(3600));
    let failures = history.iter().filter(|h| h.started >= hour_ago).count() + 1;
    let base = match role {
        Role::Master => Severity::High,
        Role::Worker => Severity::Medium,
    };
    if short_circuited {
        return (Severity::Critical, "repairs are held back by a short-circuit".into());
    }
    let (raised, why) = match failures {
        n if n > 3 => (Severity::Critical, format!("failure {n} of this node within an hour")),
        n if n > 1 => (Severity::High, format!("failure {n} of this node within an hour")),
        _ => (base, format!("first failure of this {role} within an hour")),
    };
    (raised.max(base), why)
}

/// The severity of the failure behind a decision, if there is one: a repair under
/// way keeps the severity it began with.
pub fn of_decision(state: &NodeState, decision: &Decision, now: Timestamp) -> Option<(Severity, String)> {
    let kept = match &state.ledger {
        Ledger::Record(r) if r.failed.is_none() => r.severity.map(|s| (s, "as when the repair began".to_string())),
        _ => None,
    };
    match decision {
        Decision::Repair { .. } => Some(kept.unwrap_or_else(|| severity(state.role, &state.history, now, false))),
        Decision::Held { gate: Gate::RepeatedRepairs, .. } => {
            Some((Severity::Critical, "repaired again and again: left to a human".to_string()))
        }
        Decision::Held { gate, .. } => Some(kept.unwrap_or_else(|| {
            severity(state.role, &state.history, now, matches!(gate, Gate::MaxUnhealthy | Gate::Zone | Gate::Correlated))
        })),
        Decision::InProgress { .. } | Decision::Recovered { .. } | Decision::Failed { .. } => kept,
        Decision::Waiting { .. } if !state.findings.is_empty() => Some(severity(state.role, &state.history, now, false)),
        _ => None,
    }
}

/// What happened, for routing: each sink chooses the kinds it hears about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// A node became actionable (or a notify-only check found a problem).
    Detected,
    RepairStarted,
    RepairSucceeded,
    RepairFailed,
    ShortCircuitOn,
    ShortCircuitOff,
    Paused,
    Resumed,
    RetryBudgetExhausted,
    /// A node reported broken is healthy again without a repair (it was held back).
    Recovered,
    /// The node was confirmed down and tainted out-of-service so its pods move.
    Fenced,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Detected => "detected",
            Kind::RepairStarted => "repair-started",
            Kind::RepairSucceeded => "repair-succeeded",
            Kind::RepairFailed => "repair-failed",
            Kind::ShortCircuitOn => "short-circuit-on",
            Kind::ShortCircuitOff => "short-circuit-off",
            Kind::Paused => "paused",
            Kind::Resumed => "resumed",
            Kind::RetryBudgetExhausted => "retry-budget-exhausted",
            Kind::Recovered => "recovered",
            Kind::Fenced => "fenced",
        }
    }

    /// Whether this kind ends what an earlier one opened (PagerDuty resolves on it).
    pub fn resolves(self) -> bool {
        matches!(self, Kind::RepairSucceeded | Kind::Recovered | Kind::ShortCircuitOff | Kind::Resumed)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One thing to tell people.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Notification {
    pub kind: Kind,
    pub severity: Severity,
    /// The node, or `None` for cluster-wide news (pause, short-circuit).
    pub node: Option<String>,
    pub role: Option<Role>,
    /// One line, e.g. "Rebooting node w-3 (attempt 1): Ready is Unknown".
    pub summary: String,
    /// Stable across the notifications of one incident (detection to resolution),
    /// and across failover: derived from what the ledger keeps.
    pub incident: String,
    pub dry_run: bool,
    pub at: Timestamp,
}

/// Takes notifications for delivery. `notify` must return at once.
pub trait Notifier: Send + Sync {
    fn notify(&self, n: Notification);
}

/// Delivers nothing: the healer without any sink configured.
pub struct NoNotifier;

impl Notifier for NoNotifier {
    fn notify(&self, _: Notification) {}
}

/// The incident key of a node's failure: the node and when the failure became
/// actionable, which the ledger keeps, so detection, repair and recovery share it
/// across failover.
pub fn node_incident(node: &str, detected: Timestamp) -> String {
    format!("node/{node}/{}", detected.as_second())
}

/// The incident a node's state belongs to now. A repair asked for by hand has no
/// instant of its own: it is one incident for as long as the request stands.
pub fn incident_of(state: &NodeState, now: Timestamp) -> String {
    if state.findings.is_empty() && state.remediate && !matches!(&state.ledger, Ledger::Record(r) if r.failed.is_none()) {
        return format!("node/{}/remediate", state.name);
    }
    let detected = match &state.ledger {
        Ledger::Record(r) if r.failed.is_none() => Some(r.detected.unwrap_or(r.first_started)),
        _ => state.findings.iter().map(|f| f.actionable_at()).min(),
    };
    node_incident(&state.name, detected.unwrap_or(now))
}

#[cfg(test)]
mod tests {
    use super::*;
    use autohealer_cloud::Action;

    fn entry(started: Timestamp) -> HistoryEntry {
        HistoryEntry {
            action: Action::Reboot,
            started,
            ended: started,
            succeeded: true,
            reason: String::new(),
            severity: None,
            held: false,
        }
    }

    #[test]
    fn severity_rises_with_repeated_failures_and_short_circuits() {
        let now: Timestamp = "2026-01-01T12:00:00Z".parse().unwrap();
        let ago = |m: i64| now - k8s_openapi::jiff::SignedDuration::from_mins(m);
        assert_eq!(severity(Role::Worker, &[], now, false).0, Severity::Medium);
        assert_eq!(severity(Role::Master, &[], now, false).0, Severity::High);
        assert_eq!(severity(Role::Worker, &[entry(ago(90))], now, false).0, Severity::Medium, "older than an hour");
        assert_eq!(severity(Role::Worker, &[entry(ago(30))], now, false).0, Severity::High);
        let three = [entry(ago(50)), entry(ago(30)), entry(ago(10))];
        assert_eq!(severity(Role::Worker, &three[..2], now, false).0, Severity::High, "three failures: not above three");
        assert_eq!(severity(Role::Worker, &three, now, false).0, Severity::Critical);
        assert_eq!(severity(Role::Worker, &[], now, true).0, Severity::Critical);
    }
}
