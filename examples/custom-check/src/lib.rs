//! An example health-check plugin: nodes running a kernel from a blocklist are
//! unhealthy (e.g. a kernel with a known storage bug), so the healer reboots them into
//! the fixed one. Register it and use it from the config:
//!
//! ```yaml
//! healthcheck:
//!   worker:
//!     - type: KernelBlocklist
//!       params:
//!         kernels: ["6.1.0-13-amd64"]
//!         unhealthy-duration: 10m
//! ```

use async_trait::async_trait;
use autohealer_healthcheck::{Context, Health, HealthCheck, NodeView, ParamError, Registry, parse_params};
use serde::Deserialize;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug)]
pub struct KernelBlocklist {
    kernels: Vec<String>,
    unhealthy_duration: Duration,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct Params {
    kernels: Vec<String>,
    #[serde(default, with = "humantime_serde")]
    unhealthy_duration: Option<Duration>,
}

impl KernelBlocklist {
    pub fn from_params(params: &serde_json::Value, path: &str) -> Result<Self, ParamError> {
        let p: Params = parse_params(params, path)?;
        if p.kernels.is_empty() {
            return Err(ParamError::new(format!("{path}.kernels"), "list at least one kernel version"));
        }
        Ok(Self { kernels: p.kernels, unhealthy_duration: p.unhealthy_duration.unwrap_or(Duration::from_secs(600)) })
    }
}

#[async_trait]
impl HealthCheck for KernelBlocklist {
    fn type_name(&self) -> &str {
        "KernelBlocklist"
    }

    fn unhealthy_duration(&self) -> Duration {
        self.unhealthy_duration
    }

    /// The verdict follows from the node alone: the healer judges it again only when the
    /// node changes.
    fn reads_clock(&self) -> bool {
        false
    }

    fn judge(&self, node: &NodeView, _ctx: &Context) -> Health {
        let kernel = node.node_info.kernel_version.as_str();
        if self.kernels.iter().any(|k| k == kernel) {
            // Since the node came up: the kernel has been wrong all along.
            let since = node.metadata.creation_timestamp.as_ref().map(|t| t.0);
            Health::Unhealthy { since, reason: format!("kernel {kernel} is blocklisted") }
        } else {
            Health::Healthy
        }
    }
}

/// Adds the check to a registry under its `type:` name.
pub fn register(registry: &mut Registry) {
    registry.register("KernelBlocklist", |p, path| Ok(Arc::new(KernelBlocklist::from_params(p, path)?)));
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn registered_and_judging() {
        let mut r = Registry::with_builtins();
        register(&mut r);
        let check = r
            .build("KernelBlocklist", &json!({"kernels": ["6.1.0-13-amd64"], "unhealthyDuration": "1m"}), "healthcheck.worker[0]")
            .unwrap();
        let node = |k: &str| -> NodeView {
            serde_json::from_value(json!({"metadata": {"name": "n", "creationTimestamp": "2026-01-01T00:00:00Z"}, "status": {"nodeInfo": {
                "kernelVersion": k, "architecture": "", "bootID": "", "containerRuntimeVersion": "", "kubeProxyVersion": "", "kubeletVersion": "",
                "machineID": "", "operatingSystem": "", "osImage": "", "systemUUID": ""}}}))
            .unwrap()
        };
        let ctx = Context { now: "2026-01-02T00:00:00Z".parse().unwrap(), lease_renewed: None };
        assert!(!check.judge(&node("6.1.0-13-amd64"), &ctx).is_healthy());
        assert!(check.judge(&node("6.1.0-18-amd64"), &ctx).is_healthy());
        let e = r.build("KernelBlocklist", &json!({"kernels": []}), "healthcheck.worker[0]").unwrap_err();
        assert_eq!(e.path, "healthcheck.worker[0].params.kernels");
    }
}
