//! SFTP requests served for real: the client's byte stream is framed and
//! decoded as `ferry_dataplane::sftp::serve` does (INIT first, lengths
//! within `MAX_PACKET_LEN`), and every request goes to a real
//! `SftpSession` (reads and writes to `read`/`write`, the rest to
//! `dispatch`) over a user's home and one virtual folder in a temporary
//! directory, with a read-only subtree and a hidden-name filter. The control
//! plane is a lazy gRPC client that is never called (no quota limits).
//!
//! Checks: every reply encodes into a packet that decodes again with the
//! request's id, READ data fits `MAX_READ_LEN`, and nothing outside the home
//! and the folder changes (a sentinel directory beside them is compared
//! after each input). The home and folder start empty for every input; the
//! first input byte picks the upload mode.
#![no_main]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock};

use bytes::{Buf, Bytes, BytesMut};
use ferry_dataplane::control::ControlClient;
use ferry_dataplane::limits::{SessionLimitSettings, SessionLimits};
use ferry_dataplane::policy::UserPolicy;
use ferry_dataplane::quota::QuotaAgent;
use ferry_dataplane::registry::Registry;
use ferry_dataplane::sftp::{MAX_PACKET_LEN, MAX_READ_LEN, SftpSession};
use ferry_dataplane::vfs::{FsSettings, SetstatMode, UploadMode, UserFs};
use ferry_proto::edge::v1::{
    ConnectionOpened, FilePatterns, PermissionList, SessionPolicy, VirtualFolder,
};
use libfuzzer_sys::fuzz_target;
use russh_sftp::protocol::{Packet, Status, StatusCode};

struct World {
    runtime: tokio::runtime::Runtime,
    control: ControlClient,
    registry: Arc<Registry>,
    limits: Arc<SessionLimits>,
    home: PathBuf,
    folder: PathBuf,
    outside: PathBuf,
    policy: SessionPolicy,
}

const SENTINEL: &[u8] = b"outside every root\n";

static WORLD: LazyLock<World> = LazyLock::new(|| {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let base = tempfile::Builder::new()
        .prefix("ferry-fuzz-sftp-")
        .tempdir()
        .expect("a temporary directory")
        .keep();
    let (home, folder, outside) = (base.join("home"), base.join("folder"), base.join("outside"));
    std::fs::create_dir(&outside).unwrap();
    std::fs::write(outside.join("sentinel"), SENTINEL).unwrap();
    let control = {
        let _guard = runtime.enter();
        ControlClient::new("http://127.0.0.1:9", Some("fuzz"), "fuzz-edge".into())
            .expect("a lazy client")
    };
    let perms = |p: &[&str]| PermissionList {
        permissions: p.iter().map(|s| s.to_string()).collect(),
    };
    let policy = SessionPolicy {
        username: "fuzz".into(),
        home_dir: home.display().to_string(),
        permissions: HashMap::from([
            ("/".to_string(), perms(&["*"])),
            ("/ro".to_string(), perms(&["list", "download"])),
        ]),
        file_patterns: vec![FilePatterns {
            path: "/".into(),
            allowed_patterns: vec![],
            denied_patterns: vec!["*.exe".into()],
            deny_policy: 1,
        }],
        virtual_folders: vec![VirtualFolder {
            name: "shared".into(),
            virtual_path: "/mnt/shared".into(),
            mapped_path: folder.display().to_string(),
            quota_size: 0,
            quota_files: 0,
            storage: None,
        }],
        ..SessionPolicy::default()
    };
    World {
        runtime,
        control,
        registry: Arc::new(Registry::default()),
        limits: SessionLimits::new(SessionLimitSettings::default()),
        home,
        folder,
        outside,
        policy,
    }
});

fn empty_dir(path: &Path) {
    if std::fs::symlink_metadata(path).is_ok() {
        std::fs::remove_dir_all(path).expect("the last input's tree is removed");
    }
    std::fs::create_dir(path).unwrap();
}

/// Nothing beside the roots changed.
fn check_outside(w: &World) {
    let names: Vec<_> = std::fs::read_dir(&w.outside)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["sentinel"], "a file appeared outside the roots");
    let sentinel = w.outside.join("sentinel");
    let meta = std::fs::symlink_metadata(&sentinel).unwrap();
    assert!(meta.is_file(), "the sentinel was replaced");
    assert_eq!(
        std::fs::read(&sentinel).unwrap(),
        SENTINEL,
        "the sentinel was written"
    );
}

/// A reply must be one well-formed packet for the request's id.
fn check_reply(bytes: &Bytes, id: u32, what: &str) {
    assert!(bytes.len() >= 5, "empty reply to {what}");
    let len = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize;
    assert_eq!(len + 4, bytes.len(), "reply length field to {what}");
    let mut body = bytes.slice(4..);
    let reply = Packet::try_from(&mut body)
        .unwrap_or_else(|e| panic!("reply to {what} does not decode: {e}"));
    let reply_id = match &reply {
        Packet::Status(s) => s.id,
        Packet::Handle(h) => h.id,
        Packet::Data(d) => {
            assert!(d.data.len() <= MAX_READ_LEN as usize);
            d.id
        }
        Packet::Name(n) => n.id,
        Packet::Attrs(a) => a.id,
        Packet::ExtendedReply(r) => r.id,
        other => panic!("unexpected reply to {what}: {other:?}"),
    };
    assert_eq!(reply_id, id, "reply to {what} has another id");
}

fn encode(reply: Result<Packet, (StatusCode, String)>, id: u32) -> Bytes {
    let packet = reply.unwrap_or_else(|(status_code, error_message)| {
        Packet::Status(Status {
            id,
            status_code,
            error_message,
            language_tag: "en".into(),
        })
    });
    Bytes::try_from(packet).expect("a reply encodes")
}

async fn serve(w: &World, upload_mode: UploadMode, input: &[u8]) {
    let settings = FsSettings {
        upload_mode,
        setstat_mode: SetstatMode::Apply,
        umask: None,
    };
    let fs = UserFs::open(&w.home, None, &w.policy.virtual_folders, settings)
        .await
        .expect("the roots open");
    let quota = QuotaAgent::new(
        w.control.clone(),
        w.registry.clone(),
        "fuzz".into(),
        "lease".into(),
        0,
        0,
        0,
    );
    let rules = Arc::new(UserPolicy::from_session(&w.policy, quota, &w.registry).unwrap());
    let conn = w.registry.add_connection(
        1,
        ConnectionOpened {
            connection_id: "SFTP_fuzz".into(),
            username: "fuzz".into(),
            protocol: "SFTP".into(),
            ..ConnectionOpened::default()
        },
    );
    let budget = w.limits.connection();
    let session = Arc::new(SftpSession::new(fs, rules, conn, budget));

    let mut buf = BytesMut::from(input);
    let mut initialised = false;
    while buf.len() >= 4 {
        let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
        if len == 0 || len > MAX_PACKET_LEN || buf.len() < 4 + len as usize {
            break;
        }
        buf.advance(4);
        let mut frame = buf.split_to(len as usize).freeze();
        let Ok(packet) = Packet::try_from(&mut frame) else {
            continue;
        };
        if !initialised {
            if !matches!(packet, Packet::Init(_)) {
                break;
            }
            initialised = true;
            continue;
        }
        let id = packet.get_request_id();
        let what = format!("{packet:?}");
        let what = &what[..what.len().min(200)];
        let reply = match packet {
            Packet::Read(r) => match session.read(r.id, &r.handle, r.offset, r.len).await {
                Ok(bytes) => bytes,
                Err(e) => encode(Err(e), id),
            },
            Packet::Write(wr) => encode(
                session.write(wr.id, &wr.handle, wr.offset, wr.data).await,
                id,
            ),
            other => encode(session.dispatch(other).await, id),
        };
        check_reply(&reply, id, what);
    }
    session.release_all().await;
    w.registry.remove_connection("SFTP_fuzz");
    let _ = w.registry.usage.drain();
}

fuzz_target!(|data: &[u8]| {
    let w = &*WORLD;
    let Some((&mode, input)) = data.split_first() else {
        return;
    };
    let upload_mode = match mode % 3 {
        0 => UploadMode::Direct,
        1 => UploadMode::Atomic,
        _ => UploadMode::AtomicResume,
    };
    empty_dir(&w.home);
    empty_dir(&w.folder);
    w.runtime.block_on(serve(w, upload_mode, input));
    check_outside(w);
});
