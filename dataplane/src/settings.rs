//! Settings sections with SFTPGo's names that edges use (`common`, `sftpd`)
//! and the `edge` section of `ferry-edge`. `ferry` (the control plane) reads
//! the same `common` and `sftpd` sections: the embedded edge of `ferry serve`
//! uses the edge parts, the control plane the authentication parts.

use std::path::PathBuf;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{commands, proxy};

/// `common`: settings every protocol shares.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct CommonConfig {
    /// Minutes without SFTP requests or transfers after which a session is
    /// closed (SSH keepalives do not count); 0 disables.
    pub idle_timeout: u64,
    /// How uploads land: 0 written in place; 1 atomic (temporary name,
    /// renamed on success, removed when interrupted); 2 atomic, and an
    /// interrupted upload is kept under the target name for resume.
    pub upload_mode: u8,
    /// What SETSTAT does with mode, owner and times: 0 applies them; 1
    /// accepts and ignores them (truncation still applies); 2 ignores them
    /// only where the storage cannot do them.
    pub setstat_mode: u8,
    /// Octal umask for new files and directories (e.g. "022"); empty keeps
    /// the process umask.
    pub umask: String,
    /// PROXY protocol on the SFTP listeners: 0 off; 1 use headers from
    /// proxy_allowed upstreams; 2 require a header from an allowed upstream.
    pub proxy_protocol: u8,
    /// Upstreams (IPs or CIDRs) whose PROXY headers are trusted.
    pub proxy_allowed: Vec<String>,
    /// Sources (IPs or CIDRs) that may connect without a header when
    /// proxy_protocol is 2, such as load-balancer health checks.
    pub proxy_skipped: Vec<String>,
    /// Runs when a client connects, before the SSH handshake: an absolute
    /// program path or an http:// URL; a refusal closes the connection. Run
    /// by the control plane for every edge.
    pub post_connect_hook: String,
    /// Bans client addresses that fail to log in too often (read by the
    /// control plane; bans reach every edge).
    pub defender: DefenderConfig,
    /// Connections one edge serves at once; 0: no limit.
    pub max_total_connections: u32,
    /// The software part of the SSH identification string clients see
    /// (`SSH-2.0-<server_version>`); empty: `Ferry_<version>`. Read by the
    /// control plane.
    pub server_version: String,
    /// Connections one edge serves at once from one client address
    /// (default 20, as SFTPGo); 0: no limit.
    pub max_per_host_connections: u32,
}

/// `common.defender`: failed logins scored per client address; an address
/// whose score within `observation_time` reaches `threshold` is banned on
/// every edge for `ban_time`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct DefenderConfig {
    /// Turns the defender on.
    pub enabled: bool,
    /// Where scores live: "memory" (in the control plane).
    pub driver: String,
    /// Minutes a ban lasts.
    pub ban_time: u64,
    /// Percent by which the ban time grows each time the same address is
    /// banned again.
    pub ban_time_increment: u64,
    /// Score at which an address is banned.
    pub threshold: u32,
    /// Score of a login attempt for a user that does not exist.
    pub score_invalid: u32,
    /// Score of a failed login of an existing user (public keys count once
    /// per connection).
    pub score_valid: u32,
    /// Score of a login refused because a limit (max_sessions) was reached.
    pub score_limit_exceeded: u32,
    /// Score of a connection that ended without trying to log in (port
    /// scanners, `ssh-keyscan`); 0 (the default) ignores them.
    pub score_no_auth: u32,
    /// Minutes over which scores add up.
    pub observation_time: u64,
    /// Addresses tracked before old entries are dropped.
    pub entries_soft_limit: usize,
    /// Addresses tracked at most.
    pub entries_hard_limit: usize,
}

impl Default for DefenderConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            driver: "memory".into(),
            ban_time: 30,
            ban_time_increment: 50,
            threshold: 15,
            score_invalid: 2,
            score_valid: 1,
            score_limit_exceeded: 3,
            score_no_auth: 0,
            observation_time: 30,
            entries_soft_limit: 100,
            entries_hard_limit: 150,
        }
    }
}

impl Default for CommonConfig {
    fn default() -> Self {
        Self {
            idle_timeout: 15,
            max_total_connections: 0,
            max_per_host_connections: 20,
            server_version: String::new(),
            upload_mode: 0,
            setstat_mode: 0,
            umask: String::new(),
            proxy_protocol: 0,
            proxy_allowed: Vec::new(),
            proxy_skipped: Vec::new(),
            post_connect_hook: String::new(),
            defender: DefenderConfig::default(),
        }
    }
}

/// One listener.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Binding {
    /// IP address to listen on; empty for every address.
    pub address: String,
    /// TCP port; 0 disables this listener.
    pub port: u16,
}

impl Default for Binding {
    fn default() -> Self {
        Self {
            address: String::new(),
            port: 2022,
        }
    }
}

impl Binding {
    /// The socket address, or None when the binding is disabled.
    pub fn socket_addr(&self, what: &str) -> anyhow::Result<Option<std::net::SocketAddr>> {
        if self.port == 0 {
            return Ok(None);
        }
        let ip: std::net::IpAddr = match self.address.trim() {
            "" => std::net::Ipv4Addr::UNSPECIFIED.into(),
            text => text
                .parse()
                .map_err(|_| anyhow::anyhow!("{what}.address: {text:?} is not an IP address"))?,
        };
        Ok(Some(std::net::SocketAddr::new(ip, self.port)))
    }
}

/// `sftpd`: the SSH/SFTP service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct SftpdConfig {
    /// Listeners of each edge (and of the edge `ferry serve` embeds).
    pub bindings: Vec<Binding>,
    /// SSH commands that run: md5sum, sha1sum, sha256sum, sha384sum,
    /// sha512sum, cd, pwd, scp, sftpgo-copy, sftpgo-remove, rsync, git-*;
    /// ["*"] for all.
    pub enabled_ssh_commands: Vec<String>,
    /// Allows password logins (also the password step of
    /// publickey+password). Read by the control plane.
    pub password_authentication: bool,
    /// Allows keyboard-interactive logins (a password prompt). Read by the
    /// control plane.
    pub keyboard_interactive_authentication: bool,
    /// Keyboard-interactive through a hook (SFTPGo's protocol): an absolute
    /// program path or an http:// URL; empty for the built-in password
    /// prompt. Read by the control plane.
    pub keyboard_interactive_auth_hook: String,
    /// Failed authentication attempts allowed per connection: 0 means 6, a
    /// negative value no limit. Read by the control plane.
    pub max_auth_tries: i32,
    /// Files with the public keys of CAs whose user certificates are
    /// accepted (principal = login name). Read by the control plane.
    pub trusted_user_ca_keys: Vec<PathBuf>,
    /// JSON file listing revoked certificates by SHA256 fingerprint
    /// ("SHA256:..."), re-read when it changes. Read by the control plane.
    pub revoked_user_certs_file: PathBuf,
    /// Private host key files (OpenSSH format, e.g. SFTPGo's id_ed25519,
    /// id_ecdsa, id_rsa; relative to the data directory). When set they are
    /// the fleet's host keys instead of the generated ones kept in the
    /// database, so clients of a previous server see the same keys. Read by
    /// the control plane.
    pub host_keys: Vec<PathBuf>,
    /// A text file sent to clients before they authenticate (relative paths
    /// are under the data directory; at most 64 KiB). Read by the control
    /// plane.
    pub login_banner_file: PathBuf,
    /// Channels (SFTP sessions, SCP and SSH commands) open at once on one
    /// SSH connection, as OpenSSH's `MaxSessions`. Read by each edge.
    pub max_channels_per_connection: u32,
    /// SFTP handles (files and directories) open at once on one SSH
    /// connection, all its channels together. Read by each edge.
    pub max_handles_per_connection: u32,
    /// SFTP handles open at once by one user on one edge, all their
    /// connections together. Read by each edge.
    pub max_handles_per_user: u32,
    /// Bytes of READ replies one SSH connection may have waiting for the
    /// client's window; further reads wait (at least 1 MiB). Read by each
    /// edge.
    pub max_queued_reply_bytes: u32,
}

impl Default for SftpdConfig {
    fn default() -> Self {
        Self {
            bindings: vec![Binding::default()],
            enabled_ssh_commands: commands::DEFAULT_ENABLED
                .split(',')
                .map(str::to_string)
                .collect(),
            password_authentication: true,
            keyboard_interactive_authentication: true,
            keyboard_interactive_auth_hook: String::new(),
            max_auth_tries: 0,
            trusted_user_ca_keys: Vec::new(),
            revoked_user_certs_file: PathBuf::new(),
            host_keys: Vec::new(),
            login_banner_file: PathBuf::new(),
            max_channels_per_connection: 10,
            max_handles_per_connection: 512,
            max_handles_per_user: 2048,
            max_queued_reply_bytes: 16 << 20,
        }
    }
}

impl SftpdConfig {
    /// The per-connection limits, each at least 1 (a limit of 0 would
    /// refuse every client, so it is a mistake, not "unlimited").
    pub fn session_limits(&self) -> anyhow::Result<crate::limits::SessionLimitSettings> {
        for (name, value, min) in [
            (
                "max_channels_per_connection",
                self.max_channels_per_connection,
                1,
            ),
            (
                "max_handles_per_connection",
                self.max_handles_per_connection,
                1,
            ),
            ("max_handles_per_user", self.max_handles_per_user, 1),
            (
                "max_queued_reply_bytes",
                self.max_queued_reply_bytes,
                1 << 20,
            ),
        ] {
            anyhow::ensure!(
                value >= min,
                "sftpd.{name}: {value} is below the minimum of {min}"
            );
        }
        Ok(crate::limits::SessionLimitSettings {
            channels: self.max_channels_per_connection,
            handles_per_connection: self.max_handles_per_connection,
            handles_per_user: self.max_handles_per_user,
            queued_reply_bytes: self.max_queued_reply_bytes,
        })
    }

    /// The enabled listeners' addresses (at least one).
    pub fn listen_addrs(&self) -> anyhow::Result<Vec<std::net::SocketAddr>> {
        let mut out = Vec::new();
        for (i, b) in self.bindings.iter().enumerate() {
            if let Some(addr) = b.socket_addr(&format!("sftpd.bindings[{i}]"))? {
                out.push(addr);
            }
        }
        anyhow::ensure!(
            !out.is_empty(),
            "sftpd.bindings: no listener enabled (every port is 0)"
        );
        Ok(out)
    }

    pub fn enabled_commands(&self) -> anyhow::Result<commands::EnabledCommands> {
        commands::EnabledCommands::from_setting(&self.enabled_ssh_commands.join(","))
            .map_err(|e| anyhow::anyhow!(e))
    }
}

/// `edge`: how a `ferry-edge` reaches its control plane.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct EdgeSection {
    /// gRPC URL of the control plane.
    pub control_plane: String,
    /// File holding the token presented to the control plane (else the
    /// FERRY_EDGE_TOKEN variable).
    pub edge_token_file: PathBuf,
    /// Fleet-unique id of this edge; empty: the host name plus a random
    /// suffix.
    pub edge_id: String,
    /// Seconds live transfers get to finish after SIGTERM before their
    /// sessions are closed.
    pub grace_time: u64,
}

impl Default for EdgeSection {
    fn default() -> Self {
        Self {
            control_plane: "http://127.0.0.1:50051".into(),
            edge_token_file: PathBuf::new(),
            edge_id: String::new(),
            grace_time: 30,
        }
    }
}

/// `telemetry`: the edge's `/healthz`, `/readyz` and `/metrics` listener.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// IP address to listen on.
    pub bind_address: String,
    /// TCP port; 0 disables the listener.
    pub bind_port: u16,
    /// Serves `/debug/pprof/profile?seconds=N` (CPU profile, pprof format)
    /// and `/debug/pprof/heap` (memory summary). Keep the listener private.
    pub enable_profiler: bool,
    /// Adds per-user upload/download byte counters (a label per user).
    pub per_user_metrics: bool,
    /// Users with their own series at most; later ones count as "_other".
    pub per_user_metrics_limit: usize,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            bind_address: "127.0.0.1".into(),
            bind_port: 10000,
            enable_profiler: false,
            per_user_metrics: false,
            per_user_metrics_limit: 100,
        }
    }
}

impl TelemetryConfig {
    pub fn socket_addr(&self) -> anyhow::Result<Option<std::net::SocketAddr>> {
        Binding {
            address: self.bind_address.clone(),
            port: self.bind_port,
        }
        .socket_addr("telemetry")
    }
}

/// Everything `ferry-edge` reads from its configuration.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct EdgeSettings {
    /// Settings every protocol shares.
    pub common: CommonConfig,
    /// The SSH/SFTP service.
    pub sftpd: SftpdConfig,
    /// How this edge reaches its control plane.
    pub edge: EdgeSection,
    /// Health and metrics listener.
    pub telemetry: TelemetryConfig,
}

/// The settings an edge runs with, validated.
#[derive(Debug, Clone)]
pub struct EdgeRuntime {
    pub proxy: proxy::ProxyPolicy,
    pub fs: crate::vfs::FsSettings,
    pub idle_timeout: Option<std::time::Duration>,
    pub commands: commands::EnabledCommands,
    pub limits: std::sync::Arc<crate::limits::ConnectionLimits>,
    pub session_limits: crate::limits::SessionLimitSettings,
}

impl CommonConfig {
    /// Validates the edge-side settings of `common` and `sftpd`.
    pub fn runtime(&self, sftpd: &SftpdConfig) -> anyhow::Result<EdgeRuntime> {
        let err = |e: String| anyhow::anyhow!("common.{e}");
        let proxy = proxy::ProxySettings {
            proxy_protocol: self.proxy_protocol,
            proxy_allowed: self.proxy_allowed.clone(),
            proxy_skipped: self.proxy_skipped.clone(),
        }
        .policy()
        .map_err(err)?;
        let upload_mode = crate::vfs::UploadMode::from_setting(self.upload_mode).map_err(err)?;
        let setstat_mode = crate::vfs::SetstatMode::from_setting(self.setstat_mode).map_err(err)?;
        let umask = match self.umask.trim() {
            "" => None,
            text => Some(crate::vfs::parse_umask(text).map_err(err)?),
        };
        Ok(EdgeRuntime {
            proxy,
            fs: crate::vfs::FsSettings {
                upload_mode,
                setstat_mode,
                umask,
            },
            idle_timeout: (self.idle_timeout > 0)
                .then(|| std::time::Duration::from_secs(self.idle_timeout * 60)),
            commands: sftpd
                .enabled_commands()
                .map_err(|e| anyhow::anyhow!("sftpd.{e}"))?,
            limits: crate::limits::ConnectionLimits::new(
                self.max_total_connections,
                self.max_per_host_connections,
            ),
            session_limits: sftpd.session_limits()?,
        })
    }
}

/// Command-line flags over `common` and `sftpd` (shared by `ferry-edge` and
/// `ferry serve`); each one given replaces the configured value.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct EdgeArgs {
    /// common.upload_mode: 0 in place, 1 atomic, 2 atomic with resume.
    #[arg(long)]
    pub upload_mode: Option<u8>,
    /// common.setstat_mode: 0 apply, 1 ignore, 2 ignore where unsupported.
    #[arg(long)]
    pub setstat_mode: Option<u8>,
    /// common.umask (octal, e.g. 022).
    #[arg(long)]
    pub umask: Option<String>,
    /// common.idle_timeout in minutes; 0 disables.
    #[arg(long)]
    pub idle_timeout: Option<u64>,
    /// common.proxy_protocol: 0 off, 1 optional, 2 required.
    #[arg(long)]
    pub proxy_protocol: Option<u8>,
    /// common.proxy_allowed, comma separated IPs or CIDRs.
    #[arg(long, value_delimiter = ',')]
    pub proxy_allowed: Option<Vec<String>>,
    /// common.proxy_skipped, comma separated IPs or CIDRs.
    #[arg(long, value_delimiter = ',')]
    pub proxy_skipped: Option<Vec<String>>,
    /// sftpd.enabled_ssh_commands, comma separated; `*` for all.
    #[arg(long, value_delimiter = ',')]
    pub enabled_ssh_commands: Option<Vec<String>>,
}

impl EdgeArgs {
    /// Lays the given flags over the configured sections.
    pub fn apply(&self, common: &mut CommonConfig, sftpd: &mut SftpdConfig) {
        let set = |slot: &mut u8, v: Option<u8>| {
            if let Some(v) = v {
                *slot = v;
            }
        };
        set(&mut common.upload_mode, self.upload_mode);
        set(&mut common.setstat_mode, self.setstat_mode);
        set(&mut common.proxy_protocol, self.proxy_protocol);
        if let Some(v) = &self.umask {
            common.umask = v.clone();
        }
        if let Some(v) = self.idle_timeout {
            common.idle_timeout = v;
        }
        if let Some(v) = &self.proxy_allowed {
            common.proxy_allowed = v.clone();
        }
        if let Some(v) = &self.proxy_skipped {
            common.proxy_skipped = v.clone();
        }
        if let Some(v) = &self.enabled_ssh_commands {
            sftpd.enabled_ssh_commands = v.clone();
        }
    }
}
