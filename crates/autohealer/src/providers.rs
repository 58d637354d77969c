//! The provider crates this binary is built with, and building the configured one.

use crate::config::Loaded;
use autohealer_cloud::registry::{RepairTiming, RequestObserver};
use autohealer_cloud::{CloudProvider, Providers};
use autohealer_core::Metrics;
use autohealer_core::metrics::CloudLabels;
use std::sync::Arc;

/// Every provider crate the binary is built with: the one place a new one is listed
/// (and its crate added to Cargo.toml). Its `cloud-provider:` name, its block and its
/// `config-reference` line come from its [`autohealer_cloud::Provider`] impl.
pub fn builtin() -> Providers {
    let mut p = Providers::empty();
    p.register::<autohealer_openstack::OpenStack>();
    p
}

/// What `validate` says about the provider's own block, without calling the cloud.
pub fn describe_config(loaded: &Loaded) -> Vec<String> {
    let slowest_check = [(autohealer_cloud::Role::Master, &loaded.checks.master), (autohealer_cloud::Role::Worker, &loaded.checks.worker)]
        .into_iter()
        .filter_map(|(role, checks)| Some((role, checks.iter().map(|k| k.unhealthy_duration()).max()?)))
        .collect();
    let timing = RepairTiming { slowest_check, rebuild_delay_after_reboot: loaded.config.rebuild_delay_after_reboot };
    loaded.provider.describe(&timing)
}

/// Builds the configured provider; its requests are counted in
/// `autohealer_cloud_requests_total{service,code}`.
pub fn build(loaded: &Loaded, metrics: &Arc<Metrics>) -> anyhow::Result<Arc<dyn CloudProvider>> {
    let m = metrics.clone();
    let observer: RequestObserver = Arc::new(move |service: &str, code: u16| {
        m.cloud_requests.get_or_create(&CloudLabels { service: service.into(), code: code.to_string() }).inc();
    });
    loaded.provider.build(Some(observer)).map_err(|e| anyhow::anyhow!("{e}"))
}
