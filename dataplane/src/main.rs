//! `ferry-edge`: a stateless SSH/SFTP edge attached to a Ferry control plane.
// The edge token file is the operator's, not user storage.
#![allow(clippy::disallowed_methods)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Parser, Subcommand};
use ferry_dataplane::settings::EdgeSettings;

#[derive(Parser)]
#[command(
    name = "ferry-edge",
    version,
    about = "Ferry edge: serves SFTP, gets identity and policy from the control plane"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Configuration file (.toml, .json, .yaml, .hcl or .env); every key can
    /// also be set as FERRY_<SECTION>__<KEY>. Flags win over both.
    #[arg(long, env = "FERRY_CONFIG_FILE", global = true)]
    config_file: Option<PathBuf>,
    /// gRPC URL of the control plane (edge.control_plane).
    #[arg(long, env = "FERRY_CONTROL_PLANE")]
    control_plane: Option<String>,
    /// Address the SFTP listener binds to (replaces sftpd.bindings; port 0:
    /// any free port, see --addr-file).
    #[arg(long, env = "FERRY_SFTP_BIND")]
    sftp_bind: Option<SocketAddr>,
    /// File holding the edge token (edge.edge_token_file; else FERRY_EDGE_TOKEN).
    #[arg(long, env = "FERRY_EDGE_TOKEN_FILE")]
    edge_token_file: Option<PathBuf>,
    /// Fleet-unique id of this edge (edge.edge_id; default: hostname plus a
    /// random suffix).
    #[arg(long, env = "FERRY_EDGE_ID")]
    edge_id: Option<String>,
    /// Address of the /healthz, /readyz and /metrics listener
    /// (telemetry.bind_address and bind_port; default 127.0.0.1:10000; port
    /// 0: any free port, while the setting's port 0 turns it off).
    #[arg(long, env = "FERRY_TELEMETRY_BIND")]
    telemetry_bind: Option<SocketAddr>,
    /// File written once every listener is bound, one `KIND ADDRESS` line
    /// per listener (`sftp 127.0.0.1:40123`, `telemetry …`): how to learn
    /// the ports of binds with port 0.
    #[arg(long, env = "FERRY_ADDR_FILE", global = true)]
    addr_file: Option<PathBuf>,
    /// Seconds live transfers get to finish after SIGTERM (edge.grace_time,
    /// default 30).
    #[arg(long, env = "FERRY_GRACE_TIME")]
    grace_time: Option<u64>,
    #[command(flatten)]
    edge: ferry_dataplane::EdgeArgs,
    #[command(flatten)]
    log: ferry_dataplane::logging::LogArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Print a complete commented configuration file (TOML) with the defaults.
    ConfigExample,
    /// Share one directory with one user, without a control plane.
    Portable(ferry_dataplane::portable::PortableArgs),
}

/// `ferry-edge portable`: runs until SIGTERM or Ctrl-C.
async fn portable(
    args: ferry_dataplane::portable::PortableArgs,
    settings: &EdgeSettings,
    addr_file: Option<&Path>,
) -> anyhow::Result<()> {
    let runtime = settings.common.runtime(&settings.sftpd)?;
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let directory = args.directory.clone();
    let p = ferry_dataplane::portable::start(args, runtime, async move {
        let _ = stop_rx.wait_for(|v| *v).await;
    })
    .await?;
    if let Some(path) = addr_file {
        p.bound_addrs().write(path)?;
    }
    println!(
        "Sharing {} on sftp://{}@{} (host key {})",
        directory.display(),
        p.username,
        p.edge.sftp_addr,
        p.host_key_fingerprint
    );
    if let Some(pw) = &p.generated_password {
        println!("username: {}  password: {pw}", p.username);
    }
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    p.edge
        .drain(
            std::time::Duration::from_secs(settings.edge.grace_time),
            move || {
                let _ = stop_tx.send(true);
            },
        )
        .await;
    Ok(())
}

fn main() -> std::process::ExitCode {
    // rsync and git start through this binary: before any thread exists.
    if let Some(status) = ferry_dataplane::sandbox::launch_if_requested() {
        return status;
    }
    ferry_dataplane::run_main(run())
}

async fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Some(Command::ConfigExample) = cli.command {
        print!("{}", ferry_dataplane::config::example::<EdgeSettings>());
        return Ok(());
    }
    ferry_dataplane::init_logging(&cli.log)?;
    let (before, after) = ferry_dataplane::raise_fd_limit();
    tracing::info!(before, after, "open files limit (RLIMIT_NOFILE soft)");
    let mut settings: EdgeSettings =
        ferry_dataplane::config::load_from_env(cli.config_file.as_ref())?;
    cli.edge.apply(&mut settings.common, &mut settings.sftpd);
    if let Some(v) = cli.grace_time {
        settings.edge.grace_time = v;
    }
    if let Some(path) = &cli.addr_file {
        ferry_dataplane::listeners::remove_stale(path)?;
    }
    if let Some(Command::Portable(args)) = cli.command {
        return portable(args, &settings, cli.addr_file.as_deref()).await;
    }
    if let Some(v) = cli.control_plane {
        settings.edge.control_plane = v;
    }
    if let Some(v) = cli.edge_token_file {
        settings.edge.edge_token_file = v;
    }
    if let Some(v) = cli.edge_id {
        settings.edge.edge_id = v;
    }
    let telemetry_bind = match cli.telemetry_bind {
        Some(addr) => Some(addr),
        None => settings.telemetry.socket_addr()?,
    };
    let token_file = &settings.edge.edge_token_file;
    let token = if token_file.as_os_str().is_empty() {
        std::env::var("FERRY_EDGE_TOKEN")
            .ok()
            .filter(|t| !t.is_empty())
    } else {
        Some(
            std::fs::read_to_string(token_file)
                .with_context(|| format!("cannot read edge token file {}", token_file.display()))?
                .trim()
                .to_string(),
        )
    };
    let sftp_binds = match cli.sftp_bind {
        Some(addr) => vec![addr],
        None => settings.sftpd.listen_addrs()?,
    };
    let runtime = settings.common.runtime(&settings.sftpd)?;
    if settings.telemetry.per_user_metrics {
        ferry_dataplane::metrics::enable_per_user(settings.telemetry.per_user_metrics_limit);
    }
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let edge = ferry_dataplane::start_edge(
        ferry_dataplane::EdgeOptions {
            control_plane: settings.edge.control_plane,
            token,
            sftp_binds,
            edge_id: Some(settings.edge.edge_id).filter(|s| !s.is_empty()),
            runtime,
            telemetry_bind,
            enable_profiler: settings.telemetry.enable_profiler,
        },
        async move {
            let _ = stop_rx.wait_for(|v| *v).await;
        },
    )
    .await?;
    if let Some(path) = &cli.addr_file {
        edge.bound_addrs().write(path)?;
    }
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!(grace_s = settings.edge.grace_time, "SIGTERM: draining");
    edge.drain(
        std::time::Duration::from_secs(settings.edge.grace_time),
        move || {
            let _ = stop_tx.send(true);
        },
    )
    .await;
    tracing::info!("drained, exiting");
    Ok(())
}
