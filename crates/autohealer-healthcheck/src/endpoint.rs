use crate::params::{ParamError, parse_params};
use crate::{CheckKind, Health, HealthCheck};
use async_trait::async_trait;
use k8s_openapi::api::core::v1::Node;
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

const SERVICE_ACCOUNT_TOKEN: &str = "/var/run/secrets/kubernetes.io/serviceaccount/token";
pub const DEFAULT_UNHEALTHY_ANNOTATION: &str = "autohealing.openstack.org/unhealthy-timestamp";

/// Unhealthy when any of `endpoints` on the node's InternalIP answers with a code
/// outside `ok-codes`, or does not answer within `timeout`.
///
/// TLS certificates are not verified by default, as magnum-auto-healer never did
/// (kubelets and apiservers often serve certificates for names, not for the IP being
/// probed); set `tls-verify: true` and `ca-file` to verify.
#[derive(Debug)]
pub struct Endpoint {
    pub protocol: String,
    pub port: u16,
    pub endpoints: Vec<String>,
    pub ok_codes: Vec<u16>,
    pub require_token: bool,
    token: Option<Secret>,
    pub unhealthy_duration: Duration,
    pub unhealthy_annotation: String,
    pub timeout: Duration,
    client: reqwest::Client,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct Params {
    protocol: Option<String>,
    port: Option<u16>,
    endpoints: Option<Vec<String>>,
    ok_codes: Option<Vec<u16>>,
    require_token: Option<bool>,
    token: Option<String>,
    #[serde(default, with = "humantime_serde")]
    unhealthy_duration: Option<Duration>,
    unhealthy_annotation: Option<String>,
    tls_verify: Option<bool>,
    /// Upstream's later spelling of the opposite of `tls-verify`.
    insecure_skip_verify: Option<bool>,
    ca_file: Option<PathBuf>,
    #[serde(default, with = "humantime_serde")]
    timeout: Option<Duration>,
}

impl Endpoint {
    pub fn from_params(params: &serde_json::Value, path: &str) -> Result<Self, ParamError> {
        let p: Params = parse_params(params, path)?;
        let protocol = p.protocol.unwrap_or_else(|| "https".into()).to_lowercase();
        if protocol != "http" && protocol != "https" {
            return Err(ParamError::new(format!("{path}.protocol"), format!("must be HTTP or HTTPS, got {protocol:?}")));
        }
        let verify = match (p.tls_verify, p.insecure_skip_verify) {
            (Some(v), Some(s)) if v == s => {
                return Err(ParamError::new(format!("{path}.insecure-skip-verify"), "contradicts tls-verify; give one of them"));
            }
            (Some(v), _) => v,
            (None, Some(skip)) => !skip,
            (None, None) => false,
        };
        crate::ensure_crypto_provider();
        let timeout = p.timeout.unwrap_or(Duration::from_secs(5));
        let mut builder = reqwest::Client::builder().timeout(timeout).connect_timeout(timeout).danger_accept_invalid_certs(!verify);
        if let Some(ca) = &p.ca_file {
            let pem =
                std::fs::read(ca).map_err(|e| ParamError::new(format!("{path}.ca-file"), format!("cannot read {}: {e}", ca.display())))?;
            let cert = reqwest::Certificate::from_pem(&pem)
                .map_err(|e| ParamError::new(format!("{path}.ca-file"), format!("{} is not a PEM certificate: {e}", ca.display())))?;
            builder = builder.add_root_certificate(cert);
        }
        let client = builder.build().map_err(|e| ParamError::new(path, format!("cannot build the HTTP client: {e}")))?;
        Ok(Self {
            protocol,
            port: p.port.unwrap_or(6443),
            endpoints: p.endpoints.unwrap_or_else(|| vec!["/healthz".into()]),
            ok_codes: p.ok_codes.unwrap_or_else(|| vec![200]),
            require_token: p.require_token.unwrap_or(false) || p.token.is_some(),
            token: p.token.map(Secret),
            unhealthy_duration: p.unhealthy_duration.unwrap_or(Duration::from_secs(300)),
            unhealthy_annotation: p.unhealthy_annotation.unwrap_or_else(|| DEFAULT_UNHEALTHY_ANNOTATION.into()),
            timeout,
            client,
        })
    }

    fn url(&self, ip: &str, endpoint: &str) -> String {
        let host = if ip.contains(':') { format!("[{ip}]") } else { ip.to_string() };
        format!("{}://{host}:{}/{}", self.protocol, self.port, endpoint.trim_start_matches('/'))
    }

    /// The bearer token, read fresh each time so a rotated service-account token is used.
    async fn bearer(&self) -> Option<String> {
        if let Some(t) = &self.token {
            return Some(t.0.clone());
        }
        tokio::fs::read_to_string(SERVICE_ACCOUNT_TOKEN).await.ok().map(|t| t.trim().to_string())
    }
}

#[async_trait]
impl HealthCheck for Endpoint {
    fn type_name(&self) -> &str {
        "Endpoint"
    }

    fn unhealthy_duration(&self) -> Duration {
        self.unhealthy_duration
    }

    fn kind(&self) -> CheckKind {
        CheckKind::Probe
    }

    fn unhealthy_annotation(&self) -> Option<&str> {
        Some(&self.unhealthy_annotation)
    }

    async fn probe(&self, node: &Node) -> Health {
        let name = node.metadata.name.as_deref().unwrap_or_default();
        let ip = node
            .status
            .as_ref()
            .and_then(|s| s.addresses.as_ref())
            .and_then(|a| a.iter().find(|a| a.type_ == "InternalIP"))
            .map(|a| a.address.clone());
        let Some(ip) = ip else {
            tracing::warn!(node = name, "node has no InternalIP; Endpoint check skipped");
            return Health::Healthy;
        };
        let token = if self.require_token {
            match self.bearer().await {
                Some(t) => Some(t),
                None => {
                    tracing::warn!(node = name, "no token to probe with (require-token is set); Endpoint check skipped");
                    return Health::Healthy;
                }
            }
        } else {
            None
        };
        for ep in &self.endpoints {
            let url = self.url(&ip, ep);
            let mut req = self.client.get(&url);
            if let Some(t) = &token {
                req = req.bearer_auth(t);
            }
            match req.send().await {
                Ok(resp) if self.ok_codes.contains(&resp.status().as_u16()) => {}
                Ok(resp) => {
                    return Health::unhealthy(format!("GET {url} answered {}", resp.status().as_u16()));
                }
                Err(e) if e.is_timeout() => {
                    return Health::unhealthy(format!("GET {url} timed out after {}", humantime::format_duration(self.timeout)));
                }
                Err(e) => {
                    return Health::unhealthy(format!("GET {url} failed: {}", error_chain(&e)));
                }
            }
        }
        Health::Healthy
    }
}

/// A value that must never reach a log line: its `Debug` says only that it is there.
#[derive(Clone)]
struct Secret(String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::StatusCode;
    use serde_json::json;

    async fn serve(code: StatusCode) -> u16 {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let app = axum::Router::new().route(
            "/healthz",
            axum::routing::get(move |h: axum::http::HeaderMap| async move {
                if h.get("authorization").and_then(|v| v.to_str().ok()) == Some("Bearer s3cret") { StatusCode::IM_A_TEAPOT } else { code }
            }),
        );
        tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
        port
    }

    fn node(ip: &str) -> Node {
        serde_json::from_value(json!({"metadata": {"name": "m1"}, "status": {"addresses": [{"type": "InternalIP", "address": ip}]}}))
            .unwrap()
    }

    #[tokio::test]
    async fn probes_the_internal_ip_and_judges_by_code() {
        let ok = serve(StatusCode::OK).await;
        let bad = serve(StatusCode::SERVICE_UNAVAILABLE).await;
        let check = |port: u16| Endpoint::from_params(&json!({"protocol": "HTTP", "port": port, "okCodes": [200]}), "p").unwrap();
        assert!(check(ok).probe(&node("127.0.0.1")).await.is_healthy());
        match check(bad).probe(&node("127.0.0.1")).await {
            Health::Unhealthy { reason, .. } => {
                assert!(reason.contains("answered 503"), "{reason}")
            }
            h => panic!("{h:?}"),
        }
    }

    #[tokio::test]
    async fn refused_connection_is_unhealthy_and_no_ip_is_skipped() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        drop(l);
        let c = Endpoint::from_params(&json!({"protocol": "http", "port": port}), "p").unwrap();
        assert!(!c.probe(&node("127.0.0.1")).await.is_healthy());
        let no_ip: Node = serde_json::from_value(json!({"metadata": {"name": "m"}})).unwrap();
        assert!(c.probe(&no_ip).await.is_healthy());
    }

    #[tokio::test]
    async fn sends_the_configured_token() {
        let port = serve(StatusCode::OK).await;
        let c = Endpoint::from_params(&json!({"protocol": "http", "port": port, "token": "s3cret", "ok-codes": [418]}), "p").unwrap();
        assert!(c.probe(&node("127.0.0.1")).await.is_healthy());
        assert!(!format!("{c:?}").contains("s3cret"), "the token never shows in Debug output");
    }

    #[test]
    fn bad_protocol_names_the_key() {
        let e = Endpoint::from_params(&json!({"protocol": "ftp"}), "healthcheck.master[0].params").unwrap_err();
        assert_eq!(e.path, "healthcheck.master[0].params.protocol");
    }
}
