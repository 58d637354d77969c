//! The repair ledger: the `autohealer.dev/repair` annotation on the node is the only
//! place repair state lives, so a new leader resumes a repair instead of repeating it.

use autohealer_cloud::Action;
use k8s_openapi::jiff::Timestamp;
use serde::{Deserialize, Serialize};

pub const REPAIR_ANNOTATION: &str = "autohealer.dev/repair";

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
    /// Set when the step failed or timed out; the node is then left alone until an
    /// operator removes the annotation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed: Option<String>,
    /// The replica that wrote the record.
    #[serde(default)]
    pub by: String,
}

/// The ledger as read from a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ledger {
    None,
    Record(RepairRecord),
    /// The annotation is there but unreadable: the healer never repairs when unsure.
    Unreadable(String),
}

impl Ledger {
    pub fn parse(value: Option<&str>) -> Self {
        match value {
            None => Ledger::None,
            Some(v) if v.trim().is_empty() => Ledger::None,
            Some(v) => match serde_json::from_str(v) {
                Ok(r) => Ledger::Record(r),
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
            by: "a".into(),
        };
        assert_eq!(Ledger::parse(Some(&r.to_json())), Ledger::Record(r));
        assert!(matches!(Ledger::parse(Some("{not json")), Ledger::Unreadable(_)));
        assert_eq!(Ledger::parse(Some("")), Ledger::None);
    }
}
