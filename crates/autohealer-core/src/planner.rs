//! The planner: a pure function of (nodes, findings, ledger, policy, now) to one
//! decision per node and the next instant it needs to look again. No I/O, no clock:
//! everything it knows is in [`Input`], so every gate is tested at exact instants.

use crate::ledger::{Ledger, RepairRecord};
use autohealer_cloud::{Action, RepairGate, Role};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use std::collections::BTreeSet;
use std::time::Duration;

/// The policy knobs the planner reads, from the config.
#[derive(Debug, Clone)]
pub struct Policy {
    pub dry_run: bool,
    pub master_enabled: bool,
    pub worker_enabled: bool,
    /// A node younger than this is not repaired (it may still be joining).
    pub check_delay_after_add: Duration,
    /// How long a reboot has to bring the node back before the next step.
    pub rebuild_delay_after_reboot: Duration,
    /// How long a replace has to bring a healthy node back before it counts as failed.
    pub replace_timeout: Duration,
    /// The steps of a repair per role, in order; unsupported ones are skipped.
    pub master_steps: Vec<Action>,
    pub worker_steps: Vec<Action>,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            dry_run: false,
            master_enabled: true,
            worker_enabled: true,
            check_delay_after_add: Duration::from_secs(600),
            rebuild_delay_after_reboot: Duration::from_secs(300),
            replace_timeout: Duration::from_secs(1800),
            master_steps: vec![Action::Reboot, Action::Replace],
            worker_steps: vec![Action::Reboot, Action::Replace],
        }
    }
}

impl Policy {
    fn enabled(&self, role: Role) -> bool {
        match role {
            Role::Master => self.master_enabled,
            Role::Worker => self.worker_enabled,
        }
    }

    fn steps(&self, role: Role) -> &[Action] {
        match role {
            Role::Master => &self.master_steps,
            Role::Worker => &self.worker_steps,
        }
    }
}

/// One check's finding that a node is unhealthy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub check: String,
    pub since: Timestamp,
    pub unhealthy_duration: Duration,
    pub reason: String,
}

impl Finding {
    pub fn actionable_at(&self) -> Timestamp {
        add(self.since, self.unhealthy_duration)
    }
}

/// Everything the planner knows about one node.
#[derive(Debug, Clone)]
pub struct NodeState {
    pub name: String,
    pub role: Role,
    pub created: Option<Timestamp>,
    pub boot_id: Option<String>,
    /// Unhealthy findings only; an empty list means every check passed.
    pub findings: Vec<Finding>,
    pub ledger: Ledger,
    /// `autohealer.dev/skip`.
    pub skip: bool,
    /// `autohealer.dev/remediate`.
    pub remediate: bool,
}

pub struct Input<'a> {
    pub nodes: &'a [NodeState],
    pub leader: bool,
    pub gate: &'a RepairGate,
    /// The (role, action) pairs the provider supports.
    pub supported: &'a BTreeSet<(Role, Action)>,
    pub policy: &'a Policy,
    pub now: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Healthy,
    /// The node's role is not monitored.
    NotMonitored,
    /// Unhealthy, but not yet for long enough (or the node is too young).
    Waiting {
        until: Timestamp,
        why: String,
    },
    /// Actionable, but a gate holds the repair back.
    Held {
        why: String,
    },
    /// Start a step: the first of a repair or the next after a failed one.
    Repair {
        action: Action,
        attempt: u32,
        reason: String,
        actionable_since: Timestamp,
        cordon: bool,
    },
    /// A step is under way; look again at `until`.
    InProgress {
        action: Action,
        until: Timestamp,
    },
    /// The node is healthy again after the step in `record`.
    Recovered {
        record: RepairRecord,
    },
    /// The step in progress did not bring the node back in time.
    Failed {
        record: RepairRecord,
        why: String,
    },
    /// A failed repair: left alone until an operator clears the annotation.
    GaveUp {
        why: String,
    },
}

impl Decision {
    /// Whether carrying out this decision writes to the node or the cloud.
    pub fn acts(&self) -> bool {
        matches!(self, Decision::Repair { .. } | Decision::Recovered { .. } | Decision::Failed { .. })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodePlan {
    pub name: String,
    pub role: Role,
    pub decision: Decision,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    pub nodes: Vec<NodePlan>,
    /// The earliest instant at which a decision can change without any new event.
    pub wake_at: Option<Timestamp>,
}

pub fn add(t: Timestamp, d: Duration) -> Timestamp {
    t.checked_add(SignedDuration::try_from(d).unwrap_or(SignedDuration::MAX)).unwrap_or(Timestamp::MAX)
}

pub fn plan(input: &Input) -> Plan {
    let mut out = Plan::default();
    for node in input.nodes {
        let decision = decide(input, node);
        if let Decision::Waiting { until, .. } | Decision::InProgress { until, .. } = &decision {
            out.wake_at = Some(out.wake_at.map_or(*until, |w| w.min(*until)));
        }
        out.nodes.push(NodePlan { name: node.name.clone(), role: node.role, decision });
    }
    out
}

fn next_step(input: &Input, role: Role, after: Option<Action>) -> Option<Action> {
    let steps = input.policy.steps(role);
    let start = match after {
        None => 0,
        Some(a) => steps.iter().position(|s| *s == a).map_or(steps.len(), |i| i + 1),
    };
    steps[start..].iter().copied().find(|a| input.supported.contains(&(role, *a)))
}

/// The gates that hold back a new step, in the order DESIGN.md gives them.
fn held(input: &Input) -> Option<String> {
    if !input.leader {
        return Some("this replica is not the leader".into());
    }
    if let RepairGate::Denied(why) = input.gate {
        return Some(format!("the cloud provider does not allow repairs now: {why}"));
    }
    None
}

fn decide(input: &Input, node: &NodeState) -> Decision {
    let now = input.now;
    let policy = input.policy;
    match &node.ledger {
        Ledger::Unreadable(why) => {
            return Decision::Held { why: format!("{why}; fix or remove it to let the healer act") };
        }
        Ledger::Record(r) => return decide_in_progress(input, node, r),
        Ledger::None => {}
    }
    if !policy.enabled(node.role) {
        return Decision::NotMonitored;
    }
    let remediate = node.remediate.then(|| Finding {
        check: "remediate".into(),
        since: now,
        unhealthy_duration: Duration::ZERO,
        reason: "a repair was requested with autohealer.dev/remediate".into(),
    });
    let Some(worst) = node.findings.iter().chain(remediate.as_ref()).min_by_key(|f| f.actionable_at()) else {
        return Decision::Healthy;
    };
    if node.skip {
        return Decision::Held { why: format!("{}; excluded by autohealer.dev/skip", worst.reason) };
    }
    if let Some(created) = node.created {
        let old_enough = add(created, policy.check_delay_after_add);
        if now < old_enough && !node.remediate {
            return Decision::Waiting { until: old_enough, why: format!("{}; node is younger than check-delay-after-add", worst.reason) };
        }
    }
    let at = worst.actionable_at();
    if now < at {
        return Decision::Waiting { until: at, why: format!("{} (check {}, since {})", worst.reason, worst.check, worst.since) };
    }
    if let Some(why) = held(input) {
        return Decision::Held { why: format!("{}; {why}", worst.reason) };
    }
    match next_step(input, node.role, None) {
        Some(action) => {
            Decision::Repair { action, attempt: 1, reason: worst.reason.clone(), actionable_since: at, cordon: node.role == Role::Worker }
        }
        None => Decision::Held { why: format!("{}; the provider supports no repair for {} nodes", worst.reason, node.role) },
    }
}

fn decide_in_progress(input: &Input, node: &NodeState, r: &RepairRecord) -> Decision {
    let now = input.now;
    if let Some(why) = &r.failed {
        return Decision::GaveUp { why: format!("{} failed: {why}; remove the annotation autohealer.dev/repair to retry", r.action) };
    }
    let healthy = node.findings.is_empty();
    let rebooted = match (&r.boot_id, &node.boot_id) {
        (Some(before), Some(now_id)) => before != now_id,
        // Without a boot id to compare, a healthy node is taken at its word.
        _ => true,
    };
    let deadline = match r.action {
        Action::Reboot => add(r.started, input.policy.rebuild_delay_after_reboot),
        Action::Replace => add(r.started, input.policy.replace_timeout),
    };
    if healthy && (rebooted || now >= deadline) {
        return Decision::Recovered { record: r.clone() };
    }
    if now < deadline {
        return Decision::InProgress { action: r.action, until: deadline };
    }
    let reason = node.findings.first().map_or_else(|| r.reason.clone(), |f| f.reason.clone());
    match next_step(input, node.role, Some(r.action)) {
        Some(action) => match held(input) {
            Some(why) => Decision::Held { why: format!("{} did not recover the node; {why}", r.action) },
            None => Decision::Repair { action, attempt: r.attempt + 1, reason, actionable_since: deadline, cordon: false },
        },
        None => Decision::Failed {
            record: r.clone(),
            why: format!(
                "{} did not recover the node within {}; no further step is available for {} nodes",
                r.action,
                humantime::format_duration(deadline.duration_since(r.started).unsigned_abs()),
                node.role
            ),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Timestamp {
        format!("2026-01-01T{s}Z").parse().unwrap()
    }

    fn all_supported() -> BTreeSet<(Role, Action)> {
        [Role::Master, Role::Worker].into_iter().flat_map(|r| [(r, Action::Reboot), (r, Action::Replace)]).collect()
    }

    fn worker(findings: Vec<Finding>) -> NodeState {
        NodeState {
            name: "w1".into(),
            role: Role::Worker,
            created: Some(t("00:00:00")),
            boot_id: Some("b1".into()),
            findings,
            ledger: Ledger::None,
            skip: false,
            remediate: false,
        }
    }

    fn not_ready(since: &str) -> Finding {
        Finding {
            check: "NodeCondition".into(),
            since: t(since),
            unhealthy_duration: Duration::from_secs(60),
            reason: "condition Ready is False".into(),
        }
    }

    fn run(nodes: &[NodeState], now: &str, leader: bool, gate: RepairGate) -> Plan {
        let policy = Policy { check_delay_after_add: Duration::from_secs(600), ..Default::default() };
        let supported = all_supported();
        plan(&Input { nodes, leader, gate: &gate, supported: &supported, policy: &policy, now: t(now) })
    }

    #[test]
    fn actionable_exactly_when_the_duration_expires() {
        let nodes = [worker(vec![not_ready("01:00:00")])];
        let p = run(&nodes, "01:00:59", true, RepairGate::Allowed);
        assert!(matches!(p.nodes[0].decision, Decision::Waiting { .. }));
        assert_eq!(p.wake_at, Some(t("01:01:00")));
        let p = run(&nodes, "01:01:00", true, RepairGate::Allowed);
        assert!(matches!(p.nodes[0].decision, Decision::Repair { action: Action::Reboot, attempt: 1, cordon: true, .. }), "{p:?}");
        assert_eq!(p.wake_at, None);
    }

    #[test]
    fn young_nodes_wait_for_check_delay_after_add() {
        let nodes = [worker(vec![not_ready("00:00:00")])];
        let p = run(&nodes, "00:05:00", true, RepairGate::Allowed);
        assert!(matches!(&p.nodes[0].decision, Decision::Waiting { why, .. } if why.contains("check-delay-after-add")));
        assert_eq!(p.wake_at, Some(t("00:10:00")));
    }

    #[test]
    fn gates_hold_repairs() {
        let nodes = [worker(vec![not_ready("01:00:00")])];
        let p = run(&nodes, "02:00:00", false, RepairGate::Allowed);
        assert!(matches!(&p.nodes[0].decision, Decision::Held { why } if why.contains("not the leader")));
        let p = run(&nodes, "02:00:00", true, RepairGate::Denied("auto_healing_enabled is false".into()));
        assert!(matches!(&p.nodes[0].decision, Decision::Held { why } if why.contains("auto_healing_enabled")));
        let mut skipped = nodes.clone();
        skipped[0].skip = true;
        let p = run(&skipped, "02:00:00", true, RepairGate::Allowed);
        assert!(matches!(&p.nodes[0].decision, Decision::Held { why } if why.contains("autohealer.dev/skip")));
        let policy = Policy { worker_enabled: false, ..Default::default() };
        let supported = all_supported();
        let p = plan(&Input {
            nodes: &nodes,
            leader: true,
            gate: &RepairGate::Allowed,
            supported: &supported,
            policy: &policy,
            now: t("02:00:00"),
        });
        assert_eq!(p.nodes[0].decision, Decision::NotMonitored);
    }

    #[test]
    fn remediate_annotation_repairs_a_healthy_node_now() {
        let mut n = worker(vec![]);
        n.remediate = true;
        let p = run(&[n], "00:01:00", true, RepairGate::Allowed);
        assert!(matches!(&p.nodes[0].decision, Decision::Repair { reason, .. } if reason.contains("remediate")));
    }

    fn record(action: Action, started: &str) -> RepairRecord {
        RepairRecord {
            action,
            attempt: 1,
            started: t(started),
            first_started: t(started),
            reason: "x".into(),
            boot_id: Some("b1".into()),
            server_id: None,
            cordoned: true,
            failed: None,
            by: "a".into(),
        }
    }

    #[test]
    fn reboot_is_verified_by_boot_id_then_escalated_to_replace() {
        let mut n = worker(vec![not_ready("01:00:00")]);
        n.ledger = Ledger::Record(record(Action::Reboot, "01:01:00"));
        // Still unhealthy before the rebuild delay: wait, even through flaps.
        let p = run(std::slice::from_ref(&n), "01:03:00", true, RepairGate::Allowed);
        assert_eq!(p.nodes[0].decision, Decision::InProgress { action: Action::Reboot, until: t("01:06:00") });
        // Healthy again but the same boot: the reboot has not happened yet.
        let mut same_boot = n.clone();
        same_boot.findings.clear();
        let p = run(std::slice::from_ref(&same_boot), "01:02:00", true, RepairGate::Allowed);
        assert!(matches!(p.nodes[0].decision, Decision::InProgress { .. }));
        same_boot.boot_id = Some("b2".into());
        let p = run(&[same_boot], "01:02:00", true, RepairGate::Allowed);
        assert!(matches!(p.nodes[0].decision, Decision::Recovered { .. }));
        // Still broken at the deadline: the next step.
        let p = run(std::slice::from_ref(&n), "01:06:00", true, RepairGate::Allowed);
        assert!(matches!(p.nodes[0].decision, Decision::Repair { action: Action::Replace, attempt: 2, cordon: false, .. }), "{p:?}");
    }

    #[test]
    fn replace_times_out_into_failure_and_then_gives_up() {
        let mut n = worker(vec![not_ready("01:00:00")]);
        n.ledger = Ledger::Record(record(Action::Replace, "01:00:00"));
        let p = run(std::slice::from_ref(&n), "01:30:00", true, RepairGate::Allowed);
        assert!(matches!(p.nodes[0].decision, Decision::Failed { .. }));
        let mut failed = record(Action::Replace, "01:00:00");
        failed.failed = Some("timed out".into());
        n.ledger = Ledger::Record(failed);
        let p = run(&[n], "02:00:00", true, RepairGate::Allowed);
        assert!(matches!(p.nodes[0].decision, Decision::GaveUp { .. }));
    }

    #[test]
    fn unreadable_ledger_is_never_acted_on() {
        let mut n = worker(vec![not_ready("01:00:00")]);
        n.ledger = Ledger::Unreadable("garbage".into());
        let p = run(&[n], "05:00:00", true, RepairGate::Allowed);
        assert!(matches!(p.nodes[0].decision, Decision::Held { .. }));
    }

    #[test]
    fn unsupported_steps_are_skipped() {
        let nodes = [worker(vec![not_ready("01:00:00")])];
        let policy = Policy::default();
        let supported: BTreeSet<_> = [(Role::Worker, Action::Replace)].into();
        let p = plan(&Input {
            nodes: &nodes,
            leader: true,
            gate: &RepairGate::Allowed,
            supported: &supported,
            policy: &policy,
            now: t("02:00:00"),
        });
        assert!(matches!(p.nodes[0].decision, Decision::Repair { action: Action::Replace, .. }));
    }
}
