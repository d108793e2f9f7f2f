//! SSH commands run on an `exec` channel: the hash commands (`md5sum`,
//! `sha1sum`, `sha256sum`, `sha384sum`, `sha512sum`, on a file or on stdin),
//! `cd` and `pwd`, with SFTPGo's output format and exit statuses. Anything
//! else is refused with a message on stderr and a non-zero exit status.
//! Paths go through the same resolver and permission engine as SFTP.

use std::io::Read;
use std::sync::Arc;

use bytes::Bytes;
use ferry_proto::permissions::Operation;
use ferry_proto::vpath;
use russh::ChannelMsg;
use russh::server::Msg;
use sha2::Digest;

use crate::registry::Connection;
use crate::vfs::{FsError, UserFs};

/// Longest command line accepted.
pub const MAX_COMMAND_LEN: usize = 8 * 1024;
/// Exit status for commands we do not run (as a shell's "command not found").
const EXIT_UNSUPPORTED: u32 = 127;

/// The commands this edge runs.
pub const SUPPORTED: &[&str] = &[
    "md5sum",
    "sha1sum",
    "sha256sum",
    "sha384sum",
    "sha512sum",
    "cd",
    "pwd",
];

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
    Unsupported {
        reason: String,
    },
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
}

/// Runs `command` on `channel`, then sends its exit status, EOF and close.
pub async fn run(channel: russh::Channel<Msg>, command: Command, ctx: CommandContext) {
    let (mut rx, tx) = channel.split();
    let (stdout, stderr, status) = match command {
        Command::Cd => (String::new(), String::new(), 0),
        Command::Pwd => ("/\n".to_string(), String::new(), 0),
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

async fn hash_file(
    ctx: &CommandContext,
    algo: &'static str,
    path: &str,
) -> Result<(String, String), String> {
    let vp = vpath::clean("/", path);
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
