//! Ferry's edge: the SSH/SFTP server clients talk to. It keeps no durable
//! state: host keys and policy come from the control plane over gRPC
//! ([`control`]), file bytes go to storage through the one path resolver
//! ([`vfs`]).
#![forbid(unsafe_code)]

pub mod bandwidth;
pub mod commands;
pub mod control;
pub mod policy;
pub mod proxy;
pub mod quota;
pub mod registry;
pub mod scp;
pub mod sftp;
pub mod ssh;
pub mod syscmd;
pub mod vfs;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;

/// Settings of one edge.
#[derive(Debug, Clone)]
pub struct EdgeOptions {
    /// gRPC URL of the control plane, e.g. `http://127.0.0.1:50051`.
    pub control_plane: String,
    /// Token presented to the control plane.
    pub token: Option<String>,
    pub sftp_bind: SocketAddr,
    /// Fleet-unique id; random when not given.
    pub edge_id: Option<String>,
    /// PROXY protocol policy of the SFTP listener.
    pub proxy: proxy::ProxyPolicy,
    /// How uploads land, setstat and umask (`common.*`).
    pub fs: sftp::FsSettings,
    /// Sessions without activity this long are closed (None: never).
    pub idle_timeout: Option<std::time::Duration>,
    /// SSH commands that run (`sftpd.enabled_ssh_commands`).
    pub commands: commands::EnabledCommands,
}

/// Edge settings shared by `ferry-edge` and `ferry serve`, with SFTPGo's
/// `common` names as environment variables.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct EdgeArgs {
    #[command(flatten)]
    pub proxy: proxy::ProxyArgs,
    /// How uploads land: 0 written in place, 1 atomic (temporary name, renamed
    /// on success, removed when interrupted), 2 atomic, an interrupted upload
    /// is kept under the target name for resume.
    #[arg(long, env = "FERRY_COMMON__UPLOAD_MODE", default_value_t = 0)]
    pub upload_mode: u8,
    /// What SETSTAT does with mode, owner and times: 0 applies them, 1
    /// accepts and ignores them (truncation still applies), 2 ignores them
    /// only where the storage cannot do them.
    #[arg(long, env = "FERRY_COMMON__SETSTAT_MODE", default_value_t = 0)]
    pub setstat_mode: u8,
    /// Octal umask for new files and directories (e.g. 022); empty keeps the
    /// process umask.
    #[arg(long, env = "FERRY_COMMON__UMASK", default_value = "")]
    pub umask: String,
    /// Minutes without requests or transfers after which a session is
    /// closed (SSH keepalives do not count); 0 disables.
    #[arg(long, env = "FERRY_COMMON__IDLE_TIMEOUT", default_value_t = 15)]
    pub idle_timeout: u64,
    /// SSH commands that run, comma separated, `*` for all (md5sum, sha1sum,
    /// sha256sum, sha384sum, sha512sum, cd, pwd, scp, sftpgo-copy,
    /// sftpgo-remove).
    #[arg(long, env = "FERRY_SFTPD__ENABLED_SSH_COMMANDS", default_value = commands::DEFAULT_ENABLED)]
    pub enabled_ssh_commands: String,
}

impl EdgeArgs {
    /// The SSH commands that run.
    pub fn enabled_commands(&self) -> anyhow::Result<commands::EnabledCommands> {
        commands::EnabledCommands::from_setting(&self.enabled_ssh_commands)
            .map_err(|e| anyhow::anyhow!(e))
    }

    /// The idle timeout (None when 0).
    pub fn idle_timeout(&self) -> Option<std::time::Duration> {
        (self.idle_timeout > 0).then(|| std::time::Duration::from_secs(self.idle_timeout * 60))
    }

    /// Validated settings: (PROXY policy, storage settings).
    pub fn settings(&self) -> anyhow::Result<(proxy::ProxyPolicy, sftp::FsSettings)> {
        let proxy = self.proxy.policy().map_err(|e| anyhow::anyhow!(e))?;
        let upload_mode =
            sftp::UploadMode::from_setting(self.upload_mode).map_err(|e| anyhow::anyhow!(e))?;
        let setstat_mode =
            sftp::SetstatMode::from_setting(self.setstat_mode).map_err(|e| anyhow::anyhow!(e))?;
        let umask = match self.umask.trim() {
            "" => None,
            text => Some(sftp::parse_umask(text).map_err(|e| anyhow::anyhow!(e))?),
        };
        Ok((
            proxy,
            sftp::FsSettings {
                upload_mode,
                setstat_mode,
                umask,
            },
        ))
    }
}

/// A running edge.
pub struct RunningEdge {
    pub sftp_addr: SocketAddr,
    pub edge_id: String,
    pub task: tokio::task::JoinHandle<()>,
}

/// Sets up JSON-lines logging on stderr (`FERRY_LOG` or `RUST_LOG` filter,
/// default `info`).
pub fn init_logging() {
    let filter = std::env::var("FERRY_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| "info".into());
    let _ = tracing_subscriber::fmt()
        .json()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .flatten_event(true)
        .with_current_span(false)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Runs a binary's async main on a multi-threaded runtime; a failure becomes
/// one readable line on stderr (with its causes, not a Debug dump) and exit
/// status 1.
pub fn run_main(
    main: impl std::future::Future<Output = anyhow::Result<()>>,
) -> std::process::ExitCode {
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(main) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "fatal");
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn random_edge_id() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "edge".into());
    format!("{host}-{:08x}", rand::random::<u32>())
}

/// Binds the SFTP listener, attaches to the control plane and serves until
/// `shutdown` resolves.
pub async fn start_edge(
    opts: EdgeOptions,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<RunningEdge> {
    let edge_id = opts.edge_id.clone().unwrap_or_else(random_edge_id);
    let listener = TcpListener::bind(opts.sftp_bind)
        .await
        .with_context(|| format!("cannot bind SFTP to {}", opts.sftp_bind))?;
    let sftp_addr = listener.local_addr()?;
    let registry = Arc::new(registry::Registry::default());
    let control =
        control::ControlClient::new(&opts.control_plane, opts.token.as_deref(), edge_id.clone())?;
    let config = control::spawn_attach(control.clone(), registry.clone(), sftp_addr);
    if let Some(timeout) = opts.idle_timeout {
        let registry = registry.clone();
        tokio::spawn(async move {
            let every = (timeout / 4).min(std::time::Duration::from_secs(30));
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                registry.disconnect_idle(timeout);
            }
        });
    }
    let ctx = Arc::new(ssh::EdgeContext::new(
        control,
        registry,
        config,
        opts.fs,
        opts.commands,
    ));
    tracing::info!(edge_id, %sftp_addr, control_plane = opts.control_plane, "edge listening");
    let task = tokio::spawn(ssh::accept_loop(
        listener,
        ctx,
        Arc::new(opts.proxy),
        shutdown,
    ));
    Ok(RunningEdge {
        sftp_addr,
        edge_id,
        task,
    })
}
