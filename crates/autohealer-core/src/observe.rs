//! Turning Node objects and probe results into the planner's [`NodeState`]s.

use crate::ledger::{Ledger, REPAIR_ANNOTATION};
use crate::node;
use crate::planner::{self, Finding, NodeState, Policy, Rest};
use autohealer_cloud::Role;
use autohealer_healthcheck::{AsNodeView, CheckKind, Health, HealthCheck};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// The format of upstream's `unhealthy-timestamp` annotation (Go's `2006-01-02 15:04:05`, UTC).
pub const PROBE_TIME_FORMAT: &str = "%Y-%m-%d %H:%M:%S";

/// The checks configured for each role, in config order.
#[derive(Debug, Clone, Default)]
pub struct Checks {
    pub master: Vec<Arc<dyn HealthCheck>>,
    pub worker: Vec<Arc<dyn HealthCheck>>,
    /// The checks (role, index) whose findings are only told (`action: notify-only`).
    pub notify_only: std::collections::BTreeSet<(Role, usize)>,
    /// Labels whose values the correlated-failure hold compares, beside the built-in
    /// attributes (`correlated-hold.labels`).
    pub attribute_labels: Vec<String>,
    /// What a check's finding leads to when its config says more than "repair with the
    /// role's steps": its own steps, or rules on the finding's reason (a GPU condition
    /// whose reason names an XID picks reboot or replace by that number).
    pub routes: std::collections::BTreeMap<(Role, usize), Route>,
}

/// What a finding leads to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disposition {
    /// A repair, with these steps instead of the role's when given.
    Repair(Option<Vec<autohealer_cloud::Action>>),
    /// An Event and a notification, never a repair.
    NotifyOnly,
    /// Shown by `plan`, nothing else.
    Ignore,
}

/// A check's routing of its findings by their reason.
#[derive(Clone)]
pub struct Route(pub Arc<dyn Fn(&str) -> Disposition + Send + Sync>);

impl std::fmt::Debug for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Route(..)")
    }
}

impl Checks {
    /// Whether any check reads the nodes' Leases.
    pub fn need_leases(&self) -> bool {
        self.master.iter().chain(&self.worker).any(|c| c.needs_node_leases())
    }

    /// Makes the node views keep what these checks and settings read beside the
    /// defaults: the labels of `correlated-hold.labels` and the probing checks'
    /// annotations. Called before the nodes are watched, and on every reload.
    pub fn keep_in_views(&self) {
        for l in &self.attribute_labels {
            autohealer_healthcheck::keep_label(l);
        }
        for a in self.master.iter().chain(&self.worker).filter_map(|c| c.unhealthy_annotation()) {
            autohealer_healthcheck::keep_annotation(a);
        }
    }

    pub fn for_role(&self, role: Role) -> &[Arc<dyn HealthCheck>] {
        match role {
            Role::Master => &self.master,
            Role::Worker => &self.worker,
        }
    }
}

/// What the healer remembers between evaluations that is not on the node: the
/// latest probe result per (node uid, check index), and when a problem with no
/// timestamp of its own was first seen.
#[derive(Debug, Default)]
pub struct Observations {
    pub probes: HashMap<(String, usize), Health>,
    pub first_seen: HashMap<(String, usize), Timestamp>,
    /// Per node uid: since when every check has passed, as observed here; kept for
    /// the nodes decided one by one only (see [`Judged`]): nothing reads a plain node's,
    /// and when it changes the count begins again then, which can only lengthen a
    /// repair's stable window.
    pub healthy_since: HashMap<String, Timestamp>,
    /// Moves whenever a probe result changes, so that [`Judged`] knows its verdicts of
    /// probing checks are stale.
    pub generation: u64,
}

impl Observations {
    /// Records a probe result; says whether it differs from the previous one.
    pub fn probed(&mut self, uid: String, check: usize, health: Health) -> bool {
        let changed = self.probes.get(&(uid.clone(), check)) != Some(&health);
        if changed {
            self.generation += 1;
            self.probes.insert((uid, check), health);
        }
        changed
    }
}

/// The fleet's [`NodeState`]s kept from one evaluation to the next, each judged again
/// only when it may have changed: its node's view changed, a probe result changed, or
/// one of its role's checks reads the clock or the Leases ([`HealthCheck::reads_clock`],
/// [`HealthCheck::needs_node_leases`]) and its verdict may have changed since
/// ([`HealthCheck::verdict_holds_until`]). A judgement costs allocations (names,
/// attributes, the parsed ledger), so at 65,000 nodes judging only what changed is most
/// of what keeps an evaluation short. What a fresh judgement would also do to the
/// [`Observations`] (first-seen and healthy-since instants) it already did when the kept
/// state was made, and doing it again would change nothing.
///
/// It also keeps the fleet split for the planner ([`planner::plain`]): the states to
/// decide one by one, and the plain nodes, of which it keeps only what they were judged
/// from (their states would say "healthy" and nothing else; at 65,000 nodes they were
/// 2 KiB a node), counted in a [`Rest`] that is changed only by the nodes that change.
/// So the planner's work and memory are in proportion to the nodes that are not simply
/// healthy.
#[derive(Debug, Default)]
pub struct Judged {
    /// The states to decide one by one, their verdicts and what each was judged from.
    states: Vec<NodeState>,
    verdicts: Vec<Vec<CheckVerdict>>,
    from: Vec<Basis>,
    /// The plain nodes: what each was judged from.
    plain: Vec<Basis>,
    rest: Rest,
    /// Node name (the cache's key, unique) to where it is kept.
    index: HashMap<Box<str>, Slot>,
    /// How many nodes the last update judged again, for the logs.
    pub rejudged: usize,
}

/// 32-bit indices: the index holds one per node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    /// An index in `states`, `verdicts` and `from`.
    State(u32),
    /// An index in `plain`.
    Plain(u32),
}

/// A slot's index (a fleet has far fewer than 2^32 nodes).
fn slot(i: usize) -> u32 {
    u32::try_from(i).unwrap_or(u32::MAX)
}

/// The fleet as one update of [`Judged`] leaves it.
pub struct Judgement<'j> {
    /// The states to decide one by one (every state not counted in `rest`).
    pub nodes: &'j [NodeState],
    /// Their verdicts, in the same order.
    pub verdicts: &'j [Vec<CheckVerdict>],
    pub rest: &'j Rest,
    /// The uids of the nodes gone since the last update.
    pub gone: Vec<String>,
    from: &'j [Basis],
}

impl Judgement<'_> {
    /// The view of the snapshot each of `nodes` was last seen in, in their order: what a
    /// write about its decision is made against (its resourceVersion is the one the
    /// decision was made on).
    pub fn views(&self) -> impl Iterator<Item = &Arc<autohealer_healthcheck::NodeView>> {
        self.from.iter().map(|b| &b.view)
    }
}

/// What a kept state was judged from.
#[derive(Debug)]
struct Basis {
    view: Arc<autohealer_healthcheck::NodeView>,
    /// [`Observations::generation`] then.
    generation: u64,
    /// The instant from which it must be judged again even if nothing else changed.
    stale_at: Timestamp,
}

/// What an update judges with.
pub struct Judging<'a> {
    pub checks: &'a Checks,
    pub policy: &'a Policy,
    pub now: Timestamp,
    pub leases: &'a dyn Renewed,
    /// Uids of nodes to decide one by one although plain: those the fleet's recent
    /// starts or a starting repair name (see [`planner::plain`]).
    pub keep: &'a HashSet<&'a str>,
    /// Whether plain nodes are counted apart; when not, every node is decided one by
    /// one (`autohealer plan` shows each).
    pub apart: bool,
}

/// Whether every pure check finds the node healthy. For a plain node whose view and
/// probe results did not change, that is all a judgement would find out when its
/// verdict runs out (the rest of its state is what made it plain), without making the
/// state.
fn still_healthy(n: &autohealer_healthcheck::NodeView, checks: &Checks, now: Timestamp, leases: &dyn Renewed) -> bool {
    let ctx = autohealer_healthcheck::Context { now, lease_renewed: leases.renewed(n.name()) };
    checks.for_role(node::role(n)).iter().all(|c| c.kind() != CheckKind::Pure || c.judge(n, &ctx) == Health::Healthy)
}

/// What [`Rest`] counts of a node: its role, zone and attributes, as [`evaluate`] puts
/// them in its state (a plain node's state is not kept, so they are read again from
/// the view it was judged from when it changes).
fn counted<'v>(n: &'v autohealer_healthcheck::NodeView, checks: &Checks) -> (Role, Option<&'v str>, Vec<(String, String)>) {
    (node::role(n), n.label(node::ZONE_LABEL), node::attributes(n, &checks.attribute_labels))
}

/// Until when the verdicts of the node's clock- or Lease-reading checks hold (see
/// [`HealthCheck::verdict_holds_until`]); `now` when one cannot say, and for ever when
/// no check reads either.
fn holds_until(n: &autohealer_healthcheck::NodeView, checks: &Checks, now: Timestamp, leases: &dyn Renewed) -> Timestamp {
    let ctx = autohealer_healthcheck::Context { now, lease_renewed: leases.renewed(n.name()) };
    checks
        .for_role(node::role(n))
        .iter()
        .filter(|c| c.kind() == CheckKind::Pure && (c.reads_clock() || c.needs_node_leases()))
        .map(|c| c.verdict_holds_until(n, &ctx).unwrap_or(now))
        .min()
        .unwrap_or(Timestamp::MAX)
}

impl Judged {
    /// Brings the states up to date with `snapshot` (the order of the states is their
    /// own, not the snapshot's).
    pub fn update(&mut self, snapshot: &[Arc<autohealer_healthcheck::NodeView>], obs: &mut Observations, j: &Judging) -> Judgement<'_> {
        let (checks, now, leases) = (j.checks, j.now, j.leases);
        let mut alive = vec![false; self.states.len()];
        let mut keep = vec![false; self.states.len()];
        // Plain nodes seen, and those moved to the states (not gone).
        let mut seen = vec![false; self.plain.len()];
        let mut moved = vec![false; self.plain.len()];
        self.rejudged = 0;
        if self.index.is_empty() {
            // Most of a fleet is plain: its first update fills `plain` at once, without
            // the spare half that growing by doubling leaves.
            self.plain.reserve_exact(snapshot.len());
        }
        for n in snapshot {
            // Judged from the same state and probe results; whether its verdicts still hold
            // is `stale_at`'s.
            let same = |b: &Basis| b.generation == obs.generation && (Arc::ptr_eq(&b.view, n) || b.view.same_state(n));
            let kept = !j.apart || (!j.keep.is_empty() && j.keep.contains(n.uid()));
            match self.index.get(n.name()).copied() {
                Some(Slot::State(i)) if !alive[i as usize] => {
                    let i = i as usize;
                    alive[i] = true;
                    keep[i] = kept;
                    if same(&self.from[i]) && now < self.from[i].stale_at {
                        self.from[i].view = n.clone();
                    } else {
                        (self.states[i], self.verdicts[i]) = evaluate(&**n, checks, obs, now, leases);
                        let stale_at = holds_until(n, checks, now, leases);
                        self.from[i] = Basis { view: n.clone(), generation: obs.generation, stale_at };
                        self.rejudged += 1;
                    }
                }
                Some(Slot::Plain(i)) if !seen[i as usize] => {
                    let i = i as usize;
                    seen[i] = true;
                    let unchanged = !kept && same(&self.plain[i]);
                    if unchanged && now < self.plain[i].stale_at {
                        self.plain[i].view = n.clone();
                    } else if unchanged && still_healthy(n, checks, now, leases) {
                        // Only its verdict ran out: judged again, it is what it was.
                        self.plain[i] =
                            Basis { view: n.clone(), generation: obs.generation, stale_at: holds_until(n, checks, now, leases) };
                        self.rejudged += 1;
                    } else {
                        let (role, zone, attributes) = counted(&self.plain[i].view, checks);
                        self.rest.remove(role, zone, &attributes);
                        let (state, verdicts, basis) = self.judge(n, obs, j);
                        if !kept && planner::plain(&state, j.policy, now) {
                            // Changed, and plain still: it keeps its slot.
                            obs.healthy_since.remove(&state.uid);
                            self.rest.add(&state);
                            self.plain[i] = basis;
                        } else {
                            moved[i] = true;
                            self.keep_state(state, verdicts, basis);
                            alive.push(true);
                            keep.push(kept);
                        }
                    }
                }
                // A name twice in one snapshot cannot come from the cache, which is keyed by it.
                Some(_) => tracing::warn!(node = n.name(), "node listed twice; judged once"),
                None => {
                    let (state, verdicts, basis) = self.judge(n, obs, j);
                    // A plain one goes to the plain slots at once: the first update of a
                    // fleet of 65,000 would otherwise hold 65,000 states for a moment.
                    if !kept && planner::plain(&state, j.policy, now) {
                        obs.healthy_since.remove(&state.uid);
                        self.rest.add(&state);
                        self.index.insert(n.name().into(), Slot::Plain(slot(self.plain.len())));
                        self.plain.push(basis);
                        seen.push(true);
                        moved.push(false);
                    } else {
                        self.keep_state(state, verdicts, basis);
                        alive.push(true);
                        keep.push(kept);
                    }
                }
            }
        }
        // Nodes gone: their slots are filled from the end.
        let mut gone = Vec::new();
        let mut i = 0;
        while i < self.states.len() {
            if alive[i] {
                i += 1;
                continue;
            }
            self.index.remove(self.from[i].view.name());
            gone.push(std::mem::take(&mut self.states[i].uid));
            self.states.swap_remove(i);
            self.verdicts.swap_remove(i);
            self.from.swap_remove(i);
            alive.swap_remove(i);
            keep.swap_remove(i);
            self.point_state(i);
        }
        let mut i = 0;
        while i < self.plain.len() {
            if seen[i] && !moved[i] {
                i += 1;
                continue;
            }
            if !moved[i] {
                let view = &self.plain[i].view;
                let (role, zone, attributes) = counted(view, checks);
                self.rest.remove(role, zone, &attributes);
                self.index.remove(view.name());
                gone.push(view.uid().to_string());
            }
            self.plain.swap_remove(i);
            seen.swap_remove(i);
            moved.swap_remove(i);
            self.point_plain(i);
        }
        // States that may have become plain: those judged again, and those that were
        // not plain only for a while (still young, a repair in a window). From the end,
        // so that the state moved into a slot was looked at already.
        for i in (0..self.states.len()).rev() {
            if keep[i] || !planner::plain(&self.states[i], j.policy, now) {
                continue;
            }
            self.rest.add(&self.states[i]);
            obs.healthy_since.remove(&self.states[i].uid);
            let basis = self.from.swap_remove(i);
            if let Some(at) = self.index.get_mut(basis.view.name()) {
                *at = Slot::Plain(slot(self.plain.len()));
            }
            self.plain.push(basis);
            self.states.swap_remove(i);
            self.verdicts.swap_remove(i);
            self.point_state(i);
        }
        Judgement { nodes: &self.states, verdicts: &self.verdicts, rest: &self.rest, gone, from: &self.from }
    }

    /// Judges a node afresh.
    fn judge(
        &mut self,
        n: &Arc<autohealer_healthcheck::NodeView>,
        obs: &mut Observations,
        j: &Judging,
    ) -> (NodeState, Vec<CheckVerdict>, Basis) {
        let (state, verdicts) = evaluate(&**n, j.checks, obs, j.now, j.leases);
        let basis = Basis { view: n.clone(), generation: obs.generation, stale_at: holds_until(n, j.checks, j.now, j.leases) };
        self.rejudged += 1;
        (state, verdicts, basis)
    }

    /// Puts a state at the end of the states and points the index at it.
    fn keep_state(&mut self, state: NodeState, verdicts: Vec<CheckVerdict>, basis: Basis) {
        match self.index.get_mut(basis.view.name()) {
            Some(at) => *at = Slot::State(slot(self.states.len())),
            None => {
                self.index.insert(basis.view.name().into(), Slot::State(slot(self.states.len())));
            }
        }
        self.states.push(state);
        self.verdicts.push(verdicts);
        self.from.push(basis);
    }

    /// Points the index at what a swap_remove moved into slot `i`.
    fn point_state(&mut self, i: usize) {
        if let Some(b) = self.from.get(i)
            && let Some(at) = self.index.get_mut(b.view.name())
        {
            *at = Slot::State(slot(i));
        }
    }

    /// The same in `plain`, for a node still there (one moved to the states keeps its
    /// new slot).
    fn point_plain(&mut self, i: usize) {
        if let Some(b) = self.plain.get(i)
            && let Some(at @ Slot::Plain(_)) = self.index.get_mut(b.view.name())
        {
            *at = Slot::Plain(slot(i));
        }
    }
}

/// One check's verdict on one node, for `autohealer plan` and the metrics.
#[derive(Debug, Clone)]
pub struct CheckVerdict {
    pub check: String,
    pub health: Health,
}

pub fn parse_probe_time(v: &str) -> Option<Timestamp> {
    let dt = k8s_openapi::jiff::civil::DateTime::strptime(PROBE_TIME_FORMAT, v).ok()?;
    dt.to_zoned(k8s_openapi::jiff::tz::TimeZone::UTC).ok().map(|z| z.timestamp())
}

pub fn format_probe_time(t: Timestamp) -> String {
    t.strftime(PROBE_TIME_FORMAT).to_string()
}

/// Node name to the last renewal of its Lease in `kube-node-lease`.
pub type LeaseRenewals = HashMap<String, Timestamp>;

/// Per node Lease: its `renewTime` and when this healer saw it change.
pub type SeenRenewals = HashMap<String, (Timestamp, Timestamp)>;

/// When a node's Lease was last seen renewed, for the checks: read from the watch's own
/// map under its lock rather than from a copy (at 65,000 nodes a copy per evaluation
/// was 65,000 strings).
pub trait Renewed {
    fn renewed(&self, node: &str) -> Option<Timestamp>;
}

impl Renewed for LeaseRenewals {
    fn renewed(&self, node: &str) -> Option<Timestamp> {
        self.get(node).copied()
    }
}

impl Renewed for SeenRenewals {
    fn renewed(&self, node: &str) -> Option<Timestamp> {
        self.get(node).map(|(_, at)| *at)
    }
}

/// A node's Lease in `kube-node-lease` as the Heartbeat check reads it: its name and
/// `renewTime`, decoded straight from the JSON (holder, durations, owner references and
/// managed fields are skipped). At 65,000 nodes the watch carries 6,500 renewals a
/// second, so what each costs to decode matters.
#[derive(Debug, Clone, Default)]
pub struct NodeLease {
    /// Name and resourceVersion only (the watch resumes from the latter).
    pub metadata: ObjectMeta,
    pub renew_time: Option<Timestamp>,
}

impl k8s_openapi::Resource for NodeLease {
    const API_VERSION: &'static str = "coordination.k8s.io/v1";
    const GROUP: &'static str = "coordination.k8s.io";
    const KIND: &'static str = "Lease";
    const VERSION: &'static str = "v1";
    const URL_PATH_SEGMENT: &'static str = "leases";
    type Scope = k8s_openapi::NamespaceResourceScope;
}

impl k8s_openapi::Metadata for NodeLease {
    type Ty = ObjectMeta;

    fn metadata(&self) -> &ObjectMeta {
        &self.metadata
    }

    fn metadata_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

impl<'de> serde::Deserialize<'de> for NodeLease {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(serde::Deserialize)]
        struct Wire {
            #[serde(default)]
            metadata: WireMeta,
            #[serde(default)]
            spec: Option<WireSpec>,
        }
        #[derive(serde::Deserialize, Default)]
        #[serde(rename_all = "camelCase")]
        struct WireMeta {
            #[serde(default)]
            name: Option<String>,
            #[serde(default)]
            namespace: Option<String>,
            #[serde(default)]
            resource_version: Option<String>,
        }
        #[derive(serde::Deserialize, Default)]
        #[serde(rename_all = "camelCase")]
        struct WireSpec {
            #[serde(default)]
            renew_time: Option<MicroTime>,
        }
        let w = Wire::deserialize(d)?;
        Ok(NodeLease {
            metadata: ObjectMeta {
                name: w.metadata.name,
                namespace: w.metadata.namespace,
                resource_version: w.metadata.resource_version,
                ..Default::default()
            },
            renew_time: w.spec.and_then(|s| s.renew_time).map(|t| t.0),
        })
    }
}

/// Takes note of a Lease as watched at `now`. A renewal counts from when it was seen
/// to change, never from the kubelet's own clock: the node-lifecycle controller does
/// the same, so a node whose clock lags is not stale for ever. A Lease seen for the
/// first time counts as renewed now: the healer gives it a full duration to show it
/// is alive, as the controller does after it starts.
pub fn saw_renewal(seen: &mut SeenRenewals, name: &str, renewed: Timestamp, now: Timestamp) {
    match seen.get_mut(name) {
        Some((r, at)) if *r != renewed => (*r, *at) = (renewed, now),
        Some(_) => {}
        None => {
            seen.insert(name.to_string(), (renewed, now));
        }
    }
}

/// Judges one node with its role's checks. `n` is the cached view, or a full Node from a
/// tool that listed Nodes itself.
pub fn evaluate<N: AsNodeView + ?Sized>(
    n: &N,
    checks: &Checks,
    obs: &mut Observations,
    now: Timestamp,
    leases: &dyn Renewed,
) -> (NodeState, Vec<CheckVerdict>) {
    let view = n.as_node_view();
    let n = view.as_ref();
    let role = node::role(n);
    let ctx = autohealer_healthcheck::Context { now, lease_renewed: leases.renewed(node::name(n)) };
    let uid = n.metadata.uid.clone().unwrap_or_default();
    let mut findings = Vec::new();
    let mut alerts = Vec::new();
    let mut verdicts = Vec::new();
    for (i, check) in checks.for_role(role).iter().enumerate() {
        let key = (uid.clone(), i);
        let health = match check.kind() {
            CheckKind::Pure => check.judge(n, &ctx),
            CheckKind::Probe => obs.probes.get(&key).cloned().unwrap_or(Health::Healthy),
        };
        match &health {
            Health::Healthy => {
                obs.first_seen.remove(&key);
            }
            Health::Unhealthy { since, reason } => {
                let persisted = check.unhealthy_annotation().and_then(|a| node::annotation(n, a)).and_then(parse_probe_time);
                let since = since.or(persisted).unwrap_or_else(|| *obs.first_seen.entry(key).or_insert(now));
                let disposition = match checks.routes.get(&(role, i)) {
                    Some(route) => (route.0)(reason),
                    None if checks.notify_only.contains(&(role, i)) => Disposition::NotifyOnly,
                    None => Disposition::Repair(None),
                };
                let finding = |steps| Finding {
                    check: check.type_name().to_string(),
                    since,
                    unhealthy_duration: check.unhealthy_duration(),
                    reason: reason.clone(),
                    steps,
                };
                match disposition {
                    Disposition::Repair(steps) => findings.push(finding(steps)),
                    Disposition::NotifyOnly => alerts.push(finding(None)),
                    Disposition::Ignore => {}
                }
            }
        }
        verdicts.push(CheckVerdict { check: check.type_name().to_string(), health });
    }
    let healthy_since = if findings.is_empty() {
        Some(*obs.healthy_since.entry(uid.clone()).or_insert(now))
    } else {
        obs.healthy_since.remove(&uid);
        None
    };
    let (_, zone, attributes) = counted(n, checks);
    let state = NodeState {
        name: node::name(n).to_string(),
        uid: uid.clone(),
        role,
        zone: zone.map(String::from),
        healthy_since,
        history: crate::ledger::parse_history(node::annotation(n, crate::ledger::HISTORY_ANNOTATION)),
        created: node::created(n),
        boot_id: node::boot_id(n).map(String::from),
        findings,
        alerts,
        ledger: Ledger::parse(node::annotation(n, REPAIR_ANNOTATION)),
        skip: node::flag(n, node::SKIP_ANNOTATION),
        approve: node::annotation(n, node::APPROVE_ANNOTATION).map(|v| v.trim().to_string()),
        deny: node::annotation(n, node::DENY_ANNOTATION).map(|v| v.trim().to_string()),
        remediate: node::flag(n, node::REMEDIATE_ANNOTATION),
        removing: node::removing(n),
        attributes,
    };
    (state, verdicts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    /// A pure check that counts its judgements and may say it reads the clock.
    #[derive(Debug)]
    struct Counting {
        clock: bool,
        judged: std::sync::atomic::AtomicUsize,
    }

    #[async_trait::async_trait]
    impl HealthCheck for Counting {
        fn type_name(&self) -> &str {
            "Counting"
        }
        fn unhealthy_duration(&self) -> std::time::Duration {
            std::time::Duration::from_secs(60)
        }
        fn reads_clock(&self) -> bool {
            self.clock
        }
        fn judge(&self, n: &autohealer_healthcheck::NodeView, _: &autohealer_healthcheck::Context) -> Health {
            self.judged.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            match n.condition("Ready") {
                Some(c) if c.status != "True" => Health::unhealthy("not ready"),
                _ => Health::Healthy,
            }
        }
    }

    /// One update with the default policy; every state after it.
    fn judge<'j>(
        judged: &'j mut Judged,
        fleet: &[Arc<autohealer_healthcheck::NodeView>],
        checks: &Checks,
        obs: &mut Observations,
        now: Timestamp,
        leases: &dyn Renewed,
    ) -> &'j [NodeState] {
        let policy = Policy::default();
        judged.update(fleet, obs, &Judging { checks, policy: &policy, now, leases, keep: &HashSet::new(), apart: false }).nodes
    }

    fn view(name: &str, ready: &str, heartbeat: &str) -> Arc<autohealer_healthcheck::NodeView> {
        Arc::new(
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": name, "uid": name, "resourceVersion": heartbeat},
                "status": {"conditions": [{"type": "Ready", "status": ready, "lastHeartbeatTime": heartbeat}]}
            }))
            .unwrap(),
        )
    }

    #[test]
    fn only_nodes_that_changed_are_judged_again() {
        let check = Arc::new(Counting { clock: false, judged: Default::default() });
        let checks = Checks { worker: vec![check.clone()], ..Default::default() };
        let (mut judged, mut obs) = (Judged::default(), Observations::default());
        let now = Timestamp::from_second(1_800_000_000).unwrap();
        let count = || check.judged.load(std::sync::atomic::Ordering::Relaxed);
        let fleet: Vec<_> = (0..100).map(|i| view(&format!("w{i}"), "True", "2026-01-01T00:00:00Z")).collect();
        judge(&mut judged, &fleet, &checks, &mut obs, now, &LeaseRenewals::default());
        assert_eq!(count(), 100);

        // A heartbeat on every node and one that stops being Ready: one judgement.
        let mut next: Vec<_> = (0..100).map(|i| view(&format!("w{i}"), "True", "2026-01-01T00:05:00Z")).collect();
        next[7] = view("w7", "False", "2026-01-01T00:05:00Z");
        let states = judge(&mut judged, &next, &checks, &mut obs, now, &LeaseRenewals::default());
        assert_eq!(count(), 101);
        let unhealthy: Vec<&str> = states.iter().filter(|s| !s.findings.is_empty()).map(|s| s.name.as_str()).collect();
        assert_eq!(unhealthy, ["w7"]);

        // A node gone is forgotten, the others keep their states.
        next.remove(3);
        let states = judge(&mut judged, &next, &checks, &mut obs, now, &LeaseRenewals::default());
        assert_eq!((states.len(), count()), (99, 101));
        assert!(states.iter().all(|s| s.name != "w3"));
        assert_eq!(states.iter().filter(|s| !s.findings.is_empty()).count(), 1);

        // A probe result that changes makes every state stale (a probing check may sit
        // beside the pure one); one that is the same again does not.
        assert!(obs.probed("w1".into(), 1, Health::unhealthy("no answer")));
        judge(&mut judged, &next, &checks, &mut obs, now, &LeaseRenewals::default());
        assert_eq!(count(), 101 + 99);
        assert!(!obs.probed("w1".into(), 1, Health::unhealthy("no answer")));
        judge(&mut judged, &next, &checks, &mut obs, now, &LeaseRenewals::default());
        assert_eq!(count(), 101 + 99);

        // A check that reads the clock is judged every time.
        let clocked = Arc::new(Counting { clock: true, judged: Default::default() });
        let checks = Checks { worker: vec![clocked.clone()], ..Default::default() };
        let mut judged = Judged::default();
        for _ in 0..3 {
            judge(&mut judged, &next, &checks, &mut obs, now, &LeaseRenewals::default());
        }
        assert_eq!(clocked.judged.load(std::sync::atomic::Ordering::Relaxed), 3 * 99);
    }

    fn zoned(name: &str, zone: &str, kernel: &str, ready: &str) -> Arc<autohealer_healthcheck::NodeView> {
        Arc::new(
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": name, "uid": format!("uid-{name}"), "resourceVersion": "1",
                    "labels": {node::ZONE_LABEL: zone}},
                "status": {"conditions": [{"type": "Ready", "status": ready}], "nodeInfo": {"kernelVersion": kernel}}
            }))
            .unwrap(),
        )
    }

    /// The counts kept as nodes change are the counts of a split made at once, and the
    /// nodes given one by one are the others, whatever changes in between.
    #[test]
    fn the_rest_kept_as_nodes_change_is_the_split_of_every_state() {
        let check = Arc::new(Counting { clock: false, judged: Default::default() });
        let checks = Checks { worker: vec![check], ..Default::default() };
        let policy = Policy::default();
        let (mut judged, mut obs) = (Judged::default(), Observations::default());
        let now = Timestamp::from_second(1_800_000_000).unwrap();
        let mut fleet: Vec<_> = (0..40).map(|i| zoned(&format!("w{i}"), ["a", "b", "c"][i % 3], ["k1", "k2"][i % 2], "True")).collect();
        let (mut rng, mut busy) = (7u64, 0);
        for round in 0..300 {
            // Up to six changes at once: several plain nodes moved or gone in one update.
            let changes = 1 + round % 6;
            for c in 0..changes {
                rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                let i = (rng >> 33) as usize % fleet.len();
                let name = fleet[i].name().to_string();
                match (rng >> 20) % 5 {
                    0 => fleet[i] = zoned(&name, "a", "k3", "False"),
                    1 | 4 => fleet[i] = zoned(&name, ["a", "b", "c"][i % 3], "k1", "True"),
                    2 => fleet[i] = zoned(&name, "d", "k2", "True"),
                    _ => {
                        fleet.swap_remove(i);
                        fleet.push(zoned(&format!("n{round}-{c}"), "b", "k1", "True"));
                    }
                }
            }
            let keep_uids: Vec<String> = (0..changes).map(|c| format!("uid-w{}", (round + c) % 40)).collect();
            let keep: HashSet<&str> = if round % 5 == 0 { keep_uids.iter().map(String::as_str).collect() } else { HashSet::new() };
            let judging = Judging { checks: &checks, policy: &policy, now, leases: &LeaseRenewals::default(), keep: &keep, apart: true };
            let j = judged.update(&fleet, &mut obs, &judging);
            let (nodes, rest) = (j.nodes.iter().map(|s| s.name.clone()).collect::<BTreeSet<_>>(), j.rest.clone());
            if round > 0 {
                assert!(judged.rejudged <= 2 * changes, "round {round}: {} judged again", judged.rejudged);
            }
            let every: Vec<NodeState> =
                fleet.iter().map(|v| evaluate(&**v, &checks, &mut Observations::default(), now, &LeaseRenewals::default()).0).collect();
            let (kept, split) = planner::split(&every, &policy, now, |n| keep.contains(n.uid.as_str()));
            assert_eq!(rest, split, "round {round}");
            assert_eq!(nodes, kept.iter().map(|s| s.name.clone()).collect::<BTreeSet<_>>(), "round {round}");
            assert!(rest.len() > 20, "round {round}: {} counted apart", rest.len());
            busy += usize::from(!nodes.is_empty());
        }
        assert!(busy > 150, "only {busy} rounds had a node to decide one by one");
    }

    #[test]
    fn a_heartbeat_verdict_is_kept_until_the_lease_could_be_stale() {
        let hb: Arc<dyn HealthCheck> =
            Arc::new(autohealer_healthcheck::Heartbeat::from_params(&serde_json::json!({"unhealthy-duration": "60s"}), "p").unwrap());
        let checks = Checks { worker: vec![hb], ..Default::default() };
        let at = |s: i64| Timestamp::from_second(1_800_000_000 + s).unwrap();
        let fleet: Vec<_> = (0..10).map(|i| view(&format!("w{i}"), "True", "2026-01-01T00:00:00Z")).collect();
        let renewed = |t: i64, stale: &[usize]| -> LeaseRenewals {
            (0..10).map(|i| (format!("w{i}"), if stale.contains(&i) { at(0) } else { at(t) })).collect()
        };
        // Whether the healthy nodes are kept as states or counted apart as plain.
        for apart in [false, true] {
            let (mut judged, mut obs) = (Judged::default(), Observations::default());
            let (policy, keep) = (Policy::default(), HashSet::new());
            let mut judge = |now: Timestamp, leases: &LeaseRenewals| -> (usize, Vec<String>) {
                let j = Judging { checks: &checks, policy: &policy, now, leases, keep: &keep, apart };
                let stale =
                    judged.update(&fleet, &mut obs, &j).nodes.iter().filter(|s| !s.findings.is_empty()).map(|s| s.name.clone()).collect();
                (judged.rejudged, stale)
            };
            assert_eq!(judge(at(0), &renewed(0, &[])).0, 10);
            // 15 s later, renewed meanwhile: nothing to judge again.
            assert_eq!(judge(at(15), &renewed(10, &[])).0, 0);
            // At 60 s the verdicts of the first judgement run out: judged again, and w3,
            // whose Lease stopped at 0, is found stale.
            assert_eq!(judge(at(60), &renewed(55, &[3])), (10, vec!["w3".to_string()]), "apart: {apart}");
            // A stale one is judged every time (it may renew at any moment), the others not.
            assert_eq!(judge(at(61), &renewed(55, &[3])), (1, vec!["w3".to_string()]), "apart: {apart}");
            // Renewed again: healthy, and (apart) plain once more.
            assert_eq!(judge(at(62), &renewed(62, &[])), (1, vec![]), "apart: {apart}");
        }
    }

    // Defect 6: a node whose clock lags a minute keeps renewing; it is never stale.
    #[test]
    fn a_lagging_node_clock_is_judged_by_when_the_renewal_was_seen() {
        let at = |s: i64| Timestamp::from_second(1_800_000_000 + s).unwrap();
        let mut seen = SeenRenewals::new();
        for k in 0..10 {
            // The kubelet's clock is 60 s behind the healer's.
            saw_renewal(&mut seen, "w1", at(k * 10 - 60), at(k * 10));
        }
        assert_eq!(seen.renewed("w1"), Some(at(90)));
        // No renewal any more: the age grows from when the last one was seen.
        saw_renewal(&mut seen, "w1", at(30), at(200));
        assert_eq!(seen.renewed("w1"), Some(at(90)));
    }

    #[test]
    fn probe_time_round_trips_in_upstream_format() {
        let t: Timestamp = "2026-03-04T05:06:07Z".parse().unwrap();
        assert_eq!(format_probe_time(t), "2026-03-04 05:06:07");
        assert_eq!(parse_probe_time("2026-03-04 05:06:07"), Some(t));
        assert_eq!(parse_probe_time("yesterday"), None);
    }
}
