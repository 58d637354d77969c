//! The `notifications:` block of the config. Secrets (webhook URLs, the PagerDuty
//! routing key, the SMTP password) are named here, never written here: each comes
//! from an environment variable or a mounted file, so a Secret supplies it and the
//! ConfigMap never holds it.

use autohealer_core::{Kind, Severity};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct NotifyConfig {
    /// Whether dry-run notifications ("would reboot ...") are sent, marked as dry-run.
    pub send_in_dry_run: bool,
    /// Notifications waiting for delivery, per sink; beyond it new ones are dropped
    /// (and counted), so a slow receiver never holds up the healer.
    pub queue_size: usize,
    /// Notifications arriving within this window are delivered together; more than
    /// `coalesce-above` of one kind become one summary.
    #[serde(with = "humantime_serde")]
    pub coalesce_window: Duration,
    pub coalesce_above: usize,
    /// Delivery attempts per message (with exponential backoff from `retry-backoff`).
    pub max_attempts: u32,
    #[serde(with = "humantime_serde")]
    pub retry_backoff: Duration,
    /// How long one delivery attempt may take.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Read apart by [`NotifyConfig::parse`]: which keys a sink takes depends on its
    /// type. Still a field to serde, so that a misspelt `sink:` is told the nearest key.
    #[serde(deserialize_with = "read_apart")]
    pub sinks: Vec<SinkConfig>,
}

/// `sinks` as the block's own parse sees it: present, and left to [`SinkConfig::parse`].
fn read_apart<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<SinkConfig>, D::Error> {
    serde::de::IgnoredAny::deserialize(d)?;
    Ok(Vec::new())
}

impl Default for NotifyConfig {
    /// The defaults of every key of the block.
    fn default() -> Self {
        Self {
            send_in_dry_run: false,
            queue_size: 1000,
            coalesce_window: Duration::from_secs(10),
            coalesce_above: 3,
            max_attempts: 5,
            retry_backoff: Duration::from_secs(1),
            timeout: Duration::from_secs(10),
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

/// One sink: the keys every sink has, and its type's own.
#[derive(Debug, Clone, PartialEq)]
pub struct SinkConfig {
    /// The sink's name in logs and metrics; the type by default.
    pub name: Option<String>,
    pub min_severity: Option<Severity>,
    /// The kinds of news this sink hears about; all by default.
    pub events: Option<Vec<Kind>>,
    pub target: Target,
}

/// Where a sink delivers, by `type`.
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    Slack(SlackSink),
    Webhook(WebhookSink),
    Pagerduty(PagerDutySink),
    Email(EmailSink),
}

/// The keys every sink has besides its type's own.
#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
struct Common {
    #[serde(rename = "type")]
    kind: SinkType,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    min_severity: Option<Severity>,
    #[serde(default)]
    events: Option<Vec<Kind>>,
}

const COMMON_KEYS: &[&str] = &["type", "name", "min-severity", "events"];

/// A webhook URL, Slack's or a generic one: the URL is its own credential, so it
/// comes from an environment variable or a file.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct SlackSink {
    pub url_env: Option<String>,
    pub url_file: Option<PathBuf>,
    /// The channel per severity (`info`, `medium`, `high`, `critical`), and `default`
    /// for the others; without it, the webhook's own channel.
    pub channels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct WebhookSink {
    pub url_env: Option<String>,
    pub url_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct PagerDutySink {
    /// The integration's routing key.
    pub routing_key_env: Option<String>,
    pub routing_key_file: Option<PathBuf>,
    /// The Events API v2 endpoint.
    pub api_url: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct EmailSink {
    /// The SMTP server.
    pub smtp_host: String,
    pub smtp_port: Option<u16>,
    /// Upgrade the connection with STARTTLS (required unless false).
    pub starttls: Option<bool>,
    /// A PEM CA bundle to trust besides the system's, for an internal relay.
    pub ca_file: Option<PathBuf>,
    pub username: Option<String>,
    pub password_env: Option<String>,
    pub password_file: Option<PathBuf>,
    pub from: String,
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

impl From<autohealer_params::ParamError> for NotifyConfigError {
    fn from(e: autohealer_params::ParamError) -> Self {
        err(e.path, e.message)
    }
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
        let mut c: NotifyConfig = autohealer_params::from_value(value, path)?;
        if let Some(sinks) = value.get("sinks") {
            let list: Vec<serde_json::Value> = autohealer_params::from_value(sinks, &format!("{path}.sinks"))?;
            c.sinks =
                list.iter().enumerate().map(|(i, s)| SinkConfig::parse(s, &format!("{path}.sinks[{i}]"))).collect::<Result<_, _>>()?;
        }
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
            let at = format!("{path}.sinks[{i}]");
            if !names.insert(s.name()) {
                return Err(err(format!("{at}.name"), format!("{:?} is used by two sinks; give each its own name", s.name())));
            }
            s.target.validate(&at)?;
        }
        Ok(())
    }
}

impl SinkConfig {
    /// One sink, at `path`: the keys every sink has, then those of its `type`; a key
    /// of another type is refused, naming the type's keys.
    fn parse(value: &serde_json::Value, path: &str) -> Result<Self, NotifyConfigError> {
        if !value.is_object() {
            // The value itself is not shown: a URL written here would be a credential.
            return Err(err(
                path.to_string(),
                "a sink must be a map with a `type` (slack, webhook, pagerduty or email) and that type's keys",
            ));
        }
        for (key, instead) in SECRET_KEYS {
            if value.get(*key).is_some() {
                return Err(err(
                    format!("{path}.{key}"),
                    format!("secrets never live in the config (it is a ConfigMap): use {instead}, filled from a Secret"),
                ));
            }
        }
        let common: Common = autohealer_params::from_value(value, path)?;
        let mut own = value.clone();
        if let Some(m) = own.as_object_mut() {
            m.retain(|k, _| !COMMON_KEYS.contains(&k.as_str()));
        }
        let of_type = |e: autohealer_params::ParamError| -> NotifyConfigError {
            let Some(keys) = e.message.strip_prefix("unknown key ").and_then(|m| m.split_once("; valid keys: ")).map(|(_, k)| k) else {
                return e.into();
            };
            let keys: Vec<&str> = COMMON_KEYS.iter().copied().chain(keys.split(", ")).collect();
            let key = e.path.rsplit('.').next().unwrap_or_default();
            let near = autohealer_params::did_you_mean(key, &keys);
            err(e.path.clone(), format!("not a key of a {} sink{near}; its keys: {}", common.kind.as_str(), keys.join(", ")))
        };
        let target = match common.kind {
            SinkType::Slack => Target::Slack(autohealer_params::from_value(&own, path).map_err(of_type)?),
            SinkType::Webhook => Target::Webhook(autohealer_params::from_value(&own, path).map_err(of_type)?),
            SinkType::Pagerduty => Target::Pagerduty(autohealer_params::from_value(&own, path).map_err(of_type)?),
            SinkType::Email => Target::Email(autohealer_params::from_value(&own, path).map_err(of_type)?),
        };
        Ok(SinkConfig { name: common.name, min_severity: common.min_severity, events: common.events, target })
    }

    pub fn kind(&self) -> SinkType {
        match self.target {
            Target::Slack(_) => SinkType::Slack,
            Target::Webhook(_) => SinkType::Webhook,
            Target::Pagerduty(_) => SinkType::Pagerduty,
            Target::Email(_) => SinkType::Email,
        }
    }

    pub fn name(&self) -> String {
        self.name.clone().unwrap_or_else(|| self.kind().as_str().to_string())
    }

    pub fn min_severity(&self) -> Severity {
        self.min_severity.unwrap_or(self.kind().default_min_severity())
    }

    /// Whether this sink hears about `kind` at `severity`.
    pub fn wants(&self, kind: Kind, severity: Severity) -> bool {
        severity >= self.min_severity() && self.events.as_ref().is_none_or(|e| e.contains(&kind))
    }
}

/// Exactly one of a secret's two sources.
fn one_of(at: &str, kind: SinkType, (a, x): (&str, bool), (b, y): (&str, bool)) -> Result<(), NotifyConfigError> {
    match (x, y) {
        (true, true) => Err(err(format!("{at}.{a}"), format!("give {a} or {b}, not both"))),
        (false, false) => Err(err(format!("{at}.{a}"), format!("required by a {} sink (or {b})", kind.as_str()))),
        _ => Ok(()),
    }
}

impl Target {
    fn validate(&self, at: &str) -> Result<(), NotifyConfigError> {
        match self {
            Target::Slack(s) => {
                one_of(at, SinkType::Slack, ("url-env", s.url_env.is_some()), ("url-file", s.url_file.is_some()))?;
                for key in s.channels.keys() {
                    if key != "default" && !Severity::ALL.iter().any(|v| v.as_str() == key) {
                        return Err(err(
                            format!("{at}.channels.{key}"),
                            "not a severity; use info, medium, high, critical or default".to_string(),
                        ));
                    }
                }
            }
            Target::Webhook(w) => one_of(at, SinkType::Webhook, ("url-env", w.url_env.is_some()), ("url-file", w.url_file.is_some()))?,
            Target::Pagerduty(p) => {
                one_of(
                    at,
                    SinkType::Pagerduty,
                    ("routing-key-env", p.routing_key_env.is_some()),
                    ("routing-key-file", p.routing_key_file.is_some()),
                )?;
                if let Some(url) = &p.api_url
                    && reqwest::Url::parse(url).is_err()
                {
                    return Err(err(format!("{at}.api-url"), format!("not a URL (value: {url:?})")));
                }
            }
            Target::Email(e) => {
                if e.smtp_host.is_empty() {
                    return Err(err(format!("{at}.smtp-host"), "required by an email sink"));
                }
                if e.from.parse::<lettre::message::Mailbox>().is_err() {
                    return Err(err(format!("{at}.from"), format!("not a mail address (value: {:?})", e.from)));
                }
                if e.to.is_empty() {
                    return Err(err(format!("{at}.to"), "required by an email sink: a list of addresses"));
                }
                for (j, to) in e.to.iter().enumerate() {
                    if to.parse::<lettre::message::Mailbox>().is_err() {
                        return Err(err(format!("{at}.to[{j}]"), format!("not a mail address (value: {to:?})")));
                    }
                }
                if e.username.is_some() && e.password_env.is_none() && e.password_file.is_none() {
                    return Err(err(format!("{at}.password-env"), "username is set: give password-env or password-file too"));
                }
                if e.password_env.is_some() && e.password_file.is_some() {
                    return Err(err(format!("{at}.password-env"), "give password-env or password-file, not both"));
                }
            }
        }
        Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn each_sink_type_takes_its_own_keys_and_names_a_foreign_one() {
        let c = NotifyConfig::parse(
            &json!({"sinks": [{"type": "slack", "url-env": "S", "channels": {"critical": "#oncall"}}, {"type": "email", "name": "ops", "smtp-host": "m", "from": "a@b.c", "to": ["x@y.z"]}]}),
            "notifications",
        )
        .unwrap();
        assert!(matches!(&c.sinks[0].target, Target::Slack(s) if s.channels["critical"] == "#oncall"));
        assert!(matches!(&c.sinks[1].target, Target::Email(e) if e.smtp_host == "m"));
        assert_eq!((c.sinks[1].name(), c.sinks[1].min_severity()), ("ops".to_string(), Severity::High));
        let e = NotifyConfig::parse(&json!({"sinks": [{"type": "slack", "url-env": "S", "chanels": {}}]}), "notifications").unwrap_err();
        assert_eq!(e.path, "notifications.sinks[0].chanels");
        assert!(e.message.contains("not a key of a slack sink, did you mean \"channels\"?"), "{e}");
        let e =
            NotifyConfig::parse(&json!({"sinks": [{"type": "webhook", "url-env": "S", "to": ["x@y.z"]}]}), "notifications").unwrap_err();
        assert_eq!(e.path, "notifications.sinks[0].to");
        assert!(e.message.contains("its keys: type, name, min-severity, events, url-env, url-file"), "{e}");
    }

    #[test]
    fn a_misspelt_sinks_key_is_told_the_nearest_one() {
        let e = NotifyConfig::parse(&json!({"sink": [{"type": "webhook", "url-env": "W"}]}), "notifications").unwrap_err();
        assert_eq!(e.path, "notifications.sink");
        assert!(e.message.contains("did you mean \"sinks\"") && e.message.contains("sinks"), "{e}");
        let c = NotifyConfig::parse(&json!({"sinks": [{"type": "webhook", "url-env": "W"}], "queue-size": 5}), "notifications").unwrap();
        assert_eq!((c.sinks.len(), c.queue_size), (1, 5));
    }

    #[test]
    fn a_sink_that_is_not_a_map_is_told_what_a_sink_is_without_its_value() {
        let e = NotifyConfig::parse(&json!({"sinks": ["https://hooks.example.test/T000/secret-path"]}), "notifications").unwrap_err();
        assert_eq!(e.path, "notifications.sinks[0]");
        assert!(e.message.contains("must be a map with a `type`") && e.message.contains("slack, webhook, pagerduty or email"), "{e}");
        assert!(!e.message.contains("secret-path") && !e.message.contains("Common"), "{e}");
    }

    #[test]
    fn blocks_compare_by_their_typed_values() {
        let parse = |v| NotifyConfig::parse(&v, "notifications").unwrap();
        let a = parse(json!({"sinks": [{"type": "slack", "url-env": "S"}], "timeout": "10s"}));
        assert_eq!(a, parse(json!({"sinks": [{"type": "slack", "url-env": "S", "min-severity": null}]})), "the same, written otherwise");
        assert_ne!(a, parse(json!({"sinks": [{"type": "slack", "url-env": "T"}]})));
    }
}
