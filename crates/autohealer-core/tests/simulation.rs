//! The lifecycle simulation: the healer's pure layer — planner, effects, the step
//! transitions, the fleet state — driven by a seeded scheduler through the faults a
//! production cluster meets, with the shell's behaviour modelled op by op (one fenced
//! ledger write or one cloud call each, cancellable between any two). After every
//! step the safety invariants are checked; a failing seed prints itself and the trace
//! of the failing node to replay it: `SIM_SEED=<seed> cargo test -p autohealer-core
//! --test simulation`. `SIM_SEEDS=N` sets how many seeds run (CI: the default).

use autohealer_cloud::{Action, ActionOutcome, CloudError, Phase, Progress, RepairGate, Role};
use autohealer_core::effects::{self, Effect, Memory, Work};
use autohealer_core::fleet::FleetState;
use autohealer_core::ledger::{HISTORY_ANNOTATION, Ledger, RepairRecord, parse_history, push_history};
use autohealer_core::planner::{
    self, Approval, Decision, Finding, Input, Limits, NodeState, Pause, Plan, Policy, Rest, Scope, Threshold, WorkloadCheck,
};
use autohealer_core::reason::Reason;
use autohealer_core::step::{self, After, Facts};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::Duration;

const UNHEALTHY: Duration = Duration::from_secs(60);
const BOOT: i64 = 60;
const REPLACE_JOIN: i64 = 180;
const MAGNUM_BUSY: i64 = 120;
/// How long a machine the healer stopped may stay stopped before the run fails,
/// unless an Event says why (the stall and restore delays add up to well under it).
const STOPPED_BOUND: i64 = 4 * 3600;
/// The shortest `rebuild-delay-after-reboot` a config reload sets.
const MIN_REBUILD_DELAY: u64 = 120;
/// The most two replicas' clocks differ.
const MAX_SKEW: i64 = 10;

fn secs(t: Timestamp, s: i64) -> Timestamp {
    t.checked_add(SignedDuration::from_secs(s)).unwrap_or(t)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// A reboot cures it.
    Soft,
    /// Only a new machine cures it.
    Hard,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Machine {
    Running,
    Booting {
        until: Timestamp,
    },
    Stopped {
        by_healer: bool,
        since: Timestamp,
    },
    /// Removed by a resize: the node is recreated at `join`.
    Replacing {
        join: Timestamp,
    },
}

#[derive(Debug, Clone)]
struct SimNode {
    name: String,
    uid: String,
    role: Role,
    zone: String,
    created: Timestamp,
    rv: u64,
    boot: u64,
    annotations: BTreeMap<String, String>,
    unschedulable: bool,
    remediate: bool,
    skip: bool,
    ready: bool,
    ready_since: Timestamp,
    machine: Machine,
    fault: Option<Fault>,
    /// Its pods crash-loop while the kubelet reports Ready: a fault only a new machine
    /// cures, and that only the workload check can see once a repair "worked".
    pods_crash: bool,
    /// The operator's answers: `autohealer.dev/approve` and `autohealer.dev/deny`.
    approve: Option<String>,
    deny: Option<String>,
    /// Counts failures, for the per-failure invariants.
    failure: u32,
}

impl SimNode {
    fn ledger(&self) -> Ledger {
        Ledger::parse(self.annotations.get(autohealer_core::ledger::REPAIR_ANNOTATION).map(String::as_str))
    }

    fn record(&self) -> Option<RepairRecord> {
        match self.ledger() {
            Ledger::Record(r) => Some(*r),
            _ => None,
        }
    }

    fn kubelet_says_ready(&self) -> bool {
        self.machine == Machine::Running && self.fault.is_none()
    }

    fn state(&self) -> NodeState {
        let findings = if self.ready {
            vec![]
        } else {
            vec![Finding {
                check: "NodeCondition".into(),
                since: self.ready_since,
                unhealthy_duration: UNHEALTHY,
                reason: "condition Ready is False".into(),
                steps: None,
            }]
        };
        NodeState {
            name: self.name.clone(),
            uid: self.uid.clone(),
            role: self.role,
            zone: Some(self.zone.clone()),
            created: Some(self.created),
            boot_id: Some(format!("boot-{}", self.boot)),
            healthy_since: self.ready.then_some(self.ready_since),
            findings,
            alerts: vec![],
            ledger: self.ledger(),
            history: parse_history(self.annotations.get(HISTORY_ANNOTATION).map(String::as_str)),
            skip: self.skip,
            remediate: self.remediate,
            removing: None,
            // A fifth of the fleet runs another kernel, so that failures there can look
            // like a rollout and be held as correlated.
            attributes: vec![(
                "kernelVersion".into(),
                if self.name.ends_with('0') || self.name.ends_with('5') { "k2" } else { "k1" }.into(),
            )],
            approve: self.approve.clone(),
            deny: self.deny.clone(),
        }
    }
}

/// One op of a task: the shell carries a task out one op at a time.
#[derive(Debug, Clone)]
enum Op {
    /// A fenced write of the node's ledger (and cordon, history), then `then`;
    /// `begins` marks the first write of a new repair.
    Write {
        record: Option<RepairRecord>,
        cordon: bool,
        history: Option<autohealer_core::ledger::HistoryEntry>,
        then: Box<Op>,
        begins: bool,
    },
    Drain {
        record: RepairRecord,
    },
    Call {
        record: RepairRecord,
        resumed: bool,
        uncertain: u32,
    },
    Restore {
        record: RepairRecord,
    },
    Done,
}

#[derive(Debug, Clone)]
struct Task {
    replica: usize,
    uid: String,
    rv: u64,
    op: Op,
}

#[derive(Debug, Default)]
struct Replica {
    memory: Memory,
    fleet: Option<FleetState>,
    pause: Option<Pause>,
    cache: Vec<SimNode>,
    blind_since: Option<Timestamp>,
    regained: Option<Timestamp>,
    skew: i64,
    identity: String,
}

/// What the cloud did, for the invariants.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Did {
    Reboot,
    Stop,
    Resize,
}

struct World {
    rng: StdRng,
    now: Timestamp,
    nodes: Vec<SimNode>,
    next_uid: u64,
    replicas: Vec<Replica>,
    leader: Option<usize>,
    tasks: Vec<Task>,
    apiserver_up: bool,
    pause: bool,
    pause_watch_broken: bool,
    fleet_lease: Option<String>,
    magnum_busy_until: Timestamp,
    /// The last resize failed (UPDATE_FAILED) until another one succeeds.
    magnum_failed: bool,
    /// The cloud replaces masters itself (a Cluster API driver's MachineHealthCheck):
    /// the healer hands them over after a reboot that did not help.
    masters_delegated: bool,
    policy: Policy,
    /// Every trace line, and per node uid the indices that touched it.
    trace: Vec<String>,
    /// (node uid, repair first_started) → cloud effects done in that repair.
    done_in_repair: HashMap<(String, Timestamp), Vec<Did>>,
    starts: Vec<Timestamp>,
    /// Scope → last instant a leader saw it short-circuited.
    seen_short: HashMap<Scope, Timestamp>,
    /// Events per (node uid, failure).
    events: HashMap<(String, u32), usize>,
    /// Proposals the healer announced (RepairProposed Events), by id: the node's uid and
    /// when the proposal expires. The operator answers only these.
    proposals: BTreeMap<String, (String, Timestamp)>,
    /// Worker nodes the leader's last plan held: their step is over and the next one
    /// waits (for approval, say); the planner gives them no concurrency slot.
    held: HashSet<String>,
    /// The proposals the operator approved.
    approved: BTreeSet<String>,
    answered: BTreeSet<String>,
    /// Node uid → the reasons of its Events.
    event_log: HashMap<String, Vec<Reason>>,
    writes: usize,
    cloud_calls: usize,
    longest_trace: usize,
    /// What the run exercised, to show the faults reached the paths they are for.
    stats: BTreeMap<&'static str, usize>,
}

type Check = Result<(), String>;

/// Whether the plan made with the plain nodes as counts says what the plan of every
/// node one by one says: the same short-circuits and wake-up, the same decision for each
/// node it has, and `Healthy` (or `NotMonitored`) for each it left out.
fn same_plan(full: &Plan, apart: &Plan) -> Check {
    if full.short_circuits != apart.short_circuits {
        return Err(format!(
            "short-circuits differ with plain nodes counted apart: {:?} / {:?}",
            full.short_circuits, apart.short_circuits
        ));
    }
    if full.wake_at != apart.wake_at {
        return Err(format!("wake-up differs with plain nodes counted apart: {:?} / {:?}", full.wake_at, apart.wake_at));
    }
    let decided: BTreeMap<&str, &Decision> = apart.nodes.iter().map(|n| (n.name.as_str(), &n.decision)).collect();
    for n in &full.nodes {
        match decided.get(n.name.as_str()) {
            Some(d) if *d != &n.decision => return Err(format!("{}: {:?} one by one, {d:?} with plain nodes apart", n.name, n.decision)),
            None if !matches!(n.decision, Decision::Healthy | Decision::NotMonitored) => {
                return Err(format!("{} left out as plain but decided {:?}", n.name, n.decision));
            }
            _ => {}
        }
    }
    Ok(())
}

impl World {
    fn new(seed: u64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let now: Timestamp = "2026-06-01T00:00:00Z".parse().unwrap_or_default();
        let workers = rng.random_range(3..9);
        let masters = if rng.random_bool(0.7) { 3 } else { 1 };
        let mut nodes = Vec::new();
        let mut next_uid = 0;
        for i in 0..masters + workers {
            let role = if i < masters { Role::Master } else { Role::Worker };
            next_uid += 1;
            nodes.push(SimNode {
                name: if role == Role::Master { format!("m{i}") } else { format!("w{}", i - masters) },
                uid: format!("uid-{next_uid}"),
                role,
                zone: ["a", "b", "c"][i % 3].into(),
                created: secs(now, -86400),
                rv: 1,
                boot: 1,
                annotations: BTreeMap::new(),
                unschedulable: false,
                remediate: false,
                skip: false,
                ready: true,
                ready_since: secs(now, -86400),
                machine: Machine::Running,
                fault: None,
                pods_crash: false,
                approve: None,
                deny: None,
                failure: 0,
            });
        }
        let dry_run = rng.random_bool(0.1);
        let masters_delegated = rng.random_bool(0.3);
        let slow_start = rng.random_bool(0.3).then_some(Duration::from_secs(3600));
        // Some seeds need an operator's approval for replaces (and for every master step),
        // and some check workloads after a repair.
        let approval = if rng.random_bool(0.3) {
            Approval {
                worker: vec![Action::Replace],
                master: if rng.random_bool(0.5) { vec![Action::Reboot, Action::Replace] } else { vec![] },
                expiry: Duration::from_secs(rng.random_range(600..1800)),
            }
        } else {
            Approval::default()
        };
        let workloads = WorkloadCheck { worker: rng.random_bool(0.5), master: rng.random_bool(0.2), window: Duration::from_secs(300) };
        let policy = Policy {
            slow_start,
            approval,
            workloads,
            dry_run,
            check_delay_after_add: Duration::from_secs(120),
            rebuild_delay_after_reboot: Duration::from_secs(300),
            replace_timeout: Duration::from_secs(900),
            limits: Limits {
                master_max_unhealthy: Threshold::Count(1),
                worker_max_unhealthy: Threshold::Percent(50.0),
                worker_concurrency: rng.random_range(1..4),
                repairs_per_hour: rng.random_range(3..12),
                retry_delay: Duration::from_secs(300),
                storm_cooldown: Duration::from_secs(300),
                ..Default::default()
            },
            ..Default::default()
        };
        let replicas = (0..2)
            .map(|i| Replica {
                skew: rng.random_range(-MAX_SKEW / 2..=MAX_SKEW / 2),
                identity: format!("replica-{i}"),
                ..Default::default()
            })
            .collect();
        Self {
            rng,
            now,
            nodes,
            next_uid,
            replicas,
            leader: None,
            tasks: vec![],
            apiserver_up: true,
            pause: false,
            pause_watch_broken: false,
            fleet_lease: None,
            magnum_busy_until: now,
            magnum_failed: false,
            masters_delegated,
            policy,
            trace: vec![],
            done_in_repair: HashMap::new(),
            starts: vec![],
            seen_short: HashMap::new(),
            events: HashMap::new(),
            proposals: BTreeMap::new(),
            approved: BTreeSet::new(),
            held: HashSet::new(),
            answered: BTreeSet::new(),
            event_log: HashMap::new(),
            writes: 0,
            cloud_calls: 0,
            longest_trace: 0,
            stats: BTreeMap::new(),
        }
    }

    fn log(&mut self, line: String) {
        self.trace.push(format!("{} {line}", self.now.strftime("%H:%M:%S")));
    }

    fn node(&self, uid: &str) -> Option<&SimNode> {
        self.nodes.iter().find(|n| n.uid == uid)
    }

    fn node_mut(&mut self, uid: &str) -> Option<&mut SimNode> {
        self.nodes.iter_mut().find(|n| n.uid == uid)
    }

    // ---- the world moving on its own -------------------------------------------

    fn kubelets(&mut self) {
        let now = self.now;
        let mut joined = Vec::new();
        for n in &mut self.nodes {
            match n.machine {
                Machine::Booting { until } if now >= until => {
                    n.machine = Machine::Running;
                    n.boot += 1;
                    if n.fault == Some(Fault::Soft) {
                        n.fault = None;
                    }
                    n.rv += 1;
                }
                Machine::Replacing { join } if now >= join => joined.push(n.name.clone()),
                _ => {}
            }
            if !self.apiserver_up {
                continue;
            }
            let want = n.kubelet_says_ready();
            if want != n.ready {
                n.ready = want;
                n.ready_since = now;
                n.rv += 1;
            }
        }
        for name in joined {
            if self.apiserver_up {
                self.recreate(&name, "a new machine joined after the resize");
            }
        }
    }

    /// The node object is deleted and created again under its name: a new uid, no
    /// annotations (its history goes with it), healthy.
    fn recreate(&mut self, name: &str, why: &str) {
        self.next_uid += 1;
        let uid = format!("uid-{}", self.next_uid);
        let now = self.now;
        if let Some(n) = self.nodes.iter_mut().find(|n| n.name == name) {
            let old = n.uid.clone();
            *n = SimNode {
                uid: uid.clone(),
                created: now,
                rv: 1,
                boot: 1,
                annotations: BTreeMap::new(),
                unschedulable: false,
                remediate: false,
                ready: true,
                ready_since: now,
                machine: Machine::Running,
                fault: None,
                pods_crash: false,
                approve: None,
                deny: None,
                failure: n.failure + 1,
                ..n.clone()
            };
            self.log(format!("{name} recreated ({why}): {old} -> {uid}"));
        }
    }

    fn inject(&mut self) {
        let r = self.rng.random_range(0..100);
        let i = self.rng.random_range(0..self.nodes.len());
        let now = self.now;
        match r {
            0..=44 => {
                let n = &mut self.nodes[i];
                if n.fault.is_none() && n.machine == Machine::Running {
                    let kind = if self.rng.random_bool(0.6) { Fault::Soft } else { Fault::Hard };
                    n.fault = Some(kind);
                    // A reboot brings the kubelet back, not always its pods.
                    n.pods_crash = kind == Fault::Soft && self.rng.random_bool(0.4);
                    n.failure += 1;
                    let name = n.name.clone();
                    let pods = if n.pods_crash { ", its pods will crash-loop after a reboot" } else { "" };
                    self.log(format!("{name} fault {kind:?}{pods}"));
                }
            }
            45..=54 => {
                // A flap: NotReady for a second, then Ready again.
                let n = &mut self.nodes[i];
                if n.ready && self.apiserver_up {
                    n.ready = false;
                    n.ready_since = now;
                    n.rv += 1;
                    let name = n.name.clone();
                    self.log(format!("{name} flaps"));
                }
            }
            55..=59 if self.apiserver_up && self.nodes[i].machine == Machine::Running => {
                let name = self.nodes[i].name.clone();
                self.recreate(&name, "deleted and recreated by hand");
            }
            60..=62 => {
                let n = &mut self.nodes[i];
                if self.apiserver_up && !n.remediate {
                    n.remediate = true;
                    n.rv += 1;
                    let name = n.name.clone();
                    self.log(format!("{name} autohealer.dev/remediate=true"));
                }
            }
            63..=65 => {
                let who = self.rng.random_range(0..self.replicas.len());
                self.restart(who);
            }
            66..=71 => self.leadership(),
            // Pauses and broken watches are toggled off more readily than on: an
            // operator pauses for an upgrade, not for the day.
            72..=74 if self.pause || self.rng.random_bool(0.4) => {
                self.pause = !self.pause;
                let p = self.pause;
                self.log(format!("pause={p}"));
            }
            75 if self.pause_watch_broken || self.rng.random_bool(0.4) => {
                self.pause_watch_broken = !self.pause_watch_broken;
                let b = self.pause_watch_broken;
                self.log(format!("pause watch broken={b}"));
            }
            76..=79 => {
                self.apiserver_up = !self.apiserver_up;
                let up = self.apiserver_up;
                self.log(format!("apiserver up={up}"));
                for rep in &mut self.replicas {
                    if up {
                        if rep.blind_since.take().is_some() {
                            rep.regained = Some(now);
                        }
                    } else {
                        rep.blind_since.get_or_insert(now);
                    }
                }
            }
            80..=82 => {
                // A config reload: new delays, and the leader forgets what it announced
                // (check indices may have moved), as the healer does.
                self.policy.rebuild_delay_after_reboot = Duration::from_secs(self.rng.random_range(MIN_REBUILD_DELAY..600));
                self.policy.limits.retry_delay = Duration::from_secs(self.rng.random_range(60..900));
                for rep in &mut self.replicas {
                    rep.memory = Memory::default();
                }
                let (a, b) = (self.policy.rebuild_delay_after_reboot.as_secs(), self.policy.limits.retry_delay.as_secs());
                self.log(format!("config reloaded: rebuild-delay-after-reboot {a}s, node-retry.delay {b}s"));
            }
            83 => {
                // A zone goes dark: its kubelets stop reporting.
                let zone = self.nodes[i].zone.clone();
                for n in self.nodes.iter_mut().filter(|n| n.zone == zone && n.fault.is_none() && n.machine == Machine::Running) {
                    n.fault = Some(Fault::Soft);
                    n.failure += 1;
                }
                self.log(format!("zone {zone} outage"));
            }
            _ => {}
        }
    }

    /// The operator answers a proposal the healer announced, now and then after it
    /// expired; faults or not.
    fn operator(&mut self) {
        if !self.apiserver_up {
            return;
        }
        let open: Vec<(String, String)> =
            self.proposals.iter().filter(|(id, _)| !self.answered.contains(*id)).map(|(id, (uid, _))| (id.clone(), uid.clone())).collect();
        if open.is_empty() {
            return;
        }
        let (id, uid) = open[self.rng.random_range(0..open.len())].clone();
        self.answered.insert(id.clone());
        *self.stats.entry("answers").or_default() += 1;
        let approve = self.rng.random_bool(0.75);
        if approve {
            self.approved.insert(id.clone());
        }
        if let Some(n) = self.node_mut(&uid) {
            if approve {
                n.approve = Some(id.clone());
            } else {
                n.deny = Some(id.clone());
            }
            n.rv += 1;
            let name = n.name.clone();
            let how = if approve { "approve" } else { "deny" };
            self.log(format!("{name} autohealer.dev/{how}={id}"));
        }
    }

    fn restart(&mut self, who: usize) {
        let id = self.replicas[who].identity.clone();
        self.tasks.retain(|t| t.replica != who);
        if self.leader == Some(who) {
            self.leader = None;
        }
        let skew = self.replicas[who].skew;
        self.replicas[who] = Replica { skew, identity: id.clone(), ..Default::default() };
        self.log(format!("{id} restarted"));
    }

    /// Leadership moves: the leader steps down (its Lease renewal seen late) and its
    /// tasks are cancelled between ops; or a replica takes an empty Lease.
    fn leadership(&mut self) {
        match self.leader {
            Some(l) => {
                self.tasks.retain(|t| t.replica != l);
                let r = &mut self.replicas[l];
                r.memory = Memory::default();
                r.fleet = None;
                self.leader = None;
                let id = r.identity.clone();
                self.log(format!("{id} lost leadership"));
            }
            None if self.apiserver_up => {
                let who = self.rng.random_range(0..self.replicas.len());
                self.leader = Some(who);
                let id = self.replicas[who].identity.clone();
                self.log(format!("{id} leads"));
            }
            None => {}
        }
    }

    // ---- the healer --------------------------------------------------------------

    fn replica_now(&self, r: usize) -> Timestamp {
        secs(self.now, self.replicas[r].skew)
    }

    fn sync_replica(&mut self, r: usize) {
        if !self.apiserver_up {
            return;
        }
        self.replicas[r].cache = self.nodes.clone();
        self.replicas[r].pause = Some(if self.pause_watch_broken {
            Pause::Unknown
        } else if self.pause {
            Pause::Paused
        } else {
            Pause::Running
        });
    }

    fn evaluate(&mut self) -> Check {
        let Some(l) = self.leader else { return Ok(()) };
        self.sync_replica(l);
        let now = self.replica_now(l);
        if self.replicas[l].fleet.is_none() && self.apiserver_up {
            self.replicas[l].fleet = Some(FleetState::parse(self.fleet_lease.as_deref()).unwrap_or_default());
        }
        let states: Vec<NodeState> = self.replicas[l].cache.iter().map(SimNode::state).collect();
        let rep = &self.replicas[l];
        let blind_until = match (rep.blind_since, rep.regained) {
            (Some(_), _) => Some(planner::add(now, self.policy.blind_grace)),
            (None, Some(r)) => Some(planner::add(r, self.policy.blind_grace)).filter(|u| *u > now),
            _ => None,
        };
        let fleet = rep.fleet.clone();
        let recent = fleet.as_ref().map(|f| f.recent_starts(now)).unwrap_or_default();
        let gate = if self.now < self.magnum_busy_until {
            RepairGate::Denied("cluster is UPDATE_IN_PROGRESS".into())
        } else if self.magnum_failed {
            RepairGate::Denied("cluster is UPDATE_FAILED".into())
        } else {
            RepairGate::Allowed
        };
        let supported: BTreeSet<(Role, Action)> = [Role::Master, Role::Worker]
            .into_iter()
            .flat_map(|r| [(r, Action::Reboot), (r, Action::Replace)])
            .filter(|(r, a)| !(self.masters_delegated && *r == Role::Master && *a == Action::Replace))
            .collect();
        let delegated: BTreeMap<(Role, Action), String> = if self.masters_delegated {
            BTreeMap::from([((Role::Master, Action::Replace), "the cluster's MachineHealthCheck".to_string())])
        } else {
            BTreeMap::new()
        };
        let pause = rep.pause.unwrap_or(Pause::Unknown);
        let unsure = fleet.is_none().then_some("the fleet state is not read yet");
        let starting: BTreeSet<String> =
            self.tasks.iter().filter(|t| t.replica == l && matches!(t.op, Op::Write { begins: true, .. })).map(|t| t.uid.clone()).collect();
        let mut input = Input {
            nodes: &states,
            rest: &Rest::default(),
            leader: true,
            pause,
            gate: &gate,
            supported: &supported,
            delegated: &delegated,
            policy: &self.policy,
            cooldowns: &BTreeMap::new(),
            recent_starts: &recent,
            unsure,
            starting: &starting,
            blind_until,
            now,
        };
        let circuits = planner::short_circuits(&input);
        let mut fleet = fleet;
        if let Some(f) = fleet.as_mut() {
            f.track(&circuits, self.policy.limits.storm_cooldown, now);
        }
        for (s, _) in &circuits {
            self.seen_short.insert(s.clone(), self.now);
        }
        let cooldowns = fleet.as_ref().map(|f| f.cooldowns(now)).unwrap_or_default();
        input.cooldowns = &cooldowns;
        let p = planner::plan(&input);
        // The healer decides its plain nodes as counts (`Judged` keeps them so): the
        // same plan, and it is the one acted on.
        let keep: BTreeSet<&str> = starting.iter().map(String::as_str).chain(recent.iter().map(|(uid, _)| uid.as_str())).collect();
        let (kept, rest) = planner::split(&states, &self.policy, now, |n| keep.contains(n.uid.as_str()));
        let apart = planner::plan(&Input { nodes: &kept, rest: &rest, ..input });
        same_plan(&p, &apart)?;
        *self.stats.entry("plain nodes, summed").or_default() += rest.len();
        self.held = states
            .iter()
            .zip(&p.nodes)
            .filter(|(s, d)| s.role == Role::Worker && matches!(d.decision, Decision::Held { .. }))
            .map(|(s, _)| s.uid.clone())
            .collect();
        let busy: HashSet<String> = self.tasks.iter().map(|t| t.uid.clone()).collect();
        let policy = self.policy.clone();
        let impossible = |_: &NodeState| None;
        let present = |name: &str, uid: &str| states.iter().any(|s| s.name == name && s.uid == uid);
        let cx = effects::Context { policy: &policy, in_flight: &busy, impossible: &impossible, present: &present, now };
        let mut memory = std::mem::take(&mut self.replicas[l].memory);
        let list = effects::effects(&apart, &kept, &mut memory, &cx);
        let remembered = memory.len();
        self.replicas[l].memory = memory;
        if remembered > kept.len() {
            return Err(format!("the announcement memory holds {remembered} nodes for {} planned one by one", kept.len()));
        }
        for e in list {
            match e {
                Effect::Event { node, reason, note, action } => {
                    if reason == Reason::RepairHeld {
                        *self.stats.entry(action).or_default() += 1;
                    }
                    if reason == Reason::RepairProposed {
                        *self.stats.entry("proposals").or_default() += 1;
                        self.proposed(&node, &note)?;
                    }
                    self.log(format!("{} Event {reason} on {node}: {note}", self.replicas[l].identity).chars().take(200).collect());
                    if let Some(n) = self.nodes.iter().find(|n| n.name == node) {
                        let key = (n.uid.clone(), n.failure);
                        *self.events.entry(key).or_default() += 1;
                        self.event_log.entry(n.uid.clone()).or_default().push(reason);
                    }
                }
                Effect::Work { node, work } => {
                    let Some(n) = self.replicas[l].cache.iter().find(|n| n.name == node).cloned() else { continue };
                    if self.tasks.iter().any(|t| t.uid == n.uid) {
                        return Err(format!("a second task for {node} while one is in flight"));
                    }
                    if self.policy.dry_run {
                        return Err(format!("dry-run produced work for {node}: {work:?}"));
                    }
                    if let Work::Start { attempt: 1, .. } = &work {
                        self.check_new_repair(&n, &states, pause)?;
                    }
                    self.check_approved(&n, &work, now)?;
                    self.check_workloads(&n, &work, now)?;
                    let kind = match &work {
                        Work::Start { attempt: 1, .. } => "repairs begun",
                        Work::Start { .. } => "escalations",
                        Work::Continue { record } if record.phase.is_some() => "steps continued from a phase",
                        Work::Continue { .. } => "steps continued",
                        Work::Restore { .. } => "restores",
                        Work::Recovered { .. } => "recoveries",
                        Work::Failed { .. } => "failures",
                        Work::Delegate { .. } => "delegations",
                    };
                    *self.stats.entry(kind).or_default() += 1;
                    let op = self.first_op(&n, work, l, now);
                    self.log(format!("{} task on {}: {op:?}", self.replicas[l].identity, n.name).chars().take(240).collect());
                    self.tasks.push(Task { replica: l, uid: n.uid.clone(), rv: n.rv, op });
                }
                Effect::RecordHeld { node, entry } if !self.policy.dry_run => {
                    if let Some(n) = self.replicas[l].cache.iter().find(|n| n.name == node).cloned() {
                        let uid = n.uid.clone();
                        let op =
                            Op::Write { record: n.record(), cordon: false, history: Some(entry), then: Box::new(Op::Done), begins: false };
                        if !self.tasks.iter().any(|t| t.uid == uid) {
                            self.tasks.push(Task { replica: l, uid, rv: n.rv, op });
                        }
                    }
                }
                _ => {}
            }
        }
        if let Some(f) = &fleet
            && self.apiserver_up
            && !self.policy.dry_run
        {
            self.fleet_lease = Some(f.to_json());
        }
        self.replicas[l].fleet = fleet;
        Ok(())
    }

    /// The invariants of a new repair, checked when its task is created.
    fn check_new_repair(&self, n: &SimNode, states: &[NodeState], pause: Pause) -> Check {
        if pause != Pause::Running || self.pause_watch_broken && self.replicas.iter().all(|r| r.pause != Some(Pause::Running)) {
            return Err(format!("a new repair of {} while the pause state is {pause:?}", n.name));
        }
        if n.role == Role::Master {
            let limit = self.policy.limits.master_max_unhealthy.limit(states.iter().filter(|s| s.role == Role::Master).count());
            let bad = states.iter().filter(|s| s.role == Role::Master && (s.counts_unhealthy() || s.uid == n.uid)).count();
            if bad > limit {
                return Err(format!("master {} repaired with {bad} masters unhealthy or under repair (max-unhealthy {limit})", n.name));
            }
        }
        for scope in [Scope::Role(n.role), Scope::Zone(n.zone.clone())] {
            // A cooldown another replica began ends by its clock: honoured within the
            // replicas' skew (at most 10 s here).
            if let Some(t) = self.seen_short.get(&scope)
                && secs(*t, self.policy.limits.storm_cooldown.as_secs() as i64) > secs(self.now, 1 + MAX_SKEW)
                && *t < self.now
            {
                return Err(format!(
                    "{} repaired {}s after {scope} was short-circuited (storm cooldown)",
                    n.name,
                    self.now.duration_since(*t).as_secs()
                ));
            }
        }
        Ok(())
    }

    /// Keeps a proposal the healer announced, for the operator to answer. Its note must
    /// name the id and the command, and say when it expires.
    fn proposed(&mut self, node: &str, note: &str) -> Check {
        let Some(uid) = self.nodes.iter().find(|n| n.name == node).map(|n| n.uid.clone()) else { return Ok(()) };
        if note.contains("was denied") {
            return Ok(());
        }
        let id: String = note.split("proposal ").nth(1).unwrap_or("").chars().take_while(char::is_ascii_alphanumeric).collect();
        let until = note
            .split("it expires at ")
            .nth(1)
            .and_then(|u| u.split_whitespace().next())
            .and_then(|u| u.trim_end_matches(['.', ';', ',']).parse::<Timestamp>().ok());
        match until {
            Some(until) if !id.is_empty() && note.contains(&format!("autohealer.dev/approve={id}")) => {
                self.proposals.insert(id, (uid, until));
                Ok(())
            }
            _ => Err(format!("a RepairProposed Event on {node} without its id, command and expiry: {note}")),
        }
    }

    /// A step that needs approval begins only with the approval of a proposal the healer
    /// made for this node, not denied, and not expired.
    fn check_approved(&mut self, n: &SimNode, work: &Work, now: Timestamp) -> Check {
        let Work::Start { action, .. } = work else { return Ok(()) };
        let a = &self.policy.approval;
        let needed = match n.role {
            Role::Master => a.master.contains(action),
            Role::Worker => a.worker.contains(action),
        };
        if !needed {
            return Ok(());
        }
        let Some(id) = &n.approve else {
            return Err(format!("{} {action} begun without approval", n.name));
        };
        if n.deny.as_ref() == Some(id) {
            return Err(format!("{} {action} begun on proposal {id}, which was denied", n.name));
        }
        if !self.approved.contains(id) {
            return Err(format!("{} {action} begun on {id}, which no operator approved", n.name));
        }
        match self.proposals.get(id) {
            Some((uid, _)) if *uid != n.uid => Err(format!("{} {action} begun on {id}, a proposal for another node", n.name)),
            // The replica that proposed it may run another clock.
            Some((_, until)) if secs(*until, MAX_SKEW) <= now => {
                Err(format!("{} {action} begun at {now} on {id}, a proposal that expired at {until}", n.name))
            }
            Some(_) => {
                *self.stats.entry("approved steps").or_default() += 1;
                Ok(())
            }
            None => Err(format!("{} {action} begun on {id}, which the healer never proposed", n.name)),
        }
    }

    /// With the workload check on, a repair is over only when the node has been healthy
    /// for the workload window, and never while its record says the workloads failed.
    fn check_workloads(&mut self, n: &SimNode, work: &Work, now: Timestamp) -> Check {
        match work {
            Work::Recovered { record } if record.workloads_failed.is_some() => {
                Err(format!("{} recorded as recovered while its record says: {:?}", n.name, record.workloads_failed))
            }
            Work::Recovered { record } if self.policy.workloads.applies(n.role) && record.failed.is_none() => {
                let window = SignedDuration::try_from(self.policy.workloads.window).unwrap_or_default();
                match n.ready.then_some(n.ready_since) {
                    Some(since) if since.checked_add(window).is_ok_and(|t| t <= now) => {
                        if n.pods_crash {
                            *self.stats.entry("workload failures").or_default() += 1;
                        }
                        Ok(())
                    }
                    _ => Err(format!("{} recovered before its workloads had {window:?} to show they run", n.name)),
                }
            }
            Work::Start { .. } if n.record().is_some_and(|r| r.workloads_failed.is_some()) => {
                *self.stats.entry("steps after a workload failure").or_default() += 1;
                Ok(())
            }
            _ => Ok(()),
        }
    }

    fn first_op(&self, n: &SimNode, work: Work, l: usize, now: Timestamp) -> Op {
        let me = self.replicas[l].identity.clone();
        match work {
            Work::Start { action, attempt, reason, actionable_since, cordon, severity } => {
                let facts = Facts {
                    boot_id: Some(format!("boot-{}", n.boot)),
                    unschedulable: n.unschedulable,
                    drains: n.role == Role::Worker && action == Action::Replace,
                };
                let (record, cordon_now) =
                    step::begin(&n.ledger(), action, attempt, &reason, actionable_since, cordon, severity.0, &facts, &me, now);
                let then = if record.draining {
                    Op::Drain { record: record.clone() }
                } else {
                    Op::Call { record: record.clone(), resumed: false, uncertain: 0 }
                };
                Op::Write { record: Some(record), cordon: cordon_now, history: None, then: Box::new(then), begins: attempt == 1 }
            }
            Work::Continue { record } => {
                let claimed = step::claim(&record, &me);
                let then = if claimed.draining {
                    Op::Drain { record: claimed.clone() }
                } else {
                    Op::Call { record: claimed.clone(), resumed: true, uncertain: 0 }
                };
                Op::Write { record: Some(claimed), cordon: false, history: None, then: Box::new(then), begins: false }
            }
            Work::Restore { record } => {
                let claimed = step::claim(&record, &me);
                Op::Write {
                    record: Some(claimed.clone()),
                    cordon: false,
                    history: None,
                    then: Box::new(Op::Restore { record: claimed }),
                    begins: false,
                }
            }
            // As the actor: with the workload check on, a node back whose pods crash-loop
            // (while their owners' pods elsewhere run) records the step as failed.
            Work::Recovered { record } if self.policy.workloads.applies(n.role) && record.failed.is_none() && n.pods_crash => Op::Write {
                record: Some(step::workloads_failed(&record, "pod app/x crash-loops on it while 2 of its owner's 2 pods elsewhere run")),
                cordon: false,
                history: None,
                then: Box::new(Op::Done),
                begins: false,
            },
            Work::Recovered { record } => {
                Op::Write { record: None, cordon: false, history: step::recovered(&record, now), then: Box::new(Op::Done), begins: false }
            }
            Work::Failed { record, why } => {
                let (r, entry) = step::failed(&record, &why, now);
                Op::Write { record: Some(r), cordon: false, history: Some(entry), then: Box::new(Op::Done), begins: false }
            }
            Work::Delegate { record, action, to } => Op::Write {
                record: Some(step::delegated(&record, action, &to, now)),
                cordon: false,
                history: None,
                then: Box::new(Op::Done),
                begins: false,
            },
        }
    }

    // ---- the shell: one op of one task ---------------------------------------------

    fn run_task(&mut self) -> Check {
        if self.tasks.is_empty() {
            return Ok(());
        }
        let i = self.rng.random_range(0..self.tasks.len());
        let mut task = self.tasks.remove(i);
        let leads = self.leader == Some(task.replica);
        let now = self.replica_now(task.replica);
        let next = match task.op.clone() {
            Op::Done => None,
            Op::Write { record, cordon, history, then, begins } => {
                let ok = leads && self.apiserver_up && self.node(&task.uid).is_some_and(|n| n.rv == task.rv);
                if !ok {
                    // A conflict, no leadership, or no apiserver: the task ends; the next
                    // evaluation decides again from the ledger.
                    None
                } else {
                    self.writes += 1;
                    let entry_detected = record.as_ref().and_then(|r| r.detected);
                    let n = self.node_mut(&task.uid).ok_or("node vanished")?;
                    match &record {
                        Some(r) => {
                            n.annotations.insert(autohealer_core::ledger::REPAIR_ANNOTATION.into(), r.to_json());
                        }
                        None => {
                            let was = n.annotations.remove(autohealer_core::ledger::REPAIR_ANNOTATION);
                            if was.is_some() {
                                n.unschedulable = false;
                            }
                        }
                    }
                    if let Some(h) = history {
                        let v = push_history(n.annotations.get(HISTORY_ANNOTATION).map(String::as_str), h, entry_detected);
                        n.annotations.insert(HISTORY_ANNOTATION.into(), v);
                    }
                    if cordon {
                        n.unschedulable = true;
                    }
                    n.remediate = n.remediate && record.is_none();
                    if record.is_some() {
                        n.remediate = false;
                    }
                    n.rv += 1;
                    task.rv = n.rv;
                    if begins {
                        let hour_ago = secs(self.now, -3600);
                        self.starts.retain(|t| *t > hour_ago);
                        self.starts.push(self.now);
                        if self.starts.len() > self.policy.limits.repairs_per_hour {
                            return Err(format!(
                                "{} repairs began within an hour, above repairs-per-hour {}",
                                self.starts.len(),
                                self.policy.limits.repairs_per_hour
                            ));
                        }
                        let uid = task.uid.clone();
                        if let Some(f) = self.replicas[task.replica].fleet.as_mut() {
                            f.record_start(&uid, now);
                        }
                    }
                    Some(*then)
                }
            }
            Op::Drain { record } => {
                if !leads {
                    None
                } else {
                    let next = step::drained(&record);
                    Some(Op::Write {
                        record: Some(next.clone()),
                        cordon: false,
                        history: None,
                        then: Box::new(Op::Call { record: next, resumed: false, uncertain: 0 }),
                        begins: false,
                    })
                }
            }
            Op::Call { record, resumed, uncertain } => {
                if !leads {
                    None
                } else {
                    // A node deleted meanwhile: its machine is asked by the id the task holds,
                    // and the cloud no longer knows it.
                    let result = if self.node(&task.uid).is_none() {
                        Err(CloudError::NoServer { node: task.uid.clone(), reason: "404 from Nova".into() })
                    } else {
                        self.check_written(&task.uid, &record)?;
                        self.cloud(&task.uid, &record, resumed)
                    };
                    match step::after_call(&record, result, uncertain, now) {
                        After::Call { record, resumed } => Some(Op::Write {
                            record: Some(record.clone()),
                            cordon: false,
                            history: None,
                            then: Box::new(Op::Call { record, resumed, uncertain: 0 }),
                            begins: false,
                        }),
                        After::Verify => Some(Op::Call { record, resumed: true, uncertain: uncertain + 1 }),
                        After::Issued { record, .. } => {
                            self.event(&task.uid, Reason::RepairIssued);
                            Some(Op::Write { record: Some(record), cordon: false, history: None, then: Box::new(Op::Done), begins: false })
                        }
                        After::Stalled { record, .. } => {
                            *self.stats.entry("stalls").or_default() += 1;
                            self.event(&task.uid, Reason::RepairStalled);
                            Some(Op::Write { record: Some(record), cordon: false, history: None, then: Box::new(Op::Done), begins: false })
                        }
                        After::Failed { why } => {
                            *self.stats.entry("failed steps").or_default() += 1;
                            self.event(&task.uid, Reason::RepairFailed);
                            let (r, entry) = step::failed(&record, &why, now);
                            Some(Op::Write {
                                record: Some(r),
                                cordon: false,
                                history: Some(entry),
                                then: Box::new(Op::Done),
                                begins: false,
                            })
                        }
                    }
                }
            }
            Op::Restore { record } => {
                if !leads {
                    None
                } else {
                    let result = self.restore(&task.uid);
                    match step::after_restore(&record, &result, now) {
                        step::Restored::Back { record: r, why } => {
                            self.event(&task.uid, Reason::MachineRestored);
                            let (r, entry) = step::failed(&r, &why, now);
                            Some(Op::Write {
                                record: Some(r),
                                cordon: false,
                                history: Some(entry),
                                then: Box::new(Op::Done),
                                begins: false,
                            })
                        }
                        step::Restored::Again { record: r } => {
                            self.event(&task.uid, Reason::RestoreFailed);
                            Some(Op::Write { record: Some(r), cordon: false, history: None, then: Box::new(Op::Done), begins: false })
                        }
                    }
                }
            }
        };
        if let Some(op) = next
            && !matches!(op, Op::Done)
        {
            task.op = op;
            self.tasks.insert(i.min(self.tasks.len()), task);
        }
        Ok(())
    }

    fn event(&mut self, uid: &str, reason: Reason) {
        if let Some(n) = self.node(uid) {
            let key = (uid.to_string(), n.failure);
            *self.events.entry(key).or_default() += 1;
            self.event_log.entry(uid.to_string()).or_default().push(reason);
        }
    }

    /// No cloud call without its record written first: the ledger on the node holds
    /// the very record (and phase) the call is made for.
    fn check_written(&self, uid: &str, record: &RepairRecord) -> Check {
        let n = self.node(uid).ok_or_else(|| format!("a cloud call for {uid}, which is gone"))?;
        match n.record() {
            Some(r)
                if r.action == record.action && r.phase == record.phase && r.started == record.started && r.pending == record.pending =>
            {
                Ok(())
            }
            other => Err(format!(
                "{} {:?} call at {:?} without its ledger record (the node holds {other:?})",
                n.name,
                record.action,
                record.phase.as_ref().map(|p| &p.name)
            )),
        }
    }

    // ---- the cloud ------------------------------------------------------------------

    /// A fault of the answer: Ok, 503 (nothing done), or no answer (done or not).
    fn answer<T>(&mut self, done: impl FnOnce(&mut Self) -> Result<T, CloudError>, call: &str) -> Result<T, CloudError> {
        self.cloud_calls += 1;
        match self.rng.random_range(0..100) {
            0..=6 => Err(CloudError::Call { call: call.into(), status: Some(503), message: "unavailable".into() }),
            7..=10 => Err(CloudError::Uncertain { call: call.into() }),
            11..=14 => {
                let _ = done(self);
                Err(CloudError::Uncertain { call: call.into() })
            }
            _ => done(self),
        }
    }

    fn did(&mut self, uid: &str, record: &RepairRecord, what: Did) {
        let name = self.node(uid).map(|n| n.name.clone()).unwrap_or_default();
        self.log(format!("cloud: {what:?} {name}"));
        self.done_in_repair.entry((uid.to_string(), record.first_started)).or_default().push(what);
    }

    fn cloud(&mut self, uid: &str, record: &RepairRecord, resumed: bool) -> Result<Progress, CloudError> {
        let now = self.now;
        let r = record.clone();
        let u = uid.to_string();
        match record.action {
            Action::Reboot => self.answer(
                move |w| {
                    let n = w.node_mut(&u).ok_or(CloudError::NoServer { node: u.clone(), reason: "gone".into() })?;
                    match n.machine {
                        Machine::Stopped { .. } | Machine::Replacing { .. } => Err(CloudError::Call {
                            call: "nova reboot".into(),
                            status: Some(409),
                            message: "Cannot 'reboot' instance while it is in vm_state stopped".into(),
                        }),
                        Machine::Booting { .. } => {
                            Ok(Progress::Done(ActionOutcome { detail: "already rebooting".into(), ..Default::default() }))
                        }
                        Machine::Running => {
                            n.machine = Machine::Booting { until: secs(now, BOOT) };
                            w.did(&u, &r, Did::Reboot);
                            Ok(Progress::Done(ActionOutcome { detail: "soft reboot accepted".into(), ..Default::default() }))
                        }
                    }
                },
                "nova POST /servers/x/action reboot",
            ),
            Action::Replace => {
                let phase = record.phase.as_ref().map(|p| p.name.clone());
                match phase.as_deref() {
                    // As the OpenStack provider: a read, the data volumes detached (the
                    // machine still runs), the stop, the wait for SHUTOFF, the resize.
                    None => {
                        self.answer(|_| Ok(Progress::Next(Phase::new("detach").with("group", "default-worker"))), "magnum GET nodegroups")
                    }
                    Some("detach") => self.answer(
                        |_| Ok(Progress::Next(Phase::new("stop").with("group", "default-worker").out_of_service())),
                        "nova DELETE os-volume_attachments",
                    ),
                    // Stopped or not in time, the provider goes on to the resize (with a log).
                    Some("wait-stopped") => Ok(Progress::Next(Phase::new("resize").with("group", "default-worker").out_of_service())),
                    Some("stop") => self.answer(
                        move |w| {
                            let n = w.node_mut(&u).ok_or(CloudError::NoServer { node: u.clone(), reason: "gone".into() })?;
                            if matches!(n.machine, Machine::Running | Machine::Booting { .. }) {
                                n.machine = Machine::Stopped { by_healer: true, since: now };
                                w.did(&u, &r, Did::Stop);
                            }
                            Ok(Progress::Next(Phase::new("wait-stopped").with("group", "default-worker").out_of_service()))
                        },
                        "nova POST /servers/x/action os-stop",
                    ),
                    // Resumed, the provider never sends a resize twice: it may have gone out.
                    Some("resize") if resumed => {
                        Ok(Progress::Done(ActionOutcome { detail: "the resize may have been sent".into(), ..Default::default() }))
                    }
                    Some("resize") => self.answer(
                        move |w| {
                            if now < w.magnum_busy_until {
                                return Err(CloudError::Call {
                                    call: "magnum POST /actions/resize".into(),
                                    status: Some(409),
                                    message: "UPDATE_IN_PROGRESS".into(),
                                });
                            }
                            w.magnum_busy_until = secs(now, MAGNUM_BUSY);
                            // Now and then Magnum accepts the resize and then fails it (UPDATE_FAILED):
                            // the stopped server stays, no node comes.
                            let fails = w.rng.random_bool(0.15);
                            let n = w.node_mut(&u).ok_or(CloudError::NoServer { node: u.clone(), reason: "gone".into() })?;
                            if !fails {
                                n.machine = Machine::Replacing { join: secs(now, REPLACE_JOIN) };
                            }
                            w.did(&u, &r, Did::Resize);
                            Ok(Progress::Done(ActionOutcome { detail: "resize accepted".into(), ..Default::default() }))
                        },
                        "magnum POST /actions/resize",
                    ),
                    Some(other) => Err(CloudError::Other(format!("unknown phase {other}"))),
                }
            }
        }
    }

    fn restore(&mut self, uid: &str) -> Result<ActionOutcome, CloudError> {
        let now = self.now;
        let u = uid.to_string();
        self.answer(
            move |w| {
                let Some(n) = w.node_mut(&u) else { return Ok(ActionOutcome { detail: "server gone".into(), ..Default::default() }) };
                if let Machine::Stopped { .. } = n.machine {
                    n.machine = Machine::Booting { until: secs(now, BOOT) };
                    let name = n.name.clone();
                    w.log(format!("cloud: Start {name}"));
                }
                Ok(ActionOutcome { detail: "server started".into(), ..Default::default() })
            },
            "nova POST /servers/x/action os-start",
        )
    }

    // ---- invariants after every step --------------------------------------------------

    fn check(&self) -> Check {
        for ((uid, started), did) in &self.done_in_repair {
            let name = self.node(uid).map(|n| n.name.as_str()).unwrap_or(uid);
            for what in [Did::Reboot, Did::Stop, Did::Resize] {
                let k = did.iter().filter(|d| **d == what).count();
                if k > 1 {
                    return Err(format!("{name}: {k} × {what:?} in one repair (begun {started})"));
                }
            }
        }
        let mut tasks_per_node: HashMap<&str, usize> = HashMap::new();
        for t in &self.tasks {
            *tasks_per_node.entry(t.uid.as_str()).or_default() += 1;
        }
        if let Some((uid, k)) = tasks_per_node.iter().find(|(_, k)| **k > 1) {
            return Err(format!("{k} tasks in flight for node {uid}"));
        }
        for role in [Role::Master, Role::Worker] {
            let max = if role == Role::Master { self.policy.limits.master_concurrency } else { self.policy.limits.worker_concurrency };
            // A worker whose step is over (its next step held by a gate, or its time up by
            // the shortest rebuild delay a reload sets) is not under way, unless its
            // machine is out of service or a task works on it.
            let waits = |n: &SimNode, r: &RepairRecord| {
                let over = match r.action {
                    Action::Reboot => secs(r.started, MIN_REBUILD_DELAY as i64),
                    Action::Replace => planner::add(r.started, self.policy.replace_timeout),
                } <= self.now;
                (over || self.held.contains(&n.uid)) && !r.out_of_service && !self.tasks.iter().any(|t| t.uid == n.uid)
            };
            let active =
                self.nodes.iter().filter(|n| n.role == role && n.record().is_some_and(|r| r.failed.is_none() && !waits(n, &r))).count();
            if active > max {
                return Err(format!("{active} {role} steps under way at once, above concurrency {max}"));
            }
        }
        if self.policy.dry_run && (self.writes > 0 || self.cloud_calls > 0) {
            return Err(format!("dry-run made {} writes and {} cloud calls", self.writes, self.cloud_calls));
        }
        for ((uid, failure), k) in &self.events {
            if *k > 40 {
                let name = self.node(uid).map(|n| n.name.clone()).unwrap_or_default();
                let mut by: BTreeMap<&str, usize> = BTreeMap::new();
                for r in self.event_log.get(uid).into_iter().flatten() {
                    *by.entry(r.as_str()).or_default() += 1;
                }
                return Err(format!("{k} Events for node {name} ({uid}) in failure {failure}: {by:?}"));
            }
        }
        Ok(())
    }

    /// After the faults stop: every machine the healer stopped is running again or
    /// replaced, unless an Event said why not.
    fn check_settled(&self) -> Check {
        for n in &self.nodes {
            if let Machine::Stopped { by_healer: true, since } = n.machine
                && self.now.duration_since(since).as_secs() > STOPPED_BOUND
            {
                let said = self.event_log.get(&n.uid).is_some_and(|r| r.contains(&Reason::RestoreFailed));
                if !said {
                    return Err(format!(
                        "{}: the healer stopped its machine at {since} and it is still stopped, with no Event saying why ({:?})",
                        n.name,
                        n.record()
                    ));
                }
            }
        }
        Ok(())
    }

    fn step(&mut self, faults: bool) -> Check {
        let r = self.rng.random_range(0..100);
        match r {
            0..=29 => {
                let dt = self.rng.random_range(1..20);
                self.now = secs(self.now, dt);
                self.kubelets();
            }
            30..=58 => self.evaluate()?,
            59..=96 => self.run_task()?,
            97 => self.operator(),
            _ if faults => self.inject(),
            _ if self.leader.is_none() => self.leadership(),
            _ => {}
        }
        self.check()
    }

    fn trace_of(&self, needle: &str) -> Vec<&String> {
        let lines: Vec<&String> = self
            .trace
            .iter()
            .filter(|l| {
                needle.is_empty()
                    || l.contains(needle)
                    || !l.contains(" task on ")
                        && !l.contains("cloud:")
                        && !l.contains("fault")
                        && !l.contains("flaps")
                        && !l.contains("remediate")
                        && !l.contains("recreated")
            })
            .collect();
        let skip = lines.len().saturating_sub(80);
        lines.into_iter().skip(skip).collect()
    }
}

fn run_seed(seed: u64) -> Result<(usize, BTreeMap<&'static str, usize>), String> {
    let mut w = World::new(seed);
    let steps = 3000;
    let fail = |w: &World, e: String| {
        let needle = e.split([' ', ':']).find(|t| w.nodes.iter().any(|n| n.name == *t)).unwrap_or("").to_string();
        let trace: Vec<String> = w.trace_of(&needle).into_iter().cloned().collect();
        format!(
            "seed {seed} failed: {e}\nreplay: SIM_SEED={seed} cargo test -p autohealer-core --test simulation\ntrace ({}):\n  {}",
            if needle.is_empty() { "cluster" } else { &needle },
            trace.join("\n  ")
        )
    };
    for _ in 0..steps {
        if let Err(e) = w.step(true) {
            return Err(fail(&w, e));
        }
    }
    // Settle: no more faults, the apiserver back, a leader; the healer finishes what it began.
    w.apiserver_up = true;
    for rep in &mut w.replicas {
        if rep.blind_since.take().is_some() {
            rep.regained = Some(w.now);
        }
    }
    w.pause = false;
    w.pause_watch_broken = false;
    let settle_until = secs(w.now, STOPPED_BOUND + 3600);
    while w.now < settle_until {
        if let Err(e) = w.step(false) {
            return Err(fail(&w, e));
        }
    }
    if let Err(e) = w.check_settled() {
        return Err(fail(&w, e));
    }
    w.longest_trace = w.trace.len();
    Ok((w.longest_trace, w.stats))
}

#[test]
fn the_lifecycle_holds_its_invariants_through_faults() {
    let seeds: Vec<u64> = match std::env::var("SIM_SEED") {
        Ok(s) => vec![s.parse().expect("SIM_SEED is a number")],
        Err(_) => {
            let n: u64 = std::env::var("SIM_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(100);
            (0..n).collect()
        }
    };
    let mut longest = 0;
    let mut total: BTreeMap<&str, usize> = BTreeMap::new();
    for seed in &seeds {
        match run_seed(*seed) {
            Ok((len, stats)) => {
                longest = longest.max(len);
                for (k, v) in stats {
                    *total.entry(k).or_default() += v;
                }
            }
            Err(e) => panic!("{e}"),
        }
    }
    println!("{} seeds passed; longest trace {longest} events; exercised: {total:?}", seeds.len());
    for path in [
        "repairs begun",
        "escalations",
        "steps continued from a phase",
        "stalls",
        "restores",
        "recoveries",
        "failed steps",
        "delegations",
        "proposals",
        "approved steps",
        "workload failures",
        "steps after a workload failure",
    ] {
        assert!(total.get(path).copied().unwrap_or(0) > 0 || seeds.len() < 20, "no seed reached {path}: the faults miss a path");
    }
}
