//! The cloud providers this binary can build by `cloud-provider:` name.

use crate::config::Loaded;
use autohealer_cloud::CloudProvider;
use autohealer_core::Metrics;
use autohealer_core::metrics::CloudLabels;
use std::sync::Arc;

pub const KNOWN: &[&str] = &["openstack"];

/// What `validate` says about the provider's own block, without calling the cloud: the
/// Magnum driver as configured, and a warning when, on a Cluster API driver, the
/// cluster's MachineHealthCheck would replace a node before the healer's reboot is judged.
pub fn describe_config(loaded: &Loaded) -> Vec<String> {
    let c = &loaded.config;
    if c.cloud_provider != "openstack" {
        return Vec::new();
    }
    let Ok(os) = autohealer_openstack::OpenStackConfig::parse(c.openstack.as_ref().map(|b| &b.0)) else { return Vec::new() };
    if os.strategy.as_deref() == Some("nova") || c.cluster_name.is_none() {
        return vec!["openstack: strategy nova".into()];
    }
    let driver = os.magnum_driver.clone().unwrap_or_else(|| "auto".into());
    let mut out = vec![match driver.as_str() {
        "auto" => {
            "openstack: strategy magnum; magnum-driver auto (found from the Magnum and Heat APIs before the first repair)".to_string()
        }
        d => format!("openstack: strategy magnum; magnum-driver {d} (set)"),
    }];
    if driver == "heat" {
        return out;
    }
    let mhc = os.machine_health_check_timeout.unwrap_or(std::time::Duration::from_secs(300));
    for (role, checks) in [("master", &loaded.checks.master), ("worker", &loaded.checks.worker)] {
        let Some(slowest) = checks.iter().map(|k| k.unhealthy_duration()).max() else { continue };
        let judged = slowest + c.rebuild_delay_after_reboot;
        if judged > mhc {
            out.push(format!(
                "warning: {}the cluster's MachineHealthCheck (openstack.machine-health-check-timeout {}) may replace a {role} node before the healer's reboot is judged (unhealthy-duration {} + rebuild-delay-after-reboot {}): lower them to let the reboot come first",
                if driver == "auto" { "if the cluster runs a Cluster API driver, " } else { "" },
                humantime::format_duration(mhc),
                humantime::format_duration(slowest),
                humantime::format_duration(c.rebuild_delay_after_reboot),
            ));
        }
    }
    out
}

/// Builds the configured provider; its requests are counted in
/// `autohealer_cloud_requests_total{service,code}`.
pub fn build(loaded: &Loaded, metrics: &Arc<Metrics>) -> anyhow::Result<Arc<dyn CloudProvider>> {
    let c = &loaded.config;
    match c.cloud_provider.as_str() {
        "openstack" => {
            let m = metrics.clone();
            let observer: autohealer_openstack::Observer = Arc::new(move |service: &str, code: u16| {
                m.cloud_requests.get_or_create(&CloudLabels { service: service.into(), code: code.to_string() }).inc();
            });
            let p = autohealer_openstack::build(c.openstack.as_ref().map(|b| &b.0), c.cluster_name.as_deref(), Some(observer))
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            Ok(Arc::new(p))
        }
        other => anyhow::bail!(
            "cloud-provider: unknown provider {other:?}{}; known: {}",
            autohealer_params::did_you_mean(other, KNOWN),
            KNOWN.join(", ")
        ),
    }
}
