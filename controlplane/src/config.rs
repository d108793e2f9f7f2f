//! The settings of `ferry` (control plane, and `ferry serve`'s embedded
//! edge): one struct, loaded by [`ferry_dataplane::config::load`] from the
//! defaults, `--config-file` and `FERRY_<SECTION>__<KEY>` variables.

use std::path::PathBuf;

use ferry_dataplane::settings::{Binding, CommonConfig, SftpdConfig};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::provider::DataProviderConfig;

/// Everything `ferry` reads from its configuration.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// Settings every protocol shares (used by `ferry serve`'s embedded edge;
    /// separate edges read their own).
    pub common: CommonConfig,
    /// The SSH/SFTP service: listeners of the embedded edge, and the
    /// authentication rules the control plane applies for every edge.
    pub sftpd: SftpdConfig,
    /// The database.
    pub data_provider: DataProviderConfig,
    /// The REST API.
    pub httpd: HttpdConfig,
    /// The gRPC service edges attach to.
    pub grpc: GrpcConfig,
    /// Protection of the secrets stored in the database.
    pub kms: crate::secrets::KmsConfig,
    /// How HTTP(S) hooks are called.
    pub http: crate::hooks::HttpClientConfig,
}

/// `httpd`: the REST API (also `/healthz`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct HttpdConfig {
    /// The listener (one).
    pub bindings: Vec<Binding>,
    /// Largest REST request body accepted, in bytes (413 above it).
    pub max_request_size: u64,
    /// Lifetime of the access tokens `/api/v2/token` issues, in minutes.
    pub jwt_lifetime: u64,
    /// Seconds a client has to send a request's headers (also while a
    /// kept-alive connection waits for its next request); then the
    /// connection is closed.
    pub read_header_timeout: u64,
    /// Seconds a kept-alive connection may stay without a request in
    /// progress and without traffic before it is closed.
    pub idle_timeout: u64,
    /// Open REST connections allowed from one client address (one more gets
    /// 429 and is closed). Behind a reverse proxy every client shares its
    /// address: raise it there.
    pub max_connections_per_host: u64,
    /// Open REST connections allowed in all (one more gets 503 and is
    /// closed). 0: a quarter of the process's file descriptor limit.
    pub max_connections: u64,
}

impl Default for HttpdConfig {
    fn default() -> Self {
        Self {
            bindings: vec![Binding {
                address: "127.0.0.1".into(),
                port: 8080,
            }],
            max_request_size: 1024 * 1024,
            jwt_lifetime: 20,
            read_header_timeout: 10,
            idle_timeout: 60,
            max_connections_per_host: 50,
            max_connections: 0,
        }
    }
}

/// `grpc`: the service edges attach to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct GrpcConfig {
    /// IP address to listen on (every call needs the edge token).
    pub address: String,
    /// TCP port.
    pub port: u16,
    /// File holding the token edges must present (else FERRY_EDGE_TOKEN;
    /// with neither, one is generated into DATA_DIR/edge-token, mode 0600).
    pub edge_token_file: PathBuf,
    /// Seconds a session lease lives without renewal: how long the sessions
    /// of an edge that died still count toward max_sessions (minimum 3).
    pub lease_ttl: u64,
}

impl Default for GrpcConfig {
    fn default() -> Self {
        Self {
            address: "127.0.0.1".into(),
            port: 50051,
            edge_token_file: PathBuf::new(),
            lease_ttl: 30,
        }
    }
}

impl Settings {
    /// The REST listener.
    pub fn http_addr(&self) -> anyhow::Result<std::net::SocketAddr> {
        anyhow::ensure!(
            self.httpd.bindings.len() == 1,
            "httpd.bindings: exactly one listener is supported, got {}",
            self.httpd.bindings.len()
        );
        self.httpd.bindings[0]
            .socket_addr("httpd.bindings[0]")?
            .ok_or_else(|| anyhow::anyhow!("httpd.bindings[0].port: 0 is not allowed"))
    }

    /// REST limits, checked.
    pub fn rest(&self) -> anyhow::Result<crate::rest::RestSettings> {
        anyhow::ensure!(
            (1024..=1024 * 1024 * 1024).contains(&self.httpd.max_request_size),
            "httpd.max_request_size: {} is out of range (1024 to 1073741824 bytes)",
            self.httpd.max_request_size
        );
        anyhow::ensure!(
            (1..=60 * 24 * 365).contains(&self.httpd.jwt_lifetime),
            "httpd.jwt_lifetime: {} is out of range (1 to 525600 minutes)",
            self.httpd.jwt_lifetime
        );
        let h = &self.httpd;
        for (key, v) in [
            ("read_header_timeout", h.read_header_timeout),
            ("idle_timeout", h.idle_timeout),
        ] {
            anyhow::ensure!(
                (1..=3600).contains(&v),
                "httpd.{key}: {v} is out of range (1 to 3600 seconds)"
            );
        }
        anyhow::ensure!(
            (1..=1_000_000).contains(&h.max_connections_per_host),
            "httpd.max_connections_per_host: {} is out of range (1 to 1000000)",
            h.max_connections_per_host
        );
        let max_total = match h.max_connections {
            // A quarter of the descriptors: SSH, files and the database keep
            // the rest.
            0 => (ferry_dataplane::fd_limit() / 4).max(64),
            n => n,
        };
        Ok(crate::rest::RestSettings {
            max_body: h.max_request_size as usize,
            token_lifetime_secs: h.jwt_lifetime as i64 * 60,
            listener: crate::rest_listener::ListenerLimits {
                read_header_timeout: std::time::Duration::from_secs(h.read_header_timeout),
                idle_timeout: std::time::Duration::from_secs(h.idle_timeout),
                max_per_host: usize::try_from(h.max_connections_per_host).unwrap_or(usize::MAX),
                max_total: usize::try_from(max_total).unwrap_or(usize::MAX),
            },
        })
    }

    /// Ferry's own directories and files for this data directory and
    /// configuration file, which no home or folder may reach.
    pub fn server_paths(
        &self,
        data_dir: &std::path::Path,
        config_file: Option<&std::path::Path>,
    ) -> crate::server_paths::ServerPaths {
        let mut paths = crate::server_paths::ServerPaths::default()
            .dir("data directory", data_dir)
            .dir(
                "backups directory",
                &self.data_provider.backups_dir(data_dir),
            )
            .file("master key file", &self.kms.secrets.master_key_path)
            .file("edge token file", &self.grpc.edge_token_file);
        if let Some(dir) = config_file.and_then(std::path::Path::parent) {
            let dir = if dir.as_os_str().is_empty() {
                std::path::Path::new(".")
            } else {
                dir
            };
            paths = paths.dir("configuration directory", dir);
        }
        for key in &self.sftpd.host_keys {
            paths = paths.file("host key file", &data_dir.join(key));
        }
        if let Ok(target) = self.data_provider.target(data_dir)
            && matches!(
                target.backend,
                crate::provider::Backend::Sqlite | crate::provider::Backend::Redb
            )
        {
            paths = paths.file("database file", std::path::Path::new(&target.url));
        }
        paths
    }

    /// The gRPC listener.
    pub fn grpc_addr(&self) -> anyhow::Result<std::net::SocketAddr> {
        Binding {
            address: self.grpc.address.clone(),
            port: self.grpc.port,
        }
        .socket_addr("grpc")?
        .ok_or_else(|| anyhow::anyhow!("grpc.port: 0 is not allowed"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_is_complete_and_loads_back_to_the_defaults() {
        let text = ferry_dataplane::config::example::<Settings>();
        for key in [
            "[data_provider]",
            "driver = \"sqlite\"",
            "[[httpd.bindings]]",
            "[[sftpd.bindings]]",
            "lease_ttl = 30",
            "# TCP port; 0 disables this listener.",
            "# Database password.",
        ] {
            assert!(text.contains(key), "{key} missing from\n{text}");
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ferry.toml");
        std::fs::write(&path, &text).unwrap();
        let loaded: Settings = ferry_dataplane::config::load(Some(&path), vec![]).unwrap();
        assert_eq!(loaded, Settings::default());
    }
}
