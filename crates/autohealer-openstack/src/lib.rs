//! The OpenStack cloud provider: Keystone authentication and catalog, minimal Nova,
//! Cinder, Heat and Magnum clients written on reqwest, and the `magnum` and `nova`
//! repair strategies behind the `CloudProvider` trait.

pub mod clients;
pub mod config;
pub mod provider;
pub mod secret;
pub mod session;

pub use config::{OpenStackConfig, Settings, Strategy};
pub use provider::OpenStackProvider;
pub use secret::Secret;
pub use session::{Observer, Session};

/// Builds the provider from the `openstack:` block and `cluster-name`, reading
/// `clouds.yaml` and `OS_*` variables where the block says so or leaves gaps.
pub fn build(
    block: Option<&serde_json::Value>,
    cluster_name: Option<&str>,
    observer: Option<Observer>,
) -> Result<OpenStackProvider, String> {
    let cfg = OpenStackConfig::parse(block).map_err(|e| e.to_string())?;
    let settings = cfg.resolve(cluster_name, &|k| std::env::var(k).ok()).map_err(|e| e.to_string())?;
    let session = Session::new(settings, observer).map_err(|e| e.to_string())?;
    Ok(OpenStackProvider::new(session))
}
