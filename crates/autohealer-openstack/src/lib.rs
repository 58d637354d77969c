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

/// Why the provider could not be built: the config names the key path, the session
/// the part of the HTTP client it could not set up.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error("cannot set up the OpenStack session: {0}")]
    Session(#[from] autohealer_cloud::CloudError),
}

/// Builds the provider from the `openstack:` block and `cluster-name`, reading
/// `clouds.yaml` and `OS_*` variables where the block says so or leaves gaps.
pub fn build(
    block: Option<&serde_json::Value>,
    cluster_name: Option<&str>,
    observer: Option<Observer>,
) -> Result<OpenStackProvider, BuildError> {
    let cfg = OpenStackConfig::parse(block)?;
    let settings = cfg.resolve(cluster_name, &|k| std::env::var(k).ok())?;
    let session = Session::new(settings, observer)?;
    Ok(OpenStackProvider::new(session))
}
