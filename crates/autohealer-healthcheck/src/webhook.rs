use crate::NodeView;
use crate::params::{ParamError, kebab, parse_params};
use crate::util::{Secret, Trouble, error_chain, truncate};
use crate::{CheckKind, Health, HealthCheck};
use async_trait::async_trait;
use serde::Deserialize;
use serde_json::{Value, json};
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// Bigger answers are not a verdict; the cap keeps a misbehaving webhook from making
/// the healer buffer without bound.
const MAX_BODY: usize = 64 * 1024;
/// A reason goes into Events and annotations.
const MAX_REASON: usize = 1024;
const REDACTED: &str = "<redacted>";

/// A health check written in any language: the node's summary is POSTed as JSON to
/// `url`; a 2xx answer is healthy unless its JSON body says `{"healthy": false,
/// "reason": "..."}`, which is the only way to make the node unhealthy.
///
/// No answer within `timeout`, no connection, another status, or a body that is not
/// JSON says something about the webhook, not the node: the node stays healthy (a
/// webhook that is down would otherwise condemn every node of its role at once) and the
/// failure is kept for [`HealthCheck::trouble`].
///
/// The URL may carry a token (in its path, query or password), so it never appears in
/// a reason, a parameter error, a trouble, a log line or this type's `Debug`.
pub struct Webhook {
    url: Secret,
    /// Every form in which the URL or its secret parts could show up in a message.
    url_forms: Vec<String>,
    pub unhealthy_duration: Duration,
    pub timeout: Duration,
    client: reqwest::Client,
    trouble: Trouble,
}

impl fmt::Debug for Webhook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Webhook")
            .field("url", &self.url)
            .field("unhealthy_duration", &self.unhealthy_duration)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
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
        let p: Params = parse_params(params, path).map_err(|e| redact_url_in_error(params, e))?;
        // The parser's messages never contain the input, unlike ours would.
        let url = reqwest::Url::parse(&p.url)
            .map_err(|e| ParamError::new(format!("{path}.url"), format!("not a valid URL: {e} (value: {REDACTED})")))?;
        if url.scheme() != "http" && url.scheme() != "https" {
            return Err(ParamError::new(format!("{path}.url"), format!("not an http(s) URL (value: {REDACTED})")));
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
        let client = b.build().map_err(|e| ParamError::new(path, format!("cannot build the HTTP client: {}", error_chain(&e))))?;
        let mut url_forms = vec![p.url.clone(), url.as_str().to_string()];
        url_forms.extend(url.password().map(str::to_string));
        url_forms.extend(url.query().map(str::to_string));
        url_forms.retain(|f| !f.is_empty());
        // Longest first, so that a part never breaks up a whole before it is replaced.
        url_forms.sort_by_key(|f| std::cmp::Reverse(f.len()));
        Ok(Self {
            url: Secret(p.url),
            url_forms,
            unhealthy_duration: p.unhealthy_duration.unwrap_or(Duration::from_secs(300)),
            timeout,
            client,
            trouble: Trouble::default(),
        })
    }

    /// Whatever a message was built from (an error's causes, the webhook's own reason),
    /// the URL is taken out of it.
    fn scrub(&self, mut s: String) -> String {
        for f in &self.url_forms {
            if s.contains(f.as_str()) {
                s = s.replace(f.as_str(), REDACTED);
            }
        }
        s
    }

    fn request_failed(&self, e: reqwest::Error) -> String {
        if e.is_timeout() {
            return format!("webhook timed out after {}", humantime::format_duration(self.timeout));
        }
        let what = if e.is_connect() { "webhook cannot be reached" } else { "webhook request failed" };
        self.scrub(format!("{what}: {}", error_chain(&e.without_url())))
    }

    /// `Ok` is an answer about the node; `Err` is why there is none.
    async fn ask(&self, node: &NodeView) -> Result<Health, String> {
        let mut resp = self.client.post(&self.url.0).json(&summary(node)).send().await.map_err(|e| self.request_failed(e))?;
        let status = resp.status().as_u16();
        if !resp.status().is_success() {
            return Err(format!("webhook answered HTTP {status}"));
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| self.request_failed(e))? {
            if body.len() + chunk.len() > MAX_BODY {
                return Err(format!("webhook answered HTTP {status} with a body of more than {MAX_BODY} bytes"));
            }
            body.extend_from_slice(&chunk);
        }
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(Health::Healthy);
        }
        let verdict: Value =
            serde_json::from_slice(&body).map_err(|_| format!("webhook answered HTTP {status} with a body that is not JSON"))?;
        match verdict.get("healthy") {
            None | Some(Value::Bool(true)) => Ok(Health::Healthy),
            Some(Value::Bool(false)) => {
                let reason = verdict.get("reason").and_then(Value::as_str).unwrap_or("unhealthy");
                Ok(Health::unhealthy(self.scrub(format!("webhook says: {}", truncate(reason, MAX_REASON)))))
            }
            Some(_) => Err(format!("webhook answered HTTP {status} with a \"healthy\" that is neither true nor false")),
        }
    }
}

/// Parameter errors quote the value they found; when that value is the URL (or the
/// whole params are a string, which may be a URL put in the wrong place), it is taken
/// out.
fn redact_url_in_error(params: &Value, mut e: ParamError) -> ParamError {
    fn strings(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::String(s) => {
                out.extend(serde_json::to_string(s).ok());
                out.push(s.clone());
            }
            Value::Array(a) => a.iter().for_each(|v| strings(v, out)),
            Value::Object(m) => m.values().for_each(|v| strings(v, out)),
            _ => {}
        }
    }
    let mut secrets = Vec::new();
    match params {
        Value::Object(m) => m.iter().filter(|(k, _)| kebab(k) == "url").for_each(|(_, v)| strings(v, &mut secrets)),
        other => strings(other, &mut secrets),
    }
    secrets.retain(|s| !s.is_empty());
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    for s in &secrets {
        e.message = e.message.replace(s.as_str(), REDACTED);
    }
    e
}

/// What the webhook is told about the node: what the healer's [`NodeView`] holds of it
/// (the labels it keeps, conditions without their heartbeat, the machine's ids).
pub fn summary(node: &NodeView) -> Value {
    json!({
        "name": node.metadata.name,
        "labels": node.metadata.labels,
        "providerID": node.provider_id,
        "addresses": node.addresses,
        "conditions": node.conditions,
        "nodeInfo": node.node_info,
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

    async fn probe(&self, node: &NodeView) -> Health {
        match self.ask(node).await {
            Ok(h) => {
                self.trouble.clear("Webhook");
                h
            }
            Err(trouble) => {
                self.trouble.set("Webhook", self.scrub(trouble));
                Health::Healthy
            }
        }
    }

    fn trouble(&self) -> Option<String> {
        self.trouble.get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::StatusCode;
    use axum::response::IntoResponse;

    /// A webhook that answers by node name, the way a real one would be written.
    async fn serve() -> u16 {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let verdict = |axum::Json(body): axum::Json<Value>| async move {
            match body["name"].as_str() {
                Some("good") => axum::Json(json!({"healthy": true})).into_response(),
                Some("empty") => StatusCode::NO_CONTENT.into_response(),
                Some("bad") => axum::Json(json!({"healthy": false, "reason": "disk is read-only"})).into_response(),
                Some("garbage") => (StatusCode::OK, "<html>login</html>").into_response(),
                Some("odd") => axum::Json(json!({"healthy": "no"})).into_response(),
                Some("bad-gateway") => (StatusCode::BAD_GATEWAY, "<html>proxy error</html>").into_response(),
                Some("hang") => std::future::pending().await,
                _ => (StatusCode::INTERNAL_SERVER_ERROR, axum::Json(json!({}))).into_response(),
            }
        };
        // The second route is for a URL that carries its token in the path.
        let app = axum::Router::new().route("/check", axum::routing::post(verdict)).route("/check/{token}", axum::routing::post(verdict));
        tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
        port
    }

    fn refused_port() -> u16 {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    }

    fn node(n: &str) -> NodeView {
        serde_json::from_value(json!({"metadata": {"name": n}})).unwrap()
    }

    fn check(url: String) -> Webhook {
        Webhook::from_params(&json!({"url": url, "timeout": "200ms"}), "p").unwrap()
    }

    #[tokio::test]
    async fn only_an_explicit_unhealthy_answer_is_unhealthy() {
        let port = serve().await;
        let c = check(format!("http://127.0.0.1:{port}/check"));
        assert!(c.probe(&node("good")).await.is_healthy());
        assert!(c.probe(&node("empty")).await.is_healthy(), "a 2xx without a body is healthy");
        assert_eq!(c.trouble(), None);
        match c.probe(&node("bad")).await {
            Health::Unhealthy { reason, .. } => assert!(reason.contains("disk is read-only"), "{reason}"),
            h => panic!("{h:?}"),
        }
        assert_eq!(c.trouble(), None, "an unhealthy answer is an answer");
    }

    #[tokio::test]
    async fn a_failing_webhook_leaves_nodes_healthy_and_reports_trouble() {
        let port = serve().await;
        let c = check(format!("http://127.0.0.1:{port}/check"));
        for (name, expect) in [
            ("hang", "timed out after 200ms"),
            ("other", "answered HTTP 500"),
            ("bad-gateway", "answered HTTP 502"),
            ("garbage", "not JSON"),
            ("odd", "neither true nor false"),
        ] {
            assert!(c.probe(&node(name)).await.is_healthy(), "{name}: unsure is healthy");
            let t = c.trouble().unwrap_or_else(|| panic!("{name}: no trouble"));
            assert!(t.contains(expect), "{name}: {t}");
        }
        assert!(c.probe(&node("good")).await.is_healthy());
        assert_eq!(c.trouble(), None, "an answer clears the trouble");

        let refused = check(format!("http://127.0.0.1:{}/check", refused_port()));
        assert!(refused.probe(&node("good")).await.is_healthy());
        let t = refused.trouble().unwrap_or_default();
        assert!(t.contains("cannot be reached"), "{t}");
    }

    #[tokio::test]
    async fn the_url_never_shows() {
        let port = serve().await;
        let url = |port: u16| format!("http://hook:s3cr3t@127.0.0.1:{port}/check/s3cr3t?token=s3cr3t");
        let live = check(url(port));
        let dead = check(url(refused_port()));
        for (c, name, expect) in [
            (&live, "hang", "timed out"),
            (&live, "other", "HTTP 500"),
            (&live, "garbage", "not JSON"),
            (&dead, "good", "cannot be reached"),
            (&live, "bad", ""),
        ] {
            let h = c.probe(&node(name)).await;
            let reason = match &h {
                Health::Unhealthy { reason, .. } => reason.clone(),
                Health::Healthy => String::new(),
            };
            assert!(!reason.contains("s3cr3t"), "{name}: {reason}");
            assert_eq!(name == "bad", !h.is_healthy(), "{name}: {h:?}");
            let t = c.trouble().unwrap_or_default();
            assert!(!t.contains("s3cr3t"), "{name}: {t}");
            assert!(t.contains(expect), "{name}: {t}");
            let d = format!("{c:?}");
            assert!(!d.contains("s3cr3t"), "{d}");
        }

        for params in [
            json!({"url": "ftp://s3cr3t"}),
            json!({"url": "http://[s3cr3t"}),
            json!({"url": ["http://s3cr3t"]}),
            json!({"url": {"value": "http://s3cr3t"}}),
            json!("http://s3cr3t"),
            json!({"url": "http://s3cr3t", "timeout": "soon"}),
            json!({"url": "http://s3cr3t", "ca-file": "/nonexistent/ca.pem"}),
        ] {
            let e = Webhook::from_params(&params, "p").unwrap_err();
            assert!(!e.to_string().contains("s3cr3t"), "{params}: {e}");
        }
        assert!(Webhook::from_params(&json!({"url": "ftp://x"}), "p").unwrap_err().path.ends_with(".url"));
    }
}
