//! From a plan to what the leader does about it: the second pure step after the
//! planner. Plan + memory → typed effects (an Event, a notification, a held detection
//! kept in the history, a step of work, a probe time to persist, a count). The shell
//! only carries them out, so dry-run, the provider's refusal, the in-flight set and
//! the once-per-failure announcements are all reachable by a unit test and by the
//! lifecycle simulation.

use crate::ledger::{HistoryEntry, Ledger, RepairRecord};
use crate::notice::{self, Kind, Notification, node_incident};
use crate::planner::{Decision, Gate, NodeState, Plan, Policy};
use crate::reason::Reason;
use crate::severity::Severity;
use autohealer_cloud::{Action, Role};
use k8s_openapi::jiff::Timestamp;
use std::collections::{BTreeSet, HashMap, HashSet};

/// Work for one node: each is carried out by one task, one at a time per node.
#[derive(Debug, Clone, PartialEq)]
pub enum Work {
    Start { action: Action, attempt: u32, reason: String, actionable_since: Timestamp, cordon: bool, severity: (Severity, String) },
    Continue { record: RepairRecord },
    Restore { record: RepairRecord },
    Recovered { record: RepairRecord },
    Failed { record: RepairRecord, why: String },
    Delegate { record: RepairRecord, action: Action, to: String },
}

/// Something to count in the metrics.
#[derive(Debug, Clone, PartialEq)]
pub enum Count {
    Detected { role: Role, severity: Severity },
    DryRun { role: Role, action: Action },
}

/// Few at a time, short-lived: the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// `action` is the Event's action: what it is about (a gate's name for a held
    /// repair), so that Events of one node that say different things are not folded
    /// into one series.
    Event {
        node: String,
        reason: Reason,
        action: &'static str,
        note: String,
    },
    Notify(Notification),
    /// Keep a detection a gate holds back in the node's history.
    RecordHeld {
        node: String,
        entry: HistoryEntry,
    },
    Work {
        node: String,
        work: Work,
    },
    Count(Count),
}

impl Effect {
    pub fn node(&self) -> Option<&str> {
        match self {
            Effect::Event { node, .. } | Effect::RecordHeld { node, .. } | Effect::Work { node, .. } => Some(node),
            Effect::Notify(n) => n.node.as_deref(),
            Effect::Count(_) => None,
        }
    }
}

/// What one node's announcements are about: the failure (its incident) and what was
/// said of it. A new failure is a new incident, so it is announced again.
#[derive(Debug, Clone)]
struct Said {
    /// Whom it is about, to close its incident once it is no longer planned one by one.
    name: String,
    role: Role,
    incident: String,
    keys: BTreeSet<String>,
    /// An incident opened by a detection, to close when the node heals without a repair.
    open: Option<Severity>,
    /// Notify-only findings told: (check, since).
    alerts: BTreeSet<(String, Timestamp)>,
}

impl Said {
    fn of(s: &NodeState) -> Self {
        Said { name: s.name.clone(), role: s.role, incident: String::new(), keys: BTreeSet::new(), open: None, alerts: BTreeSet::new() }
    }
}

/// What the leader remembers between evaluations of what it said; bounded by the
/// count of nodes planned one by one (a node gone, or plain and healthy, is forgotten).
#[derive(Debug, Default, Clone)]
pub struct Memory {
    said: HashMap<String, Said>,
}

impl Memory {
    /// How many nodes are remembered (the memory bound the simulation checks).
    pub fn len(&self) -> usize {
        self.said.len()
    }

    pub fn is_empty(&self) -> bool {
        self.said.is_empty()
    }
}

/// What the pure step needs besides the plan.
pub struct Context<'a> {
    pub policy: &'a Policy,
    /// Nodes (by uid) with a task under way: nothing new is started for them.
    pub in_flight: &'a HashSet<String>,
    /// The provider's refusal of a node (`check_node`), asked without I/O.
    pub impossible: &'a dyn Fn(&NodeState) -> Option<String>,
    /// Whether the node (name, uid) is still there, though not planned one by one: it
    /// is plain, so healthy (see [`crate::planner::plain`]).
    pub present: &'a dyn Fn(&str, &str) -> bool,
    pub now: Timestamp,
}

fn tell(kind: Kind, severity: Severity, s: &NodeState, incident: String, summary: String, dry_run: bool, at: Timestamp) -> Effect {
    Effect::Notify(Notification { kind, severity, node: Some(s.name.clone()), role: Some(s.role), summary, incident, dry_run, at })
}

/// A node reported broken and held back is healthy again: the incident its detection
/// opened is closed under that incident's key (a pager resolves what it was triggered
/// with).
fn recovered(said: &Said, severity: Severity, dry_run: bool, at: Timestamp) -> Effect {
    Effect::Notify(Notification {
        kind: Kind::Recovered,
        severity,
        node: Some(said.name.clone()),
        role: Some(said.role),
        summary: format!("Node {} is healthy again", said.name),
        incident: said.incident.clone(),
        dry_run,
        at,
    })
}

/// The effects of one evaluation, in order. `states[i]` is `plan.nodes[i]`'s node.
pub fn effects(plan: &Plan, states: &[NodeState], memory: &mut Memory, cx: &Context) -> Vec<Effect> {
    let now = cx.now;
    let dry_run = cx.policy.dry_run;
    let mut out = Vec::new();
    // Nodes remembered and no longer planned one by one: healthy, or gone.
    let planned: HashSet<&str> = states.iter().map(|s| s.uid.as_str()).collect();
    let mut left: Vec<String> = memory.said.keys().filter(|uid| !planned.contains(uid.as_str())).cloned().collect();
    left.sort();
    for uid in left {
        if let Some(said) = memory.said.remove(&uid)
            && let Some(sev) = said.open
            && (cx.present)(&said.name, &uid)
        {
            out.push(recovered(&said, sev, dry_run, now));
        }
    }
    for (np, state) in plan.nodes.iter().zip(states) {
        alerts(state, memory, dry_run, now, &mut out);
        if cx.in_flight.contains(&state.uid) {
            continue;
        }
        let incident = notice::incident_of(state, now);
        let said = memory.said.entry(state.uid.clone()).or_insert_with(|| Said::of(state));
        if matches!(np.decision, Decision::Healthy | Decision::NotMonitored)
            && let Some(sev) = said.open.take()
        {
            out.push(recovered(said, sev, dry_run, now));
        }
        if said.incident != incident && !matches!(np.decision, Decision::InProgress { .. } | Decision::Continue { .. }) {
            said.incident = incident.clone();
            said.keys.clear();
        }
        if !matches!(np.decision, Decision::Held { .. } | Decision::Repair { .. }) {
            said.keys.clear();
        }
        // A repair under way closes the incident when it succeeds.
        if said.open.is_some() && matches!(np.decision, Decision::InProgress { .. } | Decision::Repair { .. }) && !dry_run {
            said.open = None;
        }
        let impossible = match &np.decision {
            Decision::Repair { action, .. } => {
                (cx.impossible)(state).map(|e| (Reason::RepairImpossible, format!("Cannot {action} this node: {e}")))
            }
            _ => None,
        };
        let notice = impossible.or_else(|| match &np.decision {
            Decision::Held { gate, why, .. } => {
                let reason = match gate {
                    Gate::RetryBudget => Reason::RetryBudgetExhausted,
                    Gate::Approval => Reason::RepairProposed,
                    _ => Reason::RepairHeld,
                };
                Some((reason, why.clone()))
            }
            Decision::Repair { action, reason, .. } if dry_run => {
                Some((Reason::DryRun, format!("Would {action} node: {reason} (dry-run: nothing was changed)")))
            }
            // A step begun before dry-run was set: say so, its machine may be stopped.
            Decision::Continue { record } | Decision::Restore { record } if dry_run => {
                let what = if matches!(np.decision, Decision::Restore { .. }) { "restore the machine of" } else { "continue" };
                let out = if record.out_of_service { "; the machine may be out of service" } else { "" };
                Some((
                    Reason::DryRun,
                    format!("Would {what} the {} begun before dry-run (dry-run: nothing was changed){out}", record.action),
                ))
            }
            _ => None,
        });
        if let Some((reason, note)) = notice {
            // Once per failure and what holds it, never per evaluation (counts and ages
            // in the text change).
            let key = match &np.decision {
                // Each proposal once: a new one is made when the last expires.
                Decision::Held { gate: Gate::Approval, until, .. } => format!("approval/{until:?}"),
                Decision::Held { gate, .. } => gate.as_str().to_string(),
                _ => reason.as_str().to_string(),
            };
            if said.keys.insert(key) {
                let (sev, why) = notice::of_decision(state, &np.decision, now).unwrap_or((Severity::Medium, String::new()));
                let kind = match reason {
                    Reason::DryRun => Kind::RepairStarted,
                    Reason::RetryBudgetExhausted => Kind::RetryBudgetExhausted,
                    _ => Kind::Detected,
                };
                if let (Reason::DryRun, Decision::Repair { action, .. }) = (reason, &np.decision) {
                    out.push(Effect::Count(Count::DryRun { role: state.role, action: *action }));
                }
                if kind != Kind::RetryBudgetExhausted {
                    out.push(Effect::Count(Count::Detected { role: state.role, severity: sev }));
                }
                if kind != Kind::RepairStarted {
                    said.open = Some(sev);
                }
                out.push(tell(kind, sev, state, said.incident.clone(), format!("Node {}: {note}", np.name), dry_run, now));
                if let Some(entry) = held_detection(cx.policy, state, &np.decision, sev, note.clone()) {
                    out.push(Effect::RecordHeld { node: state.name.clone(), entry });
                }
                let note = format!("{}. Severity: {sev} ({why}).", note.trim_end_matches('.'));
                let action = match &np.decision {
                    Decision::Held { gate, .. } => gate.as_str(),
                    _ => "Decide",
                };
                out.push(Effect::Event { node: state.name.clone(), reason, action, note });
            }
            continue;
        }
        if dry_run {
            continue;
        }
        let work = match &np.decision {
            Decision::Repair { action, attempt, reason, actionable_since, cordon } => Work::Start {
                action: *action,
                attempt: *attempt,
                reason: reason.clone(),
                actionable_since: *actionable_since,
                cordon: *cordon,
                severity: notice::of_decision(state, &np.decision, now).unwrap_or((Severity::Medium, String::new())),
            },
            Decision::Continue { record } => Work::Continue { record: record.clone() },
            Decision::Restore { record } => Work::Restore { record: record.clone() },
            Decision::Recovered { record } => Work::Recovered { record: record.clone() },
            Decision::Failed { record, why } => Work::Failed { record: record.clone(), why: why.clone() },
            Decision::Delegate { record, action, to } => Work::Delegate { record: record.clone(), action: *action, to: to.clone() },
            _ => continue,
        };
        out.push(Effect::Work { node: state.name.clone(), work });
    }
    out
}

/// Notify-only checks: an Event and a notification once per node, check and problem
/// when it has lasted its unhealthy-duration; never a repair.
fn alerts(state: &NodeState, memory: &mut Memory, dry_run: bool, now: Timestamp, out: &mut Vec<Effect>) {
    if state.alerts.is_empty() {
        if let Some(said) = memory.said.get_mut(&state.uid) {
            said.alerts.clear();
        }
        return;
    }
    let said = memory.said.entry(state.uid.clone()).or_insert_with(|| Said::of(state));
    let current: BTreeSet<(String, Timestamp)> =
        state.alerts.iter().filter(|f| f.actionable_at() <= now).map(|f| (f.check.clone(), f.since)).collect();
    for f in state.alerts.iter().filter(|f| f.actionable_at() <= now) {
        if said.alerts.contains(&(f.check.clone(), f.since)) {
            continue;
        }
        let (sev, why) = notice::severity(state.role, &state.history, now, false);
        out.push(Effect::Count(Count::Detected { role: state.role, severity: sev }));
        let incident = format!("alert/{}/{}/{}", state.name, f.check, f.since.as_second());
        out.push(tell(Kind::Detected, sev, state, incident, format!("Node {}: {}: {}", state.name, f.check, f.reason), dry_run, now));
        let note = format!("{}: {} (notify-only check: no repair). Severity: {sev} ({why}).", f.check, f.reason);
        out.push(Effect::Event { node: state.name.clone(), reason: Reason::NodeProblem, action: "Notify", note });
    }
    said.alerts = current;
}

/// The history entry of a failure a gate holds back, for the gates that leave the
/// node to the healer (not `skip`, not an unreadable ledger, not dry-run: those write
/// nothing to the node).
fn held_detection(policy: &Policy, state: &NodeState, d: &Decision, severity: Severity, why: String) -> Option<HistoryEntry> {
    let Decision::Held { gate, .. } = d else { return None };
    // A repair under way (or failed) already answers the failure in the history.
    if matches!(state.ledger, Ledger::Record(_)) {
        return None;
    }
    if policy.dry_run || matches!(gate, Gate::Skip | Gate::Unreadable | Gate::RetryBudget | Gate::RepeatedRepairs | Gate::Leader) {
        return None;
    }
    let detected = state.findings.iter().map(|f| f.actionable_at()).min()?;
    let steps = match state.role {
        Role::Master => &policy.master_steps,
        Role::Worker => &policy.worker_steps,
    };
    Some(HistoryEntry {
        action: steps.first().copied().unwrap_or(Action::Reboot),
        started: detected,
        ended: detected,
        succeeded: false,
        reason: why,
        severity: Some(severity),
        held: true,
    })
}

/// The incident key of a repair's record, across failover.
pub fn record_incident(node: &str, r: &RepairRecord) -> String {
    node_incident(node, r.detected.unwrap_or(r.first_started))
}

/// One probing check's persisted first-failure time: which annotation to write (or
/// clear), when several checks share one, the first of them owns it and it holds the
/// earliest failure among them; cleared only when all of them pass. `probes` are, per
/// check in config order, its annotation, its latest result (`Some(since)` when
/// failing, `None` healthy, absent when never probed) — at most one write per node.
pub fn probe_time_write(
    probes: &[(Option<&str>, Option<Option<Timestamp>>)],
    present: &dyn Fn(&str) -> Option<String>,
    format: &dyn Fn(Timestamp) -> String,
) -> Option<(String, Option<String>)> {
    let mut owners: Vec<&str> = Vec::new();
    for (a, _) in probes {
        if let Some(a) = a
            && !owners.contains(a)
        {
            owners.push(a);
        }
    }
    for annotation in owners {
        let sharing: Vec<&Option<Option<Timestamp>>> = probes.iter().filter(|(a, _)| *a == Some(annotation)).map(|(_, h)| h).collect();
        if sharing.iter().any(|h| h.is_none()) && !sharing.iter().any(|h| matches!(h, Some(Some(_)))) {
            continue;
        }
        let failing = sharing.iter().filter_map(|h| h.and_then(|x| x)).min();
        let have = present(annotation);
        match (failing, have) {
            (Some(t), None) => return Some((annotation.to_string(), Some(format(t)))),
            (None, Some(_)) if sharing.iter().all(|h| matches!(h, Some(None))) => return Some((annotation.to_string(), None)),
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::planner::{Finding, Input, Pause, Rest, plan};
    use autohealer_cloud::RepairGate;
    use std::collections::BTreeMap;
    use std::time::Duration;

    fn t(s: &str) -> Timestamp {
        format!("2026-01-01T{s}Z").parse().unwrap()
    }

    fn broken(name: &str, since: &str, reason: &str) -> NodeState {
        NodeState {
            name: name.into(),
            uid: format!("uid-{name}"),
            role: Role::Worker,
            zone: None,
            created: Some(t("00:00:00")),
            boot_id: Some("b1".into()),
            findings: vec![Finding {
                check: "Heartbeat".into(),
                since: t(since),
                unhealthy_duration: Duration::from_secs(60),
                reason: reason.into(),
                steps: None,
            }],
            alerts: vec![],
            healthy_since: None,
            ledger: Ledger::None,
            history: vec![],
            skip: false,
            remediate: false,
            removing: None,
            attributes: vec![],
            approve: None,
            deny: None,
        }
    }

    fn evaluate(states: &[NodeState], policy: &Policy, memory: &mut Memory, now: &str, refuse: bool) -> Vec<Effect> {
        evaluate_busy(states, policy, memory, now, refuse, &HashSet::new())
    }

    fn evaluate_busy(
        states: &[NodeState],
        policy: &Policy,
        memory: &mut Memory,
        now: &str,
        refuse: bool,
        busy: &HashSet<String>,
    ) -> Vec<Effect> {
        let supported = [Role::Master, Role::Worker].into_iter().flat_map(|r| [(r, Action::Reboot), (r, Action::Replace)]).collect();
        let p = plan(&Input {
            nodes: states,
            rest: &Rest::default(),
            leader: true,
            pause: Pause::Running,
            gate: &RepairGate::Allowed,
            supported: &supported,
            delegated: &Default::default(),
            policy,
            cooldowns: &BTreeMap::new(),
            recent_starts: &[],
            unsure: None,
            starting: &std::collections::BTreeSet::new(),
            blind_until: None,
            now: t(now),
        });
        let impossible = |_: &NodeState| refuse.then(|| "node w1 maps to no server".to_string());
        effects(&p, states, memory, &Context { policy, in_flight: busy, impossible: &impossible, present: &|_, _| true, now: t(now) })
    }

    fn events(e: &[Effect]) -> Vec<(Reason, &str)> {
        e.iter()
            .filter_map(|e| match e {
                Effect::Event { reason, note, .. } => Some((*reason, note.as_str())),
                _ => None,
            })
            .collect()
    }

    /// A node reported broken and held back is healthy again: the notification closes
    /// the incident its detection opened (a pager resolves what it was triggered with),
    /// whether the node is still planned one by one or now counted apart as plain; one
    /// counted apart is forgotten.
    #[test]
    fn a_held_node_healthy_again_closes_the_incident_it_opened() {
        let policy = Policy::default();
        let notes = |e: &[Effect], kind: Kind| -> Vec<String> {
            e.iter()
                .filter_map(|e| match e {
                    Effect::Notify(n) if n.kind == kind => Some(n.incident.clone()),
                    _ => None,
                })
                .collect()
        };
        for planned in [true, false] {
            let mut memory = Memory::default();
            let n = NodeState { skip: true, ..broken("w1", "01:00:00", "Lease not renewed") };
            let opened = notes(&evaluate(std::slice::from_ref(&n), &policy, &mut memory, "01:02:00", false), Kind::Detected);
            assert_eq!(opened.len(), 1);
            let healthy = NodeState { findings: vec![], healthy_since: Some(t("01:03:00")), skip: false, ..n };
            let states = if planned { vec![healthy] } else { vec![] };
            let closed = notes(&evaluate(&states, &policy, &mut memory, "01:05:00", false), Kind::Recovered);
            assert_eq!(closed, opened, "planned one by one: {planned}");
            assert_eq!(memory.len(), usize::from(planned));
            assert!(notes(&evaluate(&states, &policy, &mut memory, "01:06:00", false), Kind::Recovered).is_empty());
        }
    }

    // Defect 8: a reason whose text changes every second (a Heartbeat age) is still one
    // announcement per node and failure, and the memory is bounded by the nodes.
    #[test]
    fn dry_run_is_announced_once_per_node_and_failure() {
        let policy = Policy { dry_run: true, ..Default::default() };
        let mut memory = Memory::default();
        let mut told = 0;
        for (i, now) in ["01:02:00", "01:02:01", "01:02:02", "01:05:00"].iter().enumerate() {
            let states = [broken("w1", "01:00:00", &format!("Lease not renewed for {}s", 120 + i))];
            let e = evaluate(&states, &policy, &mut memory, now, false);
            assert!(e.iter().all(|e| !matches!(e, Effect::Work { .. } | Effect::RecordHeld { .. })), "dry-run writes nothing: {e:?}");
            told += events(&e).iter().filter(|(r, _)| *r == Reason::DryRun).count();
        }
        assert_eq!(told, 1);
        // A new failure of the same node is a new announcement.
        let states = [broken("w1", "02:00:00", "Lease not renewed")];
        assert_eq!(events(&evaluate(&states, &policy, &mut memory, "02:01:00", false)).len(), 1);
        // Deleted nodes are forgotten.
        evaluate(&[], &policy, &mut memory, "02:02:00", false);
        assert!(memory.is_empty());
    }

    #[test]
    fn a_node_the_provider_refuses_gets_one_event_and_no_work() {
        let policy = Policy::default();
        let mut memory = Memory::default();
        let states = [broken("w1", "01:00:00", "Ready is False")];
        let e = evaluate(&states, &policy, &mut memory, "01:02:00", true);
        assert!(matches!(events(&e)[..], [(Reason::RepairImpossible, note)] if note.contains("maps to no server")), "{e:?}");
        assert!(e.iter().all(|e| !matches!(e, Effect::Work { .. })));
        assert!(events(&evaluate(&states, &policy, &mut memory, "01:03:00", true)).is_empty(), "once");
        // Mappable again: the repair starts.
        let e = evaluate(&states, &policy, &mut memory, "01:04:00", false);
        assert!(e.iter().any(|e| matches!(e, Effect::Work { work: Work::Start { .. }, .. })), "{e:?}");
    }

    #[test]
    fn nodes_with_a_task_under_way_get_nothing_new() {
        let policy = Policy::default();
        let states = [broken("w1", "01:00:00", "Ready is False")];
        let busy: HashSet<String> = ["uid-w1".to_string()].into();
        let e = evaluate_busy(&states, &policy, &mut Memory::default(), "01:02:00", false, &busy);
        assert!(e.is_empty(), "{e:?}");
    }

    // Defect 10: two probing checks sharing the default annotation write it once, with
    // the earliest failure, and clear it only when both pass.
    #[test]
    fn two_checks_sharing_an_annotation_write_it_once() {
        const A: &str = "autohealer.openstack.org/unhealthy-timestamp";
        let fmt = |t: Timestamp| t.to_string();
        let (early, late) = (t("01:00:00"), t("01:05:00"));
        let none = |_: &str| None;
        let write = probe_time_write(&[(Some(A), Some(Some(late))), (Some(A), Some(Some(early)))], &none, &fmt);
        assert_eq!(write, Some((A.to_string(), Some(early.to_string()))));
        let have = |_: &str| Some(early.to_string());
        assert_eq!(probe_time_write(&[(Some(A), Some(Some(late))), (Some(A), Some(Some(early)))], &have, &fmt), None, "no rewrite");
        assert_eq!(probe_time_write(&[(Some(A), Some(None)), (Some(A), Some(Some(early)))], &have, &fmt), None, "one still fails");
        assert_eq!(probe_time_write(&[(Some(A), Some(None)), (Some(A), Some(None))], &have, &fmt), Some((A.to_string(), None)));
        assert_eq!(probe_time_write(&[(Some(A), Some(None)), (Some(A), None)], &have, &fmt), None, "not probed yet: keep it");
    }
}
