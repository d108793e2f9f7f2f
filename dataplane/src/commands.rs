//! SSH commands run on an `exec` channel: the hash commands (`md5sum`,
//! `sha1sum`, `sha256sum`, `sha384sum`, `sha512sum`, on a file or on stdin),
//! `cd`, `pwd`, `sftpgo-copy` and `sftpgo-remove`, with SFTPGo's output
//! format and exit statuses, each only when `enabled_ssh_commands` lists it.
//! Anything else is refused with a message on stderr and exit status 127.
//! Paths go through the same resolver, permissions, filters and quota as SFTP.

use std::sync::Arc;

use bytes::Bytes;
use ferry_proto::permissions::Operation;

use russh::ChannelMsg;
use russh::server::Msg;
use sha2::Digest;

use crate::registry::Connection;
use crate::vfs::{Entry, Follow, FsError, UserFs};

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

/// Resolves a client path after its filters allow it (on the requested
/// path and where links led).
async fn entry(ctx: &CommandContext, vp: &str, follow: Follow) -> Result<Entry, String> {
    ctx.rules.path(vp).map_err(denial)?;
    let e = ctx
        .fs
        .resolve(vp, follow)
        .await
        .map_err(|e| e.to_string())?;
    ctx.rules.path(e.vpath()).map_err(denial)?;
    Ok(e)
}

/// `sftpgo-copy`: a file or a tree (links and special files skipped) to a
/// path that does not exist yet, checked like a copy and reserved in quota
/// first.
async fn copy(ctx: &CommandContext, from: &str, to: &str) -> Result<(), String> {
    let (src_v, dst_v) = (ctx.rules.resolve(from), ctx.rules.resolve(to));
    if src_v == "/" || dst_v == "/" || dst_v.starts_with(&format!("{src_v}/")) {
        return Err("cannot copy the root, onto it, or into itself".into());
    }
    let src = entry(ctx, &src_v, Follow::NotLast).await?;
    let dst = entry(ctx, &dst_v, Follow::NotLast).await?;
    let meta = *src.meta().ok_or_else(|| FsError::NotFound.to_string())?;
    if !meta.is_dir() && !meta.is_file() {
        return Err("unsupported copy source: only files and directories are supported".into());
    }
    if dst.exists() {
        return Err(format!("{dst_v}: the destination already exists"));
    }
    if dst.vpath().starts_with(&format!("{}/", src.vpath())) {
        return Err("cannot copy the root, onto it, or into itself".into());
    }
    if meta.is_dir() && (ctx.fs.holds_mount(&src_v) || ctx.fs.holds_mount(src.vpath())) {
        return Err("copying a directory that holds virtual folders is not supported".into());
    }
    for (f, t) in [(src_v.as_str(), dst_v.as_str()), (src.vpath(), dst.vpath())] {
        ctx.rules
            .allows(Operation::Copy {
                from: f,
                to: t,
                is_dir: meta.is_dir(),
                target_exists: false,
            })
            .map_err(denial)?;
    }
    let (size, files) = src.usage().await.map_err(|e| e.to_string())?;
    let domain = dst.domain();
    ctx.rules
        .quota
        .grow(&domain, size, files)
        .await
        .map_err(|e| e.to_string())?;
    let conn = ctx.conn.clone();
    let copied = src.copy_to(&dst, move || conn.touch()).await;
    if let Err(e) = copied {
        // What did land stays counted; the rest of the reservation goes back.
        let (got_size, got_files) = match ctx.fs.resolve(&dst_v, Follow::NotLast).await {
            Ok(landed) => landed.usage().await.unwrap_or((0, 0)),
            Err(_) => (0, 0),
        };
        ctx.rules
            .quota
            .release(&domain, got_size - size, got_files - files)
            .await;
        return Err(e.to_string());
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
    let target = entry(ctx, &vp, Follow::NotLast).await?;
    let rv = target.vpath().to_string();
    let meta = *target.meta().ok_or_else(|| FsError::NotFound.to_string())?;
    let domain = target.domain();
    if meta.is_dir() {
        if ctx.fs.holds_mount(&vp) || ctx.fs.holds_mount(&rv) {
            return Err("unsupported remove source: it holds virtual folders".into());
        }
        for p in [vp.as_str(), rv.as_str()] {
            ctx.rules
                .allows(Operation::RemoveDir { path: p })
                .map_err(denial)?;
        }
        // What went is released, also when removal stops half way.
        let (size, files, done) = target.remove_tree().await;
        ctx.rules.quota.release(&domain, -size, -files).await;
        done.map_err(|e| e.to_string())?;
    } else {
        for p in [vp.as_str(), rv.as_str()] {
            ctx.rules
                .allows(Operation::RemoveFile { path: p })
                .map_err(denial)?;
        }
        let removed = target.remove_file().await.map_err(|e| e.to_string())?;
        if removed.is_file() {
            ctx.rules
                .quota
                .release(&domain, -i64::try_from(removed.size).unwrap_or(0), -1)
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
    let target = entry(ctx, &vp, Follow::All).await?;
    for p in [vp.as_str(), target.vpath()] {
        ctx.rules
            .allows(Operation::Stat { path: p })
            .map_err(denial)?;
    }
    if target.is_dir() {
        return Err(FsError::IsADirectory.to_string());
    }
    let (file, _) = target.open_read().await.map_err(|e| e.to_string())?;
    let conn = ctx.conn.clone();
    let h = file
        .fold(Hasher::new(algo), move |h, chunk| {
            h.update(chunk);
            conn.touch();
        })
        .await
        .map_err(|e| e.to_string())?;
    Ok((h.hex(), vp))
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
