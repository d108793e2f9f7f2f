//! `ferry-edge portable`: one directory, one user, no control plane, driven
//! with the real sftp client.

use std::io::BufRead;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use ferry_tests::*;

/// Starts portable mode on a free port; returns the process, its stdout
/// lines so far (read until the "Sharing" line, and the password line when
/// generated) and its SFTP port (from its address file, written before the
/// "Sharing" line).
fn start(dir: &Path, args: &[&str], generated: bool) -> (std::process::Child, Vec<String>, u16) {
    let addr_file = dir.join("portable.addrs");
    let mut child = Command::new(bin("ferry-edge"))
        .arg("portable")
        .args(args)
        .args(["--sftp-bind", ANY_PORT])
        .arg("--addr-file")
        .arg(&addr_file)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut reader = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut lines = Vec::new();
    let wanted = if generated { 2 } else { 1 };
    while lines.len() < wanted {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap() == 0 {
            break;
        }
        lines.push(line.trim().to_string());
    }
    let text = std::fs::read_to_string(&addr_file)
        .unwrap_or_else(|e| panic!("{}: {e}; stdout: {lines:?}", addr_file.display()));
    let bound = BoundAddrs::parse(&text).unwrap();
    assert_eq!(bound.all("grpc").len(), 1, "the policy source: {text}");
    (child, lines, bound.port("sftp"))
}

#[test]
fn portable_shares_a_directory_with_generated_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let share = dir.path().join("share");
    std::fs::create_dir_all(&share).unwrap();
    std::fs::write(share.join("hello.txt"), b"hello\n").unwrap();
    let (mut child, lines, port) =
        start(dir.path(), &["--directory", share.to_str().unwrap()], true);
    let password = lines
        .iter()
        .find_map(|l| l.split("password: ").nth(1))
        .unwrap_or_else(|| panic!("no generated password in {lines:?}"))
        .to_string();
    assert!(
        lines[0].contains("Sharing") && lines[0].contains("user@"),
        "{lines:?}"
    );
    assert!(wait_for(Duration::from_secs(20), || ssh_ready(port).then_some(())).is_some());
    let (ok, out) = sftp1(port, "user", &pw(&password), "ls");
    assert!(ok && out.contains("hello.txt"), "{out}");
    let up = dir.path().join("up.bin");
    random_file(&up, 100_000);
    let (ok, out) = sftp1(
        port,
        "user",
        &pw(&password),
        &format!("put {} up.bin", up.display()),
    );
    assert!(ok, "{out}");
    assert_eq!(sha256_file(&share.join("up.bin")), sha256_file(&up));
    refused_login(port, "user", &pw("not-the-password"));
    // Paths stay inside the shared directory: `../../etc/passwd` is
    // `/etc/passwd` of the share, which does not exist.
    let got = dir.path().join("got-passwd");
    let (ok, out) = sftp1(
        port,
        "user",
        &pw(&password),
        &format!("get ../../etc/passwd {}", got.display()),
    );
    assert!(!ok && out.contains("not found"), "{out}");
    assert!(!got.exists(), "nothing was downloaded");
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let status = child.wait().unwrap();
    assert!(status.success(), "exits cleanly on SIGTERM: {status:?}");
}

#[test]
fn portable_with_a_key_and_read_only_permissions() {
    let dir = tempfile::tempdir().unwrap();
    let share = dir.path().join("share");
    std::fs::create_dir_all(&share).unwrap();
    std::fs::write(share.join("doc.txt"), b"read me\n").unwrap();
    let key = dir.path().join("key");
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&key)
        .status()
        .unwrap();
    assert!(status.success());
    let public = format!("{}.pub", key.display());
    let (mut child, lines, port) = start(
        dir.path(),
        &[
            "--directory",
            share.to_str().unwrap(),
            "--username",
            "reader",
            "--public-key",
            &public,
            "--permissions",
            "list,download",
        ],
        false,
    );
    assert!(!lines.iter().any(|l| l.contains("password:")), "{lines:?}");
    assert!(wait_for(Duration::from_secs(20), || ssh_ready(port).then_some(())).is_some());
    let cred = Cred::Key(key.clone());
    let fetched = dir.path().join("doc.txt");
    let (ok, out) = sftp1(
        port,
        "reader",
        &cred,
        &format!("get doc.txt {}", fetched.display()),
    );
    assert!(ok, "{out}");
    assert_eq!(std::fs::read(&fetched).unwrap(), b"read me\n");
    let (ok, _) = sftp1(
        port,
        "reader",
        &cred,
        &format!("put {} new.txt", fetched.display()),
    );
    assert!(!ok, "uploads are not permitted");
    assert!(!share.join("new.txt").exists());
    // No password login: the server offers only public keys.
    let out = refused_login(port, "reader", &pw("anything"));
    assert!(out.contains("Permission denied (publickey)"), "{out}");
    let _ = child.kill();
    let _ = child.wait();
}
