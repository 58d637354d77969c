//! What the healer keeps about the fleet beyond the nodes: when repairs began (a
//! replaced node takes its own history with it, and a bad image that makes every new
//! node fail must still meet `repairs-per-hour`) and the short-circuits and storm
//! cooldowns in force (so a new leader does not repair the stragglers of an outage the
//! old one was holding back). Kept as an annotation on the leader's Lease, which only
//! the leader writes; pure here, written by the shell.

use crate::planner::{self, Scope};
use autohealer_cloud::Role;
use k8s_openapi::jiff::Timestamp;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// The annotation on the leader Lease that holds the [`FleetState`].
pub const FLEET_ANNOTATION: &str = "autohealer.dev/fleet";

/// The most repair starts kept: more than any sane `repairs-per-hour`.
const MAX_STARTS: usize = 500;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FleetState {
    /// When new repairs began, with the node's uid (its own ledger counts it while it exists).
    #[serde(default)]
    pub starts: Vec<(String, Timestamp)>,
    /// Scope (`role/worker`, `zone/eu-1a`) to the end of its storm cooldown.
    #[serde(default)]
    pub cooldowns: BTreeMap<String, Timestamp>,
    /// The scopes short-circuited at the last evaluation.
    #[serde(default)]
    pub shorted: BTreeSet<String>,
}

pub fn scope_key(s: &Scope) -> String {
    match s {
        Scope::Role(r) => format!("role/{r}"),
        Scope::Zone(z) => format!("zone/{z}"),
        Scope::Cohort { attribute, value } => format!("cohort/{attribute}={value}"),
    }
}

pub fn scope_of(key: &str) -> Option<Scope> {
    match key.split_once('/')? {
        ("role", "master") => Some(Scope::Role(Role::Master)),
        ("role", "worker") => Some(Scope::Role(Role::Worker)),
        ("zone", z) => Some(Scope::Zone(z.to_string())),
        ("cohort", c) => c.split_once('=').map(|(a, v)| Scope::Cohort { attribute: a.to_string(), value: v.to_string() }),
        _ => None,
    }
}

/// What changed in the short-circuits at one evaluation.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Storms {
    pub on: Vec<(Scope, String)>,
    /// Cleared, with the end of their cooldown.
    pub off: Vec<(Scope, Timestamp)>,
}

impl FleetState {
    /// Reads the annotation; an unreadable one is empty (the nodes' own histories and
    /// the other gates still bound repairs), with why.
    pub fn parse(value: Option<&str>) -> Result<Self, String> {
        match value {
            None => Ok(Self::default()),
            Some(v) => serde_json::from_str(v).map_err(|e| format!("annotation {FLEET_ANNOTATION} is unreadable ({e})")),
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The cooldowns in force at `now`, for the planner.
    pub fn cooldowns(&self, now: Timestamp) -> BTreeMap<Scope, Timestamp> {
        self.cooldowns.iter().filter(|(_, u)| **u > now).filter_map(|(k, u)| Some((scope_of(k)?, *u))).collect()
    }

    /// The starts of the last hour, for the planner.
    pub fn recent_starts(&self, now: Timestamp) -> Vec<(String, Timestamp)> {
        let hour_ago = planner::sub(now, Duration::from_secs(3600));
        self.starts.iter().filter(|(_, t)| *t > hour_ago).cloned().collect()
    }

    pub fn record_start(&mut self, uid: &str, now: Timestamp) {
        let hour_ago = planner::sub(now, Duration::from_secs(3600));
        self.starts.retain(|(_, t)| *t > hour_ago);
        self.starts.push((uid.to_string(), now));
        let excess = self.starts.len().saturating_sub(MAX_STARTS);
        self.starts.drain(..excess);
    }

    /// Follows the short-circuits in force: a scope that cleared starts its cooldown.
    /// Also from a state another leader wrote: its short-circuits clear here too.
    pub fn track(&mut self, circuits: &[(Scope, String)], cooldown: Duration, now: Timestamp) -> Storms {
        let active: BTreeSet<String> = circuits.iter().map(|(s, _)| scope_key(s)).collect();
        let mut storms = Storms::default();
        for (scope, why) in circuits {
            if !self.shorted.contains(&scope_key(scope)) {
                storms.on.push((scope.clone(), why.clone()));
            }
        }
        for key in self.shorted.difference(&active) {
            if let Some(scope) = scope_of(key) {
                let until = planner::add(now, cooldown);
                self.cooldowns.insert(key.clone(), until);
                storms.off.push((scope, until));
            }
        }
        self.cooldowns.retain(|_, u| *u > now);
        self.shorted = active;
        storms
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Timestamp {
        format!("2026-01-01T{s}Z").parse().unwrap()
    }

    #[test]
    fn a_short_circuit_another_leader_saw_cools_down_here() {
        let mut mine = FleetState::default();
        let zone = Scope::Zone("a".into());
        let storms = mine.track(&[(zone.clone(), "3 of 4".into())], Duration::from_secs(300), t("01:00:00"));
        assert_eq!(storms.on.len(), 1);
        let mut theirs = FleetState::parse(Some(&mine.to_json())).unwrap();
        let storms = theirs.track(&[], Duration::from_secs(300), t("01:10:00"));
        assert_eq!(storms.off, vec![(zone.clone(), t("01:15:00"))]);
        assert_eq!(theirs.cooldowns(t("01:12:00")).get(&zone), Some(&t("01:15:00")));
        assert!(theirs.cooldowns(t("01:15:00")).is_empty());
    }

    #[test]
    fn starts_keep_an_hour() {
        let mut f = FleetState::default();
        f.record_start("u1", t("01:00:00"));
        f.record_start("u2", t("01:30:00"));
        assert_eq!(f.recent_starts(t("02:10:00")), vec![("u2".to_string(), t("01:30:00"))]);
        assert!(FleetState::parse(Some("{garbage")).is_err());
    }
}
