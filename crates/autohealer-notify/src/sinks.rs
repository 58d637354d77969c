//! The sinks. Each turns a [`Message`] into one request (or one mail) and says
//! whether a failure is worth retrying.

use crate::Message;
use crate::config::{EmailSink, NotifyConfig, NotifyConfigError, SinkConfig, Target, secret};
use autohealer_core::{Kind, Severity};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use serde_json::{Value, json};

#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct SendError {
    pub message: String,
    /// Whether another attempt may succeed (5xx, 429, a network error), as opposed
    /// to a request the receiver will always refuse (400, 403, 404).
    pub retry: bool,
}

impl SendError {
    pub fn retry(message: impl Into<String>) -> Self {
        Self { message: message.into(), retry: true }
    }
}

#[async_trait::async_trait]
pub trait Sink: Send + Sync {
    async fn send(&self, m: &Message) -> Result<(), SendError>;
}

pub fn build(s: &SinkConfig, config: &NotifyConfig, path: &str) -> Result<Box<dyn Sink>, NotifyConfigError> {
    let http = || {
        autohealer_params::ensure_crypto_provider();
        reqwest::Client::builder()
            .timeout(config.timeout)
            .build()
            .map_err(|e| NotifyConfigError { path: path.to_string(), message: format!("cannot build an HTTP client: {e}") })
    };
    let webhook_url = |env: &Option<String>, file: &Option<std::path::PathBuf>| -> Result<reqwest::Url, NotifyConfigError> {
        let url = secret(env.as_deref(), file.as_deref(), &format!("{path}.url-env"))?;
        reqwest::Url::parse(&url).map_err(|_| NotifyConfigError {
            path: format!("{path}.url-env"),
            // The URL is the secret: say what is wrong without showing it.
            message: "the webhook URL is not a URL".into(),
        })
    };
    Ok(match &s.target {
        Target::Slack(t) => Box::new(Slack { url: webhook_url(&t.url_env, &t.url_file)?, client: http()?, channels: t.channels.clone() }),
        Target::Webhook(t) => Box::new(Webhook { url: webhook_url(&t.url_env, &t.url_file)?, client: http()? }),
        Target::Pagerduty(t) => Box::new(PagerDuty {
            routing_key: secret(t.routing_key_env.as_deref(), t.routing_key_file.as_deref(), &format!("{path}.routing-key-env"))?,
            url: t.api_url.clone().unwrap_or_else(|| "https://events.pagerduty.com/v2/enqueue".into()),
            client: http()?,
        }),
        Target::Email(t) => Box::new(Email::build(t, config, path)?),
    })
}

/// Turns a status into a [`SendError`] naming the call, retrying what may pass later.
async fn answer(call: &str, r: Result<reqwest::Response, reqwest::Error>) -> Result<reqwest::Response, SendError> {
    match r {
        Ok(resp) if resp.status().is_success() => Ok(resp),
        Ok(resp) => {
            let status = resp.status();
            let body: String = resp.text().await.unwrap_or_default().chars().take(200).collect();
            Err(SendError {
                message: format!("{call} failed with HTTP {}: {body}", status.as_u16()),
                retry: status.is_server_error() || status.as_u16() == 429 || status.as_u16() == 408,
            })
        }
        // reqwest's error text includes the URL, which is the secret: say only what kind.
        Err(e) => Err(SendError::retry(format!(
            "{call} failed: {}",
            if e.is_timeout() {
                "timed out"
            } else if e.is_connect() {
                "cannot connect"
            } else {
                "request error"
            }
        ))),
    }
}

fn title(m: &Message) -> String {
    let dry = if m.dry_run { "[dry-run] " } else { "" };
    format!("{dry}[{}] {}", m.severity, m.summary)
}

struct Slack {
    url: reqwest::Url,
    client: reqwest::Client,
    channels: std::collections::BTreeMap<String, String>,
}

fn emoji(s: Severity) -> &'static str {
    match s {
        Severity::Info => ":information_source:",
        Severity::Medium => ":wrench:",
        Severity::High => ":warning:",
        Severity::Critical => ":rotating_light:",
    }
}

#[async_trait::async_trait]
impl Sink for Slack {
    async fn send(&self, m: &Message) -> Result<(), SendError> {
        let mut body = json!({
            "username": "autohealer",
            "text": format!("{} *{}* cluster `{}`: {}", emoji(m.severity), m.kind, m.cluster, title(m)),
        });
        if let Some(ch) = self.channels.get(m.severity.as_str()).or_else(|| self.channels.get("default")) {
            body["channel"] = json!(ch);
        }
        answer("POST slack webhook", self.client.post(self.url.clone()).json(&body).send().await).await.map(|_| ())
    }
}

struct Webhook {
    url: reqwest::Url,
    client: reqwest::Client,
}

/// The generic webhook's body: everything a receiver may route or template on.
pub fn webhook_body(m: &Message) -> Value {
    json!({
        "source": "autohealer",
        "cluster": m.cluster,
        "kind": m.kind,
        "severity": m.severity,
        "summary": m.summary,
        "text": title(m),
        "node": m.node,
        "role": m.role,
        "nodes": m.nodes,
        "count": m.count,
        "incident": m.incident,
        "dryRun": m.dry_run,
        "at": m.at,
    })
}

#[async_trait::async_trait]
impl Sink for Webhook {
    async fn send(&self, m: &Message) -> Result<(), SendError> {
        answer("POST webhook", self.client.post(self.url.clone()).json(&webhook_body(m)).send().await).await.map(|_| ())
    }
}

struct PagerDuty {
    routing_key: String,
    url: String,
    client: reqwest::Client,
}

fn pd_severity(s: Severity) -> &'static str {
    match s {
        Severity::Critical => "critical",
        Severity::High => "error",
        Severity::Medium => "warning",
        Severity::Info => "info",
    }
}

/// The Events API v2 body: a trigger, or a resolve of the incident's dedup key when
/// the news ends it (the node is healthy again, the short-circuit cleared).
pub fn pagerduty_body(m: &Message, routing_key: &str) -> Value {
    let dedup: String = format!("autohealer/{}/{}", m.cluster, m.incident).chars().take(255).collect();
    if m.kind.resolves() {
        return json!({"routing_key": routing_key, "event_action": "resolve", "dedup_key": dedup});
    }
    json!({
        "routing_key": routing_key,
        "event_action": "trigger",
        "dedup_key": dedup,
        "payload": {
            "summary": title(m).chars().take(1024).collect::<String>(),
            "source": m.node.clone().unwrap_or_else(|| m.cluster.clone()),
            "severity": pd_severity(m.severity),
            "component": "kubernetes-node",
            "group": m.cluster,
            "class": m.kind,
            "custom_details": {"nodes": m.nodes, "count": m.count, "dry_run": m.dry_run, "at": m.at},
        },
    })
}

#[async_trait::async_trait]
impl Sink for PagerDuty {
    async fn send(&self, m: &Message) -> Result<(), SendError> {
        // A resolve for a kind that never triggers is noise; the rest resolves what a
        // trigger with the same incident opened (and PagerDuty ignores unknown keys).
        if m.kind == Kind::Resumed {
            return Ok(());
        }
        let body = pagerduty_body(m, &self.routing_key);
        answer("POST pagerduty enqueue", self.client.post(&self.url).json(&body).send().await).await.map(|_| ())
    }
}

struct Email {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: lettre::message::Mailbox,
    to: Vec<lettre::message::Mailbox>,
}

impl Email {
    fn build(s: &EmailSink, config: &NotifyConfig, path: &str) -> Result<Self, NotifyConfigError> {
        let e = |k: &str, message: String| NotifyConfigError { path: format!("{path}.{k}"), message };
        let host = s.smtp_host.clone();
        let mut b =
            AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&host).port(s.smtp_port.unwrap_or(587)).timeout(Some(config.timeout));
        if s.starttls.unwrap_or(true) {
            autohealer_params::ensure_crypto_provider();
            let mut tls = TlsParameters::builder(host.clone());
            if let Some(ca) = &s.ca_file {
                let pem = std::fs::read(ca).map_err(|err| e("ca-file", format!("cannot read {}: {err}", ca.display())))?;
                let cert =
                    Certificate::from_pem(&pem).map_err(|err| e("ca-file", format!("{} is not a PEM certificate: {err}", ca.display())))?;
                tls = tls.add_root_certificate(cert);
            }
            let tls = tls.build_rustls().map_err(|err| e("smtp-host", format!("cannot set up TLS for {host}: {err}")))?;
            b = b.tls(Tls::Required(tls));
        }
        if let Some(user) = &s.username {
            let password = secret(s.password_env.as_deref(), s.password_file.as_deref(), &format!("{path}.password-env"))?;
            b = b.credentials(Credentials::new(user.clone(), password));
        }
        let parse =
            |k: &str, v: &str| v.parse::<lettre::message::Mailbox>().map_err(|_| e(k, format!("not a mail address (value: {v:?})")));
        Ok(Self { transport: b.build(), from: parse("from", &s.from)?, to: s.to.iter().map(|t| parse("to", t)).collect::<Result<_, _>>()? })
    }
}

#[async_trait::async_trait]
impl Sink for Email {
    async fn send(&self, m: &Message) -> Result<(), SendError> {
        let mut b = lettre::Message::builder().from(self.from.clone()).subject(format!("[autohealer] {}", title(m)));
        for to in &self.to {
            b = b.to(to.clone());
        }
        let nodes = if m.nodes.is_empty() { "-".to_string() } else { m.nodes.join(", ") };
        let body = format!(
            "{}\n\nCluster:  {}\nKind:     {}\nSeverity: {}\nNodes:    {}\nIncident: {}\nAt:       {}\nDry run:  {}\n",
            m.summary, m.cluster, m.kind, m.severity, nodes, m.incident, m.at, m.dry_run
        );
        let mail = b.body(body).map_err(|e| SendError { message: format!("cannot build the mail: {e}"), retry: false })?;
        match self.transport.send(mail).await {
            Ok(_) => Ok(()),
            Err(e) => Err(SendError { retry: !e.is_permanent(), message: format!("SMTP send failed: {e}") }),
        }
    }
}
