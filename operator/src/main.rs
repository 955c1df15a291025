//! The `souk-operator` binary: `souk-operator [run]` reconciles Shops; `souk-operator render
//! FILE` prints the objects of a Shop file. Flags have `SOUK_OPERATOR_*` environment fallbacks.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use k8s_openapi::api::coordination::v1::Lease;
use kube::client::ClientBuilder;
use kube::{Api, Client};
use souk_operator::http::Health;
use souk_operator::leader::LeaderElection;
use souk_operator::metrics::Metrics;
use tokio::sync::watch;
use tracing::{error, info};

#[derive(Debug, Parser)]
#[command(
    name = "souk-operator",
    version,
    about = "The Kubernetes operator of Souk"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Reconcile Shops (the default).
    Run,
    /// Print the objects a Shop file turns into, as multi-document YAML.
    Render {
        /// A YAML file holding one Shop.
        file: PathBuf,
    },
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// Where /healthz, /readyz and /metrics are served.
    #[arg(long, env = "SOUK_OPERATOR_HTTP_ADDR", default_value = "0.0.0.0:8080")]
    http_addr: SocketAddr,

    /// Reconcile only the Shops of this namespace (default: every namespace).
    #[arg(long, env = "SOUK_OPERATOR_WATCH_NAMESPACE")]
    watch_namespace: Option<String>,

    /// Take a Lease before reconciling, so several replicas can run.
    #[arg(long, env = "SOUK_OPERATOR_LEADER_ELECT")]
    leader_elect: bool,

    /// Name of the Lease.
    #[arg(
        long,
        env = "SOUK_OPERATOR_LEASE_NAME",
        default_value = "souk-operator"
    )]
    lease_name: String,

    /// Namespace of the Lease (default: the pod's, `POD_NAMESPACE`).
    #[arg(long, env = "SOUK_OPERATOR_LEASE_NAMESPACE")]
    lease_namespace: Option<String>,

    /// The pod's namespace (downward API).
    #[arg(long, env = "POD_NAMESPACE", hide = true)]
    pod_namespace: Option<String>,

    /// This replica's identity in the Lease and in Events (downward API `metadata.name`).
    #[arg(long, env = "POD_NAME")]
    pod_name: Option<String>,

    /// Log filter.
    #[arg(long = "log", env = "SOUK_LOG", default_value = "info")]
    log: String,

    /// Log format: `json` or `pretty`.
    #[arg(long, env = "SOUK_LOG_FORMAT", default_value = "pretty", value_parser = ["json", "pretty"])]
    log_format: String,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Render { file }) => {
            let yaml = std::fs::read_to_string(&file)
                .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
            let out = souk_operator::render::render(&yaml, &mut rand_core::OsRng)
                .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
            std::io::stdout().lock().write_all(out.as_bytes())?;
            Ok(())
        }
        Some(Command::Run) | None => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?
            .block_on(run(cli.run)),
    }
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    init_tracing(&args)?;
    let metrics = Arc::new(Metrics::default());
    let health = Arc::new(Health::new(metrics.clone()));
    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|stop| *stop).await;
        }
    };

    let listener = tokio::net::TcpListener::bind(args.http_addr)
        .await
        .map_err(|e| anyhow::anyhow!("SOUK_OPERATOR_HTTP_ADDR {}: {e}", args.http_addr))?;
    let bound = listener.local_addr()?;
    info!(addr = %bound, "serving /healthz, /readyz and /metrics");
    let server = tokio::spawn(souk_operator::http::serve(
        listener,
        health.clone(),
        stopped(),
    ));
    tokio::spawn(async move {
        shutdown_signal().await;
        info!("shutting down");
        let _ = stop_tx.send(true);
    });

    let config = kube::Config::infer().await.map_err(|e| {
        anyhow::anyhow!("cannot configure a Kubernetes client (in-cluster or KUBECONFIG): {e}")
    })?;
    let client = Client::try_from(config.clone())?;
    let version = client
        .apiserver_version()
        .await
        .map_err(|e| anyhow::anyhow!("cannot reach the Kubernetes API server: {e}"))?;
    info!(version = %version.git_version, "connected to the API server");
    // Ready once connected: a standby replica is ready too (it is healthy and waits for the Lease).
    health.set_ready(true);

    let result = if args.leader_elect {
        let namespace = args
            .lease_namespace
            .or(args.pod_namespace)
            .unwrap_or_else(|| client.default_namespace().to_owned());
        let identity = args
            .pod_name
            .clone()
            .or_else(|| std::env::var("HOSTNAME").ok())
            .unwrap_or_else(|| format!("souk-operator-{}", std::process::id()));
        let election = LeaderElection::new(
            Api::<Lease>::namespaced(client.clone(), &namespace),
            args.lease_name,
            identity,
        );
        // The controller writes through the election's fence: after a pause (a frozen VM,
        // SIGSTOP) past the renew deadline, a write it had already decided on is refused
        // rather than sent, whichever task gets to run first.
        let fenced = ClientBuilder::try_from(config)?
            .with_layer(&election.fence())
            .build();
        tokio::select! {
            () = election.acquire() => {}
            () = stopped() => return finish(server).await,
        }
        let result = tokio::select! {
            biased;
            () = election.keep() => Err(anyhow::anyhow!("lost the leader Lease; exiting so a new leader takes over")),
            result = souk_operator::controller::run(fenced, args.watch_namespace.as_deref(), metrics, args.pod_name, stopped()) => result,
        };
        election.release().await;
        result
    } else {
        souk_operator::controller::run(
            client,
            args.watch_namespace.as_deref(),
            metrics,
            args.pod_name,
            stopped(),
        )
        .await
    };
    if let Err(error) = &result {
        error!("{error:#}");
    }
    result?;
    finish(server).await
}

async fn finish(server: tokio::task::JoinHandle<std::io::Result<()>>) -> anyhow::Result<()> {
    server.await??;
    Ok(())
}

fn init_tracing(args: &RunArgs) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(&args.log)
        .map_err(|e| anyhow::anyhow!("SOUK_LOG: invalid filter {:?}: {e}", args.log))?;
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    if args.log_format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
