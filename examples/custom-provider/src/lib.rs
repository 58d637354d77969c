//! An example cloud provider: bare-metal machines behind a small power API
//! (`POST {base}/machines/{name}/power-cycle`). It can reboot, not replace; the healer
//! skips the steps a provider does not support. Register it (`providers.register::<PowerApi>()`,
//! next to the binary's own in `autohealer::Registries::builtin`, or in an embedder's
//! `autohealer::Registries`) and select it in the config:
//!
//! ```yaml
//! cloud-provider: power-api
//! power-api:
//!   url: https://power.example.test
//!   timeout: 10s
//! ```

use async_trait::async_trait;
use autohealer_cloud::registry::{BuildError, RequestObserver, Site};
use autohealer_cloud::{Action, ActionOutcome, CloudError, CloudProvider, NodeInfo, Phase, Progress, Provider, RepairGate, Role};
use autohealer_params::ParamError;
use serde::Deserialize;
use std::sync::Arc;
use std::time::Duration;

pub struct PowerApi {
    base: String,
    http: reqwest::Client,
}

impl PowerApi {
    pub fn new(base: impl Into<String>) -> Self {
        Self { base: base.into().trim_end_matches('/').to_string(), http: reqwest::Client::new() }
    }
}

/// The `power-api:` block.
#[derive(PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct PowerApiConfig {
    /// The power API's base URL. The binary hides a `url`'s value in its errors (a URL
    /// may carry its own credential), so `Debug` hides it too.
    pub url: String,
    /// How long one call may take.
    #[serde(default, with = "humantime_serde")]
    pub timeout: Option<Duration>,
}

impl std::fmt::Debug for PowerApiConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PowerApiConfig").field("url", &"<hidden>").field("timeout", &self.timeout).finish()
    }
}

impl Provider for PowerApi {
    const NAME: &'static str = "power-api";
    const DOC: &'static str = "The power API's `url` (and `timeout`, 10s by default) for `cloud-provider: power-api`.";
    type Config = PowerApiConfig;

    fn validate(c: &PowerApiConfig, _site: &Site) -> Result<(), ParamError> {
        if reqwest::Url::parse(&c.url).is_err() {
            return Err(ParamError::new("power-api.url", format!("not a URL (value: {:?})", c.url)));
        }
        if c.timeout.is_some_and(|t| t.is_zero()) {
            return Err(ParamError::new("power-api.timeout", "must be longer than 0s"));
        }
        Ok(())
    }

    fn build(c: &PowerApiConfig, _site: &Site, _observer: Option<RequestObserver>) -> Result<Arc<dyn CloudProvider>, BuildError> {
        autohealer_params::ensure_crypto_provider();
        let http = reqwest::Client::builder().timeout(c.timeout.unwrap_or(Duration::from_secs(10))).build()?;
        Ok(Arc::new(PowerApi { base: c.url.trim_end_matches('/').to_string(), http }))
    }
}

#[async_trait]
impl CloudProvider for PowerApi {
    fn name(&self) -> &str {
        "power-api"
    }

    fn supports(&self, action: Action, _role: Role) -> bool {
        action == Action::Reboot
    }

    async fn repair_allowed(&self) -> Result<RepairGate, CloudError> {
        Ok(RepairGate::Allowed)
    }

    async fn reboot(&self, node: &NodeInfo) -> Result<ActionOutcome, CloudError> {
        let url = format!("{}/machines/{}/power-cycle", self.base, node.name);
        let call = format!("power-api POST /machines/{}/power-cycle", node.name);
        let resp =
            self.http.post(&url).send().await.map_err(|e| CloudError::Call { call: call.clone(), status: None, message: e.to_string() })?;
        let status = resp.status().as_u16();
        if status != 202 {
            return Err(CloudError::Call { call, status: Some(status), message: resp.text().await.unwrap_or_default() });
        }
        Ok(ActionOutcome {
            server_id: Some(node.name.clone()),
            detail: format!("power cycle of {} accepted", node.name),
            ..Default::default()
        })
    }

    async fn replace(&self, _node: &NodeInfo, _at: Option<&Phase>, _resumed: bool) -> Result<Progress, CloudError> {
        Err(CloudError::Unsupported {
            provider: "power-api".into(),
            action: Action::Replace,
            reason: "bare metal cannot be replaced by an API".into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reboots_through_the_power_api() {
        autohealer_params::ensure_crypto_provider();
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let app = axum::Router::new().route(
            "/machines/{name}/power-cycle",
            axum::routing::post(|axum::extract::Path(name): axum::extract::Path<String>| async move {
                if name == "rack1-07" { axum::http::StatusCode::ACCEPTED } else { axum::http::StatusCode::NOT_FOUND }
            }),
        );
        tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
        let p = PowerApi::new(format!("http://127.0.0.1:{port}"));
        let node = |n: &str| NodeInfo { name: n.into(), ..Default::default() };
        assert!(p.reboot(&node("rack1-07")).await.unwrap().detail.contains("accepted"));
        let e = p.reboot(&node("nope")).await.unwrap_err().to_string();
        assert!(e.contains("power-api POST /machines/nope/power-cycle") && e.contains("404"), "{e}");
        assert!(!p.supports(Action::Replace, Role::Worker));
    }

    #[test]
    fn its_block_is_parsed_and_validated_by_name() {
        let mut providers = autohealer_cloud::Providers::empty();
        providers.register::<PowerApi>();
        let site = Site::default();
        let block = |v: serde_json::Value| providers.parse("power-api", Some(&v), &site);
        assert_eq!(block(serde_json::json!({"url": "http://pdu.test", "timeout": "2s"})).unwrap().name(), "power-api");
        assert_eq!(block(serde_json::json!({"url": "pdu"})).unwrap_err().path, "power-api.url");
        assert_eq!(block(serde_json::json!({"url": "http://pdu.test", "timeout": "0s"})).unwrap_err().path, "power-api.timeout");
        let e = block(serde_json::json!({"url": "http://pdu.test", "timout": "2s"})).unwrap_err();
        assert_eq!(e.path, "power-api.timout");
        assert!(e.message.contains("did you mean \"timeout\""), "{e}");
        let c: PowerApiConfig = serde_json::from_value(serde_json::json!({"url": "https://user:pw@pdu.test"})).unwrap();
        assert!(!format!("{c:?}").contains("pw@"), "{c:?}");
    }
}
