use anyhow::Context;
use autohealer::Registries;
use autohealer::config::{self, Config};
use autohealer_core::{Metrics, Status};
use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// Kubernetes node auto-healer: watches Nodes, judges them with health checks and
/// repairs broken ones through the cloud (reboot first, then replace).
#[derive(Parser)]
#[command(name = "autohealer", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the healer.
    Run {
        #[arg(long, env = "AUTOHEALER_CONFIG")]
        config: PathBuf,
        /// Overrides `dry-run` in the config.
        #[arg(long)]
        dry_run: bool,
        /// Overrides `kubernetes.kubeconfig`.
        #[arg(long)]
        kubeconfig: Option<PathBuf>,
        #[arg(long, value_enum, default_value = "text")]
        log_format: LogFormat,
        /// A tracing filter, e.g. `info` or `autohealer_core=debug,info`.
        #[arg(long, default_value = "info")]
        log_level: String,
    },
    /// Check a config and print what it resolves to; touches nothing.
    Validate {
        #[arg(long)]
        config: PathBuf,
    },
    /// One evaluation: print every node, each check's verdict and the action the
    /// healer would take now, and why. Writes nothing.
    Plan {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        kubeconfig: Option<PathBuf>,
    },
    /// Print every config key with its default and meaning (Markdown).
    ConfigReference,
    /// Print the version.
    Version,
}

fn init_logs(format: LogFormat, level: &str) -> anyhow::Result<()> {
    let filter =
        tracing_subscriber::EnvFilter::try_new(level).with_context(|| format!("--log-level: not a valid filter (value: {level:?})"))?;
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
    Ok(())
}

async fn shutdown_signal(token: CancellationToken) {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = term => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    tracing::info!("shutting down: no new steps, releasing the Lease");
    token.cancel();
}

fn load(path: &std::path::Path, registries: &Registries) -> anyhow::Result<config::Loaded> {
    Config::load_file(path, registries).map_err(|e| anyhow::anyhow!("invalid config {}: {e}", path.display()))
}

async fn real_main() -> anyhow::Result<()> {
    autohealer::install_crypto();
    let cli = Cli::parse();
    let registries = Registries::builtin();
    match cli.command {
        Command::Version => println!("autohealer {}", env!("CARGO_PKG_VERSION")),
        Command::ConfigReference => print!("{}", config::reference_markdown(&registries)),
        Command::Validate { config } => {
            let l = load(&config, &registries)?;
            let c = &l.config;
            println!("config {} is valid", config.display());
            println!("  cloud-provider: {}  cluster-name: {}", c.cloud_provider, c.cluster_name.as_deref().unwrap_or("-"));
            println!(
                "  dry-run: {}  leader-elect: {}  monitor-interval: {}",
                c.dry_run,
                c.leader_elect,
                humantime::format_duration(c.monitor_interval)
            );
            println!(
                "  check-delay-after-add: {}  rebuild-delay-after-reboot: {}",
                humantime::format_duration(c.check_delay_after_add),
                humantime::format_duration(c.rebuild_delay_after_reboot)
            );
            for (role, checks, on) in
                [("master", &l.checks.master, c.master_monitor_enabled), ("worker", &l.checks.worker, c.worker_monitor_enabled)]
            {
                let list: Vec<String> = checks
                    .iter()
                    .map(|k| format!("{} (unhealthy after {})", k.type_name(), humantime::format_duration(k.unhealthy_duration())))
                    .collect();
                println!("  {role}: {}{}", list.join(", "), if on { "" } else { "  [monitoring disabled]" });
            }
            if l.notify.sinks.is_empty() {
                println!("  notifications: none");
            }
            for s in &l.notify.sinks {
                let events =
                    s.events.as_ref().map_or("all kinds".to_string(), |e| e.iter().map(|k| k.as_str()).collect::<Vec<_>>().join(","));
                println!("  notifications: {} ({}), severity {} and above, {events}", s.name(), s.kind().as_str(), s.min_severity());
            }
            println!("  fencing: {}", if c.fencing.enabled { "on" } else { "off" });
            for line in autohealer::providers::describe_config(&l) {
                println!("  {line}");
            }
            for (var, key) in &l.overridden {
                println!("  {key}: overridden by ${var} (value not shown)");
            }
            for why in &l.ignored_env {
                println!("  ignored: {why}");
            }
        }
        Command::Plan { config, kubeconfig } => {
            let l = load(&config, &registries)?;
            let client = autohealer::kube_client(&l, kubeconfig.as_deref()).await?;
            let metrics = Arc::new(Metrics::new());
            let provider = autohealer::providers::build(&l, &metrics)?;
            let identity = autohealer::identity(&l);
            let rt = autohealer::Runtime { client, provider, metrics, status: Arc::new(Status::default()), identity };
            print!("{}", autohealer::plan(l, rt).await?);
        }
        Command::Run { config, dry_run, kubeconfig, log_format, log_level } => {
            init_logs(log_format, &log_level)?;
            let mut l = load(&config, &registries)?;
            for why in &l.ignored_env {
                tracing::warn!("environment variable ignored: {why}");
            }
            if dry_run {
                l.force_dry_run();
            }
            let client = autohealer::kube_client(&l, kubeconfig.as_deref()).await?;
            let metrics = Arc::new(Metrics::new());
            let provider = autohealer::providers::build(&l, &metrics)?;
            let identity = autohealer::identity(&l);
            let rt = autohealer::Runtime { client, provider, metrics, status: Arc::new(Status::default()), identity };
            let token = CancellationToken::new();
            tokio::spawn(shutdown_signal(token.clone()));
            autohealer::run(l, rt, registries, token).await?;
        }
    }
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    match real_main().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("autohealer: {e:#}");
            ExitCode::FAILURE
        }
    }
}
