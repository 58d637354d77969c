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

use autohealer_cloud::registry::{RepairTiming, Site};

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
    from_config(&OpenStackConfig::parse(block)?, cluster_name, observer)
}

/// The provider from a parsed block: what [`build`] and the registry's build share.
fn from_config(cfg: &OpenStackConfig, cluster_name: Option<&str>, observer: Option<Observer>) -> Result<OpenStackProvider, BuildError> {
    let settings = cfg.resolve(cluster_name, &|k| std::env::var(k).ok())?;
    Ok(OpenStackProvider::new(Session::new(settings, observer)?))
}

/// The provider as the binary registers it: `cloud-provider: openstack` and the
/// `openstack:` block, as magnum-auto-healer writes them.
pub struct OpenStack;

impl autohealer_cloud::Provider for OpenStack {
    const NAME: &'static str = "openstack";
    const DOC: &'static str = "The OpenStack provider's settings (auth-url, credentials, region, ...), as magnum-auto-healer reads them.";
    type Config = OpenStackConfig;

    fn validate(c: &OpenStackConfig, site: &Site) -> Result<(), autohealer_params::ParamError> {
        let nova = c.strategy.as_deref() == Some("nova");
        if !nova && site.cluster_name.as_deref().is_none_or(str::is_empty) {
            return Err(autohealer_params::ParamError::new(
                "cluster-name",
                "required by cloud-provider openstack (the Magnum cluster's UUID), unless openstack.strategy is nova",
            ));
        }
        Ok(())
    }

    fn build(
        c: &OpenStackConfig,
        site: &Site,
        observer: Option<Observer>,
    ) -> Result<std::sync::Arc<dyn autohealer_cloud::CloudProvider>, autohealer_cloud::registry::BuildError> {
        Ok(std::sync::Arc::new(from_config(c, site.cluster_name.as_deref(), observer)?))
    }

    /// The Magnum driver as configured, and a warning when, on a Cluster API driver,
    /// the cluster's MachineHealthCheck would replace a node before the healer's
    /// reboot is judged.
    fn describe(c: &OpenStackConfig, site: &Site, timing: &RepairTiming) -> Vec<String> {
        if c.strategy.as_deref() == Some("nova") || site.cluster_name.is_none() {
            return vec!["openstack: strategy nova".into()];
        }
        let driver = c.magnum_driver.clone().unwrap_or_else(|| "auto".into());
        let mut out = vec![match driver.as_str() {
            "auto" => {
                "openstack: strategy magnum; magnum-driver auto (found from the Magnum and Heat APIs before the first repair)".to_string()
            }
            d => format!("openstack: strategy magnum; magnum-driver {d} (set)"),
        }];
        if driver == "heat" {
            return out;
        }
        let mhc = c.machine_health_check_timeout.unwrap_or(std::time::Duration::from_secs(300));
        for (role, slowest) in &timing.slowest_check {
            let judged = *slowest + timing.rebuild_delay_after_reboot;
            if judged > mhc {
                out.push(format!(
                    "warning: {}the cluster's MachineHealthCheck (openstack.machine-health-check-timeout {}) may replace a {role} node before the healer's reboot is judged (unhealthy-duration {} + rebuild-delay-after-reboot {}): lower them to let the reboot come first",
                    if driver == "auto" { "if the cluster runs a Cluster API driver, " } else { "" },
                    humantime::format_duration(mhc),
                    humantime::format_duration(*slowest),
                    humantime::format_duration(timing.rebuild_delay_after_reboot),
                ));
            }
        }
        out
    }
}
