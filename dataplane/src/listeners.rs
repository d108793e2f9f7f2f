//! The addresses a process's listeners actually bound. A flag's port 0 asks
//! the kernel for any free port, so whoever starts the process (an operator
//! running several edges on one host, the end-to-end tests) learns the real
//! ports from one log line per listener and, with `--addr-file`, from a file
//! written once every listener of the process is bound.
//!
//! [`FdReserve`] keeps one file descriptor spare for an accept loop, so a
//! process out of descriptors still takes each waiting client off the
//! backlog (and closes it) instead of spinning on `EMFILE`.
// The addr file and /dev/null are the operator's, not user storage.
#![allow(clippy::disallowed_methods)]

use std::fmt;
use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;

use anyhow::Context;

/// What a listener serves; its name starts the listener's line in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenerKind {
    /// SSH/SFTP/SCP for clients.
    Sftp,
    /// The control plane's REST API and `/healthz`.
    Http,
    /// The gRPC service edges attach to (portable mode's in-process policy
    /// source too).
    Grpc,
    /// An edge's `/healthz`, `/readyz` and `/metrics`.
    Telemetry,
}

impl ListenerKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sftp => "sftp",
            Self::Http => "http",
            Self::Grpc => "grpc",
            Self::Telemetry => "telemetry",
        }
    }
}

impl fmt::Display for ListenerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Every listener of a process with the address it bound, in start order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BoundAddrs(Vec<(ListenerKind, SocketAddr)>);

impl BoundAddrs {
    pub fn push(&mut self, kind: ListenerKind, addr: SocketAddr) {
        self.0.push((kind, addr));
    }

    pub fn extend(&mut self, other: BoundAddrs) {
        self.0.extend(other.0);
    }

    pub fn iter(&self) -> impl Iterator<Item = (ListenerKind, SocketAddr)> + '_ {
        self.0.iter().copied()
    }

    /// The file's text: one `KIND ADDRESS` line per listener
    /// (`sftp 127.0.0.1:40123`).
    pub fn render(&self) -> String {
        self.0
            .iter()
            .map(|(kind, addr)| format!("{kind} {addr}\n"))
            .collect()
    }

    /// Writes the file atomically (a temporary file beside it, then a
    /// rename), so a reader that sees the file sees every line.
    pub fn write(&self, path: &Path) -> anyhow::Result<()> {
        let name = path
            .file_name()
            .with_context(|| format!("--addr-file {}: not a file name", path.display()))?;
        let mut tmp_name = std::ffi::OsString::from(".");
        tmp_name.push(name);
        tmp_name.push(format!(".{}.tmp", std::process::id()));
        let tmp = path.with_file_name(tmp_name);
        let written = std::fs::File::create(&tmp).and_then(|mut f| {
            f.write_all(self.render().as_bytes())?;
            f.sync_all()
        });
        if let Err(e) = written.and_then(|()| std::fs::rename(&tmp, path)) {
            let _ = std::fs::remove_file(&tmp);
            return Err(e).with_context(|| format!("--addr-file: cannot write {}", path.display()));
        }
        Ok(())
    }
}

/// Removes an address file left by an earlier run, so that the file exists
/// only once this run's listeners are bound.
pub fn remove_stale(path: &Path) -> anyhow::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("--addr-file: cannot remove {}", path.display()))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_has_one_line_per_listener_and_replaces_an_old_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("addrs");
        std::fs::write(&path, "sftp 127.0.0.1:1\n").unwrap();
        remove_stale(&path).unwrap();
        assert!(!path.exists());
        remove_stale(&path).unwrap();
        let mut addrs = BoundAddrs::default();
        addrs.push(ListenerKind::Sftp, "127.0.0.1:40123".parse().unwrap());
        addrs.push(ListenerKind::Sftp, "[::1]:40124".parse().unwrap());
        let mut more = BoundAddrs::default();
        more.push(ListenerKind::Http, "127.0.0.1:8080".parse().unwrap());
        more.push(ListenerKind::Grpc, "127.0.0.1:50051".parse().unwrap());
        more.push(ListenerKind::Telemetry, "127.0.0.1:10000".parse().unwrap());
        addrs.extend(more);
        addrs.write(&path).unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "sftp 127.0.0.1:40123\nsftp [::1]:40124\nhttp 127.0.0.1:8080\n\
             grpc 127.0.0.1:50051\ntelemetry 127.0.0.1:10000\n"
        );
        // Nothing but the file is left in the directory.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}

/// One spare file descriptor (an open `/dev/null`) for an accept loop.
#[derive(Debug)]
pub struct FdReserve(Option<std::fs::File>);

impl FdReserve {
    pub fn take() -> Self {
        Self(std::fs::File::open("/dev/null").ok())
    }

    /// Takes the spare again if it was used.
    pub fn refill(&mut self) {
        if self.0.is_none() {
            self.0 = std::fs::File::open("/dev/null").ok();
        }
    }

    /// After `accept` failed with `e`: when the process is out of
    /// descriptors, frees the spare, accepts and drops the waiting client,
    /// and returns its address (None if `e` is another error). The caller
    /// logs it and calls [`FdReserve::refill`].
    pub async fn shed(
        &mut self,
        e: &std::io::Error,
        listener: &tokio::net::TcpListener,
    ) -> Option<Option<SocketAddr>> {
        if !out_of_descriptors(e) {
            return None;
        }
        self.0 = None;
        let peer = listener.accept().await.ok().map(|(_, p)| p);
        self.refill();
        Some(peer)
    }
}

/// True for `EMFILE`/`ENFILE`.
pub fn out_of_descriptors(e: &std::io::Error) -> bool {
    matches!(
        rustix::io::Errno::from_io_error(e),
        Some(rustix::io::Errno::MFILE | rustix::io::Errno::NFILE)
    )
}
