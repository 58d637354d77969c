//! The planner: a pure function of (nodes, findings, ledger, policy, now) to one
//! decision per node and the next instant it needs to look again. No I/O, no clock:
//! everything it knows is in [`Input`], so every gate is tested at exact instants.

use crate::ledger::{HistoryEntry, Ledger, RepairRecord};
use autohealer_cloud::{Action, RepairGate, Role};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

/// A limit written as a count (`3`) or a share of the nodes (`40%`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Threshold {
    Count(usize),
    Percent(f64),
}

impl Threshold {
    /// The most unhealthy nodes out of `total` that stay within the limit. A share
    /// always allows one node: a single failure is never a storm, however small the pool.
    pub fn limit(self, total: usize) -> usize {
        match self {
            Threshold::Count(n) => n,
            Threshold::Percent(p) => (((total as f64) * p / 100.0).floor() as usize).max(1),
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        let s = s.trim();
        match s.strip_suffix('%') {
            Some(p) => p.trim().parse::<f64>().ok().filter(|p| (0.0..=100.0).contains(p)).map(Threshold::Percent),
            None => s.parse().ok().map(Threshold::Count),
        }
    }
}

impl fmt::Display for Threshold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Threshold::Count(n) => write!(f, "{n}"),
            Threshold::Percent(p) => write!(f, "{p}%"),
        }
    }
}

/// The limits that keep a storm or a partition from becoming a repair storm.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// Above this many unhealthy nodes of the role, no new repair of that role.
    pub master_max_unhealthy: Threshold,
    pub worker_max_unhealthy: Threshold,
    /// Above this share of unhealthy nodes in one zone (and at least two), no new
    /// repair in that zone: a zone outage is not a node fault.
    pub zone_max_unhealthy: Threshold,
    /// After a short-circuit clears, how long before new repairs in its scope.
    pub storm_cooldown: Duration,
    /// Repairs in flight at once, per role.
    pub master_concurrency: usize,
    pub worker_concurrency: usize,
    /// New repairs started in any hour, all roles together.
    pub repairs_per_hour: usize,
    /// Failed repairs of one node within `node_cooldown` after which it is left alone.
    pub node_max_failures: usize,
    pub node_cooldown: Duration,
    /// How long after a failed repair before the next attempt.
    pub retry_delay: Duration,
    /// How long a repaired node must stay healthy before the repair counts as done.
    pub stable_window: Duration,
    /// How many times a pending step's call is tried (with a growing delay) before the
    /// machine it took out of service is restored instead.
    pub max_stalls: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            master_max_unhealthy: Threshold::Count(1),
            worker_max_unhealthy: Threshold::Percent(40.0),
            zone_max_unhealthy: Threshold::Percent(50.0),
            storm_cooldown: Duration::from_secs(300),
            master_concurrency: 1,
            worker_concurrency: 5,
            repairs_per_hour: 30,
            node_max_failures: 3,
            node_cooldown: Duration::from_secs(3600),
            retry_delay: Duration::from_secs(600),
            stable_window: Duration::from_secs(60),
            max_stalls: 5,
        }
    }
}

/// The policy knobs the planner reads, from the config.
#[derive(Debug, Clone, PartialEq)]
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
    pub limits: Limits,
    /// After the healer (and so the kubelets, through the same apiserver) could not
    /// reach the apiserver, how long nodes get to report again before a deadline that
    /// ran meanwhile is acted on, as the node-lifecycle controller does after a disruption.
    pub blind_grace: Duration,
    pub correlated: CorrelatedHold,
    pub repeated: RepeatedRepairs,
    /// Slow-start repair width: per domain (role, zone, node group) the repairs in flight
    /// start at one and double with each repair proven healthy within this memory, back to
    /// one after a failed one; `None` when off.
    pub slow_start: Option<Duration>,
    pub approval: Approval,
    pub workloads: WorkloadCheck,
}

/// Workload-verified recovery: a node is repaired when its workloads run again, not
/// only when its checks pass.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkloadCheck {
    pub master: bool,
    pub worker: bool,
    /// How long a repaired node must be healthy before its pods are looked at: they need
    /// time to start and to crash again.
    pub window: Duration,
}

impl Default for WorkloadCheck {
    fn default() -> Self {
        Self { master: false, worker: false, window: Duration::from_secs(300) }
    }
}

impl WorkloadCheck {
    pub fn applies(&self, role: Role) -> bool {
        match role {
            Role::Master => self.master,
            Role::Worker => self.worker,
        }
    }
}

/// The steps an operator approves before the healer takes them, per role.
#[derive(Debug, Clone, PartialEq)]
pub struct Approval {
    pub master: Vec<Action>,
    pub worker: Vec<Action>,
    /// A proposal not answered within this long expires; a new one is made.
    pub expiry: Duration,
}

impl Default for Approval {
    fn default() -> Self {
        Self { master: vec![], worker: vec![], expiry: Duration::from_secs(24 * 3600) }
    }
}

impl Approval {
    fn needed(&self, role: Role, action: Action) -> bool {
        match role {
            Role::Master => &self.master,
            Role::Worker => &self.worker,
        }
        .contains(&action)
    }
}

/// A proposal's id: the node, the step and the failure it answers, and which expiry
/// period it belongs to, so an answer approves that proposal and no other.
pub fn proposal_id(uid: &str, action: Action, attempt: u32, since: Timestamp, period: u64) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in format!("{uid}/{action}/{attempt}/{}/{period}", since.as_second()).bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{:012x}", h & 0xffff_ffff_ffff)
}

/// When failing nodes share a value of an attribute far more than the fleet does, new
/// repairs of the nodes with that value are held: a bad rollout makes new and old nodes
/// fail one after the other, and replacing them in turn only fails again.
#[derive(Debug, Clone, PartialEq)]
pub struct CorrelatedHold {
    pub enabled: bool,
    /// At least this many failing nodes (within `window`) must share the value.
    pub min_nodes: usize,
    /// A node counts as failing if a check fails now or it failed within this window.
    pub window: Duration,
    /// The value is rare among healthy nodes: at most this share of them (0.0 to 1.0).
    pub max_healthy_share: f64,
}

impl Default for CorrelatedHold {
    fn default() -> Self {
        Self { enabled: true, min_nodes: 3, window: Duration::from_secs(3600), max_healthy_share: 0.2 }
    }
}

/// A node repaired successfully more than `max` times within `window` has a problem no
/// repair fixes (hardware, a bad disk): it is left to a human.
#[derive(Debug, Clone, PartialEq)]
pub struct RepeatedRepairs {
    pub max: usize,
    pub window: Duration,
}

impl Default for RepeatedRepairs {
    fn default() -> Self {
        Self { max: 3, window: Duration::from_secs(7 * 24 * 3600) }
    }
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
            limits: Limits::default(),
            blind_grace: Duration::from_secs(60),
            correlated: CorrelatedHold::default(),
            repeated: RepeatedRepairs::default(),
            slow_start: None,
            approval: Approval::default(),
            workloads: WorkloadCheck::default(),
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

    fn max_unhealthy(&self, role: Role) -> Threshold {
        match role {
            Role::Master => self.limits.master_max_unhealthy,
            Role::Worker => self.limits.worker_max_unhealthy,
        }
    }

    fn concurrency(&self, role: Role) -> usize {
        match role {
            Role::Master => self.limits.master_concurrency,
            Role::Worker => self.limits.worker_concurrency,
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
    /// The repair steps this finding calls for, when its check (or a rule matching its
    /// reason) names its own instead of the role's `repair-steps`.
    pub steps: Option<Vec<Action>>,
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
    /// The Node object's uid: a node deleted and recreated under its name is another node.
    pub uid: String,
    pub role: Role,
    pub zone: Option<String>,
    pub created: Option<Timestamp>,
    pub boot_id: Option<String>,
    /// Unhealthy findings only; an empty list means every check passed.
    pub findings: Vec<Finding>,
    /// Findings of notify-only checks: told, never repaired, not counted by any gate.
    pub alerts: Vec<Finding>,
    /// Since when every check has passed without a break, as observed.
    pub healthy_since: Option<Timestamp>,
    pub ledger: Ledger,
    pub history: Vec<HistoryEntry>,
    /// `autohealer.dev/skip`.
    pub skip: bool,
    /// `autohealer.dev/remediate`.
    pub remediate: bool,
    /// Why the node is going away (being deleted, removed by cluster-autoscaler), if it is.
    pub removing: Option<String>,
    /// What the correlated-failure hold compares: (attribute, value) pairs.
    pub attributes: Vec<(String, String)>,
    /// `autohealer.dev/approve` and `autohealer.dev/deny`: proposal ids.
    pub approve: Option<String>,
    pub deny: Option<String>,
}

impl NodeState {
    fn in_repair(&self) -> bool {
        matches!(&self.ledger, Ledger::Record(r) if r.failed.is_none())
    }

    /// A repair of the healer's own under way: it takes a concurrency slot. One handed
    /// to the cloud's remediation does not.
    fn holds_slot(&self) -> bool {
        matches!(&self.ledger, Ledger::Record(r) if r.failed.is_none() && r.delegated.is_none())
    }

    /// Failing a check (whether or not for long enough yet), or being repaired. Counting
    /// problems before they are actionable is what catches a partition: its nodes fail
    /// within moments of each other, and the first to become actionable must already
    /// see the others.
    /// A node asked to be repaired by hand counts too: its repair takes it out of
    /// service like any other, so quorum is never touched, by hand or not.
    pub fn counts_unhealthy(&self) -> bool {
        self.in_repair() || !self.findings.is_empty() || (self.remediate && matches!(self.ledger, Ledger::None))
    }
}

/// Where a short-circuit holds repairs back.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    Role(Role),
    /// A zone, all roles together: an outage takes masters and workers alike.
    Zone(String),
    /// The nodes sharing a value of an attribute that the failing ones share far more
    /// than the fleet does: a rollout (a kernel, an image), not node faults.
    Cohort {
        attribute: String,
        value: String,
    },
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::Role(r) => write!(f, "{r} nodes"),
            Scope::Zone(z) => write!(f, "nodes in zone {z}"),
            Scope::Cohort { attribute, value } => write!(f, "nodes with {attribute}={value}"),
        }
    }
}

/// The fleet's nodes that the planner is not given one by one ([`plain`] ones), as
/// what the gates read of them: how many per role and zone, and per attribute value of
/// the workers (the correlated-failure hold compares the failing nodes against them).
/// Each would be decided `Healthy`, so at 65,000 nodes planning them one by one is
/// nearly all of an evaluation's time and memory; [`crate::observe::Judged`] keeps this
/// as nodes change, so an evaluation costs what changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rest {
    /// Per zone (`None`: no zone label), with no empty entry, so two are equal exactly
    /// when they count the same nodes.
    zones: BTreeMap<Option<String>, Part>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Part {
    masters: usize,
    workers: usize,
    /// Workers per attribute and value.
    values: BTreeMap<String, BTreeMap<String, usize>>,
}

impl Rest {
    pub fn add(&mut self, n: &NodeState) {
        let part = match self.zones.get_mut(&n.zone) {
            Some(p) => p,
            None => self.zones.entry(n.zone.clone()).or_default(),
        };
        if n.role == Role::Master {
            part.masters += 1;
            return;
        }
        part.workers += 1;
        for (k, v) in &n.attributes {
            let values = match part.values.get_mut(k.as_str()) {
                Some(m) => m,
                None => part.values.entry(k.clone()).or_default(),
            };
            match values.get_mut(v.as_str()) {
                Some(c) => *c += 1,
                None => {
                    values.insert(v.clone(), 1);
                }
            }
        }
    }

    /// Takes out a node [`Rest::add`] counted, by the role, zone and attributes its
    /// state had.
    pub fn remove(&mut self, role: Role, zone: Option<&str>, attributes: &[(String, String)]) {
        let zone = zone.map(String::from);
        let Some(part) = self.zones.get_mut(&zone) else { return };
        if role == Role::Master {
            part.masters = part.masters.saturating_sub(1);
        } else {
            part.workers = part.workers.saturating_sub(1);
            for (k, v) in attributes {
                if let Some(values) = part.values.get_mut(k.as_str()) {
                    if let Some(c) = values.get_mut(v.as_str()) {
                        *c = c.saturating_sub(1);
                        if *c == 0 {
                            values.remove(v.as_str());
                        }
                    }
                    if values.is_empty() {
                        part.values.remove(k.as_str());
                    }
                }
            }
        }
        if part.masters == 0 && part.workers == 0 {
            self.zones.remove(&zone);
        }
    }

    pub fn len(&self) -> usize {
        self.zones.values().map(|p| p.masters + p.workers).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.zones.is_empty()
    }

    pub fn of_role(&self, role: Role) -> usize {
        self.zones.values().map(|p| if role == Role::Master { p.masters } else { p.workers }).sum()
    }

    fn zones(&self) -> impl Iterator<Item = (&str, usize)> {
        self.zones.iter().filter_map(|(z, p)| z.as_deref().map(|z| (z, p.masters + p.workers)))
    }

    fn outside<'a>(&'a self, held: &'a BTreeSet<&str>) -> impl Iterator<Item = &'a Part> {
        self.zones.iter().filter(|(z, _)| !z.as_deref().is_some_and(|z| held.contains(z))).map(|(_, p)| p)
    }

    fn workers_outside(&self, held: &BTreeSet<&str>) -> usize {
        self.outside(held).map(|p| p.workers).sum()
    }

    fn workers_with(&self, attribute: &str, value: &str, held: &BTreeSet<&str>) -> usize {
        self.outside(held).filter_map(|p| p.values.get(attribute).and_then(|m| m.get(value))).sum()
    }
}

/// Whether the node may be left out of [`Input::nodes`] and counted in [`Rest`]: it is
/// decided `Healthy` (or `NotMonitored`), and nothing of it but its role, zone and
/// attributes reaches another node's decision. Every condition only grows truer as
/// time goes on (a node ages; its history leaves the windows), so a node plain now stays
/// plain until it changes. A node whose uid the fleet's recent starts or
/// [`Input::starting`] name is not: the caller keeps those in `nodes`.
pub fn plain(n: &NodeState, policy: &Policy, now: Timestamp) -> bool {
    let young = n.created.is_some_and(|t| now < add(t, policy.check_delay_after_add));
    // The windows in which a gate counts a past repair: the hourly rate, the
    // correlated hold, slow start's memory.
    let counted_after = sub(now, HOUR.max(policy.correlated.window));
    let remembered_after = policy.slow_start.map(|m| sub(now, m));
    matches!(n.ledger, Ledger::None)
        && n.findings.is_empty()
        && n.alerts.is_empty()
        && !n.remediate
        && n.removing.is_none()
        && !young
        && n.history.iter().all(|h| h.held || (h.started <= counted_after && remembered_after.is_none_or(|m| h.ended < m)))
}

/// Splits a fleet into the nodes to decide one by one and the [`Rest`]: what
/// [`crate::observe::Judged`] keeps as nodes change, done at once (for tools and tests).
/// `keep` names nodes to decide one by one although plain.
pub fn split(nodes: &[NodeState], policy: &Policy, now: Timestamp, keep: impl Fn(&NodeState) -> bool) -> (Vec<NodeState>, Rest) {
    let mut rest = Rest::default();
    let mut kept = Vec::new();
    for n in nodes {
        if plain(n, policy, now) && !keep(n) {
            rest.add(n);
        } else {
            kept.push(n.clone());
        }
    }
    (kept, rest)
}

/// Whether repairs are paused, as read from the healer's ConfigMap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pause {
    /// Not read yet, or its watch fails: new repairs wait, since the healer never
    /// repairs when unsure (an upgrade may have paused it).
    Unknown,
    Paused,
    Running,
}

pub struct Input<'a> {
    /// The nodes decided one by one: every node but those counted in `rest`.
    pub nodes: &'a [NodeState],
    /// The fleet's [`plain`] nodes left out of `nodes`, as counts.
    pub rest: &'a Rest,
    pub leader: bool,
    pub pause: Pause,
    pub gate: &'a RepairGate,
    /// The (role, action) pairs the provider supports.
    pub supported: &'a BTreeSet<(Role, Action)>,
    /// The (role, action) pairs the cloud performs itself, and who: instead of failing
    /// a repair when such a step comes, the healer hands the node over.
    pub delegated: &'a BTreeMap<(Role, Action), String>,
    pub policy: &'a Policy,
    /// Scopes whose short-circuit cleared recently: no new repair there until then.
    pub cooldowns: &'a BTreeMap<Scope, Timestamp>,
    /// When repairs began, cluster-wide, with the node's uid, as kept beyond the nodes (a
    /// replaced node takes its history with it): those of nodes no longer here count
    /// with the nodes' own for `repairs-per-hour`.
    pub recent_starts: &'a [(String, Timestamp)],
    /// Why new repairs must wait although nothing holds them (the fleet state is not
    /// read yet): the healer never repairs when unsure.
    pub unsure: Option<&'a str>,
    /// Nodes (by uid) whose new repair was handed to a task whose first write the
    /// nodes do not show yet: they hold a concurrency slot and a start of the hour
    /// already, so the next evaluation does not hand them out again.
    pub starting: &'a BTreeSet<String>,
    /// Until when deadlines that ran while the healer was blind wait (see
    /// [`Policy::blind_grace`]); `None` when it saw the apiserver all along.
    pub blind_until: Option<Timestamp>,
    pub now: Timestamp,
}

/// Which gate holds a repair back, for metrics and Events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Gate {
    Unreadable,
    Skip,
    Leader,
    Paused,
    Provider,
    MaxUnhealthy,
    Zone,
    StormCooldown,
    RetryBudget,
    Concurrency,
    Rate,
    Unsupported,
    Removing,
    Correlated,
    RepeatedRepairs,
    SlowStart,
    Approval,
}

impl Gate {
    pub fn as_str(self) -> &'static str {
        match self {
            Gate::Unreadable => "unreadable_ledger",
            Gate::Skip => "skip",
            Gate::Leader => "not_leader",
            Gate::Paused => "paused",
            Gate::Provider => "provider",
            Gate::MaxUnhealthy => "max_unhealthy",
            Gate::Zone => "zone",
            Gate::StormCooldown => "storm_cooldown",
            Gate::RetryBudget => "retry_budget",
            Gate::Concurrency => "concurrency",
            Gate::Rate => "rate",
            Gate::Unsupported => "unsupported",
            Gate::Removing => "removing",
            Gate::Correlated => "correlated",
            Gate::RepeatedRepairs => "repeated_repairs",
            Gate::SlowStart => "slow_start",
            Gate::Approval => "approval",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Healthy,
    /// The node's role is not monitored.
    NotMonitored,
    /// Unhealthy, but not yet for long enough (or the node is too young, or a failed
    /// repair waits for its retry).
    Waiting {
        until: Timestamp,
        why: String,
    },
    /// Actionable, but a gate holds the repair back; `until` when the gate lifts by itself.
    Held {
        gate: Gate,
        why: String,
        until: Option<Timestamp>,
    },
    /// Start a step: the first of a repair or the next after one that did not help.
    Repair {
        action: Action,
        attempt: u32,
        reason: String,
        actionable_since: Timestamp,
        cordon: bool,
    },
    /// Finish a step that was begun: a drain, or the remaining calls of a multi-call
    /// step from the phase in the ledger. Behind no gate but leadership, and within the
    /// budgets it already holds: a step once begun is never dropped half-way.
    Continue {
        record: RepairRecord,
    },
    /// A pending step kept failing after it took the machine out of service: bring the
    /// machine back (start it again), then the repair fails and is retried.
    Restore {
        record: RepairRecord,
    },
    /// A step is under way; look again at `until`.
    InProgress {
        action: Action,
        until: Timestamp,
    },
    /// The node is healthy again, for the stable window, after the repair in `record`.
    Recovered {
        record: RepairRecord,
    },
    /// The step in progress did not bring the node back in time.
    Failed {
        record: RepairRecord,
        why: String,
    },
    /// The step in progress did not bring the node back, and the next step is the
    /// cloud's (`to`): the node is handed over, not failed.
    Delegate {
        record: RepairRecord,
        action: Action,
        to: String,
    },
}

impl Decision {
    /// Whether carrying out this decision writes to the node or the cloud.
    pub fn acts(&self) -> bool {
        matches!(
            self,
            Decision::Repair { .. }
                | Decision::Continue { .. }
                | Decision::Restore { .. }
                | Decision::Recovered { .. }
                | Decision::Failed { .. }
                | Decision::Delegate { .. }
        )
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
    /// The short-circuits in force now, with why.
    pub short_circuits: Vec<(Scope, String)>,
}

pub fn add(t: Timestamp, d: Duration) -> Timestamp {
    t.checked_add(SignedDuration::try_from(d).unwrap_or(SignedDuration::MAX)).unwrap_or(Timestamp::MAX)
}

pub fn sub(t: Timestamp, d: Duration) -> Timestamp {
    t.checked_sub(SignedDuration::try_from(d).unwrap_or(SignedDuration::MAX)).unwrap_or(Timestamp::MIN)
}

const HOUR: Duration = Duration::from_secs(3600);

/// The short-circuits in force: roles over `max-unhealthy`, zones over their share.
/// The loop looks at them before planning, so that the evaluation in which one clears
/// already sees its storm cooldown.
pub fn short_circuits(input: &Input) -> Vec<(Scope, String)> {
    let mut out = Vec::new();
    for role in [Role::Master, Role::Worker] {
        let of_role = input.nodes.iter().filter(|n| n.role == role).count() + input.rest.of_role(role);
        let unhealthy = input.nodes.iter().filter(|n| n.role == role && n.counts_unhealthy()).count();
        let limit = input.policy.max_unhealthy(role);
        if unhealthy > limit.limit(of_role) {
            out.push((Scope::Role(role), format!("{unhealthy} of {of_role} {role} nodes are unhealthy, above max-unhealthy {limit}")));
        }
    }
    let mut zones: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    for n in input.nodes {
        if let Some(z) = &n.zone {
            let e = zones.entry(z.as_str()).or_default();
            e.0 += 1;
            e.1 += usize::from(n.counts_unhealthy());
        }
    }
    for (z, count) in input.rest.zones() {
        zones.entry(z).or_default().0 += count;
    }
    let mut zones_held: BTreeSet<&str> = BTreeSet::new();
    if zones.len() >= 2 {
        let zl = input.policy.limits.zone_max_unhealthy;
        for (zone, (total, bad)) in zones {
            if bad >= 2 && bad > zl.limit(total) {
                zones_held.insert(zone);
                out.push((
                    Scope::Zone(zone.to_string()),
                    format!("{bad} of {total} nodes in zone {zone} are unhealthy, above {zl}: a zone outage is not a node fault"),
                ));
            }
        }
    }
    // Under a short-circuit of all workers every new repair is held already.
    if !out.iter().any(|(s, _)| *s == Scope::Role(Role::Worker)) {
        out.extend(cohorts(input, &zones_held));
    }
    out
}

/// Whether the node failed recently enough to count for the correlated-failure hold: a
/// check fails now, a repair of it is under way, or one began within the window. A
/// failure a short-circuit held (a zone outage) and that passed by itself is not one:
/// it would dilute the share a rollout's failures have.
fn failed_recently(n: &NodeState, since: Timestamp) -> bool {
    let current = match &n.ledger {
        Ledger::Record(r) => Some(r.first_started),
        _ => None,
    };
    !n.findings.is_empty() || current.is_some_and(|t| t > since) || n.history.iter().any(|h| !h.held && h.started > since)
}

/// When a correlated hold may lift with no node changing: the first instant a worker
/// that counts as failing only for a repair within the window (it is healthy now) stops
/// counting. Without it the held nodes would wait for an unrelated change to be seen.
fn cohorts_change_at(input: &Input) -> Option<Timestamp> {
    let window = input.policy.correlated.window;
    let since = sub(input.now, window);
    input
        .nodes
        .iter()
        .filter(|n| n.role == Role::Worker && n.findings.is_empty())
        .filter_map(|n| {
            let current = match &n.ledger {
                Ledger::Record(r) => Some(r.first_started),
                _ => None,
            };
            n.history.iter().filter(|h| !h.held).map(|h| h.started).chain(current).filter(|t| *t > since).max()
        })
        .map(|latest| add(latest, window))
        .filter(|t| *t > input.now)
        .min()
}

/// The cohorts to hold: a value of an attribute that at least `min-nodes` failing nodes,
/// and most of them, share, and that at most `max-healthy-share` of the healthy nodes
/// have. A fleet where every node has the value (one kernel everywhere) holds nothing.
fn cohorts(input: &Input, zones_held: &BTreeSet<&str>) -> Vec<(Scope, String)> {
    let c = &input.policy.correlated;
    if !c.enabled {
        return Vec::new();
    }
    let since = sub(input.now, c.window);
    // Workers only (masters are repaired one at a time by their own limit), and neither
    // nodes going away or still joining nor those a zone outage holds: they say nothing
    // of a rollout.
    let young = |n: &NodeState| n.created.is_some_and(|t| input.now < add(t, input.policy.check_delay_after_add));
    let considered = input.nodes.iter().filter(|n| {
        n.role == Role::Worker && n.removing.is_none() && !young(n) && !n.zone.as_deref().is_some_and(|z| zones_held.contains(z))
    });
    let (failing, healthy): (Vec<&NodeState>, Vec<&NodeState>) = considered.partition(|n| failed_recently(n, since));
    let healthy_total = healthy.len() + input.rest.workers_outside(zones_held);
    if failing.len() < c.min_nodes.max(1) || healthy_total == 0 {
        return Vec::new();
    }
    let mut shared: BTreeMap<(&str, &str), Vec<&str>> = BTreeMap::new();
    for n in &failing {
        for (k, v) in &n.attributes {
            shared.entry((k.as_str(), v.as_str())).or_default().push(n.name.as_str());
        }
    }
    // Values shared by the very same failing nodes (a rollout changes the kernel and the
    // OS image together) are one finding: one hold message, one notification.
    let mut found: BTreeMap<Vec<&str>, Vec<(&str, &str, usize)>> = BTreeMap::new();
    for ((attribute, value), names) in shared {
        if names.len() < c.min_nodes || names.len() * 2 < failing.len() {
            continue;
        }
        let healthy_with = healthy.iter().filter(|n| n.attributes.iter().any(|(k, v)| k == attribute && v == value)).count()
            + input.rest.workers_with(attribute, value, zones_held);
        if healthy_with as f64 > c.max_healthy_share * healthy_total as f64 {
            continue;
        }
        found.entry(names).or_default().push((attribute, value, healthy_with));
    }
    let mut out = Vec::new();
    for (names, values) in found {
        let mut listed = names.iter().take(10).copied().collect::<Vec<_>>().join(", ");
        if names.len() > 10 {
            listed.push_str(&format!(" and {} more", names.len() - 10));
        }
        let shared = values.iter().map(|(a, v, _)| format!("{a}={v}")).collect::<Vec<_>>().join(" and ");
        let healthy_with = values.iter().map(|(_, _, h)| h.to_string()).collect::<Vec<_>>().join(" / ");
        let why = format!(
            "correlated failures: {shared} {} shared by {} of {} failing workers ({listed}) and by {healthy_with} of {} healthy ones: a rollout is not a node fault",
            if values.len() > 1 { "are" } else { "is" },
            names.len(),
            failing.len(),
            healthy_total
        );
        for (attribute, value, _) in values {
            out.push((Scope::Cohort { attribute: attribute.to_string(), value: value.to_string() }, why.clone()));
        }
    }
    out
}

pub fn plan(input: &Input) -> Plan {
    let mut out = Plan { short_circuits: short_circuits(input), ..Default::default() };
    let mut decisions: Vec<Decision> = input.nodes.iter().map(|n| decide(input, n, &out.short_circuits)).collect();
    // A step that needs approval waits for it here, after every other gate of the node
    // and before the shared budgets, which a proposal does not take.
    for (node, d) in input.nodes.iter().zip(decisions.iter_mut()) {
        if let Some(held) = awaiting_approval(input, node, d) {
            *d = held;
        }
    }

    // Budgets are shared: hand them out to the candidates that became actionable first.
    let now = input.now;
    let hour_ago = sub(now, HOUR);
    // One start per node and instant: a repair's record and its history entry name
    // the same start, while two nodes whose repairs began in one evaluation are two.
    let mut pairs: Vec<(&str, Timestamp)> = input
        .nodes
        .iter()
        .flat_map(|n| {
            let current = match &n.ledger {
                Ledger::Record(r) => Some(r.first_started),
                _ => None,
            };
            n.history.iter().filter(|h| !h.held).map(|h| h.started).chain(current).map(|t| (n.uid.as_str(), t))
        })
        .chain(gone_starts(input))
        .chain(input.nodes.iter().filter(|n| !n.in_repair() && input.starting.contains(&n.uid)).map(|n| (n.uid.as_str(), now)))
        .filter(|(_, t)| *t > hour_ago)
        .collect();
    pairs.sort();
    pairs.dedup();
    let mut starts: Vec<Timestamp> = pairs.into_iter().map(|(_, t)| t).collect();
    starts.sort();
    let mut in_flight: BTreeMap<Role, usize> = BTreeMap::new();
    let mut in_domain: BTreeMap<String, usize> = BTreeMap::new();
    // A worker repair a gate holds with no step under way (its next step waits behind a
    // short-circuit, say) is not in flight: it must not starve repairs outside the hold.
    // A master's always is: never two masters at once.
    for (n, d) in input.nodes.iter().zip(&decisions) {
        let held = n.role == Role::Worker && matches!(d, Decision::Held { .. });
        if (n.holds_slot() && !held) || input.starting.contains(&n.uid) {
            *in_flight.entry(n.role).or_default() += 1;
            *in_domain.entry(domain(n)).or_default() += 1;
        }
    }
    let widths = input.policy.slow_start.map(|memory| widths(input, memory)).unwrap_or_default();
    let mut candidates: Vec<usize> =
        (0..decisions.len()).filter(|i| matches!(decisions[*i], Decision::Repair { attempt: 1, .. })).collect();
    candidates.sort_by_key(|i| match &decisions[*i] {
        Decision::Repair { actionable_since, .. } => (*actionable_since, input.nodes[*i].name.clone()),
        _ => (Timestamp::MAX, String::new()),
    });
    for i in candidates {
        let node = &input.nodes[i];
        let reason = match &decisions[i] {
            Decision::Repair { reason, .. } => reason.clone(),
            _ => continue,
        };
        let busy = in_flight.get(&node.role).copied().unwrap_or(0);
        let max = input.policy.concurrency(node.role);
        if busy >= max {
            decisions[i] = Decision::Held {
                gate: Gate::Concurrency,
                why: format!("{reason}; {busy} {} repairs in flight, the most allowed at once", node.role),
                until: None,
            };
            continue;
        }
        if input.policy.slow_start.is_some() {
            let d = domain(node);
            let width = widths.get(&d).copied().unwrap_or(1).min(max);
            let busy = in_domain.get(&d).copied().unwrap_or(0);
            if busy >= width {
                decisions[i] = Decision::Held {
                    gate: Gate::SlowStart,
                    why: format!(
                        "{reason}; slow start: {busy} repairs in flight in {d}, its width is {width} (it doubles with each repair proven healthy, back to 1 after a failed one)"
                    ),
                    until: None,
                };
                continue;
            }
        }
        let per_hour = input.policy.limits.repairs_per_hour;
        if starts.len() >= per_hour {
            let until = starts.first().map(|t| add(*t, HOUR));
            decisions[i] = Decision::Held {
                gate: Gate::Rate,
                why: format!("{reason}; {} repairs started in the last hour, the most allowed", starts.len()),
                until,
            };
            continue;
        }
        *in_flight.entry(node.role).or_default() += 1;
        *in_domain.entry(domain(node)).or_default() += 1;
        starts.push(now);
    }

    if out.short_circuits.iter().any(|(s, _)| matches!(s, Scope::Cohort { .. })) {
        out.wake_at = cohorts_change_at(input);
    }
    for (node, decision) in input.nodes.iter().zip(decisions) {
        let until = match &decision {
            Decision::Waiting { until, .. } | Decision::InProgress { until, .. } => Some(*until),
            Decision::Held { until, .. } => *until,
            _ => None,
        };
        if let Some(u) = until {
            out.wake_at = Some(out.wake_at.map_or(u, |w| w.min(u)));
        }
        out.nodes.push(NodePlan { name: node.name.clone(), role: node.role, decision });
    }
    out
}

fn awaiting_approval(input: &Input, node: &NodeState, d: &Decision) -> Option<Decision> {
    let Decision::Repair { action, attempt, reason, actionable_since, .. } = d else { return None };
    let a = &input.policy.approval;
    if !a.needed(node.role, *action) {
        return None;
    }
    let expiry = a.expiry.max(Duration::from_secs(60));
    let age = input.now.duration_since(*actionable_since).as_secs().max(0) as u64;
    let period = age / expiry.as_secs();
    let id = proposal_id(&node.uid, *action, *attempt, *actionable_since, period);
    let until = add(*actionable_since, expiry.saturating_mul(u32::try_from(period + 1).unwrap_or(u32::MAX)));
    if node.approve.as_deref() == Some(id.as_str()) {
        return None;
    }
    let why = if node.deny.as_deref() == Some(id.as_str()) {
        format!("{reason}; proposal {id} ({action}) was denied with autohealer.dev/deny")
    } else {
        format!(
            "{reason}; proposal {id}: {action} awaits approval: kubectl annotate node {} autohealer.dev/approve={id} (or kubectl autohealer approve {}); it expires at {until}",
            node.name, node.name
        )
    };
    Some(Decision::Held { gate: Gate::Approval, why, until: Some(until) })
}

/// The domain a repair's slow-start width is kept for: role, zone and node group.
pub fn domain(n: &NodeState) -> String {
    let group = n.attributes.iter().find(|(k, _)| k == crate::node::NODEGROUP_LABEL).map_or("-", |(_, v)| v.as_str());
    format!("{}/{}/{group}", n.role, n.zone.as_deref().unwrap_or("-"))
}

/// Each domain's width, from the repairs its nodes finished within `memory`, oldest
/// first: one to begin with, doubled by each repair proven healthy (capped by the role's
/// concurrency), one again after a failed one. Read from the nodes' histories, so a new
/// leader finds the same width.
fn widths(input: &Input, memory: Duration) -> BTreeMap<String, usize> {
    let since = sub(input.now, memory);
    let mut outcomes: Vec<(Timestamp, String, Role, bool)> = input
        .nodes
        .iter()
        .flat_map(|n| {
            let d = domain(n);
            n.history.iter().filter(move |h| !h.held && h.ended >= since).map(move |h| (h.ended, d.clone(), n.role, h.succeeded))
        })
        .collect();
    outcomes.sort();
    let mut out: BTreeMap<String, usize> = BTreeMap::new();
    for (_, d, role, ok) in outcomes {
        let w = out.entry(d).or_insert(1);
        *w = if ok { w.saturating_mul(2).min(input.policy.concurrency(role).max(1)) } else { 1 };
    }
    out
}

/// The recorded starts of nodes that are gone (deleted, replaced).
fn gone_starts<'a>(input: &'a Input) -> impl Iterator<Item = (&'a str, Timestamp)> + 'a {
    let present: BTreeSet<&str> = input.nodes.iter().map(|n| n.uid.as_str()).collect();
    input.recent_starts.iter().filter(move |(uid, _)| !present.contains(uid.as_str())).map(|(uid, t)| (uid.as_str(), *t))
}

/// The next step of the role's steps, after `after`. A machine a replace may have left
/// out of service cannot be rebooted (Nova refuses a stopped server): such a retry
/// begins with a step that applies to it.
/// The steps of the node's repair: those its earliest actionable finding names, else the
/// role's.
fn steps_of<'a>(input: &'a Input, node: &'a NodeState) -> &'a [Action] {
    node.findings
        .iter()
        .filter(|f| f.steps.is_some())
        .min_by_key(|f| f.actionable_at())
        .and_then(|f| f.steps.as_deref())
        .unwrap_or_else(|| input.policy.steps(node.role))
}

fn next_step(input: &Input, node: &NodeState, after: Option<Action>, out_of_service: bool) -> Option<Action> {
    let role = node.role;
    let steps = steps_of(input, node);
    let start = match after {
        None => 0,
        Some(a) => steps.iter().position(|s| *s == a).map_or(steps.len(), |i| i + 1),
    };
    steps[start..].iter().copied().filter(|a| !(out_of_service && *a == Action::Reboot)).find(|a| input.supported.contains(&(role, *a)))
}

/// The first step after `after` in the role's steps that the cloud performs itself.
fn delegated_step(input: &Input, node: &NodeState, after: Action) -> Option<(Action, String)> {
    let role = node.role;
    let steps = steps_of(input, node);
    let start = steps.iter().position(|s| *s == after).map_or(steps.len(), |i| i + 1);
    steps[start..].iter().find_map(|a| input.delegated.get(&(role, *a)).map(|to| (*a, to.clone())))
}

/// An instant pushed past the end of a time the healer was blind.
fn after_blind(input: &Input, t: Timestamp) -> Timestamp {
    input.blind_until.map_or(t, |b| t.max(b))
}

/// The gates that hold back any step: leader, pause, the provider.
fn held(input: &Input, what: &str) -> Option<Decision> {
    let hold = |gate, why: String| Some(Decision::Held { gate, why: format!("{what}; {why}"), until: None });
    if !input.leader {
        return hold(Gate::Leader, "this replica is not the leader".into());
    }
    match input.pause {
        Pause::Paused => return hold(Gate::Paused, "repairs are paused (autohealer.dev/paused on the healer's ConfigMap)".into()),
        Pause::Unknown => {
            return hold(Gate::Paused, "whether repairs are paused is not known yet (the healer's ConfigMap is not read)".into());
        }
        Pause::Running => {}
    }
    if let Some(why) = input.unsure {
        return hold(Gate::Paused, format!("new repairs wait: {why}"));
    }
    if let RepairGate::Denied(why) = input.gate {
        return hold(Gate::Provider, format!("the cloud provider does not allow repairs now: {why}"));
    }
    None
}

/// The short-circuits and cooldowns that apply to this node.
fn storm(input: &Input, node: &NodeState, active: &[(Scope, String)], what: &str) -> Option<Decision> {
    let cohorts = node.attributes.iter().map(|(k, v)| Scope::Cohort { attribute: k.clone(), value: v.clone() });
    let scopes: Vec<Scope> = [Scope::Role(node.role)].into_iter().chain(node.zone.clone().map(Scope::Zone)).chain(cohorts).collect();
    for scope in &scopes {
        if let Some((s, why)) = active.iter().find(|(s, _)| s == scope) {
            let gate = match s {
                Scope::Zone(..) => Gate::Zone,
                Scope::Cohort { .. } => Gate::Correlated,
                Scope::Role(..) => Gate::MaxUnhealthy,
            };
            return Some(Decision::Held { gate, why: format!("{what}; short-circuit: {why}"), until: None });
        }
        if let Some(until) = input.cooldowns.get(scope).filter(|u| input.now < **u) {
            return Some(Decision::Held {
                gate: Gate::StormCooldown,
                why: format!("{what}; the short-circuit of {scope} cleared recently; storm cooldown"),
                until: Some(*until),
            });
        }
    }
    None
}

fn decide(input: &Input, node: &NodeState, active: &[(Scope, String)]) -> Decision {
    let now = input.now;
    let policy = input.policy;
    match &node.ledger {
        Ledger::Unreadable(why) => {
            return Decision::Held { gate: Gate::Unreadable, why: format!("{why}; fix or remove it to let the healer act"), until: None };
        }
        Ledger::Record(r) => return decide_in_progress(input, node, r, active),
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
        steps: None,
    });
    let Some(worst) = node.findings.iter().chain(remediate.as_ref()).min_by_key(|f| f.actionable_at()) else {
        return Decision::Healthy;
    };
    if node.skip {
        return Decision::Held { gate: Gate::Skip, why: format!("{}; excluded by autohealer.dev/skip", worst.reason), until: None };
    }
    if let Some(created) = node.created {
        let old_enough = add(created, policy.check_delay_after_add);
        if now < old_enough && !node.remediate {
            return Decision::Waiting { until: old_enough, why: format!("{}; node is younger than check-delay-after-add", worst.reason) };
        }
    }
    let at = after_blind(input, worst.actionable_at());
    if now < at {
        return Decision::Waiting { until: at, why: format!("{} (check {}, since {})", worst.reason, worst.check, worst.since) };
    }
    start(input, node, &worst.reason, at, active, 1, node.role == Role::Worker, false)
}

/// A new repair (first step), behind every gate but the shared budgets, which
/// [`plan`] applies across nodes.
#[allow(clippy::too_many_arguments)]
fn start(
    input: &Input,
    node: &NodeState,
    reason: &str,
    at: Timestamp,
    active: &[(Scope, String)],
    attempt: u32,
    cordon: bool,
    out_of_service: bool,
) -> Decision {
    // A retry of a failed repair begins here too: a node going away gets neither.
    if let Some(why) = &node.removing {
        return Decision::Held { gate: Gate::Removing, why: format!("{reason}; {why}: it is not repaired"), until: None };
    }
    if let Some(d) = held(input, reason).or_else(|| storm(input, node, active, reason)) {
        return d;
    }
    let l = &input.policy.limits;
    let rep = &input.policy.repeated;
    let since = sub(input.now, rep.window);
    let repaired: Vec<Timestamp> = node.history.iter().filter(|h| h.succeeded && !h.held && h.ended > since).map(|h| h.ended).collect();
    if rep.max > 0 && repaired.len() > rep.max {
        // It lifts when enough of them leave the window.
        let mut ends = repaired.clone();
        ends.sort();
        let until = ends.get(repaired.len() - rep.max - 1).map(|t| add(*t, rep.window));
        let repaired = repaired.len();
        return Decision::Held {
            gate: Gate::RepeatedRepairs,
            why: format!(
                "{reason}; repaired successfully {repaired} times within {}: a problem no repair fixes is left to a human (remove the autohealer.dev/repair-history annotation to let the healer act again)",
                humantime::format_duration(rep.window)
            ),
            until,
        };
    }
    let window_start = sub(input.now, l.node_cooldown);
    let failures: Vec<Timestamp> =
        node.history.iter().filter(|h| !h.succeeded && !h.held && h.ended > window_start).map(|h| h.ended).collect();
    if failures.len() >= l.node_max_failures {
        let until = failures.iter().min().map(|t| add(*t, l.node_cooldown));
        return Decision::Held {
            gate: Gate::RetryBudget,
            why: format!(
                "{reason}; {} failed repairs within {}: out of retry budget (remove autohealer.dev/repair-history to retry now)",
                failures.len(),
                humantime::format_duration(l.node_cooldown)
            ),
            until,
        };
    }
    match next_step(input, node, None, out_of_service) {
        Some(action) => Decision::Repair { action, attempt, reason: reason.to_string(), actionable_since: at, cordon },
        None => Decision::Held {
            gate: Gate::Unsupported,
            why: format!("{reason}; the provider supports no repair for {} nodes", node.role),
            until: None,
        },
    }
}

fn decide_in_progress(input: &Input, node: &NodeState, r: &RepairRecord, active: &[(Scope, String)]) -> Decision {
    let now = input.now;
    let l = &input.policy.limits;
    let healthy = node.findings.is_empty();
    // With workload-verified recovery the node must also have been healthy long enough
    // for its pods to show whether they run.
    let stable = if input.policy.workloads.applies(node.role) && r.failed.is_none() {
        l.stable_window.max(input.policy.workloads.window)
    } else {
        l.stable_window
    };
    let stable_at = node.healthy_since.map(|h| add(h, stable));
    let healthy = healthy && r.workloads_failed.is_none();
    if let Some(failed_at) = r.failed_at.or(r.failed.as_ref().map(|_| r.started)) {
        if healthy {
            return match stable_at {
                Some(t) if t <= now => Decision::Recovered { record: r.clone() },
                Some(t) => Decision::InProgress { action: r.action, until: t },
                None => Decision::InProgress { action: r.action, until: add(now, l.stable_window) },
            };
        }
        let retry_at = after_blind(input, add(failed_at, l.retry_delay));
        if now < retry_at {
            return Decision::Waiting {
                until: retry_at,
                why: format!("{} failed ({}); next attempt after repair-retry-delay", r.action, r.failed.clone().unwrap_or_default()),
            };
        }
        let reason = node.findings.first().map_or_else(|| r.reason.clone(), |f| f.reason.clone());
        if node.skip {
            return Decision::Held { gate: Gate::Skip, why: format!("{reason}; excluded by autohealer.dev/skip"), until: None };
        }
        return start(input, node, &reason, retry_at, active, 1, false, r.out_of_service);
    }
    if let Some(d) = &r.delegated {
        if healthy {
            return match stable_at {
                Some(t) if t <= now => Decision::Recovered { record: r.clone() },
                Some(t) => Decision::InProgress { action: d.action, until: t },
                None => Decision::InProgress { action: d.action, until: add(now, l.stable_window) },
            };
        }
        let until = after_blind(input, add(d.at, input.policy.replace_timeout));
        if now < until {
            return Decision::InProgress { action: d.action, until };
        }
        return Decision::Failed {
            record: r.clone(),
            why: format!(
                "the {} was handed to {} and the node is still unhealthy after {}",
                d.action,
                d.to,
                humantime::format_duration(input.policy.replace_timeout)
            ),
        };
    }
    // A stalled step, or a restore that failed, is tried again at its time.
    if let Some(at) = r.retry_at.filter(|t| now < *t) {
        return Decision::InProgress { action: r.action, until: at };
    }
    if r.draining || r.pending {
        // Begun (perhaps under a leader that died): finish it. A drain is resumed and its
        // call made; a pending step goes on from its recorded phase.
        if !input.leader {
            return Decision::Held {
                gate: Gate::Leader,
                why: format!("{} is under way; this replica is not the leader", r.action),
                until: None,
            };
        }
        if r.pending && r.out_of_service && r.stalls >= l.max_stalls {
            return Decision::Restore { record: r.clone() };
        }
        // Nothing is out of service yet: the step is held like a new one (pause, the
        // cloud, short-circuits, skip), never like a budget it already holds, and a node
        // that came back by itself needs it no more. Once a machine may be out of
        // service, it is finished whatever holds new repairs.
        if !r.out_of_service {
            // A node that came back by itself needs the step no more, whatever holds it.
            if healthy && stable_at.is_some_and(|t| t <= now) {
                return Decision::Recovered { record: r.clone() };
            }
            let what = format!("{} was begun and nothing is out of service yet", r.action);
            if let Some(d) = held(input, &what).or_else(|| storm(input, node, active, &what)) {
                return d;
            }
            if node.skip {
                return Decision::Held { gate: Gate::Skip, why: format!("{what}; excluded by autohealer.dev/skip"), until: None };
            }
            if let Some(why) = &node.removing {
                return Decision::Held { gate: Gate::Removing, why: format!("{what}; {why}"), until: None };
            }
        }
        return Decision::Continue { record: r.clone() };
    }
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
        return match stable_at {
            Some(t) if t <= now => Decision::Recovered { record: r.clone() },
            // Healthy, but not yet for the stable window: flaps do not count.
            Some(t) => Decision::InProgress { action: r.action, until: t },
            None => Decision::InProgress { action: r.action, until: add(now, l.stable_window) },
        };
    }
    let deadline = after_blind(input, deadline);
    // A node back whose workloads are not needs no more time: the step is over.
    if now < deadline && r.workloads_failed.is_none() {
        return Decision::InProgress { action: r.action, until: deadline };
    }
    // A deadline alone escalates nothing: a finding must be actionable by its own
    // unhealthy-duration (a one-second flap of a node that did reboot is not a failure).
    if let Some(at) = node.findings.iter().map(|f| after_blind(input, f.actionable_at())).min().filter(|at| now < *at) {
        return Decision::InProgress { action: r.action, until: at };
    }
    let reason = r.workloads_failed.clone().or_else(|| node.findings.first().map(|f| f.reason.clone())).unwrap_or_else(|| r.reason.clone());
    // Restoring a machine the healer stopped is not a repair: skip does not hold it.
    if r.out_of_service && next_step(input, node, Some(r.action), true).is_none() && input.leader {
        return Decision::Restore { record: r.clone() };
    }
    if node.skip {
        return Decision::Held {
            gate: Gate::Skip,
            why: format!("{} did not recover the node; excluded by autohealer.dev/skip", r.action),
            until: None,
        };
    }
    if let Some(why) = &node.removing {
        return Decision::Held { gate: Gate::Removing, why: format!("{} did not recover the node; {why}", r.action), until: None };
    }
    match next_step(input, node, Some(r.action), r.out_of_service) {
        // The next, more destructive step waits behind the short-circuits too: a node
        // whose reboot a zone outage or a partition undid is not replaced because of it.
        Some(action) => {
            let what = format!("{} did not recover the node", r.action);
            match held(input, &what).or_else(|| storm(input, node, active, &what)) {
                Some(d) => d,
                None => {
                    Decision::Repair { action, attempt: r.attempt.saturating_add(1), reason, actionable_since: deadline, cordon: false }
                }
            }
        }
        // The machine may be stopped (a stop went out, the last call may never have):
        // bring it back before the repair ends, never leave it stopped.
        None if r.out_of_service => Decision::Restore { record: r.clone() },
        None if delegated_step(input, node, r.action).is_some() => {
            let (action, to) = delegated_step(input, node, r.action).unwrap_or((Action::Replace, String::new()));
            Decision::Delegate { record: r.clone(), action, to }
        }
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
    use crate::ledger::Delegated;
    use autohealer_cloud::Phase;

    fn t(s: &str) -> Timestamp {
        format!("2026-01-01T{s}Z").parse().unwrap()
    }

    fn all_supported() -> BTreeSet<(Role, Action)> {
        [Role::Master, Role::Worker].into_iter().flat_map(|r| [(r, Action::Reboot), (r, Action::Replace)]).collect()
    }

    fn node(name: &str, role: Role, findings: Vec<Finding>) -> NodeState {
        NodeState {
            name: name.into(),
            uid: format!("uid-{name}"),
            role,
            zone: None,
            created: Some(t("00:00:00")),
            boot_id: Some("b1".into()),
            healthy_since: if findings.is_empty() { Some(t("00:00:00")) } else { None },
            findings,
            alerts: vec![],
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

    fn worker(findings: Vec<Finding>) -> NodeState {
        node("w1", Role::Worker, findings)
    }

    fn not_ready(since: &str) -> Finding {
        Finding {
            check: "NodeCondition".into(),
            since: t(since),
            unhealthy_duration: Duration::from_secs(60),
            reason: "condition Ready is False".into(),
            steps: None,
        }
    }

    struct Run {
        leader: bool,
        pause: Pause,
        gate: RepairGate,
        policy: Policy,
        cooldowns: BTreeMap<Scope, Timestamp>,
        supported: BTreeSet<(Role, Action)>,
        delegated: BTreeMap<(Role, Action), String>,
        recent_starts: Vec<(String, Timestamp)>,
        blind_until: Option<Timestamp>,
    }

    impl Default for Run {
        fn default() -> Self {
            Self {
                leader: true,
                pause: Pause::Running,
                gate: RepairGate::Allowed,
                policy: Policy::default(),
                cooldowns: BTreeMap::new(),
                supported: all_supported(),
                delegated: BTreeMap::new(),
                recent_starts: vec![],
                blind_until: None,
            }
        }
    }

    impl Run {
        fn plan(&self, nodes: &[NodeState], now: &str) -> Plan {
            plan(&Input {
                nodes,
                rest: &Rest::default(),
                leader: self.leader,
                pause: self.pause,
                gate: &self.gate,
                supported: &self.supported,
                delegated: &self.delegated,
                policy: &self.policy,
                cooldowns: &self.cooldowns,
                recent_starts: &self.recent_starts,
                unsure: None,
                starting: &BTreeSet::new(),
                blind_until: self.blind_until,
                now: t(now),
            })
        }
    }

    fn run(nodes: &[NodeState], now: &str) -> Plan {
        Run::default().plan(nodes, now)
    }

    fn held_by(d: &Decision) -> Option<Gate> {
        match d {
            Decision::Held { gate, .. } => Some(*gate),
            _ => None,
        }
    }

    #[test]
    fn actionable_exactly_when_the_duration_expires() {
        let nodes = [worker(vec![not_ready("01:00:00")])];
        let p = run(&nodes, "01:00:59");
        assert!(matches!(p.nodes[0].decision, Decision::Waiting { .. }));
        assert_eq!(p.wake_at, Some(t("01:01:00")));
        let p = run(&nodes, "01:01:00");
        assert!(matches!(p.nodes[0].decision, Decision::Repair { action: Action::Reboot, attempt: 1, cordon: true, .. }), "{p:?}");
        assert_eq!(p.wake_at, None);
    }

    #[test]
    fn young_nodes_wait_for_check_delay_after_add() {
        let nodes = [worker(vec![not_ready("00:00:00")])];
        let p = run(&nodes, "00:05:00");
        assert!(matches!(&p.nodes[0].decision, Decision::Waiting { why, .. } if why.contains("check-delay-after-add")));
        assert_eq!(p.wake_at, Some(t("00:10:00")));
    }

    #[test]
    fn gates_hold_repairs() {
        let nodes = [worker(vec![not_ready("01:00:00")])];
        let p = Run { leader: false, ..Default::default() }.plan(&nodes, "02:00:00");
        assert_eq!(held_by(&p.nodes[0].decision), Some(Gate::Leader));
        let p = Run { pause: Pause::Paused, ..Default::default() }.plan(&nodes, "02:00:00");
        assert_eq!(held_by(&p.nodes[0].decision), Some(Gate::Paused));
        let p = Run { gate: RepairGate::Denied("auto_healing_enabled is false".into()), ..Default::default() }.plan(&nodes, "02:00:00");
        assert!(matches!(&p.nodes[0].decision, Decision::Held { gate: Gate::Provider, why, .. } if why.contains("auto_healing_enabled")));
        let mut skipped = nodes.clone();
        skipped[0].skip = true;
        assert_eq!(held_by(&run(&skipped, "02:00:00").nodes[0].decision), Some(Gate::Skip));
        let p = Run { policy: Policy { worker_enabled: false, ..Default::default() }, ..Default::default() }.plan(&nodes, "02:00:00");
        assert_eq!(p.nodes[0].decision, Decision::NotMonitored);
    }

    #[test]
    fn remediate_annotation_repairs_a_healthy_node_now() {
        let mut n = worker(vec![]);
        n.remediate = true;
        let p = run(&[n], "00:01:00");
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
            failed_at: None,
            by: "a".into(),
            draining: false,
            detected: None,
            severity: None,
            fenced: false,
            pending: false,
            phase: None,
            out_of_service: false,
            stalls: 0,
            stalled: None,
            retry_at: None,
            unsent: false,
            delegated: None,
            workloads_failed: None,
        }
    }

    #[test]
    fn reboot_is_verified_by_boot_id_and_a_stable_window_then_escalated() {
        let mut n = worker(vec![not_ready("01:00:00")]);
        n.ledger = Ledger::Record(Box::new(record(Action::Reboot, "01:01:00")));
        // Still unhealthy before the rebuild delay: wait, even through flaps.
        let p = run(std::slice::from_ref(&n), "01:03:00");
        assert_eq!(p.nodes[0].decision, Decision::InProgress { action: Action::Reboot, until: t("01:06:00") });
        // Healthy again but the same boot: the reboot has not happened yet.
        let mut back = n.clone();
        back.findings.clear();
        back.healthy_since = Some(t("01:02:00"));
        let p = run(std::slice::from_ref(&back), "01:02:30");
        assert!(matches!(p.nodes[0].decision, Decision::InProgress { .. }));
        // A new boot, healthy since 01:02:00: done only after the 60s stable window.
        back.boot_id = Some("b2".into());
        let p = run(std::slice::from_ref(&back), "01:02:30");
        assert_eq!(p.nodes[0].decision, Decision::InProgress { action: Action::Reboot, until: t("01:03:00") });
        assert!(matches!(run(&[back], "01:03:00").nodes[0].decision, Decision::Recovered { .. }));
        // Still broken at the deadline: the next step.
        let p = run(std::slice::from_ref(&n), "01:06:00");
        assert!(matches!(p.nodes[0].decision, Decision::Repair { action: Action::Replace, attempt: 2, cordon: false, .. }), "{p:?}");
    }

    #[test]
    fn failed_repair_retries_after_the_delay_within_the_retry_budget() {
        let mut n = worker(vec![not_ready("01:00:00")]);
        let mut failed = record(Action::Replace, "01:00:00");
        failed.failed = Some("timed out".into());
        failed.failed_at = Some(t("01:30:00"));
        n.ledger = Ledger::Record(Box::new(failed));
        n.history = vec![HistoryEntry {
            action: Action::Replace,
            started: t("01:00:00"),
            ended: t("01:30:00"),
            succeeded: false,
            reason: "timed out".into(),
            severity: None,
            held: false,
        }];
        let p = run(std::slice::from_ref(&n), "01:35:00");
        assert!(matches!(p.nodes[0].decision, Decision::Waiting { .. }));
        assert_eq!(p.wake_at, Some(t("01:40:00")));
        assert!(matches!(
            run(std::slice::from_ref(&n), "01:40:00").nodes[0].decision,
            Decision::Repair { action: Action::Reboot, attempt: 1, cordon: false, .. }
        ));
        // Three failures within the node cooldown: left alone until the oldest ages out.
        for m in ["01:10:00", "01:20:00"] {
            n.history.push(HistoryEntry {
                action: Action::Replace,
                started: t("01:00:00"),
                ended: t(m),
                succeeded: false,
                reason: String::new(),
                severity: None,
                held: false,
            });
        }
        let p = run(std::slice::from_ref(&n), "01:45:00");
        assert!(matches!(p.nodes[0].decision, Decision::Held { gate: Gate::RetryBudget, .. }), "{p:?}");
        assert_eq!(p.wake_at, Some(t("02:10:00")));
    }

    #[test]
    fn held_detections_raise_nothing_but_severity() {
        let mut n = worker(vec![not_ready("01:00:00")]);
        n.history = (0..5)
            .map(|i| HistoryEntry {
                action: Action::Reboot,
                started: add(t("00:30:00"), Duration::from_secs(i * 60)),
                ended: add(t("00:30:00"), Duration::from_secs(i * 60)),
                succeeded: false,
                reason: "held: short-circuit".into(),
                severity: None,
                held: true,
            })
            .collect();
        let p = run(std::slice::from_ref(&n), "01:06:00");
        assert!(matches!(p.nodes[0].decision, Decision::Repair { attempt: 1, .. }), "not a retry budget, not a rate: {p:?}");
        let (sev, _) = crate::notice::severity(Role::Worker, &n.history, t("01:06:00"), false);
        assert_eq!(sev, crate::notice::Severity::Critical, "five failures within the hour");
    }

    #[test]
    fn unreadable_ledger_is_never_acted_on() {
        let mut n = worker(vec![not_ready("01:00:00")]);
        n.ledger = Ledger::Unreadable("garbage".into());
        assert_eq!(held_by(&run(&[n], "05:00:00").nodes[0].decision), Some(Gate::Unreadable));
    }

    #[test]
    fn unsupported_steps_are_skipped() {
        let nodes = [worker(vec![not_ready("01:00:00")])];
        let p = Run { supported: [(Role::Worker, Action::Replace)].into(), ..Default::default() }.plan(&nodes, "02:00:00");
        assert!(matches!(p.nodes[0].decision, Decision::Repair { action: Action::Replace, .. }));
    }

    fn workers(n: usize, broken: usize, zone_of: impl Fn(usize) -> &'static str) -> Vec<NodeState> {
        (0..n)
            .map(|i| {
                let mut w = node(&format!("w{i:02}"), Role::Worker, if i < broken { vec![not_ready("01:00:00")] } else { vec![] });
                w.zone = Some(zone_of(i).into());
                w
            })
            .collect()
    }

    #[test]
    fn a_partition_of_most_workers_short_circuits() {
        let nodes = workers(10, 6, |i| ["a", "b", "c"][i % 3]);
        let p = run(&nodes, "02:00:00");
        assert!(p.nodes.iter().all(|n| !matches!(n.decision, Decision::Repair { .. })), "{p:?}");
        assert!(p.short_circuits.iter().any(|(s, _)| *s == Scope::Role(Role::Worker)));
        // Four of ten is within 40%: repaired, within the concurrency budget.
        let p = run(&workers(10, 4, |i| ["a", "b", "c"][i % 3]), "02:00:00");
        assert_eq!(p.nodes.iter().filter(|n| matches!(n.decision, Decision::Repair { .. })).count(), 4);
    }

    #[test]
    fn a_zone_outage_short_circuits_that_zone_only() {
        // Zone a: w00..w03 all broken (4 of 12 workers = 33%, under the role limit).
        let mut nodes = workers(12, 4, |i| {
            if i < 4 {
                "a"
            } else if i < 8 {
                "b"
            } else {
                "c"
            }
        });
        nodes[11].findings = vec![not_ready("01:00:00")];
        nodes[11].healthy_since = None;
        let limits = Limits { worker_max_unhealthy: Threshold::Percent(50.0), ..Default::default() };
        let p = Run { policy: Policy { limits, ..Default::default() }, ..Default::default() }.plan(&nodes, "02:00:00");
        for n in &p.nodes[..4] {
            assert_eq!(held_by(&n.decision), Some(Gate::Zone), "{n:?}");
        }
        assert!(matches!(p.nodes[11].decision, Decision::Repair { .. }), "a lone failure elsewhere is still repaired");
    }

    #[test]
    fn storm_cooldown_holds_after_a_short_circuit_clears() {
        let nodes = workers(5, 1, |_| "a");
        let run = Run { cooldowns: [(Scope::Role(Role::Worker), t("02:05:00"))].into(), ..Default::default() };
        let p = run.plan(&nodes, "02:00:00");
        assert_eq!(held_by(&p.nodes[0].decision), Some(Gate::StormCooldown));
        assert_eq!(p.wake_at, Some(t("02:05:00")));
        assert!(matches!(run.plan(&nodes, "02:05:00").nodes[0].decision, Decision::Repair { .. }));
    }

    #[test]
    fn concurrency_and_rate_budgets_are_shared_in_order_of_actionability() {
        let mut nodes = workers(20, 6, |i| ["a", "b", "c", "d"][i % 4]);
        nodes[5].findings[0].since = t("00:30:00");
        let run = Run {
            policy: Policy {
                limits: Limits { worker_concurrency: 2, worker_max_unhealthy: Threshold::Percent(50.0), ..Default::default() },
                ..Default::default()
            },
            ..Default::default()
        };
        let p = run.plan(&nodes, "02:00:00");
        let repaired: Vec<&str> =
            p.nodes.iter().filter(|n| matches!(n.decision, Decision::Repair { .. })).map(|n| n.name.as_str()).collect();
        assert_eq!(repaired, ["w00", "w05"], "the longest broken first, then by name");
        assert_eq!(p.nodes.iter().filter(|n| held_by(&n.decision) == Some(Gate::Concurrency)).count(), 4);

        let mut busy = nodes.clone();
        busy[19].history = (0..30)
            .map(|i| HistoryEntry {
                action: Action::Reboot,
                started: add(t("01:01:00"), Duration::from_secs(i)),
                ended: t("01:30:00"),
                succeeded: true,
                reason: String::new(),
                severity: None,
                held: false,
            })
            .collect();
        let p = run.plan(&busy, "02:00:00");
        assert!(p.nodes.iter().all(|n| !matches!(n.decision, Decision::Repair { .. })));
        assert!(matches!(&p.nodes[0].decision, Decision::Held { gate: Gate::Rate, until: Some(u), .. } if *u == t("02:01:00")));
    }

    #[test]
    fn one_master_at_a_time_and_none_when_two_are_down() {
        let masters = |broken: usize| -> Vec<NodeState> {
            (0..3).map(|i| node(&format!("m{i}"), Role::Master, if i < broken { vec![not_ready("01:00:00")] } else { vec![] })).collect()
        };
        let p = run(&masters(1), "02:00:00");
        assert!(matches!(p.nodes[0].decision, Decision::Repair { .. }));
        let p = run(&masters(2), "02:00:00");
        assert!(p.nodes.iter().all(|n| !matches!(n.decision, Decision::Repair { .. })), "quorum is never touched");
    }

    fn replacing(phase: Option<Phase>, stalls: u32) -> RepairRecord {
        let out = phase.as_ref().is_some_and(|p| p.out_of_service);
        RepairRecord { pending: true, phase, out_of_service: out, stalls, ..record(Action::Replace, "01:05:00") }
    }

    // Defect 1: a replace cut after the stop is finished from its phase by whoever
    // leads, whatever holds new repairs, and never waits for a budget it holds.
    #[test]
    fn a_replace_cut_after_the_stop_is_continued_from_its_recorded_phase() {
        let mut n = worker(vec![not_ready("01:00:00")]);
        n.ledger = Ledger::Record(Box::new(replacing(Some(Phase::new("resize").out_of_service()), 0)));
        let busy = Policy { limits: Limits { worker_concurrency: 1, ..Default::default() }, ..Default::default() };
        for run in [
            Run { pause: Pause::Paused, ..Default::default() },
            Run { gate: RepairGate::Denied("cluster is UPDATE_IN_PROGRESS".into()), ..Default::default() },
            Run { policy: busy, ..Default::default() },
        ] {
            let p = run.plan(std::slice::from_ref(&n), "01:06:00");
            assert!(
                matches!(&p.nodes[0].decision, Decision::Continue { record } if record.phase.as_ref().unwrap().name == "resize"),
                "{p:?}"
            );
        }
        let p = Run { leader: false, ..Default::default() }.plan(std::slice::from_ref(&n), "01:06:00");
        assert_eq!(held_by(&p.nodes[0].decision), Some(Gate::Leader));
    }

    #[test]
    fn a_stalled_replace_waits_its_retry_then_restores_the_machine() {
        let mut n = worker(vec![not_ready("01:00:00")]);
        let mut r = replacing(Some(Phase::new("resize").out_of_service()), 2);
        r.retry_at = Some(t("01:07:00"));
        n.ledger = Ledger::Record(Box::new(r.clone()));
        let p = run(std::slice::from_ref(&n), "01:06:00");
        assert_eq!(p.nodes[0].decision, Decision::InProgress { action: Action::Replace, until: t("01:07:00") });
        assert_eq!(p.wake_at, Some(t("01:07:00")));
        assert!(matches!(run(std::slice::from_ref(&n), "01:07:00").nodes[0].decision, Decision::Continue { .. }));
        r.stalls = Limits::default().max_stalls;
        n.ledger = Ledger::Record(Box::new(r));
        assert!(matches!(run(&[n], "01:08:00").nodes[0].decision, Decision::Restore { .. }));
    }

    #[test]
    fn a_replace_that_timed_out_with_its_machine_stopped_restores_it_and_the_retry_replaces() {
        let mut n = worker(vec![not_ready("01:00:00")]);
        let mut r = record(Action::Replace, "01:05:00");
        r.attempt = 2;
        r.out_of_service = true;
        n.ledger = Ledger::Record(Box::new(r.clone()));
        assert!(matches!(run(std::slice::from_ref(&n), "01:40:00").nodes[0].decision, Decision::Restore { .. }), "never left stopped");
        // If restoring failed for good and the repair failed, the retry cannot begin
        // with a reboot of a stopped server.
        r.failed = Some("x".into());
        r.failed_at = Some(t("01:40:00"));
        n.ledger = Ledger::Record(Box::new(r));
        let p = run(&[n], "02:00:00");
        assert!(matches!(p.nodes[0].decision, Decision::Repair { action: Action::Replace, attempt: 1, .. }), "{p:?}");
    }

    // Defect 2.
    #[test]
    fn an_unknown_pause_state_holds_new_repairs() {
        let nodes = [worker(vec![not_ready("01:00:00")])];
        let p = Run { pause: Pause::Unknown, ..Default::default() }.plan(&nodes, "02:00:00");
        assert!(matches!(&p.nodes[0].decision, Decision::Held { gate: Gate::Paused, why, .. } if why.contains("not known")), "{p:?}");
    }

    // Defect 3.
    #[test]
    fn a_flap_after_the_rebuild_delay_does_not_escalate() {
        let mut n = worker(vec![not_ready("01:07:00")]);
        n.findings[0].since = t("01:07:00");
        n.boot_id = Some("b2".into());
        n.ledger = Ledger::Record(Box::new(record(Action::Reboot, "01:01:00")));
        let p = run(std::slice::from_ref(&n), "01:07:01");
        assert_eq!(p.nodes[0].decision, Decision::InProgress { action: Action::Reboot, until: t("01:08:00") }, "a one-second flap");
        assert!(
            matches!(run(&[n], "01:08:00").nodes[0].decision, Decision::Repair { action: Action::Replace, .. }),
            "actionable by its own duration"
        );
    }

    // Defect 4.
    #[test]
    fn remediate_on_a_healthy_master_while_another_is_unhealthy_is_held() {
        let mut masters: Vec<NodeState> = (0..3).map(|i| node(&format!("m{i}"), Role::Master, vec![])).collect();
        masters[0].findings = vec![not_ready("01:00:00")];
        masters[0].healthy_since = None;
        masters[0].skip = true;
        masters[1].remediate = true;
        let p = run(&masters, "02:00:00");
        assert!(p.nodes.iter().all(|n| !matches!(n.decision, Decision::Repair { .. })), "quorum is never touched by hand: {p:?}");
    }

    // Defect 5.
    #[test]
    fn a_resumed_drain_does_not_wait_for_a_concurrency_slot() {
        let mut n = worker(vec![not_ready("01:00:00")]);
        n.ledger = Ledger::Record(Box::new(RepairRecord { draining: true, ..record(Action::Reboot, "01:01:00") }));
        let run = Run {
            policy: Policy { limits: Limits { worker_concurrency: 1, ..Default::default() }, ..Default::default() },
            ..Default::default()
        };
        let other = node("w2", Role::Worker, vec![not_ready("01:00:00")]);
        let healthy = (3..8).map(|i| node(&format!("w{i}"), Role::Worker, vec![]));
        let nodes: Vec<NodeState> = [n, other].into_iter().chain(healthy).collect();
        let p = run.plan(&nodes, "01:02:00");
        assert!(matches!(p.nodes[0].decision, Decision::Continue { .. }), "{p:?}");
        assert_eq!(held_by(&p.nodes[1].decision), Some(Gate::Concurrency), "the resumed drain holds the one slot");
    }

    // Defect 7.
    #[test]
    fn repairs_of_deleted_nodes_still_count_for_the_hourly_budget() {
        let nodes = [worker(vec![not_ready("01:00:00")])];
        let policy = Policy { limits: Limits { repairs_per_hour: 2, ..Default::default() }, ..Default::default() };
        let gone =
            vec![("uid-old-1".to_string(), t("01:30:00")), ("uid-old-2".to_string(), t("01:40:00")), ("uid-w1".to_string(), t("01:50:00"))];
        let p = Run { policy, recent_starts: gone, ..Default::default() }.plan(&nodes, "02:00:00");
        assert!(matches!(&p.nodes[0].decision, Decision::Held { gate: Gate::Rate, why, .. } if why.contains("2 repairs")), "{p:?}");
    }

    // Defect 15.
    #[test]
    fn a_hand_edited_attempt_does_not_overflow() {
        let mut n = worker(vec![not_ready("01:00:00")]);
        n.ledger = Ledger::Record(Box::new(RepairRecord { attempt: u32::MAX, ..record(Action::Reboot, "01:01:00") }));
        assert!(matches!(run(&[n], "01:10:00").nodes[0].decision, Decision::Repair { attempt: u32::MAX, .. }));
    }

    // Defect 16.
    #[test]
    fn deadlines_that_ran_while_the_healer_was_blind_wait_for_nodes_to_report() {
        let mut n = worker(vec![not_ready("01:00:00")]);
        n.ledger = Ledger::Record(Box::new(record(Action::Reboot, "01:01:00")));
        let at = |n: &NodeState, now: &str, blind_until: Option<Timestamp>| {
            Run { blind_until, ..Default::default() }.plan(std::slice::from_ref(n), now)
        };
        // Blind from 01:05 to 01:06:30: the reboot's deadline (01:06) waits a grace after.
        let p = at(&n, "01:06:40", Some(t("01:07:30")));
        assert_eq!(p.nodes[0].decision, Decision::InProgress { action: Action::Reboot, until: t("01:07:30") });
        assert!(matches!(at(&n, "01:07:30", None).nodes[0].decision, Decision::Repair { action: Action::Replace, .. }));
        // And a new failure is not actionable before nodes had a chance to report.
        let p = at(&worker(vec![not_ready("01:00:00")]), "01:06:40", Some(t("01:07:30")));
        assert!(matches!(p.nodes[0].decision, Decision::Waiting { until, .. } if until == t("01:07:30")), "{p:?}");
    }

    // Found by the lifecycle simulation: two repairs begun in the same evaluation
    // were counted as one against repairs-per-hour.
    #[test]
    fn repairs_begun_at_the_same_instant_count_once_each() {
        let policy = Policy { limits: Limits { repairs_per_hour: 2, ..Default::default() }, ..Default::default() };
        let run = Run { policy, ..Default::default() };
        let mut nodes = workers(10, 3, |_| "a");
        for n in &mut nodes[..2] {
            n.ledger = Ledger::Record(Box::new(record(Action::Reboot, "01:30:00")));
        }
        let p = run.plan(&nodes, "02:00:00");
        assert_eq!(held_by(&p.nodes[2].decision), Some(Gate::Rate), "{p:?}");
    }

    // Found in review: a step begun on a master that has taken nothing out of service
    // yet must not be continued over max-unhealthy (another master failed meanwhile),
    // nor while paused; a node that recovered by itself drops it.
    #[test]
    fn a_step_begun_with_nothing_out_of_service_waits_behind_the_gates() {
        let mut masters: Vec<NodeState> = (0..3).map(|i| node(&format!("m{i}"), Role::Master, vec![])).collect();
        masters[0].findings = vec![not_ready("01:00:00")];
        masters[0].healthy_since = None;
        masters[0].ledger = Ledger::Record(Box::new(replacing(Some(Phase::new("detach")), 0)));
        let p = run(&masters, "01:06:00");
        assert!(matches!(p.nodes[0].decision, Decision::Continue { .. }), "alone, it goes on: {p:?}");
        masters[1].findings = vec![not_ready("01:05:00")];
        masters[1].healthy_since = None;
        let p = run(&masters, "01:06:00");
        assert_eq!(held_by(&p.nodes[0].decision), Some(Gate::MaxUnhealthy), "{p:?}");
        let p = Run { pause: Pause::Paused, ..Default::default() }.plan(&masters[..1], "01:06:00");
        assert_eq!(held_by(&p.nodes[0].decision), Some(Gate::Paused));
        // Healthy again for the stable window: dropped, the node released.
        let mut back = masters[0].clone();
        back.findings.clear();
        back.healthy_since = Some(t("01:04:00"));
        assert!(matches!(run(&[back], "01:06:00").nodes[0].decision, Decision::Recovered { .. }));
    }

    // Found in review: a failed restore waits its retry instead of spinning.
    #[test]
    fn a_failed_restore_waits_its_retry() {
        let mut n = worker(vec![not_ready("01:00:00")]);
        let mut r = record(Action::Replace, "01:05:00");
        r.out_of_service = true;
        r.stalls = 1;
        r.retry_at = Some(t("01:41:00"));
        n.ledger = Ledger::Record(Box::new(r));
        n.skip = true;
        assert_eq!(
            run(std::slice::from_ref(&n), "01:40:00").nodes[0].decision,
            Decision::InProgress { action: Action::Replace, until: t("01:41:00") }
        );
        assert!(matches!(run(&[n], "01:41:00").nodes[0].decision, Decision::Restore { .. }), "skip does not hold a restore");
    }

    // Found in review: a reboot that a zone outage undid did not wait for the
    // short-circuit before escalating to a replace.
    #[test]
    fn escalation_waits_behind_a_short_circuit() {
        let mut nodes = workers(12, 4, |i| {
            if i < 4 {
                "a"
            } else if i < 8 {
                "b"
            } else {
                "c"
            }
        });
        nodes[0].ledger = Ledger::Record(Box::new(record(Action::Reboot, "01:01:00")));
        let limits = Limits { worker_max_unhealthy: Threshold::Percent(50.0), ..Default::default() };
        let p = Run { policy: Policy { limits, ..Default::default() }, ..Default::default() }.plan(&nodes, "02:00:00");
        assert_eq!(held_by(&p.nodes[0].decision), Some(Gate::Zone), "{p:?}");
    }

    #[test]
    fn a_node_going_away_is_never_repaired() {
        let mut n = worker(vec![not_ready("01:00:00")]);
        n.removing = Some("cluster-autoscaler is removing the node (taint ToBeDeletedByClusterAutoscaler)".into());
        let p = run(&[n.clone()], "02:00:00");
        assert!(
            matches!(&p.nodes[0].decision, Decision::Held { gate: Gate::Removing, why, .. } if why.contains("ToBeDeletedByClusterAutoscaler")),
            "{p:?}"
        );
        // Nor is a reboot that did not help followed by a replace.
        n.ledger = Ledger::Record(Box::new(record(Action::Reboot, "01:01:00")));
        assert_eq!(held_by(&run(&[n], "02:00:00").nodes[0].decision), Some(Gate::Removing));
    }

    fn delegating() -> Run {
        let supported = all_supported().into_iter().filter(|p| *p != (Role::Master, Action::Replace)).collect();
        let delegated = BTreeMap::from([((Role::Master, Action::Replace), "the cluster's MachineHealthCheck".to_string())]);
        Run { supported, delegated, ..Default::default() }
    }

    #[test]
    fn a_step_the_cloud_performs_is_handed_over_then_waited_for_then_failed() {
        let mut m = node("m1", Role::Master, vec![not_ready("01:00:00")]);
        m.ledger = Ledger::Record(Box::new(record(Action::Reboot, "01:01:00")));
        let p = delegating().plan(&[m.clone()], "01:07:00");
        assert!(
            matches!(&p.nodes[0].decision, Decision::Delegate { action: Action::Replace, to, .. } if to.contains("MachineHealthCheck")),
            "{p:?}"
        );
        // Handed over at 01:07: the healer waits replace-timeout (30 min), with no slot held.
        let delegated = Delegated { action: Action::Replace, to: "the cluster's MachineHealthCheck".into(), at: t("01:07:00") };
        m.ledger = Ledger::Record(Box::new(RepairRecord { delegated: Some(delegated), ..record(Action::Reboot, "01:01:00") }));
        let p = delegating().plan(&[m.clone()], "01:20:00");
        assert_eq!(p.nodes[0].decision, Decision::InProgress { action: Action::Replace, until: t("01:37:00") });
        let mut other = node("m2", Role::Master, vec![not_ready("01:10:00")]);
        other.name = "m2".into();
        let limits = Limits { master_max_unhealthy: Threshold::Count(2), ..Default::default() };
        let run = Run { policy: Policy { limits, ..Default::default() }, ..delegating() };
        let p = run.plan(&[m.clone(), other], "01:20:00");
        assert!(matches!(p.nodes[1].decision, Decision::Repair { .. }), "a handed-over node holds no concurrency slot: {p:?}");
        let p = delegating().plan(&[m.clone()], "01:37:00");
        assert!(matches!(&p.nodes[0].decision, Decision::Failed { why, .. } if why.contains("still unhealthy")), "{p:?}");
        m.findings.clear();
        m.healthy_since = Some(t("01:15:00"));
        assert!(matches!(delegating().plan(&[m], "01:20:00").nodes[0].decision, Decision::Recovered { .. }));
    }

    fn kernel(mut n: NodeState, k: &str) -> NodeState {
        n.attributes = vec![("kernelVersion".into(), k.into())];
        n
    }

    #[test]
    fn failures_sharing_a_rare_kernel_are_held_as_correlated_and_others_go_on() {
        // Twelve workers; three run the new kernel, and all three fail one after the
        // other; an unrelated worker with the common kernel fails too.
        let mut nodes: Vec<NodeState> = (0..12).map(|i| kernel(node(&format!("w{i:02}"), Role::Worker, vec![]), "k1")).collect();
        for (i, n) in nodes.iter_mut().enumerate().take(3) {
            *n = kernel(node(&format!("w{i:02}"), Role::Worker, vec![not_ready(&format!("01:0{i}:00"))]), "k2-bad");
        }
        nodes[11] = kernel(node("w11", Role::Worker, vec![not_ready("01:00:00")]), "k1");
        let limits = Limits { worker_max_unhealthy: Threshold::Percent(50.0), ..Default::default() };
        let run = Run { policy: Policy { limits, ..Default::default() }, ..Default::default() };
        // Two failing with the new kernel is no pattern yet: both are repaired.
        let p = run.plan(&nodes[..2].iter().cloned().chain(nodes[3..].iter().cloned()).collect::<Vec<_>>(), "01:05:00");
        assert!(p.nodes[..2].iter().all(|n| matches!(n.decision, Decision::Repair { .. })), "{p:?}");
        // The first two were rebooted (history within the window) and fail again; the
        // third fails: the cohort is held, the unrelated worker still repaired.
        for n in &mut nodes[..2] {
            n.history = vec![HistoryEntry {
                action: Action::Reboot,
                started: t("01:01:00"),
                ended: t("01:03:00"),
                succeeded: true,
                reason: String::new(),
                severity: None,
                held: false,
            }];
        }
        let p = run.plan(&nodes, "01:05:00");
        for i in 0..3 {
            assert!(
                matches!(&p.nodes[i].decision, Decision::Held { gate: Gate::Correlated, why, .. } if why.contains("kernelVersion=k2-bad") && why.contains("w02")),
                "{:?}",
                p.nodes[i]
            );
        }
        assert!(matches!(p.nodes[11].decision, Decision::Repair { .. }), "outside the cohort repairs go on: {:?}", p.nodes[11]);
        let cohort = Scope::Cohort { attribute: "kernelVersion".into(), value: "k2-bad".into() };
        assert!(p.short_circuits.iter().any(|(s, _)| *s == cohort));
        assert_eq!(crate::fleet::scope_of(&crate::fleet::scope_key(&cohort)), Some(cohort), "kept in the fleet state");
        // Once the first two are healthy, the hold lasts while their reboots are within
        // the window: the plan wakes when they leave it, and the third is repaired then.
        let mut settled = nodes.clone();
        for n in &mut settled[..2] {
            n.findings.clear();
            n.healthy_since = Some(t("01:04:00"));
        }
        let p = run.plan(&settled, "01:30:00");
        assert_eq!(held_by(&p.nodes[2].decision), Some(Gate::Correlated), "{:?}", p.nodes[2]);
        assert_eq!(p.wake_at, Some(t("02:01:00")), "woken when the reboots leave the hour's window");
        assert!(matches!(run.plan(&settled, "02:01:00").nodes[2].decision, Decision::Repair { .. }));
        // The same three failures on a fleet that runs one kernel everywhere hold nothing.
        let same: Vec<NodeState> = nodes.iter().cloned().map(|n| kernel(n, "k1")).collect();
        let p = run.plan(&same, "01:05:00");
        assert!(p.nodes.iter().all(|n| !matches!(n.decision, Decision::Held { gate: Gate::Correlated, .. })), "{p:?}");
        // Turned off, nothing is held as correlated.
        let off = Run {
            policy: Policy { correlated: CorrelatedHold { enabled: false, ..Default::default() }, ..run.policy.clone() },
            ..Default::default()
        };
        assert!(off.plan(&nodes, "01:05:00").short_circuits.is_empty());
    }

    #[test]
    fn values_shared_by_the_same_failing_nodes_are_one_finding() {
        let image = |mut n: NodeState, k: &str, os: &str| {
            n.attributes = vec![("kernelVersion".into(), k.into()), ("osImage".into(), os.into())];
            n
        };
        let mut nodes: Vec<NodeState> = (0..12).map(|i| image(node(&format!("w{i:02}"), Role::Worker, vec![]), "k1", "os1")).collect();
        for (i, n) in nodes.iter_mut().enumerate().take(3) {
            *n = image(node(&format!("w{i:02}"), Role::Worker, vec![not_ready("01:00:00")]), "k2", "os2");
        }
        let limits = Limits { worker_max_unhealthy: Threshold::Percent(50.0), ..Default::default() };
        let p = Run { policy: Policy { limits, ..Default::default() }, ..Default::default() }.plan(&nodes, "01:05:00");
        let cohorts: Vec<&(Scope, String)> = p.short_circuits.iter().filter(|(s, _)| matches!(s, Scope::Cohort { .. })).collect();
        assert_eq!(cohorts.len(), 2, "both values hold: {cohorts:?}");
        assert_eq!(cohorts[0].1, cohorts[1].1, "with one reason");
        assert!(cohorts[0].1.contains("kernelVersion=k2 and osImage=os2 are shared by 3 of 3 failing workers"), "{}", cohorts[0].1);
    }

    #[test]
    fn a_node_repaired_again_and_again_is_left_to_a_human() {
        let mut n = worker(vec![not_ready("01:00:00")]);
        let success = |day: i64| HistoryEntry {
            action: Action::Reboot,
            started: t("00:10:00") - SignedDuration::from_hours(24 * day),
            ended: t("00:20:00") - SignedDuration::from_hours(24 * day),
            succeeded: true,
            reason: String::new(),
            severity: None,
            held: false,
        };
        n.history = (1..=3).map(success).collect();
        assert!(
            matches!(run(std::slice::from_ref(&n), "01:05:00").nodes[0].decision, Decision::Repair { .. }),
            "three repairs are allowed"
        );
        n.history.push(success(0));
        let p = run(std::slice::from_ref(&n), "01:05:00");
        assert!(
            matches!(&p.nodes[0].decision, Decision::Held { gate: Gate::RepeatedRepairs, why, .. } if why.contains("4 times")),
            "{p:?}"
        );
        let (sev, _) = crate::notice::of_decision(&n, &p.nodes[0].decision, t("01:05:00")).unwrap();
        assert_eq!(sev, crate::notice::Severity::Critical);
        // Older than the window, they do not count.
        n.history = (8..=11).map(success).collect();
        assert!(matches!(run(&[n], "01:05:00").nodes[0].decision, Decision::Repair { .. }));
    }

    #[test]
    fn slow_start_repairs_one_then_doubles_with_each_success_and_falls_back_after_a_failure() {
        let limits =
            Limits { worker_max_unhealthy: Threshold::Percent(100.0), zone_max_unhealthy: Threshold::Percent(100.0), ..Default::default() };
        let run =
            Run { policy: Policy { limits, slow_start: Some(Duration::from_secs(86400)), ..Default::default() }, ..Default::default() };
        let repairing = |nodes: &[NodeState]| {
            run.plan(nodes, "02:00:00").nodes.iter().filter(|n| matches!(n.decision, Decision::Repair { .. })).count()
        };
        let mut nodes = workers(10, 6, |_| "a");
        assert_eq!(repairing(&nodes), 1, "one at a time to begin with");
        let p = run.plan(&nodes, "02:00:00");
        assert!(
            p.nodes.iter().any(|n| matches!(&n.decision, Decision::Held { gate: Gate::SlowStart, why, .. } if why.contains("worker/a/-"))),
            "{p:?}"
        );
        let done = |ok: bool, at: &str| HistoryEntry {
            action: Action::Reboot,
            started: t(at),
            ended: t(at),
            succeeded: ok,
            reason: String::new(),
            severity: None,
            held: false,
        };
        // Two repairs proven healthy in the domain: the width is four.
        nodes[9].history = vec![done(true, "01:00:00"), done(true, "01:10:00")];
        assert_eq!(repairing(&nodes), 4);
        // Then one failed: back to one.
        nodes[8].history = vec![done(false, "01:20:00")];
        assert_eq!(repairing(&nodes), 1);
        // Capped by the role's concurrency (5), and other domains keep their own width.
        nodes[8].history.clear();
        nodes[9].history = (0..6).map(|i| done(true, &format!("01:0{i}:00"))).collect();
        assert_eq!(repairing(&nodes), 5);
        let mut other = workers(4, 2, |_| "b");
        for (i, n) in other.iter_mut().enumerate() {
            n.name = format!("b{i}");
            n.uid = format!("uid-b{i}");
        }
        nodes[9].history = vec![done(true, "01:00:00")];
        let mixed: Vec<NodeState> = nodes.iter().cloned().chain(other).collect();
        assert_eq!(repairing(&mixed), 3, "two in zone a, one in zone b");
        // Off, the width is the concurrency.
        let off = Run { policy: Policy { slow_start: None, ..run.policy.clone() }, ..Default::default() };
        assert_eq!(
            off.plan(&workers(10, 6, |_| "a"), "02:00:00").nodes.iter().filter(|n| matches!(n.decision, Decision::Repair { .. })).count(),
            5
        );
    }

    #[test]
    fn a_finding_with_its_own_steps_is_repaired_with_them() {
        let mut f = not_ready("01:00:00");
        f.steps = Some(vec![Action::Replace]);
        let p = run(&[worker(vec![f.clone()])], "01:05:00");
        assert!(matches!(p.nodes[0].decision, Decision::Repair { action: Action::Replace, .. }), "{p:?}");
        // Reboot only: a reboot that did not help ends the repair, no replace follows.
        f.steps = Some(vec![Action::Reboot]);
        let mut n = worker(vec![f]);
        n.ledger = Ledger::Record(Box::new(record(Action::Reboot, "01:01:00")));
        assert!(matches!(run(&[n], "01:10:00").nodes[0].decision, Decision::Failed { .. }));
    }

    // Found in review: a worker whose next step a gate holds kept its slot, so with a
    // small concurrency no unrelated worker was repaired while the hold lasted.
    #[test]
    fn a_held_worker_repair_takes_no_slot() {
        let mut a = node("wa", Role::Worker, vec![not_ready("01:00:00")]);
        a.ledger = Ledger::Record(Box::new(record(Action::Reboot, "01:01:00")));
        a.skip = true;
        let b = node("wb", Role::Worker, vec![not_ready("01:00:00")]);
        let limits = Limits { worker_concurrency: 1, worker_max_unhealthy: Threshold::Percent(100.0), ..Default::default() };
        let p = Run { policy: Policy { limits, ..Default::default() }, ..Default::default() }.plan(&[a, b], "01:10:00");
        assert_eq!(held_by(&p.nodes[0].decision), Some(Gate::Skip));
        assert!(matches!(p.nodes[1].decision, Decision::Repair { .. }), "{p:?}");
    }

    #[test]
    fn a_step_that_needs_approval_is_proposed_and_taken_once_approved() {
        let approval = Approval { worker: vec![Action::Replace], ..Default::default() };
        let run = Run { policy: Policy { approval, ..Default::default() }, ..Default::default() };
        // The reboot needs no approval.
        assert!(matches!(
            run.plan(&[worker(vec![not_ready("01:00:00")])], "01:05:00").nodes[0].decision,
            Decision::Repair { action: Action::Reboot, .. }
        ));
        let mut n = worker(vec![not_ready("01:00:00")]);
        n.ledger = Ledger::Record(Box::new(record(Action::Reboot, "01:01:00")));
        let p = run.plan(std::slice::from_ref(&n), "01:10:00");
        let Decision::Held { gate: Gate::Approval, why, until } = &p.nodes[0].decision else { panic!("{p:?}") };
        let id = why.split("proposal ").nth(1).and_then(|w| w.split(':').next()).unwrap().to_string();
        assert!(why.contains(&format!("autohealer.dev/approve={id}")) && why.contains("kubectl autohealer approve w1"), "{why}");
        assert!(until.is_some());
        assert_eq!(p.wake_at, *until, "woken when the proposal expires");
        // Approved with that id: replaced. Another id approves nothing; a denial holds.
        n.approve = Some(id.clone());
        assert!(matches!(
            run.plan(std::slice::from_ref(&n), "01:10:00").nodes[0].decision,
            Decision::Repair { action: Action::Replace, .. }
        ));
        n.approve = Some("0123456789ab".into());
        assert_eq!(held_by(&run.plan(std::slice::from_ref(&n), "01:10:00").nodes[0].decision), Some(Gate::Approval));
        n.approve = None;
        n.deny = Some(id.clone());
        let p = run.plan(std::slice::from_ref(&n), "01:10:00");
        assert!(matches!(&p.nodes[0].decision, Decision::Held { gate: Gate::Approval, why, .. } if why.contains("denied")), "{p:?}");
        // After it expires, a new proposal has a new id: an old answer answers nothing.
        assert_ne!(proposal_id("u", Action::Replace, 2, t("01:00:00"), 0), proposal_id("u", Action::Replace, 2, t("01:00:00"), 1));
        // Approval bypasses no gate: paused, it stays held by the pause.
        n.deny = None;
        n.approve = Some(id);
        let paused = Run { pause: Pause::Paused, policy: run.policy.clone(), ..Default::default() };
        assert_eq!(held_by(&paused.plan(&[n], "01:10:00").nodes[0].decision), Some(Gate::Paused));
    }

    #[test]
    fn a_node_back_with_crash_looping_workloads_gets_the_next_step_at_once() {
        let mut n = worker(vec![]);
        n.healthy_since = Some(t("01:02:00"));
        n.ledger = Ledger::Record(Box::new(RepairRecord {
            workloads_failed: Some("pod x crash-loops on it".into()),
            ..record(Action::Reboot, "01:01:00")
        }));
        let p = run(&[n.clone()], "01:04:00");
        assert!(
            matches!(&p.nodes[0].decision, Decision::Repair { action: Action::Replace, reason, .. } if reason.contains("crash-loops")),
            "{p:?}"
        );
        // With the check on, a healthy node is not done before the workload window.
        let workloads = WorkloadCheck { worker: true, window: Duration::from_secs(600), ..Default::default() };
        n.ledger = Ledger::Record(Box::new(record(Action::Reboot, "01:01:00")));
        let run = Run { policy: Policy { workloads, ..Default::default() }, ..Default::default() };
        assert!(matches!(run.plan(std::slice::from_ref(&n), "01:10:00").nodes[0].decision, Decision::InProgress { .. }));
        assert!(matches!(run.plan(&[n], "01:12:00").nodes[0].decision, Decision::Recovered { .. }));
    }

    #[test]
    fn thresholds_parse() {
        assert_eq!(Threshold::parse("40%"), Some(Threshold::Percent(40.0)));
        assert_eq!(Threshold::parse("3"), Some(Threshold::Count(3)));
        assert_eq!(Threshold::parse("140%"), None);
        assert_eq!(Threshold::Percent(40.0).limit(12), 4);
        assert_eq!(Threshold::Percent(40.0).limit(2), 1, "one node is never a storm");
    }
}
