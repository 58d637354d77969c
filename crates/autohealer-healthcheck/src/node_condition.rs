use crate::NodeView;
use crate::params::{ParamError, parse_params};
use crate::{Context, Health, HealthCheck};
use async_trait::async_trait;
use serde::Deserialize;
use std::time::Duration;

/// Unhealthy when one of the node's `types` of condition has a status outside
/// `ok-values` (or inside `error-values`), counted from the condition's
/// `lastTransitionTime`.
///
/// A node that does not report a listed condition at all is healthy for this check,
/// as upstream judges it: a missing condition is no evidence of a fault, and a node
/// that never reports Ready is the `StartupTimeout` check's business.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeCondition {
    pub types: Vec<String>,
    pub ok_values: Vec<String>,
    pub error_values: Vec<String>,
    pub unhealthy_duration: Duration,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct Params {
    types: Option<Vec<String>>,
    ok_values: Option<Vec<String>>,
    error_values: Option<Vec<String>>,
    #[serde(default, with = "humantime_serde")]
    unhealthy_duration: Option<Duration>,
}

impl NodeCondition {
    pub fn from_params(params: &serde_json::Value, path: &str) -> Result<Self, ParamError> {
        let p: Params = parse_params(params, path)?;
        if p.ok_values.is_some() && p.error_values.is_some() {
            return Err(ParamError::new(
                format!("{path}.error-values"),
                "ok-values and error-values cannot be used together; give one of them",
            ));
        }
        let types = p.types.unwrap_or_else(|| vec!["Ready".into()]);
        if types.is_empty() {
            return Err(ParamError::new(format!("{path}.types"), "must name at least one condition type"));
        }
        Ok(Self {
            types,
            ok_values: if p.error_values.is_some() { vec![] } else { p.ok_values.unwrap_or_else(|| vec!["True".into()]) },
            error_values: p.error_values.unwrap_or_default(),
            unhealthy_duration: p.unhealthy_duration.unwrap_or(Duration::from_secs(300)),
        })
    }

    fn bad(&self, status: &str) -> bool {
        if self.error_values.is_empty() {
            !self.ok_values.iter().any(|v| v == status)
        } else {
            self.error_values.iter().any(|v| v == status)
        }
    }
}

#[async_trait]
impl HealthCheck for NodeCondition {
    fn type_name(&self) -> &str {
        "NodeCondition"
    }

    fn unhealthy_duration(&self) -> Duration {
        self.unhealthy_duration
    }

    /// The verdict follows from the node alone (the condition's own timestamps).
    fn reads_clock(&self) -> bool {
        false
    }

    fn judge(&self, node: &NodeView, _ctx: &Context) -> Health {
        let mut worst: Option<Health> = None;
        for c in &node.conditions {
            if !self.types.contains(&c.type_) || !self.bad(&c.status) {
                continue;
            }
            let since = c.last_transition_time.as_ref().map(|t| t.0);
            let reason = match (&c.reason, &c.message) {
                (Some(r), _) => format!("condition {} is {} ({r})", c.type_, c.status),
                _ => format!("condition {} is {}", c.type_, c.status),
            };
            // The longest-standing problem decides when the node becomes actionable.
            let earlier = match &worst {
                Some(Health::Unhealthy { since: Some(s), .. }) => since.is_some_and(|t| t < *s),
                Some(_) => false,
                None => true,
            };
            if earlier {
                worst = Some(Health::Unhealthy { since, reason });
            }
        }
        worst.unwrap_or(Health::Healthy)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ctx() -> Context {
        Context { now: "2026-06-01T00:00:00Z".parse().unwrap(), lease_renewed: None }
    }

    fn node(conds: serde_json::Value) -> NodeView {
        serde_json::from_value(json!({"metadata": {"name": "n"}, "status": {"conditions": conds}})).unwrap()
    }

    #[test]
    fn defaults_match_upstream() {
        let c = NodeCondition::from_params(&serde_json::Value::Null, "p").unwrap();
        assert_eq!(c.types, ["Ready"]);
        assert_eq!(c.ok_values, ["True"]);
        assert_eq!(c.unhealthy_duration, Duration::from_secs(300));
    }

    #[test]
    fn not_ready_is_unhealthy_since_its_transition() {
        let c = NodeCondition::from_params(&json!({"unhealthyDuration": "1m"}), "p").unwrap();
        let n = node(
            json!([{"type": "Ready", "status": "Unknown", "reason": "NodeStatusUnknown", "lastTransitionTime": "2026-01-01T00:00:00Z"}]),
        );
        match c.judge(&n, &ctx()) {
            Health::Unhealthy { since, reason } => {
                assert_eq!(since.unwrap().to_string(), "2026-01-01T00:00:00Z");
                assert!(reason.contains("Ready is Unknown (NodeStatusUnknown)"), "{reason}");
            }
            h => panic!("{h:?}"),
        }
        assert!(c.judge(&node(json!([{"type": "Ready", "status": "True"}])), &ctx()).is_healthy());
        assert!(c.judge(&node(json!([])), &ctx()).is_healthy(), "a missing condition is no evidence");
    }

    #[test]
    fn error_values_for_pressure_conditions() {
        let c = NodeCondition::from_params(&json!({"types": ["DiskPressure"], "error-values": ["True"]}), "p").unwrap();
        assert!(!c.judge(&node(json!([{"type": "DiskPressure", "status": "True"}])), &ctx()).is_healthy());
        assert!(c.judge(&node(json!([{"type": "DiskPressure", "status": "Unknown"}])), &ctx()).is_healthy());
    }

    #[test]
    fn each_pressure_and_node_problem_condition_is_judged_with_error_values() {
        for t in ["MemoryPressure", "DiskPressure", "PIDPressure", "KernelDeadlock", "ReadonlyFilesystem"] {
            let c = NodeCondition::from_params(&json!({"types": [t], "error-values": ["True"]}), "p").unwrap();
            let bad = node(json!([{"type": "Ready", "status": "True"}, {"type": t, "status": "True", "reason": "Problem"}]));
            match c.judge(&bad, &ctx()) {
                Health::Unhealthy { reason, .. } => assert!(reason.contains(t), "{t}: {reason}"),
                h => panic!("{t}: {h:?}"),
            }
            assert!(c.judge(&node(json!([{"type": t, "status": "False"}])), &ctx()).is_healthy(), "{t} False is fine");
            assert!(c.judge(&node(json!([{"type": "Ready", "status": "False"}])), &ctx()).is_healthy(), "{t} only looks at {t}");
        }
    }

    #[test]
    fn ok_and_error_values_together_are_rejected() {
        let e = NodeCondition::from_params(&json!({"okValues": ["True"], "errorValues": ["False"]}), "healthcheck.worker[0].params")
            .unwrap_err();
        assert_eq!(e.path, "healthcheck.worker[0].params.error-values");
    }
}
