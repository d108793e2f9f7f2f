//! `copy-data` between two handles on one file ends: the copy is bounded by
//! what the source held when it started (found by the `sftp_session` fuzz
//! target: reading to EOF from a file the same request appends to never
//! ended, and kept the channel's barrier until the disk filled).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use ferry_dataplane::control::ControlClient;
use ferry_dataplane::limits::{SessionLimitSettings, SessionLimits};
use ferry_dataplane::policy::UserPolicy;
use ferry_dataplane::quota::QuotaAgent;
use ferry_dataplane::registry::Registry;
use ferry_dataplane::sftp::SftpSession;
use ferry_dataplane::vfs::{FsSettings, UserFs};
use ferry_proto::edge::v1::{ConnectionOpened, PermissionList, SessionPolicy};
use russh_sftp::protocol::{Extended, FileAttributes, Open, OpenFlags, Packet, Stat, StatusCode};

fn put_string(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u32).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn open(id: u32, flags: OpenFlags) -> Packet {
    Packet::Open(Open {
        id,
        filename: "f".into(),
        pflags: flags,
        attrs: FileAttributes::empty(),
    })
}

fn handle_of(reply: Result<Packet, (StatusCode, String)>) -> String {
    match reply {
        Ok(Packet::Handle(h)) => h.handle,
        other => panic!("expected a handle, got {other:?}"),
    }
}

#[tokio::test]
async fn copy_data_onto_the_same_file_ends() {
    let dir = tempfile::tempdir().unwrap();
    let policy = SessionPolicy {
        username: "u".into(),
        home_dir: dir.path().display().to_string(),
        permissions: HashMap::from([(
            "/".to_string(),
            PermissionList {
                permissions: vec!["*".into()],
            },
        )]),
        ..SessionPolicy::default()
    };
    let registry = Arc::new(Registry::default());
    // Never called: the user has no quota limits.
    let control = ControlClient::new("http://127.0.0.1:9", None, "edge".into()).unwrap();
    let quota = QuotaAgent::new(control, registry.clone(), "u".into(), "l".into(), 0, 0, 0);
    let rules = Arc::new(UserPolicy::from_session(&policy, quota, &registry).unwrap());
    let fs = UserFs::open(dir.path(), None, &[], FsSettings::default())
        .await
        .unwrap();
    let conn = registry.add_connection(1, ConnectionOpened::default());
    let budget = SessionLimits::new(SessionLimitSettings::default()).connection();
    let session = Arc::new(SftpSession::new(fs, rules, conn, budget));

    let writer = handle_of(
        session
            .dispatch(open(
                1,
                OpenFlags::WRITE | OpenFlags::CREATE | OpenFlags::TRUNCATE,
            ))
            .await,
    );
    session
        .write(2, &writer, 0, b"0123456789".to_vec())
        .await
        .unwrap();
    let reader = handle_of(session.dispatch(open(3, OpenFlags::READ)).await);
    // Read "to EOF" from the reader, append through the writer.
    let mut data = Vec::new();
    put_string(&mut data, &reader);
    data.extend_from_slice(&0u64.to_be_bytes());
    data.extend_from_slice(&0u64.to_be_bytes());
    put_string(&mut data, &writer);
    data.extend_from_slice(&10u64.to_be_bytes());
    let copy = session.dispatch(Packet::Extended(Extended {
        id: 4,
        request: "copy-data".into(),
        data,
    }));
    let reply = tokio::time::timeout(Duration::from_secs(20), copy)
        .await
        .expect("copy-data ends");
    assert!(matches!(reply, Ok(Packet::Status(ref s)) if s.status_code == StatusCode::Ok));

    let stat = session
        .dispatch(Packet::Stat(Stat {
            id: 5,
            path: "f".into(),
        }))
        .await;
    match stat {
        Ok(Packet::Attrs(a)) => assert_eq!(a.attrs.size, Some(20)),
        other => panic!("expected attributes, got {other:?}"),
    }
    session.release_all().await;
}
