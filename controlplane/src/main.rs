//! `ferry`: the control plane, alone or with an embedded edge.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use ferry_controlplane::{ControlPlaneOptions, start_controlplane};

#[derive(Parser)]
#[command(
    name = "ferry",
    version,
    about = "Ferry SFTP service: control plane (and all-in-one server)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run everything in one process: control plane on SQLite in the data
    /// directory plus one embedded edge serving SFTP.
    Serve {
        #[command(flatten)]
        common: CommonArgs,
        /// Address the embedded edge's SFTP listener binds to.
        #[arg(long, env = "FERRY_SFTP_BIND", default_value = "0.0.0.0:2022")]
        sftp_bind: SocketAddr,
        #[command(flatten)]
        edge: ferry_dataplane::EdgeArgs,
    },
    /// Run the control plane alone; edges (`ferry-edge`) attach over gRPC.
    Controlplane {
        #[command(flatten)]
        common: CommonArgs,
    },
    /// Create or upgrade the database schema and exit. The database is chosen
    /// by FERRY_DATA_PROVIDER__DRIVER (sqlite, postgresql, mysql) and its
    /// FERRY_DATA_PROVIDER__* settings; PostgreSQL and MySQL databases must
    /// already exist.
    Initprovider {
        /// Directory holding the SQLite database; created if missing.
        #[arg(long, env = "FERRY_DATA_DIR", default_value = "data")]
        data_dir: PathBuf,
    },
}

#[derive(Args)]
struct CommonArgs {
    /// Directory holding the SQLite database and generated files; created if missing.
    #[arg(long, env = "FERRY_DATA_DIR", default_value = "data")]
    data_dir: PathBuf,
    /// Address of the REST API (and /healthz).
    #[arg(long, env = "FERRY_HTTP_BIND", default_value = "127.0.0.1:8080")]
    http_bind: SocketAddr,
    /// Address of the gRPC service edges attach to. A non-loopback address
    /// requires an edge token.
    #[arg(long, env = "FERRY_GRPC_BIND", default_value = "127.0.0.1:50051")]
    grpc_bind: SocketAddr,
    /// File holding the token edges must present (overrides FERRY_EDGE_TOKEN).
    #[arg(long, env = "FERRY_EDGE_TOKEN_FILE")]
    edge_token_file: Option<PathBuf>,
    /// Seconds a session lease lives without renewal: how long the sessions of
    /// an edge that died still count toward max_sessions (minimum 3).
    #[arg(long, env = "FERRY_LEASE_TTL", default_value_t = 30)]
    lease_ttl: u64,
}

fn edge_token(file: Option<&PathBuf>) -> anyhow::Result<Option<String>> {
    if let Some(path) = file {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read edge token file {}", path.display()))?;
        let token = text.trim().to_string();
        anyhow::ensure!(
            !token.is_empty(),
            "edge token file {} is empty",
            path.display()
        );
        return Ok(Some(token));
    }
    Ok(std::env::var("FERRY_EDGE_TOKEN")
        .ok()
        .filter(|t| !t.is_empty()))
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler can be installed");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

fn main() -> std::process::ExitCode {
    ferry_dataplane::run_main(run())
}

async fn run() -> anyhow::Result<()> {
    ferry_dataplane::init_logging();
    let cli = Cli::parse();
    let data_provider = ferry_controlplane::provider::DataProviderConfig::from_env()?;
    let (common, sftp_bind) = match cli.command {
        Command::Serve {
            common,
            sftp_bind,
            edge,
        } => (
            common,
            Some((
                sftp_bind,
                edge.settings()?,
                edge.idle_timeout(),
                edge.enabled_commands()?,
            )),
        ),
        Command::Controlplane { common } => (common, None),
        Command::Initprovider { data_dir } => {
            std::fs::create_dir_all(&data_dir)
                .with_context(|| format!("cannot create data directory {}", data_dir.display()))?;
            ferry_controlplane::open_store(&data_provider, &data_dir).await?;
            println!("the database schema is up to date");
            return Ok(());
        }
    };
    let mut token = edge_token(common.edge_token_file.as_ref())?;
    if sftp_bind.is_some() && token.is_none() {
        // The embedded edge and the control plane share a fresh secret.
        token = Some(ferry_controlplane::random_token(32));
    }
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stop = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|v| *v).await;
        }
    };
    let cp = start_controlplane(
        ControlPlaneOptions {
            data_dir: common.data_dir,
            http_bind: common.http_bind,
            grpc_bind: common.grpc_bind,
            edge_token: token.clone(),
            data_provider,
            lease_ttl: std::time::Duration::from_secs(common.lease_ttl),
        },
        stop(),
    )
    .await?;
    let edge = match sftp_bind {
        Some((sftp_bind, (proxy, fs), idle_timeout, commands)) => {
            let grpc = cp.grpc_addr;
            let target = if grpc.ip().is_unspecified() {
                SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), grpc.port())
            } else {
                grpc
            };
            Some(
                ferry_dataplane::start_edge(
                    ferry_dataplane::EdgeOptions {
                        control_plane: format!("http://{target}"),
                        token: token.clone(),
                        sftp_bind,
                        edge_id: None,
                        proxy,
                        fs,
                        idle_timeout,
                        commands,
                    },
                    stop(),
                )
                .await?,
            )
        }
        None => None,
    };
    shutdown_signal().await;
    tracing::info!("shutting down");
    let _ = stop_tx.send(true);
    // Live sessions and streams get a short grace period, then the process
    // exits regardless.
    let grace = std::time::Duration::from_secs(10);
    if let Some(edge) = edge {
        let _ = tokio::time::timeout(grace, edge.task).await;
    }
    match tokio::time::timeout(grace, cp.task).await {
        Ok(joined) => joined??,
        Err(_) => tracing::warn!("graceful shutdown timed out"),
    }
    Ok(())
}
