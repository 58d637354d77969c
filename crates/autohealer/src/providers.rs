//! The cloud providers this binary can build by `cloud-provider:` name.

use crate::config::Loaded;
use autohealer_cloud::CloudProvider;
use std::sync::Arc;

pub const KNOWN: &[&str] = &["openstack"];

pub fn build(loaded: &Loaded) -> anyhow::Result<Arc<dyn CloudProvider>> {
    match loaded.config.cloud_provider.as_str() {
        "openstack" => anyhow::bail!(
            "cloud-provider: the openstack provider is not built into this version yet; embed the healer with your own provider (see README, Extending)"
        ),
        other => anyhow::bail!(
            "cloud-provider: unknown provider {other:?}{}; known: {}",
            autohealer_healthcheck::did_you_mean(other, KNOWN),
            KNOWN.join(", ")
        ),
    }
}
