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
        }
    }
}

/// `grpc`: the service edges attach to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct GrpcConfig {
    /// IP address to listen on; a non-loopback address requires an edge token.
    pub address: String,
    /// TCP port.
    pub port: u16,
    /// File holding the token edges must present (else FERRY_EDGE_TOKEN).
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
        Ok(crate::rest::RestSettings {
            max_body: self.httpd.max_request_size as usize,
            token_lifetime_secs: self.httpd.jwt_lifetime as i64 * 60,
        })
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
