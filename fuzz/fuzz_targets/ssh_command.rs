//! SSH `exec` command lines: `ferry_dataplane::commands::parse` (POSIX
//! quoting, no shell) and what it hands on, the scp argument parser and the
//! rsync/git allow lists of `syscmd`. Whatever the line, no remote-shell,
//! file-list or daemon option of rsync gets through, a system command's
//! target is never an option, and quoting the parsed words again parses the
//! same (what a client meant is what runs).
#![no_main]

use ferry_dataplane::commands::{Command, EnabledCommands, MAX_COMMAND_LEN, parse};
use libfuzzer_sys::fuzz_target;

/// rsync options that run programs, read or write files of their own, or
/// change what the server is: never allowed on an edge.
const NEVER: &[&str] = &[
    "--rsh",
    "--rsync-path",
    "--files-from",
    "--include-from",
    "--exclude-from",
    "--filter",
    "--log-file",
    "--temp-dir",
    "--backup-dir",
    "--compare-dest",
    "--copy-dest",
    "--link-dest",
    "--partial-dir",
    "--write-batch",
    "--read-batch",
    "--only-write-batch",
    "--config",
    "--daemon",
    "--password-file",
    "--chown",
    "--usermap",
    "--groupmap",
    "--copy-links",
    "--copy-unsafe-links",
    "--keep-dirlinks",
    "--specials",
    "--devices",
    "--super",
];

fn check(command: &Command) {
    match command {
        Command::System(c) => {
            assert!(
                !c.target.is_empty() && !c.target.starts_with('-'),
                "{command:?}"
            );
            match c.program {
                "rsync" => {
                    assert_eq!(c.args.first().map(String::as_str), Some("--server"));
                    assert_eq!(c.args.last().map(String::as_str), Some("."));
                    for a in &c.args[..c.args.len() - 1] {
                        assert!(a.starts_with('-'), "rsync operand {a:?} before \".\"");
                        let name = a.split('=').next().unwrap_or(a);
                        assert!(!NEVER.contains(&name), "rsync option {a:?} allowed");
                    }
                }
                "git-receive-pack" | "git-upload-pack" | "git-upload-archive" => {
                    assert!(c.args.is_empty(), "{command:?}");
                }
                other => panic!("unexpected program {other:?}"),
            }
        }
        Command::Scp(a) => {
            assert!(!a.paths.is_empty());
            assert!(!a.sink || a.paths.len() == 1, "{command:?}");
        }
        Command::Hash { path: Some(p), .. } => assert_ne!(p, "-"),
        _ => {}
    }
}

fuzz_target!(|data: &[u8]| {
    let command = parse(data);
    check(&command);
    let _ = command.name();
    let filtered = EnabledCommands::default().filter(parse(data));
    check(&filtered);

    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Some(words) = shlex::split(text) else {
        return;
    };
    let Ok(joined) = shlex::try_join(words.iter().map(String::as_str)) else {
        return;
    };
    if joined.len() <= MAX_COMMAND_LEN && data.len() <= MAX_COMMAND_LEN {
        assert_eq!(
            parse(joined.as_bytes()),
            command,
            "{text:?} quoted again as {joined:?}"
        );
    }
});
