//! Parsing shared by every block of the config (the binary's keys, check params,
//! notification sinks, provider blocks), so that each error reads the same way: the
//! key path, the value found there and, for a misspelt key, the nearest valid one.
//! Check params may be written as upstream writes them: kebab-case or camelCase keys.

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use std::fmt;

/// A bad config value: where it is and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamError {
    pub path: String,
    pub message: String,
}

impl ParamError {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self { path: path.into(), message: message.into() }
    }
}

impl fmt::Display for ParamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

impl std::error::Error for ParamError {}

/// `okCodes` → `ok-codes`.
pub fn kebab(key: &str) -> String {
    let mut out = String::with_capacity(key.len() + 4);
    for c in key.chars() {
        if c.is_ascii_uppercase() {
            out.push('-');
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// `", did you mean \"ok-values\"?"` when a known name is close to `got`.
pub fn did_you_mean(got: &str, known: &[&str]) -> String {
    known
        .iter()
        .map(|k| (strsim::jaro_winkler(&got.to_lowercase(), &k.to_lowercase()), k))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, k)| format!(", did you mean {k:?}?"))
        .unwrap_or_default()
}

/// Deserializes `params` into `T` (whose fields are kebab-case and which denies
/// unknown fields), accepting camelCase spellings of the same keys.
pub fn parse_params<T: DeserializeOwned>(params: &Value, path: &str) -> Result<T, ParamError> {
    let normalized = match params {
        Value::Null => Value::Object(Map::new()),
        Value::Object(m) => {
            let mut out = Map::new();
            for (k, v) in m {
                let key = kebab(k);
                if out.contains_key(&key) {
                    return Err(ParamError::new(format!("{path}.{k}"), format!("{k:?} is given twice (as {key:?} and in camelCase)")));
                }
                out.insert(key, v.clone());
            }
            Value::Object(out)
        }
        other => {
            return Err(ParamError::new(path, format!("expected a map of parameters, got {other}")));
        }
    };
    from_value(&normalized, path)
}

/// Deserializes `value` into `T`; an error names the key path below `path`, the
/// value found there and, for an unknown key, the nearest valid one.
pub fn from_value<T: DeserializeOwned>(value: &Value, path: &str) -> Result<T, ParamError> {
    serde_path_to_error::deserialize::<_, T>(value).map_err(|e| {
        let inner = e.path().to_string();
        let at = match (path.is_empty(), inner == "." || inner.is_empty()) {
            (_, true) => path.to_string(),
            (true, false) => inner.clone(),
            (false, false) => format!("{path}.{inner}"),
        };
        describe(value, &at, &inner, &e.inner().to_string())
    })
}

/// Turns serde's message into one that names the value and, for a misspelt key,
/// the nearest valid one.
fn describe(params: &Value, at: &str, inner: &str, msg: &str) -> ParamError {
    if let Some(rest) = msg.strip_prefix("unknown field `") {
        let (field, expected) = rest.split_once('`').unwrap_or((rest, ""));
        let known: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
        return ParamError::new(at, format!("unknown key {field:?}{}; valid keys: {}", did_you_mean(field, &known), known.join(", ")));
    }
    let pointer: String = inner
        .split('.')
        .filter(|s| !s.is_empty())
        .map(|seg| match seg.split_once('[') {
            // serde_path_to_error writes sequence indices as `name[3]`.
            Some((name, idx)) => format!("/{name}/{}", idx.trim_end_matches(']')),
            None => format!("/{seg}"),
        })
        .collect();
    // A type that keeps its value to itself (a secret) says so, and is taken at its word.
    let shown = !pointer.is_empty() && !msg.contains("value not shown");
    let value = params.pointer(&pointer).filter(|_| shown).map(|v| format!(" (value: {v})")).unwrap_or_default();
    ParamError::new(at, format!("{msg}{value}"))
}

/// Installs the ring crypto provider for rustls unless one is installed: reqwest and
/// lettre are built without a provider of their own so that no second TLS stack is
/// linked, and every crate that builds a TLS client calls this first.
pub fn ensure_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use serde_json::json;
    use std::time::Duration;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "kebab-case")]
    struct P {
        #[serde(default, with = "humantime_serde")]
        unhealthy_duration: Option<Duration>,
        #[serde(default)]
        ok_values: Vec<String>,
    }

    #[test]
    fn camel_and_kebab_both_load() {
        let a: P = parse_params(&json!({"unhealthyDuration": "1m", "okValues": ["True"]}), "x").unwrap();
        let b: P = parse_params(&json!({"unhealthy-duration": "1m", "ok-values": ["True"]}), "x").unwrap();
        assert_eq!(a.unhealthy_duration, Some(Duration::from_secs(60)));
        assert_eq!(a.ok_values, b.ok_values);
    }

    #[test]
    fn errors_name_the_path_value_and_nearest_key() {
        let e = parse_params::<P>(&json!({"ok-value": ["True"]}), "healthcheck.worker[0].params").unwrap_err();
        assert_eq!(e.path, "healthcheck.worker[0].params.ok-value");
        assert!(e.message.contains("did you mean \"ok-values\""), "{e}");
        let e = parse_params::<P>(&json!({"unhealthyDuration": "ten minutes"}), "p").unwrap_err();
        assert_eq!(e.path, "p.unhealthy-duration");
        assert!(e.message.contains("ten minutes"), "{e}");
        let e = parse_params::<P>(&json!({"okValues": "True"}), "p").unwrap_err();
        assert!(e.message.contains("\"True\""), "{e}");
    }

    #[derive(Debug, Deserialize)]
    struct WithSecret {
        #[serde(deserialize_with = "hidden")]
        #[allow(dead_code)]
        password: String,
    }

    fn hidden<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
        match serde_json::Value::deserialize(d)? {
            serde_json::Value::String(s) => Ok(s),
            _ => Err(serde::de::Error::custom("expected a string (value not shown: it is a secret)")),
        }
    }

    #[test]
    fn a_value_its_type_hides_is_not_appended() {
        let e = from_value::<WithSecret>(&json!({"password": 12345678}), "openstack").unwrap_err();
        assert_eq!(e.path, "openstack.password");
        assert!(!e.message.contains("12345678"), "{e}");
    }
}
