//! The SFTP server loop (protocol version 3) over one SSH channel.
//!
//! russh-sftp gives the packet types and codec; the loop is ours so that many
//! outstanding requests are served concurrently: reads and writes run as
//! parallel tasks, every other request waits for those in flight and runs
//! alone (a barrier), so pipelined clients see the effects of earlier
//! requests. Replies leave in request order. At most [`MAX_IN_FLIGHT`]
//! requests are between decode and reply, which bounds memory per channel.
//!
//! Every path goes through the storage layer ([`crate::vfs`]): resolved once
//! into an entry, checked (permissions and filters on the requested path and
//! on where links led), then acted on through that entry.

use std::collections::{BTreeMap, HashMap};
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
use tokio_util::sync::CancellationToken;

use crate::limits::{ConnectionBudget, HandleSlot};
use crate::policy::{Denial, UserPolicy};
use crate::quota::QuotaError;
use crate::registry::{Connection, TransferState};
use crate::vfs::{
    DirReader, Entry, FileReader, Follow, FsError, Meta, OpenWrite, SetAttrs, SetstatMode, Upload,
    UploadError, UserFs,
};

/// Largest SFTP packet accepted from a client (`limits@openssh.com`).
pub const MAX_PACKET_LEN: u32 = 256 * 1024;
/// Largest read served and write accepted (OpenSSH's values: packet minus headers).
pub const MAX_READ_LEN: u32 = MAX_PACKET_LEN - 1024;
pub const MAX_WRITE_LEN: u32 = MAX_PACKET_LEN - 1024;
/// Requests decoded but not yet answered, per channel.
pub const MAX_IN_FLIGHT: u32 = 64;
/// Directory entries per READDIR reply.
pub const READDIR_BATCH: usize = 250;

type Reply = Result<Packet, (StatusCode, String)>;

fn fail(code: StatusCode, msg: impl Into<String>) -> (StatusCode, String) {
    (code, msg.into())
}

impl From<FsError> for (StatusCode, String) {
    /// OpenSSH's mapping of errors to status codes, with short texts
    /// (OpenSSH's where clients and their tests match on them).
    fn from(e: FsError) -> Self {
        match e {
            FsError::NotFound => fail(StatusCode::NoSuchFile, "No such file"),
            FsError::NotADirectory => fail(StatusCode::NoSuchFile, "Not a directory"),
            FsError::Loop => fail(StatusCode::NoSuchFile, "Too many levels of symbolic links"),
            FsError::PermissionDenied | FsError::Outside => {
                fail(StatusCode::PermissionDenied, "Permission denied")
            }
            FsError::Reserved => fail(StatusCode::PermissionDenied, "Reserved file name"),
            FsError::NotALink | FsError::Invalid | FsError::NameTooLong => {
                fail(StatusCode::BadMessage, capitalised(&e))
            }
            FsError::Unsupported(_) | FsError::CrossDevice => {
                fail(StatusCode::OpUnsupported, capitalised(&e))
            }
            other => fail(StatusCode::Failure, capitalised(&other)),
        }
    }
}

fn capitalised(e: &FsError) -> String {
    let text = e.to_string();
    let mut c = text.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => text,
    }
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

impl From<UploadError> for (StatusCode, String) {
    fn from(e: UploadError) -> Self {
        match e {
            UploadError::Storage(e) => e.into(),
            UploadError::Quota(q) => q.into(),
        }
    }
}

enum OpenHandle {
    /// A file open for reading.
    Read {
        file: FileReader,
        vpath: String,
        transfer: (u64, Arc<TransferState>),
    },
    /// A file open for writing (and maybe reading).
    Write {
        upload: Box<Upload>,
        vpath: String,
        transfer: (u64, Arc<TransferState>),
    },
    Dir {
        vpath: String,
        reader: Arc<DirReader>,
        /// Virtual paths whose filters decide what is listed.
        filter_dirs: Vec<String>,
        /// `.` and `..` (not at `/`), with the directory's own attributes,
        /// sent first as OpenSSH and SFTPGo do; taken by the first READDIR.
        dots: Mutex<Vec<(String, Meta)>>,
    },
}

impl OpenHandle {
    fn vpath(&self) -> &str {
        match self {
            OpenHandle::Read { vpath, .. }
            | OpenHandle::Write { vpath, .. }
            | OpenHandle::Dir { vpath, .. } => vpath,
        }
    }

    /// The open file of a file handle.
    fn file(&self) -> Result<&FileReader, (StatusCode, String)> {
        match self {
            OpenHandle::Read { file, .. } => Ok(file),
            OpenHandle::Write { upload, .. } => Ok(upload.file()),
            OpenHandle::Dir { .. } => Err(fail(StatusCode::Failure, "not a file handle")),
        }
    }

    fn transfer(&self) -> Option<&(u64, Arc<TransferState>)> {
        match self {
            OpenHandle::Read { transfer, .. } | OpenHandle::Write { transfer, .. } => {
                Some(transfer)
            }
            OpenHandle::Dir { .. } => None,
        }
    }
}

/// One authenticated user's SFTP state on one channel.
pub struct SftpSession {
    fs: UserFs,
    rules: Arc<UserPolicy>,
    conn: Arc<Connection>,
    handles: Mutex<HashMap<String, (Arc<OpenHandle>, HandleSlot)>>,
    next_handle: AtomicU64,
    budget: Arc<ConnectionBudget>,
}

fn attrs_of(meta: &Meta) -> FileAttributes {
    FileAttributes {
        size: Some(meta.size),
        uid: Some(meta.uid),
        user: None,
        gid: Some(meta.gid),
        group: None,
        permissions: Some(meta.mode),
        atime: Some(meta.atime.clamp(0, i64::from(u32::MAX)) as u32),
        mtime: Some(meta.mtime.clamp(0, i64::from(u32::MAX)) as u32),
    }
}

/// `ls -l` style line, as OpenSSH's sftp-server writes it: the time of day
/// for times within six months of now, the year otherwise; the day padded
/// with a space.
fn long_name(name: &str, meta: &Meta, now: i64) -> String {
    let mode = meta.mode;
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
    const HALF_YEAR: i64 = 365 * 24 * 60 * 60 / 2;
    let recent = now - HALF_YEAR < meta.mtime && meta.mtime <= now;
    let when = chrono::DateTime::from_timestamp(meta.mtime, 0)
        .map(|d| {
            d.format(if recent { "%b %e %H:%M" } else { "%b %e  %Y" })
                .to_string()
        })
        .unwrap_or_default();
    format!(
        "{kind}{perms} {:>4} {:<8} {:<8} {:>8} {when} {name}",
        meta.nlink, meta.uid, meta.gid, meta.size
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
        conn: Arc<Connection>,
        budget: Arc<ConnectionBudget>,
    ) -> Self {
        Self {
            fs,
            rules,
            conn,
            handles: Mutex::new(HashMap::new()),
            next_handle: AtomicU64::new(1),
            budget,
        }
    }

    fn handle(&self, h: &str) -> Result<Arc<OpenHandle>, (StatusCode, String)> {
        self.handles
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(h)
            .map(|(h, _)| h.clone())
            .ok_or_else(|| fail(StatusCode::Failure, "invalid handle"))
    }

    /// True for clients that send SYMLINK's arguments in the draft's
    /// order (link path first): asyncssh, talking to a server whose
    /// version string does not contain "OpenSSH".
    fn draft_symlink_order(&self) -> bool {
        self.conn.opened.client_version.contains("AsyncSSH")
    }

    /// A place for one more handle, taken before anything is opened (so a
    /// refusal changes nothing on disk).
    fn reserve_handle(&self) -> Result<HandleSlot, (StatusCode, String)> {
        self.budget.handle().map_err(|e| {
            e.record();
            fail(StatusCode::Failure, e.to_string())
        })
    }

    fn add_handle(&self, h: OpenHandle, slot: HandleSlot) -> String {
        let mut handles = self.handles.lock().unwrap_or_else(|e| e.into_inner());
        let id = self.next_handle.fetch_add(1, Ordering::Relaxed).to_string();
        handles.insert(id.clone(), (Arc::new(h), slot));
        id
    }

    /// A permission check on the requested path and, when links led
    /// elsewhere, on the path they led to: both must allow it.
    fn check_at<'a>(
        &self,
        requested: &'a str,
        resolved: &'a str,
        op: impl Fn(&'a str) -> Operation<'a>,
    ) -> Result<(), (StatusCode, String)> {
        self.rules.allows(op(requested))?;
        if resolved != requested {
            self.rules.allows(op(resolved))?;
        }
        Ok(())
    }

    /// Only hiding applies (stat, listing): on both paths.
    fn check_visible(&self, requested: &str, resolved: &str) -> Result<(), (StatusCode, String)> {
        self.rules.visible(requested)?;
        if resolved != requested {
            self.rules.visible(resolved)?;
        }
        Ok(())
    }

    /// Resolves a client path (clean, virtual) after its filters allow it.
    async fn entry(&self, vp: &str, follow: Follow) -> Result<Entry, (StatusCode, String)> {
        self.rules.path(vp)?;
        let e = self.fs.resolve(vp, follow).await?;
        if e.vpath() != vp {
            self.rules.path(e.vpath())?;
        }
        Ok(e)
    }

    /// Ends what a vanished client left open: transfers stop being listed;
    /// uploads end per the upload mode.
    #[doc(hidden)] // also driven by the fuzz targets (fuzz/)
    pub async fn release_all(&self) {
        let handles: Vec<Arc<OpenHandle>> = self
            .handles
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain()
            .map(|(_, (h, _))| h)
            .collect();
        for h in handles {
            if let Some((tid, _)) = h.transfer() {
                self.conn.finish_transfer(*tid, false);
            }
            if let OpenHandle::Write { upload, .. } = &*h {
                upload.abort().await;
            }
        }
    }

    async fn open(
        &self,
        id: u32,
        filename: String,
        flags: OpenFlags,
        attrs: FileAttributes,
    ) -> Reply {
        let vp = self.rules.resolve(&filename);
        let slot = self.reserve_handle()?;
        let entry = self.entry(&vp, Follow::All).await?;
        let rv = entry.vpath().to_string();
        let write = flags.intersects(OpenFlags::WRITE | OpenFlags::APPEND);
        let read = flags.contains(OpenFlags::READ) || !write;
        if entry.is_dir() {
            return Err(FsError::IsADirectory.into());
        }
        if read {
            self.check_at(&vp, &rv, |p| Operation::Download { path: p })?;
        }
        if write {
            match entry.meta() {
                Some(_) if flags.contains(OpenFlags::EXCLUDE) => {
                    return Err(FsError::Exists.into());
                }
                Some(_) => self.check_at(&vp, &rv, |p| Operation::Overwrite { path: p })?,
                None if !flags.contains(OpenFlags::CREATE) => {
                    return Err(FsError::NotFound.into());
                }
                None => self.check_at(&vp, &rv, |p| Operation::Upload { path: p })?,
            }
        } else if !entry.exists() {
            return Err(FsError::NotFound.into());
        }
        let handle = if write {
            let opts = OpenWrite {
                read,
                create: flags.contains(OpenFlags::CREATE),
                exclusive: flags.contains(OpenFlags::EXCLUDE),
                truncate: flags.contains(OpenFlags::TRUNCATE),
                append: flags.contains(OpenFlags::APPEND),
                mode: attrs.permissions.map_or(0o666, |p| p & 0o777),
            };
            let upload = Box::new(Upload::begin(entry, opts, &self.rules.quota).await?);
            let transfer = self
                .conn
                .begin_transfer("upload", vp.clone(), Some(upload.recovery()));
            OpenHandle::Write {
                upload,
                vpath: vp,
                transfer,
            }
        } else {
            let (file, _) = entry.open_read().await?;
            let transfer = self.conn.begin_transfer("download", vp.clone(), None);
            OpenHandle::Read {
                file,
                vpath: vp,
                transfer,
            }
        };
        self.conn.touch();
        let handle = self.add_handle(handle, slot);
        Ok(Packet::Handle(Handle { id, handle }))
    }

    async fn close(&self, id: u32, handle: &str) -> Reply {
        let removed = self
            .handles
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(handle)
            .map(|(h, _)| h);
        let Some(h) = removed else {
            return Err(fail(StatusCode::Failure, "invalid handle"));
        };
        match &*h {
            OpenHandle::Write {
                upload, transfer, ..
            } => {
                self.conn.finish_transfer(transfer.0, !upload.exceeded());
                upload.commit().await?;
            }
            OpenHandle::Read { transfer, .. } => self.conn.finish_transfer(transfer.0, true),
            OpenHandle::Dir { .. } => {}
        }
        self.conn.touch();
        Ok(ok(id))
    }

    #[doc(hidden)]
    pub async fn read(
        &self,
        id: u32,
        handle: &str,
        offset: u64,
        len: u32,
    ) -> Result<Bytes, (StatusCode, String)> {
        let h = self.handle(handle)?;
        let file = h.file()?;
        let want = len.min(MAX_READ_LEN) as usize;
        let packet = file
            .read_into(BytesMut::zeroed(DATA_HEADER + want), DATA_HEADER, offset)
            .await?;
        let read = packet.len() - DATA_HEADER;
        if read == 0 && want > 0 {
            return Err(fail(StatusCode::Eof, "end of file"));
        }
        self.rules.throttle_download(read).await;
        if let Some((_, t)) = h.transfer() {
            t.size.fetch_add(read as i64, Ordering::Relaxed);
        }
        self.conn.touch();
        Ok(finish_data(packet, id))
    }

    #[doc(hidden)]
    pub async fn write(&self, id: u32, handle: &str, offset: u64, data: Vec<u8>) -> Reply {
        let h = self.handle(handle)?;
        let OpenHandle::Write {
            upload, transfer, ..
        } = &*h
        else {
            return Err(match &*h {
                OpenHandle::Dir { .. } => fail(StatusCode::Failure, "not a file handle"),
                _ => fail(StatusCode::PermissionDenied, "handle not open for writing"),
            });
        };
        if data.len() > MAX_WRITE_LEN as usize {
            return Err(fail(StatusCode::Failure, "write too large"));
        }
        let n = data.len();
        self.rules.throttle_upload(n).await;
        upload.write_at(offset, data).await?;
        transfer.1.size.fetch_add(n as i64, Ordering::Relaxed);
        self.conn.touch();
        Ok(ok(id))
    }

    async fn stat(&self, id: u32, path: &str, follow: bool) -> Reply {
        let vp = self.rules.resolve(path);
        self.rules.allows(Operation::Stat { path: &vp })?;
        self.rules.visible(&vp)?;
        let follow = if follow { Follow::All } else { Follow::NotLast };
        let entry = self.fs.resolve(&vp, follow).await?;
        let rv = entry.vpath();
        self.check_at(&vp, rv, |p| Operation::Stat { path: p })?;
        self.check_visible(&vp, rv)?;
        let meta = entry.meta().ok_or(FsError::NotFound)?;
        Ok(Packet::Attrs(Attrs {
            id,
            attrs: attrs_of(meta),
        }))
    }

    async fn fstat(&self, id: u32, handle: &str) -> Reply {
        let h = self.handle(handle)?;
        let meta = h.file()?.meta().await?;
        Ok(Packet::Attrs(Attrs {
            id,
            attrs: attrs_of(&meta),
        }))
    }

    /// Checks every part of a setstat before applying any, so a refused
    /// part leaves the file untouched.
    fn check_setstat(
        &self,
        vp: &str,
        rv: &str,
        attrs: &SetAttrs,
    ) -> Result<(), (StatusCode, String)> {
        if attrs.size.is_some() {
            self.check_at(vp, rv, |p| Operation::Overwrite { path: p })?;
        }
        if attrs.permissions.is_some() {
            self.check_at(vp, rv, |p| Operation::Chmod { path: p })?;
        }
        if attrs.uid.is_some() || attrs.gid.is_some() {
            self.check_at(vp, rv, |p| Operation::Chown { path: p })?;
        }
        if attrs.atime.is_some() || attrs.mtime.is_some() {
            self.check_at(vp, rv, |p| Operation::Chtimes { path: p })?;
        }
        Ok(())
    }

    fn set_attrs(&self, attrs: &FileAttributes) -> SetAttrs {
        let mut a = SetAttrs {
            size: attrs.size,
            permissions: attrs.permissions,
            uid: attrs.uid,
            gid: attrs.gid,
            atime: attrs.atime,
            mtime: attrs.mtime,
        };
        if self.fs.settings().setstat_mode == SetstatMode::Ignore {
            // Accepted and ignored; only a truncation is still applied.
            a = SetAttrs {
                size: a.size,
                ..SetAttrs::default()
            };
        }
        a
    }

    /// A size change outside an upload: growth is reserved first, the
    /// change settled after.
    async fn truncate_quota(
        &self,
        domain: &crate::quota::QuotaDomain,
        old: u64,
        new: u64,
    ) -> Result<i64, (StatusCode, String)> {
        let change = i64::try_from(new)
            .ok()
            .and_then(|n| n.checked_sub(i64::try_from(old).ok()?))
            .ok_or(FsError::Invalid)?;
        if change > 0 {
            self.rules.quota.grow(domain, change, 0).await?;
        }
        Ok(change)
    }

    /// SETSTAT on a path.
    async fn setstat(&self, id: u32, path: &str, attrs: FileAttributes) -> Reply {
        let vp = self.rules.resolve(path);
        let attrs = self.set_attrs(&attrs);
        self.check_setstat(&vp, &vp, &attrs)?;
        let entry = self.entry(&vp, Follow::All).await?;
        self.check_setstat(&vp, entry.vpath(), &attrs)?;
        let meta = *entry.meta().ok_or(FsError::NotFound)?;
        let mut change = 0;
        if let Some(new) = attrs.size {
            if !meta.is_file() {
                return Err(FsError::NotRegular.into());
            }
            change = self.truncate_quota(&entry.domain(), meta.size, new).await?;
        }
        let applied = entry.set_attrs(attrs, None).await;
        if change < 0 && applied.is_ok() || change > 0 && applied.is_err() {
            // What went (or what was reserved and not used) goes back.
            let back = if applied.is_ok() { change } else { -change };
            self.rules.quota.release(&entry.domain(), back, 0).await;
        }
        applied?;
        self.conn.touch();
        Ok(ok(id))
    }

    /// FSETSTAT on an open file: applied to the open file itself.
    async fn fsetstat(&self, id: u32, handle: &str, attrs: FileAttributes) -> Reply {
        let h = self.handle(handle)?;
        let vp = h.vpath().to_string();
        let attrs = self.set_attrs(&attrs);
        self.check_setstat(&vp, &vp, &attrs)?;
        match &*h {
            OpenHandle::Dir { .. } => {
                return Err(fail(
                    StatusCode::OpUnsupported,
                    "fsetstat on a directory handle",
                ));
            }
            OpenHandle::Write { upload, .. } => {
                if let Some(size) = attrs.size {
                    upload.set_len(size).await?;
                }
                upload
                    .file()
                    .set_attrs(SetAttrs {
                        size: None,
                        ..attrs
                    })
                    .await?;
            }
            OpenHandle::Read { file, .. } => {
                let mut change = 0;
                if let Some(new) = attrs.size {
                    let old = file.meta().await?.size;
                    change = self.truncate_quota(&self.fs.domain(&vp), old, new).await?;
                }
                let applied = file.set_attrs(attrs).await;
                if change < 0 && applied.is_ok() || change > 0 && applied.is_err() {
                    let back = if applied.is_ok() { change } else { -change };
                    self.rules
                        .quota
                        .release(&self.fs.domain(&vp), back, 0)
                        .await;
                }
                applied?;
            }
        }
        self.conn.touch();
        Ok(ok(id))
    }

    async fn opendir(&self, id: u32, path: &str) -> Reply {
        let vp = self.rules.resolve(path);
        self.rules.allows(Operation::List { dir: &vp })?;
        self.rules.visible(&vp)?;
        let slot = self.reserve_handle()?;
        let entry = self.fs.resolve(&vp, Follow::All).await?;
        let rv = entry.vpath().to_string();
        self.check_at(&vp, &rv, |p| Operation::List { dir: p })?;
        self.check_visible(&vp, &rv)?;
        let meta = *entry.meta().ok_or(FsError::NotFound)?;
        let reader = entry.open_dir().await?;
        let mut dots = vec![(".".to_string(), meta)];
        if vp != "/" {
            dots.push(("..".to_string(), meta));
        }
        let mut filter_dirs = vec![vp.clone()];
        if rv != vp {
            filter_dirs.push(rv);
        }
        let handle = self.add_handle(
            OpenHandle::Dir {
                vpath: vp,
                reader,
                filter_dirs,
                dots: Mutex::new(dots),
            },
            slot,
        );
        Ok(Packet::Handle(Handle { id, handle }))
    }

    async fn readdir(&self, id: u32, handle: &str) -> Reply {
        let h = self.handle(handle)?;
        let OpenHandle::Dir {
            reader,
            filter_dirs,
            dots,
            ..
        } = &*h
        else {
            return Err(fail(StatusCode::Failure, "not a directory handle"));
        };
        let mut entries = std::mem::take(&mut *dots.lock().unwrap_or_else(|e| e.into_inner()));
        let rules = self.rules.clone();
        let dirs = filter_dirs.clone();
        entries.extend(
            reader
                .next_batch(READDIR_BATCH - entries.len(), move |name| {
                    dirs.iter().all(|d| rules.listed(d, name))
                })
                .await?,
        );
        self.conn.touch();
        if entries.is_empty() {
            return Err(fail(StatusCode::Eof, "end of directory"));
        }
        let now = chrono::Utc::now().timestamp();
        let files = entries
            .into_iter()
            .map(|(name, meta)| NameEntry {
                longname: long_name(&name, &meta, now),
                filename: name,
                attrs: attrs_of(&meta),
            })
            .collect();
        Ok(Packet::Name(Name { id, files }))
    }

    async fn remove(&self, id: u32, path: &str) -> Reply {
        let vp = self.rules.resolve(path);
        self.rules.allows(Operation::RemoveFile { path: &vp })?;
        let entry = self.entry(&vp, Follow::NotLast).await?;
        self.check_at(&vp, entry.vpath(), |p| Operation::RemoveFile { path: p })?;
        let meta = entry.remove_file().await?;
        // Quota counts regular files.
        if meta.is_file() {
            self.rules
                .quota
                .release(&entry.domain(), -i64::try_from(meta.size).unwrap_or(0), -1)
                .await;
        }
        Ok(ok(id))
    }

    async fn mkdir(&self, id: u32, path: &str, attrs: FileAttributes) -> Reply {
        let vp = self.rules.resolve(path);
        self.rules.allows(Operation::Mkdir { path: &vp })?;
        let entry = self.entry(&vp, Follow::NotLast).await?;
        self.check_at(&vp, entry.vpath(), |p| Operation::Mkdir { path: p })?;
        entry
            .mkdir(attrs.permissions.map_or(0o777, |p| p & 0o777))
            .await?;
        Ok(ok(id))
    }

    async fn rmdir(&self, id: u32, path: &str) -> Reply {
        let vp = self.rules.resolve(path);
        if vp == "/" {
            return Err(denied());
        }
        self.rules.allows(Operation::RemoveDir { path: &vp })?;
        let entry = self.entry(&vp, Follow::NotLast).await?;
        let rv = entry.vpath();
        self.check_at(&vp, rv, |p| Operation::RemoveDir { path: p })?;
        if self.fs.holds_mount(&vp) || self.fs.holds_mount(rv) {
            return Err(fail(
                StatusCode::PermissionDenied,
                "a virtual folder cannot be removed",
            ));
        }
        entry.rmdir().await?;
        Ok(ok(id))
    }

    async fn rename(&self, id: u32, old: &str, new: &str) -> Reply {
        let (from, to) = (self.rules.resolve(old), self.rules.resolve(new));
        if from == "/" || to == "/" {
            return Err(denied());
        }
        let mount_refusal = || {
            fail(
                StatusCode::PermissionDenied,
                "a virtual folder, or a directory holding one, cannot be renamed or replaced",
            )
        };
        if self.fs.holds_mount(&from) || self.fs.holds_mount(&to) {
            return Err(mount_refusal());
        }
        let src = self.entry(&from, Follow::NotLast).await?;
        let dst = self.entry(&to, Follow::NotLast).await?;
        let (rfrom, rto) = (src.vpath().to_string(), dst.vpath().to_string());
        if self.fs.holds_mount(&rfrom) || self.fs.holds_mount(&rto) {
            return Err(mount_refusal());
        }
        let src_meta = *src.meta().ok_or(FsError::NotFound)?;
        let dst_meta = dst.meta().copied();
        if dst_meta.as_ref().is_some_and(Meta::is_dir) {
            return Err(fail(
                StatusCode::Failure,
                "the target is an existing directory",
            ));
        }
        for (f, t) in [(from.as_str(), to.as_str()), (rfrom.as_str(), rto.as_str())] {
            self.rules.allows(Operation::Rename {
                from: f,
                to: t,
                is_dir: src_meta.is_dir(),
                target_exists: dst_meta.is_some(),
            })?;
            if src_meta.is_dir() && t.starts_with(&format!("{f}/")) {
                return Err(fail(
                    StatusCode::Failure,
                    "cannot move a directory inside itself",
                ));
            }
        }
        // Across quota domains (the user's, a folder's own) the moved usage
        // moves too: reserved where it lands first, so a full quota refuses.
        let (from_domain, to_domain) = (src.domain(), dst.domain());
        let moved = if from_domain == to_domain {
            None
        } else {
            let (size, files) = src.usage().await?;
            self.rules.quota.grow(&to_domain, size, files).await?;
            Some((size, files))
        };
        let renamed = src.rename_to(&dst).await;
        if let Some((size, files)) = moved {
            match &renamed {
                Ok(()) => self.rules.quota.release(&from_domain, -size, -files).await,
                Err(_) => self.rules.quota.release(&to_domain, -size, -files).await,
            }
        }
        renamed?;
        // A replaced file leaves the quota.
        if let Some(m) = dst_meta.filter(Meta::is_file) {
            self.rules
                .quota
                .release(&to_domain, -i64::try_from(m.size).unwrap_or(0), -1)
                .await;
        }
        Ok(ok(id))
    }

    async fn readlink(&self, id: u32, path: &str) -> Reply {
        let vp = self.rules.resolve(path);
        self.rules.allows(Operation::Stat { path: &vp })?;
        self.rules.visible(&vp)?;
        let entry = self.fs.resolve(&vp, Follow::NotLast).await?;
        self.check_at(&vp, entry.vpath(), |p| Operation::Stat { path: p })?;
        self.check_visible(&vp, entry.vpath())?;
        let target = entry.readlink(&self.fs).await?;
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
        self.rules.allows(Operation::Symlink {
            link: &vlink,
            target: &vtarget,
        })?;
        self.rules.path(&vtarget)?;
        if self.fs.is_mount_point(&vlink) || self.fs.is_mount_point(&vtarget) {
            return Err(fail(
                StatusCode::PermissionDenied,
                "a virtual folder cannot be a symlink or its target",
            ));
        }
        let entry = self.entry(&vlink, Follow::NotLast).await?;
        let rlink = entry.vpath();
        self.rules.allows(Operation::Symlink {
            link: rlink,
            target: &vtarget,
        })?;
        if entry.mount_name() != self.fs.mount_name(&vtarget) {
            return Err(fail(
                StatusCode::OpUnsupported,
                "symlinks across virtual folders are not supported",
            ));
        }
        entry.symlink(&self.fs, &vtarget).await?;
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
                b.put_u64(u64::from(self.budget.settings.handles_per_connection));
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
                h.file()?.sync().await?;
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
                let vp = self.handle(&handle)?.vpath().to_string();
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
        self.rules.allows(Operation::Stat { path: &vp })?;
        self.rules.visible(&vp)?;
        let entry = self.fs.resolve(&vp, Follow::All).await?;
        self.check_at(&vp, entry.vpath(), |p| Operation::Stat { path: p })?;
        let st = entry.statvfs().await?;
        let mut v = [
            st.bsize, st.frsize, st.blocks, st.bfree, st.bavail, st.files, st.ffree, st.favail,
            st.fsid, st.flag, st.namemax,
        ];
        if let Some(q) = self.rules.quota.status(&entry.domain()).await? {
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
        self.rules.allows(Operation::Hardlink {
            link: &link,
            target: &target,
        })?;
        if self.fs.holds_mount(&link) {
            return Err(fail(
                StatusCode::OpUnsupported,
                "hard links across virtual folders are not supported",
            ));
        }
        let src = self.entry(&target, Follow::NotLast).await?;
        let dst = self.entry(&link, Follow::NotLast).await?;
        self.rules.allows(Operation::Hardlink {
            link: dst.vpath(),
            target: src.vpath(),
        })?;
        if src.mount_name() != dst.mount_name() || self.fs.holds_mount(dst.vpath()) {
            return Err(fail(
                StatusCode::OpUnsupported,
                "hard links across virtual folders are not supported",
            ));
        }
        let meta = *src.meta().ok_or(FsError::NotFound)?;
        if !meta.is_file() {
            return Err(FsError::NotRegular.into());
        }
        let size = i64::try_from(meta.size).unwrap_or(i64::MAX);
        let domain = dst.domain();
        self.rules.quota.grow(&domain, size, 1).await?;
        if let Err(e) = src.hardlink_to(&dst).await {
            self.rules.quota.release(&domain, -size, -1).await;
            return Err(e.into());
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
        let src = from.file()?;
        let OpenHandle::Write {
            upload, transfer, ..
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
        // What the source holds now bounds the copy: another handle on the
        // same file grows as it is written, and would be read forever.
        let available = src.meta().await?.size.saturating_sub(read_offset);
        let mut left = if length == 0 {
            available
        } else {
            length.min(available)
        };
        while left > 0 {
            let want = left.min(u64::from(MAX_WRITE_LEN)) as usize;
            let chunk = src
                .read_into(BytesMut::zeroed(want), 0, read_offset)
                .await?;
            if chunk.is_empty() {
                break;
            }
            let n = chunk.len() as u64;
            upload.write_at(write_offset, chunk.to_vec()).await?;
            transfer.1.size.fetch_add(n as i64, Ordering::Relaxed);
            read_offset = read_offset.checked_add(n).ok_or(FsError::Invalid)?;
            write_offset = write_offset.checked_add(n).ok_or(FsError::Invalid)?;
            left -= n;
            self.conn.touch();
        }
        Ok(ok(id))
    }

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
    #[doc(hidden)]
    pub async fn dispatch(self: &Arc<Self>, packet: Packet) -> Reply {
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
            Packet::SetStat(p) => self.setstat(p.id, &p.path, p.attrs).await,
            Packet::FSetStat(p) => self.fsetstat(p.id, &p.handle, p.attrs).await,
            Packet::OpenDir(p) => self.opendir(p.id, &p.path).await,
            Packet::ReadDir(p) => self.readdir(p.id, &p.handle).await,
            Packet::Remove(p) => self.remove(p.id, &p.filename).await,
            Packet::MkDir(p) => self.mkdir(p.id, &p.path, p.attrs).await,
            Packet::RmDir(p) => self.rmdir(p.id, &p.path).await,
            Packet::RealPath(p) => self.realpath(p.id, &p.path),
            Packet::Rename(p) => self.rename(p.id, &p.oldpath, &p.newpath).await,
            Packet::ReadLink(p) => self.readlink(p.id, &p.path).await,
            // OpenSSH swaps SYMLINK's arguments (target first) and its
            // clients expect that; asyncssh sends the draft's order unless
            // the server's version names OpenSSH.
            Packet::Symlink(p) if self.draft_symlink_order() => {
                self.symlink(p.id, &p.targetpath, &p.linkpath).await
            }
            Packet::Symlink(p) => self.symlink(p.id, &p.linkpath, &p.targetpath).await,
            Packet::Extended(p) => self.extended(p.id, &p.request, p.data).await,
            other => Err(fail(
                StatusCode::OpUnsupported,
                format!("unexpected packet {:?}", std::mem::discriminant(&other)),
            )),
        }
    }
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
/// request). False when the writer is gone or the session ended.
async fn send_inline(
    permits: &Arc<Semaphore>,
    out: &mpsc::Sender<Outgoing>,
    gone: &CancellationToken,
    seq: u64,
    bytes: Bytes,
) -> bool {
    let Some(permit) = acquire(permits, 1, gone).await else {
        return false;
    };
    out.send(Outgoing {
        seq,
        bytes,
        _permit: permit,
        _reply_bytes: None,
    })
    .await
    .is_ok()
}

/// `n` request permits, or None once the session has ended.
async fn acquire(
    permits: &Arc<Semaphore>,
    n: u32,
    gone: &CancellationToken,
) -> Option<OwnedSemaphorePermit> {
    tokio::select! {
        p = permits.clone().acquire_many_owned(n) => p.ok(),
        () = gone.cancelled() => None,
    }
}

struct Outgoing {
    seq: u64,
    bytes: Bytes,
    _permit: OwnedSemaphorePermit,
    /// A READ's share of the connection's queued-reply budget.
    _reply_bytes: Option<OwnedSemaphorePermit>,
}

/// Serves SFTP on `channel` until the client closes it or the SSH session
/// ends (`gone`), then sends exit-status 0, EOF and close (OpenSSH's scp
/// exits 1 without exit-status). Every wait here also waits on `gone`, so
/// a vanished client's channel frees its files, permits and replies.
pub async fn serve(
    channel: russh::Channel<Msg>,
    session: Arc<SftpSession>,
    budget: Arc<ConnectionBudget>,
    gone: CancellationToken,
) {
    let (mut rx, tx) = channel.split();
    let (out_tx, mut out_rx) = mpsc::channel::<Outgoing>(MAX_IN_FLIGHT as usize);
    let writer_gone = gone.clone();
    let writer = tokio::spawn(async move {
        let gone = writer_gone;
        let mut next = 0u64;
        let mut pending: BTreeMap<u64, Outgoing> = BTreeMap::new();
        let mut broken = false;
        loop {
            let o = tokio::select! {
                o = out_rx.recv() => o,
                () = gone.cancelled() => None,
            };
            let Some(o) = o else { break };
            pending.insert(o.seq, o);
            while let Some(o) = pending.remove(&next) {
                next += 1;
                if broken {
                    continue;
                }
                // data_bytes hands russh slices of the reply: no copy per
                // SSH packet. It waits for the client's window.
                tokio::select! {
                    r = tx.data_bytes(o.bytes) => broken = r.is_err(),
                    () = gone.cancelled() => broken = true,
                }
            }
        }
        if !gone.is_cancelled() {
            let _ = tx.exit_status(0).await;
            let _ = tx.eof().await;
            let _ = tx.close().await;
        }
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
                    if !send_inline(&permits, &out_tx, &gone, this_seq, bytes).await {
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
                if !send_inline(&permits, &out_tx, &gone, this_seq, bytes).await {
                    break 'outer;
                }
                continue;
            }
            match packet {
                Packet::Read(_) | Packet::Write(_) => {
                    let Some(permit) = acquire(&permits, 1, &gone).await else {
                        break 'outer;
                    };
                    // A READ's reply waits for the client's window: it
                    // holds its size of the connection's budget until sent.
                    let reply_room = match &packet {
                        Packet::Read(r) => {
                            let want = r.len.min(MAX_READ_LEN) + DATA_HEADER as u32;
                            tokio::select! {
                                p = budget.reply_bytes(want) => Some(p),
                                () = gone.cancelled() => break 'outer,
                            }
                        }
                        _ => None,
                    };
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
                                _reply_bytes: reply_room,
                            })
                            .await;
                    });
                }
                other => {
                    // A barrier: wait until every earlier request has been
                    // answered, then run alone.
                    let Some(all) = acquire(&permits, MAX_IN_FLIGHT, &gone).await else {
                        break 'outer;
                    };
                    let id = other.get_request_id();
                    let reply = session.dispatch(other).await;
                    drop(all);
                    let bytes = reply_bytes(id, reply);
                    if !send_inline(&permits, &out_tx, &gone, this_seq, bytes).await {
                        break 'outer;
                    }
                }
            }
        }
        let msg = tokio::select! {
            m = rx.wait() => m,
            () = gone.cancelled() => break,
        };
        match msg {
            Some(ChannelMsg::Data { data }) => buf.extend_from_slice(&data),
            Some(ChannelMsg::Eof) | Some(ChannelMsg::Close) | None => break,
            Some(_) => {}
        }
    }
    drop(rx);
    drop(out_tx);
    // In-flight requests finish and their replies are written before the
    // writer sends exit-status and closes (or, once the session has ended,
    // dropped).
    let _ = writer.await;
    session.release_all().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[allow(clippy::disallowed_methods)] // a stat of `/`, only for its shape
    fn meta(mtime: i64) -> Meta {
        let st = rustix::fs::stat("/").unwrap();
        let mut m = Meta::from_stat(&st);
        m.mtime = mtime;
        m
    }

    #[test]
    fn long_names_show_the_year_for_old_files() {
        let now = 1_780_000_000; // 2026-05-28
        let old = chrono::NaiveDate::from_ymd_opt(2001, 2, 3)
            .unwrap()
            .and_hms_opt(4, 5, 6)
            .unwrap()
            .and_utc()
            .timestamp();
        assert!(long_name("f", &meta(old), now).contains(" Feb  3  2001 f"));
        let recent = now - 3600;
        let line = long_name("f", &meta(recent), now);
        assert!(line.contains(" May 28 ") && line.ends_with(" f"), "{line}");
        // In the future: the year, as ls does.
        assert!(long_name("f", &meta(now + 86_400 * 400), now).contains("  2027 f"));
    }
}
