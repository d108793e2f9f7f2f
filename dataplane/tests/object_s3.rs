//! The storage layer on S3 (moto), driven through an in-process SFTP
//! session with raw packets: directory markers, uploads that appear only
//! when closed (multipart, writes out of order), ranged reads, rename as
//! copy + delete, refusals with their reasons, and abandoned uploads that
//! leave no object and no pending multipart upload.

use std::collections::HashMap;
use std::sync::Arc;

use ferry_dataplane::control::ControlClient;
use ferry_dataplane::limits::{SessionLimitSettings, SessionLimits};
use ferry_dataplane::policy::UserPolicy;
use ferry_dataplane::quota::QuotaAgent;
use ferry_dataplane::registry::Registry;
use ferry_dataplane::sftp::SftpSession;
use ferry_dataplane::vfs::{FsSettings, UserFs};
use ferry_proto::edge::v1::{ConnectionOpened, PermissionList, SessionPolicy, Storage};
use ferry_tests::stores::{S3Kind, S3Server};
use russh_sftp::protocol::{
    Close, FileAttributes, MkDir, Open, OpenDir, OpenFlags, Packet, ReadDir, Remove, Rename, RmDir,
    Stat, StatusCode, Symlink,
};
use sha2::{Digest, Sha256};

const BUCKET: &str = "ferry";
const PREFIX: &str = "users/ann/";

/// Runs blocking harness calls (the emulator's clients) from the test.
fn harness<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

fn storage(s3: &S3Server) -> Storage {
    Storage {
        provider: 1,
        bucket: BUCKET.into(),
        key_prefix: PREFIX.into(),
        region: s3.region.clone(),
        endpoint: s3.endpoint.clone(),
        access_key: s3.access_key.clone(),
        secret: s3.secret_key.clone(),
        force_path_style: true,
        ..Storage::default()
    }
}

async fn session(storage: &Storage) -> Arc<SftpSession> {
    let home = tempfile::tempdir().unwrap();
    let policy = SessionPolicy {
        username: "ann".into(),
        home_dir: home.path().display().to_string(),
        permissions: HashMap::from([(
            "/".to_string(),
            PermissionList {
                permissions: vec!["*".into()],
            },
        )]),
        storage: Some(storage.clone()),
        ..SessionPolicy::default()
    };
    let registry = Arc::new(Registry::default());
    // Never called: the user has no quota limits.
    let control = ControlClient::new("http://127.0.0.1:9", None, "edge".into()).unwrap();
    let quota = QuotaAgent::new(control, registry.clone(), "ann".into(), "l".into(), 0, 0, 0);
    let rules = Arc::new(UserPolicy::from_session(&policy, quota, &registry).unwrap());
    let fs = UserFs::open_with(
        "ann",
        home.path(),
        policy.storage.as_ref(),
        None,
        &[],
        FsSettings::default(),
    )
    .await
    .unwrap();
    let conn = registry.add_connection(1, ConnectionOpened::default());
    let budget = SessionLimits::new(SessionLimitSettings::default()).connection();
    Arc::new(SftpSession::new(fs, rules, conn, budget))
}

fn status(reply: &Result<Packet, (StatusCode, String)>) -> (StatusCode, String) {
    match reply {
        Ok(Packet::Status(s)) => (s.status_code, s.error_message.clone()),
        Ok(other) => panic!("expected a status, got {other:?}"),
        Err((code, msg)) => (*code, msg.clone()),
    }
}

fn handle_of(reply: Result<Packet, (StatusCode, String)>) -> String {
    match reply {
        Ok(Packet::Handle(h)) => h.handle,
        other => panic!("expected a handle, got {other:?}"),
    }
}

async fn open(
    s: &Arc<SftpSession>,
    id: u32,
    path: &str,
    flags: OpenFlags,
) -> Result<Packet, (StatusCode, String)> {
    s.dispatch(Packet::Open(Open {
        id,
        filename: path.into(),
        pflags: flags,
        attrs: FileAttributes::empty(),
    }))
    .await
}

async fn close(s: &Arc<SftpSession>, id: u32, handle: &str) -> (StatusCode, String) {
    status(
        &s.dispatch(Packet::Close(Close {
            id,
            handle: handle.into(),
        }))
        .await,
    )
}

async fn stat(s: &Arc<SftpSession>, path: &str) -> Result<FileAttributes, (StatusCode, String)> {
    match s
        .dispatch(Packet::Stat(Stat {
            id: 900,
            path: path.into(),
        }))
        .await
    {
        Ok(Packet::Attrs(a)) => Ok(a.attrs),
        Ok(Packet::Status(st)) => Err((st.status_code, st.error_message)),
        Ok(other) => panic!("expected attributes, got {other:?}"),
        Err(e) => Err(e),
    }
}

async fn list(s: &Arc<SftpSession>, path: &str) -> Vec<(String, u64)> {
    let h = handle_of(
        s.dispatch(Packet::OpenDir(OpenDir {
            id: 800,
            path: path.into(),
        }))
        .await,
    );
    let mut out = Vec::new();
    loop {
        match s
            .dispatch(Packet::ReadDir(ReadDir {
                id: 801,
                handle: h.clone(),
            }))
            .await
        {
            Ok(Packet::Name(n)) => out.extend(
                n.files
                    .into_iter()
                    .filter(|f| f.filename != "." && f.filename != "..")
                    .map(|f| (f.filename, f.attrs.size.unwrap_or(0))),
            ),
            other => {
                assert_eq!(status(&other).0, StatusCode::Eof, "{other:?}");
                break;
            }
        }
    }
    close(s, 802, &h).await;
    out.sort();
    out
}

/// Writes `data` through `handle` in 32 KiB requests, each group of 8 sent
/// in reverse order (as pipelining clients deliver them, out of order).
async fn write_shuffled(s: &Arc<SftpSession>, handle: &str, data: &[u8]) {
    const CHUNK: usize = 32 * 1024;
    let chunks: Vec<(usize, &[u8])> = data
        .chunks(CHUNK)
        .enumerate()
        .map(|(i, c)| (i * CHUNK, c))
        .collect();
    for group in chunks.chunks(8) {
        let writes = group.iter().rev().map(|(off, c)| {
            let s = s.clone();
            let (off, c, h) = (*off as u64, c.to_vec(), handle.to_string());
            async move { s.write(7, &h, off, c).await }
        });
        for r in futures::future::join_all(writes).await {
            assert_eq!(status(&r).0, StatusCode::Ok, "{r:?}");
        }
    }
}

fn random(len: usize) -> Vec<u8> {
    (0..len).map(|_| rand::random::<u8>()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sftp_on_s3_markers_multipart_uploads_ranged_reads_and_refusals() {
    let s3 = harness(|| S3Server::start(S3Kind::Moto).unwrap());
    harness(|| s3.create_bucket(BUCKET));
    let st = storage(&s3);
    let s = session(&st).await;
    let keys = |prefix: &str| harness(|| s3.list(BUCKET, prefix));

    // mkdir makes the `dir/` marker; the empty directory lists and stats.
    let r = s
        .dispatch(Packet::MkDir(MkDir {
            id: 1,
            path: "docs".into(),
            attrs: FileAttributes::empty(),
        }))
        .await;
    assert_eq!(status(&r).0, StatusCode::Ok, "{r:?}");
    assert_eq!(keys(PREFIX), vec![(format!("{PREFIX}docs/"), 0)]);
    assert!(stat(&s, "docs").await.unwrap().is_dir());
    assert_eq!(list(&s, "/").await, vec![("docs".to_string(), 0)]);
    assert!(list(&s, "docs").await.is_empty());

    // A 12 MiB upload (three 5 MiB parts) written out of order: a pending
    // multipart upload and no object until CLOSE, then the object.
    let data = random(12 << 20);
    let h = handle_of(
        open(
            &s,
            2,
            "docs/a.bin",
            OpenFlags::WRITE | OpenFlags::CREATE | OpenFlags::TRUNCATE,
        )
        .await,
    );
    write_shuffled(&s, &h, &data).await;
    assert!(
        !keys(PREFIX).iter().any(|(k, _)| k.ends_with("a.bin")),
        "nothing visible before the close"
    );
    assert_eq!(
        harness(|| s3.multipart_uploads(BUCKET)),
        vec![format!("{PREFIX}docs/a.bin")]
    );
    assert_eq!(close(&s, 3, &h).await.0, StatusCode::Ok);
    assert!(harness(|| s3.multipart_uploads(BUCKET)).is_empty());
    let stored = harness(|| s3.get(BUCKET, &format!("{PREFIX}docs/a.bin"))).unwrap();
    assert_eq!(Sha256::digest(&stored), Sha256::digest(&data));
    assert_eq!(
        list(&s, "docs").await,
        vec![("a.bin".to_string(), 12 << 20)]
    );
    assert_eq!(stat(&s, "docs/a.bin").await.unwrap().size, Some(12 << 20));

    // A small file is one PUT (no multipart upload at all).
    let small = random(1000);
    let h = handle_of(
        open(
            &s,
            4,
            "one.txt",
            OpenFlags::WRITE | OpenFlags::CREATE | OpenFlags::TRUNCATE,
        )
        .await,
    );
    assert_eq!(
        status(&s.write(5, &h, 0, small.clone()).await).0,
        StatusCode::Ok
    );
    assert_eq!(close(&s, 6, &h).await.0, StatusCode::Ok);
    assert_eq!(
        harness(|| s3.get(BUCKET, &format!("{PREFIX}one.txt"))).unwrap(),
        small
    );

    // Reads: ranged GETs with read-ahead, in any order.
    let h = handle_of(open(&s, 10, "docs/a.bin", OpenFlags::READ).await);
    let mut back = vec![0u8; data.len()];
    let offsets: Vec<u64> = (0..data.len() as u64).step_by(255 * 1024).collect();
    for off in offsets.iter().rev().chain(offsets.iter()) {
        let got = s.read(11, &h, *off, 255 * 1024).await.unwrap();
        // Skip the SSH_FXP_DATA header (packet length, type, id, length).
        let payload = &got[13..];
        back[*off as usize..*off as usize + payload.len()].copy_from_slice(payload);
    }
    assert_eq!(Sha256::digest(&back), Sha256::digest(&data));
    let eof = s.read(12, &h, data.len() as u64, 1024).await;
    assert_eq!(eof.err().map(|e| e.0), Some(StatusCode::Eof));
    assert_eq!(close(&s, 13, &h).await.0, StatusCode::Ok);

    // Rename of a file: copy then delete.
    let r = s
        .dispatch(Packet::Rename(Rename {
            id: 20,
            oldpath: "docs/a.bin".into(),
            newpath: "docs/b.bin".into(),
        }))
        .await;
    assert_eq!(status(&r).0, StatusCode::Ok, "{r:?}");
    assert_eq!(
        stat(&s, "docs/a.bin").await.unwrap_err().0,
        StatusCode::NoSuchFile
    );
    assert_eq!(stat(&s, "docs/b.bin").await.unwrap().size, Some(12 << 20));

    // rmdir only when empty; a non-empty directory cannot be renamed.
    let r = s
        .dispatch(Packet::RmDir(RmDir {
            id: 21,
            path: "docs".into(),
        }))
        .await;
    let (code, msg) = status(&r);
    assert_eq!(code, StatusCode::Failure, "{msg}");
    assert!(msg.to_lowercase().contains("not empty"), "{msg}");
    let r = s
        .dispatch(Packet::Rename(Rename {
            id: 22,
            oldpath: "docs".into(),
            newpath: "papers".into(),
        }))
        .await;
    let (code, msg) = status(&r);
    assert_eq!(code, StatusCode::OpUnsupported, "{msg}");
    assert!(msg.contains("not empty"), "{msg}");

    // Links are refused with a clear status.
    let r = s
        .dispatch(Packet::Symlink(Symlink {
            id: 23,
            // (Neither name exists: OpenSSH's clients swap the two.)
            linkpath: "link-a".into(),
            targetpath: "link-b".into(),
        }))
        .await;
    let (code, msg) = status(&r);
    assert_eq!(code, StatusCode::OpUnsupported, "{msg}");
    assert!(msg.contains("object storage"), "{msg}");

    // Resume (APPEND) is refused at open, with the reason.
    let r = open(&s, 24, "one.txt", OpenFlags::WRITE | OpenFlags::APPEND).await;
    let (code, msg) = status(&r);
    assert_eq!(code, StatusCode::OpUnsupported, "{msg}");
    assert!(msg.contains("object"), "{msg}");

    // Emptied, the directory goes, marker included.
    let r = s
        .dispatch(Packet::Remove(Remove {
            id: 25,
            filename: "docs/b.bin".into(),
        }))
        .await;
    assert_eq!(status(&r).0, StatusCode::Ok, "{r:?}");
    let r = s
        .dispatch(Packet::RmDir(RmDir {
            id: 26,
            path: "docs".into(),
        }))
        .await;
    assert_eq!(status(&r).0, StatusCode::Ok, "{r:?}");
    assert_eq!(keys(PREFIX), vec![(format!("{PREFIX}one.txt"), 1000)]);

    // An upload abandoned mid-way (the session ends): no object, and its
    // multipart upload is aborted.
    let h = handle_of(
        open(
            &s,
            30,
            "gone.bin",
            OpenFlags::WRITE | OpenFlags::CREATE | OpenFlags::TRUNCATE,
        )
        .await,
    );
    write_shuffled(&s, &h, &random(11 << 20)).await;
    assert_eq!(harness(|| s3.multipart_uploads(BUCKET)).len(), 1);
    s.release_all().await;
    assert!(harness(|| s3.multipart_uploads(BUCKET)).is_empty());
    assert_eq!(keys(PREFIX), vec![(format!("{PREFIX}one.txt"), 1000)]);
    harness(|| drop(s3));
}
