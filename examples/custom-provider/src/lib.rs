//! An example cloud provider: bare-metal machines behind a small power API
//! (`POST {base}/machines/{name}/power-cycle`). It can reboot, not replace; the healer
//! skips the steps a provider does not support. Embed it with
//! `autohealer::Runtime { provider: Arc::new(PowerApi::new(url)), .. }` and `autohealer::run`.

use async_trait::async_trait;
use autohealer_cloud::{Action, ActionOutcome, CloudError, CloudProvider, NodeInfo, Phase, Progress, RepairGate, Role};

pub struct PowerApi {
    base: String,
    http: reqwest::Client,
}

impl PowerApi {
    pub fn new(base: impl Into<String>) -> Self {
        Self { base: base.into().trim_end_matches('/').to_string(), http: reqwest::Client::new() }
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
        let _ = rustls::crypto::ring::default_provider().install_default();
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
}
