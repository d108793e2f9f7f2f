//! Smoke tests of the object-store harness (`ferry_tests::stores`): each
//! emulator starts, keeps what it is given, lists it by prefix over several
//! pages, and shows what the Ferry tests will inspect (pending multipart
//! uploads, uncommitted blocks, refused signatures).

use ferry_tests::stores::{AzuriteServer, GcsServer, S3Kind, S3Server};

/// Objects every store test puts: two under `dir/` (one deeper), one beside.
const OBJECTS: [(&str, &[u8]); 3] = [
    ("dir/a.txt", b"hello"),
    ("dir/sub/b.bin", b"\x00\x01\x02binary\xff"),
    ("other.txt", b"not under dir/"),
];

/// What listing `dir/` must give.
fn under_dir() -> Vec<(String, u64)> {
    vec![("dir/a.txt".into(), 5), ("dir/sub/b.bin".into(), 10)]
}

/// Puts [`OBJECTS`] with `put`, then checks `list` (whole pages and pages of
/// one key) and `get` with the store's own answers.
fn check_put_list_get(
    put: impl Fn(&str, &[u8]),
    list: impl Fn(&str, u32) -> Vec<(String, u64)>,
    get: impl Fn(&str) -> Option<Vec<u8>>,
) {
    for (key, data) in OBJECTS {
        put(key, data);
    }
    assert_eq!(list("dir/", 1000), under_dir());
    assert_eq!(list("dir/", 1), under_dir(), "one key a page, all pages");
    assert_eq!(list("", 1000).len(), 3);
    assert_eq!(list("nothing/", 1000), vec![]);
    for (key, data) in OBJECTS {
        assert_eq!(get(key).as_deref(), Some(data), "{key}");
    }
    assert_eq!(get("dir/missing"), None);
}

fn check_s3_put_list_get(s3: &S3Server) {
    s3.create_bucket("bucket");
    check_put_list_get(
        |k, d| s3.put("bucket", k, d),
        |p, n| s3.list_paged("bucket", p, n),
        |k| s3.get("bucket", k),
    );
    assert_eq!(s3.list("bucket", "dir/"), under_dir());
}

/// Starts a multipart upload with one part, never completed: it is listed
/// until aborted, and its key is no object meanwhile.
fn check_pending_multipart_listed_until_aborted(s3: &S3Server) {
    s3.create_bucket("bucket");
    assert_eq!(s3.multipart_uploads("bucket"), Vec::<String>::new());
    let id = s3.create_multipart_upload("bucket", "dir/big.bin");
    let etag = s3.upload_part("bucket", "dir/big.bin", &id, 1, &[7u8; 1024]);
    assert!(etag.starts_with('"'), "quoted ETag: {etag}");
    let other = s3.create_multipart_upload("bucket", "dir/other.bin");
    assert_eq!(
        s3.multipart_uploads("bucket"),
        vec!["dir/big.bin".to_string(), "dir/other.bin".to_string()]
    );
    assert_eq!(s3.list("bucket", ""), vec![], "no object before completion");
    assert_eq!(s3.get("bucket", "dir/big.bin"), None);

    s3.abort_multipart_upload("bucket", "dir/big.bin", &id);
    assert_eq!(s3.multipart_uploads("bucket"), vec!["dir/other.bin"]);
    s3.abort_multipart_upload("bucket", "dir/other.bin", &other);
    assert_eq!(s3.multipart_uploads("bucket"), Vec::<String>::new());
}

#[test]
fn moto_stores_lists_by_prefix_and_returns_objects() {
    let s3 = S3Server::start(S3Kind::Moto).unwrap();
    check_s3_put_list_get(&s3);
}

#[test]
fn moto_lists_a_pending_multipart_upload_until_aborted_and_accepts_any_secret() {
    let s3 = S3Server::start(S3Kind::Moto).unwrap();
    check_pending_multipart_listed_until_aborted(&s3);
    assert_eq!(
        s3.try_list_with_secret("any other secret", "bucket", ""),
        Ok(vec![])
    );
}

#[test]
fn s3s_fs_stores_lists_by_prefix_and_returns_objects() {
    let s3 = S3Server::start(S3Kind::S3sFs).unwrap();
    check_s3_put_list_get(&s3);
    // Objects are plain files under the root.
    let root = s3.root().unwrap();
    assert_eq!(
        std::fs::read(root.join("bucket/dir/a.txt")).unwrap(),
        b"hello"
    );
}

#[test]
fn s3s_fs_lists_a_pending_multipart_upload_until_aborted() {
    let s3 = S3Server::start(S3Kind::S3sFs).unwrap();
    check_pending_multipart_listed_until_aborted(&s3);
}

#[test]
fn s3s_fs_refuses_a_request_signed_with_a_wrong_secret() {
    let s3 = S3Server::start(S3Kind::S3sFs).unwrap();
    s3.create_bucket("bucket");
    s3.put("bucket", "a.txt", b"x");
    let refused = s3
        .try_list_with_secret("wrong-secret", "bucket", "")
        .unwrap_err();
    assert_eq!(refused.status, 403, "{refused}");
    assert_eq!(refused.code, "SignatureDoesNotMatch", "{refused}");
    // The right secret still works.
    assert_eq!(
        s3.try_list_with_secret(&s3.secret_key.clone(), "bucket", ""),
        Ok(vec![("a.txt".to_string(), 1)])
    );
}

#[test]
fn fake_gcs_stores_lists_by_prefix_and_returns_objects() {
    let gcs = GcsServer::start().unwrap();
    gcs.create_bucket("bucket");
    check_put_list_get(
        |k, d| gcs.put("bucket", k, d),
        |p, n| gcs.list_paged("bucket", p, n),
        |k| gcs.get("bucket", k),
    );
    assert_eq!(gcs.list("bucket", "dir/"), under_dir());
}

#[test]
fn azurite_stores_lists_by_prefix_and_returns_blobs() {
    let az = AzuriteServer::start().unwrap();
    az.create_container("container");
    check_put_list_get(
        |k, d| az.put("container", k, d),
        |p, n| az.list_paged("container", p, n),
        |k| az.get("container", k),
    );
    assert_eq!(az.list("container", "dir/"), under_dir());
}

#[test]
fn azurite_shows_uncommitted_blocks_and_refuses_a_wrong_key() {
    let az = AzuriteServer::start().unwrap();
    az.create_container("container");
    az.put("container", "done.txt", b"committed");
    az.stage_block("container", "dir/partial.bin", "block-000001", &[1u8; 100]);
    az.stage_block("container", "dir/partial.bin", "block-000002", &[2u8; 50]);
    assert_eq!(
        az.uncommitted_blocks("container"),
        vec![(
            "dir/partial.bin".to_string(),
            vec![
                ("block-000001".to_string(), 100),
                ("block-000002".to_string(), 50)
            ]
        )]
    );
    assert_eq!(
        az.list("container", ""),
        vec![("done.txt".to_string(), 9)],
        "a blob with only uncommitted blocks is not listed"
    );
    assert_eq!(az.get("container", "dir/partial.bin"), None);

    // A valid base64 key that is not the account's.
    let refused = az
        .try_list_with_key("d3Jvbmcta2V5LXdyb25nLWtleQ==", "container", "")
        .unwrap_err();
    assert_eq!(refused.status, 403, "{refused}");
    assert_eq!(refused.code, "AuthorizationFailure", "{refused}");
}

/// The process is gone (reaped: not even a zombie), its port free and its
/// directory removed.
fn check_gone(pid: u32, port: u16, dir: &std::path::Path) {
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "pid {pid}"
    );
    assert!(
        std::net::TcpListener::bind(("127.0.0.1", port)).is_ok(),
        "port {port}"
    );
    assert!(!dir.exists(), "{}", dir.display());
}

#[test]
fn emulators_are_killed_reaped_and_cleaned_up_when_dropped() {
    let gcs = GcsServer::start().unwrap();
    let (pid, port, dir) = (gcs.pid(), gcs.port(), gcs.dir().to_path_buf());
    assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());
    assert!(dir.exists());
    drop(gcs);
    check_gone(pid, port, &dir);
    // moto_server is a Python script behind a pyenv shim: the process
    // started is the server itself.
    let moto = S3Server::start(S3Kind::Moto).unwrap();
    let (pid, port, dir) = (moto.pid(), moto.port(), moto.dir().to_path_buf());
    drop(moto);
    check_gone(pid, port, &dir);
}
