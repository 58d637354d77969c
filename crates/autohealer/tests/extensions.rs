//! The extension points, as an embedder uses them: a provider crate and a check crate
//! registered next to the binary's own, selected by name in the config, and kept
//! through a hot reload.

use autohealer::Registries;
use autohealer::config::Config;
use autohealer_core::{Metrics, Status};
use autohealer_example_provider::PowerApi;
use autohealer_testkit::apiserver::FakeApiServer;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::api::events::v1::Event;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The binary's registries plus the two example crates, as an embedder builds them.
fn registries() -> Registries {
    let mut r = Registries::builtin();
    r.providers.register::<PowerApi>();
    autohealer_example_check::register(&mut r.checks);
    r
}

/// A power API that records the machines it power-cycles.
async fn power_api() -> (String, Arc<Mutex<Vec<String>>>) {
    let cycled = Arc::new(Mutex::new(Vec::new()));
    let seen = cycled.clone();
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    let app = axum::Router::new().route(
        "/machines/{name}/power-cycle",
        axum::routing::post(move |axum::extract::Path(name): axum::extract::Path<String>| {
            let seen = seen.clone();
            async move {
                seen.lock().unwrap_or_else(|p| p.into_inner()).push(name);
                axum::http::StatusCode::ACCEPTED
            }
        }),
    );
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    (url, cycled)
}

#[tokio::test]
async fn a_provider_crate_is_selected_by_name_through_the_config() {
    autohealer::install_crypto();
    let (url, cycled) = power_api().await;
    let text = format!("cloud-provider: power-api\npower-api:\n  url: {url}\n  timeout: 5s\n");
    let loaded = Config::load_str(&text, &registries()).unwrap();
    let provider = autohealer::providers::build(&loaded, &Arc::new(Metrics::new())).unwrap();
    assert_eq!(provider.name(), "power-api");
    let node = autohealer_cloud::NodeInfo { name: "rack1-07".into(), ..Default::default() };
    assert!(provider.reboot(&node).await.unwrap().detail.contains("accepted"));
    assert_eq!(*cycled.lock().unwrap(), ["rack1-07"], "the reboot went to the configured power API");

    let e = Config::load_str("cloud-provider: power-api\npower-api:\n  urll: http://x\n", &registries()).unwrap_err();
    assert_eq!(e.path, "power-api.urll");
    assert!(e.message.contains("did you mean \"url\""), "{e}");
    let e = Config::load_str("cloud-provider: power-api\npower-api:\n  url: not a url\n", &registries()).unwrap_err();
    assert_eq!((e.path.as_str(), e.message.contains("not a URL")), ("power-api.url", true), "{e}");
    let e = Config::load_str("cloud-provider: power-api\n", &registries()).unwrap_err();
    assert_eq!(e.path, "power-api", "without its block the provider says what it lacks: {e}");
    assert!(e.message.contains("url"), "{e}");

    let e = Config::load_str("cloud-provider: power-api\n", &Registries::builtin()).unwrap_err();
    assert_eq!(e.path, "cloud-provider", "unregistered, the provider is not known: {e}");
    assert!(e.message.contains("unknown provider \"power-api\"") && e.message.contains("known: openstack"), "{e}");

    let e = Config::load_str(&text, &Registries::builtin()).unwrap_err();
    assert_eq!(e.path, "power-api", "{e}");
    let e = Config::load_str("cluster-name: c\nopenstak: {}\n", &registries()).unwrap_err();
    assert!(e.message.contains("did you mean \"openstack\""), "a provider's block is a known key: {e}");

    let reference = autohealer::config::reference_markdown(&registries());
    assert!(reference.contains("| `power-api` | (none) | The power API's `url`"), "{reference}");
}

/// Without the embedder's registries, the reload would reject the new config: its
/// check type would be unknown.
#[tokio::test]
async fn a_custom_check_registered_by_an_embedder_survives_a_hot_reload() {
    autohealer::install_crypto();
    let server = FakeApiServer::start(Default::default()).await.unwrap();
    let client = server.client().await.unwrap();
    let (url, _) = power_api().await;
    let text = |kernel: &str| {
        format!(
            "cloud-provider: power-api\npower-api:\n  url: {url}\nleader-elect: false\nadmin:\n  listen: 127.0.0.1:0\npause-configmap: kube-system/autohealer-config\nhealthcheck:\n  worker:\n    - type: KernelBlocklist\n      params:\n        kernels: [\"{kernel}\"]\n"
        )
    };
    let cms: kube::Api<ConfigMap> = kube::Api::namespaced(client.clone(), "kube-system");
    let cm = |text: String| -> ConfigMap {
        serde_json::from_value(
            serde_json::json!({"metadata": {"name": "autohealer-config", "namespace": "kube-system"}, "data": {"config.yaml": text}}),
        )
        .unwrap()
    };
    cms.create(&Default::default(), &cm(text("6.1.0-13-amd64"))).await.unwrap();
    let loaded = Config::load_str(&text("6.1.0-13-amd64"), &registries()).unwrap();
    let metrics = Arc::new(Metrics::new());
    let provider = autohealer::providers::build(&loaded, &metrics).unwrap();
    let rt =
        autohealer::Runtime { client: client.clone(), provider, metrics, status: Arc::new(Status::default()), identity: "embedder".into() };
    let stop = CancellationToken::new();
    let healer = tokio::spawn(autohealer::run(loaded, rt, registries(), stop.clone()));

    let events: kube::Api<Event> = kube::Api::namespaced(client, "kube-system");
    let mut reasons = Vec::new();
    // The reloader takes its first sight of the ConfigMap as the running config, so
    // the change is made again until it is seen as one.
    for i in 0..100 {
        cms.replace("autohealer-config", &Default::default(), &cm(text(&format!("6.1.0-{i}-amd64")))).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        reasons = events.list(&Default::default()).await.unwrap().items.into_iter().filter_map(|e| e.reason).collect();
        if reasons.iter().any(|r| r.starts_with("Config")) {
            break;
        }
    }
    stop.cancel();
    healer.await.unwrap().unwrap();
    assert!(reasons.iter().any(|r| r == "ConfigReloaded"), "the new config with the embedder's check was applied: {reasons:?}");
    assert!(!reasons.iter().any(|r| r == "ConfigRejected"), "{reasons:?}");
}

/// A provider whose block holds an `api-token` (hidden by its name) and a `passphrase`
/// (hidden because the provider declares it), with a validation that quotes values.
struct Vault;

#[derive(PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct VaultConfig {
    api_token: String,
    #[serde(default)]
    passphrase: Option<String>,
}

impl autohealer_cloud::Provider for Vault {
    const NAME: &'static str = "vault";
    const DOC: &'static str = "The vault's `api-token` and `passphrase`.";
    const SECRET_KEYS: &'static [&'static str] = &["passphrase"];
    type Config = VaultConfig;

    fn validate(c: &VaultConfig, _: &autohealer_cloud::registry::Site) -> Result<(), autohealer_params::ParamError> {
        if c.api_token.len() < 12 {
            return Err(autohealer_params::ParamError::new("vault.api-token", format!("too short (value: {:?})", c.api_token)));
        }
        if let Some(p) = c.passphrase.as_deref().filter(|p| p.contains(' ')) {
            return Err(autohealer_params::ParamError::new("vault.passphrase", format!("no spaces allowed (value: {p:?})")));
        }
        Ok(())
    }

    fn build(
        _: &VaultConfig,
        _: &autohealer_cloud::registry::Site,
        _: Option<autohealer_cloud::registry::RequestObserver>,
    ) -> Result<Arc<dyn autohealer_cloud::CloudProvider>, autohealer_cloud::registry::BuildError> {
        Err("not built in this test".into())
    }
}

#[test]
fn a_provider_secret_never_shows_in_config_errors() {
    let mut r = Registries::builtin();
    r.providers.register::<Vault>();
    let load = |block: &str| Config::load_str(&format!("cloud-provider: vault\nvault:\n{block}"), &r);
    for (block, path, secret) in [
        ("  api-token: 98127364512399\n", "vault.api-token", "98127364512399"),
        ("  api-token: tok-3x4mpl3\n", "vault.api-token", "tok-3x4mpl3"),
        ("  api-token: tok-3x4mpl3-long-enough\n  passphrase: open sesame now\n", "vault.passphrase", "open sesame now"),
        ("  api-token: tok-3x4mpl3-long-enough\n  passphrase: 7364512399\n", "vault.passphrase", "7364512399"),
    ] {
        let e = load(block).unwrap_err();
        assert_eq!(e.path, path, "{e}");
        let shown = e.to_string();
        assert!(!shown.contains(secret) && !shown.contains(&secret[..secret.len() - 1]), "{shown}");
        assert!(shown.contains("value not shown"), "{shown}");
    }
    let l = load("  api-token: tok-3x4mpl3-long-enough\n  passphrase: opensesame\n").unwrap();
    let shown = format!("{l:?}");
    assert!(!shown.contains("tok-3x4mpl3") && !shown.contains("opensesame"), "{shown}");
    assert!(shown.contains("api-token") && shown.contains("passphrase"), "the keys are shown: {shown}");
    let e = Config::load_str("cloud-provider: vault\nvault:\n  api-token: \"tok-3x4mpl3-long\n", &r).unwrap_err();
    assert!(!e.to_string().contains("tok-3x4mpl3"), "a YAML error hides it too: {e}");
}

/// A provider named like one of the binary's keys would take that key's block.
struct Drain;

impl autohealer_cloud::Provider for Drain {
    const NAME: &'static str = "drain";
    const DOC: &'static str = "A provider under a name the config already uses.";
    type Config = serde_json::Value;

    fn build(
        _: &serde_json::Value,
        _: &autohealer_cloud::registry::Site,
        _: Option<autohealer_cloud::registry::RequestObserver>,
    ) -> Result<Arc<dyn autohealer_cloud::CloudProvider>, autohealer_cloud::registry::BuildError> {
        Err("not built in this test".into())
    }
}

#[test]
fn a_provider_named_like_a_config_key_is_refused_at_load() {
    let mut r = Registries::builtin();
    r.providers.register::<Drain>();
    let e = Config::load_str("cluster-name: c\ndrain:\n  timeout: 1m\n", &r).unwrap_err();
    assert_eq!(e.path, "drain");
    assert!(e.message.contains("the cloud provider \"drain\" is registered under the name of one of the config's own keys"), "{e}");
}
