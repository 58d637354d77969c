//! The configured provider, whichever it is: what `validate` says about it, and
//! building it with its requests counted.

use crate::config::Loaded;
use autohealer_cloud::CloudProvider;
use autohealer_cloud::registry::{RepairTiming, RequestObserver};
use autohealer_core::Metrics;
use autohealer_core::metrics::CloudLabels;
use std::sync::Arc;

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
