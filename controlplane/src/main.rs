//! `ferry`: the control plane, alone or with an embedded edge.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use ferry_controlplane::config::Settings;
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
    /// Configuration file (.toml, .json, .yaml, .hcl or .env); every key can
    /// also be set as FERRY_<SECTION>__<KEY>. Flags win over both.
    #[arg(long, env = "FERRY_CONFIG_FILE", global = true)]
    config_file: Option<PathBuf>,
    #[command(flatten)]
    log: ferry_dataplane::logging::LogArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Run everything in one process: control plane on SQLite in the data
    /// directory plus one embedded edge serving SFTP.
    Serve {
        #[command(flatten)]
        common: CommonArgs,
        /// Address the embedded edge's SFTP listener binds to (replaces
        /// sftpd.bindings; port 0: any free port, see --addr-file).
        #[arg(long, env = "FERRY_SFTP_BIND")]
        sftp_bind: Option<SocketAddr>,
        /// Seconds live transfers get to finish after SIGTERM before their
        /// sessions are closed.
        #[arg(long, env = "FERRY_GRACE_TIME", default_value_t = 30)]
        grace_time: u64,
        #[command(flatten)]
        edge: ferry_dataplane::EdgeArgs,
    },
    /// Run the control plane alone; edges (`ferry-edge`) attach over gRPC.
    Controlplane {
        #[command(flatten)]
        common: CommonArgs,
    },
    /// Create or upgrade the database schema and exit. The database is chosen
    /// by data_provider.driver (sqlite, postgresql, mysql) and the other
    /// data_provider settings; PostgreSQL and MySQL databases must already
    /// exist.
    Initprovider {
        /// Directory holding the SQLite database; created if missing.
        #[arg(long, env = "FERRY_DATA_DIR", default_value = "data")]
        data_dir: PathBuf,
    },
    /// Print a complete commented configuration file (TOML) with the defaults.
    ConfigExample,
    /// Write a backup (SFTPGo's format: users, folders, admins, API keys with
    /// their hashes) of the configured database, to stdout or a file.
    Dumpdata {
        /// Directory holding the SQLite database.
        #[arg(long, env = "FERRY_DATA_DIR", default_value = "data")]
        data_dir: PathBuf,
        /// File to write (mode 0600, replaced atomically); stdout when absent.
        #[arg(long, short)]
        output: Option<PathBuf>,
        /// Indent the JSON.
        #[arg(long)]
        indent: bool,
    },
    /// Create Ferry users from Linux accounts (passwd + shadow): same home,
    /// uid and gid; password hashes Ferry can verify are kept,
    /// ~/.ssh/authorized_keys imported. Existing users are left alone.
    ImportSystemUsers {
        /// Directory holding the SQLite database.
        #[arg(long, env = "FERRY_DATA_DIR", default_value = "data")]
        data_dir: PathBuf,
        #[arg(long, default_value = "/etc/passwd")]
        passwd: PathBuf,
        #[arg(long, default_value = "/etc/shadow")]
        shadow: PathBuf,
        /// Lowest uid imported (lower ones are system accounts).
        #[arg(long, default_value_t = 1000)]
        min_uid: u32,
        /// Highest uid imported (nobody is 65534).
        #[arg(long, default_value_t = 60000)]
        max_uid: u32,
        /// Print what would be imported; write nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Restore a backup (Ferry's, SFTPGo v2 or 1.x) into the configured
    /// database: everything or nothing. Run it against a stopped control
    /// plane, or use POST /api/v2/loaddata on a running one.
    Loaddata {
        /// Directory holding the SQLite database.
        #[arg(long, env = "FERRY_DATA_DIR", default_value = "data")]
        data_dir: PathBuf,
        /// The backup file.
        file: PathBuf,
        /// 0: add new objects and replace existing ones; 1: add new ones only.
        #[arg(long, default_value = "1")]
        mode: String,
    },
}

#[derive(Args)]
struct CommonArgs {
    /// Directory holding the SQLite database and generated files; created if missing.
    #[arg(long, env = "FERRY_DATA_DIR", default_value = "data")]
    data_dir: PathBuf,
    /// Address of the REST API and /healthz (replaces httpd.bindings; port
    /// 0: any free port, see --addr-file).
    #[arg(long, env = "FERRY_HTTP_BIND")]
    http_bind: Option<SocketAddr>,
    /// Address of the gRPC service edges attach to (grpc.address and
    /// grpc.port; port 0: any free port, which `ferry serve`'s edge is
    /// given). Every call needs the edge token.
    #[arg(long, env = "FERRY_GRPC_BIND")]
    grpc_bind: Option<SocketAddr>,
    /// File holding the token edges must present (grpc.edge_token_file;
    /// else FERRY_EDGE_TOKEN; with neither, DATA_DIR/edge-token is
    /// generated, mode 0600).
    #[arg(long, env = "FERRY_EDGE_TOKEN_FILE")]
    edge_token_file: Option<PathBuf>,
    /// Seconds a session lease lives without renewal (grpc.lease_ttl).
    #[arg(long, env = "FERRY_LEASE_TTL")]
    lease_ttl: Option<u64>,
    /// File written once every listener is bound, one `KIND ADDRESS` line
    /// per listener (`http 127.0.0.1:40123`, `grpc …`, `sftp …`): how to
    /// learn the ports of binds with port 0.
    #[arg(long, env = "FERRY_ADDR_FILE")]
    addr_file: Option<PathBuf>,
}

impl CommonArgs {
    fn apply(&self, s: &mut Settings) {
        if let Some(f) = &self.edge_token_file {
            s.grpc.edge_token_file = f.clone();
        }
        if let Some(ttl) = self.lease_ttl {
            s.grpc.lease_ttl = ttl;
        }
    }
}

fn edge_token(file: &std::path::Path) -> anyhow::Result<Option<String>> {
    if !file.as_os_str().is_empty() {
        let path = file;
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

/// Keeps homes and folders away from Ferry's own files (data, backups and
/// configuration directories, key and database files).
fn protect_server_paths(
    settings: &Settings,
    data_dir: &std::path::Path,
    config_file: Option<&PathBuf>,
) -> anyhow::Result<()> {
    settings
        .server_paths(data_dir, config_file.map(PathBuf::as_path))
        .install();
    let base = &settings.data_provider.users_base_dir;
    if !base.is_empty() {
        ferry_controlplane::server_paths::check_inside("data_provider.users_base_dir", base)
            .map_err(anyhow::Error::msg)?;
    }
    Ok(())
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
    // rsync and git start through this binary: before any thread exists.
    if let Some(status) = ferry_dataplane::sandbox::launch_if_requested() {
        return status;
    }
    ferry_dataplane::run_main(run())
}

async fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Command::ConfigExample = cli.command {
        print!("{}", ferry_dataplane::config::example::<Settings>());
        return Ok(());
    }
    // One-shot commands print their result; their logs are warnings only.
    let one_shot = !matches!(
        cli.command,
        Command::Serve { .. } | Command::Controlplane { .. }
    );
    ferry_dataplane::init_logging_at(&cli.log, if one_shot { "warn" } else { "info" })?;
    let (before, after) = ferry_dataplane::raise_fd_limit();
    tracing::info!(before, after, "open files limit (RLIMIT_NOFILE soft)");
    let mut settings: Settings = ferry_dataplane::config::load_from_env(cli.config_file.as_ref())?;
    let mut grace_time = 0;
    let (common, edge) = match cli.command {
        Command::Serve {
            common,
            sftp_bind,
            grace_time: grace,
            edge,
        } => {
            grace_time = grace;
            edge.apply(&mut settings.common, &mut settings.sftpd);
            let binds = match sftp_bind {
                Some(addr) => vec![addr],
                None => settings.sftpd.listen_addrs()?,
            };
            let runtime = settings.common.runtime(&settings.sftpd)?;
            (common, Some((binds, runtime)))
        }
        Command::Controlplane { common } => (common, None),
        Command::Dumpdata {
            data_dir,
            output,
            indent,
        } => {
            let store = ferry_controlplane::open_store(&settings.data_provider, &data_dir).await?;
            let doc = ferry_controlplane::backup::render(&store.dump().await?);
            let mut text = if indent {
                serde_json::to_vec_pretty(&doc)?
            } else {
                serde_json::to_vec(&doc)?
            };
            text.push(b'\n');
            match output {
                None => {
                    use std::io::Write;
                    std::io::stdout().write_all(&text)?;
                }
                Some(path) => {
                    let dir = match path.parent() {
                        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
                        _ => PathBuf::from("."),
                    };
                    let name = path
                        .file_name()
                        .and_then(|n| n.to_str())
                        .context("--output must name a file")?;
                    ferry_controlplane::backup::write_file(&dir, name, &text)
                        .map_err(anyhow::Error::msg)?;
                    eprintln!("backup written to {}", path.display());
                }
            }
            return Ok(());
        }
        Command::ImportSystemUsers {
            data_dir,
            passwd,
            shadow,
            min_uid,
            max_uid,
            dry_run,
        } => {
            anyhow::ensure!(min_uid <= max_uid, "--min-uid is above --max-uid");
            protect_server_paths(&settings, &data_dir, cli.config_file.as_ref())?;
            let scan =
                ferry_controlplane::sysusers::scan(&ferry_controlplane::sysusers::ImportOptions {
                    passwd,
                    shadow,
                    min_uid,
                    max_uid,
                })
                .map_err(anyhow::Error::msg)?;
            let verb = if dry_run { "would import" } else { "import" };
            for c in &scan.candidates {
                println!(
                    "{verb} {} (uid {}, gid {}, home {}): {}",
                    c.username,
                    c.uid,
                    c.gid,
                    c.home,
                    c.notes.join("; ")
                );
            }
            for l in &scan.left_out {
                println!("left out {l}");
            }
            println!(
                "{} account(s) outside uid {min_uid}-{max_uid} skipped as system accounts",
                scan.system_accounts
            );
            if dry_run {
                println!("dry run: nothing written");
                return Ok(());
            }
            let doc = serde_json::json!({
                "users": scan.candidates.iter().map(|c| c.to_json()).collect::<Vec<_>>(),
            });
            let prepared = ferry_controlplane::backup::prepare(&doc)
                .await
                .map_err(|e| anyhow::anyhow!("{e}; nothing was imported"))?;
            std::fs::create_dir_all(&data_dir)
                .with_context(|| format!("cannot create data directory {}", data_dir.display()))?;
            let store = ferry_controlplane::open_store(&settings.data_provider, &data_dir).await?;
            let report = store
                .restore(prepared.plan, true)
                .await
                .map_err(|e| anyhow::anyhow!("{e}; nothing was imported"))?;
            println!(
                "{} user(s) imported, {} already existed and were left alone",
                report.added, report.skipped
            );
            return Ok(());
        }
        Command::Loaddata {
            data_dir,
            file,
            mode,
        } => {
            let mode =
                ferry_controlplane::backup::Mode::parse(Some(&mode)).map_err(anyhow::Error::msg)?;
            protect_server_paths(&settings, &data_dir, cli.config_file.as_ref())?;
            anyhow::ensure!(
                mode != ferry_controlplane::backup::Mode::AddUpdateDisconnect,
                "mode 2 disconnects live sessions: use POST /api/v2/loaddata?mode=2 on the running control plane"
            );
            let text =
                std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
            let doc: serde_json::Value = serde_json::from_slice(&text)
                .with_context(|| format!("{} is not valid JSON", file.display()))?;
            std::fs::create_dir_all(&data_dir)
                .with_context(|| format!("cannot create data directory {}", data_dir.display()))?;
            // Plain secrets in the backup are sealed as the server would.
            ferry_controlplane::confidential::install(ferry_controlplane::secrets::key_ring(
                settings.kms.secrets.master_key()?,
                &data_dir,
            )?);
            let prepared = ferry_controlplane::backup::prepare(&doc)
                .await
                .map_err(|e| anyhow::anyhow!("{}: {e}; nothing was restored", file.display()))?;
            let store = ferry_controlplane::open_store(&settings.data_provider, &data_dir).await?;
            let report = store
                .restore(
                    prepared.plan,
                    mode == ferry_controlplane::backup::Mode::AddOnly,
                )
                .await
                .map_err(|e| anyhow::anyhow!("{}: {e}; nothing was restored", file.display()))?;
            for n in &prepared.notes {
                eprintln!("note: {n}");
            }
            println!(
                "restored {}: {} added, {} updated, {} skipped",
                file.display(),
                report.added,
                report.updated,
                report.skipped
            );
            return Ok(());
        }
        Command::Initprovider { data_dir } => {
            std::fs::create_dir_all(&data_dir)
                .with_context(|| format!("cannot create data directory {}", data_dir.display()))?;
            ferry_controlplane::open_store(&settings.data_provider, &data_dir).await?;
            println!("the database schema is up to date");
            return Ok(());
        }
        Command::ConfigExample => unreachable!("handled above"),
    };
    common.apply(&mut settings);
    if let Some(path) = &common.addr_file {
        ferry_dataplane::listeners::remove_stale(path)?;
    }
    protect_server_paths(&settings, &common.data_dir, cli.config_file.as_ref())?;
    // No unauthenticated mode: without a configured token, one is generated
    // into the data directory (and shared with the embedded edge).
    let token = match edge_token(&settings.grpc.edge_token_file)? {
        Some(t) => t,
        None => ferry_controlplane::generated_edge_token(&common.data_dir)?,
    };
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    // The embedded edge drains first; the control plane stays up meanwhile
    // (uploads still reserve quota).
    let (edge_stop_tx, edge_stop_rx) = tokio::sync::watch::channel(false);
    let stop = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|v| *v).await;
        }
    };
    let cp = start_controlplane(
        ControlPlaneOptions {
            data_dir: common.data_dir,
            // Flags may use port 0 (any free port); the file may not.
            http_bind: common.http_bind.map_or_else(|| settings.http_addr(), Ok)?,
            grpc_bind: common.grpc_bind.map_or_else(|| settings.grpc_addr(), Ok)?,
            edge_token: token.clone(),
            data_provider: settings.data_provider.clone(),
            lease_ttl: std::time::Duration::from_secs(settings.grpc.lease_ttl),
            sftpd: settings.sftpd.clone(),
            defender: settings.common.defender.clone(),
            post_connect_hook: settings.common.post_connect_hook.clone(),
            server_version: settings.common.server_version.clone(),
            rest: settings.rest()?,
            master_key: settings.kms.secrets.master_key()?,
            http: settings.http.clone(),
        },
        stop(),
    )
    .await?;
    let edge = match edge {
        Some((sftp_binds, runtime)) => {
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
                        token: Some(token.clone()),
                        sftp_binds,
                        edge_id: None,
                        runtime,
                        // The control plane's /metrics covers this process.
                        telemetry_bind: None,
                        enable_profiler: false,
                    },
                    {
                        let mut rx = edge_stop_rx.clone();
                        async move {
                            let _ = rx.wait_for(|v| *v).await;
                        }
                    },
                )
                .await?,
            )
        }
        None => None,
    };
    if let Some(path) = &common.addr_file {
        let mut addrs = cp.bound_addrs();
        if let Some(edge) = &edge {
            addrs.extend(edge.bound_addrs());
        }
        addrs.write(path)?;
    }
    shutdown_signal().await;
    if let Some(edge) = edge {
        tracing::info!(grace_s = grace_time, "shutting down: draining the edge");
        edge.drain(std::time::Duration::from_secs(grace_time), move || {
            let _ = edge_stop_tx.send(true);
        })
        .await;
    }
    tracing::info!("shutting down");
    let _ = stop_tx.send(true);
    // Streams get a short grace period, then the process exits regardless.
    let grace = std::time::Duration::from_secs(10);
    match tokio::time::timeout(grace, cp.task).await {
        Ok(joined) => joined??,
        Err(_) => tracing::warn!("graceful shutdown timed out"),
    }
    Ok(())
}
