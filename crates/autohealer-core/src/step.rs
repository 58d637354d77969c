//! The life of one repair step as pure transitions of its ledger record: what is
//! written before the first call, after each call of a multi-call step, when a call
//! stalls, when the machine is restored, when the step fails or the node recovers.
//! The actor only carries them out (one fenced write, then one call); the lifecycle
//! simulation drives the very same functions through faults.

use crate::ledger::{HistoryEntry, Ledger, RepairRecord};
use crate::planner::add;
use crate::severity::Severity;
use autohealer_cloud::{Action, ActionOutcome, CloudError, Progress};
use k8s_openapi::jiff::Timestamp;
use std::time::Duration;

/// What the first write of a step needs to know about the node.
#[derive(Debug, Clone)]
pub struct Facts {
    pub boot_id: Option<String>,
    pub unschedulable: bool,
    /// Whether the node is drained before this step.
    pub drains: bool,
}

/// The first record of a new step, and whether that write cordons the node.
#[allow(clippy::too_many_arguments)]
pub fn begin(
    previous: &Ledger,
    action: Action,
    attempt: u32,
    reason: &str,
    actionable_since: Timestamp,
    cordon: bool,
    severity: Severity,
    facts: &Facts,
    by: &str,
    now: Timestamp,
) -> (RepairRecord, bool) {
    let previous = match previous {
        Ledger::Record(r) => Some(r),
        _ => None,
    };
    // After a failed repair, a retry is a new repair that keeps the cordon, the fence
    // and what it knows of the machine.
    let continuing = previous.filter(|p| p.failed.is_none());
    let cordon_now = cordon && !facts.unschedulable;
    let record = RepairRecord {
        action,
        attempt,
        started: now,
        first_started: continuing.map_or(now, |p| p.first_started),
        reason: reason.to_string(),
        boot_id: facts.boot_id.clone(),
        server_id: previous.and_then(|p| p.server_id.clone()),
        cordoned: cordon_now || previous.is_some_and(|p| p.cordoned),
        failed: None,
        failed_at: None,
        by: by.to_string(),
        draining: facts.drains,
        detected: continuing.and_then(|p| p.detected).or(Some(actionable_since)),
        severity: Some(severity),
        fenced: previous.is_some_and(|p| p.fenced),
        pending: action == Action::Replace,
        phase: None,
        out_of_service: previous.is_some_and(|p| p.out_of_service),
        stalls: 0,
        stalled: None,
        retry_at: None,
        unsent: false,
        delegated: None,
        workloads_failed: None,
    };
    (record, cordon_now)
}

/// The record once the drain is over, written right before the first cloud call so
/// that a new leader never drains again nor makes a single call twice.
pub fn drained(r: &RepairRecord) -> RepairRecord {
    RepairRecord { draining: false, ..r.clone() }
}

/// How often an unanswered call is asked again (with `resumed`, which verifies) within
/// one task before the step stalls and waits.
pub const UNCERTAIN_TRIES: u32 = 3;

/// The delay before a stalled call is tried again: 30 s, doubling, at most 10 minutes.
pub fn stall_delay(stalls: u32) -> Duration {
    let secs = 30u64.saturating_mul(1u64 << stalls.saturating_sub(1).min(5));
    Duration::from_secs(secs.min(600))
}

/// What the actor does after a cloud call of a step.
#[derive(Debug, Clone, PartialEq)]
pub enum After {
    /// Write `record` (its next phase), then make the call at that phase.
    Call { record: RepairRecord, resumed: bool },
    /// Ask the same phase again, with `resumed`: the call may have been made.
    Verify,
    /// The step is issued: write `record`, then follow the node.
    Issued { record: RepairRecord, outcome: ActionOutcome, uncertain: Option<String> },
    /// The call failed after the machine was taken out of service: write `record`
    /// (tried again at its `retry_at`, or the machine restored) and say so.
    Stalled { record: RepairRecord, why: String },
    /// The step failed with nothing out of service: the repair fails.
    Failed { why: String },
}

/// The transition after a call of the step in `r` answered `result`; `uncertain` is
/// how many unanswered calls in a row this task has seen at this phase.
pub fn after_call(r: &RepairRecord, result: Result<Progress, CloudError>, uncertain: u32, now: Timestamp) -> After {
    match result {
        Ok(Progress::Next(phase)) => {
            let out = r.out_of_service || phase.out_of_service;
            let record = RepairRecord {
                phase: Some(phase),
                out_of_service: out,
                stalls: 0,
                stalled: None,
                retry_at: None,
                unsent: false,
                ..r.clone()
            };
            After::Call { record, resumed: false }
        }
        Ok(Progress::Done(outcome)) => After::Issued { record: issued(r, &outcome, now), outcome, uncertain: None },
        Err(e) if e.is_uncertain() && r.action == Action::Reboot => After::Issued {
            record: issued(r, &ActionOutcome::default(), now),
            outcome: ActionOutcome { detail: e.to_string(), ..Default::default() },
            uncertain: Some(e.to_string()),
        },
        Err(e) if e.is_uncertain() && uncertain + 1 < UNCERTAIN_TRIES => After::Verify,
        Err(e) => {
            let why = match &r.phase {
                Some(p) => format!("{} failed at {}: {e}", r.action, p.name),
                None => format!("{} failed: {e}", r.action),
            };
            if r.out_of_service || r.phase.as_ref().is_some_and(|p| p.out_of_service) {
                // A definite refusal means the call was not made: the next try makes it
                // again. Unanswered to the end, it may have been: the next try verifies.
                let record = RepairRecord { unsent: !e.is_uncertain(), ..stall(r, &why, now) };
                After::Stalled { record, why }
            } else {
                After::Failed { why }
            }
        }
    }
}

fn issued(r: &RepairRecord, outcome: &ActionOutcome, now: Timestamp) -> RepairRecord {
    RepairRecord {
        // The wait for the node to come back begins when the last call is made.
        started: if r.pending { now } else { r.started },
        pending: false,
        phase: None,
        stalls: 0,
        stalled: None,
        retry_at: None,
        unsent: false,
        server_id: outcome.server_id.clone().or_else(|| r.server_id.clone()),
        draining: false,
        ..r.clone()
    }
}

/// A stalled step, tried again after a growing delay.
pub fn stall(r: &RepairRecord, why: &str, now: Timestamp) -> RepairRecord {
    let stalls = r.stalls.saturating_add(1);
    RepairRecord {
        out_of_service: true,
        stalls,
        stalled: Some(why.to_string()),
        retry_at: Some(add(now, stall_delay(stalls))),
        ..r.clone()
    }
}

/// What a restore attempt leads to.
#[derive(Debug, Clone, PartialEq)]
pub enum Restored {
    /// The machine is back: the repair ends as failed with `why` (retried later from
    /// the first step).
    Back { record: RepairRecord, why: String },
    /// Restoring failed: write `record`, tried again at its `retry_at`.
    Again { record: RepairRecord },
}

/// The record after a restore attempt.
pub fn after_restore(r: &RepairRecord, result: &Result<ActionOutcome, CloudError>, now: Timestamp) -> Restored {
    let stalled = r.stalled.clone().unwrap_or_else(|| format!("{} stalled", r.action));
    match result {
        Ok(outcome) => {
            let why = format!("{stalled}; the machine was restored ({})", outcome.detail);
            let record = RepairRecord { pending: false, phase: None, out_of_service: false, retry_at: None, ..r.clone() };
            Restored::Back { record, why }
        }
        Err(e) => {
            let why = format!("{stalled}; restoring the machine failed: {e}");
            Restored::Again { record: RepairRecord { stalled: Some(why), ..stall(r, &stalled, now) } }
        }
    }
}

/// The record and history entry of a failed repair (the node stays cordoned).
/// The record once the node came back but its workloads did not: the next step follows.
pub fn workloads_failed(r: &RepairRecord, why: &str) -> RepairRecord {
    RepairRecord { workloads_failed: Some(why.to_string()), ..r.clone() }
}

/// The record once the next step is handed to the cloud's own remediation.
pub fn delegated(r: &RepairRecord, action: Action, to: &str, now: Timestamp) -> RepairRecord {
    RepairRecord { delegated: Some(crate::ledger::Delegated { action, to: to.to_string(), at: now }), ..r.clone() }
}

pub fn failed(r: &RepairRecord, why: &str, now: Timestamp) -> (RepairRecord, HistoryEntry) {
    let record = RepairRecord {
        delegated: None,
        workloads_failed: None,
        failed: Some(why.to_string()),
        failed_at: Some(now),
        pending: false,
        phase: None,
        draining: false,
        stalls: 0,
        retry_at: None,
        ..r.clone()
    };
    let entry = HistoryEntry {
        action: r.action,
        started: r.first_started,
        ended: now,
        succeeded: false,
        reason: why.to_string(),
        severity: r.severity,
        held: false,
    };
    (record, entry)
}

/// The history entry of a repair whose node is healthy again; `None` when the repair
/// had already failed (a node that recovers after that is not the healer's success).
pub fn recovered(r: &RepairRecord, now: Timestamp) -> Option<HistoryEntry> {
    r.failed.is_none().then(|| HistoryEntry {
        action: r.action,
        started: r.first_started,
        ended: now,
        succeeded: true,
        reason: r.reason.clone(),
        severity: r.severity,
        held: false,
    })
}

/// The record a replica writes before it continues (or restores) a step another one
/// began: the write is the fence that proves its view of the node is current, so a
/// stale snapshot never makes a call.
pub fn claim(r: &RepairRecord, by: &str) -> RepairRecord {
    RepairRecord { by: by.to_string(), ..r.clone() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use autohealer_cloud::Phase;

    fn t(s: &str) -> Timestamp {
        format!("2026-01-01T{s}Z").parse().unwrap()
    }

    fn replace_record() -> RepairRecord {
        let facts = Facts { boot_id: Some("b1".into()), unschedulable: false, drains: false };
        begin(&Ledger::None, Action::Replace, 2, "Ready is False", t("00:00:00"), true, Severity::Medium, &facts, "a", t("00:01:00")).0
    }

    #[test]
    fn a_replace_is_pending_until_its_last_call_and_its_wait_begins_then() {
        let r = replace_record();
        assert!(r.pending && r.phase.is_none() && r.cordoned);
        let After::Call { record, resumed: false } =
            after_call(&r, Ok(Progress::Next(Phase::new("stop").out_of_service())), 0, t("00:01:01"))
        else {
            panic!()
        };
        assert!(record.out_of_service && record.pending);
        let next = Phase::new("resize").with("group", "g");
        let After::Call { record, .. } = after_call(&record, Ok(Progress::Next(next)), 0, t("00:01:02")) else { panic!() };
        assert!(record.out_of_service, "out of service stays once set");
        let After::Issued { record, .. } = after_call(&record, Ok(Progress::Done(ActionOutcome::default())), 0, t("00:02:00")) else {
            panic!()
        };
        assert!(!record.pending && record.phase.is_none());
        assert_eq!(record.started, t("00:02:00"));
    }

    #[test]
    fn a_failure_after_the_stop_stalls_and_one_before_it_fails() {
        let r = replace_record();
        let e = || Err(CloudError::Call { call: "magnum PATCH".into(), status: Some(409), message: "UPDATE_IN_PROGRESS".into() });
        assert!(matches!(after_call(&r, e(), 0, t("00:01:00")), After::Failed { .. }));
        let stopped = RepairRecord { phase: Some(Phase::new("resize").out_of_service()), out_of_service: true, ..r };
        let After::Stalled { record, why } = after_call(&stopped, e(), 0, t("00:01:00")) else { panic!() };
        assert!(why.contains("at resize") && why.contains("409"), "{why}");
        assert_eq!((record.stalls, record.retry_at), (1, Some(t("00:01:30"))));
        assert!(record.unsent, "a 409 means the resize was not sent: the next try sends it");
        let again = stall(&record, &why, t("00:01:30"));
        assert_eq!(again.retry_at, Some(t("00:02:30")), "the delay doubles");
    }

    #[test]
    fn an_unanswered_call_is_verified_then_stalls_and_an_unanswered_reboot_counts_as_issued() {
        let r = RepairRecord { phase: Some(Phase::new("stop").out_of_service()), ..replace_record() };
        let e = || Err(CloudError::Uncertain { call: "nova POST /servers/x/action".into() });
        assert_eq!(after_call(&r, e(), 0, t("00:01:00")), After::Verify);
        assert!(matches!(after_call(&r, e(), UNCERTAIN_TRIES - 1, t("00:01:00")), After::Stalled { .. }));
        let reboot = RepairRecord { action: Action::Reboot, pending: false, phase: None, ..replace_record() };
        assert!(matches!(after_call(&reboot, e(), 0, t("00:01:00")), After::Issued { uncertain: Some(_), .. }));
    }

    #[test]
    fn stall_delay_is_bounded() {
        assert_eq!(stall_delay(1), Duration::from_secs(30));
        assert_eq!(stall_delay(3), Duration::from_secs(120));
        assert_eq!(stall_delay(u32::MAX), Duration::from_secs(600));
    }
}
