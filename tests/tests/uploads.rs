//! Upload modes (`FERRY_COMMON__UPLOAD_MODE`): atomic uploads never expose a
//! partial file, an interrupted one leaves nothing (mode 1) or a resumable
//! file (mode 2). Interruptions are made with paramiko, which can drop the
//! connection while a file is open for writing.

use std::path::Path;
use std::time::Duration;

use ferry_tests::*;

/// Opens `name` for writing through paramiko, writes `bytes` bytes, reports
/// whether the target already exists (it must not in atomic mode), then
/// drops the connection without closing the file.
const INTERRUPT: &str = r#"
import os, sys, time, paramiko
port, user, pw, name, size = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
home = sys.argv[6]
t = paramiko.Transport(("127.0.0.1", port))
t.connect(username=user, password=pw)
sftp = paramiko.SFTPClient.from_transport(t)
f = sftp.open(name, "wb")
f.write(os.urandom(size))
f.flush()
temps = [n for n in os.listdir(home) if n.startswith(".ferry-upload.")]
print("temp files while uploading:", len(temps))
print("target content while uploading:", open(os.path.join(home, name), "rb").read()[:3] if os.path.exists(os.path.join(home, name)) else "absent")
sys.stdout.flush()
t.sock.close()
"#;

/// Runs a paramiko `script` as user xena: argv is port, user, password,
/// then `extra`.
fn paramiko(t: &Topology, script: &str, extra: &[&str]) -> std::process::Output {
    std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(t.sftp_port().to_string())
        .args(["xena", "xena-pw"])
        .args(extra)
        .output()
        .expect("python3 with paramiko (installed by .ci/run)")
}

fn interrupt(t: &Topology, name: &str, size: usize, home: &Path) -> String {
    let out = paramiko(
        t,
        INTERRUPT,
        &[name, &size.to_string(), &home.display().to_string()],
    );
    assert!(out.status.success(), "{}", describe(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Leaves the first `kept` bytes of `src` as `resume.bin` in the home, then
/// `reput`s the whole file as xena and checks the result.
fn resume(t: &Topology, cred: &Cred, home: &Path, src: &Path, kept: usize) {
    let full = std::fs::read(src).unwrap();
    std::fs::write(home.join("resume.bin"), &full[..kept]).unwrap();
    let out = sftp_batch(
        t.sftp_port(),
        "xena",
        cred,
        &format!("reput {} resume.bin\n", src.display()),
        &[],
    );
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(sha256_file(&home.join("resume.bin")), sha256_file(src));
}

fn temp_files(home: &Path) -> Vec<String> {
    std::fs::read_dir(home)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".ferry-upload."))
        .collect()
}

fn serve_with_mode(mode: &str) -> Topology {
    Topology::serve_with(&[("FERRY_COMMON__UPLOAD_MODE".to_string(), mode.to_string())]).unwrap()
}

#[test]
fn atomic_uploads_never_expose_partial_files() {
    let t = serve_with_mode("1");
    let home = t.home("xena");
    t.api().add_user(user_json("xena", "xena-pw", &home));
    let cred = Cred::Password("xena-pw".into());
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("f.bin");
    random_file(&src, 5 * 1024 * 1024 + 11);

    let out = sftp_batch(
        t.sftp_port(),
        "xena",
        &cred,
        &format!("put {} f.bin\n", src.display()),
        &[],
    );
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(sha256_file(&home.join("f.bin")), sha256_file(&src));
    assert!(temp_files(&home).is_empty(), "no leftovers after success");

    // Interrupted new upload: never visible, and cleaned up.
    let report = interrupt(&t, "new.bin", 300_000, &home);
    assert!(report.contains("temp files while uploading: 1"), "{report}");
    assert!(
        report.contains("target content while uploading: absent"),
        "{report}"
    );
    let cleaned = wait_for(Duration::from_secs(15), || {
        temp_files(&home).is_empty().then_some(())
    });
    assert!(
        cleaned.is_some(),
        "temp file removed: {:?}",
        temp_files(&home)
    );
    assert!(!home.join("new.bin").exists());

    // Interrupted overwrite: the old content stays until a complete upload.
    std::fs::write(home.join("keep.txt"), b"old content").unwrap();
    let report = interrupt(&t, "keep.txt", 300_000, &home);
    assert!(
        report.contains("target content while uploading: b'old'"),
        "{report}"
    );
    let cleaned = wait_for(Duration::from_secs(15), || {
        temp_files(&home).is_empty().then_some(())
    });
    assert!(cleaned.is_some());
    assert_eq!(
        std::fs::read(home.join("keep.txt")).unwrap(),
        b"old content"
    );

    // Resume (reput) continues an existing file through the temporary name.
    resume(&t, &cred, &home, &src, 2_000_000);
    assert!(temp_files(&home).is_empty());
}

#[test]
fn atomic_resume_mode_keeps_interrupted_uploads() {
    let t = serve_with_mode("2");
    let home = t.home("xena");
    t.api().add_user(user_json("xena", "xena-pw", &home));
    let report = interrupt(&t, "part.bin", 300_000, &home);
    assert!(
        report.contains("target content while uploading: absent"),
        "{report}"
    );
    let kept = wait_for(Duration::from_secs(15), || {
        home.join("part.bin")
            .metadata()
            .ok()
            .filter(|m| m.len() == 300_000)
    });
    assert!(
        kept.is_some(),
        "the partial upload is kept under its name for resume"
    );
    assert!(temp_files(&home).is_empty());
}

#[test]
fn a_bad_upload_mode_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(bin("ferry"))
        .args([
            "serve",
            "--sftp-bind",
            "127.0.0.1:0",
            "--http-bind",
            "127.0.0.1:0",
            "--grpc-bind",
            "127.0.0.1:0",
        ])
        .arg("--data-dir")
        .arg(dir.path())
        .env("FERRY_COMMON__UPLOAD_MODE", "7")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("upload_mode must be 0, 1 or 2"),
        "{}",
        describe(&out)
    );
}

const APPEND_BELOW_SIZE: &str = r#"
import sys, paramiko
port, user, pw = int(sys.argv[1]), sys.argv[2], sys.argv[3]
t = paramiko.Transport(("127.0.0.1", port))
t.connect(username=user, password=pw)
sftp = paramiko.SFTPClient.from_transport(t)
f = sftp.open("log.txt", "a")
f.write(b"more")
f.flush()
f.seek(0)
try:
    f.write(b"X")
    f.flush()
    print("overwrite accepted")
except IOError as e:
    print("refused:", e)
t.close()
"#;

#[test]
fn resume_and_append_in_direct_mode() {
    let t = Topology::serve().unwrap();
    let home = t.home("xena");
    t.api().add_user(user_json("xena", "xena-pw", &home));
    let cred = Cred::Password("xena-pw".into());
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("f.bin");
    random_file(&src, 6 * 1024 * 1024 + 5);
    // First login creates the home.
    assert!(
        sftp_batch(t.sftp_port(), "xena", &cred, "pwd\n", &[])
            .status
            .success()
    );
    resume(&t, &cred, &home, &src, 1_234_567);

    std::fs::write(home.join("log.txt"), b"line one\n").unwrap();
    let out = paramiko(&t, APPEND_BELOW_SIZE, &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("refused"), "{}", describe(&out));
    assert_eq!(
        std::fs::read(home.join("log.txt")).unwrap(),
        b"line one\nmore"
    );
}
