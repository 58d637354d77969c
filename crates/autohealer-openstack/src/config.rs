//! The `openstack:` block of the config, as magnum-auto-healer reads it, plus
//! `clouds.yaml` (+ `secure.yaml`), the `OS_*` environment and secrets from files
//! (a mounted Kubernetes Secret). Explicit keys win over `clouds.yaml`, which wins
//! over the environment.

use crate::secret::Secret;
use serde::Deserialize;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct ConfigError {
    pub path: String,
    pub message: String,
}

fn err(path: &str, message: impl Into<String>) -> ConfigError {
    ConfigError { path: path.to_string(), message: message.into() }
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct OpenStackConfig {
    pub auth_url: Option<String>,
    pub user_id: Option<String>,
    pub username: Option<String>,
    pub password: Option<Secret>,
    /// A file holding the password (e.g. mounted from a Secret); ours.
    pub password_file: Option<PathBuf>,
    pub project_id: Option<String>,
    pub project_name: Option<String>,
    pub tenant_id: Option<String>,
    pub tenant_name: Option<String>,
    pub domain_id: Option<String>,
    pub domain_name: Option<String>,
    pub user_domain_id: Option<String>,
    pub user_domain_name: Option<String>,
    pub project_domain_id: Option<String>,
    pub project_domain_name: Option<String>,
    pub application_credential_id: Option<String>,
    pub application_credential_name: Option<String>,
    pub application_credential_secret: Option<Secret>,
    /// A file holding the application credential secret; ours.
    pub application_credential_secret_file: Option<PathBuf>,
    pub region: Option<String>,
    pub os_endpoint_type: Option<String>,
    pub ca_file: Option<PathBuf>,
    pub tls_insecure: Option<bool>,
    pub use_clouds: Option<bool>,
    pub clouds_file: Option<PathBuf>,
    pub cloud: Option<String>,
    /// `magnum` (default with a cluster-name) or `nova`; ours.
    pub strategy: Option<String>,
    /// How long to wait for a server to stop before a replace goes on; ours.
    #[serde(default, with = "humantime_serde")]
    pub stop_timeout: Option<Duration>,
    /// Per-request timeout of every OpenStack call; ours.
    #[serde(default, with = "humantime_serde")]
    pub request_timeout: Option<Duration>,
    /// Lines of console output kept as evidence before a destructive step; ours.
    pub console_lines: Option<usize>,
    /// `auto` (default), `heat`, `cluster-api` or `capi-helm`: which Magnum driver runs
    /// the cluster, when what the APIs answer does not say it clearly enough; ours.
    pub magnum_driver: Option<String>,
    /// The cluster's own MachineHealthCheck timeout on the Cluster API drivers (5m in
    /// both), so `validate` can warn when the healer's reboot would come after it; ours.
    #[serde(default, with = "humantime_serde")]
    pub machine_health_check_timeout: Option<Duration>,
    /// How long a Magnum write waits for the cluster to settle (someone else's resize,
    /// the healer's previous one) before the step fails; ours.
    #[serde(default, with = "humantime_serde")]
    pub cluster_busy_timeout: Option<Duration>,
}

/// Who to authenticate as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credentials {
    Password {
        user: UserRef,
        password: Secret,
        project: Option<ProjectRef>,
    },
    /// An application credential is bound to its project: no scope is sent.
    ApplicationCredential {
        id: Option<String>,
        name: Option<String>,
        user: Option<UserRef>,
        secret: Secret,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserRef {
    Id(String),
    Name { name: String, domain: DomainRef },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProjectRef {
    Id(String),
    Name { name: String, domain: DomainRef },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DomainRef {
    Id(String),
    Name(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    Magnum,
    Nova,
}

/// The Magnum driver behind a cluster: it decides what a resize does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MagnumDriver {
    /// The Heat driver (deprecated in 2025.1): `nodes_to_remove` with an unchanged count
    /// replaces those servers; masters are rebuilt through the stack.
    Heat,
    /// vexxhost/magnum-cluster-api: `nodes_to_remove` marks the Machines to delete when
    /// the count goes down; an unchanged count does nothing.
    ClusterApi,
    /// openstack/magnum-capi-helm: specific nodes cannot be removed, only the count applies.
    CapiHelm,
}

impl MagnumDriver {
    pub fn as_str(self) -> &'static str {
        match self {
            MagnumDriver::Heat => "heat",
            MagnumDriver::ClusterApi => "cluster-api",
            MagnumDriver::CapiHelm => "capi-helm",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "heat" => Some(MagnumDriver::Heat),
            "cluster-api" => Some(MagnumDriver::ClusterApi),
            "capi-helm" => Some(MagnumDriver::CapiHelm),
            _ => None,
        }
    }
}

/// Everything the provider needs, resolved from the config, clouds.yaml and the environment.
#[derive(Debug, Clone)]
pub struct Settings {
    pub auth_url: String,
    pub credentials: Credentials,
    pub region: Option<String>,
    /// `public`, `internal` or `admin`.
    pub interface: String,
    pub ca_file: Option<PathBuf>,
    pub insecure: bool,
    pub strategy: Strategy,
    pub cluster: Option<String>,
    pub stop_timeout: Duration,
    pub request_timeout: Duration,
    pub console_lines: usize,
    /// `None`: detected from what Magnum and Heat answer.
    pub magnum_driver: Option<MagnumDriver>,
    pub machine_health_check_timeout: Duration,
    pub cluster_busy_timeout: Duration,
}

/// The flattened keys every source is read into before they are combined.
#[derive(Debug, Clone, Default)]
struct Flat {
    auth_url: Option<String>,
    user_id: Option<String>,
    username: Option<String>,
    password: Option<Secret>,
    project_id: Option<String>,
    project_name: Option<String>,
    user_domain_id: Option<String>,
    user_domain_name: Option<String>,
    project_domain_id: Option<String>,
    project_domain_name: Option<String>,
    domain_id: Option<String>,
    domain_name: Option<String>,
    ac_id: Option<String>,
    ac_name: Option<String>,
    ac_secret: Option<Secret>,
    region: Option<String>,
    interface: Option<String>,
    ca_file: Option<PathBuf>,
    insecure: Option<bool>,
}

impl Flat {
    /// Fills what `self` lacks from `other`.
    fn or(self, other: Flat) -> Flat {
        Flat {
            auth_url: self.auth_url.or(other.auth_url),
            user_id: self.user_id.or(other.user_id),
            username: self.username.or(other.username),
            password: self.password.or(other.password),
            project_id: self.project_id.or(other.project_id),
            project_name: self.project_name.or(other.project_name),
            user_domain_id: self.user_domain_id.or(other.user_domain_id),
            user_domain_name: self.user_domain_name.or(other.user_domain_name),
            project_domain_id: self.project_domain_id.or(other.project_domain_id),
            project_domain_name: self.project_domain_name.or(other.project_domain_name),
            domain_id: self.domain_id.or(other.domain_id),
            domain_name: self.domain_name.or(other.domain_name),
            ac_id: self.ac_id.or(other.ac_id),
            ac_name: self.ac_name.or(other.ac_name),
            ac_secret: self.ac_secret.or(other.ac_secret),
            region: self.region.or(other.region),
            interface: self.interface.or(other.interface),
            ca_file: self.ca_file.or(other.ca_file),
            insecure: self.insecure.or(other.insecure),
        }
    }
}

fn read_secret_file(key: &str, path: &Path) -> Result<Secret, ConfigError> {
    std::fs::read_to_string(path)
        .map(|s| Secret::new(s.trim_end_matches(['\n', '\r'])))
        .map_err(|e| err(key, format!("cannot read {}: {e}", path.display())))
}

impl OpenStackConfig {
    pub fn parse(value: Option<&Value>) -> Result<Self, ConfigError> {
        let Some(v) = value.filter(|v| !v.is_null()) else { return Ok(Self::default()) };
        autohealer_params::from_value(v, "openstack").map_err(|e| ConfigError { path: e.path, message: e.message })
    }

    fn flat(&self) -> Result<Flat, ConfigError> {
        let password = match (&self.password, &self.password_file) {
            (Some(_), Some(_)) => return Err(err("openstack.password-file", "give password or password-file, not both")),
            (Some(p), None) => Some(p.clone()),
            (None, Some(f)) => Some(read_secret_file("openstack.password-file", f)?),
            (None, None) => None,
        };
        let ac_secret = match (&self.application_credential_secret, &self.application_credential_secret_file) {
            (Some(_), Some(_)) => {
                return Err(err(
                    "openstack.application-credential-secret-file",
                    "give application-credential-secret or its -file, not both",
                ));
            }
            (Some(p), None) => Some(p.clone()),
            (None, Some(f)) => Some(read_secret_file("openstack.application-credential-secret-file", f)?),
            (None, None) => None,
        };
        Ok(Flat {
            auth_url: self.auth_url.clone(),
            user_id: self.user_id.clone(),
            username: self.username.clone(),
            password,
            project_id: self.project_id.clone().or(self.tenant_id.clone()),
            project_name: self.project_name.clone().or(self.tenant_name.clone()),
            user_domain_id: self.user_domain_id.clone(),
            user_domain_name: self.user_domain_name.clone(),
            project_domain_id: self.project_domain_id.clone(),
            project_domain_name: self.project_domain_name.clone(),
            domain_id: self.domain_id.clone(),
            domain_name: self.domain_name.clone(),
            ac_id: self.application_credential_id.clone(),
            ac_name: self.application_credential_name.clone(),
            ac_secret,
            region: self.region.clone(),
            interface: self.os_endpoint_type.clone(),
            ca_file: self.ca_file.clone(),
            insecure: self.tls_insecure,
        })
    }

    /// Combines this block with clouds.yaml (when `use-clouds`) and `env`.
    pub fn resolve(&self, cluster_name: Option<&str>, env: &dyn Fn(&str) -> Option<String>) -> Result<Settings, ConfigError> {
        let mut flat = self.flat()?;
        if self.use_clouds.unwrap_or(false) {
            flat = flat.or(clouds_yaml(self, env)?);
        }
        flat = flat.or(from_env(env));
        let auth_url = flat
            .auth_url
            .clone()
            .filter(|u| !u.is_empty())
            .ok_or_else(|| err("openstack.auth-url", "required (or OS_AUTH_URL, or clouds.yaml with use-clouds)"))?;
        if !(auth_url.starts_with("http://") || auth_url.starts_with("https://")) {
            return Err(err("openstack.auth-url", format!("not an http(s) URL (value: {auth_url:?})")));
        }
        let user_domain = flat.user_domain_id.clone().map(DomainRef::Id).or(flat.user_domain_name.clone().map(DomainRef::Name));
        let user_domain = user_domain.or(flat.domain_id.clone().map(DomainRef::Id)).or(flat.domain_name.clone().map(DomainRef::Name));
        let project_domain = flat.project_domain_id.clone().map(DomainRef::Id).or(flat.project_domain_name.clone().map(DomainRef::Name));
        let project_domain = project_domain.or(flat.domain_id.clone().map(DomainRef::Id)).or(flat.domain_name.clone().map(DomainRef::Name));
        let user = match (&flat.user_id, &flat.username) {
            (Some(id), _) => Some(UserRef::Id(id.clone())),
            (None, Some(name)) => Some(UserRef::Name {
                name: name.clone(),
                domain: user_domain.clone().ok_or_else(|| {
                    err(
                        "openstack.user-domain-name",
                        format!("username {name:?} needs the user's domain (user-domain-name, user-domain-id or domain-name)"),
                    )
                })?,
            }),
            (None, None) => None,
        };
        let credentials = if flat.ac_id.is_some() || flat.ac_name.is_some() {
            let secret = flat
                .ac_secret
                .clone()
                .filter(|s| !s.is_empty())
                .ok_or_else(|| err("openstack.application-credential-secret", "required with an application credential"))?;
            if flat.ac_id.is_none() && user.is_none() {
                return Err(err(
                    "openstack.application-credential-name",
                    "an application credential by name needs its user (user-id, or username with a domain)",
                ));
            }
            Credentials::ApplicationCredential {
                id: flat.ac_id.clone(),
                name: flat.ac_name.clone(),
                user: if flat.ac_id.is_some() { None } else { user },
                secret,
            }
        } else {
            let user = user.ok_or_else(|| {
                err("openstack.user-id", "no credentials: give user-id or username (with password), or an application credential")
            })?;
            let password = flat
                .password
                .clone()
                .filter(|p| !p.is_empty())
                .ok_or_else(|| err("openstack.password", "required with user-id or username (or password-file)"))?;
            let project = match (&flat.project_id, &flat.project_name) {
                (Some(id), _) => Some(ProjectRef::Id(id.clone())),
                (None, Some(name)) => Some(ProjectRef::Name {
                    name: name.clone(),
                    domain: project_domain.ok_or_else(|| {
                        err(
                            "openstack.project-domain-name",
                            format!(
                                "project-name {name:?} needs the project's domain (project-domain-name, project-domain-id or domain-name)"
                            ),
                        )
                    })?,
                }),
                (None, None) => None,
            };
            Credentials::Password { user, password, project }
        };
        let interface = match flat.interface.as_deref().map(str::to_lowercase).as_deref() {
            None | Some("" | "public" | "publicurl") => "public",
            Some("internal" | "internalurl") => "internal",
            Some("admin" | "adminurl") => "admin",
            Some(other) => return Err(err("openstack.os-endpoint-type", format!("must be public, internal or admin (value: {other:?})"))),
        };
        let strategy = match (self.strategy.as_deref(), cluster_name) {
            (Some("magnum"), Some(_)) | (None, Some(_)) => Strategy::Magnum,
            (Some("magnum"), None) => return Err(err("cluster-name", "required by openstack.strategy magnum")),
            (Some("nova"), _) => Strategy::Nova,
            (None, None) => {
                return Err(err(
                    "cluster-name",
                    "required by the magnum strategy; set openstack.strategy: nova for clusters Magnum does not manage",
                ));
            }
            (Some(other), _) => return Err(err("openstack.strategy", format!("must be magnum or nova (value: {other:?})"))),
        };
        let magnum_driver =
            match self.magnum_driver.as_deref() {
                None | Some("auto") => None,
                Some(d) => Some(MagnumDriver::parse(d).ok_or_else(|| {
                    err("openstack.magnum-driver", format!("must be auto, heat, cluster-api or capi-helm (value: {d:?})"))
                })?),
            };
        if magnum_driver.is_some() && strategy == Strategy::Nova {
            return Err(err("openstack.magnum-driver", "applies to the magnum strategy only (openstack.strategy is nova)"));
        }
        Ok(Settings {
            auth_url: auth_url.trim_end_matches('/').to_string(),
            credentials,
            region: flat.region.clone().filter(|r| !r.is_empty()),
            interface: interface.into(),
            ca_file: flat.ca_file.clone(),
            insecure: flat.insecure.unwrap_or(false),
            strategy,
            cluster: cluster_name.map(String::from),
            stop_timeout: self.stop_timeout.unwrap_or(Duration::from_secs(180)),
            request_timeout: self.request_timeout.unwrap_or(Duration::from_secs(30)),
            console_lines: self.console_lines.unwrap_or(50),
            magnum_driver,
            machine_health_check_timeout: self.machine_health_check_timeout.unwrap_or(Duration::from_secs(300)),
            cluster_busy_timeout: self.cluster_busy_timeout.unwrap_or(Duration::from_secs(1200)),
        })
    }
}

fn from_env(env: &dyn Fn(&str) -> Option<String>) -> Flat {
    let get = |k: &str| env(k).filter(|v| !v.is_empty());
    Flat {
        auth_url: get("OS_AUTH_URL"),
        user_id: get("OS_USER_ID"),
        username: get("OS_USERNAME"),
        password: get("OS_PASSWORD").map(Secret::new),
        project_id: get("OS_PROJECT_ID").or(get("OS_TENANT_ID")),
        project_name: get("OS_PROJECT_NAME").or(get("OS_TENANT_NAME")),
        user_domain_id: get("OS_USER_DOMAIN_ID"),
        user_domain_name: get("OS_USER_DOMAIN_NAME"),
        project_domain_id: get("OS_PROJECT_DOMAIN_ID"),
        project_domain_name: get("OS_PROJECT_DOMAIN_NAME"),
        domain_id: get("OS_DOMAIN_ID"),
        domain_name: get("OS_DOMAIN_NAME"),
        ac_id: get("OS_APPLICATION_CREDENTIAL_ID"),
        ac_name: get("OS_APPLICATION_CREDENTIAL_NAME"),
        ac_secret: get("OS_APPLICATION_CREDENTIAL_SECRET").map(Secret::new),
        region: get("OS_REGION_NAME"),
        interface: get("OS_INTERFACE").or(get("OS_ENDPOINT_TYPE")),
        ca_file: get("OS_CACERT").map(PathBuf::from),
        insecure: get("OS_INSECURE").map(|v| v.eq_ignore_ascii_case("true") || v == "1"),
    }
}

/// The named cloud of clouds.yaml, merged with secure.yaml beside it.
fn clouds_yaml(cfg: &OpenStackConfig, env: &dyn Fn(&str) -> Option<String>) -> Result<Flat, ConfigError> {
    let candidates: Vec<PathBuf> = match &cfg.clouds_file {
        Some(p) => vec![p.clone()],
        None => {
            let mut v = vec![PathBuf::from("clouds.yaml")];
            if let Some(home) = env("HOME") {
                v.push(PathBuf::from(home).join(".config/openstack/clouds.yaml"));
            }
            v.push(PathBuf::from("/etc/openstack/clouds.yaml"));
            v
        }
    };
    let path = candidates.iter().find(|p| p.exists()).ok_or_else(|| {
        err(
            "openstack.clouds-file",
            format!(
                "no clouds.yaml found (looked at {})",
                candidates.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
            ),
        )
    })?;
    let name = cfg.cloud.clone().or_else(|| env("OS_CLOUD")).unwrap_or_else(|| "openstack".into());
    let load = |p: &Path| -> Result<Value, ConfigError> {
        let text = std::fs::read_to_string(p).map_err(|e| err("openstack.clouds-file", format!("cannot read {}: {e}", p.display())))?;
        serde_saphyr::from_str::<Value>(&text).map_err(|e| err("openstack.clouds-file", format!("{} is not valid YAML: {e}", p.display())))
    };
    let mut cloud = load(path)?
        .pointer(&format!("/clouds/{name}"))
        .cloned()
        .ok_or_else(|| err("openstack.cloud", format!("no cloud {name:?} in {}", path.display())))?;
    let secure = path.with_file_name("secure.yaml");
    if secure.exists()
        && let Some(extra) = load(&secure)?.pointer(&format!("/clouds/{name}"))
    {
        merge(&mut cloud, extra);
    }
    let s = |v: &Value, k: &str| v.get(k).and_then(|x| x.as_str().map(String::from).or_else(|| x.as_i64().map(|n| n.to_string())));
    let auth = cloud.get("auth").cloned().unwrap_or(Value::Null);
    Ok(Flat {
        auth_url: s(&auth, "auth_url"),
        user_id: s(&auth, "user_id"),
        username: s(&auth, "username"),
        password: s(&auth, "password").map(Secret::new),
        project_id: s(&auth, "project_id").or(s(&auth, "tenant_id")),
        project_name: s(&auth, "project_name").or(s(&auth, "tenant_name")),
        user_domain_id: s(&auth, "user_domain_id"),
        user_domain_name: s(&auth, "user_domain_name"),
        project_domain_id: s(&auth, "project_domain_id"),
        project_domain_name: s(&auth, "project_domain_name"),
        domain_id: s(&auth, "domain_id"),
        domain_name: s(&auth, "domain_name"),
        ac_id: s(&auth, "application_credential_id"),
        ac_name: s(&auth, "application_credential_name"),
        ac_secret: s(&auth, "application_credential_secret").map(Secret::new),
        region: s(&cloud, "region_name"),
        interface: s(&cloud, "interface").or(s(&cloud, "endpoint_type")),
        ca_file: s(&cloud, "cacert").map(PathBuf::from),
        insecure: cloud.get("verify").and_then(Value::as_bool).map(|v| !v),
    })
}

fn merge(base: &mut Value, extra: &Value) {
    match (base, extra) {
        (Value::Object(b), Value::Object(e)) => {
            for (k, v) in e {
                merge(b.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
        (b, e) => *b = e.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn upstream_block_with_user_id_and_project_id() {
        let c = OpenStackConfig::parse(Some(
            &json!({"auth-url": "https://k:5000/v3", "user-id": "u", "project-id": "p", "password": "pw", "region": "RegionOne"}),
        ))
        .unwrap();
        let s = c.resolve(Some("cluster"), &no_env).unwrap();
        assert_eq!(
            s.credentials,
            Credentials::Password { user: UserRef::Id("u".into()), password: Secret::new("pw"), project: Some(ProjectRef::Id("p".into())) }
        );
        assert_eq!((s.interface.as_str(), s.strategy), ("public", Strategy::Magnum));
        assert!(!format!("{s:?}").contains("pw\""), "the password never prints");
    }

    #[test]
    fn names_need_domains_and_errors_name_keys() {
        let c = OpenStackConfig::parse(Some(&json!({"auth-url": "https://k/v3", "username": "u", "password": "pw"}))).unwrap();
        assert_eq!(c.resolve(None, &no_env).unwrap_err().path, "openstack.user-domain-name");
        let e = OpenStackConfig::parse(Some(&json!({"auth-urll": "x"}))).unwrap_err();
        assert_eq!(e.path, "openstack.auth-urll");
        let c = OpenStackConfig::parse(Some(&json!({"auth-url": "https://k/v3", "user-id": "u"}))).unwrap();
        assert_eq!(c.resolve(None, &no_env).unwrap_err().path, "openstack.password");
        let c = OpenStackConfig::parse(Some(
            &json!({"auth-url": "https://k/v3", "user-id": "u", "password": "p", "os-endpoint-type": "internalURL"}),
        ))
        .unwrap();
        assert_eq!(c.resolve(Some("c"), &no_env).unwrap().interface, "internal");
    }

    #[test]
    fn secrets_of_the_wrong_type_are_named_not_shown() {
        for (key, value) in [("password", json!(12345678)), ("application-credential-secret", json!(987654321)), ("password", json!(2.5e9))]
        {
            let e = OpenStackConfig::parse(Some(&json!({"auth-url": "https://k/v3", "user-id": "u", key: value}))).unwrap_err();
            assert_eq!(e.path, format!("openstack.{key}"));
            assert!(e.message.contains("expected a string, got") && e.message.contains("value not shown"), "{e}");
            assert!(!e.to_string().contains(&value.to_string()) && !e.to_string().contains("25000"), "{e}");
        }
    }

    #[test]
    fn application_credential_takes_no_scope_and_env_fills_secrets() {
        let c =
            OpenStackConfig::parse(Some(&json!({"auth-url": "https://k/v3", "application-credential-id": "ac", "project-id": "ignored"})))
                .unwrap();
        let env = |k: &str| (k == "OS_APPLICATION_CREDENTIAL_SECRET").then(|| "s3".to_string());
        match c.resolve(Some("c"), &env).unwrap().credentials {
            Credentials::ApplicationCredential { id, secret, user, .. } => {
                assert_eq!((id.as_deref(), secret.expose(), user), (Some("ac"), "s3", None));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn clouds_yaml_and_secure_yaml() {
        let dir = std::env::temp_dir().join(format!("autohealer-clouds-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("clouds.yaml"), "clouds:\n  prod:\n    auth:\n      auth_url: https://k/v3\n      username: u\n      user_domain_name: Default\n      project_name: p\n      project_domain_name: Default\n    region_name: R2\n    interface: internal\n").unwrap();
        std::fs::write(dir.join("secure.yaml"), "clouds:\n  prod:\n    auth:\n      password: from-secure\n").unwrap();
        let c =
            OpenStackConfig::parse(Some(&json!({"use-clouds": true, "clouds-file": dir.join("clouds.yaml"), "cloud": "prod"}))).unwrap();
        let s = c.resolve(Some("c"), &no_env).unwrap();
        assert_eq!((s.region.as_deref(), s.interface.as_str()), (Some("R2"), "internal"));
        match s.credentials {
            Credentials::Password { password, .. } => assert_eq!(password.expose(), "from-secure"),
            other => panic!("{other:?}"),
        }
        let _ = std::fs::remove_dir_all(dir);
    }
}
