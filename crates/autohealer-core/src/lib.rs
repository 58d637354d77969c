//! The healer: it observes Nodes through a watch, judges them with health checks,
//! decides with a pure planner, and acts through a cloud provider, writing every step
//! to the node's repair ledger before the cloud call.

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
