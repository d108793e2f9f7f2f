//! SSH commands (`ssh user@host COMMAND`) against a real `ferry serve`.

use ferry_tests::*;
use serde_json::json;

fn local(tool: &str, path: &std::path::Path) -> String {
    let out = std::process::Command::new(tool).arg(path).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

#[test]
fn hash_commands_match_coreutils() {
    let all = [(
        "FERRY_SFTPD__ENABLED_SSH_COMMANDS".to_string(),
        "*".to_string(),
    )];
    let t = Topology::serve_with(&all).unwrap();
    let api = t.api();
    let key = t.keypair("olga");
    let home = t.home("olga");
    let mut user = user_json("olga", "olga-pw", &home);
    user["public_keys"] = json!([public_key(&key)]);
    user["permissions"] = json!({"/": ["*"], "/private": ["upload"]});
    api.add_user(user);
    let cred = Cred::Key(key);
    let port = t.sftp_port();
    // First login creates the home.
    assert!(ssh_exec(port, "olga", &cred, "pwd", b"").status.success());
    std::fs::create_dir_all(home.join("sub dir")).unwrap();
    std::fs::create_dir_all(home.join("private")).unwrap();
    let f = home.join("sub dir/data.bin");
    random_file(&f, 3 * 1024 * 1024 + 1);
    std::fs::copy(&f, home.join("private/data.bin")).unwrap();

    for (cmd, tool) in [
        ("md5sum", "md5sum"),
        ("sha1sum", "sha1sum"),
        ("sha256sum", "sha256sum"),
        ("sha384sum", "sha384sum"),
        ("sha512sum", "sha512sum"),
    ] {
        let expected = local(tool, &f);
        let out = ssh_exec(
            port,
            "olga",
            &cred,
            &format!("{cmd} 'sub dir/data.bin'"),
            b"",
        );
        assert!(out.status.success(), "{cmd}: {}", describe(&out));
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            format!("{expected}  /sub dir/data.bin\n"),
            "{cmd}"
        );
        // Without an argument the command hashes its input.
        let out = ssh_exec(port, "olga", &cred, cmd, &std::fs::read(&f).unwrap());
        assert!(out.status.success(), "{cmd} stdin: {}", describe(&out));
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            format!("{expected}  -\n")
        );
    }

    // Needs `list`; stays inside home; errors exit non-zero with a message.
    let out = ssh_exec(port, "olga", &cred, "sha256sum private/data.bin", b"");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("permission denied"),
        "{}",
        describe(&out)
    );
    std::os::unix::fs::symlink("/etc/hostname", home.join("escape")).unwrap();
    let out = ssh_exec(port, "olga", &cred, "md5sum escape", b"");
    assert!(!out.status.success(), "{}", describe(&out));
    let out = ssh_exec(port, "olga", &cred, "sha1sum ../../etc/hostname", b"");
    assert!(
        !out.status.success(),
        "clamped to /etc/hostname inside home, which is missing"
    );
    let out = ssh_exec(port, "olga", &cred, "sha1sum 'sub dir'", b"");
    assert!(!out.status.success());

    let out = ssh_exec(port, "olga", &cred, "pwd", b"");
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout), "/\n");
    assert!(
        ssh_exec(port, "olga", &cred, "cd /sub", b"")
            .status
            .success()
    );

    let out = ssh_exec(port, "olga", &cred, "cat /etc/passwd", b"");
    assert_eq!(out.status.code(), Some(127), "{}", describe(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not supported"));
    assert!(out.stdout.is_empty());
}

/// `enabled_ssh_commands` defaults to SFTPGo's set; others are refused with
/// a message naming what is enabled.
#[test]
fn only_enabled_commands_run() {
    let t = Topology::serve().unwrap();
    t.api().add_user(user_json("ned", "ned-pw", &t.home("ned")));
    let cred = Cred::Password("ned-pw".into());
    let port = t.sftp_port();
    let out = ssh_exec(port, "ned", &cred, "sha256sum", b"x");
    assert!(out.status.success(), "{}", describe(&out));
    for cmd in ["sha512sum", "sftpgo-copy a b", "sftpgo-remove a"] {
        let out = ssh_exec(port, "ned", &cred, cmd, b"");
        assert_eq!(out.status.code(), Some(127), "{cmd}: {}", describe(&out));
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("is not enabled on this server"),
            "{}",
            describe(&out)
        );
    }
    // A bad setting stops the start with the key named.
    let out = serve_with_setting("FERRY_SFTPD__ENABLED_SSH_COMMANDS", "md5sum,bash");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("enabled_ssh_commands"),
        "{}",
        describe(&out)
    );
}

/// `sftpgo-copy` and `sftpgo-remove`: checked like SFTP operations and
/// counted in quota.
#[test]
fn sftpgo_copy_and_remove() {
    let env = [(
        "FERRY_SFTPD__ENABLED_SSH_COMMANDS".to_string(),
        "sftpgo-copy,sftpgo-remove,pwd".to_string(),
    )];
    let t = Topology::serve_with(&env).unwrap();
    let api = t.api();
    let home = t.home("cora");
    let mut u = user_json("cora", "cora-pw", &home);
    u["quota_size"] = json!(40_000);
    u["permissions"] = json!({"/": ["*"], "/ro": ["list", "download"]});
    api.add_user(u);
    let cred = Cred::Password("cora-pw".into());
    let port = t.sftp_port();
    assert!(ssh_exec(port, "cora", &cred, "pwd", b"").status.success());
    std::fs::create_dir_all(home.join("tree/sub")).unwrap();
    std::fs::create_dir_all(home.join("ro")).unwrap();
    random_file(&home.join("tree/a"), 10_000);
    random_file(&home.join("tree/sub/b"), 5_000);
    std::os::unix::fs::symlink("/etc/passwd", home.join("tree/link")).unwrap();
    let run = |cmd: &str| ssh_exec(port, "cora", &cred, cmd, b"");

    let out = run("sftpgo-copy tree copy");
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "OK\n");
    assert_eq!(
        sha256_file(&home.join("copy/sub/b")),
        sha256_file(&home.join("tree/sub/b"))
    );
    assert!(!home.join("copy/link").exists(), "symlinks are skipped");
    assert_eq!(api.usage("cora"), (15_000, 2), "the copy is counted");
    // Existing destination, read-only destination, quota: refused, nothing copied.
    let out = run("sftpgo-copy tree copy");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("already exists"),
        "{}",
        describe(&out)
    );
    assert!(!run("sftpgo-copy tree/a ro/a").status.success());
    assert!(!home.join("ro/a").exists());
    assert!(run("sftpgo-copy tree c2").status.success());
    let out = run("sftpgo-copy tree c3");
    assert!(!out.status.success(), "45 000 bytes over 40 000");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("denying write due to space limit"),
        "{}",
        describe(&out)
    );
    assert!(!home.join("c3").exists());
    assert_eq!(api.usage("cora"), (30_000, 4));

    // Remove: a tree, a file; never the root or outside the rules.
    let out = run("sftpgo-remove copy");
    assert!(out.status.success(), "{}", describe(&out));
    assert!(!home.join("copy").exists());
    assert!(run("sftpgo-remove c2/a").status.success());
    assert_eq!(api.usage("cora"), (5_000, 1));
    assert!(!run("sftpgo-remove /").status.success());
    std::fs::write(home.join("ro/keep"), b"x").unwrap();
    assert!(!run("sftpgo-remove ro/keep").status.success());
    assert!(home.join("ro/keep").exists());
    assert!(!run("sftpgo-remove ../../etc").status.success());
}
