//! Running SFTPGo-style hooks: a setting is either an absolute program path
//! (run without a shell, hook data in `SFTPGO_*` environment variables,
//! output on stdout) or an `http://`/`https://` URL (JSON over HTTP). Every
//! run has a deadline; a hook that hangs is killed, one that crashes or
//! prints garbage is an error the caller turns into a refusal — never a hang
//! of the login path.
//!
//! HTTP hooks share one client (connections are reused) whose TLS trusts the
//! system's certificate authorities plus `http.ca_certificates` (SFTPGo's
//! `http` section); `http.skip_tls_verify` accepts any certificate.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::Context;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};

use tokio::io::AsyncReadExt;
use tracing::warn;

/// Most output read from a hook (a user JSON is far smaller).
const MAX_OUTPUT: u64 = 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hook {
    Program(PathBuf),
    Http(String),
}

impl Hook {
    /// Parses a hook setting; empty means none.
    pub fn parse(key: &str, value: &str) -> anyhow::Result<Option<Self>> {
        let value = value.trim();
        if value.is_empty() {
            return Ok(None);
        }
        if value.starts_with("http://") || value.starts_with("https://") {
            let url = reqwest::Url::parse(value)
                .map_err(|e| anyhow::anyhow!("{key}: {value:?} is not a valid URL: {e}"))?;
            anyhow::ensure!(url.host().is_some(), "{key}: {value:?} names no host");
            return Ok(Some(Hook::Http(value.to_string())));
        }
        let path = PathBuf::from(value);
        anyhow::ensure!(
            path.is_absolute(),
            "{key}: {value:?} must be an absolute program path or an http(s):// URL"
        );
        Ok(Some(Hook::Program(path)))
    }
}

impl Hook {
    /// The answer that means yes: exit code 0 for a program, HTTP 200.
    pub fn success_status(&self) -> i32 {
        match self {
            Hook::Program(_) => 0,
            Hook::Http(_) => 200,
        }
    }
}

/// Kills a hook's process group (the hook and anything it started).
pub fn kill_group(pid: Option<u32>) {
    if let Some(pid) = pid.and_then(|p| rustix::process::Pid::from_raw(p as i32)) {
        let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
    }
}

/// What a hook answered.
#[derive(Debug)]
pub struct Answer {
    /// Program: exit code (-1 when killed by a signal). HTTP: status code.
    pub status: i32,
    pub body: Vec<u8>,
}

/// Runs a program hook with `env` added to Ferry's environment.
pub async fn run_program(
    name: &str,
    path: &std::path::Path,
    env: &[(&str, String)],
    timeout: Duration,
) -> Result<Answer, String> {
    let mut cmd = tokio::process::Command::new(path);
    cmd.envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("{name}: cannot run {}: {e}", path.display()))?;
    let pid = child.id();
    let mut stdout = child.stdout.take().expect("piped");
    let mut stderr = child.stderr.take().expect("piped");
    let run = async {
        let mut out = Vec::new();
        let mut err = Vec::new();
        let mut limited_out = (&mut stdout).take(MAX_OUTPUT);
        let mut limited_err = (&mut stderr).take(MAX_OUTPUT);
        let (r1, r2, status) = tokio::join!(
            limited_out.read_to_end(&mut out),
            limited_err.read_to_end(&mut err),
            child.wait()
        );
        r1.and(r2).and(status.map(|s| (s, out, err)))
    };
    let result = tokio::time::timeout(timeout, run).await;
    if result.is_err() {
        kill_group(pid);
    }
    match result {
        Err(_) => Err(format!(
            "{name}: timed out after {:.1} s",
            timeout.as_secs_f64()
        )),
        Ok(Err(e)) => Err(format!("{name}: {e}")),
        Ok(Ok((status, out, err))) => {
            if !err.is_empty() {
                warn!(
                    sender = name,
                    stderr = String::from_utf8_lossy(&err).trim(),
                    "hook wrote to stderr"
                );
            }
            Ok(Answer {
                status: status.code().unwrap_or(-1),
                body: out,
            })
        }
    }
}

/// `http`: how HTTP hooks are called (SFTPGo's `http` section).
#[derive(
    Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema,
)]
#[serde(deny_unknown_fields, default)]
pub struct HttpClientConfig {
    /// PEM files of certificate authorities trusted for https hooks besides
    /// the system's (relative paths are under the data directory).
    pub ca_certificates: Vec<PathBuf>,
    /// Accept any certificate from https hooks. Only for test setups: anyone
    /// on the network path can then answer in the hook's place.
    pub skip_tls_verify: bool,
}

static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();

/// Builds the hooks' HTTP client from the settings (once per process: the
/// first call wins). Unreadable CA files stop the start.
pub fn install_http_client(cfg: &HttpClientConfig, data_dir: &Path) -> anyhow::Result<()> {
    let client = build_client(cfg, data_dir)?;
    let _ = CLIENT.set(client);
    Ok(())
}

fn client() -> Result<&'static reqwest::Client, String> {
    if let Some(c) = CLIENT.get() {
        return Ok(c);
    }
    let c =
        build_client(&HttpClientConfig::default(), Path::new(".")).map_err(|e| format!("{e:#}"))?;
    Ok(CLIENT.get_or_init(|| c))
}

fn build_client(cfg: &HttpClientConfig, data_dir: &Path) -> anyhow::Result<reqwest::Client> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("TLS settings")?;
    let tls = if cfg.skip_tls_verify {
        warn!("http.skip_tls_verify is on: https hooks accept any certificate");
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
            .with_no_client_auth()
    } else {
        let mut roots = rustls::RootCertStore::empty();
        let native = rustls_native_certs::load_native_certs();
        for e in &native.errors {
            warn!(error = %e, "cannot read some system certificate authorities");
        }
        roots.add_parsable_certificates(native.certs);
        for path in &cfg.ca_certificates {
            let file = data_dir.join(path);
            let certs = CertificateDer::pem_file_iter(&file)
                .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                .map_err(|e| {
                    anyhow::anyhow!("http.ca_certificates: cannot read {}: {e}", file.display())
                })?;
            anyhow::ensure!(
                !certs.is_empty(),
                "http.ca_certificates: {} holds no PEM certificate",
                file.display()
            );
            for c in certs {
                roots.add(c).map_err(|e| {
                    anyhow::anyhow!("http.ca_certificates: {}: {e}", file.display())
                })?;
            }
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    };
    reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .context("HTTP client for hooks")
}

/// `http.skip_tls_verify`: any certificate is accepted, but the handshake's
/// signatures are still checked (the peer holds the key it presents).
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The chain of causes of an HTTP error (reqwest's own text hides why a
/// TLS handshake failed).
fn causes(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Calls an HTTP hook: `body` as JSON (POST) or none (GET), `query` appended.
pub async fn call_http(
    name: &str,
    url: &str,
    query: &[(&str, String)],
    body: Option<&serde_json::Value>,
    timeout: Duration,
) -> Result<Answer, String> {
    let client = client().map_err(|e| format!("{name}: {e}"))?;
    let req = match body {
        Some(b) => client.post(url).json(b),
        None => client.get(url),
    };
    let resp = req
        .query(query)
        .timeout(timeout)
        .send()
        .await
        .map_err(|e| format!("{name}: {url}: {}", causes(&e)))?;
    let status = resp.status().as_u16() as i32;
    let mut body = Vec::new();
    let mut resp = resp;
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| format!("{name}: {url}: {}", causes(&e)))?
    {
        body.extend_from_slice(&chunk);
        if body.len() as u64 > MAX_OUTPUT {
            return Err(format!("{name}: {url}: reply larger than 1 MiB"));
        }
    }
    Ok(Answer { status, body })
}

/// Parses a hook's JSON output.
pub fn json(name: &str, body: &[u8]) -> Result<serde_json::Value, String> {
    serde_json::from_slice(body).map_err(|e| format!("{name}: output is not JSON: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings() {
        assert_eq!(Hook::parse("k", "").unwrap(), None);
        assert_eq!(
            Hook::parse("k", "http://127.0.0.1:9/auth").unwrap(),
            Some(Hook::Http("http://127.0.0.1:9/auth".into()))
        );
        assert_eq!(
            Hook::parse("k", "https://hooks.example/auth").unwrap(),
            Some(Hook::Http("https://hooks.example/auth".into()))
        );
        assert!(Hook::parse("k", "https://").is_err());
        assert!(
            Hook::parse("data_provider.external_auth_hook", "hooks/auth.sh")
                .unwrap_err()
                .to_string()
                .contains("data_provider.external_auth_hook")
        );
    }

    #[tokio::test]
    async fn programs_get_env_and_deadlines() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("hook.sh");
        std::fs::write(
            &script,
            "#!/bin/sh\necho \"{\\\"u\\\": \\\"$SFTPGO_AUTHD_USERNAME\\\"}\"\necho oops >&2\nexit 3\n",
        )
        .unwrap();
        let slow = dir.path().join("slow.sh");
        std::fs::write(&slow, "#!/bin/sh\nsleep 30\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        for p in [&script, &slow] {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let env = [("SFTPGO_AUTHD_USERNAME", "zed".to_string())];
        let a = run_program("t", &script, &env, Duration::from_secs(10))
            .await
            .unwrap();
        assert_eq!(a.status, 3);
        assert_eq!(json("t", &a.body).unwrap()["u"], "zed");
        let started = std::time::Instant::now();
        let e = run_program("t", &slow, &[], Duration::from_millis(300))
            .await
            .unwrap_err();
        assert!(e.contains("timed out"), "{e}");
        assert!(started.elapsed() < Duration::from_secs(5));
        let e = run_program(
            "t",
            &dir.path().join("missing"),
            &[],
            Duration::from_secs(1),
        )
        .await
        .unwrap_err();
        assert!(e.contains("cannot run"), "{e}");
        assert!(json("t", b"garbage").is_err());
    }
}
