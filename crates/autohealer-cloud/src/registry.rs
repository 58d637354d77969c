//! Cloud providers by their `cloud-provider:` name. A provider crate implements
//! [`Provider`] and registers it with [`Providers::register`]: the binary then reads
//! the provider's own block (the top-level key named after it, as magnum-auto-healer
//! writes `openstack:`), validates it when the config is loaded, so a bad key fails
//! at load and names its path, and builds the provider from it at start.

use crate::{CloudProvider, Role};
use autohealer_params::{ParamError, did_you_mean, from_value};
use serde::de::DeserializeOwned;
use std::any::Any;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// The rest of the config a provider's block may depend on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Site {
    /// `cluster-name`.
    pub cluster_name: Option<String>,
}

/// Counts each cloud request by service and HTTP status, so the healer's
/// `autohealer_cloud_requests_total{service,code}` covers every provider.
pub type RequestObserver = Arc<dyn Fn(&str, u16) + Send + Sync>;

/// How long the healer takes, per role, before it judges a reboot: a cloud that
/// remediates machines itself (a Cluster API MachineHealthCheck) may act first, and
/// its provider can warn about that in `autohealer validate`.
#[derive(Debug, Clone, Default)]
pub struct RepairTiming {
    /// The slowest check's `unhealthy-duration`, per role with checks.
    pub slowest_check: Vec<(Role, Duration)>,
    pub rebuild_delay_after_reboot: Duration,
}

/// Why a provider could not be built from a valid block (a file it names is missing,
/// its HTTP client cannot be set up).
pub type BuildError = Box<dyn std::error::Error + Send + Sync>;

/// A cloud provider as a plugin: its config block, how that block is validated, and
/// how the provider is built from it.
///
/// Secrets: the block is ConfigMap text, and its values reach config errors, logs and
/// the `ConfigRejected` Event of a hot reload. The binary hides the value of every key
/// named `password`, `token`, `secret`, `url`, `routing-key`, `api-key` or ending in
/// `-password`, `-token`, `-secret` or `-key`, anywhere in the config; a provider names
/// its other secret keys in [`Provider::SECRET_KEYS`]. Its validation messages may quote
/// values (the binary rewords those at a secret key), but its own `Debug` and logs must
/// not: give a secret field a type whose `Debug` hides it, or write `Debug` by hand.
pub trait Provider: 'static {
    /// The `cloud-provider:` value that selects it, and the top-level key of its block.
    /// It must differ from the binary's own top-level keys (`kubernetes`, `drain`, ...):
    /// a config that uses it is refused at load otherwise.
    const NAME: &'static str;
    /// One line for `autohealer config-reference`, about the block.
    const DOC: &'static str;
    /// Keys of the block, at any depth, whose values are secrets besides those the
    /// binary hides by name (see above), e.g. `["passphrase"]`.
    const SECRET_KEYS: &'static [&'static str] = &[];
    /// The block, parsed with [`autohealer_params::from_value`]: an absent block reads
    /// as `{}`, so a block with a required key fails at load, naming it. It is compared
    /// on hot reload, where a change waits for a restart.
    type Config: DeserializeOwned + PartialEq + Send + Sync + 'static;

    /// What parsing alone cannot check; an error names the key path.
    fn validate(_config: &Self::Config, _site: &Site) -> Result<(), ParamError> {
        Ok(())
    }

    fn build(config: &Self::Config, site: &Site, observer: Option<RequestObserver>) -> Result<Arc<dyn CloudProvider>, BuildError>;

    /// Facts and warnings about the block for `autohealer validate`, without calling
    /// the cloud.
    fn describe(_config: &Self::Config, _site: &Site, _timing: &RepairTiming) -> Vec<String> {
        Vec::new()
    }
}

/// A provider's parsed and validated block, ready to build the provider from.
#[derive(Clone)]
pub struct ProviderConfig {
    name: &'static str,
    site: Site,
    /// The keys written in the block, for `Debug`: the values are never shown, so a
    /// provider's own `Debug` cannot leak a secret through the binary's.
    keys: Vec<String>,
    inner: Arc<dyn Parsed>,
}

impl ProviderConfig {
    pub fn name(&self) -> &'static str {
        self.name
    }

    pub fn build(&self, observer: Option<RequestObserver>) -> Result<Arc<dyn CloudProvider>, BuildError> {
        self.inner.build(&self.site, observer)
    }

    pub fn describe(&self, timing: &RepairTiming) -> Vec<String> {
        self.inner.describe(&self.site, timing)
    }
}

/// The block alone: the [`Site`] is the rest of the config, compared there, so a
/// change of `cluster-name` is not also reported as a change of the block.
impl PartialEq for ProviderConfig {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name && self.inner.same(other.inner.as_any())
    }
}

impl fmt::Debug for ProviderConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProviderConfig").field("name", &self.name).field("keys", &self.keys).finish_non_exhaustive()
    }
}

/// [`Provider::Config`] with its provider's functions, its type erased.
trait Parsed: Send + Sync {
    fn build(&self, site: &Site, observer: Option<RequestObserver>) -> Result<Arc<dyn CloudProvider>, BuildError>;
    fn describe(&self, site: &Site, timing: &RepairTiming) -> Vec<String>;
    fn as_any(&self) -> &dyn Any;
    fn same(&self, other: &dyn Any) -> bool;
}

struct Block<P: Provider>(P::Config);

impl<P: Provider> Parsed for Block<P> {
    fn build(&self, site: &Site, observer: Option<RequestObserver>) -> Result<Arc<dyn CloudProvider>, BuildError> {
        P::build(&self.0, site, observer)
    }

    fn describe(&self, site: &Site, timing: &RepairTiming) -> Vec<String> {
        P::describe(&self.0, site, timing)
    }

    fn as_any(&self) -> &dyn Any {
        self
    }

    fn same(&self, other: &dyn Any) -> bool {
        other.downcast_ref::<Self>().is_some_and(|o| o.0 == self.0)
    }
}

type ParseFn = fn(Option<&serde_json::Value>, &Site) -> Result<ProviderConfig, ParamError>;

fn parse_as<P: Provider>(block: Option<&serde_json::Value>, site: &Site) -> Result<ProviderConfig, ParamError> {
    let empty = serde_json::Value::Object(Default::default());
    let block = block.filter(|b| !b.is_null()).unwrap_or(&empty);
    let config: P::Config = from_value(block, P::NAME)?;
    P::validate(&config, site)?;
    let keys = block.as_object().map(|m| m.keys().cloned().collect()).unwrap_or_default();
    Ok(ProviderConfig { name: P::NAME, site: site.clone(), keys, inner: Arc::new(Block::<P>(config)) })
}

#[derive(Clone, Copy)]
struct Entry {
    parse: ParseFn,
    doc: &'static str,
    secret_keys: &'static [&'static str],
}

/// Providers by name. The binary lists the provider crates it is built with; an
/// embedder adds its own and hands the registry to `autohealer::run`.
#[derive(Clone, Default)]
pub struct Providers {
    entries: BTreeMap<&'static str, Entry>,
}

impl Providers {
    pub fn empty() -> Self {
        Self::default()
    }

    /// Adds the provider under [`Provider::NAME`].
    ///
    /// # Panics
    ///
    /// When a provider is registered under that name already: one of the two would
    /// silently read the other's block, so the crate author hears of it at once.
    pub fn register<P: Provider>(&mut self) {
        let entry = Entry { parse: parse_as::<P>, doc: P::DOC, secret_keys: P::SECRET_KEYS };
        if self.entries.insert(P::NAME, entry).is_some() {
            panic!("the cloud provider {:?} is registered twice: give each provider its own NAME", P::NAME);
        }
    }

    pub fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.entries.keys().copied()
    }

    /// Each provider's block key and its `config-reference` line.
    pub fn docs(&self) -> impl Iterator<Item = (&'static str, &'static str)> + '_ {
        self.entries.iter().map(|(k, e)| (*k, e.doc))
    }

    /// Each provider's block key and its [`Provider::SECRET_KEYS`].
    pub fn secret_keys(&self) -> impl Iterator<Item = (&'static str, &'static [&'static str])> + '_ {
        self.entries.iter().map(|(k, e)| (*k, e.secret_keys))
    }

    /// Parses and validates the block of the provider `name` (the value of
    /// `cloud-provider`); `block` is the top-level key of that name, if present.
    pub fn parse(&self, name: &str, block: Option<&serde_json::Value>, site: &Site) -> Result<ProviderConfig, ParamError> {
        match self.entries.get(name) {
            Some(e) => (e.parse)(block, site),
            None => {
                let names: Vec<&str> = self.names().collect();
                Err(ParamError::new(
                    "cloud-provider",
                    format!("unknown provider {name:?}{}; known: {}", did_you_mean(name, &names), names.join(", ")),
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ActionOutcome, CloudError, NodeInfo, Phase, Progress, RepairGate};
    use async_trait::async_trait;

    struct Rack {
        pdu: String,
    }

    #[async_trait]
    impl CloudProvider for Rack {
        fn name(&self) -> &str {
            "rack"
        }
        fn supports(&self, action: crate::Action, _: Role) -> bool {
            action == crate::Action::Reboot
        }
        async fn repair_allowed(&self) -> Result<RepairGate, CloudError> {
            Ok(RepairGate::Allowed)
        }
        async fn reboot(&self, _: &NodeInfo) -> Result<ActionOutcome, CloudError> {
            Ok(ActionOutcome { detail: self.pdu.clone(), ..Default::default() })
        }
        async fn replace(&self, _: &NodeInfo, _: Option<&Phase>, _: bool) -> Result<Progress, CloudError> {
            Err(CloudError::Other("no".into()))
        }
    }

    #[derive(Debug, PartialEq, serde::Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "kebab-case")]
    struct RackConfig {
        pdu: String,
    }

    impl Provider for Rack {
        const NAME: &'static str = "rack";
        const DOC: &'static str = "The rack's PDU.";
        type Config = RackConfig;
        fn validate(c: &RackConfig, _: &Site) -> Result<(), ParamError> {
            if c.pdu.is_empty() { Err(ParamError::new("rack.pdu", "must not be empty")) } else { Ok(()) }
        }
        fn build(c: &RackConfig, _: &Site, _: Option<RequestObserver>) -> Result<Arc<dyn CloudProvider>, BuildError> {
            Ok(Arc::new(Rack { pdu: c.pdu.clone() }))
        }
    }

    fn providers() -> Providers {
        let mut p = Providers::empty();
        p.register::<Rack>();
        p
    }

    #[test]
    fn a_registered_provider_is_parsed_validated_and_built_by_name() {
        let site = Site::default();
        let c = providers().parse("rack", Some(&serde_json::json!({"pdu": "pdu-1"})), &site).unwrap();
        assert_eq!(c.build(None).unwrap().name(), "rack");
        let e = providers().parse("rack", Some(&serde_json::json!({"pdus": "x"})), &site).unwrap_err();
        assert_eq!(e.path, "rack.pdus");
        assert!(e.message.contains("did you mean \"pdu\""), "{e}");
        assert_eq!(providers().parse("rack", None, &site).unwrap_err().path, "rack", "an absent block lacks its required key");
        assert_eq!(providers().parse("rack", Some(&serde_json::json!({"pdu": ""})), &site).unwrap_err().path, "rack.pdu");
        let e = providers().parse("rak", None, &site).unwrap_err();
        assert_eq!(e.path, "cloud-provider");
        assert!(e.message.contains("did you mean \"rack\"") && e.message.contains("known: rack"), "{e}");
    }

    #[test]
    fn blocks_compare_by_their_typed_values() {
        let site = Site::default();
        let parse = |v| providers().parse("rack", Some(&v), &site).unwrap();
        assert_eq!(parse(serde_json::json!({"pdu": "a"})), parse(serde_json::json!({"pdu": "a"})));
        assert_ne!(parse(serde_json::json!({"pdu": "a"})), parse(serde_json::json!({"pdu": "b"})));
        let elsewhere = Site { cluster_name: Some("other".into()) };
        let moved = providers().parse("rack", Some(&serde_json::json!({"pdu": "a"})), &elsewhere).unwrap();
        assert_eq!(parse(serde_json::json!({"pdu": "a"})), moved, "another cluster-name is no change of the block");
    }

    #[test]
    #[should_panic(expected = "the cloud provider \"rack\" is registered twice")]
    fn a_name_registered_twice_is_refused() {
        let mut p = providers();
        p.register::<Rack>();
    }

    #[test]
    fn debug_shows_the_keys_written_never_their_values() {
        let c = providers().parse("rack", Some(&serde_json::json!({"pdu": "pdu-secret-1"})), &Site::default()).unwrap();
        let shown = format!("{c:?}");
        assert!(shown.contains("\"rack\"") && shown.contains("\"pdu\""), "{shown}");
        assert!(!shown.contains("pdu-secret-1"), "{shown}");
    }
}
