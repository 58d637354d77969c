use crate::params::{ParamError, parse_params};
use crate::{CheckKind, Health, HealthCheck};
use async_trait::async_trait;
use k8s_openapi::api::core::v1::Node;
use serde::Deserialize;
use serde_json::{Value, json};
use std::path::PathBuf;
use std::time::Duration;

/// A health check written in any language: the node's summary is POSTed as JSON to
/// `url`; a 2xx answer is healthy unless its JSON body says `{"healthy": false,
/// "reason": "..."}`; any other answer, or none within `timeout`, is unhealthy.
#[derive(Debug)]
pub struct Webhook {
    pub url: String,
    pub unhealthy_duration: Duration,
    pub timeout: Duration,
    client: reqwest::Client,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct Params {
    url: String,
    #[serde(default, with = "humantime_serde")]
    unhealthy_duration: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    timeout: Option<Duration>,
    tls_verify: Option<bool>,
    ca_file: Option<PathBuf>,
}

impl Webhook {
    pub fn from_params(params: &Value, path: &str) -> Result<Self, ParamError> {
        let p: Params = parse_params(params, path)?;
        if !(p.url.starts_with("http://") || p.url.starts_with("https://")) {
            return Err(ParamError::new(format!("{path}.url"), format!("not an http(s) URL (value: {:?})", p.url)));
        }
        crate::ensure_crypto_provider();
        let timeout = p.timeout.unwrap_or(Duration::from_secs(5));
        let mut b = reqwest::Client::builder().timeout(timeout).danger_accept_invalid_certs(!p.tls_verify.unwrap_or(true));
        if let Some(ca) = &p.ca_file {
            let pem =
                std::fs::read(ca).map_err(|e| ParamError::new(format!("{path}.ca-file"), format!("cannot read {}: {e}", ca.display())))?;
            let cert = reqwest::Certificate::from_pem(&pem)
                .map_err(|e| ParamError::new(format!("{path}.ca-file"), format!("{} is not a PEM certificate: {e}", ca.display())))?;
            b = b.add_root_certificate(cert);
        }
        let client = b.build().map_err(|e| ParamError::new(path, format!("cannot build the HTTP client: {e}")))?;
        Ok(Self { url: p.url, unhealthy_duration: p.unhealthy_duration.unwrap_or(Duration::from_secs(300)), timeout, client })
    }
}

/// What the webhook is told about the node.
pub fn summary(node: &Node) -> Value {
    let status = node.status.as_ref();
    json!({
        "name": node.metadata.name,
        "labels": node.metadata.labels,
        "providerID": node.spec.as_ref().and_then(|s| s.provider_id.clone()),
        "addresses": status.and_then(|s| s.addresses.clone()),
        "conditions": status.and_then(|s| s.conditions.clone()),
        "nodeInfo": status.and_then(|s| s.node_info.clone()),
    })
}

#[async_trait]
impl HealthCheck for Webhook {
    fn type_name(&self) -> &str {
        "Webhook"
    }

    fn unhealthy_duration(&self) -> Duration {
        self.unhealthy_duration
    }

    fn kind(&self) -> CheckKind {
        CheckKind::Probe
    }

    async fn probe(&self, node: &Node) -> Health {
        match self.client.post(&self.url).json(&summary(node)).send().await {
            Ok(r) if r.status().is_success() => {
                let verdict: Value = r.json().await.unwrap_or(Value::Null);
                match verdict.get("healthy").and_then(Value::as_bool) {
                    Some(false) => Health::unhealthy(format!(
                        "webhook {}: {}",
                        self.url,
                        verdict.get("reason").and_then(Value::as_str).unwrap_or("unhealthy")
                    )),
                    _ => Health::Healthy,
                }
            }
            Ok(r) => Health::unhealthy(format!("webhook POST {} answered {}", self.url, r.status().as_u16())),
            Err(e) if e.is_timeout() => {
                Health::unhealthy(format!("webhook POST {} timed out after {}", self.url, humantime::format_duration(self.timeout)))
            }
            Err(e) => Health::unhealthy(format!("webhook POST {} failed: {e}", self.url)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn verdicts_from_a_real_http_service() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let app = axum::Router::new().route(
            "/check",
            axum::routing::post(|axum::Json(body): axum::Json<Value>| async move {
                match body["name"].as_str() {
                    Some("good") => axum::Json(json!({"healthy": true})).into_response_parts(),
                    Some("bad") => axum::Json(json!({"healthy": false, "reason": "disk is read-only"})).into_response_parts(),
                    _ => (axum::http::StatusCode::INTERNAL_SERVER_ERROR, axum::Json(json!({}))).into_response_parts(),
                }
            }),
        );
        tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
        let c = Webhook::from_params(&json!({"url": format!("http://127.0.0.1:{port}/check")}), "p").unwrap();
        let node = |n: &str| -> Node { serde_json::from_value(json!({"metadata": {"name": n}})).unwrap() };
        assert!(c.probe(&node("good")).await.is_healthy());
        match c.probe(&node("bad")).await {
            Health::Unhealthy { reason, .. } => assert!(reason.contains("disk is read-only"), "{reason}"),
            h => panic!("{h:?}"),
        }
        assert!(!c.probe(&node("other")).await.is_healthy(), "a 500 is unhealthy");
        assert!(Webhook::from_params(&json!({"url": "ftp://x"}), "p").unwrap_err().path.ends_with(".url"));
    }

    trait Parts {
        fn into_response_parts(self) -> axum::response::Response;
    }

    impl<T: axum::response::IntoResponse> Parts for T {
        fn into_response_parts(self) -> axum::response::Response {
            self.into_response()
        }
    }
}
