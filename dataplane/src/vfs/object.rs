//! Object stores (S3, Google Cloud Storage, Azure Blob) as roots of a
//! user's tree, through `object_store`.
//!
//! A root is a bucket (or container) and a key prefix. A virtual path under
//! the root maps to the key `prefix + path`; directories are key prefixes,
//! plus the empty `dir/` marker objects `mkdir` makes (as SFTPGo, the S3
//! console and rclone do). Objects cannot be linked, changed in place or
//! appended to: uploads are streamed into multipart uploads that become
//! visible only when completed, and reads are ranged GETs with read-ahead.
//! Memory per transfer is bounded by part size × (concurrency + 1), plus the
//! reordering window of an upload.
//!
//! Clients are cached per distinct configuration, so sessions of the same
//! bucket share one connection pool.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use ferry_proto::edge::v1::Storage;
use futures::future::{BoxFuture, FutureExt, Shared};
use futures::{StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3, AmazonS3Builder, AwsAuthorizer};
use object_store::azure::MicrosoftAzureBuilder;
use object_store::client::{HttpClient, HttpConnector, HttpRequest, ReqwestConnector};
use object_store::gcp::GoogleCloudStorageBuilder;
use object_store::path::Path as OPath;
use object_store::{
    ClientOptions, ObjectMeta, ObjectStore, ObjectStoreExt, PutPayload, RetryConfig, WriteMultipart,
};
use prost::Message;

use super::FsError;
use super::ops::Meta;

/// Defaults of SFTPGo's S3 settings: 5 MiB parts, 2 parts in flight up,
/// 5 ranged GETs ahead down.
const DEFAULT_PART: usize = 5 << 20;
const DEFAULT_UP_CONCURRENCY: usize = 2;
const DEFAULT_DOWN_PART: usize = 5 << 20;
const DEFAULT_DOWN_CONCURRENCY: usize = 5;
/// Writes that arrive ahead of the next expected offset wait here (SFTP
/// clients keep many writes in flight, slightly out of order).
const REORDER_WINDOW: usize = 16 << 20;
/// Clients kept in the cache before it starts over.
const MAX_CLIENTS: usize = 256;

/// `provider` values of SFTPGo's `filesystem`.
pub const PROVIDER_S3: i32 = 1;
pub const PROVIDER_GCS: i32 = 2;
pub const PROVIDER_AZURE: i32 = 3;

/// A connected store (shared by every root with the same configuration).
struct Client {
    store: Arc<dyn ObjectStore>,
    /// S3 only: raw signed requests for directory markers (`object_store`
    /// paths cannot end with `/`).
    s3: Option<S3Raw>,
    /// Azure only: the same, with shared-key (or SAS) requests.
    azure: Option<AzureRaw>,
}

struct AzureRaw {
    store: object_store::azure::MicrosoftAzure,
    http: HttpClient,
    /// `{account URL}/{container}`.
    base: String,
    account: String,
}

/// Azurite's well-known development account (public, in Microsoft's docs).
const AZURITE_ACCOUNT: &str = "devstoreaccount1";
const AZURITE_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

struct S3Raw {
    store: AmazonS3,
    http: HttpClient,
    /// `{endpoint}/{bucket}` (path style) or the virtual-hosted bucket URL.
    base: String,
    region: String,
}

/// Transfer sizes of one root.
#[derive(Debug, Clone, Copy)]
struct Tuning {
    part: usize,
    up_concurrency: usize,
    down_part: usize,
    down_concurrency: usize,
}

/// One root of a user's tree that lives in an object store.
pub(super) struct ObjectRoot {
    client: Arc<Client>,
    /// Empty, or ends with `/`.
    prefix: String,
    /// `s3://bucket/prefix` for logs (never a secret).
    pub label: String,
    /// The user whose tree this is (for logs).
    user: String,
    tuning: Tuning,
}

impl std::fmt::Debug for ObjectRoot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectRoot")
            .field("label", &self.label)
            .finish()
    }
}

static CLIENTS: LazyLock<Mutex<HashMap<Vec<u8>, Arc<Client>>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

fn scheme(provider: i32) -> &'static str {
    match provider {
        PROVIDER_S3 => "s3",
        PROVIDER_GCS => "gs",
        _ => "azblob",
    }
}

fn size_or(v: i64, default: usize) -> usize {
    usize::try_from(v)
        .ok()
        .filter(|n| *n > 0)
        .unwrap_or(default)
}

impl ObjectRoot {
    /// The root for `s` (a client from the cache, or a new one).
    pub fn open(s: &Storage, user: &str) -> std::io::Result<Self> {
        if !s.key_prefix.is_empty()
            && (!s.key_prefix.ends_with('/') || s.key_prefix.starts_with('/'))
        {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "key_prefix must end with \"/\" and must not start with \"/\"",
            ));
        }
        // The client does not depend on the prefix or the transfer sizes.
        let key = Storage {
            key_prefix: String::new(),
            upload_part_size: 0,
            upload_concurrency: 0,
            download_part_size: 0,
            download_concurrency: 0,
            ..s.clone()
        }
        .encode_to_vec();
        let client = {
            let mut cache = CLIENTS.lock().unwrap_or_else(|e| e.into_inner());
            match cache.get(&key) {
                Some(c) => c.clone(),
                None => {
                    let c = Arc::new(build(s)?);
                    if cache.len() >= MAX_CLIENTS {
                        cache.clear();
                    }
                    cache.insert(key, c.clone());
                    c
                }
            }
        };
        Ok(Self {
            client,
            prefix: s.key_prefix.clone(),
            label: format!("{}://{}/{}", scheme(s.provider), s.bucket, s.key_prefix),
            user: user.to_string(),
            tuning: Tuning {
                part: size_or(s.upload_part_size, DEFAULT_PART).max(DEFAULT_PART),
                up_concurrency: size_or(s.upload_concurrency.into(), DEFAULT_UP_CONCURRENCY),
                down_part: size_or(s.download_part_size, DEFAULT_DOWN_PART),
                down_concurrency: size_or(s.download_concurrency.into(), DEFAULT_DOWN_CONCURRENCY),
            },
        })
    }

    fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.client.store
    }

    /// The key of `inner` (a path inside the root, `/`-separated, no `.`
    /// or `..`), without a trailing `/`.
    pub fn key(&self, inner: &str) -> String {
        let inner = inner.trim_matches('/');
        if inner.is_empty() {
            self.prefix.trim_end_matches('/').to_string()
        } else {
            format!("{}{inner}", self.prefix)
        }
    }

    fn path(&self, inner: &str) -> Result<OPath, FsError> {
        OPath::parse(self.key(inner))
            .map_err(|_| FsError::Unsupported("this name on object storage"))
    }

    /// The listing prefix of directory `inner` (None: the whole bucket).
    fn dir_path(&self, inner: &str) -> Result<Option<OPath>, FsError> {
        let p = self.path(inner)?;
        Ok((!p.as_ref().is_empty()).then_some(p))
    }

    /// Maps a store error to a client status, logging what the client does
    /// not see (backend and bucket; the user is on the session's span).
    fn fail(&self, op: &'static str, e: object_store::Error) -> FsError {
        match e {
            object_store::Error::NotFound { .. } => FsError::NotFound,
            object_store::Error::AlreadyExists { .. }
            | object_store::Error::Precondition { .. } => FsError::Exists,
            object_store::Error::PermissionDenied { .. }
            | object_store::Error::Unauthenticated { .. } => {
                tracing::warn!(user = %self.user, storage = %self.label, op, error = %e, "object storage refused the request");
                FsError::Failure("the object storage refused the credentials")
            }
            object_store::Error::NotSupported { .. }
            | object_store::Error::NotImplemented { .. } => {
                FsError::Unsupported("not supported by the object storage")
            }
            e => {
                tracing::warn!(user = %self.user, storage = %self.label, op, error = %e, "object storage request failed");
                FsError::Failure("the object storage is unavailable")
            }
        }
    }

    /// What is at `inner`: a file (an object), a directory (a prefix with
    /// something under it, or a marker), or nothing.
    pub async fn stat(&self, inner: &str) -> Result<Option<Meta>, FsError> {
        // The root is a directory, whether or not anything is stored yet.
        let Some(path) = self
            .dir_path(inner)?
            .filter(|_| !inner.trim_matches('/').is_empty())
        else {
            return Ok(Some(dir_meta(0)));
        };
        match self.store().head(&path).await {
            Ok(m) => return Ok(Some(file_meta(&m))),
            Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(self.fail("head", e)),
        }
        let mut under = self.store().list(Some(&path));
        match under.next().await {
            Some(Ok(m)) => Ok(Some(dir_meta(if m.location == path {
                m.last_modified.timestamp()
            } else {
                0
            }))),
            Some(Err(e)) => Err(self.fail("list", e)),
            None => Ok(self.hidden_marker(inner).await?.then(|| dir_meta(0))),
        }
    }

    /// Azure listings leave out blobs whose name ends in `/`: an empty
    /// directory's marker is found by asking for it.
    async fn hidden_marker(&self, inner: &str) -> Result<bool, FsError> {
        if self.client.azure.is_none() {
            return Ok(false);
        }
        match self.marker("HEAD", inner).await {
            Ok(()) => Ok(true),
            Err(FsError::NotFound) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The entries of directory `inner`: (name, meta), sorted by name.
    pub async fn list_dir(&self, inner: &str) -> Result<Vec<(String, Meta)>, FsError> {
        let dir = self.dir_path(inner)?;
        let listed = self
            .store()
            .list_with_delimiter(dir.as_ref())
            .await
            .map_err(|e| self.fail("list", e))?;
        let mut out: BTreeMap<String, Meta> = BTreeMap::new();
        for p in &listed.common_prefixes {
            if let Some(name) = p.filename() {
                out.insert(name.to_string(), dir_meta(0));
            }
        }
        for m in &listed.objects {
            // The directory's own marker.
            if Some(&m.location) == dir.as_ref() {
                continue;
            }
            if let Some(name) = m.location.filename() {
                out.entry(name.to_string()).or_insert_with(|| file_meta(m));
            }
        }
        Ok(out.into_iter().collect())
    }

    /// Creates the marker of directory `inner`.
    pub async fn mkdir(&self, inner: &str) -> Result<(), FsError> {
        self.marker("PUT", inner).await
    }

    /// Removes directory `inner` when nothing is under it.
    pub async fn rmdir(&self, inner: &str) -> Result<(), FsError> {
        let Some(path) = self.dir_path(inner)? else {
            return Err(FsError::PermissionDenied);
        };
        let mut under = self.store().list(Some(&path));
        let mut marker = false;
        while let Some(m) = under.next().await {
            let m = m.map_err(|e| self.fail("list", e))?;
            if m.location == path {
                marker = true;
            } else {
                return Err(FsError::NotEmpty);
            }
        }
        if !marker && !self.hidden_marker(inner).await? {
            return Err(FsError::NotFound);
        }
        self.marker("DELETE", inner).await
    }

    /// PUT or DELETE of the `dir/` marker of `inner` (S3: a signed raw
    /// request, since `object_store` paths never end with `/`).
    async fn marker(&self, method: &str, inner: &str) -> Result<(), FsError> {
        let key = format!("{}/", self.key(inner));
        self.path(inner)?;
        if let Some(raw) = &self.client.azure {
            return self.azure_marker(raw, method, &key).await;
        }
        let Some(raw) = &self.client.s3 else {
            return Err(FsError::Unsupported(
                "empty directories on this object storage",
            ));
        };
        let url = format!("{}/{}", raw.base, encode_key(&key));
        let mut req: HttpRequest = http::Request::builder()
            .method(method)
            .uri(&url)
            .header("content-length", "0")
            .body(Vec::<u8>::new().into())
            .map_err(|_| FsError::Invalid)?;
        let cred = raw
            .store
            .credentials()
            .get_credential()
            .await
            .map_err(|e| self.fail("credentials", e))?;
        AwsAuthorizer::new(&cred, "s3", &raw.region)
            .try_authorize(&mut req, None)
            .map_err(|e| self.fail("sign", e))?;
        self.send_marker(&raw.http, method, req).await
    }

    /// The Azure side of [`ObjectRoot::marker`]: a zero-length block blob
    /// named `key` (ending in `/`).
    async fn azure_marker(&self, raw: &AzureRaw, method: &str, key: &str) -> Result<(), FsError> {
        let cred = raw
            .store
            .credentials()
            .get_credential()
            .await
            .map_err(|e| self.fail("credentials", e))?;
        let mut url = format!("{}/{}", raw.base, encode_key(key));
        if let object_store::azure::AzureCredential::SASToken(pairs) = &*cred {
            let query: Vec<String> = pairs
                .iter()
                .map(|(k, v)| format!("{}={}", encode_component(k), encode_component(v)))
                .collect();
            url = format!("{url}?{}", query.join("&"));
        }
        let mut req: HttpRequest = http::Request::builder()
            .method(method)
            .uri(&url)
            .header("content-length", "0")
            .header("x-ms-blob-type", "BlockBlob")
            .body(Vec::<u8>::new().into())
            .map_err(|_| FsError::Invalid)?;
        object_store::azure::AzureAuthorizer::new(&cred, &raw.account)
            .try_authorize(&mut req)
            .map_err(|e| self.fail("sign", e))?;
        self.send_marker(&raw.http, method, req).await
    }

    async fn send_marker(
        &self,
        http: &HttpClient,
        method: &str,
        req: HttpRequest,
    ) -> Result<(), FsError> {
        let resp = http.execute(req).await.map_err(|e| {
            tracing::warn!(user = %self.user, storage = %self.label, error = %e, "object storage request failed");
            FsError::Failure("the object storage is unavailable")
        })?;
        let status = resp.status();
        if status.is_success() || (method == "DELETE" && status.as_u16() == 404) {
            return Ok(());
        }
        tracing::warn!(user = %self.user, storage = %self.label, method, %status, "object storage refused a directory marker");
        Err(match status.as_u16() {
            401 | 403 => FsError::Failure("the object storage refused the credentials"),
            404 => FsError::NotFound,
            _ => FsError::Failure("the object storage is unavailable"),
        })
    }

    /// Removes the object at `inner`.
    pub async fn remove(&self, inner: &str) -> Result<(), FsError> {
        let path = self.path(inner)?;
        self.store()
            .delete(&path)
            .await
            .map_err(|e| self.fail("delete", e))
    }

    /// Server-side copy of the object `from` to `to` (same store).
    pub async fn copy_within(
        &self,
        from: &str,
        to: &ObjectRoot,
        to_inner: &str,
    ) -> Result<(), FsError> {
        if !Arc::ptr_eq(&self.client, &to.client) {
            return Err(FsError::CrossDevice);
        }
        let (a, b) = (self.path(from)?, to.path(to_inner)?);
        self.store()
            .copy(&a, &b)
            .await
            .map_err(|e| self.fail("copy", e))
    }

    /// Renames: a file is copied then deleted; a directory only when it is
    /// empty (its marker moves).
    pub async fn rename(
        &self,
        from: &str,
        from_meta: &Meta,
        to: &ObjectRoot,
        to_inner: &str,
    ) -> Result<(), FsError> {
        if from_meta.is_dir() {
            if !Arc::ptr_eq(&self.client, &to.client) {
                return Err(FsError::CrossDevice);
            }
            let path = self.path(from)?;
            let mut under = self.store().list(Some(&path));
            while let Some(m) = under.next().await {
                if m.map_err(|e| self.fail("list", e))?.location != path {
                    return Err(FsError::Unsupported(
                        "renaming a directory that is not empty on object storage",
                    ));
                }
            }
            to.marker("PUT", to_inner).await?;
            return self.marker("DELETE", from).await;
        }
        self.copy_within(from, to, to_inner).await?;
        self.remove(from).await
    }

    /// (bytes, files) under `inner`: a walk by directory, so markers are
    /// never taken for files.
    pub async fn usage(&self, inner: &str) -> Result<(i64, i64), FsError> {
        let mut total = (0i64, 0i64);
        let mut todo = vec![inner.trim_matches('/').to_string()];
        while let Some(dir) = todo.pop() {
            for (name, meta) in self.list_dir(&dir).await? {
                let child = if dir.is_empty() {
                    name
                } else {
                    format!("{dir}/{name}")
                };
                if meta.is_dir() {
                    todo.push(child);
                } else {
                    total.0 = total
                        .0
                        .saturating_add(i64::try_from(meta.size).unwrap_or(i64::MAX));
                    total.1 += 1;
                }
            }
        }
        Ok(total)
    }

    /// Removes everything at or under `inner`; returns the usage that went.
    pub async fn remove_tree(&self, inner: &str, meta: &Meta) -> (i64, i64, Result<(), FsError>) {
        if !meta.is_dir() {
            return match self.remove(inner).await {
                Ok(()) => (i64::try_from(meta.size).unwrap_or(i64::MAX), 1, Ok(())),
                Err(e) => (0, 0, Err(e)),
            };
        }
        let mut gone = (0i64, 0i64);
        let mut dirs = vec![inner.trim_matches('/').to_string()];
        let mut i = 0;
        while i < dirs.len() {
            let dir = dirs[i].clone();
            i += 1;
            let listed = match self.list_dir(&dir).await {
                Ok(l) => l,
                Err(e) => return (gone.0, gone.1, Err(e)),
            };
            for (name, m) in listed {
                let child = if dir.is_empty() {
                    name
                } else {
                    format!("{dir}/{name}")
                };
                if m.is_dir() {
                    dirs.push(child);
                } else if let Err(e) = self.remove(&child).await {
                    return (gone.0, gone.1, Err(e));
                } else {
                    gone.0 = gone
                        .0
                        .saturating_add(i64::try_from(m.size).unwrap_or(i64::MAX));
                    gone.1 += 1;
                }
            }
        }
        // Markers, deepest first.
        for dir in dirs.iter().rev() {
            if let Err(e) = self.marker("DELETE", dir).await
                && !matches!(e, FsError::Unsupported(_))
            {
                return (gone.0, gone.1, Err(e));
            }
        }
        (gone.0, gone.1, Ok(()))
    }

    /// Opens the object at `inner` (of `size` bytes) for reading.
    pub fn reader(self: &Arc<Self>, inner: &str, size: u64) -> Result<ObjectReader, FsError> {
        Ok(ObjectReader {
            root: self.clone(),
            path: self.path(inner)?,
            size,
            parts: tokio::sync::Mutex::new(BTreeMap::new()),
        })
    }

    /// Starts an upload to `inner` (nothing is visible until `finish`).
    pub fn writer(self: &Arc<Self>, inner: &str) -> Result<ObjectWriter, FsError> {
        Ok(ObjectWriter {
            root: self.clone(),
            path: self.path(inner)?,
            state: tokio::sync::Mutex::new(WriteState::default()),
        })
    }
}

/// One component of a URL, percent-encoded except RFC 3986's unreserved
/// characters (as SigV4 and Azure's canonical form expect).
fn encode_component(seg: &str) -> String {
    const KEEP: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~');
    percent_encoding::utf8_percent_encode(seg, KEEP).to_string()
}

/// A key in a URL path: each segment encoded, `/` kept.
fn encode_key(key: &str) -> String {
    key.split('/')
        .map(encode_component)
        .collect::<Vec<_>>()
        .join("/")
}

fn build(s: &Storage) -> std::io::Result<Client> {
    let bad = |e: object_store::Error| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("object storage configuration: {e}"),
        )
    };
    let mut options = ClientOptions::new()
        .with_allow_invalid_certificates(s.skip_tls_verify)
        .with_connect_timeout(Duration::from_secs(10))
        .with_timeout(Duration::from_secs(300));
    if s.endpoint.starts_with("http://") || s.sas_url.starts_with("http://") {
        options = options.with_allow_http(true);
    }
    let retry = RetryConfig::default();
    match s.provider {
        PROVIDER_S3 => {
            let region = if s.region.is_empty() {
                "us-east-1".to_string()
            } else {
                s.region.clone()
            };
            let mut b = AmazonS3Builder::new()
                .with_bucket_name(&s.bucket)
                .with_region(&region)
                .with_client_options(options.clone())
                .with_retry(retry)
                .with_virtual_hosted_style_request(!s.force_path_style && s.endpoint.is_empty());
            if !s.access_key.is_empty() {
                b = b
                    .with_access_key_id(&s.access_key)
                    .with_secret_access_key(&s.secret);
            }
            if !s.session_token.is_empty() {
                b = b.with_token(&s.session_token);
            }
            if !s.endpoint.is_empty() {
                b = b.with_endpoint(s.endpoint.trim_end_matches('/'));
            }
            let store = b.build().map_err(bad)?;
            let base = if s.endpoint.is_empty() {
                format!("https://{}.s3.{region}.amazonaws.com", s.bucket)
            } else if s.force_path_style || !s.endpoint.is_empty() {
                format!("{}/{}", s.endpoint.trim_end_matches('/'), s.bucket)
            } else {
                s.endpoint.clone()
            };
            let http = ReqwestConnector::default().connect(&options).map_err(bad)?;
            Ok(Client {
                store: Arc::new(store.clone()),
                azure: None,
                s3: Some(S3Raw {
                    store,
                    http,
                    base,
                    region,
                }),
            })
        }
        PROVIDER_GCS => {
            let mut b = GoogleCloudStorageBuilder::new()
                .with_bucket_name(&s.bucket)
                .with_client_options(options)
                .with_retry(retry);
            if !s.automatic_credentials && !s.secret.is_empty() {
                b = b.with_service_account_key(&s.secret);
            }
            if !s.endpoint.is_empty() {
                b = b.with_base_url(s.endpoint.trim_end_matches('/'));
            }
            Ok(Client {
                store: Arc::new(b.build().map_err(bad)?),
                s3: None,
                azure: None,
            })
        }
        PROVIDER_AZURE => {
            // The emulator's account unless one is given; with an endpoint
            // the account URL is path-style (`{endpoint}/{account}`), as
            // Azurite serves it (object_store's own emulator mode would ignore
            // the endpoint).
            let emulated = s.use_emulator;
            let account = match (&s.access_key, emulated) {
                (a, _) if !a.is_empty() => a.clone(),
                (_, true) => AZURITE_ACCOUNT.to_string(),
                _ => String::new(),
            };
            let mut account_url = s.endpoint.trim_end_matches('/').to_string();
            if emulated {
                if account_url.is_empty() {
                    account_url = "http://127.0.0.1:10000".into();
                }
                if !account_url.ends_with(&format!("/{account}")) {
                    account_url = format!("{account_url}/{account}");
                }
                options = options.with_allow_http(true);
            } else if account_url.is_empty() {
                account_url = format!("https://{account}.blob.core.windows.net");
            }
            let mut b = MicrosoftAzureBuilder::new()
                .with_container_name(&s.bucket)
                .with_client_options(options.clone())
                .with_retry(retry)
                .with_account(&account)
                .with_endpoint(account_url.clone());
            if !s.secret.is_empty() {
                b = b.with_access_key(&s.secret);
            } else if emulated && s.sas_url.is_empty() {
                b = b.with_access_key(AZURITE_KEY);
            }
            if !s.sas_url.is_empty() {
                let url = url::Url::parse(&s.sas_url).map_err(|_| {
                    std::io::Error::new(std::io::ErrorKind::InvalidInput, "sas_url is not a URL")
                })?;
                b = b.with_sas_authorization(
                    url.query_pairs()
                        .map(|(k, v)| (k.into_owned(), v.into_owned()))
                        .collect::<Vec<_>>(),
                );
            }
            let store = b.build().map_err(bad)?;
            let http = ReqwestConnector::default().connect(&options).map_err(bad)?;
            Ok(Client {
                store: Arc::new(store.clone()),
                s3: None,
                azure: Some(AzureRaw {
                    store,
                    http,
                    base: format!("{account_url}/{}", s.bucket),
                    account,
                }),
            })
        }
        p => Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("filesystem provider {p} is not an object storage"),
        )),
    }
}

pub(super) fn dir_meta(mtime: i64) -> Meta {
    Meta {
        size: 0,
        mode: 0o040755,
        uid: 0,
        gid: 0,
        nlink: 1,
        atime: mtime,
        mtime,
        dev: 0,
        ino: 0,
    }
}

/// A file's meta stamped now (an upload in progress).
pub(super) fn file_meta_now() -> Meta {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(0));
    Meta {
        size: 0,
        mode: 0o100644,
        uid: 0,
        gid: 0,
        nlink: 1,
        atime: now,
        mtime: now,
        dev: 0,
        ino: 0,
    }
}

fn file_meta(m: &ObjectMeta) -> Meta {
    let t = m.last_modified.timestamp();
    Meta {
        size: m.size,
        mode: 0o100644,
        uid: 0,
        gid: 0,
        nlink: 1,
        atime: t,
        mtime: t,
        dev: 0,
        ino: 0,
    }
}

type Part = Shared<BoxFuture<'static, Result<Bytes, FsError>>>;

/// Reads of one object: ranged GETs of `download_part_size`, with
/// `download_concurrency` parts fetched ahead of the reader. Parts behind
/// the reader are dropped, so a seek restarts the stream.
pub struct ObjectReader {
    root: Arc<ObjectRoot>,
    path: OPath,
    size: u64,
    parts: tokio::sync::Mutex<BTreeMap<u64, Part>>,
}

impl std::fmt::Debug for ObjectReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectReader")
            .field("path", &self.path)
            .finish()
    }
}

impl ObjectReader {
    fn fetch(&self, index: u64) -> Part {
        let part = self.root.tuning.down_part as u64;
        let start = index * part;
        let end = (start + part).min(self.size);
        let (root, path) = (self.root.clone(), self.path.clone());
        async move {
            root.store()
                .get_range(&path, start..end)
                .await
                .map_err(|e| root.fail("get", e))
        }
        .boxed()
        .shared()
    }

    /// The parts covering `index` and the read-ahead after it; parts out
    /// of that window are dropped.
    async fn part(&self, index: u64) -> Part {
        let part = self.root.tuning.down_part as u64;
        let last = self.size.div_ceil(part);
        let ahead = self.root.tuning.down_concurrency as u64;
        let mut parts = self.parts.lock().await;
        // Keep one part behind: concurrent reads arrive slightly out of
        // order.
        parts.retain(|i, _| *i + 1 >= index && *i <= index + ahead);
        for i in index..(index + ahead + 1).min(last) {
            if let std::collections::btree_map::Entry::Vacant(slot) = parts.entry(i) {
                let p = self.fetch(i);
                // Start it now (read-ahead), without waiting.
                tokio::spawn(p.clone().map(|_| ()));
                slot.insert(p);
            }
        }
        parts
            .entry(index)
            .or_insert_with(|| self.fetch(index))
            .clone()
    }

    /// Copies into `buf` from `offset`; returns the bytes copied (0 at the
    /// end).
    pub async fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<usize, FsError> {
        let part = self.root.tuning.down_part as u64;
        let mut filled = 0usize;
        while filled < buf.len() {
            let at = match offset.checked_add(filled as u64) {
                Some(at) if at < self.size => at,
                _ => break,
            };
            let index = at / part;
            let data = self.part(index).await.await?;
            let within = (at - index * part) as usize;
            if within >= data.len() {
                break;
            }
            let n = (data.len() - within).min(buf.len() - filled);
            buf[filled..filled + n].copy_from_slice(&data[within..within + n]);
            filled += n;
        }
        Ok(filled)
    }

    /// Streams the whole object in order (hash commands).
    pub async fn fold<S>(
        &self,
        mut state: S,
        f: &mut (dyn FnMut(&mut S, &[u8]) + Send),
    ) -> Result<S, FsError> {
        let got = self
            .root
            .store()
            .get(&self.path)
            .await
            .map_err(|e| self.root.fail("get", e))?;
        let mut stream = got.into_stream();
        while let Some(chunk) = stream
            .try_next()
            .await
            .map_err(|e| self.root.fail("get", e))?
        {
            f(&mut state, &chunk);
        }
        Ok(state)
    }
}

#[derive(Default)]
struct WriteState {
    /// The next offset expected in order.
    next: u64,
    /// Data in order not yet handed to a part (before the multipart upload
    /// exists: a small file is one PUT).
    head: BytesMut,
    upload: Option<WriteMultipart>,
    /// Writes that arrived ahead of `next`.
    ahead: BTreeMap<u64, Bytes>,
    ahead_bytes: usize,
    failed: bool,
    done: bool,
}

/// One upload to an object: in-order data goes into parts of
/// `upload_part_size`, at most `upload_concurrency` in flight; the object
/// appears at [`ObjectWriter::finish`] and never before.
pub struct ObjectWriter {
    root: Arc<ObjectRoot>,
    path: OPath,
    state: tokio::sync::Mutex<WriteState>,
}

impl std::fmt::Debug for ObjectWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectWriter")
            .field("path", &self.path)
            .finish()
    }
}

impl ObjectWriter {
    /// Bytes received in order so far.
    pub async fn written(&self) -> u64 {
        self.state.lock().await.next
    }

    /// Takes `data` at `offset`: in order, or ahead within the reordering
    /// window; never behind what was already taken.
    pub async fn write_at(&self, offset: u64, data: Bytes) -> Result<(), FsError> {
        let mut st = self.state.lock().await;
        if st.failed || st.done {
            return Err(FsError::Failure("the upload has failed"));
        }
        if data.is_empty() {
            // Nothing to take (and nothing to keep for later).
            return Ok(());
        }
        if offset < st.next {
            return Err(FsError::Unsupported(
                "writing at an offset already written on object storage",
            ));
        }
        if offset > st.next {
            if st.ahead_bytes + data.len() > REORDER_WINDOW.max(self.root.tuning.part) {
                st.failed = true;
                return Err(FsError::Unsupported(
                    "writes this far out of order on object storage",
                ));
            }
            st.ahead_bytes += data.len();
            if st.ahead.insert(offset, data).is_some() {
                st.failed = true;
                return Err(FsError::Invalid);
            }
            return Ok(());
        }
        let r = self.take(&mut st, data).await;
        if r.is_err() {
            st.failed = true;
        }
        r
    }

    async fn take(&self, st: &mut WriteState, data: Bytes) -> Result<(), FsError> {
        self.push(st, data).await?;
        loop {
            let next = st.next;
            let Some(entry) = st.ahead.first_entry() else {
                return Ok(());
            };
            if *entry.key() != next {
                if *entry.key() < next {
                    return Err(FsError::Invalid);
                }
                return Ok(());
            }
            let d = entry.remove();
            st.ahead_bytes -= d.len();
            self.push(st, d).await?;
        }
    }

    async fn push(&self, st: &mut WriteState, data: Bytes) -> Result<(), FsError> {
        let t = self.root.tuning;
        st.next += data.len() as u64;
        if st.upload.is_none() {
            if st.head.len() + data.len() < t.part {
                st.head.extend_from_slice(&data);
                return Ok(());
            }
            let up = self
                .root
                .store()
                .put_multipart(&self.path)
                .await
                .map_err(|e| self.root.fail("create multipart upload", e))?;
            st.upload = Some(WriteMultipart::new_with_chunk_size(up, t.part));
        }
        let head = std::mem::take(&mut st.head).freeze();
        let upload = st.upload.as_mut().expect("started above");
        if !head.is_empty() {
            upload.put(head);
        }
        upload.put(data);
        upload
            .wait_for_capacity(t.up_concurrency)
            .await
            .map_err(|e| self.root.fail("upload part", e))
    }

    /// Completes the upload: the object appears with what was written.
    pub async fn finish(&self) -> Result<u64, FsError> {
        let mut st = self.state.lock().await;
        if st.done {
            return Ok(st.next);
        }
        st.done = true;
        if st.failed || !st.ahead.is_empty() {
            drop(st);
            self.abort_locked().await;
            return Err(FsError::Failure(
                "the upload has gaps or failed; nothing was stored",
            ));
        }
        let head = std::mem::take(&mut st.head).freeze();
        match st.upload.take() {
            Some(mut up) => {
                if !head.is_empty() {
                    up.put(head);
                }
                if let Err(e) = up.finish().await {
                    return Err(self.root.fail("complete multipart upload", e));
                }
            }
            None => {
                self.root
                    .store()
                    .put(&self.path, PutPayload::from_bytes(head))
                    .await
                    .map_err(|e| self.root.fail("put", e))?;
            }
        }
        Ok(st.next)
    }

    /// Abandons the upload: a multipart upload started is aborted, so
    /// nothing stays visible or billed.
    pub async fn abort(&self) {
        self.state.lock().await.done = true;
        self.abort_locked().await;
    }

    async fn abort_locked(&self) {
        let up = self.state.lock().await.upload.take();
        if let Some(up) = up
            && let Err(e) = up.abort().await
        {
            tracing::warn!(user = %self.root.user, storage = %self.root.label, error = %e, "cannot abort a multipart upload");
        }
    }
}

impl Drop for ObjectWriter {
    fn drop(&mut self) {
        // A writer dropped without an end (a task aborted) still aborts its
        // multipart upload.
        let up = self.state.get_mut().upload.take();
        if let Some(up) = up
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            let label = self.root.label.clone();
            rt.spawn(async move {
                if let Err(e) = up.abort().await {
                    tracing::warn!(storage = %label, error = %e, "cannot abort a multipart upload");
                }
            });
        }
    }
}
