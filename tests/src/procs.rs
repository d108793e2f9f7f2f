//! Starting the processes a test needs: Ferry's own on port 0, waiting for
//! the addresses they report in `--addr-file`, and outside programs on ports
//! claimed in advance, started again when one was taken meanwhile. Every
//! process is killed when its [`Proc`] is dropped.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::{ANY_PORT, START_TIMEOUT, addr, bin, claim_port, wait_for};

/// A child process killed when dropped; its stderr goes to a log file.
pub struct Proc {
    child: Child,
    pub log: PathBuf,
}

impl Proc {
    pub fn spawn(mut cmd: Command, log: PathBuf) -> Result<Self> {
        let err = std::fs::File::create(&log)?;
        let out = err.try_clone()?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .with_context(|| format!("cannot start {cmd:?}"))?;
        Ok(Self { child, log })
    }

    /// The process id (for `/proc/<pid>/…`).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits for the process to exit on its own.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// The exit status once the process has exited.
    pub fn exit_status(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Waits until the process has written `addr_file` (once every listener
    /// is bound); fails as soon as it exits instead, with its log.
    pub fn wait_bound(&mut self, addr_file: &Path) -> Result<BoundAddrs> {
        let outcome = wait_for(START_TIMEOUT, || {
            if let Ok(text) = std::fs::read_to_string(addr_file) {
                return Some(BoundAddrs::parse(&text));
            }
            self.exit_status()
                .map(|status| Err(anyhow::anyhow!("exited with {status}")))
        });
        let what = || format!("{} ({})", self.log.display(), addr_file.display());
        match outcome {
            Some(Ok(bound)) => Ok(bound),
            Some(Err(e)) => Err(e).with_context(|| format!("{}:\n{}", what(), self.log_text())),
            None => bail!(
                "{} reported no address within {START_TIMEOUT:?}:\n{}",
                what(),
                self.log_text()
            ),
        }
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM (a graceful stop).
    pub fn terminate(&self) {
        self.signal("TERM");
    }

    /// Sends a signal by name (`HUP`, `TERM`, …).
    pub fn signal(&self, name: &str) {
        let _ = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The listeners a process reported in its `--addr-file`: one
/// `KIND ADDRESS` line each (`sftp 127.0.0.1:40123`, `http …`, `grpc …`,
/// `telemetry …`).
#[derive(Debug, Clone, Default)]
pub struct BoundAddrs(Vec<(String, SocketAddr)>);

impl BoundAddrs {
    pub fn parse(text: &str) -> Result<Self> {
        let mut out = Vec::new();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let (kind, addr) = line
                .split_once(' ')
                .with_context(|| format!("address file line {line:?}"))?;
            let addr = addr
                .parse()
                .with_context(|| format!("address file line {line:?}"))?;
            out.push((kind.to_string(), addr));
        }
        Ok(Self(out))
    }

    /// Every listener of `kind`, in the process's order.
    pub fn all(&self, kind: &str) -> Vec<SocketAddr> {
        self.0
            .iter()
            .filter(|(k, _)| k == kind)
            .map(|(_, a)| *a)
            .collect()
    }

    /// The (first) listener of `kind`; panics when there is none.
    pub fn addr(&self, kind: &str) -> SocketAddr {
        self.all(kind)
            .first()
            .copied()
            .unwrap_or_else(|| panic!("no {kind} listener in {self:?}"))
    }

    pub fn port(&self, kind: &str) -> u16 {
        self.addr(kind).port()
    }

    pub fn ports(&self, kind: &str) -> Vec<u16> {
        self.all(kind).iter().map(SocketAddr::port).collect()
    }

    /// The REST base URL (`http://ADDRESS`).
    pub fn base(&self) -> String {
        format!("http://{}", self.addr("http"))
    }
}

/// `ferry serve` on `data` with every listener on a free loopback port and
/// no edge token from the environment: add what the test needs, then start
/// it with [`start_bound`].
pub fn ferry_serve(data: &Path) -> Command {
    let mut cmd = Command::new(bin("ferry"));
    cmd.arg("serve")
        .arg("--data-dir")
        .arg(data)
        .args(["--http-bind", ANY_PORT, "--grpc-bind", ANY_PORT])
        .args(["--sftp-bind", ANY_PORT])
        .env_remove("FERRY_EDGE_TOKEN");
    cmd
}

/// `ferry controlplane` on `data` with both listeners on free loopback
/// ports.
pub fn ferry_controlplane(data: &Path) -> Command {
    let mut cmd = Command::new(bin("ferry"));
    cmd.arg("controlplane").arg("--data-dir").arg(data).args([
        "--http-bind",
        ANY_PORT,
        "--grpc-bind",
        ANY_PORT,
    ]);
    cmd
}

/// `ferry-edge` attached to the control plane at `grpc`, with its SFTP and
/// telemetry listeners on free loopback ports.
pub fn ferry_edge(grpc: SocketAddr) -> Command {
    let mut cmd = Command::new(bin("ferry-edge"));
    cmd.arg("--control-plane")
        .arg(format!("http://{grpc}"))
        .args(["--sftp-bind", ANY_PORT, "--telemetry-bind", ANY_PORT]);
    cmd
}

/// Starts `cmd` (`ferry` or `ferry-edge`) with `--addr-file DIR/NAME.addrs`,
/// its output in `DIR/NAME.log`, and returns once it has reported its bound
/// listeners (an error with its log if it exits first).
pub fn start_bound(mut cmd: Command, dir: &Path, name: &str) -> Result<(Proc, BoundAddrs)> {
    let addr_file = dir.join(format!("{name}.addrs"));
    cmd.arg("--addr-file").arg(&addr_file);
    let mut proc = Proc::spawn(cmd, dir.join(format!("{name}.log")))?;
    let bound = proc.wait_bound(&addr_file)?;
    Ok((proc, bound))
}

/// How many times a program told its ports in advance is started before a
/// bind failure counts as an error.
const CLAIMED_PORT_ATTEMPTS: usize = 4;

/// True when a log says a program could not bind its port (HAProxy, sshd,
/// Ferry, Python and Node all print the errno text or its name).
fn says_address_in_use(log: &str) -> bool {
    log.contains("Address already in use") || log.contains("EADDRINUSE")
}

/// Runs `start` with fresh ports from [`claim_port`] until it does not fail
/// for a port someone else took meanwhile (its error, with the program's
/// log, says "Address already in use").
pub fn retry_on_port_clash<T>(mut start: impl FnMut() -> Result<T>) -> Result<T> {
    let mut attempt = 1;
    loop {
        match start() {
            Err(e) if attempt < CLAIMED_PORT_ATTEMPTS && says_address_in_use(&format!("{e:#}")) => {
                eprintln!(
                    "a claimed port was taken meanwhile, starting again (attempt {attempt}): {e:#}"
                );
                attempt += 1;
            }
            other => return other,
        }
    }
}

/// Starts an outside program that must be told its ports in advance: `n`
/// ports of this test's range go to `command`, which returns what to run
/// (output in `DIR/NAME.log`); ready once every port accepts connections. A
/// start whose program exits reporting a bind failure is made again on new
/// ports.
pub fn start_on_claimed_ports(
    n: usize,
    dir: &Path,
    name: &str,
    mut command: impl FnMut(&[u16]) -> Result<Command>,
) -> Result<(Proc, Vec<u16>)> {
    retry_on_port_clash(|| {
        let ports: Vec<u16> = (0..n).map(|_| claim_port()).collect();
        let mut proc = Proc::spawn(command(&ports)?, dir.join(format!("{name}.log")))?;
        let listening = wait_for(START_TIMEOUT, || {
            if let Some(status) = proc.exit_status() {
                return Some(Err(status));
            }
            ports
                .iter()
                .all(|p| TcpStream::connect(addr(*p)).is_ok())
                .then_some(Ok(()))
        });
        match listening {
            Some(Ok(())) => Ok((proc, ports)),
            Some(Err(status)) => bail!(
                "{name} on ports {ports:?} exited with {status}:\n{}",
                proc.log_text()
            ),
            None => bail!(
                "{name} did not listen on {ports:?} within {START_TIMEOUT:?}:\n{}",
                proc.log_text()
            ),
        }
    })
}
