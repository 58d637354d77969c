//! The healer, in two layers.
//!
//! The pure layer decides everything and does no I/O: [`observe`] turns Nodes and
//! probe results into [`planner::NodeState`]s; [`planner`] decides per node (gates,
//! budgets, escalation, the phases of a step begun); [`effects`] turns the plan into
//! typed [`effects::Effect`]s (Events with a [`Reason`], notifications, held detections
//! to keep, work per node, counts) and keeps the once-per-failure announcement memory;
//! [`step`] says what a node's ledger record becomes after each cloud answer (the first
//! write, each phase of a multi-call step, a stall, a restore, the failure or the
//! recovery); [`fleet`] keeps what outlives nodes (repair starts, short-circuits and
//! storm cooldowns). Unit tests reach every decision, and the lifecycle simulation
//! (`tests/simulation.rs`) drives them through faults.
//!
//! The shell only carries the effects out and feeds results back: [`healer`] (the
//! watches, the prober, the loop, leadership, metrics), [`actor`] (one fenced ledger
//! write, then one cloud call), [`drain`] and [`leader`].

pub mod actor;
pub mod drain;
pub mod effects;
pub mod fleet;
pub mod healer;
pub mod leader;
pub mod ledger;
pub mod metrics;
pub mod node;
pub mod notice;
pub mod observe;
pub mod planner;
pub mod reason;
pub mod severity;
pub mod step;

pub use healer::{Checks, Healer, HealerSettings, Status};
pub use leader::{AlwaysLeader, LeaderElector, LeaseElector, LeaseSettings};
pub use metrics::Metrics;
pub use notice::{Kind, Notification, Notifier, Severity};
pub use planner::{Decision, Pause, Plan, Policy};
pub use reason::Reason;
