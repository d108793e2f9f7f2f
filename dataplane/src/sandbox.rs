//! The sandbox rsync and git run in. The edge never starts them directly: it
//! starts its own executable with [`SENTINEL`] as first argument, as the
//! user's uid/gid (std clears the supplementary groups when dropping from
//! root); that launcher, first thing in `main` of both binaries, confines
//! itself with Landlock (which also sets `no_new_privs`) and then `exec`s the
//! program, which inherits the confinement. The policy: execute only the
//! program's own binaries and the dynamic loader (no shell, nothing in the
//! home), read `/usr`, `/lib*` and the one `/etc` file the loader needs,
//! `/dev/null`, and the user's home as the only writable tree, where no
//! FIFO, socket or device node can be made; no TCP, no signals or abstract
//! sockets outside the sandbox where the kernel has those controls. For git
//! the launcher also refuses repositories whose config can name a program
//! (hooks and the other single keys are overridden on the command line), and
//! runs it without system or global config. The edge refuses to start any of
//! this when the program would run with uid or gid 0, or when the kernel
//! cannot enforce Landlock.
// The launcher reads system files (the program's ELF header, its directories) to
// build the Landlock policy, inside the sandboxed child or before it starts;
// user storage it reaches is confined by the kernel, not by these calls.
#![allow(clippy::disallowed_methods)]

use std::convert::Infallible;
use std::ffi::{OsStr, OsString};
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::OnceLock;

use landlock::{
    ABI, Access, AccessFs, AccessNet, BitFlags, CompatLevel, Compatible, PathBeneath, PathFd,
    Ruleset, RulesetAttr, RulesetCreatedAttr, RulesetStatus, Scope,
};

mod git;

/// First argument that turns either binary into the launcher.
pub const SENTINEL: &str = "__ferry-sandbox-exec";

/// How the edge starts the launcher: its own executable through the magic
/// link, which needs no search permission on the binary's directories for
/// the user's uid and still works when the file was replaced by an upgrade.
const SELF_EXE: &str = "/proc/self/exe";

/// Where programs are looked up, in order (the PATH the programs get too).
const PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// The newest Landlock ABI this policy was tested on; rights of later ABIs
/// are not asked for until they are. ABI v1's filesystem rights are required,
/// the rest (refer, truncate, ioctl on devices, TCP, scopes) taken where the
/// kernel has them.
const TESTED_ABI: ABI = ABI::V7;

/// Set (to anything) to behave as on a kernel without Landlock: rsync and git
/// are then refused. For tests of that refusal.
const UNAVAILABLE_ENV: &str = "FERRY_SANDBOX_UNAVAILABLE";

/// The programs the launcher runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Program {
    Rsync,
    GitReceivePack,
    GitUploadPack,
    GitUploadArchive,
}

impl Program {
    const ALL: [Program; 4] = [
        Program::Rsync,
        Program::GitReceivePack,
        Program::GitUploadPack,
        Program::GitUploadArchive,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Program::Rsync => "rsync",
            Program::GitReceivePack => "git-receive-pack",
            Program::GitUploadPack => "git-upload-pack",
            Program::GitUploadArchive => "git-upload-archive",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.name() == name)
    }

    fn is_git(self) -> bool {
        self != Program::Rsync
    }
}

/// Why this kernel cannot sandbox, or None when it can (checked once, by
/// creating a ruleset with ABI v1's filesystem rights, without enforcing it).
pub fn unavailable() -> Option<&'static str> {
    static PROBE: OnceLock<Option<String>> = OnceLock::new();
    PROBE
        .get_or_init(|| {
            if std::env::var_os(UNAVAILABLE_ENV).is_some() {
                return Some(format!("Landlock turned off by {UNAVAILABLE_ENV}"));
            }
            Ruleset::default()
                .set_compatibility(CompatLevel::HardRequirement)
                .handle_access(AccessFs::from_all(ABI::V1))
                .and_then(|r| r.create())
                .err()
                .map(|e| format!("Landlock is not available on this kernel: {e}"))
        })
        .as_deref()
}

/// Logs a warning at start when commands that need the sandbox are enabled
/// on a kernel that cannot provide it.
pub fn warn_if_unavailable(commands: &crate::commands::EnabledCommands) {
    let needing: Vec<&str> = Program::ALL
        .iter()
        .map(|p| p.name())
        .filter(|n| commands.allows(n))
        .collect();
    if needing.is_empty() {
        return;
    }
    if let Some(reason) = unavailable() {
        tracing::warn!(
            commands = needing.join(","),
            reason,
            "enabled_ssh_commands lists commands that need a sandbox this kernel cannot provide: they will be refused"
        );
    }
}

/// The launcher command for `program` with `args`, confined to `home`. The
/// caller adds stdio, uid/gid and process group; the environment is empty
/// (the launcher sets the program's).
pub fn command(
    program: Program,
    home: &Path,
    args: impl IntoIterator<Item = OsString>,
) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(SELF_EXE);
    command
        .arg(SENTINEL)
        .arg(home)
        .arg(program.name())
        .args(args)
        .env_clear()
        .env("LANG", "C")
        .current_dir(home);
    command
}

/// Runs the launcher when this process was started as one: call first thing
/// in `main`, before any thread or runtime exists (Landlock confines the
/// calling thread). Returns None for a normal start; on success it never
/// returns (the program replaced this process), on failure it prints why on
/// stderr, which the edge relays to the client, and returns the exit status.
pub fn launch_if_requested() -> Option<ExitCode> {
    let mut args = std::env::args_os().skip(1);
    if args.next()? != SENTINEL {
        return None;
    }
    let err = match launch(args) {
        Ok(never) => match never {},
        Err(e) => e,
    };
    eprintln!("{err}");
    Some(ExitCode::FAILURE)
}

fn launch(mut args: impl Iterator<Item = OsString>) -> Result<Infallible, String> {
    let (Some(home), Some(name)) = (args.next(), args.next()) else {
        return Err("sandbox: missing home or program".into());
    };
    let program = name
        .to_str()
        .and_then(Program::from_name)
        .ok_or_else(|| format!("sandbox: unknown program {name:?}"))?;
    let fail = |what: String| format!("{}: {what}", program.name());
    let args: Vec<OsString> = args.collect();
    let home = PathBuf::from(home);
    // The edge refuses this already; the launcher holds the line too.
    use rustix::process::{getegid, geteuid, getgid, getuid};
    if [getuid().as_raw(), geteuid().as_raw()].contains(&0)
        || [getgid().as_raw(), getegid().as_raw()].contains(&0)
    {
        return Err(fail("refused: it would run as root".into()));
    }
    let binaries = Binaries::find(program).map_err(&fail)?;
    confine(&binaries, &home).map_err(|e| fail(format!("cannot run in a sandbox: {e}")))?;
    let mut exec = std::process::Command::new(&binaries.program);
    exec.args(&args)
        .env_clear()
        .env("PATH", PATH)
        .env("LANG", "C");
    if program.is_git() {
        let repo = args
            .last()
            .ok_or_else(|| fail("missing the repository path".into()))?;
        git::check_repository(&binaries.git, Path::new(repo)).map_err(&fail)?;
        exec.envs(git::environment());
    }
    Err(fail(format!("cannot start: {}", exec.exec())))
}

/// The executables a program needs: the only files the sandbox executes.
#[derive(Debug)]
struct Binaries {
    program: PathBuf,
    /// `git` itself and its exec path (`…/git-core`), for git's programs.
    git: PathBuf,
    git_core: Option<PathBuf>,
    /// The ELF interpreter the program names (the dynamic loader).
    loader: Option<PathBuf>,
}

impl Binaries {
    fn find(program: Program) -> Result<Self, String> {
        let program_path = lookup(program.name())?;
        let (git, git_core) = if program.is_git() {
            // git's helpers live in the exec path of the same installation:
            // /usr/bin/git → /usr/lib/git-core, /usr/local/bin/git →
            // /usr/local/libexec/git-core.
            let git = lookup("git")?;
            let real =
                std::fs::canonicalize(&git).map_err(|e| format!("{}: {e}", git.display()))?;
            let prefix = real
                .parent()
                .and_then(Path::parent)
                .unwrap_or(Path::new("/"));
            let core = ["libexec/git-core", "lib/git-core"]
                .iter()
                .map(|d| prefix.join(d))
                .find(|d| d.is_dir());
            (git, core)
        } else {
            (PathBuf::new(), None)
        };
        let loader = elf_interpreter(&program_path)
            .map_err(|e| format!("{}: {e}", program_path.display()))?;
        Ok(Self {
            program: program_path,
            git,
            git_core,
            loader,
        })
    }
}

fn lookup(name: &str) -> Result<PathBuf, String> {
    PATH.split(':')
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
        .ok_or_else(|| format!("{name} is not installed on this server"))
}

/// Trees whose files are read: programs, libraries and the data they ship
/// (listing them is not needed).
const READ_TREES: &[&str] = &["/usr", "/lib", "/lib64", "/lib32", "/libx32"];
/// Single files read, each for a reason: the loader's cache (else it probes
/// every library directory), and the CPU count git sizes its threads by.
/// Not passwd, group or nsswitch.conf: without them rsync sends numeric ids
/// and git does without names, and a link followed by `rsync -L` cannot
/// show them.
const READ_FILES: &[&str] = &["/etc/ld.so.cache", "/sys/devices/system/cpu/online"];

/// Applies the Landlock policy to this (single-threaded) process.
fn confine(bins: &Binaries, home: &Path) -> Result<(), String> {
    let abi = TESTED_ABI;
    let run = AccessFs::Execute | AccessFs::ReadFile;
    // The home: files and directories come and go, links stay links; no
    // execute, and no FIFO, socket or device node.
    let home_rights = AccessFs::ReadFile
        | AccessFs::ReadDir
        | AccessFs::WriteFile
        | AccessFs::RemoveFile
        | AccessFs::RemoveDir
        | AccessFs::MakeReg
        | AccessFs::MakeDir
        | AccessFs::MakeSym
        | AccessFs::Refer
        | AccessFs::Truncate;
    let mut rules: Vec<(PathBuf, BitFlags<AccessFs>, bool)> = vec![
        (bins.program.clone(), run, true),
        (
            "/dev/null".into(),
            AccessFs::ReadFile | AccessFs::WriteFile,
            true,
        ),
        // git and rsync draw the names of their temporary files from it.
        ("/dev/urandom".into(), AccessFs::ReadFile.into(), true),
        (home.to_path_buf(), home_rights, true),
    ];
    if let Some(loader) = &bins.loader {
        rules.push((loader.clone(), run, true));
    }
    if !bins.git.as_os_str().is_empty() {
        rules.push((bins.git.clone(), run, true));
    }
    if let Some(core) = &bins.git_core {
        rules.push((core.clone(), run, true));
    }
    let read_only = READ_TREES.iter().chain(READ_FILES);
    rules.extend(read_only.map(|p| (PathBuf::from(p), AccessFs::ReadFile.into(), false)));

    let mut ruleset = Ruleset::default()
        .set_compatibility(CompatLevel::HardRequirement)
        .handle_access(AccessFs::from_all(ABI::V1))
        .map_err(|e| e.to_string())?
        .set_compatibility(CompatLevel::BestEffort)
        .handle_access(AccessFs::from_all(abi))
        .and_then(|r| r.handle_access(AccessNet::from_all(abi)))
        .and_then(|r| r.scope(Scope::from_all(abi)))
        .and_then(|r| r.create())
        .map_err(|e| e.to_string())?;
    for (path, access, required) in rules {
        let fd = match PathFd::new(&path) {
            Ok(fd) => fd,
            Err(_) if !required => continue,
            Err(e) => return Err(e.to_string()),
        };
        ruleset = ruleset
            .add_rule(PathBeneath::new(fd, access))
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    let status = ruleset.restrict_self().map_err(|e| e.to_string())?;
    if status.ruleset == RulesetStatus::NotEnforced || !status.no_new_privs {
        return Err(format!(
            "Landlock is not enforced on this kernel ({:?})",
            status.landlock
        ));
    }
    Ok(())
}

/// The ELF interpreter (`PT_INTERP`) of an executable, when it names one.
fn elf_interpreter(path: &Path) -> std::io::Result<Option<PathBuf>> {
    use std::os::unix::ffi::OsStrExt;
    let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, "not an ELF executable");
    // Executables are a few MiB; their headers are at the start.
    let mut head = Vec::new();
    std::fs::File::open(path)?
        .take(1 << 20)
        .read_to_end(&mut head)?;
    if head.len() < 64 || &head[..4] != b"\x7fELF" {
        return Err(bad());
    }
    let wide = match head[4] {
        1 => false,
        2 => true,
        _ => return Err(bad()),
    };
    let little = head[5] == 1;
    let num = |at: usize, len: usize| -> Option<u64> {
        let b = head.get(at..at + len)?;
        let mut v = 0u64;
        for i in 0..len {
            let byte = if little { b[len - 1 - i] } else { b[i] };
            v = (v << 8) | u64::from(byte);
        }
        Some(v)
    };
    let (phoff, phentsize, phnum) = if wide {
        (num(0x20, 8), num(0x36, 2), num(0x38, 2))
    } else {
        (num(0x1c, 4), num(0x2a, 2), num(0x2c, 2))
    };
    let (phoff, phentsize, phnum) = match (phoff, phentsize, phnum) {
        (Some(a), Some(b), Some(c)) => (a, b, c),
        _ => return Err(bad()),
    };
    for i in 0..phnum {
        let at = usize::try_from(phoff + i * phentsize).map_err(|_| bad())?;
        if num(at, 4).ok_or_else(bad)? != 3 {
            continue; // not PT_INTERP
        }
        let (offset, size) = if wide {
            (num(at + 8, 8), num(at + 32, 8))
        } else {
            (num(at + 4, 4), num(at + 16, 4))
        };
        let (offset, size) = match (offset, size) {
            (Some(o), Some(s)) => (o as usize, s as usize),
            _ => return Err(bad()),
        };
        let name = head.get(offset..offset + size).ok_or_else(bad)?;
        let name = name.split(|b| *b == 0).next().unwrap_or_default();
        return Ok(Some(PathBuf::from(OsStr::from_bytes(name))));
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn program_names_round_trip() {
        for p in Program::ALL {
            assert_eq!(Program::from_name(p.name()), Some(p));
        }
        assert_eq!(Program::from_name("sh"), None);
    }

    #[test]
    fn finds_the_loader_of_a_dynamic_executable() {
        let Ok(rsync) = lookup("rsync") else {
            return; // not installed here: nothing to read
        };
        let loader = elf_interpreter(&rsync).unwrap().expect("dynamic");
        assert!(loader.to_string_lossy().contains("ld-"), "{loader:?}");
        assert!(elf_interpreter(Path::new("/etc/passwd")).is_err());
    }

    /// Names the home of the confined child [`policy_holds_in_a_confined_process`] starts.
    const CHILD_ENV: &str = "FERRY_SANDBOX_TEST_CHILD";

    #[test]
    fn policy_holds_in_a_confined_process() {
        if lookup("rsync").is_err() {
            return; // the policy is rsync's: nothing to confine without it
        }
        let home = tempfile::tempdir().unwrap();
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "sandbox::tests::confined_child", "--nocapture"])
            .env(CHILD_ENV, home.path())
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && said.contains("confined child done"),
            "{said}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Does something only as the child of the test above: confines its
    /// thread (and what it starts) with rsync's policy, then tries what the
    /// policy allows and forbids.
    #[test]
    fn confined_child() {
        use std::io::ErrorKind::PermissionDenied;
        use std::process::Command;
        let Some(home) = std::env::var_os(CHILD_ENV) else {
            return;
        };
        let home = PathBuf::from(home);
        let bins = Binaries::find(Program::Rsync).unwrap();
        confine(&bins, &home).unwrap();
        let denied = |r: std::io::Result<()>| matches!(r, Err(e) if e.kind() == PermissionDenied);

        // The program runs; no shell, and nothing copied into the home.
        let out = Command::new(&bins.program)
            .arg("--version")
            .output()
            .unwrap();
        assert!(out.status.success());
        assert!(denied(
            Command::new("/bin/sh")
                .args(["-c", "true"])
                .status()
                .map(drop)
        ));
        std::fs::copy(&bins.program, home.join("copy")).unwrap();
        std::fs::set_permissions(home.join("copy"), std::fs::Permissions::from_mode(0o755))
            .unwrap();
        assert!(denied(Command::new(home.join("copy")).status().map(drop)));

        // The home is the one writable tree: files, directories, links,
        // renames across directories; no FIFO.
        std::fs::write(home.join("f"), "x").unwrap();
        std::fs::create_dir(home.join("d")).unwrap();
        std::os::unix::fs::symlink("f", home.join("l")).unwrap();
        std::fs::rename(home.join("f"), home.join("d/f")).unwrap();
        std::fs::remove_dir_all(home.join("d")).unwrap();
        let fifo = rustix::fs::mknodat(
            rustix::fs::CWD,
            home.join("fifo"),
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o644),
            0,
        );
        assert_eq!(fifo, Err(rustix::io::Errno::ACCESS));
        let outside = std::env::temp_dir().join(format!("ferry-sandbox-{}", std::process::id()));
        assert!(denied(std::fs::write(&outside, "x")));

        // Reads: the loader's cache, not the rest of /etc, not /proc.
        assert!(std::fs::read("/etc/ld.so.cache").is_ok());
        assert!(denied(std::fs::read("/etc/passwd").map(drop)));
        assert!(denied(std::fs::read("/proc/self/environ").map(drop)));

        // No TCP (Landlock ABI 4 and later).
        assert!(denied(
            std::net::TcpStream::connect("127.0.0.1:1").map(drop)
        ));
        println!("confined child done");
    }

    #[test]
    fn this_kernel_can_sandbox() {
        // The machines Ferry is developed and tested on have Landlock.
        assert_eq!(unavailable(), None);
    }
}
