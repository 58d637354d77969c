//! Keystone authentication, the service catalog, and the request path every client
//! uses: token in `X-Auth-Token`, renewal a margin before `expires_at`, one
//! re-authentication and retry on a 401, concurrent re-authentications merged into
//! one, and errors that name the service, the call and the status.

use crate::config::{Credentials, DomainRef, ProjectRef, Settings, UserRef};
use crate::secret::Secret;
use autohealer_cloud::CloudError;
use autohealer_cloud::error_chain;
use jiff::Timestamp;
use reqwest::Method;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

/// The services the provider talks to, with the catalog types each may be listed as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    Compute,
    Volume,
    Orchestration,
    ContainerInfra,
}

impl Service {
    fn types(self) -> &'static [&'static str] {
        match self {
            Service::Compute => &["compute"],
            Service::Volume => &["block-storage", "volumev3", "volume"],
            Service::Orchestration => &["orchestration"],
            Service::ContainerInfra => &["container-infra", "container-infrastructure-management"],
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Service::Compute => "nova",
            Service::Volume => "cinder",
            Service::Orchestration => "heat",
            Service::ContainerInfra => "magnum",
        }
    }

    fn microversion(self) -> Option<&'static str> {
        match self {
            Service::Compute => Some("compute 2.1"),
            Service::Volume => Some("volume 3.0"),
            Service::Orchestration => None,
            Service::ContainerInfra => Some("container-infra 1.10"),
        }
    }
}

#[derive(Debug, Clone)]
struct Endpoint {
    type_: String,
    interface: String,
    region: Option<String>,
    url: String,
}

struct TokenState {
    value: Secret,
    renew_at: Timestamp,
    catalog: Vec<Endpoint>,
    epoch: u64,
}

/// Called with (service, status) for every response, for the metrics.
pub type Observer = Arc<dyn Fn(&str, u16) + Send + Sync>;

pub struct Session {
    http: reqwest::Client,
    settings: Settings,
    state: tokio::sync::Mutex<Option<TokenState>>,
    epochs: std::sync::atomic::AtomicU64,
    observer: Option<Observer>,
}

/// A service's answer.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub location: Option<String>,
    pub body: Value,
}

/// How often a call that surely did nothing (503, a read that failed, no connection)
/// is repeated before its error is returned.
const TRANSIENT_RETRIES: u32 = 6;

fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(100 * 2u64.pow(attempt.saturating_sub(1)))
}

fn call_err(call: &str, status: Option<u16>, message: impl Into<String>) -> CloudError {
    CloudError::Call { call: call.to_string(), status, message: message.into() }
}

/// The message inside any of the OpenStack error envelopes.
pub fn error_message(body: &Value) -> String {
    if let Some(m) = body.pointer("/error/message").and_then(Value::as_str) {
        return m.to_string();
    }
    if let Some(m) = body.pointer("/errors/0/detail").and_then(Value::as_str) {
        return m.to_string();
    }
    if let Some(m) = body.get("message").and_then(Value::as_str) {
        return m.to_string();
    }
    if let Some(m) = body.as_object().and_then(|o| o.values().find_map(|v| v.get("message").and_then(Value::as_str))) {
        return m.to_string();
    }
    if let Some(m) = body.get("explanation").and_then(Value::as_str) {
        return m.to_string();
    }
    match body {
        Value::Null => "no details".into(),
        Value::String(s) => s.chars().take(300).collect(),
        other => other.to_string().chars().take(300).collect(),
    }
}

impl Session {
    pub fn new(settings: Settings, observer: Option<Observer>) -> Result<Self, CloudError> {
        autohealer_params::ensure_crypto_provider();
        let mut b = reqwest::Client::builder()
            .timeout(settings.request_timeout)
            .connect_timeout(settings.request_timeout.min(Duration::from_secs(10)))
            .redirect(reqwest::redirect::Policy::none())
            .danger_accept_invalid_certs(settings.insecure);
        if let Some(ca) = &settings.ca_file {
            let pem = std::fs::read(ca).map_err(|e| CloudError::Other(format!("openstack.ca-file: cannot read {}: {e}", ca.display())))?;
            let cert = reqwest::Certificate::from_pem(&pem)
                .map_err(|e| CloudError::Other(format!("openstack.ca-file: {} is not a PEM certificate: {e}", ca.display())))?;
            b = b.add_root_certificate(cert);
        }
        let http = b.build().map_err(|e| CloudError::Other(format!("cannot build the OpenStack HTTP client: {e}")))?;
        Ok(Self { http, settings, state: tokio::sync::Mutex::new(None), epochs: Default::default(), observer })
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    fn observe(&self, service: &str, status: u16) {
        if let Some(o) = &self.observer {
            o(service, status);
        }
    }

    fn auth_body(&self) -> Value {
        let domain = |d: &DomainRef| match d {
            DomainRef::Id(id) => json!({"id": id}),
            DomainRef::Name(n) => json!({"name": n}),
        };
        let user = |u: &UserRef| match u {
            UserRef::Id(id) => json!({"id": id}),
            UserRef::Name { name, domain: d } => json!({"name": name, "domain": domain(d)}),
        };
        match &self.settings.credentials {
            Credentials::Password { user: u, password, project } => {
                let mut pu = user(u);
                pu["password"] = json!(password.expose());
                let mut auth = json!({"identity": {"methods": ["password"], "password": {"user": pu}}});
                if let Some(p) = project {
                    auth["scope"] = json!({"project": match p {
                        ProjectRef::Id(id) => json!({"id": id}),
                        ProjectRef::Name { name, domain: d } => json!({"name": name, "domain": domain(d)}),
                    }});
                }
                json!({ "auth": auth })
            }
            Credentials::ApplicationCredential { id, name, user: u, secret } => {
                let mut ac = json!({"secret": secret.expose()});
                match (id, name) {
                    (Some(id), _) => ac["id"] = json!(id),
                    (None, Some(n)) => {
                        ac["name"] = json!(n);
                        if let Some(u) = u {
                            ac["user"] = user(u);
                        }
                    }
                    (None, None) => {}
                }
                json!({"auth": {"identity": {"methods": ["application_credential"], "application_credential": ac}}})
            }
        }
    }

    async fn authenticate(&self) -> Result<TokenState, CloudError> {
        let url = format!("{}/auth/tokens", self.settings.auth_url);
        let call = "keystone POST /v3/auth/tokens";
        let resp = self
            .http
            .post(&url)
            .json(&self.auth_body())
            .send()
            .await
            .map_err(|e| call_err(call, None, format!("{url}: {}", error_chain(&e))))?;
        let status = resp.status().as_u16();
        self.observe("keystone", status);
        let token = resp.headers().get("x-subject-token").and_then(|h| h.to_str().ok()).map(Secret::new);
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        if status != 201 && status != 200 {
            return Err(call_err(call, Some(status), error_message(&body)));
        }
        let value = token.ok_or_else(|| call_err(call, Some(status), "no X-Subject-Token in the answer"))?;
        let expires: Timestamp = body
            .pointer("/token/expires_at")
            .and_then(Value::as_str)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| call_err(call, Some(status), "the token has no readable expires_at"))?;
        let now = Timestamp::now();
        let lifetime = expires.duration_since(now);
        // Renew a fifth of the lifetime early, at most a minute.
        let margin = (lifetime / 5).min(jiff::SignedDuration::from_secs(60));
        let mut catalog = Vec::new();
        for svc in body.pointer("/token/catalog").and_then(Value::as_array).into_iter().flatten() {
            let type_ = svc["type"].as_str().unwrap_or_default();
            for ep in svc["endpoints"].as_array().into_iter().flatten() {
                catalog.push(Endpoint {
                    type_: type_.to_string(),
                    interface: ep["interface"].as_str().unwrap_or_default().to_string(),
                    region: ep["region_id"].as_str().or(ep["region"].as_str()).map(String::from),
                    url: ep["url"].as_str().unwrap_or_default().trim_end_matches('/').to_string(),
                });
            }
        }
        let epoch = self.epochs.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        tracing::debug!(expires = %expires, endpoints = catalog.len(), "authenticated with Keystone");
        Ok(TokenState { value, renew_at: expires - margin, catalog, epoch })
    }

    /// A valid token, its epoch and the endpoint of `service`; authenticates when the
    /// token is missing or due for renewal. Callers arriving while one authenticates
    /// wait for it and share its token.
    async fn token_for(&self, service: Service) -> Result<(Secret, u64, String), CloudError> {
        let mut g = self.state.lock().await;
        if g.as_ref().is_none_or(|s| Timestamp::now() >= s.renew_at) {
            *g = Some(self.authenticate().await?);
        }
        let s = g.as_ref().ok_or_else(|| CloudError::Other("no token".into()))?;
        let url = self.pick(&s.catalog, service)?;
        Ok((s.value.clone(), s.epoch, url))
    }

    fn pick(&self, catalog: &[Endpoint], service: Service) -> Result<String, CloudError> {
        let (iface, region) = (&self.settings.interface, &self.settings.region);
        for t in service.types() {
            if let Some(ep) = catalog
                .iter()
                .find(|e| e.type_ == *t && e.interface == *iface && region.as_ref().is_none_or(|r| e.region.as_ref() == Some(r)))
            {
                return Ok(ep.url.clone());
            }
        }
        Err(CloudError::Other(format!(
            "no {} endpoint (type {}) with interface {iface} in region {} in the Keystone catalog",
            service.name(),
            service.types().join(" or "),
            region.as_deref().unwrap_or("(any)")
        )))
    }

    async fn invalidate(&self, epoch: u64) {
        let mut g = self.state.lock().await;
        if g.as_ref().is_some_and(|s| s.epoch == epoch) {
            *g = None;
        }
    }

    /// The endpoint URL of `service`, authenticating if needed.
    pub async fn endpoint(&self, service: Service) -> Result<String, CloudError> {
        self.token_for(service).await.map(|(_, _, url)| url)
    }

    /// Sends a request to `service` at `path` (relative to its endpoint, or absolute
    /// when it starts with `http`). `call` names it in errors. Statuses in `ok` are
    /// answers; anything else is an error.
    pub async fn request(
        &self,
        service: Service,
        method: Method,
        path: &str,
        body: Option<&Value>,
        call: &str,
        ok: &[u16],
    ) -> Result<Reply, CloudError> {
        let call = format!("{} {call}", service.name());
        let mut reauthenticated = false;
        let mut transient = 0;
        loop {
            let (token, epoch, base) = self.token_for(service).await?;
            let url = if path.starts_with("http") { path.to_string() } else { format!("{base}{path}") };
            let mut req =
                self.http.request(method.clone(), &url).header("X-Auth-Token", token.expose()).header("Accept", "application/json");
            if let Some(v) = service.microversion() {
                req = req.header("OpenStack-API-Version", v);
                if service == Service::Compute {
                    req = req.header("X-OpenStack-Nova-API-Version", "2.1");
                }
            }
            if let Some(b) = body {
                req = req.json(b);
            }
            let read = method == Method::GET;
            let resp = match req.send().await {
                Ok(r) => r,
                // A read is safe to repeat; a write that was never sent (no connection) too.
                Err(e) if (read || e.is_connect()) && transient < TRANSIENT_RETRIES => {
                    transient += 1;
                    tracing::debug!(call = %call, attempt = transient, error = %error_chain(&e), "retrying");
                    tokio::time::sleep(backoff(transient)).await;
                    continue;
                }
                // A write that timed out may have been carried out: the caller must not repeat it blindly.
                Err(e) if e.is_timeout() => return Err(autohealer_cloud::CloudError::Uncertain { call: call.clone() }),
                Err(e) => return Err(call_err(&call, None, error_chain(&e))),
            };
            let status = resp.status().as_u16();
            self.observe(service.name(), status);
            let location = resp.headers().get("location").and_then(|h| h.to_str().ok()).map(String::from);
            let text = resp.text().await.unwrap_or_default();
            let body: Value = if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(Value::String(text)) };
            if status == 401 && !reauthenticated {
                tracing::info!(call = %call, "401 from {}: re-authenticating once", service.name());
                self.invalidate(epoch).await;
                reauthenticated = true;
                continue;
            }
            if ok.contains(&status) || (ok.is_empty() && (200..300).contains(&status)) {
                return Ok(Reply { status, location, body });
            }
            // 503: the service did not take the request; 502/504 from a proxy: only a read is repeated.
            let retry = status == 503 || (read && matches!(status, 502 | 504));
            if retry && transient < TRANSIENT_RETRIES {
                transient += 1;
                tracing::debug!(call = %call, status, attempt = transient, "retrying");
                tokio::time::sleep(backoff(transient)).await;
                continue;
            }
            if status == 401 {
                return Err(call_err(&call, Some(401), "still unauthorized after re-authenticating"));
            }
            return Err(call_err(&call, Some(status), error_message(&body)));
        }
    }
}
