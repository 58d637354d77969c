//! The config's typed values: each is parsed once, when the config is loaded, into
//! what the healer reads, and written back the way a user writes it, which is how
//! `autohealer config-reference` shows the defaults.

use autohealer_cloud::Role;
use autohealer_core::planner::Threshold;
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::time::Duration;

/// A pair of values, one per role, as `repair-steps`, `concurrency` and `healthcheck`
/// write them.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PerRole<T> {
    pub master: T,
    pub worker: T,
}

impl<T> PerRole<T> {
    pub fn get(&self, role: Role) -> &T {
        match role {
            Role::Master => &self.master,
            Role::Worker => &self.worker,
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = (Role, &T)> {
        [(Role::Master, &self.master), (Role::Worker, &self.worker)].into_iter()
    }
}

/// `namespace/name`, as `pause-configmap` names its ConfigMap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectRef {
    pub namespace: String,
    pub name: String,
}

impl ObjectRef {
    pub fn parse(s: &str) -> Option<Self> {
        let (namespace, name) = s.split_once('/')?;
        (!namespace.is_empty() && !name.is_empty() && !name.contains('/'))
            .then(|| Self { namespace: namespace.to_string(), name: name.to_string() })
    }
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// An optional `namespace/name`; the empty string turns the feature off.
pub mod object_ref {
    use super::*;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<ObjectRef>, D::Error> {
        let s = String::deserialize(d)?;
        if s.is_empty() {
            return Ok(None);
        }
        ObjectRef::parse(&s).map(Some).ok_or_else(|| D::Error::custom("must be namespace/name, or empty to disable"))
    }

    pub fn serialize<S: Serializer>(v: &Option<ObjectRef>, s: S) -> Result<S::Ok, S::Error> {
        v.as_ref().map(ToString::to_string).unwrap_or_default().serialize(s)
    }
}

/// A duration as Go and humantime write it (`90s`, `1h30m`), shown in its largest
/// whole unit (`24h`, `7d`).
pub mod duration {
    use super::*;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        humantime_serde::deserialize(d)
    }

    pub fn serialize<S: Serializer>(v: &Duration, s: S) -> Result<S::Ok, S::Error> {
        show(*v).serialize(s)
    }

    pub fn show(d: Duration) -> String {
        let secs = d.as_secs();
        if d.subsec_nanos() != 0 {
            return humantime::format_duration(d).to_string();
        }
        // Days only from two on: "24h" reads better than "1d".
        for (unit, len) in [("d", 86_400), ("h", 3600), ("m", 60)] {
            if secs >= len && secs.is_multiple_of(len) && (unit != "d" || secs >= 2 * len) {
                return format!("{}{unit}", secs / len);
            }
        }
        format!("{secs}s")
    }
}

/// A count (`3`) or a share (`"40%"`) of nodes, as YAML writes either.
pub mod threshold {
    use super::*;

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Written {
        Count(usize),
        Text(String),
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Threshold, D::Error> {
        let bad = || D::Error::custom("not a count or a percentage like \"40%\"");
        match Written::deserialize(d).map_err(|_| bad())? {
            Written::Count(n) => Ok(Threshold::Count(n)),
            Written::Text(t) => Threshold::parse(&t).ok_or_else(bad),
        }
    }

    pub fn serialize<S: Serializer>(v: &Threshold, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Threshold::Count(n) => n.serialize(s),
            Threshold::Percent(_) => v.to_string().serialize(s),
        }
    }
}

/// A share below 100%, written as a percentage (`"20%"`), read as a fraction.
pub mod share {
    use super::*;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        let t = String::deserialize(d)?;
        let v: Option<f64> = t.trim().strip_suffix('%').and_then(|p| p.trim().parse().ok());
        match v {
            Some(v) if (0.0..100.0).contains(&v) => Ok(v / 100.0),
            _ => Err(D::Error::custom("must be a percentage from 0% to below 100%: at 100% a value every node has would hold repairs")),
        }
    }

    pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        // Rounded so that 0.2 shows as 20%, not as its binary neighbour.
        format!("{}%", (v * 100.0 * 1e6).round() / 1e6).serialize(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_show_in_their_largest_whole_unit() {
        let shown: Vec<String> = [60, 300, 3600, 86_400, 7 * 86_400, 90, 0].map(|s| duration::show(Duration::from_secs(s))).into();
        assert_eq!(shown, ["1m", "5m", "1h", "24h", "7d", "90s", "0s"]);
        for s in &shown {
            assert!(humantime::parse_duration(s).is_ok(), "{s} reads back");
        }
    }

    #[test]
    fn object_refs_need_both_parts() {
        assert_eq!(ObjectRef::parse("kube-system/cm").map(|r| r.to_string()).as_deref(), Some("kube-system/cm"));
        for bad in ["cm", "/cm", "ns/", "a/b/c"] {
            assert!(ObjectRef::parse(bad).is_none(), "{bad}");
        }
    }
}
