//! Operations on resolved entries: each is a `*at()` call on the handle of
//! the directory holding the entry, never following a link at the end.

use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use bytes::BytesMut;
use rustix::fs::{AtFlags, FileType, Gid, Mode, OFlags, Timespec, Timestamps, Uid};
use rustix::io::Errno;

use super::object::{ObjectReader, ObjectWriter};
use super::tree::{Entry, STEP, UserFs};
use super::{CHMOD_MASK, FsError, SetstatMode, blocking};

/// What a stat shows of an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    pub size: u64,
    /// Type and permission bits, as `st_mode`.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub nlink: u64,
    pub atime: i64,
    pub mtime: i64,
    pub(super) dev: u64,
    pub(super) ino: u64,
}

impl Meta {
    pub fn from_stat(st: &rustix::fs::Stat) -> Self {
        Self {
            size: u64::try_from(st.st_size).unwrap_or(0),
            mode: st.st_mode,
            uid: st.st_uid,
            gid: st.st_gid,
            nlink: st.st_nlink,
            atime: st.st_atime,
            mtime: st.st_mtime,
            dev: st.st_dev,
            ino: st.st_ino,
        }
    }

    fn kind(&self) -> FileType {
        FileType::from_raw_mode(self.mode)
    }

    pub fn is_dir(&self) -> bool {
        self.kind() == FileType::Directory
    }

    pub fn is_file(&self) -> bool {
        self.kind() == FileType::RegularFile
    }

    pub fn is_symlink(&self) -> bool {
        self.kind() == FileType::Symlink
    }
}

/// `statvfs` numbers of the storage under an entry.
#[derive(Debug, Clone, Copy)]
pub struct StatVfs {
    pub bsize: u64,
    pub frsize: u64,
    pub blocks: u64,
    pub bfree: u64,
    pub bavail: u64,
    pub files: u64,
    pub ffree: u64,
    pub favail: u64,
    pub fsid: u64,
    pub flag: u64,
    pub namemax: u64,
}

/// Attribute changes of a setstat; None leaves an attribute as it is.
#[derive(Debug, Clone, Copy, Default)]
pub struct SetAttrs {
    pub size: Option<u64>,
    pub permissions: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub atime: Option<u32>,
    pub mtime: Option<u32>,
}

/// Opens the entry `name` in `dir` as a regular file: `O_NOFOLLOW` (a link
/// swapped in fails), `O_NONBLOCK` while opening (a FIFO or device never
/// blocks the thread), then refused unless it is a regular file.
pub(super) fn open_regular(
    dir: BorrowedFd<'_>,
    name: &[u8],
    flags: OFlags,
    mode: u32,
) -> Result<(File, Meta), FsError> {
    let fd = rustix::fs::openat(
        dir,
        name,
        flags | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC | OFlags::NOCTTY,
        Mode::from_raw_mode(mode),
    )
    .map_err(|e| match e {
        // A FIFO without a reader, a device without a driver.
        Errno::NXIO | Errno::NODEV => FsError::NotRegular,
        e => e.into(),
    })?;
    let st = rustix::fs::fstat(&fd)?;
    let meta = Meta::from_stat(&st);
    if meta.is_dir() {
        return Err(FsError::IsADirectory);
    }
    if !meta.is_file() {
        return Err(FsError::NotRegular);
    }
    let fl = rustix::fs::fcntl_getfl(&fd)?;
    rustix::fs::fcntl_setfl(&fd, fl - OFlags::NONBLOCK)?;
    Ok((File::from(fd), meta))
}

/// chmod of the entry itself: a handle on it without following a link,
/// then the change through `/proc/self/fd` (Linux has no `fchmodat` that
/// refuses links on older kernels, and `fchmod` needs read access).
pub(super) fn chmod_entry(dir: BorrowedFd<'_>, name: &[u8], mode: u32) -> Result<(), FsError> {
    let fd = rustix::fs::openat(dir, name, STEP, Mode::empty())?;
    let st = rustix::fs::fstat(&fd)?;
    if FileType::from_raw_mode(st.st_mode) == FileType::Symlink {
        // Links have no mode of their own on Linux.
        return Err(FsError::Unsupported("chmod of a symbolic link"));
    }
    rustix::fs::chmod(
        format!("/proc/self/fd/{}", fd.as_raw_fd()),
        Mode::from_raw_mode(mode & 0o7777),
    )?;
    Ok(())
}

pub(super) fn chown_entry(dir: BorrowedFd<'_>, name: &[u8], owner: Option<(u32, u32)>) {
    if let Some((uid, gid)) = owner
        && let Err(e) = rustix::fs::chownat(
            dir,
            name,
            Some(Uid::from_raw(uid)),
            Some(Gid::from_raw(gid)),
            AtFlags::SYMLINK_NOFOLLOW,
        )
    {
        tracing::warn!(error = %e, "cannot give a new entry to the user's uid/gid");
    }
}

/// Applies the configured umask to an entry just created with `mode`.
pub(super) fn apply_umask(dir: BorrowedFd<'_>, name: &[u8], mode: u32, umask: Option<u32>) {
    if let Some(mask) = umask
        && let Err(e) = chmod_entry(dir, name, mode & !mask & 0o7777)
    {
        tracing::warn!(error = %e, "cannot apply umask");
    }
}

/// An open regular file (reads, and the file of an upload).
#[derive(Debug, Clone)]
pub struct FileReader {
    /// The open local file (None for an object).
    file: Option<Arc<File>>,
    /// Set for an object: reads and stats go to the store instead.
    pub(super) object: Option<ObjectFile>,
}

/// The object side of a [`FileReader`].
#[derive(Debug, Clone)]
pub(super) enum ObjectFile {
    Read(Arc<ObjectReader>, Meta),
    /// The file of an upload in progress: it cannot be read back.
    Write(Arc<ObjectWriter>, SetstatMode),
}

/// What attribute changes do on an object: chmod and chown are accepted and
/// ignored (objects have no owner or mode), times are refused unless the
/// `setstat_mode` ignores them, a size change only when it changes nothing.
pub(super) fn object_attrs(attrs: &SetAttrs, size: u64, mode: SetstatMode) -> Result<(), FsError> {
    if attrs.size.is_some_and(|s| s != size) {
        return Err(FsError::Unsupported("truncating an object"));
    }
    if (attrs.atime.is_some() || attrs.mtime.is_some()) && mode == SetstatMode::Apply {
        return Err(FsError::Unsupported("changing the times of an object"));
    }
    Ok(())
}

impl FileReader {
    pub(super) fn new(file: File) -> Self {
        Self {
            file: Some(Arc::new(file)),
            object: None,
        }
    }

    pub(super) fn for_object(object: ObjectFile) -> Self {
        Self {
            file: None,
            object: Some(object),
        }
    }

    /// The local file; object files are handled before every use.
    pub(super) fn local(&self) -> Result<Arc<File>, FsError> {
        self.file
            .clone()
            .ok_or(FsError::Failure("not a local file"))
    }

    /// Fills `buf[start..]` from `offset` until full or the end of the
    /// file; the buffer is truncated to what was read.
    pub async fn read_into(
        &self,
        mut buf: BytesMut,
        start: usize,
        offset: u64,
    ) -> Result<BytesMut, FsError> {
        match &self.object {
            Some(ObjectFile::Read(r, _)) => {
                let filled = r.read_at(&mut buf[start..], offset).await?;
                buf.truncate(start + filled);
                return Ok(buf);
            }
            Some(ObjectFile::Write(..)) => {
                return Err(FsError::Unsupported(
                    "reading an upload in progress on object storage",
                ));
            }
            None => {}
        }
        let file = self.local()?;
        blocking(move || {
            let filled = read_full_at(&file, &mut buf[start..], offset)?;
            buf.truncate(start + filled);
            Ok(buf)
        })
        .await
    }

    /// Reads the whole file in order on the blocking pool, handing each
    /// chunk to `f` (hash commands: the hashing stays off the async threads).
    pub async fn fold<S: Send + 'static>(
        &self,
        mut state: S,
        mut f: impl FnMut(&mut S, &[u8]) + Send + 'static,
    ) -> Result<S, FsError> {
        match &self.object {
            Some(ObjectFile::Read(r, _)) => return r.fold(state, &mut f).await,
            Some(ObjectFile::Write(..)) => {
                return Err(FsError::Unsupported(
                    "reading an upload in progress on object storage",
                ));
            }
            None => {}
        }
        let file = self.local()?;
        blocking(move || {
            let mut buf = vec![0u8; 256 * 1024];
            let mut offset = 0u64;
            loop {
                let n = read_full_at(&file, &mut buf, offset)?;
                if n == 0 {
                    return Ok(state);
                }
                f(&mut state, &buf[..n]);
                offset += n as u64;
            }
        })
        .await
    }

    pub async fn meta(&self) -> Result<Meta, FsError> {
        match &self.object {
            Some(ObjectFile::Read(_, m)) => return Ok(*m),
            Some(ObjectFile::Write(w, _)) => {
                let mut m = super::object::file_meta_now();
                m.size = w.written().await;
                return Ok(m);
            }
            None => {}
        }
        let file = self.local()?;
        blocking(move || Ok(Meta::from_stat(&rustix::fs::fstat(file.as_fd())?))).await
    }

    pub async fn sync(&self) -> Result<(), FsError> {
        if self.object.is_some() {
            // An object is durable once its upload completes.
            return Ok(());
        }
        let file = self.local()?;
        blocking(move || Ok(file.sync_all()?)).await
    }

    /// Applies attribute changes to the open file itself (FSETSTAT).
    pub async fn set_attrs(&self, attrs: SetAttrs) -> Result<(), FsError> {
        match &self.object {
            Some(ObjectFile::Read(_, m)) => {
                return object_attrs(&attrs, m.size, SetstatMode::Apply);
            }
            Some(ObjectFile::Write(w, mode)) => {
                return object_attrs(&attrs, w.written().await, *mode);
            }
            None => {}
        }
        let file = self.local()?;
        blocking(move || {
            let fd = file.as_fd();
            if let Some(size) = attrs.size {
                if i64::try_from(size).is_err() {
                    return Err(FsError::Invalid);
                }
                rustix::fs::ftruncate(fd, size)?;
            }
            if let Some(mode) = attrs.permissions {
                rustix::fs::fchmod(fd, Mode::from_raw_mode(mode & CHMOD_MASK))?;
            }
            if attrs.uid.is_some() || attrs.gid.is_some() {
                rustix::fs::fchown(
                    fd,
                    attrs.uid.map(Uid::from_raw),
                    attrs.gid.map(Gid::from_raw),
                )?;
            }
            if attrs.atime.is_some() || attrs.mtime.is_some() {
                rustix::fs::futimens(fd, &timestamps(attrs.atime, attrs.mtime))?;
            }
            Ok(())
        })
        .await
    }
}

fn timestamps(atime: Option<u32>, mtime: Option<u32>) -> Timestamps {
    let at = |t: Option<u32>| match t {
        Some(s) => Timespec {
            tv_sec: i64::from(s),
            tv_nsec: 0,
        },
        None => Timespec {
            tv_sec: 0,
            tv_nsec: rustix::fs::UTIME_OMIT,
        },
    };
    Timestamps {
        last_access: at(atime),
        last_modification: at(mtime),
    }
}

/// Fills `buf` from `offset` until it is full or the file ends; returns how
/// many bytes were read.
pub(super) fn read_full_at(file: &File, buf: &mut [u8], offset: u64) -> Result<usize, FsError> {
    let mut filled = 0;
    while filled < buf.len() {
        let at = offset
            .checked_add(filled as u64)
            .filter(|o| i64::try_from(*o).is_ok())
            .ok_or(FsError::Invalid)?;
        match file.read_at(&mut buf[filled..], at) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(filled)
}

/// An open directory being listed.
#[derive(Debug)]
pub struct DirReader {
    dir: std::sync::Mutex<Option<rustix::fs::Dir>>,
    /// An object-store directory: its entries, listed at open, handed out
    /// in batches.
    listed: std::sync::Mutex<std::collections::VecDeque<(String, Meta)>>,
}

impl DirReader {
    /// Up to `max` entries (name, lstat), `.` and `..` left out; empty at
    /// the end. `keep` decides from the name whether an entry is listed.
    pub async fn next_batch(
        self: &Arc<Self>,
        max: usize,
        keep: impl Fn(&str) -> bool + Send + 'static,
    ) -> Result<Vec<(String, Meta)>, FsError> {
        {
            let mut listed = self.listed.lock().unwrap_or_else(|e| e.into_inner());
            if !listed.is_empty() {
                let mut out = Vec::new();
                while out.len() < max {
                    let Some((name, meta)) = listed.pop_front() else {
                        break;
                    };
                    if keep(&name) {
                        out.push((name, meta));
                    }
                }
                return Ok(out);
            }
        }
        let this = self.clone();
        blocking(move || {
            let mut guard = this.dir.lock().unwrap_or_else(|e| e.into_inner());
            let mut out = Vec::new();
            let Some(dir) = guard.as_mut() else {
                return Ok(out);
            };
            while out.len() < max {
                let Some(entry) = dir.read() else {
                    *guard = None;
                    break;
                };
                let Ok(entry) = entry else { continue };
                let raw = entry.file_name().to_bytes();
                if raw == b"." || raw == b".." {
                    continue;
                }
                let name = String::from_utf8_lossy(raw).into_owned();
                if !keep(&name) {
                    continue;
                }
                let Ok(fd) = dir.fd() else { continue };
                let Ok(st) = rustix::fs::statat(fd, raw, AtFlags::SYMLINK_NOFOLLOW) else {
                    continue;
                };
                out.push((name, Meta::from_stat(&st)));
            }
            Ok(out)
        })
        .await
    }

    /// Every name in the directory (for SCP's recursive source), filtered.
    pub async fn names(
        self: &Arc<Self>,
        keep: impl Fn(&str) -> bool + Send + Sync + 'static,
    ) -> Result<Vec<String>, FsError> {
        let keep = Arc::new(keep);
        let mut all = Vec::new();
        loop {
            let k = keep.clone();
            let batch = self.next_batch(1024, move |n| k(n)).await?;
            if batch.is_empty() {
                return Ok(all);
            }
            all.extend(batch.into_iter().map(|(n, _)| n));
        }
    }
}

impl Entry {
    /// Opens a regular file for reading.
    pub async fn open_read(&self) -> Result<(FileReader, Meta), FsError> {
        let Some(meta) = self.meta().copied() else {
            return Err(FsError::NotFound);
        };
        if let Some((o, inner)) = self.object() {
            if meta.is_dir() {
                return Err(FsError::IsADirectory);
            }
            let r = Arc::new(o.reader(inner, meta.size)?);
            return Ok((FileReader::for_object(ObjectFile::Read(r, meta)), meta));
        }
        let this = self.clone();
        blocking(move || {
            let (file, meta) = open_regular(this.dirfd(), &this.name, OFlags::RDONLY, 0)?;
            Ok((FileReader::new(file), meta))
        })
        .await
    }

    /// Opens a directory for listing.
    pub async fn open_dir(&self) -> Result<Arc<DirReader>, FsError> {
        match self.meta() {
            None => return Err(FsError::NotFound),
            Some(m) if !m.is_dir() => return Err(FsError::NotADirectory),
            _ => {}
        }
        if let Some((o, inner)) = self.object() {
            let mut listed = o.list_dir(inner).await?;
            // Mount points of folders inside this directory show too.
            for name in self.mounts_under() {
                if !listed.iter().any(|(n, _)| *n == name) {
                    listed.push((name, super::object::dir_meta(0)));
                }
            }
            return Ok(Arc::new(DirReader {
                dir: std::sync::Mutex::new(None),
                listed: std::sync::Mutex::new(listed.into()),
            }));
        }
        let this = self.clone();
        blocking(move || {
            let fd: OwnedFd = rustix::fs::openat(
                this.dirfd(),
                this.name.as_slice(),
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )?;
            Ok(Arc::new(DirReader {
                dir: std::sync::Mutex::new(Some(rustix::fs::Dir::new(fd)?)),
                listed: Default::default(),
            }))
        })
        .await
    }

    /// Creates a directory here (`mode` before the umask), owned by the
    /// user's uid/gid when running as root.
    pub async fn mkdir(&self, mode: u32) -> Result<(), FsError> {
        if self.exists() || self.is_self() {
            return Err(FsError::Exists);
        }
        if let Some((o, inner)) = self.object() {
            return o.mkdir(inner).await;
        }
        let this = self.clone();
        blocking(move || {
            let mode = mode & 0o777;
            rustix::fs::mkdirat(
                this.dirfd(),
                this.name.as_slice(),
                Mode::from_raw_mode(mode),
            )?;
            apply_umask(this.dirfd(), &this.name, mode, this.tree.settings.umask);
            chown_entry(this.dirfd(), &this.name, this.tree.owner);
            Ok(())
        })
        .await
    }

    /// Removes an empty directory.
    pub async fn rmdir(&self) -> Result<(), FsError> {
        if self.is_self() {
            return Err(FsError::PermissionDenied);
        }
        if let Some((o, inner)) = self.object() {
            return match self.meta() {
                None => Err(FsError::NotFound),
                Some(m) if !m.is_dir() => Err(FsError::NotADirectory),
                Some(_) => o.rmdir(inner).await,
            };
        }
        let this = self.clone();
        blocking(move || {
            Ok(rustix::fs::unlinkat(
                this.dirfd(),
                this.name.as_slice(),
                AtFlags::REMOVEDIR,
            )?)
        })
        .await
    }

    /// Removes a file or a link (never a directory); returns what it was.
    pub async fn remove_file(&self) -> Result<Meta, FsError> {
        if self.is_self() {
            return Err(FsError::IsADirectory);
        }
        if let Some((o, inner)) = self.object() {
            let meta = *self.meta().ok_or(FsError::NotFound)?;
            if meta.is_dir() {
                return Err(FsError::IsADirectory);
            }
            o.remove(inner).await?;
            return Ok(meta);
        }
        let this = self.clone();
        blocking(move || {
            let st = rustix::fs::statat(
                this.dirfd(),
                this.name.as_slice(),
                AtFlags::SYMLINK_NOFOLLOW,
            )?;
            let meta = Meta::from_stat(&st);
            if meta.is_dir() {
                return Err(FsError::IsADirectory);
            }
            rustix::fs::unlinkat(this.dirfd(), this.name.as_slice(), AtFlags::empty())?;
            Ok(meta)
        })
        .await
    }

    /// Renames this entry to `to` (replacing a file there).
    pub async fn rename_to(&self, to: &Entry) -> Result<(), FsError> {
        if self.is_self() || to.is_self() {
            return Err(FsError::PermissionDenied);
        }
        match (self.object(), to.object()) {
            (None, None) => {}
            (Some((a, from)), Some((b, to_inner))) => {
                let meta = *self.meta().ok_or(FsError::NotFound)?;
                if let Some(m) = to.meta() {
                    if m.is_dir() {
                        return Err(FsError::IsADirectory);
                    }
                    if meta.is_dir() {
                        return Err(FsError::NotADirectory);
                    }
                }
                return a.rename(from, &meta, b, to_inner).await;
            }
            _ => return Err(FsError::CrossDevice),
        }
        let (from, to) = (self.clone(), to.clone());
        blocking(move || {
            Ok(rustix::fs::renameat(
                from.dirfd(),
                from.name.as_slice(),
                to.dirfd(),
                to.name.as_slice(),
            )?)
        })
        .await
    }

    /// Creates a symlink here pointing at the virtual path `vtarget`
    /// (clean, absolute), stored as the target's real path under its root.
    pub async fn symlink(&self, fs: &UserFs, vtarget: &str) -> Result<(), FsError> {
        if self.exists() || self.is_self() {
            return Err(FsError::Exists);
        }
        if self.is_object() {
            return Err(FsError::Unsupported("symbolic links on object storage"));
        }
        let text = fs.link_text(vtarget)?;
        let this = self.clone();
        blocking(move || {
            rustix::fs::symlinkat(text.as_path(), this.dirfd(), this.name.as_slice())?;
            chown_entry(this.dirfd(), &this.name, this.tree.owner);
            Ok(())
        })
        .await
    }

    /// The target of the link here as the user sees it.
    pub async fn readlink(&self, fs: &UserFs) -> Result<String, FsError> {
        match self.meta() {
            None => return Err(FsError::NotFound),
            Some(m) if !m.is_symlink() => return Err(FsError::NotALink),
            _ => {}
        }
        let (this, fs) = (self.clone(), fs.clone());
        blocking(move || {
            let text = rustix::fs::readlinkat(this.dirfd(), this.name.as_slice(), Vec::new())
                .map_err(|e| {
                    if e == Errno::INVAL {
                        FsError::NotALink
                    } else {
                        e.into()
                    }
                })?;
            let text = std::path::PathBuf::from(
                <std::ffi::OsString as std::os::unix::ffi::OsStringExt>::from_vec(
                    text.into_bytes(),
                ),
            );
            fs.link_virtual(&this.vpath, &text).ok_or(FsError::Outside)
        })
        .await
    }

    /// A new name `link` for this existing file (never following a link).
    pub async fn hardlink_to(&self, link: &Entry) -> Result<(), FsError> {
        if link.exists() || link.is_self() {
            return Err(FsError::Exists);
        }
        if self.is_object() || link.is_object() {
            return Err(FsError::Unsupported("hard links on object storage"));
        }
        let (target, link) = (self.clone(), link.clone());
        blocking(move || {
            Ok(rustix::fs::linkat(
                target.dirfd(),
                target.name.as_slice(),
                link.dirfd(),
                link.name.as_slice(),
                AtFlags::empty(),
            )?)
        })
        .await
    }

    /// Applies attribute changes (a size change through `file` when the
    /// entry is open). The parts were checked by the caller.
    pub async fn set_attrs(
        &self,
        attrs: SetAttrs,
        file: Option<FileReader>,
    ) -> Result<(), FsError> {
        if self.is_object() {
            let m = self.meta().ok_or(FsError::NotFound)?;
            let mode = match self.tree.settings.setstat_mode {
                SetstatMode::Apply if m.is_dir() => SetstatMode::Ignore,
                mode => mode,
            };
            return object_attrs(&attrs, m.size, mode);
        }
        let this = self.clone();
        blocking(move || {
            let dir = this.dirfd();
            if let Some(size) = attrs.size {
                if i64::try_from(size).is_err() {
                    return Err(FsError::Invalid);
                }
                match &file {
                    Some(f) => rustix::fs::ftruncate(&*f.local()?, size)?,
                    None => {
                        let (f, _) = open_regular(dir, &this.name, OFlags::WRONLY, 0)?;
                        rustix::fs::ftruncate(&f, size)?;
                    }
                }
            }
            if let Some(mode) = attrs.permissions {
                chmod_entry(dir, &this.name, mode & CHMOD_MASK)?;
            }
            if attrs.uid.is_some() || attrs.gid.is_some() {
                rustix::fs::chownat(
                    dir,
                    this.name.as_slice(),
                    attrs.uid.map(Uid::from_raw),
                    attrs.gid.map(Gid::from_raw),
                    AtFlags::SYMLINK_NOFOLLOW,
                )?;
            }
            if attrs.atime.is_some() || attrs.mtime.is_some() {
                let times = timestamps(attrs.atime, attrs.mtime);
                rustix::fs::utimensat(
                    dir,
                    this.name.as_slice(),
                    &times,
                    AtFlags::SYMLINK_NOFOLLOW,
                )?;
            }
            Ok(())
        })
        .await
    }

    /// `statvfs` of the storage holding the entry.
    pub async fn statvfs(&self) -> Result<StatVfs, FsError> {
        if self.is_object() {
            // No capacity to tell: as much room as 64-bit counters hold
            // (the SFTP layer answers from the quota when there is one).
            return Ok(StatVfs {
                bsize: 4096,
                frsize: 4096,
                blocks: u64::MAX / 8192,
                bfree: u64::MAX / 8192,
                bavail: u64::MAX / 8192,
                files: u64::MAX / 2,
                ffree: u64::MAX / 2,
                favail: u64::MAX / 2,
                fsid: 0,
                flag: 0,
                namemax: 255,
            });
        }
        let this = self.clone();
        blocking(move || {
            let st = rustix::fs::fstatvfs(this.dirfd())?;
            Ok(StatVfs {
                bsize: st.f_bsize,
                frsize: st.f_frsize,
                blocks: st.f_blocks,
                bfree: st.f_bfree,
                bavail: st.f_bavail,
                files: st.f_files,
                ffree: st.f_ffree,
                favail: st.f_favail,
                fsid: st.f_fsid,
                flag: st.f_flag.bits(),
                namemax: st.f_namemax,
            })
        })
        .await
    }

    /// (bytes, regular files) at or under this entry, links not followed,
    /// uploads in progress left out.
    pub async fn usage(&self) -> Result<(i64, i64), FsError> {
        if let Some((o, inner)) = self.object() {
            return match self.meta() {
                None => Ok((0, 0)),
                Some(m) if m.is_dir() => o.usage(inner).await,
                Some(m) => Ok((i64::try_from(m.size).unwrap_or(i64::MAX), 1)),
            };
        }
        let this = self.clone();
        blocking(move || {
            Ok(super::scan::usage_at(
                this.dirfd(),
                &this.name,
                &Default::default(),
            ))
        })
        .await
    }

    /// Copies this file or tree (links and special files skipped) to `to`,
    /// which must not exist; `touch` is called as data moves.
    pub async fn copy_to(
        &self,
        to: &Entry,
        touch: impl Fn() + Send + Sync + 'static,
    ) -> Result<(), FsError> {
        if to.exists() || to.is_self() {
            return Err(FsError::Exists);
        }
        match (self.object(), to.object()) {
            (None, None) => {}
            (Some((a, from)), Some((b, to_inner))) => {
                let meta = *self.meta().ok_or(FsError::NotFound)?;
                if meta.is_dir() {
                    return Err(FsError::Unsupported(
                        "copying a directory on object storage",
                    ));
                }
                a.copy_within(from, b, to_inner).await?;
                touch();
                return Ok(());
            }
            _ => {
                return Err(FsError::Unsupported(
                    "copying between object and local storage",
                ));
            }
        }
        let (from, to) = (self.clone(), to.clone());
        blocking(move || {
            let owner = to.tree.owner;
            copy_tree(
                from.dirfd(),
                &from.name,
                to.dirfd(),
                &to.name,
                owner,
                &touch,
            )
        })
        .await
    }

    /// Removes this file, link or whole tree; returns the usage that went
    /// (also when it stopped half way) and the outcome.
    pub async fn remove_tree(&self) -> (i64, i64, Result<(), FsError>) {
        if self.is_self() {
            return (0, 0, Err(FsError::PermissionDenied));
        }
        if let Some((o, inner)) = self.object() {
            return match self.meta() {
                None => (0, 0, Err(FsError::NotFound)),
                Some(m) => o.remove_tree(inner, m).await,
            };
        }
        let this = self.clone();
        blocking(move || {
            let mut gone = (0, 0);
            let r = remove_tree(this.dirfd(), &this.name, &mut gone);
            Ok((gone.0, gone.1, r))
        })
        .await
        .unwrap_or_else(|e| (0, 0, Err(e)))
    }
}

fn copy_tree(
    src_dir: BorrowedFd<'_>,
    src: &[u8],
    dst_dir: BorrowedFd<'_>,
    dst: &[u8],
    owner: Option<(u32, u32)>,
    touch: &dyn Fn(),
) -> Result<(), FsError> {
    let st = rustix::fs::statat(src_dir, src, AtFlags::SYMLINK_NOFOLLOW)?;
    let meta = Meta::from_stat(&st);
    if meta.is_dir() {
        let from = rustix::fs::openat(
            src_dir,
            src,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        rustix::fs::mkdirat(dst_dir, dst, Mode::from_raw_mode(0o700))?;
        let to = rustix::fs::openat(dst_dir, dst, STEP | OFlags::DIRECTORY, Mode::empty())?;
        let mut d = rustix::fs::Dir::read_from(&from)?;
        while let Some(entry) = d.read() {
            let entry = entry?;
            let name = entry.file_name().to_bytes();
            if name == b"." || name == b".." {
                continue;
            }
            let kind = rustix::fs::statat(&from, name, AtFlags::SYMLINK_NOFOLLOW)
                .map(|s| FileType::from_raw_mode(s.st_mode))?;
            if matches!(kind, FileType::Directory | FileType::RegularFile) {
                copy_tree(from.as_fd(), name, to.as_fd(), name, owner, touch)?;
            }
        }
        chmod_entry(dst_dir, dst, meta.mode & CHMOD_MASK)?;
    } else if meta.is_file() {
        let (input, _) = open_regular(src_dir, src, OFlags::RDONLY, 0)?;
        // A new file only: never through an existing name or link.
        let out = rustix::fs::openat(
            dst_dir,
            dst,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )?;
        let out = File::from(out);
        copy_data(&input, &out, meta.size, touch)?;
        chmod_entry(dst_dir, dst, meta.mode & CHMOD_MASK)?;
    } else {
        return Err(FsError::NotRegular);
    }
    chown_entry(dst_dir, dst, owner);
    Ok(())
}

/// Copies `len` bytes (or until the end) from the start of `input` to the
/// start of `out`, in the kernel where it can.
pub(super) fn copy_data(
    input: &File,
    out: &File,
    len: u64,
    touch: &dyn Fn(),
) -> Result<(), FsError> {
    let mut left = len;
    while left > 0 {
        let chunk = left.min(64 << 20) as usize;
        let n = match rustix::fs::copy_file_range(input, None, out, None, chunk) {
            Ok(n) => n,
            Err(Errno::XDEV | Errno::NOSYS | Errno::OPNOTSUPP | Errno::INVAL) => {
                return copy_plain(input, out, touch);
            }
            Err(e) => return Err(e.into()),
        };
        if n == 0 {
            break;
        }
        left -= n as u64;
        touch();
    }
    Ok(())
}

fn copy_plain(input: &File, out: &File, touch: &dyn Fn()) -> Result<(), FsError> {
    let mut buf = vec![0u8; 256 * 1024];
    let mut at = 0u64;
    loop {
        let n = read_full_at(input, &mut buf, at)?;
        if n == 0 {
            return Ok(());
        }
        out.write_all_at(&buf[..n], at)?;
        at += n as u64;
        touch();
    }
}

fn remove_tree(dir: BorrowedFd<'_>, name: &[u8], gone: &mut (i64, i64)) -> Result<(), FsError> {
    let st = rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)?;
    let meta = Meta::from_stat(&st);
    if meta.is_dir() {
        let fd = rustix::fs::openat(
            dir,
            name,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        let mut d = rustix::fs::Dir::read_from(&fd)?;
        let mut names = Vec::new();
        while let Some(entry) = d.read() {
            let n = entry?.file_name().to_bytes().to_vec();
            if n != b"." && n != b".." {
                names.push(n);
            }
        }
        for n in names {
            remove_tree(fd.as_fd(), &n, gone)?;
        }
        rustix::fs::unlinkat(dir, name, AtFlags::REMOVEDIR)?;
    } else {
        rustix::fs::unlinkat(dir, name, AtFlags::empty())?;
        // An upload in progress settles its own file.
        if meta.is_file() && !super::scan::in_progress(name, &meta, &Default::default()) {
            gone.0 += i64::try_from(meta.size).unwrap_or(i64::MAX);
            gone.1 += 1;
        }
    }
    Ok(())
}
