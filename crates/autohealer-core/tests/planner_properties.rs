//! Properties of the planner over random clusters and histories: the safety promises
//! hold whatever the nodes look like.

use autohealer_cloud::{Action, RepairGate, Role};
use autohealer_core::ledger::{HistoryEntry, Ledger, RepairRecord};
use autohealer_core::planner::{Decision, Finding, Input, Limits, NodeState, Pause, Policy, Rest, Threshold, plan, split};
use k8s_openapi::jiff::Timestamp;
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

const NOW: i64 = 1_800_000_000;

fn ts(offset: i64) -> Timestamp {
    Timestamp::from_second(NOW + offset).unwrap()
}

#[derive(Debug, Clone)]
enum L {
    None,
    InProgress(i64),
    Failed(i64),
}

prop_compose! {
    fn arb_node(i: usize)(
        master in prop::bool::weighted(0.2),
        zone in 0..3usize,
        broken in prop::bool::weighted(0.5),
        since in -7200i64..0,
        dur in 0u64..600,
        ledger in prop_oneof![3 => Just(L::None), 1 => (-3600i64..0).prop_map(L::InProgress), 1 => (-3600i64..0).prop_map(L::Failed)],
        skip in prop::bool::weighted(0.1),
        remediate in prop::bool::weighted(0.05),
        failures in 0usize..5,
        healthy_for in 0i64..300,
        // Hours before now the history ends: from inside every window to outside all.
        history_age in 0i64..4,
        kernel in 0..3usize,
        young in prop::bool::weighted(0.1),
    ) -> NodeState {
        let findings = if broken { vec![Finding { check: "NodeCondition".into(), since: ts(since), unhealthy_duration: Duration::from_secs(dur), reason: "r".into(), steps: None }] } else { vec![] };
        let record = |started: i64, failed: bool| RepairRecord {
            action: Action::Reboot, attempt: 1, started: ts(started), first_started: ts(started), reason: "r".into(),
            boot_id: Some("b".into()), server_id: None, cordoned: true,
            failed: failed.then(|| "x".into()), failed_at: failed.then(|| ts(started + 60)), by: "a".into(), draining: false,
            detected: None, severity: None, fenced: false, pending: false, phase: None, out_of_service: false, stalls: 0, stalled: None, retry_at: None, unsent: false, delegated: None, workloads_failed: None,
        };
        let ledger = match ledger { L::None => Ledger::None, L::InProgress(s) => Ledger::Record(Box::new(record(s, false))), L::Failed(s) => Ledger::Record(Box::new(record(s, true))) };
        NodeState {
            name: format!("n{i:03}"),
            uid: format!("u{i:03}"),
            role: if master { Role::Master } else { Role::Worker },
            zone: Some(format!("z{zone}")),
            created: Some(ts(if young { -30 } else { -86400 })),
            boot_id: Some("b".into()),
            healthy_since: (!broken).then(|| ts(-healthy_for)),
            findings,
            alerts: vec![],
            ledger,
            history: (0..failures).map(|k| HistoryEntry { action: Action::Reboot, started: ts(-(k as i64) * 600 - 60 - history_age * 3600), ended: ts(-(k as i64) * 600 - history_age * 3600), succeeded: k % 2 == 0, reason: String::new(), severity: None, held: false }).collect(),
            skip,
            remediate,
            removing: None,
            attributes: vec![("kernelVersion".into(), format!("k{kernel}"))],
            approve: None,
            deny: None,
        }
    }
}

fn arb_nodes() -> impl Strategy<Value = Vec<NodeState>> {
    (1usize..40).prop_flat_map(|n| (0..n).map(arb_node).collect::<Vec<_>>())
}

fn arb_policy() -> impl Strategy<Value = Policy> {
    (1usize..4, 1usize..6, prop_oneof![(0usize..10).prop_map(Threshold::Count), (0.0f64..100.0).prop_map(Threshold::Percent)], 1usize..50)
        .prop_map(|(mc, wc, wt, rate)| Policy {
            check_delay_after_add: Duration::from_secs(60),
            limits: Limits {
                master_concurrency: mc,
                worker_concurrency: wc,
                worker_max_unhealthy: wt,
                repairs_per_hour: rate,
                ..Default::default()
            },
            ..Default::default()
        })
}

fn in_repair(n: &NodeState) -> bool {
    matches!(&n.ledger, Ledger::Record(r) if r.failed.is_none())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, failure_persistence: None, ..ProptestConfig::default() })]

    /// What the healer relies on to plan a large fleet in the time of what changed: the
    /// plain nodes counted apart change no decision, no short-circuit (the correlated
    /// hold's shares included) and no wake-up.
    #[test]
    fn plain_nodes_counted_apart_change_no_decision(nodes in arb_nodes(), policy in arb_policy(), slow_start in prop::bool::weighted(0.5), leader in prop::bool::weighted(0.8)) {
        let policy = Policy { slow_start: slow_start.then_some(Duration::from_secs(7200)), ..policy };
        let supported: BTreeSet<(Role, Action)> = [Role::Master, Role::Worker].into_iter().flat_map(|r| [(r, Action::Reboot), (r, Action::Replace)]).collect();
        let (cooldowns, starting) = (BTreeMap::new(), BTreeSet::new());
        let input = Input { nodes: &nodes, rest: &Rest::default(), leader, pause: Pause::Running, gate: &RepairGate::Allowed, supported: &supported, delegated: &Default::default(), policy: &policy, cooldowns: &cooldowns, recent_starts: &[], unsure: None, starting: &starting, blind_until: None, now: ts(0) };
        let full = plan(&input);
        let (kept, rest) = split(&nodes, &policy, ts(0), |_| false);
        prop_assert_eq!(kept.len() + rest.len(), nodes.len());
        let apart = plan(&Input { nodes: &kept, rest: &rest, ..input });
        prop_assert_eq!(&full.short_circuits, &apart.short_circuits);
        prop_assert_eq!(full.wake_at, apart.wake_at);
        let decided: BTreeMap<&str, &Decision> = apart.nodes.iter().map(|n| (n.name.as_str(), &n.decision)).collect();
        for n in &full.nodes {
            match decided.get(n.name.as_str()) {
                Some(d) => prop_assert_eq!(*d, &n.decision, "{}", n.name),
                None => prop_assert!(matches!(n.decision, Decision::Healthy | Decision::NotMonitored), "{} left out but {:?}", n.name, n.decision),
            }
        }
    }

    #[test]
    fn safety_properties(nodes in arb_nodes(), policy in arb_policy(), leader in prop::bool::weighted(0.8), paused in prop::bool::weighted(0.2)) {
        let supported: BTreeSet<(Role, Action)> = [Role::Master, Role::Worker].into_iter().flat_map(|r| [(r, Action::Reboot), (r, Action::Replace)]).collect();
        let cooldowns = BTreeMap::new();
        let pause = if paused { Pause::Paused } else { Pause::Running };
        let p = plan(&Input { nodes: &nodes, rest: &Rest::default(), leader, pause, gate: &RepairGate::Allowed, supported: &supported, delegated: &Default::default(), policy: &policy, cooldowns: &cooldowns, recent_starts: &[], unsure: None, starting: &std::collections::BTreeSet::new(), blind_until: None, now: ts(0) });
        let repairs: Vec<(&NodeState, &Decision)> = nodes.iter().zip(p.nodes.iter().map(|n| &n.decision)).filter(|(_, d)| matches!(d, Decision::Repair { .. })).collect();
        let new: Vec<&NodeState> = repairs.iter().filter(|(n, _)| !in_repair(n)).map(|(n, _)| *n).collect();

        if paused || !leader {
            prop_assert!(repairs.is_empty(), "no step while paused or not leading");
        }
        for (n, _) in &repairs {
            prop_assert!(!n.skip, "a skipped node never gets a step: {}", n.name);
        }
        for role in [Role::Master, Role::Worker] {
            // A held worker repair has no step under way and takes no slot.
            let busy = nodes
                .iter()
                .zip(&p.nodes)
                .filter(|(n, np)| n.role == role && in_repair(n) && !(role == Role::Worker && matches!(np.decision, Decision::Held { .. })))
                .count();
            let started = new.iter().filter(|n| n.role == role).count();
            let max = if role == Role::Master { policy.limits.master_concurrency } else { policy.limits.worker_concurrency };
            prop_assert!(started == 0 || busy + started <= max, "{role}: {busy} in flight + {started} new > {max}");
            if role == Role::Master && policy.limits.master_concurrency == 1 {
                prop_assert!(started == 0 || busy == 0, "never two masters at once");
            }
            let of_role: Vec<&NodeState> = nodes.iter().filter(|n| n.role == role).collect();
            let unhealthy = of_role.iter().filter(|n| in_repair(n) || !n.findings.is_empty()).count();
            let limit = if role == Role::Master { policy.limits.master_max_unhealthy } else { policy.limits.worker_max_unhealthy };
            if unhealthy > limit.limit(of_role.len()) {
                prop_assert_eq!(started, 0, "no new {} repair over max-unhealthy", role);
            }
        }
        let recent = nodes.iter().flat_map(|n| n.history.iter().map(|h| h.started).chain(match &n.ledger { Ledger::Record(r) => Some(r.first_started), _ => None })).filter(|t| *t > ts(-3600)).collect::<BTreeSet<_>>().len();
        prop_assert!(new.is_empty() || recent + new.len() <= policy.limits.repairs_per_hour, "rate budget: {recent} recent + {} new", new.len());
    }
}
