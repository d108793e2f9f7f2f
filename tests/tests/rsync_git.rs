//! rsync and git over SSH with the real clients: the system binaries run
//! on the user's confined storage, with hostile arguments refused.

use std::path::Path;
use std::process::Command;

use ferry_tests::*;
use serde_json::json;

const SSH_OPTS: &str = "-oBatchMode=yes -oStrictHostKeyChecking=no -oUserKnownHostsFile=/dev/null \
                        -oLogLevel=ERROR -oIdentitiesOnly=yes";

fn all_commands() -> Vec<(String, String)> {
    vec![(
        "FERRY_SFTPD__ENABLED_SSH_COMMANDS".to_string(),
        "*".to_string(),
    )]
}

fn rsh(t: &Topology, key: &Path) -> String {
    format!("ssh {SSH_OPTS} -p {} -i {}", t.sftp_port(), key.display())
}

fn diff(a: &Path, b: &Path) -> std::process::Output {
    Command::new("diff")
        .arg("-r")
        .arg(a)
        .arg(b)
        .output()
        .unwrap()
}

fn tree(root: &Path) {
    std::fs::create_dir_all(root.join("sub/deeper")).unwrap();
    random_file(&root.join("a.bin"), 200_000);
    random_file(&root.join("sub/b.bin"), 30_000);
    std::fs::write(root.join("sub/deeper/c.txt"), "hello\n").unwrap();
}

#[test]
fn rsync_up_and_down() {
    let t = Topology::serve_with(&all_commands()).unwrap();
    let key = t.keypair("ray");
    let home = t.home("ray");
    let mut u = user_json("ray", "ray-pw", &home);
    u["public_keys"] = json!([public_key(&key)]);
    t.api().add_user(u);
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    tree(&src);

    let out = Command::new("rsync")
        .args(["-a", "-e", &rsh(&t, &key)])
        .arg(format!("{}/", src.display()))
        .arg("ray@127.0.0.1:dst/")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}\n{}", describe(&out), t.logs());
    let d = diff(&src, &home.join("dst"));
    assert!(d.status.success(), "{}", describe(&d));
    // The ledger follows the re-scan.
    let used = wait_for(std::time::Duration::from_secs(20), || {
        (t.api().usage("ray") == disk_usage(&home)).then_some(())
    });
    assert!(
        used.is_some(),
        "{:?} vs {:?}",
        t.api().usage("ray"),
        disk_usage(&home)
    );

    let back = work.path().join("back");
    let out = Command::new("rsync")
        .args(["-a", "-e", &rsh(&t, &key)])
        .arg("ray@127.0.0.1:dst/")
        .arg(format!("{}/", back.display()))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    let d = diff(&src, &back);
    assert!(d.status.success(), "{}", describe(&d));

    // `..` stays inside the home: the files land in home/etc.
    std::fs::create_dir_all(home.join("etc")).unwrap();
    let out = Command::new("rsync")
        .args(["-a", "-e", &rsh(&t, &key)])
        .arg(src.join("a.bin"))
        .arg("ray@127.0.0.1:../../../etc/ferry-rsync-test")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    assert!(home.join("etc/ferry-rsync-test").exists());
    assert!(!Path::new("/etc/ferry-rsync-test").exists());

    // Hostile arguments, sent the way a hand-made client would.
    let cred = Cred::Key(key.clone());
    for (cmd, needle) in [
        ("rsync --server -e sh . dst", "not allowed"),
        ("rsync --server --rsh=/bin/sh . dst", "not allowed"),
        ("rsync --server --rsync-path=/bin/sh . dst", "not allowed"),
        ("rsync --server --temp-dir=/tmp . dst", "not allowed"),
        (
            "rsync --server --files-from=/etc/passwd --sender . dst",
            "not allowed",
        ),
        ("rsync -av dst /tmp/x", "server side"),
        ("rsync --server -vlogDtpre.iLs . --delete", "invalid path"),
        (
            "git-upload-pack '--upload-pack=touch /tmp/ferry-pwned'",
            "invalid path",
        ),
        (
            "git-upload-pack repo.git; touch /tmp/ferry-pwned",
            "exactly one",
        ),
    ] {
        let out = ssh_exec(t.sftp_port(), "ray", &cred, cmd, b"");
        assert!(!out.status.success(), "{cmd}: {}", describe(&out));
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(needle),
            "{cmd}: {}",
            describe(&out)
        );
    }
    assert!(!Path::new("/tmp/ferry-pwned").exists());
}

#[test]
fn rsync_is_refused_where_sftpgo_refuses_it_and_capped_by_quota() {
    let t = Topology::serve_with(&all_commands()).unwrap();
    let api = t.api();
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    tree(&src);
    let add = |name: &str, extra: serde_json::Value| {
        let key = t.keypair(name);
        let mut u = user_json(name, "pw", &t.home(name));
        u["public_keys"] = json!([public_key(&key)]);
        for (k, v) in extra.as_object().unwrap() {
            u[k] = v.clone();
        }
        api.add_user(u);
        key
    };
    let up = |user: &str, key: &Path, dst: &str| {
        Command::new("rsync")
            .args(["-a", "-e", &rsh(&t, key)])
            .arg(format!("{}/", src.display()))
            .arg(format!("{user}@127.0.0.1:{dst}"))
            .output()
            .unwrap()
    };
    let k = add("ro", json!({"permissions": {"/": ["list", "download"]}}));
    let out = up("ro", &k, "dst/");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("permission denied"),
        "{}",
        describe(&out)
    );
    let k = add(
        "filtered",
        json!({"filters": {"file_patterns": [{"path": "/", "denied_patterns": ["*.exe"]}]}}),
    );
    let out = up("filtered", &k, "dst/");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("file filters"),
        "{}",
        describe(&out)
    );
    let k = add(
        "mounted",
        json!({"virtual_folders": [{"name": "vf", "mapped_path": work.path().join("vf"), "virtual_path": "/vf"}]}),
    );
    let out = up("mounted", &k, "vf/");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("virtual folders"),
        "{}",
        describe(&out)
    );
    let out = up("mounted", &k, "/");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("virtual folders"),
        "{}",
        describe(&out)
    );

    // 230 KB into 50 KB: stopped, and the ledger matches what is left.
    let k = add("small", json!({"quota_size": 50_000}));
    let out = up("small", &k, "dst/");
    assert!(!out.status.success(), "{}", describe(&out));
    let home = t.home("small");
    assert!(disk_usage(&home).0 < 230_000);
    assert_eq!(api.usage("small"), disk_usage(&home));
}

#[test]
fn git_push_then_clone() {
    let t = Topology::serve_with(&all_commands()).unwrap();
    let key = t.keypair("gil");
    let home = t.home("gil");
    let mut u = user_json("gil", "gil-pw", &home);
    u["public_keys"] = json!([public_key(&key)]);
    t.api().add_user(u);
    std::fs::create_dir_all(&home).unwrap();
    let git = |dir: &Path, args: &[&str]| {
        let out = Command::new("git")
            .args(args)
            .current_dir(dir)
            .env("GIT_SSH_COMMAND", rsh(&t, &key))
            .env("GIT_AUTHOR_NAME", "t")
            .env("GIT_AUTHOR_EMAIL", "t@example.invalid")
            .env("GIT_COMMITTER_NAME", "t")
            .env("GIT_COMMITTER_EMAIL", "t@example.invalid")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "git {args:?}: {}\n{}",
            describe(&out),
            t.logs()
        );
        out
    };
    git(&home, &["init", "-q", "--bare", "repo.git"]);
    let work = tempfile::tempdir().unwrap();
    let local = work.path().join("local");
    std::fs::create_dir_all(&local).unwrap();
    git(&local, &["init", "-q", "-b", "main"]);
    std::fs::write(local.join("README"), "pushed through ferry\n").unwrap();
    git(&local, &["add", "README"]);
    git(&local, &["commit", "-q", "-m", "first"]);
    let url = "ssh://gil@127.0.0.1/repo.git";
    // GIT_SSH_COMMAND carries the port.
    git(&local, &["push", "-q", url, "main"]);
    git(work.path(), &["clone", "-q", "-b", "main", url, "copy"]);
    assert_eq!(
        std::fs::read_to_string(work.path().join("copy/README")).unwrap(),
        "pushed through ferry\n"
    );
}
