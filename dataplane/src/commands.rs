//! SSH commands run on an `exec` channel: the hash commands (`md5sum`,
//! `sha1sum`, `sha256sum`, `sha384sum`, `sha512sum`, on a file or on stdin),
//! `cd`, `pwd`, `sftpgo-copy` and `sftpgo-remove`, with SFTPGo's output
//! format and exit statuses, each only when `enabled_ssh_commands` lists it.
//! Anything else is refused with a message on stderr and exit status 127.
//! Paths go through the same resolver, permissions, filters and quota as SFTP.

use std::io::Read;
use std::sync::Arc;

use bytes::Bytes;
use ferry_proto::permissions::Operation;

use russh::ChannelMsg;
use russh::server::Msg;
use sha2::Digest;

use crate::registry::Connection;
use crate::vfs::{FsError, UserFs};

/// Longest command line accepted.
pub const MAX_COMMAND_LEN: usize = 8 * 1024;
/// Exit status for commands we do not run (as a shell's "command not found").
const EXIT_UNSUPPORTED: u32 = 127;

/// The commands this edge can run (`enabled_ssh_commands` picks among them).
pub const SUPPORTED: &[&str] = &[
    "md5sum",
    "sha1sum",
    "sha256sum",
    "sha384sum",
    "sha512sum",
    "cd",
    "pwd",
    "scp",
    "sftpgo-copy",
    "sftpgo-remove",
    "rsync",
    "git-receive-pack",
    "git-upload-pack",
    "git-upload-archive",
];

/// SFTPGo's default `sftpd.enabled_ssh_commands`.
pub const DEFAULT_ENABLED: &str = "md5sum,sha1sum,sha256sum,cd,pwd,scp";

/// Which commands run (`sftpd.enabled_ssh_commands`; `*` = all).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnabledCommands {
    names: Vec<String>,
}

impl Default for EnabledCommands {
    fn default() -> Self {
        Self::from_setting(DEFAULT_ENABLED).expect("valid default")
    }
}

impl EnabledCommands {
    /// Parses a comma-separated list; unknown names are an error.
    pub fn from_setting(text: &str) -> Result<Self, String> {
        let mut names = Vec::new();
        for name in text.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            if name == "*" {
                return Ok(Self {
                    names: SUPPORTED.iter().map(|s| s.to_string()).collect(),
                });
            }
            if !SUPPORTED.contains(&name) {
                return Err(format!(
                    "enabled_ssh_commands: unknown command {name:?} (supported: {}, or *)",
                    SUPPORTED.join(", ")
                ));
            }
            names.push(name.to_string());
        }
        Ok(Self { names })
    }

    pub fn allows(&self, name: &str) -> bool {
        self.names.iter().any(|n| n == name)
    }

    /// The command unless it is disabled here.
    pub fn filter(&self, command: Command) -> Command {
        match command.name() {
            Some(name) if !self.allows(name) => Command::Unsupported {
                reason: format!(
                    "command {name:?} is not enabled on this server; enabled: {}",
                    self.names.join(", ")
                ),
            },
            _ => command,
        }
    }
}

/// A parsed command line.
#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    Hash {
        algo: &'static str,
        path: Option<String>,
    },
    Cd,
    Pwd,
    /// The legacy SCP protocol (`scp -t` / `scp -f`).
    Scp(crate::scp::ScpArgs),
    /// `sftpgo-copy <src> <dst>`: server-side copy of a file or a tree.
    Copy {
        from: String,
        to: String,
    },
    /// `sftpgo-remove <path>`: removes a file or a whole tree.
    Remove {
        path: String,
    },
    /// rsync or git, run as the system binary (see [`crate::syscmd`]).
    System(crate::syscmd::SystemCommand),
    Unsupported {
        reason: String,
    },
}

impl Command {
    /// The command's name, for `enabled_ssh_commands`.
    pub fn name(&self) -> Option<&'static str> {
        Some(match self {
            Command::Hash { algo, .. } => match *algo {
                "md5" => "md5sum",
                "sha1" => "sha1sum",
                "sha256" => "sha256sum",
                "sha384" => "sha384sum",
                _ => "sha512sum",
            },
            Command::Cd => "cd",
            Command::Pwd => "pwd",
            Command::Scp(_) => "scp",
            Command::Copy { .. } => "sftpgo-copy",
            Command::Remove { .. } => "sftpgo-remove",
            Command::System(c) => c.program,
            Command::Unsupported { .. } => return None,
        })
    }
}

/// Splits a command line like a POSIX shell would quote it (no expansion).
pub fn parse(line: &[u8]) -> Command {
    if line.len() > MAX_COMMAND_LEN {
        return Command::Unsupported {
            reason: format!("command too long (limit {MAX_COMMAND_LEN} bytes)"),
        };
    }
    let Ok(text) = std::str::from_utf8(line) else {
        return Command::Unsupported {
            reason: "command is not valid UTF-8".into(),
        };
    };
    let Some(words) = shlex::split(text) else {
        return Command::Unsupported {
            reason: "unbalanced quotes in command".into(),
        };
    };
    let Some((name, args)) = words.split_first() else {
        return Command::Unsupported {
            reason: "empty command".into(),
        };
    };
    let algo = match name.as_str() {
        "md5sum" => "md5",
        "sha1sum" => "sha1",
        "sha256sum" => "sha256",
        "sha384sum" => "sha384",
        "sha512sum" => "sha512",
        "cd" => return Command::Cd,
        "pwd" => return Command::Pwd,
        "sftpgo-copy" => {
            return match args {
                [from, to] => Command::Copy {
                    from: from.clone(),
                    to: to.clone(),
                },
                _ => Command::Unsupported {
                    reason: "usage: sftpgo-copy <source path> <destination path>".into(),
                },
            };
        }
        "rsync" => {
            return match crate::syscmd::parse_rsync(args) {
                Ok(c) => Command::System(c),
                Err(reason) => Command::Unsupported { reason },
            };
        }
        git @ ("git-receive-pack" | "git-upload-pack" | "git-upload-archive") => {
            let program = match git {
                "git-receive-pack" => "git-receive-pack",
                "git-upload-pack" => "git-upload-pack",
                _ => "git-upload-archive",
            };
            return match crate::syscmd::parse_git(program, args) {
                Ok(c) => Command::System(c),
                Err(reason) => Command::Unsupported { reason },
            };
        }
        "sftpgo-remove" => {
            return match args {
                [path] => Command::Remove { path: path.clone() },
                _ => Command::Unsupported {
                    reason: "usage: sftpgo-remove <path>".into(),
                },
            };
        }
        "scp" => {
            return match crate::scp::parse_args(args) {
                Ok(a) => Command::Scp(a),
                Err(reason) => Command::Unsupported { reason },
            };
        }
        other => {
            return Command::Unsupported {
                reason: format!(
                    "command {other:?} is not supported; available: {}",
                    SUPPORTED.join(", ")
                ),
            };
        }
    };
    match args {
        [] => Command::Hash { algo, path: None },
        [path] if path != "-" => Command::Hash {
            algo,
            path: Some(path.clone()),
        },
        [_] => Command::Hash { algo, path: None },
        _ => Command::Unsupported {
            reason: format!("{name} takes at most one file argument"),
        },
    }
}

enum Hasher {
    Md5(md5::Md5),
    Sha1(sha1::Sha1),
    Sha256(sha2::Sha256),
    Sha384(sha2::Sha384),
    Sha512(sha2::Sha512),
}

impl Hasher {
    fn new(algo: &str) -> Self {
        match algo {
            "md5" => Hasher::Md5(md5::Md5::new()),
            "sha1" => Hasher::Sha1(sha1::Sha1::new()),
            "sha256" => Hasher::Sha256(sha2::Sha256::new()),
            "sha384" => Hasher::Sha384(sha2::Sha384::new()),
            _ => Hasher::Sha512(sha2::Sha512::new()),
        }
    }

    fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Md5(h) => h.update(data),
            Hasher::Sha1(h) => h.update(data),
            Hasher::Sha256(h) => h.update(data),
            Hasher::Sha384(h) => h.update(data),
            Hasher::Sha512(h) => h.update(data),
        }
    }

    fn hex(self) -> String {
        match self {
            Hasher::Md5(h) => hex::encode(h.finalize()),
            Hasher::Sha1(h) => hex::encode(h.finalize()),
            Hasher::Sha256(h) => hex::encode(h.finalize()),
            Hasher::Sha384(h) => hex::encode(h.finalize()),
            Hasher::Sha512(h) => hex::encode(h.finalize()),
        }
    }
}

/// What a command needs from the session.
pub struct CommandContext {
    pub fs: UserFs,
    pub rules: Arc<crate::policy::UserPolicy>,
    pub conn: Arc<Connection>,
    /// uid/gid given to what a copy creates (only when running as root).
    pub owner: Option<(u32, u32)>,
}

/// Runs `command` on `channel`, then sends its exit status, EOF and close.
pub async fn run(channel: russh::Channel<Msg>, command: Command, ctx: CommandContext) {
    let (mut rx, tx) = channel.split();
    let (stdout, stderr, status) = match command {
        Command::Cd => (String::new(), String::new(), 0),
        Command::Pwd => (format!("{}\n", ctx.rules.start_dir), String::new(), 0),
        Command::Unsupported { reason } => (String::new(), format!("{reason}\n"), EXIT_UNSUPPORTED),
        Command::Scp(_) => (String::new(), "scp runs on its own path\n".into(), 1),
        Command::Hash { algo, path: None } => {
            let mut h = Hasher::new(algo);
            let mut total = 0usize;
            while let Some(msg) = rx.wait().await {
                match msg {
                    ChannelMsg::Data { data } => {
                        total += data.len();
                        h.update(&data);
                    }
                    ChannelMsg::Eof | ChannelMsg::Close => break,
                    _ => {}
                }
            }
            ctx.conn.touch();
            tracing::debug!(algo, bytes = total, "hashed stdin");
            (format!("{}  -\n", h.hex()), String::new(), 0)
        }
        Command::Hash {
            algo,
            path: Some(path),
        } => match hash_file(&ctx, algo, &path).await {
            Ok((hex, vp)) => (format!("{hex}  {vp}\n"), String::new(), 0),
            Err(e) => (String::new(), format!("{path}: {e}\n"), 1),
        },
        Command::Copy { from, to } => match copy(&ctx, &from, &to).await {
            Ok(()) => ("OK\n".to_string(), String::new(), 0),
            Err(e) => (String::new(), format!("sftpgo-copy: {e}\n"), 1),
        },
        Command::Remove { path } => match remove(&ctx, &path).await {
            Ok(()) => ("OK\n".to_string(), String::new(), 0),
            Err(e) => (String::new(), format!("sftpgo-remove: {e}\n"), 1),
        },
        Command::System(c) => match crate::syscmd::run(rx, &tx, c, &ctx).await {
            Ok(status) => (String::new(), String::new(), status),
            Err(e) => (String::new(), format!("{e}\n"), 1),
        },
    };
    if !stdout.is_empty() {
        let _ = tx.data_bytes(Bytes::from(stdout)).await;
    }
    if !stderr.is_empty() {
        let _ = tx.extended_data_bytes(1, Bytes::from(stderr)).await;
    }
    let _ = tx.exit_status(status).await;
    let _ = tx.eof().await;
    let _ = tx.close().await;
}

fn denial(d: crate::policy::Denial) -> String {
    match d {
        crate::policy::Denial::Hidden => FsError::NotFound.to_string(),
        crate::policy::Denial::Denied => FsError::PermissionDenied.to_string(),
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| format!("internal error: {e}"))?
}

/// `sftpgo-copy`: a file or a tree (symlinks skipped) to a path that does
/// not exist yet, checked like a copy and reserved in quota first.
async fn copy(ctx: &CommandContext, from: &str, to: &str) -> Result<(), String> {
    let (src_v, dst_v) = (ctx.rules.resolve(from), ctx.rules.resolve(to));
    if src_v == "/" || dst_v == "/" || dst_v.starts_with(&format!("{src_v}/")) {
        return Err("cannot copy the root, onto it, or into itself".into());
    }
    ctx.rules.path(&src_v).map_err(denial)?;
    ctx.rules.path(&dst_v).map_err(denial)?;
    let src = ctx.fs.resolve_nofollow(&src_v).map_err(|e| e.to_string())?;
    let dst = ctx.fs.resolve_nofollow(&dst_v).map_err(|e| e.to_string())?;
    let (s, d) = (src.clone(), dst.clone());
    let (meta, dst_exists) = blocking(move || {
        let m = std::fs::symlink_metadata(&s).map_err(|e| FsError::from(e).to_string())?;
        Ok((m, d.symlink_metadata().is_ok()))
    })
    .await?;
    if !meta.is_dir() && !meta.is_file() {
        return Err("unsupported copy source: only files and directories are supported".into());
    }
    if dst_exists {
        return Err(format!("{dst_v}: the destination already exists"));
    }
    if meta.is_dir() && ctx.fs.holds_mount(&src_v) {
        return Err("copying a directory that holds virtual folders is not supported".into());
    }
    ctx.rules
        .allows(Operation::Copy {
            from: &src_v,
            to: &dst_v,
            is_dir: meta.is_dir(),
            target_exists: false,
        })
        .map_err(denial)?;
    let is_dir = meta.is_dir();
    let s = src.clone();
    let (size, files) = blocking(move || Ok(crate::vfs::usage_of(&s, is_dir))).await?;
    let domain = ctx.fs.domain(&dst_v);
    ctx.rules
        .quota
        .grow(&domain, size, files)
        .await
        .map_err(|e| e.to_string())?;
    let (owner, conn) = (ctx.owner, ctx.conn.clone());
    let d = dst.clone();
    let copied = blocking(move || {
        copy_tree(&src, &d, owner, &conn).map_err(|e| FsError::from(e).to_string())
    })
    .await;
    if copied.is_err() {
        // What did land stays counted; the rest of the reservation goes back.
        let d = dst.clone();
        let (got_size, got_files) =
            blocking(move || Ok(crate::vfs::usage_of(&d, d.is_dir()))).await?;
        ctx.rules
            .quota
            .release(&domain, got_size - size, got_files - files)
            .await;
    }
    copied
}

fn copy_tree(
    src: &std::path::Path,
    dst: &std::path::Path,
    owner: Option<(u32, u32)>,
    conn: &Connection,
) -> std::io::Result<()> {
    let meta = std::fs::symlink_metadata(src)?;
    if meta.is_dir() {
        std::fs::create_dir(dst)?;
        std::fs::set_permissions(dst, meta.permissions())?;
        for entry in std::fs::read_dir(src)? {
            let entry = entry?;
            let kind = entry.file_type()?;
            if kind.is_dir() || kind.is_file() {
                copy_tree(&entry.path(), &dst.join(entry.file_name()), owner, conn)?;
            }
        }
    } else {
        // A new file only: never through an existing name or link.
        let mut out = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(dst)?;
        let mut input = std::fs::File::open(src)?;
        std::io::copy(&mut input, &mut out)?;
        out.set_permissions(meta.permissions())?;
        conn.touch();
    }
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::chown(dst, Some(uid), Some(gid))?;
    }
    Ok(())
}

/// `sftpgo-remove`: a file, or a directory with everything in it; never the
/// root or a directory holding virtual folders.
async fn remove(ctx: &CommandContext, path: &str) -> Result<(), String> {
    let vp = ctx.rules.resolve(path);
    if vp == "/" {
        return Err("removing the root directory is not allowed".into());
    }
    ctx.rules.path(&vp).map_err(denial)?;
    let real = ctx.fs.resolve_nofollow(&vp).map_err(|e| e.to_string())?;
    let r = real.clone();
    let meta =
        blocking(move || std::fs::symlink_metadata(&r).map_err(|e| FsError::from(e).to_string()))
            .await?;
    let domain = ctx.fs.domain(&vp);
    if meta.is_dir() {
        if ctx.fs.holds_mount(&vp) {
            return Err("unsupported remove source: it holds virtual folders".into());
        }
        ctx.rules
            .allows(Operation::RemoveDir { path: &vp })
            .map_err(denial)?;
        // What went is released, also when removal stops half way.
        let (gone, done) = blocking(move || {
            let before = crate::vfs::usage_of(&real, true);
            let done = std::fs::remove_dir_all(&real).map_err(|e| FsError::from(e).to_string());
            let after = if done.is_ok() {
                (0, 0)
            } else {
                crate::vfs::usage_of(&real, real.is_dir())
            };
            Ok(((before.0 - after.0, before.1 - after.1), done))
        })
        .await?;
        ctx.rules.quota.release(&domain, -gone.0, -gone.1).await;
        done?;
    } else {
        ctx.rules
            .allows(Operation::RemoveFile { path: &vp })
            .map_err(denial)?;
        blocking(move || std::fs::remove_file(&real).map_err(|e| FsError::from(e).to_string()))
            .await?;
        if meta.is_file() {
            ctx.rules
                .quota
                .release(&domain, -(meta.len() as i64), -1)
                .await;
        }
    }
    ctx.conn.touch();
    Ok(())
}

async fn hash_file(
    ctx: &CommandContext,
    algo: &'static str,
    path: &str,
) -> Result<(String, String), String> {
    let vp = ctx.rules.resolve(path);
    // Hashing reads the file: listing it must be allowed and the filters
    // must let it be used.
    match ctx
        .rules
        .path(&vp)
        .and_then(|()| ctx.rules.allows(Operation::Stat { path: &vp }))
    {
        Ok(()) => {}
        Err(crate::policy::Denial::Hidden) => return Err(FsError::NotFound.to_string()),
        Err(crate::policy::Denial::Denied) => return Err(FsError::PermissionDenied.to_string()),
    }
    let real = ctx.fs.resolve(&vp).map_err(|e| e.to_string())?;
    let conn = ctx.conn.clone();
    let hex = tokio::task::spawn_blocking(move || -> Result<String, String> {
        let mut f = std::fs::File::open(&real).map_err(|e| FsError::from(e).to_string())?;
        if f.metadata().map_err(|e| e.to_string())?.is_dir() {
            return Err("is a directory".into());
        }
        let mut h = Hasher::new(algo);
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = f.read(&mut buf).map_err(|e| e.to_string())?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
            conn.touch();
        }
        Ok(h.hex())
    })
    .await
    .map_err(|e| format!("internal error: {e}"))??;
    Ok((hex, vp))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(line: &str, expected: Command) {
        assert_eq!(parse(line.as_bytes()), expected, "{line:?}");
    }

    #[test]
    fn parsing() {
        check(
            "sha256sum",
            Command::Hash {
                algo: "sha256",
                path: None,
            },
        );
        check(
            "md5sum -",
            Command::Hash {
                algo: "md5",
                path: None,
            },
        );
        check(
            "sha1sum 'my file.txt'",
            Command::Hash {
                algo: "sha1",
                path: Some("my file.txt".into()),
            },
        );
        check("cd /x", Command::Cd);
        check("pwd", Command::Pwd);
        assert!(matches!(parse(b"rm -rf /"), Command::Unsupported { .. }));
        assert!(matches!(
            parse(b"sha256sum a b"),
            Command::Unsupported { .. }
        ));
        assert!(matches!(
            parse(b"sha256sum 'unterminated"),
            Command::Unsupported { .. }
        ));
        assert!(matches!(parse(b""), Command::Unsupported { .. }));
        assert!(matches!(
            parse(&vec![b'a'; MAX_COMMAND_LEN + 1]),
            Command::Unsupported { .. }
        ));
    }
}
