//! The SFTP server loop (protocol version 3) over one SSH channel.
//!
//! russh-sftp gives the packet types and codec; the loop is ours so that many
//! outstanding requests are served concurrently: reads and writes run as
//! parallel tasks, every other request waits for those in flight and runs
//! alone (a barrier), so pipelined clients see the effects of earlier
//! requests. Replies leave in request order. At most [`MAX_IN_FLIGHT`]
//! requests are between decode and reply, which bounds memory per channel.

use std::collections::{BTreeMap, HashMap};
use std::fs::{File, Metadata};
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use ferry_proto::permissions::Operation;
use ferry_proto::vpath;
use russh::ChannelMsg;
use russh::server::Msg;
use russh_sftp::protocol::{
    Attrs, ExtendedReply, File as NameEntry, FileAttributes, Handle, Name, OpenFlags, Packet,
    Status, StatusCode, Version,
};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

use crate::policy::{Denial, UserPolicy};
use crate::quota::{QuotaError, UploadQuota};
use crate::registry::{Connection, TransferState};
use crate::vfs::{FsError, UserFs, file_size, usage_of};

/// Largest SFTP packet accepted from a client (`limits@openssh.com`).
pub const MAX_PACKET_LEN: u32 = 256 * 1024;
/// Largest read served and write accepted (OpenSSH's values: packet minus headers).
pub const MAX_READ_LEN: u32 = MAX_PACKET_LEN - 1024;
pub const MAX_WRITE_LEN: u32 = MAX_PACKET_LEN - 1024;
/// Open handles per channel.
pub const MAX_HANDLES: usize = 512;
/// Requests decoded but not yet answered, per channel.
pub const MAX_IN_FLIGHT: u32 = 64;
/// Mode bits a client may set: permissions and the sticky bit, never
/// setuid/setgid (the server may run as root and chown to the user's uid).
pub const CHMOD_MASK: u32 = 0o1777;
/// Directory entries per READDIR reply.
pub const READDIR_BATCH: usize = 250;

type Reply = Result<Packet, (StatusCode, String)>;

fn fail(code: StatusCode, msg: impl Into<String>) -> (StatusCode, String) {
    (code, msg.into())
}

impl From<FsError> for (StatusCode, String) {
    fn from(e: FsError) -> Self {
        match e {
            // OpenSSH's texts: clients and their tests match on them.
            FsError::NotFound => fail(StatusCode::NoSuchFile, "No such file"),
            FsError::PermissionDenied => fail(StatusCode::PermissionDenied, "Permission denied"),
            FsError::Failure(m) => fail(StatusCode::Failure, m),
            FsError::Unsupported(m) => fail(StatusCode::OpUnsupported, m),
        }
    }
}

fn io_fail(e: std::io::Error) -> (StatusCode, String) {
    FsError::from(e).into()
}

fn denied() -> (StatusCode, String) {
    fail(StatusCode::PermissionDenied, "Permission denied")
}

impl From<Denial> for (StatusCode, String) {
    fn from(d: Denial) -> Self {
        match d {
            Denial::Denied => denied(),
            Denial::Hidden => FsError::NotFound.into(),
        }
    }
}

impl From<QuotaError> for (StatusCode, String) {
    fn from(e: QuotaError) -> Self {
        fail(StatusCode::Failure, e.to_string())
    }
}

/// Runs filesystem work on the blocking pool.
async fn blocking<T, F>(f: F) -> Result<T, (StatusCode, String)>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, (StatusCode, String)> + Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| fail(StatusCode::Failure, format!("internal error: {e}")))?
}

/// How uploads land (SFTPGo's `common.upload_mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UploadMode {
    /// 0: write to the target directly.
    #[default]
    Direct,
    /// 1: write to a temporary name in the same directory, rename into place
    /// on close; an interrupted upload leaves nothing behind.
    Atomic,
    /// 2: as 1, but an interrupted upload is renamed onto the target so the
    /// client can resume it.
    AtomicResume,
}

impl UploadMode {
    pub fn from_setting(v: u8) -> Result<Self, String> {
        match v {
            0 => Ok(UploadMode::Direct),
            1 => Ok(UploadMode::Atomic),
            2 => Ok(UploadMode::AtomicResume),
            n => Err(format!("upload_mode must be 0, 1 or 2, got {n}")),
        }
    }
}

/// SFTPGo's `common.setstat_mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SetstatMode {
    /// 0: chmod, chown and chtimes are applied.
    #[default]
    Apply,
    /// 1: they are accepted and silently ignored (truncation still applies).
    Ignore,
    /// 2: ignored only where the storage cannot do them; on local disk as 0.
    IgnoreUnsupported,
}

impl SetstatMode {
    pub fn from_setting(v: u8) -> Result<Self, String> {
        match v {
            0 => Ok(SetstatMode::Apply),
            1 => Ok(SetstatMode::Ignore),
            2 => Ok(SetstatMode::IgnoreUnsupported),
            n => Err(format!("setstat_mode must be 0, 1 or 2, got {n}")),
        }
    }
}

/// How an edge writes to storage (SFTPGo's `common` settings).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FsSettings {
    pub upload_mode: UploadMode,
    pub setstat_mode: SetstatMode,
    /// Bits cleared from the mode of new files and directories; None keeps
    /// the process umask.
    pub umask: Option<u32>,
}

impl FsSettings {
    /// Applies the configured umask to a path just created with `mode`.
    pub fn apply_umask(&self, path: &Path, mode: u32) {
        if let Some(mask) = self.umask
            && let Err(e) = std::fs::set_permissions(
                path,
                std::fs::Permissions::from_mode(mode & !mask & 0o7777),
            )
        {
            tracing::warn!(path = %path.display(), error = %e, "cannot apply umask");
        }
    }
}

/// Parses an octal umask such as `022` or `0077`.
pub fn parse_umask(text: &str) -> Result<u32, String> {
    u32::from_str_radix(text.trim(), 8)
        .ok()
        .filter(|m| *m <= 0o777)
        .ok_or_else(|| format!("umask must be octal between 000 and 777, got {text:?}"))
}

/// Prefix of temporary upload names (atomic modes).
pub const TEMP_PREFIX: &str = ".ferry-upload.";

/// An upload written under a temporary name.
struct AtomicUpload {
    temp: PathBuf,
    target: PathBuf,
}

enum OpenHandle {
    File {
        file: Arc<File>,
        vpath: String,
        writable: bool,
        transfer: (u64, Arc<TransferState>),
        atomic: Option<AtomicUpload>,
        /// Opened with APPEND: writes below this size (the file's size at
        /// open) are refused, as OpenSSH resumes with APPEND.
        append_floor: Option<u64>,
        /// Quota of an upload (every writable handle has one).
        quota: Option<Box<UploadQuota>>,
        /// The real path written (the temporary one in atomic modes).
        written: PathBuf,
    },
    Dir {
        vpath: String,
        entries: Mutex<Option<std::fs::ReadDir>>,
    },
}

/// One authenticated user's SFTP state on one channel.
pub struct SftpSession {
    fs: UserFs,
    rules: Arc<UserPolicy>,
    /// uid/gid given to new files and directories (only when running as root).
    owner: Option<(u32, u32)>,
    conn: Arc<Connection>,
    handles: Mutex<HashMap<String, Arc<OpenHandle>>>,
    next_handle: AtomicU64,
    settings: FsSettings,
}

fn attrs_of(meta: &Metadata) -> FileAttributes {
    FileAttributes {
        size: Some(meta.len()),
        uid: Some(meta.uid()),
        user: None,
        gid: Some(meta.gid()),
        group: None,
        permissions: Some(meta.mode()),
        atime: Some(meta.atime().clamp(0, i64::from(u32::MAX)) as u32),
        mtime: Some(meta.mtime().clamp(0, i64::from(u32::MAX)) as u32),
    }
}

/// `ls -l` style line, as OpenSSH's sftp shows in listings.
fn long_name(name: &str, meta: &Metadata) -> String {
    let mode = meta.mode();
    let kind = match mode & 0o170000 {
        0o040000 => 'd',
        0o120000 => 'l',
        0o020000 => 'c',
        0o060000 => 'b',
        0o010000 => 'p',
        0o140000 => 's',
        _ => '-',
    };
    let mut perms = String::with_capacity(9);
    for (bit, ch) in [
        (0o400, 'r'),
        (0o200, 'w'),
        (0o100, 'x'),
        (0o040, 'r'),
        (0o020, 'w'),
        (0o010, 'x'),
        (0o004, 'r'),
        (0o002, 'w'),
        (0o001, 'x'),
    ] {
        perms.push(if mode & bit != 0 { ch } else { '-' });
    }
    let when = chrono::DateTime::from_timestamp(meta.mtime(), 0)
        .map(|d| d.format("%b %d %H:%M").to_string())
        .unwrap_or_default();
    format!(
        "{kind}{perms} {:>4} {:<8} {:<8} {:>8} {when} {name}",
        meta.nlink(),
        meta.uid(),
        meta.gid(),
        meta.len()
    )
}

fn ok(id: u32) -> Packet {
    Packet::Status(Status {
        id,
        status_code: StatusCode::Ok,
        error_message: "Success".into(),
        language_tag: "en".into(),
    })
}

fn encode(packet: Packet) -> Bytes {
    Bytes::try_from(packet).unwrap_or_else(|e| {
        tracing::error!(error = %e, "cannot encode SFTP reply");
        Bytes::new()
    })
}

/// Bytes before the payload of an SSH_FXP_DATA packet: length, type, id, data length.
const DATA_HEADER: usize = 13;

/// Fills in the header of an SSH_FXP_DATA packet whose payload already sits
/// after [`DATA_HEADER`] bytes, so file data is read straight into the reply.
fn finish_data(mut packet: BytesMut, id: u32) -> Bytes {
    let data_len = (packet.len() - DATA_HEADER) as u32;
    let mut header = &mut packet[..DATA_HEADER];
    header.put_u32(9 + data_len);
    header.put_u8(103);
    header.put_u32(id);
    header.put_u32(data_len);
    packet.freeze()
}

fn read_string(buf: &mut &[u8]) -> Option<String> {
    if buf.remaining() < 4 {
        return None;
    }
    let len = buf.get_u32() as usize;
    if buf.remaining() < len {
        return None;
    }
    let s = String::from_utf8(buf[..len].to_vec()).ok();
    buf.advance(len);
    s
}

impl SftpSession {
    pub fn new(
        fs: UserFs,
        rules: Arc<UserPolicy>,
        owner: Option<(u32, u32)>,
        conn: Arc<Connection>,
        settings: FsSettings,
    ) -> Self {
        Self {
            fs,
            rules,
            owner,
            conn,
            handles: Mutex::new(HashMap::new()),
            next_handle: AtomicU64::new(1),
            settings,
        }
    }

    fn handle(&self, h: &str) -> Result<Arc<OpenHandle>, (StatusCode, String)> {
        self.handles
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(h)
            .cloned()
            .ok_or_else(|| fail(StatusCode::Failure, "invalid handle"))
    }

    fn add_handle(&self, h: OpenHandle) -> Result<String, (StatusCode, String)> {
        let mut handles = self.handles.lock().unwrap_or_else(|e| e.into_inner());
        if handles.len() >= MAX_HANDLES {
            return Err(fail(
                StatusCode::Failure,
                format!("too many open handles (limit {MAX_HANDLES})"),
            ));
        }
        let id = self.next_handle.fetch_add(1, Ordering::Relaxed).to_string();
        handles.insert(id.clone(), Arc::new(h));
        Ok(id)
    }

    fn check(&self, op: Operation<'_>) -> Result<(), (StatusCode, String)> {
        Ok(self.rules.allows(op)?)
    }

    /// File filters for a path a request acts on.
    fn check_path(&self, vp: &str) -> Result<(), (StatusCode, String)> {
        Ok(self.rules.path(vp)?)
    }

    fn chown_new(&self, path: &Path) {
        if let Some((uid, gid)) = self.owner
            && let Err(e) = std::os::unix::fs::chown(path, Some(uid), Some(gid))
        {
            tracing::warn!(path = %path.display(), error = %e, "cannot chown new path");
        }
    }

    /// Ends what a vanished client left open: transfers stop being listed;
    /// atomic uploads are removed (mode 1) or put in place for resume (mode 2).
    async fn release_all(&self) {
        let handles: Vec<Arc<OpenHandle>> = self
            .handles
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain()
            .map(|(_, h)| h)
            .collect();
        for h in handles {
            if let OpenHandle::File {
                transfer,
                atomic,
                quota,
                written,
                ..
            } = &*h
            {
                self.conn.finish_transfer(transfer.0, false);
                let over = quota.as_deref().is_some_and(UploadQuota::exceeded);
                let resume = self.settings.upload_mode == UploadMode::AtomicResume && !over;
                let (written, target) =
                    (written.clone(), atomic.as_ref().map(|a| a.target.clone()));
                // What is left under the target name once cleaned up.
                let left = blocking(move || {
                    let done = match &target {
                        Some(target) if resume => std::fs::rename(&written, target),
                        Some(_) => std::fs::remove_file(&written),
                        // Written in place: kept for resume unless over quota.
                        None if over => std::fs::remove_file(&written),
                        None => Ok(()),
                    };
                    if let Err(e) = done {
                        tracing::warn!(error = %e, "cannot clean up an interrupted upload");
                    }
                    Ok(file_size(target.as_ref().unwrap_or(&written)))
                })
                .await
                .unwrap_or(None);
                if let Some(q) = quota {
                    q.finish(left).await;
                }
            }
        }
    }

    async fn open(
        self: &Arc<Self>,
        id: u32,
        filename: String,
        flags: OpenFlags,
        attrs: FileAttributes,
    ) -> Reply {
        let vp = self.rules.resolve(&filename);
        self.check_path(&vp)?;
        let real = self.fs.resolve(&vp)?;
        let write = flags.intersects(OpenFlags::WRITE | OpenFlags::APPEND);
        let read = flags.contains(OpenFlags::READ) || !write;
        let meta = {
            let real = real.clone();
            blocking(move || match std::fs::metadata(&real) {
                Ok(m) => Ok(Some(m)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(io_fail(e)),
            })
            .await?
        };
        if meta.as_ref().is_some_and(|m| m.is_dir()) {
            return Err(fail(StatusCode::Failure, "is a directory"));
        }
        if read {
            self.check(Operation::Download { path: &vp })?;
        }
        if write {
            match &meta {
                Some(_) if flags.contains(OpenFlags::EXCLUDE) => {
                    return Err(fail(StatusCode::Failure, "file already exists"));
                }
                Some(_) => self.check(Operation::Overwrite { path: &vp })?,
                None if !flags.contains(OpenFlags::CREATE) => {
                    return Err(fail(StatusCode::NoSuchFile, "No such file"));
                }
                None => self.check(Operation::Upload { path: &vp })?,
            }
        } else if meta.is_none() {
            return Err(fail(StatusCode::NoSuchFile, "No such file"));
        }
        let mode = attrs.permissions.map_or(0o666, |p| p & 0o777);
        // Atomic modes write to a temporary name beside the target; an
        // existing target that is not truncated (resume, append) moves there
        // first so the client continues where it was.
        let atomic =
            (write && !read && self.settings.upload_mode != UploadMode::Direct).then(|| {
                let name = real
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                AtomicUpload {
                    temp: real.with_file_name(format!(
                        "{TEMP_PREFIX}{:016x}.{name}",
                        rand::random::<u64>()
                    )),
                    target: real.clone(),
                }
            });
        let keep_existing = meta.is_some() && !flags.contains(OpenFlags::TRUNCATE);
        let open_path = atomic
            .as_ref()
            .map_or_else(|| real.clone(), |a| a.temp.clone());
        let created = write && (meta.is_none() || (atomic.is_some() && !keep_existing));
        // Quota before anything changes on disk: a new file needs a free
        // slot and room; the upload starts from the kept size, if any.
        let old_size = meta.as_ref().map(Metadata::len);
        let quota = if write {
            let start = if keep_existing {
                old_size.unwrap_or(0)
            } else {
                0
            };
            Some(Box::new(
                self.rules
                    .quota
                    .begin_upload(
                        self.fs.domain(&vp),
                        old_size.is_some(),
                        old_size.unwrap_or(0),
                        start,
                    )
                    .await?,
            ))
        } else {
            None
        };
        let file = {
            let (open_path, target) = (open_path.clone(), real.clone());
            let move_first = atomic.is_some() && keep_existing;
            let this = self.clone();
            blocking(move || {
                if move_first {
                    std::fs::rename(&target, &open_path).map_err(io_fail)?;
                }
                let mut o = std::fs::OpenOptions::new();
                o.read(read)
                    .write(write)
                    // Not O_APPEND: with concurrent positional writes it would
                    // reorder data; APPEND is honoured by refusing lower offsets.
                    .create(
                        write
                            && (flags.contains(OpenFlags::CREATE)
                                || !move_first && open_path != target),
                    )
                    .truncate(write && flags.contains(OpenFlags::TRUNCATE))
                    .mode(mode)
                    .custom_flags(libc::O_NOFOLLOW);
                let f = o.open(&open_path).map_err(io_fail)?;
                if created {
                    this.chown_new(&open_path);
                    this.settings.apply_umask(&open_path, mode);
                }
                Ok(f)
            })
            .await
        };
        let file = match file {
            Ok(f) => f,
            Err(e) => {
                if let Some(q) = &quota {
                    q.finish(old_size).await;
                }
                return Err(e);
            }
        };
        let append_floor = if write && flags.contains(OpenFlags::APPEND) {
            let f = file.try_clone().map_err(io_fail)?;
            Some(blocking(move || f.metadata().map(|m| m.len()).map_err(io_fail)).await?)
        } else {
            None
        };
        let op = if write { "upload" } else { "download" };
        let recovery = quota.as_ref().map(|q| {
            let temp = atomic.as_ref().map(|a| {
                let name = a
                    .temp
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                vpath::clean(vpath::parent(&vp), &name)
            });
            let resume = self.settings.upload_mode == UploadMode::AtomicResume;
            q.recovery(&vp, temp.as_deref(), resume && atomic.is_some())
        });
        let transfer = self.conn.begin_transfer(op, vp.clone(), recovery);
        self.conn.touch();
        let handle = self.add_handle(OpenHandle::File {
            file: Arc::new(file),
            vpath: vp,
            writable: write,
            transfer: transfer.clone(),
            atomic,
            append_floor,
            quota,
            written: open_path,
        });
        match handle {
            Ok(handle) => Ok(Packet::Handle(Handle { id, handle })),
            Err(e) => {
                self.conn.end_transfer(transfer.0);
                Err(e)
            }
        }
    }

    async fn close(&self, id: u32, handle: &str) -> Reply {
        let removed = self
            .handles
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(handle);
        let Some(h) = removed else {
            return Err(fail(StatusCode::Failure, "invalid handle"));
        };
        if let OpenHandle::File {
            transfer,
            atomic,
            quota,
            written,
            ..
        } = &*h
        {
            let over = quota.as_deref().is_some_and(UploadQuota::exceeded);
            self.conn.finish_transfer(transfer.0, !over);
            let written = written.clone();
            let target = atomic.as_ref().map(|a| a.target.clone());
            // Over quota the partial upload is removed (in atomic modes it
            // never becomes visible); else an atomic upload moves into place.
            let (done, left) = blocking(move || {
                let done = match &target {
                    _ if over => std::fs::remove_file(&written),
                    Some(target) => std::fs::rename(&written, target).inspect_err(|_| {
                        let _ = std::fs::remove_file(&written);
                    }),
                    None => Ok(()),
                };
                Ok((done, file_size(target.as_ref().unwrap_or(&written))))
            })
            .await?;
            if let Some(q) = quota {
                q.finish(left).await;
            }
            if over {
                return Err(QuotaError::Exceeded.into());
            }
            done.map_err(io_fail)?;
        }
        self.conn.touch();
        Ok(ok(id))
    }

    async fn read(
        &self,
        id: u32,
        handle: &str,
        offset: u64,
        len: u32,
    ) -> Result<Bytes, (StatusCode, String)> {
        let h = self.handle(handle)?;
        let OpenHandle::File { file, transfer, .. } = &*h else {
            return Err(fail(StatusCode::Failure, "not a file handle"));
        };
        let file = file.clone();
        let want = len.min(MAX_READ_LEN) as usize;
        let packet = blocking(move || {
            let mut buf = BytesMut::zeroed(DATA_HEADER + want);
            let filled = read_full_at(&file, &mut buf[DATA_HEADER..], offset).map_err(io_fail)?;
            buf.truncate(DATA_HEADER + filled);
            Ok(buf)
        })
        .await?;
        let read = packet.len() - DATA_HEADER;
        if read == 0 && want > 0 {
            return Err(fail(StatusCode::Eof, "end of file"));
        }
        self.rules.throttle_download(read).await;
        transfer.1.size.fetch_add(read as i64, Ordering::Relaxed);
        self.conn.touch();
        Ok(finish_data(packet, id))
    }

    async fn write(&self, id: u32, handle: &str, offset: u64, data: Vec<u8>) -> Reply {
        let h = self.handle(handle)?;
        let OpenHandle::File {
            file,
            writable,
            transfer,
            append_floor,
            quota,
            ..
        } = &*h
        else {
            return Err(fail(StatusCode::Failure, "not a file handle"));
        };
        if append_floor.is_some_and(|floor| offset < floor) {
            return Err(fail(
                StatusCode::Failure,
                "invalid offset: the file was opened for append",
            ));
        }
        if !*writable {
            return Err(fail(
                StatusCode::PermissionDenied,
                "handle not open for writing",
            ));
        }
        if data.len() > MAX_WRITE_LEN as usize {
            return Err(fail(StatusCode::Failure, "write too large"));
        }
        let n = data.len();
        if let Some(q) = quota {
            q.admit(offset.saturating_add(n as u64)).await?;
        }
        self.rules.throttle_upload(n).await;
        let file = file.clone();
        blocking(move || file.write_all_at(&data, offset).map_err(io_fail)).await?;
        transfer.1.size.fetch_add(n as i64, Ordering::Relaxed);
        self.conn.touch();
        Ok(ok(id))
    }

    async fn stat(&self, id: u32, path: &str, follow: bool) -> Reply {
        let vp = self.rules.resolve(path);
        self.check(Operation::Stat { path: &vp })?;
        self.rules.visible(&vp)?;
        let real = if follow {
            self.fs.resolve(&vp)?
        } else {
            self.fs.resolve_nofollow(&vp)?
        };
        let meta = blocking(move || {
            if follow {
                std::fs::metadata(&real)
            } else {
                std::fs::symlink_metadata(&real)
            }
            .map_err(io_fail)
        })
        .await?;
        Ok(Packet::Attrs(Attrs {
            id,
            attrs: attrs_of(&meta),
        }))
    }

    async fn fstat(&self, id: u32, handle: &str) -> Reply {
        let h = self.handle(handle)?;
        let OpenHandle::File { file, .. } = &*h else {
            return Err(fail(StatusCode::Failure, "not a file handle"));
        };
        let file = file.clone();
        let meta = blocking(move || file.metadata().map_err(io_fail)).await?;
        Ok(Packet::Attrs(Attrs {
            id,
            attrs: attrs_of(&meta),
        }))
    }

    /// Checks every part of a setstat before applying any, so a refused
    /// part leaves the file untouched.
    fn check_setstat(&self, vp: &str, attrs: &FileAttributes) -> Result<(), (StatusCode, String)> {
        if attrs.size.is_some() {
            self.check(Operation::Overwrite { path: vp })?;
        }
        if attrs.permissions.is_some() {
            self.check(Operation::Chmod { path: vp })?;
        }
        if attrs.uid.is_some() || attrs.gid.is_some() {
            self.check(Operation::Chown { path: vp })?;
        }
        if attrs.atime.is_some() || attrs.mtime.is_some() {
            self.check(Operation::Chtimes { path: vp })?;
        }
        Ok(())
    }

    /// SETSTAT on a path, or FSETSTAT on an open file (`handle`). A size
    /// change is a truncation: on an upload's handle its quota covers it;
    /// elsewhere growth is reserved first and the change settled after.
    async fn setstat(
        &self,
        id: u32,
        path: &str,
        attrs: FileAttributes,
        handle: Option<Arc<OpenHandle>>,
    ) -> Reply {
        let vp = self.rules.resolve(path);
        let mut attrs = attrs;
        if self.settings.setstat_mode == SetstatMode::Ignore {
            // Accepted and ignored; only a truncation is still applied.
            attrs.permissions = None;
            attrs.uid = None;
            attrs.gid = None;
            attrs.atime = None;
            attrs.mtime = None;
        }
        self.check_setstat(&vp, &attrs)?;
        self.check_path(&vp)?;
        let real = self.fs.resolve(&vp)?;
        let (file, upload) = match handle.as_deref() {
            Some(OpenHandle::File { file, quota, .. }) => (Some(file.clone()), quota.as_deref()),
            _ => (None, None),
        };
        let mut size_change = 0;
        if let Some(new_size) = attrs.size {
            if let Some(q) = upload {
                q.admit(new_size).await?;
            } else {
                let (real, file) = (real.clone(), file.clone());
                let old = blocking(move || {
                    match &file {
                        Some(f) => f.metadata(),
                        None => std::fs::metadata(&real),
                    }
                    .map(|m| m.len())
                    .map_err(io_fail)
                })
                .await?;
                size_change = new_size as i64 - old as i64;
                if size_change > 0 {
                    self.rules
                        .quota
                        .grow(&self.fs.domain(&vp), size_change, 0)
                        .await?;
                }
            }
        }
        blocking(move || apply_attrs(&real, file.as_deref(), &attrs)).await?;
        if size_change < 0 {
            self.rules
                .quota
                .release(&self.fs.domain(&vp), size_change, 0)
                .await;
        }
        self.conn.touch();
        Ok(ok(id))
    }

    async fn fsetstat(&self, id: u32, handle: &str, attrs: FileAttributes) -> Reply {
        let h = self.handle(handle)?;
        let OpenHandle::File { vpath: vp, .. } = &*h else {
            return Err(fail(
                StatusCode::OpUnsupported,
                "fsetstat on a directory handle",
            ));
        };
        let vp = vp.clone();
        self.setstat(id, &vp, attrs, Some(h)).await
    }

    async fn opendir(&self, id: u32, path: &str) -> Reply {
        let vp = self.rules.resolve(path);
        self.check(Operation::List { dir: &vp })?;
        self.rules.visible(&vp)?;
        let real = self.fs.resolve(&vp)?;
        let rd = blocking(move || std::fs::read_dir(&real).map_err(io_fail)).await?;
        let handle = self.add_handle(OpenHandle::Dir {
            vpath: vp,
            entries: Mutex::new(Some(rd)),
        })?;
        Ok(Packet::Handle(Handle { id, handle }))
    }

    async fn readdir(&self, id: u32, handle: &str) -> Reply {
        let h = self.handle(handle)?;
        if !matches!(&*h, OpenHandle::Dir { .. }) {
            return Err(fail(StatusCode::Failure, "not a directory handle"));
        }
        let rules = self.rules.clone();
        let files = blocking(move || {
            let OpenHandle::Dir { entries, vpath } = &*h else {
                unreachable!("checked above")
            };
            let mut guard = entries.lock().unwrap_or_else(|e| e.into_inner());
            let mut out = Vec::new();
            if let Some(rd) = guard.as_mut() {
                for entry in rd.by_ref() {
                    let Ok(entry) = entry else { continue };
                    let name = entry.file_name().to_string_lossy().into_owned();
                    if !rules.listed(vpath, &name) {
                        continue;
                    }
                    let Ok(meta) = entry.path().symlink_metadata() else {
                        continue;
                    };
                    out.push(NameEntry {
                        longname: long_name(&name, &meta),
                        filename: name,
                        attrs: attrs_of(&meta),
                    });
                    if out.len() >= READDIR_BATCH {
                        break;
                    }
                }
                if out.is_empty() {
                    *guard = None;
                }
            }
            Ok(out)
        })
        .await?;
        self.conn.touch();
        if files.is_empty() {
            return Err(fail(StatusCode::Eof, "end of directory"));
        }
        Ok(Packet::Name(Name { id, files }))
    }

    async fn remove(&self, id: u32, path: &str) -> Reply {
        let vp = self.rules.resolve(path);
        self.check(Operation::RemoveFile { path: &vp })?;
        self.check_path(&vp)?;
        let real = self.fs.resolve_nofollow(&vp)?;
        let meta = blocking(move || {
            let meta = std::fs::symlink_metadata(&real).map_err(io_fail)?;
            if meta.is_dir() {
                return Err(fail(StatusCode::Failure, "is a directory"));
            }
            std::fs::remove_file(&real).map_err(io_fail)?;
            Ok(meta)
        })
        .await?;
        // Quota counts regular files.
        if meta.is_file() {
            self.rules
                .quota
                .release(&self.fs.domain(&vp), -(meta.len() as i64), -1)
                .await;
        }
        Ok(ok(id))
    }

    async fn mkdir(&self, id: u32, path: &str, attrs: FileAttributes) -> Reply {
        let vp = self.rules.resolve(path);
        self.check(Operation::Mkdir { path: &vp })?;
        self.check_path(&vp)?;
        let real = self.fs.resolve_nofollow(&vp)?;
        let mode = attrs.permissions.map_or(0o777, |p| p & 0o777);
        let owner = self.owner;
        let settings = self.settings;
        blocking(move || {
            std::fs::DirBuilder::new()
                .mode(mode)
                .create(&real)
                .map_err(io_fail)?;
            settings.apply_umask(&real, mode);
            if let Some((uid, gid)) = owner {
                let _ = std::os::unix::fs::chown(&real, Some(uid), Some(gid));
            }
            Ok(())
        })
        .await?;
        Ok(ok(id))
    }

    async fn rmdir(&self, id: u32, path: &str) -> Reply {
        let vp = self.rules.resolve(path);
        if vp == "/" {
            return Err(denied());
        }
        self.check(Operation::RemoveDir { path: &vp })?;
        if self.fs.holds_mount(&vp) {
            return Err(fail(
                StatusCode::PermissionDenied,
                "a virtual folder cannot be removed",
            ));
        }
        self.check_path(&vp)?;
        let real = self.fs.resolve_nofollow(&vp)?;
        blocking(move || std::fs::remove_dir(&real).map_err(io_fail)).await?;
        Ok(ok(id))
    }

    async fn rename(&self, id: u32, old: &str, new: &str) -> Reply {
        let (from, to) = (self.rules.resolve(old), self.rules.resolve(new));
        if from == "/" || to == "/" {
            return Err(denied());
        }
        self.check_path(&from)?;
        self.check_path(&to)?;
        if self.fs.holds_mount(&from) || self.fs.holds_mount(&to) {
            return Err(fail(
                StatusCode::PermissionDenied,
                "a virtual folder, or a directory holding one, cannot be renamed or replaced",
            ));
        }
        let src = self.fs.resolve_nofollow(&from)?;
        let dst = self.fs.resolve_nofollow(&to)?;
        let (src_meta, dst_meta) = {
            let (s, d) = (src.clone(), dst.clone());
            blocking(move || {
                let sm = std::fs::symlink_metadata(&s).map_err(io_fail)?;
                let dm = std::fs::symlink_metadata(&d).ok();
                Ok((sm, dm))
            })
            .await?
        };
        if dst_meta.as_ref().is_some_and(|m| m.is_dir()) {
            return Err(fail(
                StatusCode::Failure,
                "the target is an existing directory",
            ));
        }
        self.check(Operation::Rename {
            from: &from,
            to: &to,
            is_dir: src_meta.is_dir(),
            target_exists: dst_meta.is_some(),
        })?;
        if src_meta.is_dir() && to.starts_with(&format!("{from}/")) {
            return Err(fail(
                StatusCode::Failure,
                "cannot move a directory inside itself",
            ));
        }
        // Across quota domains (the user's, a folder's own) the moved usage
        // moves too: reserved where it lands first, so a full quota refuses.
        let (from_domain, to_domain) = (self.fs.domain(&from), self.fs.domain(&to));
        let moved = if from_domain == to_domain {
            None
        } else {
            let (s, is_dir) = (src.clone(), src_meta.is_dir());
            let (size, files) = blocking(move || Ok(usage_of(&s, is_dir))).await?;
            self.rules.quota.grow(&to_domain, size, files).await?;
            Some((size, files))
        };
        let renamed = blocking(move || {
            std::fs::rename(&src, &dst).map_err(|e| match e.raw_os_error() {
                Some(libc::EXDEV) => fail(
                    StatusCode::OpUnsupported,
                    "cannot rename across filesystems",
                ),
                _ => io_fail(e),
            })
        })
        .await;
        if let Some((size, files)) = moved {
            match &renamed {
                Ok(()) => self.rules.quota.release(&from_domain, -size, -files).await,
                Err(_) => self.rules.quota.release(&to_domain, -size, -files).await,
            }
        }
        renamed?;
        // A replaced file leaves the quota.
        if let Some(m) = dst_meta.filter(Metadata::is_file) {
            self.rules
                .quota
                .release(&to_domain, -(m.len() as i64), -1)
                .await;
        }
        Ok(ok(id))
    }

    async fn readlink(&self, id: u32, path: &str) -> Reply {
        let vp = self.rules.resolve(path);
        self.check(Operation::Stat { path: &vp })?;
        self.rules.visible(&vp)?;
        let real = self.fs.resolve_nofollow(&vp)?;
        let fs = self.fs.clone();
        let target = blocking(move || fs.read_link_virtual(&real).map_err(Into::into)).await?;
        Ok(Packet::Name(Name {
            id,
            files: vec![NameEntry::dummy(target)],
        }))
    }

    /// OpenSSH sends SSH_FXP_SYMLINK with the target first and the link
    /// second (the reverse of the draft); we follow OpenSSH, as every
    /// client does.
    async fn symlink(&self, id: u32, target: &str, link: &str) -> Reply {
        let vlink = self.rules.resolve(link);
        let vtarget = vpath::clean(vpath::parent(&vlink), target);
        if vlink == "/" {
            return Err(denied());
        }
        self.check(Operation::Symlink {
            link: &vlink,
            target: &vtarget,
        })?;
        self.check_path(&vlink)?;
        self.check_path(&vtarget)?;
        if self.fs.is_mount_point(&vlink) || self.fs.is_mount_point(&vtarget) {
            return Err(fail(
                StatusCode::PermissionDenied,
                "a virtual folder cannot be a symlink or its target",
            ));
        }
        if self.fs.mount_name(&vlink) != self.fs.mount_name(&vtarget) {
            return Err(fail(
                StatusCode::OpUnsupported,
                "symlinks across virtual folders are not supported",
            ));
        }
        let link_real = self.fs.resolve_nofollow(&vlink)?;
        let target_real = self.fs.resolve(&vtarget)?;
        // A relative target that stays inside the home is kept as written
        // (the link keeps working if the tree moves, and readlink returns
        // what the client wrote); anything else points at the real path.
        let link_dir_depth = link_real
            .parent()
            .and_then(|d| self.fs.to_virtual(d))
            .map(|v| v.split('/').filter(|c| !c.is_empty()).count());
        let stored = match link_dir_depth {
            Some(depth) if !target.starts_with('/') && stays_below(depth, target) => {
                PathBuf::from(target)
            }
            _ => target_real,
        };
        blocking(move || std::os::unix::fs::symlink(&stored, &link_real).map_err(io_fail)).await?;
        Ok(ok(id))
    }

    fn realpath(&self, id: u32, path: &str) -> Reply {
        Ok(Packet::Name(Name {
            id,
            files: vec![NameEntry::dummy(self.rules.resolve(path))],
        }))
    }

    async fn extended(&self, id: u32, request: &str, data: Vec<u8>) -> Reply {
        match request {
            "limits@openssh.com" => {
                let mut b = BytesMut::with_capacity(32);
                b.put_u64(u64::from(MAX_PACKET_LEN));
                b.put_u64(u64::from(MAX_READ_LEN));
                b.put_u64(u64::from(MAX_WRITE_LEN));
                b.put_u64(MAX_HANDLES as u64);
                Ok(Packet::ExtendedReply(ExtendedReply {
                    id,
                    data: b.to_vec(),
                }))
            }
            "posix-rename@openssh.com" => {
                let mut buf = data.as_slice();
                match (read_string(&mut buf), read_string(&mut buf)) {
                    (Some(old), Some(new)) => self.rename(id, &old, &new).await,
                    _ => Err(fail(
                        StatusCode::BadMessage,
                        "malformed posix-rename request",
                    )),
                }
            }
            "fsync@openssh.com" => {
                let mut buf = data.as_slice();
                let handle = read_string(&mut buf)
                    .ok_or_else(|| fail(StatusCode::BadMessage, "malformed fsync request"))?;
                let h = self.handle(&handle)?;
                let OpenHandle::File { file, .. } = &*h else {
                    return Err(fail(StatusCode::Failure, "not a file handle"));
                };
                let file = file.clone();
                blocking(move || file.sync_all().map_err(io_fail)).await?;
                Ok(ok(id))
            }
            "statvfs@openssh.com" => {
                let mut buf = data.as_slice();
                let path = read_string(&mut buf)
                    .ok_or_else(|| fail(StatusCode::BadMessage, "malformed statvfs request"))?;
                self.statvfs(id, &path).await
            }
            "hardlink@openssh.com" => {
                let mut buf = data.as_slice();
                match (read_string(&mut buf), read_string(&mut buf)) {
                    (Some(old), Some(new)) => self.hardlink(id, &old, &new).await,
                    _ => Err(fail(StatusCode::BadMessage, "malformed hardlink request")),
                }
            }
            // Every user's home is the root of their virtual tree.
            "home-directory" => Ok(Packet::Name(Name {
                id,
                files: vec![NameEntry::dummy("/")],
            })),
            // `~` and `~/x` (what OpenSSH's sftp sends for paths with a
            // tilde) are the home, `/`; `~other` is not ours to expand.
            "expand-path@openssh.com" => {
                let mut buf = data.as_slice();
                let path = read_string(&mut buf)
                    .ok_or_else(|| fail(StatusCode::BadMessage, "malformed expand-path request"))?;
                // Other paths are relative to the start directory.
                let expanded = match path.strip_prefix('~') {
                    None => self.rules.resolve(&path),
                    Some(r) if r.is_empty() || r.starts_with('/') => vpath::clean("/", r),
                    Some(_) => {
                        return Err(fail(
                            StatusCode::NoSuchFile,
                            "cannot expand another user's home",
                        ));
                    }
                };
                Ok(Packet::Name(Name {
                    id,
                    files: vec![NameEntry::dummy(expanded)],
                }))
            }
            "fstatvfs@openssh.com" => {
                let mut buf = data.as_slice();
                let handle = read_string(&mut buf)
                    .ok_or_else(|| fail(StatusCode::BadMessage, "malformed fstatvfs request"))?;
                let vp = match &*self.handle(&handle)? {
                    OpenHandle::File { vpath, .. } | OpenHandle::Dir { vpath, .. } => vpath.clone(),
                };
                self.statvfs(id, &vp).await
            }
            "copy-data" => {
                let mut buf = data.as_slice();
                let bad = || fail(StatusCode::BadMessage, "malformed copy-data request");
                let read_handle = read_string(&mut buf).ok_or_else(bad)?;
                if buf.remaining() < 16 {
                    return Err(bad());
                }
                let (read_offset, read_length) = (buf.get_u64(), buf.get_u64());
                let write_handle = read_string(&mut buf).ok_or_else(bad)?;
                if buf.remaining() < 8 {
                    return Err(bad());
                }
                let write_offset = buf.get_u64();
                self.copy_data(
                    id,
                    (&read_handle, read_offset, read_length),
                    (&write_handle, write_offset),
                )
                .await
            }
            _ => Err(fail(
                StatusCode::OpUnsupported,
                format!("unsupported extension {request:?}"),
            )),
        }
    }

    /// `statvfs@openssh.com`: the disk's numbers, replaced by what the
    /// user's quota leaves (4 KiB blocks) where the user has limits.
    async fn statvfs(&self, id: u32, path: &str) -> Reply {
        let vp = self.rules.resolve(path);
        self.check(Operation::Stat { path: &vp })?;
        self.rules.visible(&vp)?;
        let real = self.fs.resolve(&vp)?;
        let st = blocking(move || {
            rustix::fs::statvfs(&real).map_err(|e| io_fail(std::io::Error::from(e)))
        })
        .await?;
        let mut v = [
            st.f_bsize,
            st.f_frsize,
            st.f_blocks,
            st.f_bfree,
            st.f_bavail,
            st.f_files,
            st.f_ffree,
            st.f_favail,
            st.f_fsid,
            st.f_flag.bits(),
            st.f_namemax,
        ];
        if let Some(q) = self.rules.quota.status(&self.fs.domain(&vp)).await? {
            if q.quota_size > 0 {
                const BLOCK: i64 = 4096;
                let free = (q.quota_size - q.used_size - q.reserved_size).max(0) / BLOCK;
                v[0] = BLOCK as u64;
                v[1] = BLOCK as u64;
                v[2] = (q.quota_size / BLOCK) as u64;
                v[3] = free as u64;
                v[4] = free as u64;
            }
            if q.quota_files > 0 {
                let free = (q.quota_files - q.used_files - q.reserved_files).max(0) as u64;
                v[5] = q.quota_files as u64;
                v[6] = free;
                v[7] = free;
            }
        }
        let mut b = BytesMut::with_capacity(v.len() * 8);
        for x in v {
            b.put_u64(x);
        }
        Ok(Packet::ExtendedReply(ExtendedReply {
            id,
            data: b.to_vec(),
        }))
    }

    /// `hardlink@openssh.com`: a new name for an existing regular file,
    /// counted in quota like a new file of that size.
    async fn hardlink(&self, id: u32, old: &str, new: &str) -> Reply {
        let (target, link) = (self.rules.resolve(old), self.rules.resolve(new));
        if target == "/" || link == "/" {
            return Err(denied());
        }
        self.check(Operation::Hardlink {
            link: &link,
            target: &target,
        })?;
        self.check_path(&target)?;
        self.check_path(&link)?;
        if self.fs.holds_mount(&link) || self.fs.mount_name(&link) != self.fs.mount_name(&target) {
            return Err(fail(
                StatusCode::OpUnsupported,
                "hard links across virtual folders are not supported",
            ));
        }
        let src = self.fs.resolve_nofollow(&target)?;
        let dst = self.fs.resolve_nofollow(&link)?;
        let meta = {
            let src = src.clone();
            blocking(move || std::fs::symlink_metadata(&src).map_err(io_fail)).await?
        };
        if !meta.is_file() {
            return Err(fail(StatusCode::Failure, "not a regular file"));
        }
        let size = meta.len() as i64;
        let domain = self.fs.domain(&link);
        self.rules.quota.grow(&domain, size, 1).await?;
        if let Err(e) = blocking(move || std::fs::hard_link(&src, &dst).map_err(io_fail)).await {
            self.rules.quota.release(&domain, -size, -1).await;
            return Err(e);
        }
        Ok(ok(id))
    }

    /// `copy-data`: copies a range between two open files on the server,
    /// through the same quota checks as a write.
    async fn copy_data(
        &self,
        id: u32,
        (read_handle, mut read_offset, length): (&str, u64, u64),
        (write_handle, mut write_offset): (&str, u64),
    ) -> Reply {
        let from = self.handle(read_handle)?;
        let to = self.handle(write_handle)?;
        let OpenHandle::File { file: src, .. } = &*from else {
            return Err(fail(StatusCode::Failure, "not a file handle"));
        };
        let OpenHandle::File {
            file: dst,
            writable: true,
            quota,
            transfer,
            ..
        } = &*to
        else {
            return Err(fail(
                StatusCode::PermissionDenied,
                "the destination handle is not open for writing",
            ));
        };
        if read_handle == write_handle
            && (length == 0
                || read_offset < write_offset.saturating_add(length)
                    && write_offset < read_offset.saturating_add(length))
        {
            return Err(fail(
                StatusCode::Failure,
                "overlapping copy within one file",
            ));
        }
        let mut left = if length == 0 { u64::MAX } else { length };
        while left > 0 {
            let want = left.min(u64::from(MAX_WRITE_LEN)) as usize;
            let src = src.clone();
            let chunk = blocking(move || {
                let mut buf = vec![0u8; want];
                let filled = read_full_at(&src, &mut buf, read_offset).map_err(io_fail)?;
                buf.truncate(filled);
                Ok(buf)
            })
            .await?;
            if chunk.is_empty() {
                break;
            }
            let n = chunk.len() as u64;
            if let Some(q) = quota {
                q.admit(write_offset.saturating_add(n)).await?;
            }
            let dst = dst.clone();
            blocking(move || dst.write_all_at(&chunk, write_offset).map_err(io_fail)).await?;
            transfer.1.size.fetch_add(n as i64, Ordering::Relaxed);
            read_offset += n;
            write_offset += n;
            left -= n;
            self.conn.touch();
        }
        Ok(ok(id))
    }

    /// Serves one request that is not a read or a write.
    /// SFTPGo's command log line for a change that succeeded.
    fn log_command(&self, sender: &str, path: &str, target: &str, detail: &[(&str, String)]) {
        let detail: String = detail
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" ");
        tracing::info!(
            sender,
            username = self.conn.opened.username,
            file_path = self.rules.resolve(path),
            target_path = if target.is_empty() {
                String::new()
            } else {
                self.rules.resolve(target)
            },
            detail,
            connection_id = self.conn.opened.connection_id,
            protocol = self.conn.opened.protocol,
            remote_addr = self.conn.opened.remote_address,
            "command done"
        );
    }

    /// Runs one request; changes that succeed are logged.
    async fn dispatch(self: &Arc<Self>, packet: Packet) -> Reply {
        type Entry = (&'static str, String, String, Vec<(&'static str, String)>);
        let one = |sender, path: &str, target: &str| -> Vec<Entry> {
            vec![(sender, path.to_string(), target.to_string(), vec![])]
        };
        let log: Vec<Entry> = match &packet {
            Packet::Remove(p) => one("Remove", &p.filename, ""),
            Packet::MkDir(p) => one("Mkdir", &p.path, ""),
            Packet::RmDir(p) => one("Rmdir", &p.path, ""),
            Packet::Rename(p) => one("Rename", &p.oldpath, &p.newpath),
            Packet::Symlink(p) => one("Symlink", &p.targetpath, &p.linkpath),
            Packet::SetStat(p) => {
                let (a, path) = (&p.attrs, p.path.clone());
                let mut out: Vec<Entry> = Vec::new();
                if let Some(m) = a.permissions {
                    let mode = format!("{:o}", m & 0o7777);
                    out.push((
                        "Chmod",
                        path.clone(),
                        String::new(),
                        vec![("filemode", mode)],
                    ));
                }
                if let (Some(u), Some(g)) = (a.uid, a.gid) {
                    let ids = vec![("uid", u.to_string()), ("gid", g.to_string())];
                    out.push(("Chown", path.clone(), String::new(), ids));
                }
                if let (Some(at), Some(mt)) = (a.atime, a.mtime) {
                    let times = vec![
                        ("access_time", at.to_string()),
                        ("modification_time", mt.to_string()),
                    ];
                    out.push(("Chtimes", path.clone(), String::new(), times));
                }
                if let Some(size) = a.size {
                    out.push((
                        "Truncate",
                        path,
                        String::new(),
                        vec![("size", size.to_string())],
                    ));
                }
                out
            }
            _ => Vec::new(),
        };
        let reply = self.dispatch_inner(packet).await;
        if reply.is_ok() {
            for (sender, path, target, detail) in &log {
                self.log_command(sender, path, target, detail);
            }
        }
        reply
    }

    async fn dispatch_inner(self: &Arc<Self>, packet: Packet) -> Reply {
        match packet {
            Packet::Open(p) => self.open(p.id, p.filename, p.pflags, p.attrs).await,
            Packet::Close(p) => self.close(p.id, &p.handle).await,
            Packet::Lstat(p) => self.stat(p.id, &p.path, false).await,
            Packet::Stat(p) => self.stat(p.id, &p.path, true).await,
            Packet::Fstat(p) => self.fstat(p.id, &p.handle).await,
            Packet::SetStat(p) => self.setstat(p.id, &p.path, p.attrs, None).await,
            Packet::FSetStat(p) => self.fsetstat(p.id, &p.handle, p.attrs).await,
            Packet::OpenDir(p) => self.opendir(p.id, &p.path).await,
            Packet::ReadDir(p) => self.readdir(p.id, &p.handle).await,
            Packet::Remove(p) => self.remove(p.id, &p.filename).await,
            Packet::MkDir(p) => self.mkdir(p.id, &p.path, p.attrs).await,
            Packet::RmDir(p) => self.rmdir(p.id, &p.path).await,
            Packet::RealPath(p) => self.realpath(p.id, &p.path),
            Packet::Rename(p) => self.rename(p.id, &p.oldpath, &p.newpath).await,
            Packet::ReadLink(p) => self.readlink(p.id, &p.path).await,
            Packet::Symlink(p) => self.symlink(p.id, &p.linkpath, &p.targetpath).await,
            Packet::Extended(p) => self.extended(p.id, &p.request, p.data).await,
            other => Err(fail(
                StatusCode::OpUnsupported,
                format!("unexpected packet {:?}", std::mem::discriminant(&other)),
            )),
        }
    }
}

/// Fills `buf` from `offset` until it is full or the file ends; returns how
/// many bytes were read.
fn read_full_at(file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read_at(&mut buf[filled..], offset + filled as u64) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// True when the relative path `rel`, taken from a directory `depth` levels
/// below the root, never climbs above the root.
fn stays_below(mut depth: usize, rel: &str) -> bool {
    for comp in rel.split('/') {
        match comp {
            "" | "." => {}
            ".." => match depth.checked_sub(1) {
                Some(d) => depth = d,
                None => return false,
            },
            _ => depth += 1,
        }
    }
    true
}

fn apply_attrs(
    real: &Path,
    file: Option<&File>,
    attrs: &FileAttributes,
) -> Result<(), (StatusCode, String)> {
    if let Some(size) = attrs.size {
        match file {
            Some(f) => f.set_len(size),
            None => std::fs::OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_NOFOLLOW)
                .open(real)
                .and_then(|f| f.set_len(size)),
        }
        .map_err(io_fail)?;
    }
    if let Some(mode) = attrs.permissions {
        std::fs::set_permissions(real, std::fs::Permissions::from_mode(mode & CHMOD_MASK))
            .map_err(io_fail)?;
    }
    if attrs.uid.is_some() || attrs.gid.is_some() {
        std::os::unix::fs::chown(real, attrs.uid, attrs.gid).map_err(io_fail)?;
    }
    if attrs.atime.is_some() || attrs.mtime.is_some() {
        let at =
            |secs: u32| std::time::UNIX_EPOCH + std::time::Duration::from_secs(u64::from(secs));
        let mut times = std::fs::FileTimes::new();
        if let Some(a) = attrs.atime {
            times = times.set_accessed(at(a));
        }
        if let Some(m) = attrs.mtime {
            times = times.set_modified(at(m));
        }
        let owned;
        let f = match file {
            Some(f) => f,
            None => {
                owned = File::open(real).map_err(io_fail)?;
                &owned
            }
        };
        f.set_times(times).map_err(io_fail)?;
    }
    Ok(())
}

fn status_bytes(id: u32, (code, message): (StatusCode, String)) -> Bytes {
    encode(Packet::Status(Status {
        id,
        status_code: code,
        error_message: message,
        language_tag: "en".into(),
    }))
}

fn reply_bytes(id: u32, reply: Reply) -> Bytes {
    match reply {
        Ok(p) => encode(p),
        Err(e) => status_bytes(id, e),
    }
}

/// Queues a reply produced in the reader loop (one permit, like any
/// request). False when the writer is gone.
async fn send_inline(
    permits: &Arc<Semaphore>,
    out: &mpsc::Sender<Outgoing>,
    seq: u64,
    bytes: Bytes,
) -> bool {
    let Ok(permit) = permits.clone().acquire_owned().await else {
        return false;
    };
    out.send(Outgoing {
        seq,
        bytes,
        _permit: permit,
    })
    .await
    .is_ok()
}

struct Outgoing {
    seq: u64,
    bytes: Bytes,
    _permit: OwnedSemaphorePermit,
}

/// Serves SFTP on `channel` until the client closes it, then sends
/// exit-status 0, EOF and close (OpenSSH's scp exits 1 without exit-status).
pub async fn serve(channel: russh::Channel<Msg>, session: Arc<SftpSession>) {
    let (mut rx, tx) = channel.split();
    let (out_tx, mut out_rx) = mpsc::channel::<Outgoing>(MAX_IN_FLIGHT as usize);
    let writer = tokio::spawn(async move {
        let mut next = 0u64;
        let mut pending: BTreeMap<u64, Outgoing> = BTreeMap::new();
        let mut broken = false;
        while let Some(o) = out_rx.recv().await {
            pending.insert(o.seq, o);
            while let Some(o) = pending.remove(&next) {
                next += 1;
                // data_bytes hands russh slices of the reply: no copy per SSH packet.
                if !broken && tx.data_bytes(o.bytes).await.is_err() {
                    broken = true;
                }
            }
        }
        let _ = tx.exit_status(0).await;
        let _ = tx.eof().await;
        let _ = tx.close().await;
    });

    let permits = Arc::new(Semaphore::new(MAX_IN_FLIGHT as usize));
    let mut buf = BytesMut::new();
    let mut seq = 0u64;
    let mut initialised = false;
    'outer: loop {
        while buf.len() >= 4 {
            let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
            if len == 0 || len > MAX_PACKET_LEN {
                tracing::warn!(len, "SFTP packet length out of bounds, closing the channel");
                break 'outer;
            }
            if buf.len() < 4 + len as usize {
                buf.reserve(4 + len as usize - buf.len());
                break;
            }
            buf.advance(4);
            let mut frame = buf.split_to(len as usize).freeze();
            let this_seq = seq;
            seq += 1;
            let packet = match Packet::try_from(&mut frame) {
                Ok(p) => p,
                Err(e) => {
                    tracing::debug!(error = %e, "malformed SFTP packet");
                    let bytes = status_bytes(0, fail(StatusCode::BadMessage, "malformed packet"));
                    if !send_inline(&permits, &out_tx, this_seq, bytes).await {
                        break 'outer;
                    }
                    continue;
                }
            };
            if !initialised {
                let Packet::Init(_) = packet else {
                    tracing::warn!("SFTP client did not start with INIT");
                    break 'outer;
                };
                initialised = true;
                let mut version = Version::new();
                version.extensions = [
                    ("posix-rename@openssh.com", "1"),
                    ("statvfs@openssh.com", "2"),
                    ("fstatvfs@openssh.com", "2"),
                    ("expand-path@openssh.com", "1"),
                    ("hardlink@openssh.com", "1"),
                    ("fsync@openssh.com", "1"),
                    ("limits@openssh.com", "1"),
                    ("home-directory", "1"),
                    ("copy-data", "1"),
                ]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
                let bytes = encode(Packet::Version(version));
                if !send_inline(&permits, &out_tx, this_seq, bytes).await {
                    break 'outer;
                }
                continue;
            }
            match packet {
                Packet::Read(_) | Packet::Write(_) => {
                    let permit = permits
                        .clone()
                        .acquire_owned()
                        .await
                        .expect("semaphore open");
                    let s = session.clone();
                    let out = out_tx.clone();
                    tokio::spawn(async move {
                        let bytes = match packet {
                            Packet::Read(r) => s
                                .read(r.id, &r.handle, r.offset, r.len)
                                .await
                                .unwrap_or_else(|e| status_bytes(r.id, e)),
                            Packet::Write(w) => {
                                reply_bytes(w.id, s.write(w.id, &w.handle, w.offset, w.data).await)
                            }
                            _ => unreachable!("only reads and writes are spawned"),
                        };
                        let _ = out
                            .send(Outgoing {
                                seq: this_seq,
                                bytes,
                                _permit: permit,
                            })
                            .await;
                    });
                }
                other => {
                    // A barrier: wait until every earlier request has been
                    // answered, then run alone.
                    let all = permits
                        .clone()
                        .acquire_many_owned(MAX_IN_FLIGHT)
                        .await
                        .expect("semaphore open");
                    let id = other.get_request_id();
                    let reply = session.dispatch(other).await;
                    drop(all);
                    let bytes = reply_bytes(id, reply);
                    if !send_inline(&permits, &out_tx, this_seq, bytes).await {
                        break 'outer;
                    }
                }
            }
        }
        match rx.wait().await {
            Some(ChannelMsg::Data { data }) => buf.extend_from_slice(&data),
            Some(ChannelMsg::Eof) | Some(ChannelMsg::Close) | None => break,
            Some(_) => {}
        }
    }
    drop(out_tx);
    // In-flight requests finish and their replies are written before the
    // writer sends exit-status and closes.
    let _ = writer.await;
    session.release_all().await;
}

/// True when this process runs as root (new files then get the user's
/// uid/gid). `/proc/self` is owned by the effective uid.
pub fn running_as_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::stays_below;

    #[test]
    fn relative_symlink_targets_must_stay_inside() {
        assert!(stays_below(0, "f"));
        assert!(stays_below(1, "../f"));
        assert!(stays_below(1, "./a/../../f"));
        assert!(!stays_below(0, "../f"));
        assert!(!stays_below(2, "../../../etc/passwd"));
        assert!(stays_below(2, "a/b/../../../x"));
    }
}
