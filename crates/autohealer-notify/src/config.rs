//! The `notifications:` block of the config. Secrets (webhook URLs, the PagerDuty
//! routing key, the SMTP password) are named here, never written here: each comes
//! from an environment variable or a mounted file, so a Secret supplies it and the
//! ConfigMap never holds it.

use autohealer_core::{Kind, Severity};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct NotifyConfig {
    /// Whether dry-run notifications ("would reboot ...") are sent, marked as dry-run.
    #[serde(default)]
    pub send_in_dry_run: bool,
    /// Notifications waiting for delivery, per sink; beyond it new ones are dropped
    /// (and counted), so a slow receiver never holds up the healer.
    #[serde(default = "queue")]
    pub queue_size: usize,
    /// Notifications arriving within this window are delivered together; more than
    /// `coalesce-above` of one kind become one summary.
    #[serde(default = "window", with = "humantime_serde")]
    pub coalesce_window: Duration,
    #[serde(default = "above")]
    pub coalesce_above: usize,
    /// Delivery attempts per message (with exponential backoff from `retry-backoff`).
    #[serde(default = "attempts")]
    pub max_attempts: u32,
    #[serde(default = "backoff", with = "humantime_serde")]
    pub retry_backoff: Duration,
    /// How long one delivery attempt may take.
    #[serde(default = "timeout", with = "humantime_serde")]
    pub timeout: Duration,
    #[serde(default)]
    pub sinks: Vec<SinkConfig>,
}

fn queue() -> usize {
    1000
}
fn window() -> Duration {
    Duration::from_secs(10)
}
fn above() -> usize {
    3
}
fn attempts() -> u32 {
    5
}
fn backoff() -> Duration {
    Duration::from_secs(1)
}
fn timeout() -> Duration {
    Duration::from_secs(10)
}

impl Default for NotifyConfig {
    fn default() -> Self {
        Self {
            send_in_dry_run: false,
            queue_size: queue(),
            coalesce_window: window(),
            coalesce_above: above(),
            max_attempts: attempts(),
            retry_backoff: backoff(),
            timeout: timeout(),
            sinks: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SinkType {
    Slack,
    Webhook,
    Pagerduty,
    Email,
}

impl SinkType {
    pub fn as_str(self) -> &'static str {
        match self {
            SinkType::Slack => "slack",
            SinkType::Webhook => "webhook",
            SinkType::Pagerduty => "pagerduty",
            SinkType::Email => "email",
        }
    }

    /// The least severity a sink hears about unless configured: chat hears every
    /// failure, email the serious ones, PagerDuty pages only for critical ones, so a
    /// successful reboot pages nobody.
    pub fn default_min_severity(self) -> Severity {
        match self {
            SinkType::Slack | SinkType::Webhook => Severity::Medium,
            SinkType::Email => Severity::High,
            SinkType::Pagerduty => Severity::Critical,
        }
    }
}

/// One sink. The keys that apply depend on `type`; the others are rejected.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct SinkConfig {
    #[serde(rename = "type")]
    pub kind: SinkType,
    /// The sink's name in logs and metrics; the type by default.
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub min_severity: Option<Severity>,
    /// The kinds of news this sink hears about; all by default.
    #[serde(default)]
    pub events: Option<Vec<Kind>>,
    /// slack, webhook: the URL's environment variable or file.
    #[serde(default)]
    pub url_env: Option<String>,
    #[serde(default)]
    pub url_file: Option<PathBuf>,
    /// slack: the channel per severity (`info`, `medium`, `high`, `critical`), and
    /// `default` for the others; without it, the webhook's own channel.
    #[serde(default)]
    pub channels: BTreeMap<String, String>,
    /// pagerduty: the integration's routing key.
    #[serde(default)]
    pub routing_key_env: Option<String>,
    #[serde(default)]
    pub routing_key_file: Option<PathBuf>,
    /// pagerduty: the Events API v2 endpoint.
    #[serde(default)]
    pub api_url: Option<String>,
    /// email: the SMTP server.
    #[serde(default)]
    pub smtp_host: Option<String>,
    #[serde(default)]
    pub smtp_port: Option<u16>,
    /// email: upgrade the connection with STARTTLS (required unless false).
    #[serde(default)]
    pub starttls: Option<bool>,
    /// email: a PEM CA bundle to trust besides the system's, for an internal relay.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password_env: Option<String>,
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    #[serde(default)]
    pub from: Option<String>,
    #[serde(default)]
    pub to: Vec<String>,
}

/// A config error: the key path and what is wrong there.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{path}: {message}")]
pub struct NotifyConfigError {
    pub path: String,
    pub message: String,
}

fn err(path: String, message: impl Into<String>) -> NotifyConfigError {
    NotifyConfigError { path, message: message.into() }
}

/// Keys that would put a secret into the ConfigMap, and what to write instead.
const SECRET_KEYS: &[(&str, &str)] = &[
    ("url", "url-env or url-file"),
    ("routing-key", "routing-key-env or routing-key-file"),
    ("password", "password-env or password-file"),
];

impl NotifyConfig {
    /// Parses the block; an error names the key path below `path`.
    pub fn parse(value: &serde_json::Value, path: &str) -> Result<Self, NotifyConfigError> {
        if let Some(sinks) = value.get("sinks").and_then(|s| s.as_array()) {
            for (i, sink) in sinks.iter().enumerate() {
                for (key, instead) in SECRET_KEYS {
                    if sink.get(*key).is_some() {
                        return Err(err(
                            format!("{path}.sinks[{i}].{key}"),
                            format!("secrets never live in the config (it is a ConfigMap): use {instead}, filled from a Secret"),
                        ));
                    }
                }
            }
        }
        let c: NotifyConfig = autohealer_params::from_value(value, path).map_err(|e| err(e.path, e.message))?;
        c.validate(path)?;
        Ok(c)
    }

    fn validate(&self, path: &str) -> Result<(), NotifyConfigError> {
        if self.queue_size == 0 {
            return Err(err(format!("{path}.queue-size"), "must be at least 1 (value: 0)"));
        }
        if self.max_attempts == 0 {
            return Err(err(format!("{path}.max-attempts"), "must be at least 1 (value: 0)"));
        }
        let mut names = std::collections::BTreeSet::new();
        for (i, s) in self.sinks.iter().enumerate() {
            let at = |k: &str| format!("{path}.sinks[{i}].{k}");
            if !names.insert(s.name()) {
                return Err(err(at("name"), format!("{:?} is used by two sinks; give each its own name", s.name())));
            }
            fn set(k: &'static str, present: bool) -> (&'static str, bool) {
                (k, present)
            }
            let keys = [
                set("url-env", s.url_env.is_some()),
                set("url-file", s.url_file.is_some()),
                set("channels", !s.channels.is_empty()),
                set("routing-key-env", s.routing_key_env.is_some()),
                set("routing-key-file", s.routing_key_file.is_some()),
                set("api-url", s.api_url.is_some()),
                set("smtp-host", s.smtp_host.is_some()),
                set("smtp-port", s.smtp_port.is_some()),
                set("starttls", s.starttls.is_some()),
                set("ca-file", s.ca_file.is_some()),
                set("username", s.username.is_some()),
                set("password-env", s.password_env.is_some()),
                set("password-file", s.password_file.is_some()),
                set("from", s.from.is_some()),
                set("to", !s.to.is_empty()),
            ];
            let allowed: &[&str] = match s.kind {
                SinkType::Slack => &["url-env", "url-file", "channels"],
                SinkType::Webhook => &["url-env", "url-file"],
                SinkType::Pagerduty => &["routing-key-env", "routing-key-file", "api-url"],
                SinkType::Email => {
                    &["smtp-host", "smtp-port", "starttls", "ca-file", "username", "password-env", "password-file", "from", "to"]
                }
            };
            if let Some((k, _)) = keys.iter().find(|(k, present)| *present && !allowed.contains(k)) {
                return Err(err(at(k), format!("not a key of a {} sink; its keys: {}", s.kind.as_str(), allowed.join(", "))));
            }
            let one_of = |a: &str, b: &str, x: bool, y: bool| -> Result<(), NotifyConfigError> {
                match (x, y) {
                    (true, true) => Err(err(at(a), format!("give {a} or {b}, not both"))),
                    (false, false) => Err(err(at(a), format!("required by a {} sink (or {b})", s.kind.as_str()))),
                    _ => Ok(()),
                }
            };
            match s.kind {
                SinkType::Slack | SinkType::Webhook => one_of("url-env", "url-file", s.url_env.is_some(), s.url_file.is_some())?,
                SinkType::Pagerduty => {
                    one_of("routing-key-env", "routing-key-file", s.routing_key_env.is_some(), s.routing_key_file.is_some())?
                }
                SinkType::Email => {
                    if s.smtp_host.as_deref().is_none_or(str::is_empty) {
                        return Err(err(at("smtp-host"), "required by an email sink"));
                    }
                    let from = s.from.as_deref().unwrap_or_default();
                    if from.parse::<lettre::message::Mailbox>().is_err() {
                        return Err(err(at("from"), format!("not a mail address (value: {from:?})")));
                    }
                    if s.to.is_empty() {
                        return Err(err(at("to"), "required by an email sink: a list of addresses"));
                    }
                    for (j, to) in s.to.iter().enumerate() {
                        if to.parse::<lettre::message::Mailbox>().is_err() {
                            return Err(err(format!("{path}.sinks[{i}].to[{j}]"), format!("not a mail address (value: {to:?})")));
                        }
                    }
                    if s.username.is_some() && s.password_env.is_none() && s.password_file.is_none() {
                        return Err(err(at("password-env"), "username is set: give password-env or password-file too"));
                    }
                    if s.password_env.is_some() && s.password_file.is_some() {
                        return Err(err(at("password-env"), "give password-env or password-file, not both"));
                    }
                }
            }
            for key in s.channels.keys() {
                if key != "default" && !Severity::ALL.iter().any(|v| v.as_str() == key) {
                    return Err(err(
                        format!("{path}.sinks[{i}].channels.{key}"),
                        "not a severity; use info, medium, high, critical or default".to_string(),
                    ));
                }
            }
            if let Some(url) = &s.api_url
                && reqwest::Url::parse(url).is_err()
            {
                return Err(err(at("api-url"), format!("not a URL (value: {url:?})")));
            }
        }
        Ok(())
    }
}

impl SinkConfig {
    pub fn name(&self) -> String {
        self.name.clone().unwrap_or_else(|| self.kind.as_str().to_string())
    }

    pub fn min_severity(&self) -> Severity {
        self.min_severity.unwrap_or(self.kind.default_min_severity())
    }

    /// Whether this sink hears about `kind` at `severity`.
    pub fn wants(&self, kind: Kind, severity: Severity) -> bool {
        severity >= self.min_severity() && self.events.as_ref().is_none_or(|e| e.contains(&kind))
    }
}

/// Reads a secret from the named environment variable or file; the error names the
/// key and the variable or file, never the value.
pub fn secret(env: Option<&str>, file: Option<&std::path::Path>, path: &str) -> Result<String, NotifyConfigError> {
    let value = match (env, file) {
        (Some(var), _) => std::env::var(var).map_err(|_| err(path.to_string(), format!("environment variable {var} is not set")))?,
        (None, Some(f)) => std::fs::read_to_string(f).map_err(|e| err(path.to_string(), format!("cannot read {}: {e}", f.display())))?,
        (None, None) => return Err(err(path.to_string(), "no secret given")),
    };
    let value = value.trim().to_string();
    if value.is_empty() {
        return Err(err(path.to_string(), "the secret is empty"));
    }
    Ok(value)
}
