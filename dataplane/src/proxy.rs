//! PROXY protocol v1/v2 on the SSH listener, with SFTPGo's settings
//! (`common.proxy_protocol`, `proxy_allowed`, `proxy_skipped`): 0 off; 1 a
//! header from an allowed upstream gives the client address (headers from
//! other upstreams are read and ignored); 2 a header is required and only
//! allowed upstreams may connect, except `proxy_skipped` sources (health
//! checks) that connect without one. The real client address then flows into
//! login filters, logs and the connection list.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use ipnet::IpNet;
use proxy_header::ParseConfig;
use proxy_header::io::ProxiedStream;
use tokio::net::TcpStream;

/// How long a connection may take to send its PROXY header.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// `common.proxy_*` settings of an edge listener.
#[derive(Debug, Clone, Default)]
pub struct ProxySettings {
    pub proxy_protocol: u8,
    pub proxy_allowed: Vec<String>,
    pub proxy_skipped: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProxyMode {
    #[default]
    Off,
    Optional,
    Required,
}

/// The validated policy.
#[derive(Debug, Clone, Default)]
pub struct ProxyPolicy {
    pub mode: ProxyMode,
    allowed: Vec<IpNet>,
    skipped: Vec<IpNet>,
}

/// What to do with one accepted connection.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    /// Serve it with the TCP peer address.
    Plain,
    /// Read the header; use its address only when `honour`.
    ReadHeader {
        honour: bool,
    },
    Reject(&'static str),
}

fn parse_nets(flag: &str, items: &[String]) -> Result<Vec<IpNet>, String> {
    items
        .iter()
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<IpNet>()
                .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| format!("{flag}: {s:?} is not an IP address or CIDR"))
        })
        .collect()
}

impl ProxySettings {
    pub fn policy(&self) -> Result<ProxyPolicy, String> {
        let mode = match self.proxy_protocol {
            0 => ProxyMode::Off,
            1 => ProxyMode::Optional,
            2 => ProxyMode::Required,
            n => return Err(format!("proxy_protocol must be 0, 1 or 2, got {n}")),
        };
        Ok(ProxyPolicy {
            mode,
            allowed: parse_nets("proxy_allowed", &self.proxy_allowed)?,
            skipped: parse_nets("proxy_skipped", &self.proxy_skipped)?,
        })
    }
}

impl ProxyPolicy {
    /// Decides for a connection from `peer` that does (or does not) start
    /// with a PROXY header.
    pub fn decide(&self, peer: IpAddr, has_header: bool) -> Decision {
        let peer = peer.to_canonical();
        let allowed = self.allowed.iter().any(|n| n.contains(&peer));
        let skipped = self.skipped.iter().any(|n| n.contains(&peer));
        match (self.mode, has_header) {
            (ProxyMode::Off, _) => Decision::Plain,
            (ProxyMode::Optional, false) => Decision::Plain,
            (ProxyMode::Optional, true) => Decision::ReadHeader { honour: allowed },
            (ProxyMode::Required, _) if skipped => {
                if has_header {
                    Decision::ReadHeader { honour: allowed }
                } else {
                    Decision::Plain
                }
            }
            (ProxyMode::Required, _) if !allowed => {
                Decision::Reject("upstream not in proxy_allowed")
            }
            (ProxyMode::Required, false) => Decision::Reject("PROXY header required"),
            (ProxyMode::Required, true) => Decision::ReadHeader { honour: true },
        }
    }

    /// Applies the policy to an accepted connection: returns the stream to
    /// serve (with any header consumed) and the client address to use.
    pub async fn accept(
        &self,
        stream: TcpStream,
        peer: SocketAddr,
    ) -> Result<(ProxiedStream<TcpStream>, SocketAddr), String> {
        if self.mode == ProxyMode::Off {
            return Ok((ProxiedStream::unproxied(stream), peer));
        }
        // PROXY headers start with 'P' (v1) or '\r' (v2); SSH with 'S'.
        let mut first = [0u8; 1];
        let has_header = match tokio::time::timeout(HEADER_TIMEOUT, stream.peek(&mut first)).await {
            Ok(Ok(1)) => first[0] == b'P' || first[0] == b'\r',
            Ok(Ok(_)) => return Err("connection closed before any data".into()),
            Ok(Err(e)) => return Err(format!("cannot read from the connection: {e}")),
            Err(_) => false,
        };
        match self.decide(peer.ip(), has_header) {
            Decision::Plain => Ok((ProxiedStream::unproxied(stream), peer)),
            Decision::Reject(why) => Err(why.to_string()),
            Decision::ReadHeader { honour } => {
                let proxied = tokio::time::timeout(
                    HEADER_TIMEOUT,
                    ProxiedStream::create_from_tokio(stream, ParseConfig::default()),
                )
                .await
                .map_err(|_| "timed out reading the PROXY header".to_string())?
                .map_err(|e| format!("invalid PROXY header: {e}"))?;
                let client = match (honour, proxied.proxy_header().proxied_address()) {
                    (true, Some(a)) => a.source,
                    _ => peer,
                };
                Ok((proxied, client))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(mode: u8, allowed: &[&str], skipped: &[&str]) -> ProxyPolicy {
        ProxySettings {
            proxy_protocol: mode,
            proxy_allowed: allowed.iter().map(|s| s.to_string()).collect(),
            proxy_skipped: skipped.iter().map(|s| s.to_string()).collect(),
        }
        .policy()
        .unwrap()
    }

    fn check(p: &ProxyPolicy, peer: &str, has_header: bool, expected: Decision) {
        assert_eq!(
            p.decide(peer.parse().unwrap(), has_header),
            expected,
            "{peer} header={has_header}"
        );
    }

    #[test]
    fn decisions() {
        let off = policy(0, &[], &[]);
        check(&off, "10.0.0.1", true, Decision::Plain);
        let on = policy(1, &["10.0.0.0/8"], &[]);
        check(&on, "10.0.0.1", true, Decision::ReadHeader { honour: true });
        check(
            &on,
            "192.0.2.1",
            true,
            Decision::ReadHeader { honour: false },
        );
        check(&on, "10.0.0.1", false, Decision::Plain);
        let req = policy(2, &["10.0.0.1"], &["10.9.9.9"]);
        check(
            &req,
            "10.0.0.1",
            true,
            Decision::ReadHeader { honour: true },
        );
        check(
            &req,
            "10.0.0.1",
            false,
            Decision::Reject("PROXY header required"),
        );
        check(
            &req,
            "192.0.2.1",
            true,
            Decision::Reject("upstream not in proxy_allowed"),
        );
        check(&req, "10.9.9.9", false, Decision::Plain);
        check(
            &req,
            "::ffff:10.0.0.1",
            true,
            Decision::ReadHeader { honour: true },
        );
    }

    #[test]
    fn bad_settings() {
        let args = |mode: u8, allowed: &[&str]| ProxySettings {
            proxy_protocol: mode,
            proxy_allowed: allowed.iter().map(|s| s.to_string()).collect(),
            proxy_skipped: vec![],
        };
        assert!(args(3, &[]).policy().unwrap_err().contains("0, 1 or 2"));
        assert!(
            args(1, &["haproxy.local"])
                .policy()
                .unwrap_err()
                .contains("proxy_allowed")
        );
    }
}
