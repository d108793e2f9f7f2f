//! The login-time part of a user's `filters` (SFTPGo §1.5): allowed/denied
//! source addresses, denied login methods and denied protocols. Validated on
//! input with precise messages, evaluated by the control plane at every
//! login against the real client address the edge reports.

use std::net::IpAddr;

use ferry_proto::filters::{ExtensionsSpec, FileFilters, PatternsSpec};
use ipnet::IpNet;
use serde_json::Value;

/// Login methods a user may be denied.
pub const LOGIN_METHODS: &[&str] = &[
    "publickey",
    "password",
    "password-over-SSH",
    "keyboard-interactive",
    "publickey+password",
    "publickey+keyboard-interactive",
    "TLSCertificate",
    "TLSCertificate+password",
];

/// Protocols a user may be denied.
pub const PROTOCOLS: &[&str] = &["SSH", "FTP", "DAV", "HTTP"];

/// The parsed login filters of one user.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct LoginFilters {
    pub allowed_ip: Vec<IpNet>,
    pub denied_ip: Vec<IpNet>,
    pub denied_login_methods: Vec<String>,
    pub denied_protocols: Vec<String>,
}

fn parse_net(field: &str, text: &str) -> Result<IpNet, String> {
    let t = text.trim();
    t.parse::<IpNet>()
        .or_else(|_| t.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| format!("invalid address or CIDR {text:?} in filters.{field}"))
}

fn strings<'a>(filters: &'a Value, field: &str) -> Result<Vec<&'a str>, String> {
    match filters.get(field) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| {
                v.as_str()
                    .ok_or_else(|| format!("filters.{field} must be a list of strings"))
            })
            .collect(),
        Some(_) => Err(format!("filters.{field} must be a list of strings")),
    }
}

impl LoginFilters {
    /// Parses and validates the login filters out of a `filters` object.
    pub fn parse(filters: &Value) -> Result<Self, String> {
        let mut f = LoginFilters::default();
        for s in strings(filters, "allowed_ip")? {
            f.allowed_ip.push(parse_net("allowed_ip", s)?);
        }
        for s in strings(filters, "denied_ip")? {
            f.denied_ip.push(parse_net("denied_ip", s)?);
        }
        for m in strings(filters, "denied_login_methods")? {
            if !LOGIN_METHODS.contains(&m) {
                return Err(format!(
                    "invalid login method {m:?} in filters.denied_login_methods (valid: {})",
                    LOGIN_METHODS.join(", ")
                ));
            }
            f.denied_login_methods.push(m.to_string());
        }
        for p in strings(filters, "denied_protocols")? {
            if !PROTOCOLS.contains(&p) {
                return Err(format!(
                    "invalid protocol {p:?} in filters.denied_protocols (valid: {})",
                    PROTOCOLS.join(", ")
                ));
            }
            f.denied_protocols.push(p.to_string());
        }
        Ok(f)
    }

    /// SFTPGo ≥ 2.4 semantics: an address in the allowed list is allowed;
    /// else one in the denied list is denied; else a non-empty allowed list
    /// denies everything else.
    pub fn ip_allowed(&self, ip: IpAddr) -> bool {
        if self.allowed_ip.iter().any(|n| n.contains(&ip)) {
            return true;
        }
        if self.denied_ip.iter().any(|n| n.contains(&ip)) {
            return false;
        }
        self.allowed_ip.is_empty()
    }

    /// Whether an SSH login with `method` (`password` or `publickey`) is
    /// allowed.
    pub fn ssh_method_allowed(&self, method: &str) -> bool {
        let denied = |m: &str| self.denied_login_methods.iter().any(|d| d == m);
        match method {
            "password" => !denied("password") && !denied("password-over-SSH"),
            other => !denied(other),
        }
    }

    pub fn protocol_allowed(&self, protocol: &str) -> bool {
        !self.denied_protocols.iter().any(|p| p == protocol)
    }
}

/// A per-source bandwidth override (`filters.bandwidth_limits`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BandwidthLimit {
    pub sources: Vec<IpNet>,
    pub upload_bandwidth: i64,
    pub download_bandwidth: i64,
}

/// The session-time part of a user's `filters`: what the edge enforces on
/// every request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionFilters {
    /// `file_patterns` plus the older `file_extensions`, as patterns.
    pub file_patterns: Vec<PatternsSpec>,
    pub max_upload_file_size: i64,
    pub bandwidth_limits: Vec<BandwidthLimit>,
    /// Where relative paths start (cleaned; empty: "/").
    pub start_directory: String,
}

fn list_of<T: serde::de::DeserializeOwned>(filters: &Value, field: &str) -> Result<Vec<T>, String> {
    match filters.get(field) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(v @ Value::Array(_)) => serde_path_to_error::deserialize(v.clone())
            .map_err(|e| format!("filters.{field}.{}: {}", e.path(), e.inner())),
        Some(_) => Err(format!("filters.{field} must be a list")),
    }
}

fn non_negative(filters: &Value, field: &str) -> Result<i64, String> {
    match filters.get(field) {
        None | Some(Value::Null) => Ok(0),
        Some(v) => match v.as_i64() {
            Some(n) if n >= 0 => Ok(n),
            _ => Err(format!(
                "filters.{field} must be a non-negative integer, got {v}"
            )),
        },
    }
}

impl SessionFilters {
    pub fn parse(filters: &Value) -> Result<Self, String> {
        let mut file_patterns: Vec<PatternsSpec> = list_of(filters, "file_patterns")?;
        let extensions: Vec<ExtensionsSpec> = list_of(filters, "file_extensions")?;
        file_patterns.extend(extensions.into_iter().map(ExtensionsSpec::into_patterns));
        FileFilters::new(&file_patterns)?;
        #[derive(serde::Deserialize)]
        struct RawLimit {
            #[serde(default)]
            sources: Vec<String>,
            #[serde(default)]
            upload_bandwidth: i64,
            #[serde(default)]
            download_bandwidth: i64,
        }
        let mut bandwidth_limits = Vec::new();
        for raw in list_of::<RawLimit>(filters, "bandwidth_limits")? {
            if raw.sources.is_empty() {
                return Err("filters.bandwidth_limits: every entry needs sources".into());
            }
            if raw.upload_bandwidth < 0 || raw.download_bandwidth < 0 {
                return Err("filters.bandwidth_limits: bandwidth must not be negative".into());
            }
            let sources = raw
                .sources
                .iter()
                .map(|s| parse_net("bandwidth_limits.sources", s))
                .collect::<Result<_, _>>()?;
            bandwidth_limits.push(BandwidthLimit {
                sources,
                upload_bandwidth: raw.upload_bandwidth,
                download_bandwidth: raw.download_bandwidth,
            });
        }
        let start_directory = match filters.get("start_directory") {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(s)) if s.is_empty() => String::new(),
            Some(Value::String(s)) if s.starts_with('/') => {
                match ferry_proto::vpath::clean("/", s) {
                    root if root == "/" => String::new(),
                    clean => clean,
                }
            }
            Some(v) => {
                return Err(format!(
                    "filters.start_directory must be an absolute path such as \"/inbox\", got {v}"
                ));
            }
        };
        Ok(Self {
            file_patterns,
            max_upload_file_size: non_negative(filters, "max_upload_file_size")?,
            bandwidth_limits,
            start_directory,
        })
    }

    /// (upload, download) KB/s for a client: the first override whose
    /// sources hold the address, else the user's own limits.
    pub fn bandwidth_for(&self, ip: Option<IpAddr>, upload: i64, download: i64) -> (i64, i64) {
        ip.and_then(|ip| {
            self.bandwidth_limits
                .iter()
                .find(|l| l.sources.iter().any(|n| n.contains(&ip)))
        })
        .map_or((upload, download), |l| {
            (l.upload_bandwidth, l.download_bandwidth)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn session_filters() {
        let f = SessionFilters::parse(&json!({
            "file_patterns": [{"path": "/", "denied_patterns": ["*.exe"]}],
            "file_extensions": [{"path": "/img", "allowed_extensions": [".jpg"]}],
            "max_upload_file_size": 1024,
            "bandwidth_limits": [{"sources": ["10.0.0.0/8"], "upload_bandwidth": 5, "download_bandwidth": 6}]
        }))
        .unwrap();
        assert_eq!(f.file_patterns.len(), 2);
        assert_eq!(f.file_patterns[1].allowed_patterns, vec!["*.jpg"]);
        assert_eq!(f.max_upload_file_size, 1024);
        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        assert_eq!(f.bandwidth_for(ip("10.1.1.1"), 100, 200), (5, 6));
        assert_eq!(f.bandwidth_for(ip("192.0.2.1"), 100, 200), (100, 200));
        let start = |v: Value| SessionFilters::parse(&json!({"start_directory": v}));
        assert_eq!(start(json!("/a/../b/")).unwrap().start_directory, "/b");
        assert_eq!(start(json!("/")).unwrap().start_directory, "");
        assert!(
            start(json!("inbox"))
                .unwrap_err()
                .contains("start_directory")
        );
        assert!(start(json!(7)).is_err());
        let err = |v: Value| SessionFilters::parse(&v).unwrap_err();
        assert!(
            err(json!({"file_patterns": [{"path": "/", "denied_patterns": ["[x"]}]}))
                .contains("invalid pattern")
        );
        assert!(
            err(json!({"file_patterns": [{"path": "/", "deny_policy": "x"}]}))
                .contains("filters.file_patterns.[0].deny_policy")
        );
        assert!(err(json!({"max_upload_file_size": -1})).contains("max_upload_file_size"));
        assert!(
            err(json!({"bandwidth_limits": [{"sources": ["bad"]}]}))
                .contains("bandwidth_limits.sources")
        );
    }

    #[test]
    fn validation_messages() {
        let err = |v: Value| LoginFilters::parse(&v).unwrap_err();
        assert!(err(json!({"allowed_ip": ["10.0.0.0/33"]})).contains("filters.allowed_ip"));
        assert!(err(json!({"denied_ip": ["nope"]})).contains("\"nope\""));
        assert!(err(json!({"denied_ip": "10.0.0.1"})).contains("list of strings"));
        assert!(err(json!({"denied_login_methods": ["telepathy"]})).contains("telepathy"));
        assert!(err(json!({"denied_protocols": ["SMTP"]})).contains("SMTP"));
        let ok = LoginFilters::parse(&json!({"allowed_ip": ["192.168.1.0/24", "::1", "10.1.2.3"]}))
            .unwrap();
        assert_eq!(ok.allowed_ip.len(), 3);
    }

    #[test]
    fn ip_precedence() {
        let f = |v: Value| LoginFilters::parse(&v).unwrap();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let none = f(json!({}));
        assert!(none.ip_allowed(ip("203.0.113.9")));
        let allow = f(json!({"allowed_ip": ["127.0.0.2/32"]}));
        assert!(allow.ip_allowed(ip("127.0.0.2")));
        assert!(!allow.ip_allowed(ip("127.0.0.1")));
        let deny = f(json!({"denied_ip": ["127.0.0.0/8"]}));
        assert!(!deny.ip_allowed(ip("127.0.0.1")));
        assert!(deny.ip_allowed(ip("::1")));
        let both = f(json!({"allowed_ip": ["127.0.0.2"], "denied_ip": ["127.0.0.0/8"]}));
        assert!(both.ip_allowed(ip("127.0.0.2")), "allowed wins over denied");
        assert!(!both.ip_allowed(ip("127.0.0.3")));
    }

    #[test]
    fn methods_and_protocols() {
        let f = LoginFilters::parse(
            &json!({"denied_login_methods": ["password-over-SSH"], "denied_protocols": ["FTP"]}),
        )
        .unwrap();
        assert!(!f.ssh_method_allowed("password"));
        assert!(f.ssh_method_allowed("publickey"));
        assert!(f.protocol_allowed("SSH"));
        assert!(!f.protocol_allowed("FTP"));
    }
}
