use crate::NodeView;
use crate::params::{ParamError, parse_params};
use crate::{Context, Health, HealthCheck};
use async_trait::async_trait;
use serde::Deserialize;
use std::time::Duration;

/// Unhealthy when a node has not become Ready within `timeout` of its creation: it
/// reports no Ready condition, or a Ready that is not True and has not changed since
/// it first came up. A node that was Ready once and fails later is NodeCondition's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartupTimeout {
    pub timeout: Duration,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct Params {
    #[serde(default, with = "humantime_serde")]
    timeout: Option<Duration>,
}

impl StartupTimeout {
    pub fn from_params(params: &serde_json::Value, path: &str) -> Result<Self, ParamError> {
        let p: Params = parse_params(params, path)?;
        Ok(Self { timeout: p.timeout.unwrap_or(Duration::from_secs(900)) })
    }
}

#[async_trait]
impl HealthCheck for StartupTimeout {
    fn type_name(&self) -> &str {
        "StartupTimeout"
    }

    fn unhealthy_duration(&self) -> Duration {
        self.timeout
    }

    /// The verdict follows from the node alone: its creation and its Ready condition.
    fn reads_clock(&self) -> bool {
        false
    }

    fn judge(&self, node: &NodeView, _ctx: &Context) -> Health {
        let Some(created) = node.metadata.creation_timestamp.as_ref().map(|t| t.0) else { return Health::Healthy };
        let ready = node.condition("Ready");
        let never_ready = match ready {
            None => true,
            Some(c) if c.status == "True" => false,
            // Not Ready now; it never was if the condition has not moved since the node
            // came up (a minute of slack for the kubelet's first report).
            Some(c) => c.last_transition_time.as_ref().is_none_or(|t| t.0 <= created + k8s_openapi::jiff::SignedDuration::from_secs(60)),
        };
        if never_ready {
            Health::Unhealthy {
                since: Some(created),
                reason: format!(
                    "node has not become Ready since it was created (startup timeout {})",
                    humantime::format_duration(self.timeout)
                ),
            }
        } else {
            Health::Healthy
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(conds: serde_json::Value) -> NodeView {
        serde_json::from_value(
            json!({"metadata": {"name": "n", "creationTimestamp": "2026-01-01T00:00:00Z"}, "status": {"conditions": conds}}),
        )
        .unwrap()
    }

    #[test]
    fn a_node_that_never_became_ready() {
        let c = StartupTimeout::from_params(&json!({"timeout": "10m"}), "p").unwrap();
        let ctx = Context { now: "2026-01-01T01:00:00Z".parse().unwrap(), lease_renewed: None };
        match c.judge(&node(json!([])), &ctx) {
            Health::Unhealthy { since, .. } => assert_eq!(since.unwrap().to_string(), "2026-01-01T00:00:00Z"),
            h => panic!("{h:?}"),
        }
        let stuck = json!([{"type": "Ready", "status": "False", "lastTransitionTime": "2026-01-01T00:00:05Z"}]);
        assert!(!c.judge(&node(stuck), &ctx).is_healthy());
        let ready = json!([{"type": "Ready", "status": "True", "lastTransitionTime": "2026-01-01T00:01:00Z"}]);
        assert!(c.judge(&node(ready), &ctx).is_healthy());
        let failed_later = json!([{"type": "Ready", "status": "False", "lastTransitionTime": "2026-01-01T00:30:00Z"}]);
        assert!(c.judge(&node(failed_later), &ctx).is_healthy(), "a later failure is not a startup failure");
    }
}
