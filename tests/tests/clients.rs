//! SFTP clients beyond OpenSSH's and paramiko (issue 23): asyncssh's
//! battery, with hashes checked, against a real server.

use std::path::Path;
use std::process::Command;

use ferry_tests::*;
use serde_json::Value;

#[test]
fn asyncssh_transfers_copies_links_and_syncs() {
    let t = Topology::serve().unwrap();
    let home = t.home("ayla");
    t.api().add_user(user_json("ayla", "ayla-pw", &home));
    let local = tempfile::tempdir().unwrap();
    let out = Command::new("python3")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("py/asyncssh_battery.py"))
        .args([&t.sftp_port().to_string(), "ayla", "ayla-pw"])
        .arg(local.path())
        .output()
        .expect("python3 with asyncssh (.ci/run installs it)");
    assert!(out.status.success(), "{}\n{}", describe(&out), t.logs());
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    eprintln!("asyncssh report: {r}");
    let size = 3 * 1024 * 1024 + 17;
    assert_eq!(r["put_get"], true, "{r}");
    assert_eq!(
        sha256_file(&home.join("up.bin")),
        r["src_sha256"].as_str().unwrap()
    );
    assert_eq!(r["remote_copy_size"], size, "{r}");
    assert!(r["statvfs_bsize"].as_u64().unwrap() > 0, "{r}");
    assert_eq!(
        (r["renamed_exists"].clone(), r["copied_gone"].clone()),
        (true.into(), true.into())
    );
    assert_eq!(r["hard_size"], size, "{r}");
    assert_eq!(r["fsync_size"], 7, "{r}");
    // asyncssh sends SYMLINK in the draft's order to a server that is not
    // OpenSSH: the link is /link.bin and leads to up.bin, not the reverse.
    assert!(r["readlink"].as_str().unwrap().ends_with("up.bin"), "{r}");
    assert_eq!(r["link_target_size"], size, "{r}");
    let link = std::fs::symlink_metadata(home.join("link.bin")).unwrap();
    assert!(link.file_type().is_symlink());
    assert!(
        std::fs::symlink_metadata(home.join("up.bin"))
            .unwrap()
            .is_file()
    );
    assert_eq!(r["dots"], serde_json::json!(["."]), "{r}");
}
