//! The legacy SCP protocol (`scp -O`, exec `scp -t` / `scp -f`) over the same
//! storage layer and permission engine as SFTP. Sink mode receives files and
//! directories (`-r`, times with `-p`) through the storage layer's `Upload`
//! (so `upload_mode` applies), source mode sends them. Errors go to the
//! client the way OpenSSH's scp expects (`\x01scp: message\n`: printed, and
//! the client exits 1), and the channel ends with an exit status.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use ferry_proto::permissions::Operation;
use ferry_proto::vpath;
use russh::server::Msg;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, BufReader};

use crate::policy::{Denial, UserPolicy};
use crate::registry::Connection;
use crate::vfs::{
    Entry, Follow, FsError, Meta, OpenWrite, SetAttrs, SetstatMode, Upload, UploadMode, UserFs,
};

/// Longest protocol line accepted from a client.
pub const MAX_LINE: usize = 4096;
/// Directory nesting accepted in sink mode.
pub const MAX_DEPTH: usize = 64;
const CHUNK: usize = 256 * 1024;

/// Parsed `scp` arguments.
#[derive(Debug, PartialEq, Eq)]
pub struct ScpArgs {
    /// `-t` (we receive) or `-f` (we send).
    pub sink: bool,
    pub recursive: bool,
    pub preserve: bool,
    /// `-d`: the target must be a directory.
    pub target_is_dir: bool,
    pub paths: Vec<String>,
}

/// Parses the words after `scp`. Flags may be combined (`-prt`) and appear
/// anywhere before the paths; unknown flags are refused.
pub fn parse_args(words: &[String]) -> Result<ScpArgs, String> {
    let (mut sink, mut source) = (false, false);
    let mut a = ScpArgs {
        sink: false,
        recursive: false,
        preserve: false,
        target_is_dir: false,
        paths: Vec::new(),
    };
    let mut only_paths = false;
    for w in words {
        if !only_paths && w == "--" {
            only_paths = true;
            continue;
        }
        if !only_paths && w.starts_with('-') && w.len() > 1 {
            for c in w[1..].chars() {
                match c {
                    't' => sink = true,
                    'f' => source = true,
                    'r' => a.recursive = true,
                    'p' => a.preserve = true,
                    'd' => a.target_is_dir = true,
                    'v' | 'q' => {}
                    other => return Err(format!("unsupported scp option -{other}")),
                }
            }
        } else {
            a.paths.push(w.clone());
        }
    }
    match (sink, source) {
        (true, false) => a.sink = true,
        (false, true) => {}
        _ => return Err("scp needs exactly one of -t or -f".into()),
    }
    if a.paths.is_empty() {
        return Err("scp needs a path".into());
    }
    if a.sink && a.paths.len() != 1 {
        return Err("scp -t takes exactly one target".into());
    }
    Ok(a)
}

/// What SCP needs from the session.
pub struct ScpContext {
    pub fs: UserFs,
    pub rules: Arc<UserPolicy>,
    pub conn: Arc<Connection>,
}

type Tx = russh::ChannelWriteHalf<Msg>;

/// A failure reported to the client; `fatal` ends the transfer.
#[doc(hidden)] // public for the fuzz targets (fuzz/)
pub struct ScpError {
    message: String,
    fatal: bool,
}

impl ScpError {
    fn warn(m: impl Into<String>) -> Self {
        Self {
            message: m.into(),
            fatal: false,
        }
    }
    fn fatal(m: impl Into<String>) -> Self {
        Self {
            message: m.into(),
            fatal: true,
        }
    }
}

fn fs_err(path: &str, e: impl std::fmt::Display) -> ScpError {
    ScpError::warn(format!("{path}: {e}"))
}

async fn send(tx: &Tx, data: impl Into<Bytes>) -> Result<(), ScpError> {
    tx.data_bytes(data.into())
        .await
        .map_err(|_| ScpError::fatal("connection lost"))
}

async fn send_error(tx: &Tx, e: &ScpError) {
    let code = if e.fatal { 2u8 } else { 1u8 };
    let mut line = vec![code];
    line.extend_from_slice(format!("scp: {}\n", e.message).as_bytes());
    let _ = tx.data_bytes(Bytes::from(line)).await;
}

/// Runs one scp invocation on `channel`.
pub async fn run(channel: russh::Channel<Msg>, args: ScpArgs, ctx: ScpContext) {
    let (mut rx, tx) = channel.split();
    let mut reader = BufReader::new(rx.make_reader());
    let ok = if args.sink {
        Sink {
            ctx: &ctx,
            tx: &tx,
            preserve: args.preserve,
        }
        .run(&mut reader, &args)
        .await
    } else {
        Source {
            ctx: &ctx,
            tx: &tx,
            recursive: args.recursive,
            preserve: args.preserve,
        }
        .run(&mut reader, &args.paths)
        .await
    };
    drop(reader);
    let _ = tx.exit_status(if ok { 0 } else { 1 }).await;
    let _ = tx.eof().await;
    let _ = tx.close().await;
}

#[doc(hidden)]
pub async fn read_line<R: AsyncRead + Unpin>(
    r: &mut BufReader<R>,
) -> Result<Option<Vec<u8>>, ScpError> {
    let mut line = Vec::new();
    let n = (&mut *r)
        .take(MAX_LINE as u64 + 1)
        .read_until(b'\n', &mut line)
        .await
        .map_err(|_| ScpError::fatal("connection lost"))?;
    if n == 0 {
        return Ok(None);
    }
    if line.last() != Some(&b'\n') {
        return Err(ScpError::fatal(format!(
            "protocol line longer than {MAX_LINE} bytes"
        )));
    }
    line.pop();
    Ok(Some(line))
}

#[doc(hidden)]
pub async fn read_ack<R: AsyncRead + Unpin>(r: &mut BufReader<R>) -> Result<(), ScpError> {
    let b = r
        .read_u8()
        .await
        .map_err(|_| ScpError::fatal("connection lost"))?;
    match b {
        0 => Ok(()),
        1 | 2 => {
            let msg = read_line(r).await?.unwrap_or_default();
            Err(ScpError {
                message: String::from_utf8_lossy(&msg).into_owned(),
                fatal: b == 2,
            })
        }
        _ => Err(ScpError::fatal(
            "protocol error: unexpected acknowledgement",
        )),
    }
}

/// A file or directory name from a `C`/`D` line: one plain component.
fn valid_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains('/') && !name.contains('\0')
}

struct Sink<'a> {
    ctx: &'a ScpContext,
    tx: &'a Tx,
    preserve: bool,
}

#[doc(hidden)]
#[derive(Clone, Copy)]
pub enum Times {
    None,
    Set { mtime: u32, atime: u32 },
}

impl Sink<'_> {
    async fn run<R: AsyncRead + Unpin>(&self, r: &mut BufReader<R>, args: &ScpArgs) -> bool {
        let target = self.ctx.rules.resolve(&args.paths[0]);
        let target_is_dir = self
            .ctx
            .fs
            .resolve(&target, Follow::All)
            .await
            .is_ok_and(|e| e.is_dir());
        if args.target_is_dir && !target_is_dir {
            send_error(
                self.tx,
                &ScpError::fatal(format!("{target}: not a directory")),
            )
            .await;
            return false;
        }
        if send(self.tx, &b"\0"[..]).await.is_err() {
            return false;
        }
        // Directory stack of virtual paths; the bottom is the target.
        let mut dirs: Vec<String> = vec![target.clone()];
        let mut times = Times::None;
        let mut ok = true;
        loop {
            let line = match read_line(r).await {
                Ok(Some(l)) => l,
                Ok(None) => break,
                Err(e) => {
                    send_error(self.tx, &e).await;
                    return false;
                }
            };
            let Some((&kind, rest)) = line.split_first() else {
                continue;
            };
            let rest = String::from_utf8_lossy(rest).into_owned();
            let result = match kind {
                b'T' => match parse_times(&rest) {
                    Ok(t) => {
                        times = t;
                        send(self.tx, &b"\0"[..]).await
                    }
                    Err(e) => Err(e),
                },
                b'C' | b'D' => {
                    let here = dirs.last().cloned().unwrap_or_else(|| "/".into());
                    let at_target = dirs.len() == 1;
                    match parse_entry(&rest) {
                        Err(e) => Err(e),
                        Ok((mode, size, name)) => {
                            // The first entry goes *to* the target when it is
                            // not an existing directory, else *into* it.
                            let vp = if at_target && !target_is_dir {
                                here.clone()
                            } else {
                                vpath::clean(&here, &name)
                            };
                            let t = std::mem::replace(&mut times, Times::None);
                            if kind == b'C' {
                                self.receive_file(r, &vp, mode, size, t).await
                            } else if dirs.len() > MAX_DEPTH {
                                Err(ScpError::fatal("directories nested too deep"))
                            } else {
                                let res = self.enter_dir(&vp, mode, t).await;
                                if res.is_ok() {
                                    dirs.push(vp);
                                }
                                res
                            }
                        }
                    }
                }
                b'E' => {
                    if dirs.len() > 1 {
                        dirs.pop();
                        send(self.tx, &b"\0"[..]).await
                    } else {
                        Err(ScpError::fatal(
                            "protocol error: unbalanced end of directory",
                        ))
                    }
                }
                1 | 2 => {
                    // The client reports its own error; keep going unless fatal.
                    tracing::info!(message = %rest, "scp client reported an error");
                    ok = false;
                    if kind == 2 {
                        return false;
                    }
                    Ok(())
                }
                _ => Err(ScpError::fatal("protocol error: unknown message")),
            };
            if let Err(e) = result {
                ok = false;
                send_error(self.tx, &e).await;
                if e.fatal {
                    return false;
                }
            }
        }
        ok
    }

    /// Resolves a path of the upload after its filters allow it (on the
    /// requested path and where links led).
    async fn entry(&self, vp: &str) -> Result<Entry, ScpError> {
        let rules = &self.ctx.rules;
        rules.path(vp).map_err(|d| denial(vp, d))?;
        let e = self
            .ctx
            .fs
            .resolve(vp, Follow::All)
            .await
            .map_err(|e| fs_err(vp, e))?;
        rules.path(e.vpath()).map_err(|d| denial(vp, d))?;
        Ok(e)
    }

    fn allowed<'a>(
        &self,
        vp: &'a str,
        rv: &'a str,
        op: impl Fn(&'a str) -> Operation<'a>,
    ) -> Result<(), ScpError> {
        let rules = &self.ctx.rules;
        rules.allows(op(vp)).map_err(|d| denial(vp, d))?;
        rules.allows(op(rv)).map_err(|d| denial(vp, d))
    }

    async fn enter_dir(&self, vp: &str, mode: u32, times: Times) -> Result<(), ScpError> {
        let entry = self
            .entry(vp)
            .await
            .map_err(|e| ScpError::fatal(e.message))?;
        match entry.meta() {
            Some(m) if m.is_dir() => {}
            Some(_) => return Err(ScpError::fatal(format!("{vp}: not a directory"))),
            None => {
                self.allowed(vp, entry.vpath(), |p| Operation::Mkdir { path: p })
                    .map_err(|_| ScpError::fatal(format!("{vp}: permission denied")))?;
                entry
                    .mkdir(mode & 0o777)
                    .await
                    .map_err(|e| ScpError::fatal(format!("{vp}: {e}")))?;
            }
        }
        if let Some(t) = self.times_to_set(vp, entry.vpath(), times) {
            let _ = entry.set_attrs(t, None).await;
        }
        send(self.tx, &b"\0"[..]).await
    }

    /// The times to apply with `-p`, when allowed and not ignored.
    fn times_to_set(&self, vp: &str, rv: &str, times: Times) -> Option<SetAttrs> {
        let Times::Set { mtime, atime } = times else {
            return None;
        };
        if !self.preserve
            || self
                .allowed(vp, rv, |p| Operation::Chtimes { path: p })
                .is_err()
            || self.ctx.fs.settings().setstat_mode == SetstatMode::Ignore
        {
            return None;
        }
        Some(SetAttrs {
            atime: Some(atime),
            mtime: Some(mtime),
            ..SetAttrs::default()
        })
    }

    async fn receive_file<R: AsyncRead + Unpin>(
        &self,
        r: &mut BufReader<R>,
        vp: &str,
        mode: u32,
        size: u64,
        times: Times,
    ) -> Result<(), ScpError> {
        // Decide before reading the data; on refusal the client is told
        // and sends nothing for this file.
        let entry = self.entry(vp).await?;
        let rv = entry.vpath().to_string();
        match entry.meta() {
            Some(m) if m.is_dir() => return Err(fs_err(vp, FsError::IsADirectory)),
            Some(_) => self.allowed(vp, &rv, |p| Operation::Overwrite { path: p })?,
            None => self.allowed(vp, &rv, |p| Operation::Upload { path: p })?,
        }
        let settings = self.ctx.fs.settings();
        let opts = OpenWrite {
            read: false,
            create: true,
            exclusive: false,
            // In place, as OpenSSH's scp: written over and cut to size at
            // the end (copying a file onto itself keeps it); a temporary
            // file starts empty.
            truncate: settings.upload_mode != UploadMode::Direct,
            append: false,
            mode: mode & 0o777,
        };
        let upload = Upload::begin(entry, opts, &self.ctx.rules.quota)
            .await
            .map_err(|e| fs_err(vp, e))?;
        if let Err(e) = upload.admit(size).await {
            upload.cancel().await;
            return Err(fs_err(vp, e));
        }
        send(self.tx, &b"\0"[..]).await?;
        let (tid, transfer) =
            self.ctx
                .conn
                .begin_transfer("upload", vp.to_string(), Some(upload.recovery()));
        let mut left = size;
        let mut offset = 0u64;
        let mut buf = vec![0u8; CHUNK];
        let mut write_error = None;
        while left > 0 {
            let want = usize::try_from(left).unwrap_or(CHUNK).min(CHUNK);
            let n = match r.read(&mut buf[..want]).await {
                Ok(n) if n > 0 => n,
                _ => {
                    self.ctx.conn.finish_transfer(tid, false);
                    upload.abort().await;
                    return Err(ScpError::fatal("connection lost during transfer"));
                }
            };
            left -= n as u64;
            self.ctx.rules.throttle_upload(n).await;
            if write_error.is_none()
                && let Err(e) = upload.write_at(offset, buf[..n].to_vec()).await
            {
                // Keep reading to stay in step with the client.
                write_error = Some(e);
            }
            offset += n as u64;
            transfer
                .size
                .fetch_add(n as i64, std::sync::atomic::Ordering::Relaxed);
            self.ctx.conn.touch();
        }
        if write_error.is_none()
            && let Err(e) = upload.set_len(size).await
        {
            write_error = Some(e);
        }
        if write_error.is_none()
            && let Some(t) = self.times_to_set(vp, &rv, times)
        {
            let _ = upload.file().set_attrs(t).await;
        }
        let ack = read_ack(r).await;
        let ended = match (&write_error, &ack) {
            (None, Ok(())) => upload.commit().await.err(),
            _ => {
                upload.abort().await;
                None
            }
        };
        let error = write_error.or(ended);
        self.ctx
            .conn
            .finish_transfer(tid, error.is_none() && ack.is_ok());
        ack?;
        if let Some(e) = error {
            return Err(fs_err(vp, e));
        }
        send(self.tx, &b"\0"[..]).await
    }
}

fn denial(vp: &str, d: Denial) -> ScpError {
    match d {
        Denial::Denied => fs_err(vp, FsError::PermissionDenied),
        Denial::Hidden => fs_err(vp, FsError::NotFound),
    }
}

/// Parses `<mtime> 0 <atime> 0` of a `T` line.
#[doc(hidden)]
pub fn parse_times(rest: &str) -> Result<Times, ScpError> {
    let parts: Vec<&str> = rest.split(' ').collect();
    let bad = || ScpError::fatal("protocol error: bad time message");
    if parts.len() != 4 {
        return Err(bad());
    }
    let mtime = parts[0].parse::<u32>().map_err(|_| bad())?;
    let atime = parts[2].parse::<u32>().map_err(|_| bad())?;
    Ok(Times::Set { mtime, atime })
}

/// Parses `<mode> <size> <name>` of a `C`/`D` line.
#[doc(hidden)]
pub fn parse_entry(rest: &str) -> Result<(u32, u64, String), ScpError> {
    let bad = || ScpError::fatal("protocol error: bad file message");
    let mut it = rest.splitn(3, ' ');
    let mode = u32::from_str_radix(it.next().ok_or_else(bad)?, 8).map_err(|_| bad())?;
    let size = it
        .next()
        .ok_or_else(bad)?
        .parse::<u64>()
        .map_err(|_| bad())?;
    let name = it.next().ok_or_else(bad)?.to_string();
    if !valid_name(&name) {
        return Err(ScpError::fatal(format!("invalid file name {name:?}")));
    }
    Ok((mode, size, name))
}

struct Source<'a> {
    ctx: &'a ScpContext,
    tx: &'a Tx,
    recursive: bool,
    preserve: bool,
}

impl Source<'_> {
    async fn run<R: AsyncRead + Unpin>(&self, r: &mut BufReader<R>, paths: &[String]) -> bool {
        if read_ack(r).await.is_err() {
            return false;
        }
        let mut ok = true;
        for p in paths {
            let vp = self.ctx.rules.resolve(p);
            if let Err(e) = self.send_path(r, &vp, 0).await {
                ok = false;
                send_error(self.tx, &e).await;
                if e.fatal {
                    return false;
                }
            }
        }
        ok
    }

    async fn send_times<R: AsyncRead + Unpin>(
        &self,
        r: &mut BufReader<R>,
        meta: &Meta,
    ) -> Result<(), ScpError> {
        if !self.preserve {
            return Ok(());
        }
        let line = format!("T{} 0 {} 0\n", meta.mtime.max(0), meta.atime.max(0));
        send(self.tx, line).await?;
        read_ack(r).await
    }

    fn allowed<'a>(
        &self,
        vp: &'a str,
        rv: &'a str,
        op: impl Fn(&'a str) -> Operation<'a>,
    ) -> Result<(), ScpError> {
        let rules = &self.ctx.rules;
        rules.allows(op(vp)).map_err(|d| denial(vp, d))?;
        rules.allows(op(rv)).map_err(|d| denial(vp, d))
    }

    async fn send_path<R: AsyncRead + Unpin>(
        &self,
        r: &mut BufReader<R>,
        vp: &str,
        depth: usize,
    ) -> Result<(), ScpError> {
        let rules = &self.ctx.rules;
        rules.visible(vp).map_err(|d| denial(vp, d))?;
        let name = match vpath::base_name(vp) {
            "" => "/",
            n => n,
        };
        if name.contains('\n') {
            // A name with a newline would break the protocol's lines (and
            // let a name inject lines): skipped, as OpenSSH's scp does.
            return Err(ScpError::warn(format!(
                "{}: skipping, name contains a newline",
                vp.replace('\n', "\\n")
            )));
        }
        let entry = self
            .ctx
            .fs
            .resolve(vp, Follow::All)
            .await
            .map_err(|e| fs_err(vp, e))?;
        let rv = entry.vpath().to_string();
        rules.visible(&rv).map_err(|d| denial(vp, d))?;
        let meta = *entry.meta().ok_or_else(|| fs_err(vp, FsError::NotFound))?;
        if meta.is_dir() {
            if !self.recursive {
                return Err(fs_err(vp, "not a regular file"));
            }
            if depth > MAX_DEPTH {
                return Err(ScpError::fatal("directories nested too deep"));
            }
            self.allowed(vp, &rv, |p| Operation::List { dir: p })?;
            let reader = entry.open_dir().await.map_err(|e| fs_err(vp, e))?;
            let (rules2, dirs) = (self.ctx.rules.clone(), [vp.to_string(), rv.clone()]);
            let mut entries = reader
                .names(move |n| dirs.iter().all(|d| rules2.listed(d, n)))
                .await
                .map_err(|e| fs_err(vp, e))?;
            entries.sort();
            self.send_times(r, &meta).await?;
            send(self.tx, format!("D{:04o} 0 {name}\n", meta.mode & 0o7777)).await?;
            read_ack(r).await?;
            for entry in entries {
                let child = vpath::clean(vp, &entry);
                if let Err(e) = Box::pin(self.send_path(r, &child, depth + 1)).await {
                    if e.fatal {
                        return Err(e);
                    }
                    send_error(self.tx, &e).await;
                }
            }
            send(self.tx, &b"E\n"[..]).await?;
            return read_ack(r).await;
        }
        if !meta.is_file() {
            return Err(fs_err(vp, "not a regular file"));
        }
        rules.path(vp).map_err(|d| denial(vp, d))?;
        rules.path(&rv).map_err(|d| denial(vp, d))?;
        self.allowed(vp, &rv, |p| Operation::Download { path: p })?;
        let (file, meta) = entry.open_read().await.map_err(|e| fs_err(vp, e))?;
        self.send_times(r, &meta).await?;
        let size = meta.size;
        send(
            self.tx,
            format!("C{:04o} {size} {name}\n", meta.mode & 0o777),
        )
        .await?;
        read_ack(r).await?;
        let (tid, transfer) = self
            .ctx
            .conn
            .begin_transfer("download", vp.to_string(), None);
        let mut left = size;
        let mut offset = 0u64;
        let mut failed = None;
        while left > 0 {
            let want = usize::try_from(left).unwrap_or(CHUNK).min(CHUNK);
            let chunk = if failed.is_none() {
                match file.read_into(BytesMut::zeroed(want), 0, offset).await {
                    Ok(b) if !b.is_empty() => b,
                    _ => {
                        // The file shrank or failed: pad to the announced
                        // size and report the error after, as OpenSSH does.
                        failed = Some(fs_err(vp, "read error"));
                        BytesMut::zeroed(want)
                    }
                }
            } else {
                BytesMut::zeroed(want)
            };
            let n = chunk.len();
            left -= n as u64;
            offset += n as u64;
            self.ctx.rules.throttle_download(n).await;
            transfer
                .size
                .fetch_add(n as i64, std::sync::atomic::Ordering::Relaxed);
            self.ctx.conn.touch();
            if let Err(e) = send(self.tx, chunk.freeze()).await {
                self.ctx.conn.finish_transfer(tid, false);
                return Err(e);
            }
        }
        self.ctx.conn.finish_transfer(tid, failed.is_none());
        match failed {
            Some(e) => {
                send_error(self.tx, &e).await;
                read_ack(r).await.ok();
                Err(ScpError::warn(e.message))
            }
            None => {
                send(self.tx, &b"\0"[..]).await?;
                read_ack(r).await
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_string).collect()
    }

    #[test]
    fn argument_parsing() {
        let a = parse_args(&words("-r -p -t /dst")).unwrap();
        assert!(a.sink && a.recursive && a.preserve);
        assert_eq!(a.paths, ["/dst"]);
        let a = parse_args(&words("-prf a b")).unwrap();
        assert!(!a.sink && a.recursive && a.preserve);
        assert_eq!(a.paths, ["a", "b"]);
        assert!(parse_args(&words("-t")).is_err());
        assert!(parse_args(&words("-t -f x")).is_err());
        assert!(parse_args(&words("-t a b")).is_err());
        assert!(parse_args(&words("-S /bin/sh -t x")).is_err());
        let a = parse_args(&words("-t -- -weird")).unwrap();
        assert_eq!(a.paths, ["-weird"]);
    }

    #[test]
    fn entry_lines() {
        assert_eq!(
            parse_entry("0644 12 f.txt").ok().map(|e| e.2),
            Some("f.txt".into())
        );
        assert_eq!(
            parse_entry("0644 12 with space").ok().map(|e| e.2),
            Some("with space".into())
        );
        for bad in [
            "0644 12 ../x",
            "0644 12 a/b",
            "0644 x f",
            "9999 1 f",
            "0644 1 ..",
            "0644 1 ",
        ] {
            assert!(parse_entry(bad).is_err(), "{bad}");
        }
    }
}
