//! The cloud providers this binary can build by `cloud-provider:` name.

use crate::config::Loaded;
use autohealer_cloud::CloudProvider;
use autohealer_core::Metrics;
use autohealer_core::metrics::CloudLabels;
use std::sync::Arc;

pub const KNOWN: &[&str] = &["openstack"];

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
            autohealer_healthcheck::did_you_mean(other, KNOWN),
            KNOWN.join(", ")
        ),
    }
}
