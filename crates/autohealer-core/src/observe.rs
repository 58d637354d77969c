//! Turning Node objects and probe results into the planner's [`NodeState`]s.

use crate::ledger::{Ledger, REPAIR_ANNOTATION};
use crate::node;
use crate::planner::{Finding, NodeState};
use autohealer_cloud::Role;
use autohealer_healthcheck::{AsNodeView, CheckKind, Health, HealthCheck};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use std::collections::HashMap;
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
    /// Per node uid: since when every check has passed, as observed here.
    pub healthy_since: HashMap<String, Timestamp>,
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

/// When each Lease was last seen renewed, for the checks.
pub fn renewals_seen(seen: &SeenRenewals) -> LeaseRenewals {
    seen.iter().map(|(k, (_, at))| (k.clone(), *at)).collect()
}

/// Judges one node with its role's checks. `n` is the cached view, or a full Node from a
/// tool that listed Nodes itself.
pub fn evaluate<N: AsNodeView + ?Sized>(
    n: &N,
    checks: &Checks,
    obs: &mut Observations,
    now: Timestamp,
    leases: &LeaseRenewals,
) -> (NodeState, Vec<CheckVerdict>) {
    let view = n.as_node_view();
    let n = view.as_ref();
    let role = node::role(n);
    let ctx = autohealer_healthcheck::Context { now, lease_renewed: leases.get(node::name(n)).copied() };
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
    let state = NodeState {
        name: node::name(n).to_string(),
        uid: uid.clone(),
        role,
        zone: n.label(node::ZONE_LABEL).map(String::from),
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
        attributes: node::attributes(n, &checks.attribute_labels),
    };
    (state, verdicts)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Defect 6: a node whose clock lags a minute keeps renewing; it is never stale.
    #[test]
    fn a_lagging_node_clock_is_judged_by_when_the_renewal_was_seen() {
        let at = |s: i64| Timestamp::from_second(1_800_000_000 + s).unwrap();
        let mut seen = SeenRenewals::new();
        for k in 0..10 {
            // The kubelet's clock is 60 s behind the healer's.
            saw_renewal(&mut seen, "w1", at(k * 10 - 60), at(k * 10));
        }
        assert_eq!(renewals_seen(&seen).get("w1"), Some(&at(90)));
        // No renewal any more: the age grows from when the last one was seen.
        saw_renewal(&mut seen, "w1", at(30), at(200));
        assert_eq!(renewals_seen(&seen).get("w1"), Some(&at(90)));
    }

    #[test]
    fn probe_time_round_trips_in_upstream_format() {
        let t: Timestamp = "2026-03-04T05:06:07Z".parse().unwrap();
        assert_eq!(format_probe_time(t), "2026-03-04 05:06:07");
        assert_eq!(parse_probe_time("2026-03-04 05:06:07"), Some(t));
        assert_eq!(parse_probe_time("yesterday"), None);
    }
}
