//! `ferry-edge`: a stateless SSH/SFTP edge attached to a Ferry control plane.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;

#[derive(Parser)]
#[command(
    name = "ferry-edge",
    version,
    about = "Ferry edge: serves SFTP, gets identity and policy from the control plane"
)]
struct Cli {
    /// gRPC URL of the control plane.
    #[arg(
        long,
        env = "FERRY_CONTROL_PLANE",
        default_value = "http://127.0.0.1:50051"
    )]
    control_plane: String,
    /// Address the SFTP listener binds to.
    #[arg(long, env = "FERRY_SFTP_BIND", default_value = "0.0.0.0:2022")]
    sftp_bind: SocketAddr,
    /// File holding the edge token (overrides FERRY_EDGE_TOKEN).
    #[arg(long, env = "FERRY_EDGE_TOKEN_FILE")]
    edge_token_file: Option<PathBuf>,
    /// Fleet-unique id of this edge (default: hostname plus a random suffix).
    #[arg(long, env = "FERRY_EDGE_ID")]
    edge_id: Option<String>,
    #[command(flatten)]
    edge: ferry_dataplane::EdgeArgs,
}

fn main() -> std::process::ExitCode {
    ferry_dataplane::run_main(run())
}

async fn run() -> anyhow::Result<()> {
    ferry_dataplane::init_logging();
    let cli = Cli::parse();
    let token = match &cli.edge_token_file {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .with_context(|| format!("cannot read edge token file {}", path.display()))?
                .trim()
                .to_string(),
        ),
        None => std::env::var("FERRY_EDGE_TOKEN")
            .ok()
            .filter(|t| !t.is_empty()),
    };
    let (proxy, fs) = cli.edge.settings()?;
    let commands = cli.edge.enabled_commands()?;
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let edge = ferry_dataplane::start_edge(
        ferry_dataplane::EdgeOptions {
            control_plane: cli.control_plane,
            token,
            sftp_bind: cli.sftp_bind,
            edge_id: cli.edge_id,
            proxy,
            fs,
            idle_timeout: cli.edge.idle_timeout(),
            commands,
        },
        async move {
            let _ = stop_rx.wait_for(|v| *v).await;
        },
    )
    .await?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down");
    let _ = stop_tx.send(true);
    let _ = edge.task.await;
    Ok(())
}
