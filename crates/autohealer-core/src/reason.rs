//! The reasons of the Events the healer publishes, declared once: what `kubectl get
//! events` shows, what alerts and operators grep for.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    RepairStarted,
    /// A step a previous leader (or a cancelled task) began is being finished.
    RepairResumed,
    RepairIssued,
    RepairFailed,
    RepairHeld,
    RetryBudgetExhausted,
    /// The provider cannot act on this node (it maps to no machine, say).
    RepairImpossible,
    DryRun,
    Drained,
    Recovered,
    Fenced,
    /// A notify-only check found a problem.
    NodeProblem,
    /// A call of a pending step failed after the machine was taken out of service;
    /// it is tried again later.
    RepairStalled,
    /// A stalled step's machine was brought back (started again).
    MachineRestored,
    /// A stalled step's machine could not be brought back: it stays out of service.
    RestoreFailed,
    ConfigRejected,
    ConfigReloaded,
    /// The pause state cannot be read: new repairs wait.
    PauseUnknown,
    /// A check cannot get its evidence (its webhook fails, say): it answers healthy.
    CheckFailing,
    /// The next step is the cloud's own (a MachineHealthCheck replaces the machine).
    RepairDelegated,
    /// A step that needs an operator's approval was proposed.
    RepairProposed,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::RepairStarted => "RepairStarted",
            Reason::RepairResumed => "RepairResumed",
            Reason::RepairIssued => "RepairIssued",
            Reason::RepairFailed => "RepairFailed",
            Reason::RepairHeld => "RepairHeld",
            Reason::RetryBudgetExhausted => "RetryBudgetExhausted",
            Reason::RepairImpossible => "RepairImpossible",
            Reason::DryRun => "DryRun",
            Reason::Drained => "Drained",
            Reason::Recovered => "Recovered",
            Reason::Fenced => "Fenced",
            Reason::NodeProblem => "NodeProblem",
            Reason::RepairStalled => "RepairStalled",
            Reason::MachineRestored => "MachineRestored",
            Reason::RestoreFailed => "RestoreFailed",
            Reason::ConfigRejected => "ConfigRejected",
            Reason::ConfigReloaded => "ConfigReloaded",
            Reason::PauseUnknown => "PauseUnknown",
            Reason::CheckFailing => "CheckFailing",
            Reason::RepairDelegated => "RepairDelegated",
            Reason::RepairProposed => "RepairProposed",
        }
    }

    /// Whether the Event is a Warning: something an operator may have to act on.
    pub fn warning(self) -> bool {
        !matches!(
            self,
            Reason::RepairStarted
                | Reason::RepairResumed
                | Reason::RepairIssued
                | Reason::DryRun
                | Reason::Drained
                | Reason::Recovered
                | Reason::MachineRestored
                | Reason::ConfigReloaded
                | Reason::RepairDelegated
        )
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
