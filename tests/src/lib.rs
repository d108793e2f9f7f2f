//! Harness for end-to-end tests: starts real `ferry` / `ferry-edge` processes
//! on ports the kernel picks (port 0, read back from their `--addr-file`),
//! talks REST to them, and drives the real OpenSSH clients (`sftp`, `scp`,
//! `ssh-keygen`, `ssh-keyscan`) against them. Programs that need their port
//! chosen in advance get one from this test process's own range ([`ports`]).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

pub mod ports;
pub mod procs;
pub mod stores;
pub use ports::claim_port;
pub use procs::*;

/// Admin password every test process is started with.
pub const ADMIN_PASSWORD: &str = "admin-test-password";
/// Edge token of split-mode tests.
pub const EDGE_TOKEN: &str = "0123456789abcdef0123456789abcdef";
/// How long a process may take to bind its listeners (migrations, first
/// admin's hash, a loaded machine).
pub const START_TIMEOUT: Duration = Duration::from_secs(60);
/// A listener address asking the kernel for any free loopback port.
pub const ANY_PORT: &str = "127.0.0.1:0";

/// Path of a workspace binary, next to the test executable's directory.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> -> target/<profile>/<name>
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target profile directory");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: build the workspace first (cargo build --workspace)",
        path.display()
    );
    path
}

pub(crate) fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Polls `f` until it returns Some or `timeout` passes.
pub fn wait_for<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if start.elapsed() > timeout {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// True once an SSH server on `port` sends its identification line (edges
/// close connections until the control plane has sent them host keys).
pub fn ssh_ready(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&addr(port), Duration::from_millis(500)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(1000)));
    let mut buf = [0u8; 8];
    matches!(s.read_exact(&mut buf), Ok(())) && &buf == b"SSH-2.0-"
}

/// How a topology was started: everything the tests need to reach it.
pub struct Topology {
    pub dir: tempfile::TempDir,
    pub http_port: u16,
    pub grpc_port: u16,
    /// SFTP ports of the edges (one for `serve`, or one per
    /// `sftpd.bindings` entry).
    pub sftp_ports: Vec<u16>,
    /// Telemetry ports of separate edges (none for `serve`).
    pub telemetry_ports: Vec<u16>,
    pub procs: Vec<Proc>,
}

impl Topology {
    /// `ferry serve`: control plane plus embedded edge in one process.
    pub fn serve() -> Result<Self> {
        Self::serve_with(&[])
    }

    /// `ferry serve` with extra environment (e.g. `FERRY_DATA_PROVIDER__*`).
    pub fn serve_with(env: &[(String, String)]) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let mut cmd = ferry_serve(&dir.path().join("data"));
        cmd.env("FERRY_DEFAULT_ADMIN_PASSWORD", ADMIN_PASSWORD)
            .envs(env.iter().map(|(k, v)| (k, v)));
        let (proc, bound) = start_bound(cmd, dir.path(), "ferry")?;
        Self::from_serve(dir, proc, &bound)
    }

    fn from_serve(dir: tempfile::TempDir, proc: Proc, bound: &BoundAddrs) -> Result<Self> {
        let mut t = Self {
            dir,
            http_port: bound.port("http"),
            grpc_port: bound.port("grpc"),
            sftp_ports: bound.ports("sftp"),
            telemetry_ports: vec![],
            procs: vec![proc],
        };
        t.wait_ready()?;
        Ok(t)
    }

    /// `ferry serve --config-file NAME` with no address flags: `config`
    /// gets (http, grpc, sftp, sftp2) ports and returns the file's text.
    /// A file cannot ask for any free port (port 0 turns a listener off),
    /// so the ports come from this test's range ([`claim_port`]).
    pub fn serve_config(name: &str, config: impl Fn(u16, u16, u16, u16) -> String) -> Result<Self> {
        retry_on_port_clash(|| {
            let dir = tempfile::tempdir()?;
            // Its own directory: homes may not be inside the configuration's.
            let file = dir.path().join("etc").join(name);
            std::fs::create_dir_all(dir.path().join("etc"))?;
            let (http, grpc) = (claim_port(), claim_port());
            std::fs::write(&file, config(http, grpc, claim_port(), claim_port()))?;
            let mut cmd = Command::new(bin("ferry"));
            cmd.arg("serve")
                .arg("--data-dir")
                .arg(dir.path().join("data"))
                .arg("--config-file")
                .arg(&file)
                .env("FERRY_DEFAULT_ADMIN_PASSWORD", ADMIN_PASSWORD)
                .env_remove("FERRY_EDGE_TOKEN");
            let (proc, bound) = start_bound(cmd, dir.path(), "ferry")?;
            Self::from_serve(dir, proc, &bound)
        })
    }

    /// `ferry controlplane` plus `edges` separate `ferry-edge` processes,
    /// authenticated with [`EDGE_TOKEN`].
    pub fn split(edges: usize) -> Result<Self> {
        Self::split_with(edges, &[])
    }

    /// Like [`Topology::split`] with extra control-plane arguments.
    pub fn split_with(edges: usize, cp_args: &[&str]) -> Result<Self> {
        Self::split_full(edges, cp_args, &[])
    }

    /// Like [`Topology::split_with`], with extra environment for every edge.
    /// Each edge is given the control plane's real gRPC address, read from
    /// the control plane's address file.
    pub fn split_full(edges: usize, cp_args: &[&str], edge_env: &[(&str, &str)]) -> Result<Self> {
        Self::split_inner(edges, cp_args, edge_env, &[])
    }

    /// Like [`Topology::split_with`], with the control plane on `db`
    /// (PostgreSQL or MariaDB) instead of SQLite.
    pub fn split_on(db: &TempDatabase, edges: usize, cp_args: &[&str]) -> Result<Self> {
        Self::split_inner(edges, cp_args, &[], &db.env())
    }

    fn split_inner(
        edges: usize,
        cp_args: &[&str],
        edge_env: &[(&str, &str)],
        cp_env: &[(String, String)],
    ) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let mut cmd = ferry_controlplane(&dir.path().join("data"));
        cmd.args(cp_args)
            .envs(cp_env.iter().map(|(k, v)| (k, v)))
            .env("FERRY_DEFAULT_ADMIN_PASSWORD", ADMIN_PASSWORD)
            .env("FERRY_EDGE_TOKEN", EDGE_TOKEN);
        let (cp, cp_bound) = start_bound(cmd, dir.path(), "controlplane")?;
        let grpc = cp_bound.addr("grpc");
        let mut procs = vec![cp];
        let mut sftp_ports = Vec::new();
        let mut telemetry_ports = Vec::new();
        for i in 0..edges {
            let mut cmd = ferry_edge(grpc);
            cmd.arg("--edge-id")
                .arg(format!("edge-{i}"))
                .env("FERRY_EDGE_TOKEN", EDGE_TOKEN)
                .envs(edge_env.iter().copied());
            let (edge, bound) = start_bound(cmd, dir.path(), &format!("edge-{i}"))?;
            procs.push(edge);
            sftp_ports.push(bound.port("sftp"));
            telemetry_ports.push(bound.port("telemetry"));
        }
        let mut t = Self {
            dir,
            http_port: cp_bound.port("http"),
            grpc_port: grpc.port(),
            sftp_ports,
            telemetry_ports,
            procs,
        };
        t.wait_ready()?;
        Ok(t)
    }

    /// Waits until the control plane answers `/healthz` and every edge has
    /// its configuration (edges serve SSH once the control plane has sent
    /// them host keys); fails as soon as a process exits.
    fn wait_ready(&mut self) -> Result<()> {
        let base = self.base();
        let procs = &mut self.procs;
        let healthy = wait_for(START_TIMEOUT, || {
            if procs.iter_mut().any(|p| p.exit_status().is_some()) {
                return Some(false);
            }
            reqwest::blocking::get(format!("{base}/healthz"))
                .ok()
                .filter(|r| r.status().is_success())
                .map(|_| true)
        });
        if healthy != Some(true) {
            bail!("control plane did not become healthy:\n{}", self.logs());
        }
        let edges = if self.procs.len() == 1 { 0 } else { 1 };
        for i in edges..self.procs.len() {
            let procs = &mut self.procs;
            let ready = wait_for(START_TIMEOUT, || {
                if procs.iter_mut().any(|p| p.exit_status().is_some()) {
                    return Some(false);
                }
                procs[i]
                    .log_text()
                    .contains("configuration received from the control plane")
                    .then_some(true)
            });
            if ready != Some(true) {
                bail!(
                    "edge {} did not get its configuration:\n{}",
                    self.procs[i].log.display(),
                    self.logs()
                );
            }
        }
        Ok(())
    }

    /// Every process log, for failure messages.
    pub fn logs(&self) -> String {
        self.procs
            .iter()
            .map(|p| format!("--- {}\n{}", p.log.display(), p.log_text()))
            .collect()
    }

    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    /// Kills edge `i` (SIGKILL: no goodbye to the control plane).
    pub fn kill_edge(&mut self, i: usize) {
        self.procs[i + 1].kill();
    }

    pub fn sftp_port(&self) -> u16 {
        self.sftp_ports[0]
    }

    pub fn api(&self) -> Api {
        Api::login(&self.base(), "admin", ADMIN_PASSWORD).expect("admin token")
    }

    /// A fresh home directory path inside the test's temp dir.
    pub fn home(&self, name: &str) -> PathBuf {
        self.dir.path().join("homes").join(name)
    }

    /// Writes a new ed25519 key pair; returns the private key path.
    pub fn keypair(&self, name: &str) -> PathBuf {
        let path = self.dir.path().join(format!("key-{name}"));
        let status = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
            .arg(&path)
            .status()
            .expect("ssh-keygen runs");
        assert!(status.success(), "ssh-keygen failed");
        path
    }
}

/// Reads a public key file written by [`Topology::keypair`].
pub fn public_key(private: &Path) -> String {
    std::fs::read_to_string(private.with_extension("pub"))
        .or_else(|_| std::fs::read_to_string(format!("{}.pub", private.display())))
        .expect("public key file")
        .trim()
        .to_string()
}

/// A REST client holding an admin token.
pub struct Api {
    base: String,
    token: String,
    http: reqwest::blocking::Client,
}

/// A REST reply: status and JSON body (Null when the body is not JSON).
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub body: Value,
}

impl Api {
    pub fn login(base: &str, user: &str, password: &str) -> Result<Self> {
        let http = reqwest::blocking::Client::new();
        let r = http
            .get(format!("{base}/api/v2/token"))
            .basic_auth(user, Some(password))
            .send()?;
        let status = r.status().as_u16();
        let body: Value = r.json()?;
        if status != 200 {
            bail!("token request failed: {status} {body}");
        }
        let token = body["access_token"]
            .as_str()
            .context("access_token")?
            .to_string();
        Ok(Self {
            base: base.to_string(),
            token,
            http,
        })
    }

    /// The REST base URL this client talks to.
    pub fn base(&self) -> &str {
        &self.base
    }

    pub fn token(&self) -> &str {
        &self.token
    }

    pub fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Reply {
        let url = format!("{}{path}", self.base);
        let mut req = self
            .http
            .request(method.parse().expect("method"), url)
            .bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(b);
        }
        let r = req.send().expect("request sent");
        let status = r.status().as_u16();
        let text = r.text().unwrap_or_default();
        Reply {
            status,
            body: serde_json::from_str(&text).unwrap_or(Value::Null),
        }
    }

    /// Adds a user with full permissions on `/`; panics unless 201.
    pub fn add_user(&self, user: Value) -> Value {
        let r = self.call("POST", "/api/v2/users", Some(&user));
        assert_eq!(r.status, 201, "add user: {:?}", r.body);
        r.body
    }

    /// A user's (used_quota_size, used_quota_files) as the ledger has them.
    pub fn usage(&self, username: &str) -> (i64, i64) {
        let r = self.call("GET", &format!("/api/v2/users/{username}"), None);
        assert_eq!(r.status, 200, "{:?}", r.body);
        (
            r.body["used_quota_size"].as_i64().expect("used_quota_size"),
            r.body["used_quota_files"]
                .as_i64()
                .expect("used_quota_files"),
        )
    }

    pub fn connections(&self) -> Vec<Value> {
        let r = self.call("GET", "/api/v2/connections", None);
        assert_eq!(r.status, 200, "{:?}", r.body);
        r.body.as_array().cloned().unwrap_or_default()
    }
}

/// A user body with full permissions and the given home.
pub fn user_json(name: &str, password: &str, home: &Path) -> Value {
    json!({
        "username": name,
        "password": password,
        "home_dir": home,
        "permissions": {"/": ["*"]},
    })
}

/// How a client logs in.
#[derive(Clone, Debug)]
pub enum Cred {
    Password(String),
    Key(PathBuf),
}

const COMMON_OPTS: &[&str] = &[
    "-oStrictHostKeyChecking=no",
    "-oUserKnownHostsFile=/dev/null",
    "-oLogLevel=ERROR",
    "-oConnectTimeout=20",
];

fn client_command(program: &str, cred: &Cred) -> Command {
    let mut cmd = match cred {
        Cred::Password(p) => {
            let mut c = Command::new("sshpass");
            c.arg("-p").arg(p).arg(program);
            c.args(COMMON_OPTS).args([
                "-oBatchMode=no",
                "-oPubkeyAuthentication=no",
                "-oPreferredAuthentications=password",
                "-oNumberOfPasswordPrompts=1",
            ]);
            c
        }
        Cred::Key(k) => {
            let mut c = Command::new(program);
            c.args(COMMON_OPTS)
                .args([
                    "-oBatchMode=yes",
                    "-oPreferredAuthentications=publickey",
                    "-oIdentitiesOnly=yes",
                    "-i",
                ])
                .arg(k);
            c
        }
    };
    cmd.stdin(Stdio::null());
    cmd
}

/// Runs `sftp -b` with the given batch commands; returns its output.
pub fn sftp_batch(port: u16, user: &str, cred: &Cred, commands: &str, extra: &[&str]) -> Output {
    let dir = tempfile::tempdir().expect("tempdir");
    let batch = dir.path().join("batch");
    std::fs::write(&batch, commands).expect("batch file");
    let mut cmd = client_command("sftp", cred);
    cmd.args(extra)
        .arg("-P")
        .arg(port.to_string())
        .arg("-b")
        .arg(&batch)
        .arg(format!("{user}@127.0.0.1"));
    cmd.output().expect("sftp runs")
}

/// Runs one sftp command; returns (success, stdout and stderr together).
pub fn sftp1(port: u16, user: &str, cred: &Cred, command: &str) -> (bool, String) {
    let out = sftp_batch(port, user, cred, &format!("{command}\n"), &[]);
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// A password credential.
pub fn pw(p: &str) -> Cred {
    Cred::Password(p.into())
}

/// Runs `ferry serve` with one extra environment variable and returns its
/// output; for settings that must stop the start.
pub fn serve_with_setting(key: &str, value: &str) -> Output {
    let dir = tempfile::tempdir().expect("tempdir");
    Command::new(bin("ferry"))
        .args(["serve", "--data-dir"])
        .arg(dir.path())
        .args([
            "--http-bind",
            "127.0.0.1:0",
            "--grpc-bind",
            "127.0.0.1:0",
            "--sftp-bind",
            "127.0.0.1:0",
        ])
        .env(key, value)
        .output()
        .expect("ferry runs")
}

/// Runs `scp` (SFTP protocol, OpenSSH's default) with the given arguments.
pub fn scp(port: u16, cred: &Cred, args: &[String]) -> Output {
    let mut cmd = client_command("scp", cred);
    cmd.arg("-P").arg(port.to_string()).args(args);
    cmd.output().expect("scp runs")
}

/// Runs `ssh user@127.0.0.1 COMMAND`, feeding `stdin`.
pub fn ssh_exec(port: u16, user: &str, cred: &Cred, command: &str, stdin: &[u8]) -> Output {
    let mut cmd = client_command("ssh", cred);
    cmd.arg("-p")
        .arg(port.to_string())
        .arg(format!("{user}@127.0.0.1"))
        .arg(command)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("ssh runs");
    let mut input = child.stdin.take().expect("stdin");
    let data = stdin.to_vec();
    let feeder = std::thread::spawn(move || {
        let _ = input.write_all(&data);
    });
    let out = child.wait_with_output().expect("ssh finishes");
    let _ = feeder.join();
    out
}

/// An interactive sftp session kept open until dropped.
pub struct OpenSftp {
    child: Child,
    stdin: Option<std::process::ChildStdin>,
    /// The client's output lines, read by a thread from the first
    /// [`OpenSftp::run_until`] on.
    lines: Option<std::sync::mpsc::Receiver<String>>,
}

impl OpenSftp {
    pub fn start(port: u16, user: &str, cred: &Cred) -> Self {
        Self::start_with(port, user, cred, &[])
    }

    /// Like [`OpenSftp::start`] with extra client options.
    pub fn start_with(port: u16, user: &str, cred: &Cred, extra: &[&str]) -> Self {
        let mut cmd = client_command("sftp", cred);
        cmd.args(extra)
            .arg("-P")
            .arg(port.to_string())
            .arg(format!("{user}@127.0.0.1"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let mut child = cmd.spawn().expect("sftp starts");
        let stdin = child.stdin.take();
        Self {
            child,
            stdin,
            lines: None,
        }
    }

    /// Sends one command without waiting for its output.
    pub fn send(&mut self, command: &str) {
        if let Some(stdin) = self.stdin.as_mut() {
            let _ = writeln!(stdin, "{command}");
            let _ = stdin.flush();
        }
    }

    /// Sends one command and waits for an output line containing `marker`
    /// (output before the command is skipped).
    pub fn run_until(&mut self, command: &str, marker: &str, timeout: Duration) -> bool {
        if self.lines.is_none() {
            let Some(out) = self.child.stdout.take() else {
                return false;
            };
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(out);
                let mut line = String::new();
                while reader.read_line(&mut line).unwrap_or(0) > 0 {
                    if tx.send(std::mem::take(&mut line)).is_err() {
                        break;
                    }
                }
            });
            self.lines = Some(rx);
        }
        let lines = self.lines.take().expect("set above");
        while lines.try_recv().is_ok() {}
        self.send(command);
        let deadline = Instant::now() + timeout;
        let found = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match lines.recv_timeout(left) {
                Ok(line) if line.contains(marker) => break true,
                Ok(_) => {}
                Err(_) => break false,
            }
        };
        self.lines = Some(lines);
        found
    }

    /// Waits for the client to exit; None on timeout.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        wait_for(timeout, || self.child.try_wait().ok().flatten())
    }
}

impl Drop for OpenSftp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Random bytes written to `path`.
pub fn random_file(path: &Path, len: usize) {
    use rand::Rng;
    let mut data = vec![0u8; len];
    rand::rng().fill_bytes(&mut data);
    std::fs::write(path, data).expect("write random file");
}

/// (bytes, files) of the regular files under `dir`: what a quota scan counts.
pub fn disk_usage(dir: &Path) -> (i64, i64) {
    let mut total = (0, 0);
    let Ok(rd) = std::fs::read_dir(dir) else {
        return total;
    };
    for e in rd.flatten() {
        let Ok(m) = e.path().symlink_metadata() else {
            continue;
        };
        if m.is_dir() {
            let (b, f) = disk_usage(&e.path());
            total = (total.0 + b, total.1 + f);
        } else if m.is_file() {
            total = (total.0 + m.len() as i64, total.1 + 1);
        }
    }
    total
}

pub fn sha256_file(path: &Path) -> String {
    use sha2::Digest;
    let data = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    hex::encode(sha2::Sha256::digest(&data))
}

/// Output as text, for assertion messages.
pub fn describe(out: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A PostgreSQL or MariaDB database created for one test on this machine's
/// server and dropped when the value is dropped.
pub struct TempDatabase {
    driver: &'static str,
    pub name: String,
}

const PG_ADMIN: &str = "postgres://postgres@127.0.0.1:5432/test";
const MYSQL_ADMIN: &str = "mysql://root@127.0.0.1:3306/test";

impl TempDatabase {
    fn create(driver: &'static str) -> Self {
        use diesel::Connection;
        use diesel::connection::SimpleConnection;
        let name = format!("ferry_e2e_{:016x}", rand::random::<u64>());
        let sql = format!("CREATE DATABASE {name}");
        match driver {
            "postgresql" => diesel::PgConnection::establish(PG_ADMIN)
                .expect("PostgreSQL on 127.0.0.1:5432")
                .batch_execute(&sql),
            _ => diesel::MysqlConnection::establish(MYSQL_ADMIN)
                .expect("MariaDB on 127.0.0.1:3306")
                .batch_execute(&sql),
        }
        .expect("create database");
        Self { driver, name }
    }

    pub fn postgres() -> Self {
        Self::create("postgresql")
    }

    pub fn mysql() -> Self {
        Self::create("mysql")
    }

    /// The `FERRY_DATA_PROVIDER__*` settings that select this database.
    pub fn env(&self) -> Vec<(String, String)> {
        let user = if self.driver == "postgresql" {
            "postgres"
        } else {
            "root"
        };
        [
            ("DRIVER", self.driver),
            ("NAME", &self.name),
            ("USERNAME", user),
        ]
        .into_iter()
        .map(|(k, v)| (format!("FERRY_DATA_PROVIDER__{k}"), v.to_string()))
        .collect()
    }
}

impl Drop for TempDatabase {
    fn drop(&mut self) {
        use diesel::Connection;
        use diesel::connection::SimpleConnection;
        let sql = match self.driver {
            "postgresql" => format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
            _ => format!("DROP DATABASE IF EXISTS {}", self.name),
        };
        let _ = match self.driver {
            "postgresql" => {
                diesel::PgConnection::establish(PG_ADMIN).map(|mut c| c.batch_execute(&sql))
            }
            _ => diesel::MysqlConnection::establish(MYSQL_ADMIN).map(|mut c| c.batch_execute(&sql)),
        };
    }
}

/// A real HAProxy in TCP mode in front of one SSH port: `v1_port` sends
/// PROXY v1 headers (`send-proxy`), `v2_port` PROXY v2 (`send-proxy-v2`).
pub struct Haproxy {
    _proc: Proc,
    pub v1_port: u16,
    pub v2_port: u16,
}

impl Haproxy {
    /// Its frontends take two ports of this test's range; a start that
    /// finds one taken is made again on others.
    pub fn start(dir: &Path, backend_port: u16) -> Result<Self> {
        let name = format!("haproxy-{backend_port}");
        let cfg = dir.join(format!("{name}.cfg"));
        let (proc, ports) = start_on_claimed_ports(2, dir, &name, |ports| {
            let (v1_port, v2_port) = (ports[0], ports[1]);
            std::fs::write(
                &cfg,
                format!(
                    "global\n  maxconn 200\n\
                     defaults\n  mode tcp\n  timeout connect 5s\n  timeout client 60s\n  timeout server 60s\n\
                     frontend v1\n  bind 127.0.0.1:{v1_port}\n  default_backend v1\n\
                     backend v1\n  server edge 127.0.0.1:{backend_port} send-proxy\n\
                     frontend v2\n  bind 127.0.0.1:{v2_port}\n  default_backend v2\n\
                     backend v2\n  server edge 127.0.0.1:{backend_port} send-proxy-v2\n"
                ),
            )?;
            let mut cmd = Command::new("haproxy");
            cmd.arg("-db").arg("-f").arg(&cfg);
            Ok(cmd)
        })?;
        Ok(Self {
            _proc: proc,
            v1_port: ports[0],
            v2_port: ports[1],
        })
    }
}

/// Opens a secret the control plane stored sealed (`$aes-256-gcm$v1$…`,
/// bound to `name`) with the master key text (`kms.secrets.master_key`, or
/// the generated `DATA_DIR/master-key`), as Ferry derives it.
pub fn open_sealed(master_key: &str, stored: &str, name: &str) -> Result<String> {
    use aes_gcm::aead::{Aead, KeyInit, Payload};
    use base64::Engine;
    let mut key = [0u8; 32];
    hkdf::Hkdf::<sha2::Sha256>::new(Some(b"ferry kms"), master_key.trim_end().as_bytes())
        .expand(b"ferry secrets v1", &mut key)
        .map_err(|_| anyhow::anyhow!("hkdf"))?;
    let raw = base64::engine::general_purpose::STANDARD.decode(
        stored
            .strip_prefix("$aes-256-gcm$v1$")
            .context("not a sealed value")?,
    )?;
    let (nonce, sealed) = raw.split_at(12);
    let nonce: [u8; 12] = nonce.try_into()?;
    let plain = aes_gcm::Aes256Gcm::new(&key.into())
        .decrypt(
            &aes_gcm::Nonce::from(nonce),
            Payload {
                msg: sealed,
                aad: name.as_bytes(),
            },
        )
        .map_err(|_| anyhow::anyhow!("{name}: wrong key"))?;
    Ok(String::from_utf8(plain)?)
}

/// The token signing key of a SQLite-backed control plane, opened with the
/// master key it generated in `data_dir` (what an attacker holding both
/// files could do; tests use it to sign tokens of their own).
pub fn jwt_key(data_dir: &Path) -> Vec<u8> {
    use diesel::prelude::*;
    use ferry_schema::configs;
    let db = data_dir.join("ferry.db");
    let mut conn = diesel::SqliteConnection::establish(db.to_str().expect("UTF-8 path"))
        .expect("the database opens");
    let stored: String = configs::table
        .find("jwt_signing_key")
        .select(configs::value)
        .first(&mut conn)
        .expect("a stored signing key");
    let master = std::fs::read_to_string(data_dir.join("master-key")).expect("master-key");
    hex::decode(open_sealed(&master, &stored, "jwt_signing_key").expect("sealed key opens"))
        .expect("hex key")
}

/// rclone's sftp backend against `t`'s first edge, logging in as `user`
/// (rclone and its `obscure`d password; no config file).
pub fn rclone(t: &Topology, user: &str, password: &str, args: &[&str]) -> Output {
    let obscured = Command::new("rclone")
        .args(["obscure", password])
        .output()
        .expect("rclone (.ci/run installs it)");
    let obscured = String::from_utf8(obscured.stdout).unwrap();
    Command::new("rclone")
        .args(args)
        .args(["--sftp-host", "127.0.0.1", "--sftp-user", user])
        .args(["--sftp-port", &t.sftp_port().to_string()])
        .args(["--sftp-pass", obscured.trim(), "--config", "/dev/null"])
        .output()
        .unwrap()
}

/// Open file descriptors of process `pid`.
pub fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

/// TCP connections whose local port is `port` and that are still open on
/// that side (ESTABLISHED or CLOSE_WAIT), from `/proc/net/tcp{,6}`.
pub fn open_tcp_on(port: u16) -> usize {
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|f| std::fs::read_to_string(f).ok())
        .flat_map(|text| {
            text.lines()
                .skip(1)
                .filter(|l| {
                    let cols: Vec<&str> = l.split_whitespace().collect();
                    let local_port = cols
                        .get(1)
                        .and_then(|a| a.rsplit(':').next())
                        .and_then(|p| u16::from_str_radix(p, 16).ok());
                    local_port == Some(port) && matches!(cols.get(3), Some(&"01") | Some(&"08"))
                })
                .map(|_| ())
                .collect::<Vec<_>>()
        })
        .count()
}

/// Runs an `sftp` login that must be refused at authentication: asserts the
/// client failed with OpenSSH's `Permission denied (…)` (not a later error)
/// and returns the client's output.
pub fn refused_login(port: u16, user: &str, cred: &Cred) -> String {
    let out = sftp_batch(port, user, cred, "pwd\n", &[]);
    let text = describe(&out);
    assert!(!out.status.success(), "{user} was let in: {text}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Permission denied"),
        "{user} was not refused at authentication: {text}"
    );
    text
}

/// True when `logs` hold a `login failed`/`login refused` line for `user`
/// that gives `reason`.
pub fn refusal_logged(logs: &str, user: &str, reason: &str) -> bool {
    logs.lines().any(|l| {
        (l.contains("login failed") || l.contains("login refused"))
            && (l.contains(&format!("\"user\":\"{user}\""))
                || l.contains(&format!("\"username\":\"{user}\"")))
            && l.contains(reason)
    })
}
