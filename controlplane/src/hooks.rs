//! Running SFTPGo-style hooks: a setting is either an absolute program path
//! (run without a shell, hook data in `SFTPGO_*` environment variables,
//! output on stdout) or an `http://` URL (JSON over HTTP). Every run has a
//! deadline; a hook that hangs is killed, one that crashes or prints garbage
//! is an error the caller turns into a refusal — never a hang of the login
//! path.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

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
        if value.starts_with("http://") {
            return Ok(Some(Hook::Http(value.to_string())));
        }
        if value.starts_with("https://") {
            anyhow::bail!(
                "{key}: https hook URLs are not supported yet; use an http:// URL on a trusted \
                 network or a program"
            );
        }
        let path = PathBuf::from(value);
        anyhow::ensure!(
            path.is_absolute(),
            "{key}: {value:?} must be an absolute program path or an http:// URL"
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

/// Calls an HTTP hook: `body` as JSON (POST) or none (GET), `query` appended.
pub async fn call_http(
    name: &str,
    url: &str,
    query: &[(&str, String)],
    body: Option<&serde_json::Value>,
    timeout: Duration,
) -> Result<Answer, String> {
    let client = reqwest::Client::builder()
        .timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| format!("{name}: {e}"))?;
    let req = match body {
        Some(b) => client.post(url).json(b),
        None => client.get(url),
    };
    let resp = req
        .query(query)
        .send()
        .await
        .map_err(|e| format!("{name}: {url}: {e}"))?;
    let status = resp.status().as_u16() as i32;
    let mut body = Vec::new();
    let mut resp = resp;
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| format!("{name}: {url}: {e}"))?
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
