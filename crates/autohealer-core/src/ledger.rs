//! The repair ledger: the `autohealer.dev/repair` annotation on the node is the only
//! place repair state lives, so a new leader resumes a repair instead of repeating it.

use crate::severity::Severity;
use autohealer_cloud::{Action, Phase};
use k8s_openapi::jiff::Timestamp;
use serde::{Deserialize, Serialize};

pub const REPAIR_ANNOTATION: &str = "autohealer.dev/repair";
/// The node's finished repairs, newest last, bounded: what the rate and retry budgets
/// count, so they survive failover too.
pub const HISTORY_ANNOTATION: &str = "autohealer.dev/repair-history";
/// How many finished repairs a node keeps in its history.
pub const HISTORY_LEN: usize = 10;

/// One repair of one node, as written to the annotation before each cloud call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RepairRecord {
    /// The current step.
    pub action: Action,
    /// Steps taken in this repair so far, counting this one.
    pub attempt: u32,
    /// When the current step started.
    pub started: Timestamp,
    /// When this repair began (its first step).
    pub first_started: Timestamp,
    /// Why the node was repaired, as the check said.
    pub reason: String,
    /// The node's bootID before the step, to tell a reboot that happened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_id: Option<String>,
    /// Whether the healer cordoned the node, so it uncordons only what it cordoned.
    #[serde(default)]
    pub cordoned: bool,
    /// Set when the step failed or timed out; the node is retried after
    /// `repair-retry-delay`, within its retry budget.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_at: Option<Timestamp>,
    /// The replica that wrote the record.
    #[serde(default)]
    pub by: String,
    /// Set while the node is being drained before the step's cloud call; a record
    /// without it means the call may have been made, so a new leader never repeats it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub draining: bool,
    /// When the failure became actionable: the detection this repair answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detected: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub severity: Option<Severity>,
    /// Set once the node was tainted out-of-service, so the taint is removed when it returns.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub fenced: bool,
    /// Set while the calls of a multi-call step (a replace) are not all made: whoever
    /// leads finishes them from `phase`, so a step is never dropped half-way.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pending: bool,
    /// The next call of a pending step, written before it is made; `None` for the first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// Set, before it is made, once a call that may take the machine out of service (a
    /// stop) is about to be made in this repair: such a machine is finished (replaced) or
    /// restored, never left, and a retry never begins with a step that needs it running.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub out_of_service: bool,
    /// How many times in a row the pending step's current call failed, and why the
    /// last did; it is tried again at `retry_at`, then the machine restored.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub stalls: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stalled: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_at: Option<Timestamp>,
    /// The call at `phase` is known not to have been made (its last try failed for
    /// sure): it is made again as it is, not verified as one that may have gone out.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unsent: bool,
    /// Set when the next step was handed to the cloud's own remediation (a Cluster API
    /// MachineHealthCheck): the healer waits for the node to come back or go, and takes
    /// no further step of its own until `replace-timeout` has passed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delegated: Option<Delegated>,
    /// Set when the node came back but its workloads crash-loop where the same
    /// workloads elsewhere do not: the step did not repair it, and the next one follows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workloads_failed: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Delegated {
    pub action: Action,
    /// Who performs it, as the provider says.
    pub to: String,
    pub at: Timestamp,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// The ledger as read from a node. Every node's is kept between evaluations, and most
/// nodes have none: the record is boxed so that those cost a pointer, not its 380 bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ledger {
    None,
    Record(Box<RepairRecord>),
    /// The annotation is there but unreadable: the healer never repairs when unsure.
    Unreadable(String),
}

impl Ledger {
    pub fn parse(value: Option<&str>) -> Self {
        match value {
            None => Ledger::None,
            Some(v) if v.trim().is_empty() => Ledger::None,
            Some(v) => match serde_json::from_str(v) {
                Ok(r) => Ledger::Record(Box::new(r)),
                Err(e) => Ledger::Unreadable(format!("annotation {REPAIR_ANNOTATION} is not a repair record ({e})")),
            },
        }
    }
}

impl RepairRecord {
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// One finished repair: a detection and its outcome, which failure severity counts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HistoryEntry {
    /// The last step taken.
    pub action: Action,
    pub started: Timestamp,
    pub ended: Timestamp,
    pub succeeded: bool,
    #[serde(default)]
    pub reason: String,
    /// The failure's severity when it was detected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub severity: Option<Severity>,
    /// A detection no repair answered (a gate held it back): `started` is when the
    /// failure became actionable, `action` the step that would have been taken. It counts
    /// toward severity, never toward the repair budgets.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub held: bool,
}

/// The history as read from a node; an unreadable one counts as empty (it only
/// loosens budgets that the healer's other gates still bound).
pub fn parse_history(value: Option<&str>) -> Vec<HistoryEntry> {
    value.and_then(|v| serde_json::from_str(v).ok()).unwrap_or_default()
}

/// The history with `entry` appended, trimmed to [`HISTORY_LEN`], as JSON. A held
/// detection of the same failure (`detected`) is replaced: one failure, one entry.
pub fn push_history(value: Option<&str>, entry: HistoryEntry, detected: Option<Timestamp>) -> String {
    let mut h = parse_history(value);
    h.retain(|e| !(e.held && Some(e.started) == detected));
    h.push(entry);
    let excess = h.len().saturating_sub(HISTORY_LEN);
    h.drain(..excess);
    serde_json::to_string(&h).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_garbage() {
        let r = RepairRecord {
            action: Action::Reboot,
            attempt: 1,
            started: "2026-01-01T00:00:00Z".parse().unwrap(),
            first_started: "2026-01-01T00:00:00Z".parse().unwrap(),
            reason: "Ready is Unknown".into(),
            boot_id: Some("b1".into()),
            server_id: None,
            cordoned: true,
            failed: None,
            failed_at: None,
            by: "a".into(),
            draining: false,
            detected: None,
            severity: Some(Severity::High),
            fenced: false,
            pending: true,
            phase: Some(Phase::new("stop").with("group", "default-worker").out_of_service()),
            out_of_service: true,
            stalls: 2,
            stalled: Some("magnum 409".into()),
            retry_at: Some("2026-01-01T00:01:00Z".parse().unwrap()),
            unsent: true,
            delegated: None,
            workloads_failed: None,
        };
        assert_eq!(Ledger::parse(Some(&r.to_json())), Ledger::Record(Box::new(r)));
        assert!(matches!(Ledger::parse(Some("{not json")), Ledger::Unreadable(_)));
        assert_eq!(Ledger::parse(Some("")), Ledger::None);
    }

    #[test]
    fn history_is_bounded() {
        let e = |i: i64| HistoryEntry {
            action: Action::Reboot,
            started: Timestamp::from_second(i).unwrap(),
            ended: Timestamp::from_second(i + 1).unwrap(),
            succeeded: true,
            reason: String::new(),
            severity: None,
            held: false,
        };
        let mut json = None;
        for i in 0..15 {
            json = Some(push_history(json.as_deref(), e(i), None));
        }
        let h = parse_history(json.as_deref());
        assert_eq!(h.len(), HISTORY_LEN);
        assert_eq!(h[0].started, Timestamp::from_second(5).unwrap());
        assert!(parse_history(Some("garbage")).is_empty());
    }
}
