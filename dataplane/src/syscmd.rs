//! rsync and git over SSH, by running the system binaries on the user's
//! local storage — what SFTPGo removed in 2.7 as unsafe, kept here with the
//! arguments parsed against an allow list. Only the server side of each tool
//! is accepted (`rsync --server …`, `git-upload-pack PATH`, …); options that
//! name other files or programs (`--rsh`, `--temp-dir`, `--files-from`, …)
//! are refused; the target (last argument) is a virtual path checked through
//! the storage layer and passed relative to the home, the program's working
//! directory; the program runs without a shell, with the user's
//! uid/gid when the edge runs as root, and a minimal environment. SFTPGo's
//! rules apply: local storage only, not inside or above virtual folders, not
//! with file filters, and `list`, `download`, `upload`, `create_dirs`,
//! `overwrite` and `delete` on the target. Quota: refused when the user is
//! already over it, input capped to what is left, and the target re-scanned
//! afterwards to settle the real change.

use std::ffi::OsString;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use ferry_proto::vpath;
use russh::ChannelMsg;
use russh::server::Msg;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::commands::CommandContext;
use crate::quota::QuotaDomain;
use crate::sandbox::{self, Program};

/// A system command ready to check and run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SystemCommand {
    /// `rsync`, `git-receive-pack`, `git-upload-pack` or `git-upload-archive`.
    pub program: &'static str,
    /// Arguments before the target, already checked.
    pub args: Vec<String>,
    /// The target as the client named it (a virtual path).
    pub target: String,
}

/// Short rsync server options allowed before the `e.` capability string.
const RSYNC_SHORT: &str = "vlogDtprciLsxCIuzhHSkKOJWbdAXnmyR";
/// Long rsync options a server may be given (no value, or a number).
const RSYNC_LONG: &[&str] = &[
    "--server",
    "--sender",
    "--delete",
    "--delete-before",
    "--delete-during",
    "--delete-after",
    "--delete-delay",
    "--delete-excluded",
    "--partial",
    "--inplace",
    "--append",
    "--append-verify",
    "--no-implied-dirs",
    "--numeric-ids",
    "--checksum",
    "--size-only",
    "--ignore-times",
    "--existing",
    "--ignore-existing",
    "--ignore-errors",
    "--force",
    "--delay-updates",
    "--prune-empty-dirs",
    "--fsync",
];
/// Long rsync options with a numeric value.
const RSYNC_NUMERIC: &[&str] = &[
    "--timeout",
    "--bwlimit",
    "--min-size",
    "--max-size",
    "--modify-window",
    "--compress-level",
    "--checksum-seed",
    "--block-size",
    "--max-delete",
];

/// Parses `rsync ARGS`: the server side only, every option allowed, `.`
/// then exactly one target.
pub fn parse_rsync(args: &[String]) -> Result<SystemCommand, String> {
    if args.first().map(String::as_str) != Some("--server") {
        return Err("rsync: only the server side (rsync --server) can run here".into());
    }
    let Some(dot) = args.iter().position(|a| a == ".") else {
        return Err("rsync: missing \".\" before the path".into());
    };
    let (opts, rest) = (&args[..dot], &args[dot + 1..]);
    let [target] = rest else {
        return Err("rsync: exactly one path is accepted".into());
    };
    for o in opts {
        check_rsync_option(o)?;
    }
    check_path_arg("rsync", target)?;
    Ok(SystemCommand {
        program: "rsync",
        args: args[..=dot].to_vec(),
        target: target.clone(),
    })
}

fn check_rsync_option(o: &str) -> Result<(), String> {
    let refuse = || Err(format!("rsync: option {o:?} is not allowed here"));
    if let Some(long) = o.strip_prefix("--") {
        let long = format!("--{long}");
        if RSYNC_LONG.contains(&long.as_str()) {
            return Ok(());
        }
        if let Some((name, value)) = long.split_once('=')
            && RSYNC_NUMERIC.contains(&name)
            && !value.is_empty()
            && value.chars().all(|c| c.is_ascii_digit() || c == '.')
        {
            return Ok(());
        }
        return refuse();
    }
    let Some(short) = o.strip_prefix('-') else {
        return refuse();
    };
    // In server mode `e` starts the capability string (`e.iLsfxCIvu`), not
    // a remote shell: letters before it are options.
    let (flags, caps) = match short.split_once('e') {
        Some((f, c)) => (f, Some(c)),
        None => (short, None),
    };
    if flags.is_empty() && caps.is_none() {
        return refuse();
    }
    if !flags.chars().all(|c| RSYNC_SHORT.contains(c)) {
        return refuse();
    }
    if let Some(caps) = caps
        && !(caps.starts_with('.') && caps[1..].chars().all(|c| c.is_ascii_alphabetic()))
    {
        return refuse();
    }
    Ok(())
}

fn check_path_arg(program: &str, p: &str) -> Result<(), String> {
    if p.is_empty() || p.starts_with('-') {
        return Err(format!("{program}: invalid path {p:?}"));
    }
    Ok(())
}

/// Parses `git-upload-pack PATH` and friends: exactly one path.
pub fn parse_git(program: &'static str, args: &[String]) -> Result<SystemCommand, String> {
    let [path] = args else {
        return Err(format!(
            "{program}: exactly one repository path is accepted"
        ));
    };
    check_path_arg(program, path)?;
    Ok(SystemCommand {
        program,
        args: Vec::new(),
        target: path.clone(),
    })
}

/// Permissions SFTPGo requires on the target of a system command.
const REQUIRED: &[&str] = &[
    "list",
    "download",
    "upload",
    "create_dirs",
    "overwrite",
    "delete",
];

/// Checks and runs `cmd`; returns (stderr message, exit status) when it
/// could not start, or runs it and bridges its I/O, returning its status.
pub async fn run(
    mut rx: russh::ChannelReadHalf,
    tx: &russh::ChannelWriteHalf<Msg>,
    cmd: SystemCommand,
    ctx: &CommandContext,
) -> Result<u32, String> {
    let name = cmd.program;
    let program = Program::from_name(name).ok_or_else(|| format!("{name}: not supported"))?;
    let (uid, gid) = child_ids(ctx.owner);
    refuse_unsafe(name, uid, gid).inspect_err(|reason| {
        tracing::warn!(
            username = ctx.conn.opened.username,
            connection_id = ctx.conn.opened.connection_id,
            command = name,
            uid,
            gid,
            reason,
            "system command refused"
        );
    })?;
    let vp = vpath::clean("/", &cmd.target);
    if ctx.fs.home_real().is_none() {
        return Err(format!(
            "{name}: not available on object storage (local storage only)"
        ));
    }
    if !ctx.rules.files.is_empty() {
        return Err(format!("{name}: not available to users with file filters"));
    }
    if ctx.fs.in_mount(&vp) || ctx.fs.holds_mount(&vp) {
        return Err(format!(
            "{name}: not available inside or above virtual folders"
        ));
    }
    if let Some(missing) = REQUIRED.iter().find(|p| !ctx.rules.perms.has(&vp, p)) {
        return Err(format!(
            "{name}: permission denied (needs {missing:?} on {vp})"
        ));
    }
    // The target is checked through the storage layer, then handed to the
    // program relative to the home (its working directory).
    let target = ctx
        .fs
        .resolve(&vp, crate::vfs::Follow::All)
        .await
        .map_err(|e| format!("{name}: {vp}: {e}"))?;
    let rv = target.vpath().to_string();
    if rv != vp {
        if ctx.fs.in_mount(&rv) || ctx.fs.holds_mount(&rv) {
            return Err(format!(
                "{name}: not available inside or above virtual folders"
            ));
        }
        if let Some(missing) = REQUIRED.iter().find(|p| !ctx.rules.perms.has(&rv, p)) {
            return Err(format!(
                "{name}: permission denied (needs {missing:?} on {rv})"
            ));
        }
    }
    // Quota: refused when already at a limit; input capped to what is left.
    let quota = &ctx.rules.quota;
    let mut cap = u64::MAX;
    if let Some(q) = quota
        .status(&QuotaDomain::User)
        .await
        .map_err(|e| format!("{name}: {e}"))?
    {
        let over_size = q.quota_size > 0 && q.used_size + q.reserved_size >= q.quota_size;
        let over_files = q.quota_files > 0 && q.used_files + q.reserved_files >= q.quota_files;
        if over_size || over_files {
            return Err(format!("{name}: {}", crate::quota::QUOTA_EXCEEDED));
        }
        if q.quota_size > 0 {
            // Protocol overhead counts too: a little margin over the bytes left.
            let left = (q.quota_size - q.used_size - q.reserved_size).max(0) as u64;
            cap = left + left / 10 + 64 * 1024;
        }
    }
    let before = target.usage().await.map_err(|e| format!("{name}: {e}"))?;

    let mut args = cmd.args.clone();
    if program == Program::Rsync {
        // `args` ends with "."; what rsync adds goes before it. Links may
        // point only inside what rsync writes. FIFOs and sockets are
        // skipped (the sandbox would refuse them, with errors). Not
        // `--no-devices`: device entries carry extra fields that flag also
        // drops, which desyncs the protocol as soon as one is listed;
        // rsync's receiver makes devices only as root, and never runs so.
        // No setuid/setgid bits: a non-root receiver keeps them otherwise.
        let links = if ctx.rules.perms.has(&vp, "create_symlinks") {
            "--safe-links"
        } else {
            "--munge-links"
        };
        let at = args.len() - 1;
        args.splice(
            at..at,
            [links, "--no-specials", "--chmod=ug-s"].map(String::from),
        );
    }
    // Relative to the home, the program's working directory. rsync reads a
    // trailing `/` as "the contents of": keep it.
    let mut target_arg = match rv.trim_start_matches('/') {
        "" => ".".to_string(),
        rel => rel.to_string(),
    };
    if cmd.target.ends_with('/') && !target_arg.ends_with('/') {
        target_arg.push('/');
    }
    let home = ctx
        .fs
        .home_real()
        .ok_or_else(|| format!("{name}: not available on object storage"))?
        .to_path_buf();
    let mut command = sandbox::command(
        program,
        &home,
        args.into_iter()
            .map(OsString::from)
            .chain([OsString::from(target_arg)]),
    );
    command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        // Its own process group: rsync forks, and all of it is stopped at once.
        .process_group(0);
    if ctx.owner.is_some() {
        // From root: std also clears the supplementary groups.
        command.uid(uid).gid(gid);
    }
    let mut child = command
        .spawn()
        .map_err(|e| format!("{name}: cannot start: {e}"))?;
    let mut stdin = child.stdin.take().expect("piped");
    let mut stdout = child.stdout.take().expect("piped");
    let mut stderr = child.stderr.take().expect("piped");
    let conn = ctx.conn.clone();
    let (tid, transfer) = conn.begin_transfer("upload", vp.clone(), None);

    // Client → program, capped by quota. The client may wait for the exit
    // status before it closes its side, so this task is not waited for.
    let over_cap = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (cap_tx, mut cap_rx) = tokio::sync::mpsc::channel::<()>(1);
    let feeding = {
        let transfer = transfer.clone();
        let conn = conn.clone();
        let over_cap = over_cap.clone();
        async move {
            let mut sent: u64 = 0;
            while let Some(msg) = rx.wait().await {
                match msg {
                    ChannelMsg::Data { data } => {
                        sent += data.len() as u64;
                        if sent > cap {
                            over_cap.store(true, Ordering::Relaxed);
                            let _ = cap_tx.send(()).await;
                            return;
                        }
                        transfer
                            .size
                            .fetch_add(data.len() as i64, Ordering::Relaxed);
                        conn.touch();
                        if stdin.write_all(&data).await.is_err() {
                            break;
                        }
                    }
                    ChannelMsg::Eof | ChannelMsg::Close => break,
                    _ => {}
                }
            }
            drop(stdin);
        }
    };
    // Program → client.
    let relaying = async {
        let mut out = vec![0u8; 64 * 1024];
        let mut err = vec![0u8; 16 * 1024];
        let (mut out_open, mut err_open, mut cap_open) = (true, true, true);
        while out_open || err_open {
            tokio::select! {
                // The feeder ends without a message when the client is done.
                over = cap_rx.recv(), if cap_open => match over {
                    Some(()) => break,
                    None => cap_open = false,
                },
                n = stdout.read(&mut out), if out_open => match n {
                    Ok(0) | Err(_) => out_open = false,
                    Ok(n) => {
                        conn.touch();
                        if tx.data_bytes(Bytes::copy_from_slice(&out[..n])).await.is_err() {
                            break;
                        }
                    }
                },
                n = stderr.read(&mut err), if err_open => match n {
                    Ok(0) | Err(_) => err_open = false,
                    Ok(n) => {
                        let _ = tx.extended_data_bytes(1, Bytes::copy_from_slice(&err[..n])).await;
                    }
                },
            }
        }
    };
    let feed = tokio::spawn(feeding);
    relaying.await;
    let status = if !over_cap.load(Ordering::Relaxed) {
        let status = child.wait().await.ok().and_then(|s| s.code()).unwrap_or(1) as u32;
        feed.abort();
        status
    } else {
        feed.abort();
        if let Some(pid) = child
            .id()
            .and_then(|p| rustix::process::Pid::from_raw(p as i32))
        {
            let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
        }
        let _ = child.kill().await;
        // Once every process of the group is gone their output closes: only
        // then is the re-scan final.
        let _ = tokio::time::timeout(std::time::Duration::from_secs(10), async {
            let mut sink = vec![0u8; 16 * 1024];
            while matches!(stdout.read(&mut sink).await, Ok(n) if n > 0) {}
        })
        .await;
        let _ = tx
            .extended_data_bytes(
                1,
                Bytes::from(format!("{name}: {}\n", crate::quota::QUOTA_EXCEEDED)),
            )
            .await;
        1
    };
    conn.end_transfer(tid);
    // The target re-scanned: its real change is settled.
    let after = match ctx.fs.resolve(&rv, crate::vfs::Follow::All).await {
        Ok(t) => t.usage().await.unwrap_or((0, 0)),
        Err(_) => (0, 0),
    };
    quota
        .release(&QuotaDomain::User, after.0 - before.0, after.1 - before.1)
        .await;
    Ok(status)
}

/// The uid/gid the program runs with: the user's when the edge runs as
/// root (`owner`), else the edge's own.
fn child_ids(owner: Option<(u32, u32)>) -> (u32, u32) {
    owner.unwrap_or_else(|| {
        (
            rustix::process::geteuid().as_raw(),
            rustix::process::getegid().as_raw(),
        )
    })
}

/// Refuses what must not start: a program running as root (uid or gid 0),
/// or any of them on a kernel that cannot sandbox it.
fn refuse_unsafe(name: &str, uid: u32, gid: u32) -> Result<(), String> {
    if let Some(reason) = sandbox::unavailable() {
        return Err(format!(
            "{name}: refused: this server cannot run it in a sandbox ({reason})"
        ));
    }
    if uid == 0 || gid == 0 {
        return Err(format!(
            "{name}: refused: it would run as root (uid {uid}, gid {gid}); the account needs a uid and gid other than 0"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_string).collect()
    }

    #[test]
    fn rsync_server_arguments() {
        let ok = |s: &str| parse_rsync(&words(s)).unwrap();
        let up = ok("--server -vlogDtpre.iLsfxCIvu . /dst/");
        assert_eq!(up.target, "/dst/");
        assert_eq!(up.args, words("--server -vlogDtpre.iLsfxCIvu ."));
        ok("--server --sender -vlogDtpre.iLsfxCIvu . /src/");
        ok("--server -vlogDtpr --delete --partial --timeout=30 . dst");
        let bad = |s: &str| parse_rsync(&words(s)).unwrap_err();
        assert!(bad("-vlogDtpr . /dst").contains("server side"));
        assert!(bad("--server --rsh=sh . /dst").contains("not allowed"));
        assert!(bad("--server -e sh . /dst").contains("not allowed"));
        assert!(bad("--server -vlogDtpre.iLs --temp-dir=/tmp . /dst").contains("not allowed"));
        assert!(bad("--server --files-from=/etc/passwd . /dst").contains("not allowed"));
        assert!(bad("--server --rsync-path=/bin/sh . /dst").contains("not allowed"));
        assert!(bad("--server -vlogDtpre.iLs . /a /b").contains("exactly one"));
        assert!(bad("--server -vlogDtpre.iLs . --delete").contains("invalid path"));
        assert!(bad("--server -vlogDtpr /dst").contains("missing"));
        assert!(bad("--server -M--rsh=x . /dst").contains("not allowed"));
        assert!(bad("--server --timeout=1;x . /dst").contains("not allowed"));
    }

    #[test]
    fn git_arguments() {
        let c = parse_git("git-upload-pack", &words("/repo.git")).unwrap();
        assert_eq!(c.target, "/repo.git");
        assert!(parse_git("git-upload-pack", &words("--upload-pack=x /r")).is_err());
        assert!(parse_git("git-upload-pack", &words("-c")).is_err());
        assert!(parse_git("git-receive-pack", &[]).is_err());
    }
}
