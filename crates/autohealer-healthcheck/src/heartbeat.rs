use crate::NodeView;
use crate::params::{ParamError, parse_params};
use crate::{Context, Health, HealthCheck, Timestamp};
use async_trait::async_trait;
use serde::Deserialize;
use std::time::Duration;

/// Unhealthy when the node's Lease in `kube-node-lease` has not been renewed for
/// `unhealthy-duration`: the kubelet's own heartbeat, read directly instead of waiting
/// for the node-lifecycle controller to turn Ready into Unknown. A node without a
/// Lease is not judged (older kubelets, or nodes that do not use them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heartbeat {
    pub unhealthy_duration: Duration,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct Params {
    #[serde(default, with = "humantime_serde")]
    unhealthy_duration: Option<Duration>,
}

impl Heartbeat {
    pub fn from_params(params: &serde_json::Value, path: &str) -> Result<Self, ParamError> {
        let p: Params = parse_params(params, path)?;
        Ok(Self { unhealthy_duration: p.unhealthy_duration.unwrap_or(Duration::from_secs(60)) })
    }
}

#[async_trait]
impl HealthCheck for Heartbeat {
    fn type_name(&self) -> &str {
        "Heartbeat"
    }

    fn unhealthy_duration(&self) -> Duration {
        self.unhealthy_duration
    }

    fn needs_node_leases(&self) -> bool {
        true
    }

    /// A Lease renewed at `r` is fresh until `r + unhealthy-duration`, and a later
    /// renewal only moves that later. A stale Lease, or none, is looked at again every
    /// time: its node may renew or get one at any moment.
    fn verdict_holds_until(&self, _node: &NodeView, ctx: &Context) -> Option<Timestamp> {
        let fresh_until = planned(ctx.lease_renewed?, self.unhealthy_duration)?;
        (ctx.now < fresh_until).then_some(fresh_until)
    }

    fn judge(&self, _node: &NodeView, ctx: &Context) -> Health {
        // Only a Lease already stale is a finding: a renewal that is merely due is not.
        // It counts from the last renewal, so the repair is due at renewal + duration.
        match ctx.lease_renewed {
            Some(renewed) => {
                let age = Duration::try_from(ctx.now.duration_since(renewed)).unwrap_or(Duration::ZERO);
                if age >= self.unhealthy_duration {
                    Health::Unhealthy { since: Some(renewed), reason: format!("node Lease not renewed for {}s", age.as_secs()) }
                } else {
                    Health::Healthy
                }
            }
            None => Health::Healthy,
        }
    }
}

/// `at + d`, when it is a representable instant.
fn planned(at: Timestamp, d: Duration) -> Option<Timestamp> {
    at.checked_add(k8s_openapi::jiff::SignedDuration::try_from(d).ok()?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_lease_is_unhealthy_since_its_last_renewal() {
        let c = Heartbeat::from_params(&serde_json::json!({"unhealthyDuration": "40s"}), "p").unwrap();
        let n = NodeView::default();
        let at =
            |now: &str, renewed: Option<&str>| Context { now: now.parse().unwrap(), lease_renewed: renewed.map(|r| r.parse().unwrap()) };
        match c.judge(&n, &at("2026-01-01T00:01:00Z", Some("2026-01-01T00:00:00Z"))) {
            Health::Unhealthy { since, .. } => assert_eq!(since.unwrap().to_string(), "2026-01-01T00:00:00Z"),
            h => panic!("{h:?}"),
        }
        assert!(c.judge(&n, &at("2026-01-01T00:00:39Z", Some("2026-01-01T00:00:00Z"))).is_healthy(), "a renewal merely due is no finding");
        assert!(c.judge(&n, &at("2026-01-01T00:01:00Z", None)).is_healthy(), "no Lease, no verdict");
        // A fresh Lease's verdict holds until it would go stale; a stale one's, or no
        // Lease's, is asked again every time.
        let holds = |now, renewed| c.verdict_holds_until(&n, &at(now, renewed)).map(|t| t.to_string());
        assert_eq!(holds("2026-01-01T00:00:10Z", Some("2026-01-01T00:00:00Z")).as_deref(), Some("2026-01-01T00:00:40Z"));
        assert_eq!(holds("2026-01-01T00:00:40Z", Some("2026-01-01T00:00:00Z")), None);
        assert_eq!(holds("2026-01-01T00:00:10Z", None), None);
    }
}
