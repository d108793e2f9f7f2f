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
    let t = Topology::serve().unwrap();
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
