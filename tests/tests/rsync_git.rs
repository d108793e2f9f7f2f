//! rsync and git over SSH with the real clients: the system binaries run
//! on the user's confined storage, in the sandbox (the user's uid, never
//! root, Landlock), with hostile arguments, options and repository
//! configuration refused or without effect.

use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
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

/// Homes for the users rsync and git run as: outside the test's own temp
/// dir (0700), so their uids can reach them. Ferry creates each home on
/// the first session and gives it to the user's uid/gid.
struct Homes(tempfile::TempDir);

impl Homes {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        Self(dir)
    }

    fn home(&self, name: &str) -> PathBuf {
        self.0.path().join(name)
    }
}

/// Adds a key-only user with a uid/gid (and `extra` fields); returns its key.
fn add_user(
    t: &Topology,
    name: &str,
    home: &Path,
    ids: (u32, u32),
    extra: serde_json::Value,
) -> PathBuf {
    let key = t.keypair(name);
    let mut u = user_json(name, "pw", home);
    u["public_keys"] = json!([public_key(&key)]);
    u["uid"] = json!(ids.0);
    u["gid"] = json!(ids.1);
    for (k, v) in extra.as_object().unwrap() {
        u[k] = v.clone();
    }
    t.api().add_user(u);
    key
}

/// What an admin does on disk: gives `path` (recursively) to `ids`.
fn chown_r(path: &Path, ids: (u32, u32)) {
    let out = Command::new("chown")
        .arg("-R")
        .arg(format!("{}:{}", ids.0, ids.1))
        .arg(path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", describe(&out));
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
    let homes = Homes::new();
    let home = homes.home("ray");
    let key = add_user(&t, "ray", &home, (2001, 2001), json!({}));
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

    // --inplace cuts a file that shrank to its new size (the sandbox's
    // truncate right).
    let short = work.path().join("short");
    std::fs::create_dir_all(&short).unwrap();
    random_file(&short.join("a.bin"), 1_000);
    let out = Command::new("rsync")
        .args(["-a", "--inplace", "-e", &rsh(&t, &key)])
        .arg(short.join("a.bin"))
        .arg("ray@127.0.0.1:dst/a.bin")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(
        sha256_file(&short.join("a.bin")),
        sha256_file(&home.join("dst/a.bin"))
    );

    // `..` stays inside the home: the files land in home/etc.
    std::fs::create_dir_all(home.join("etc")).unwrap();
    chown_r(&home.join("etc"), (2001, 2001));
    let out = Command::new("rsync")
        .args(["-a", "-e", &rsh(&t, &key)])
        .arg(src.join("a.bin"))
        .arg("ray@127.0.0.1:../../../etc/ferry-rsync-test")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    assert!(home.join("etc/ferry-rsync-test").exists());
    assert!(!Path::new("/etc/ferry-rsync-test").exists());
    // Everything rsync wrote belongs to the user.
    for (path, m) in walk(&home) {
        assert_eq!((m.uid(), m.gid()), (2001, 2001), "{}", path.display());
    }

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
    let homes = Homes::new();
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    tree(&src);
    let add = |name: &str, extra: serde_json::Value| {
        add_user(&t, name, &homes.home(name), (2002, 2002), extra)
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
    let home = homes.home("small");
    assert!(disk_usage(&home).0 < 230_000);
    assert_eq!(api.usage("small"), disk_usage(&home));
}

#[test]
fn git_push_then_clone() {
    let t = Topology::serve_with(&all_commands()).unwrap();
    let homes = Homes::new();
    let home = homes.home("gil");
    let key = add_user(&t, "gil", &home, (2003, 2003), json!({}));
    let git = |dir: &Path, args: &[&str]| {
        let out = git_cmd(&t, &key, dir, args);
        assert!(
            out.status.success(),
            "git {args:?}: {}\n{}",
            describe(&out),
            t.logs()
        );
        out
    };
    bare_repo(&home, "repo.git", (2003, 2003));
    let work = tempfile::tempdir().unwrap();
    let local = local_repo(&t, &key, work.path());
    let url = "ssh://gil@127.0.0.1/repo.git";
    // GIT_SSH_COMMAND carries the port.
    git(&local, &["push", "-q", url, "main"]);
    git(work.path(), &["clone", "-q", "-b", "main", url, "copy"]);
    assert_eq!(
        std::fs::read_to_string(work.path().join("copy/README")).unwrap(),
        "pushed through ferry\n"
    );
}

/// git with the user's key over ssh and a fixed identity.
fn git_cmd(t: &Topology, key: &Path, dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_SSH_COMMAND", rsh(t, key))
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.invalid")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.invalid")
        .output()
        .unwrap()
}

/// A bare repository an admin made on disk, given to the user.
fn bare_repo(home: &Path, name: &str, ids: (u32, u32)) -> PathBuf {
    std::fs::create_dir_all(home).unwrap();
    let out = Command::new("git")
        .args(["init", "-q", "--bare", name])
        .current_dir(home)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    chown_r(home, ids);
    home.join(name)
}

/// A local repository with one commit on `main`.
fn local_repo(t: &Topology, key: &Path, dir: &Path) -> PathBuf {
    let local = dir.join("local");
    std::fs::create_dir_all(&local).unwrap();
    std::fs::write(local.join("README"), "pushed through ferry\n").unwrap();
    for args in [
        &["init", "-q", "-b", "main"][..],
        &["add", "README"],
        &["commit", "-q", "-m", "first"],
    ] {
        let out = git_cmd(t, key, &local, args);
        assert!(out.status.success(), "git {args:?}: {}", describe(&out));
    }
    local
}

/// Every entry under `root`, links not followed, with its metadata.
fn walk(root: &Path) -> Vec<(PathBuf, std::fs::Metadata)> {
    let mut found = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let m = entry.path().symlink_metadata().unwrap();
            if m.is_dir() {
                dirs.push(entry.path());
            }
            found.push((entry.path(), m));
        }
    }
    found
}

/// Paths under `root` that carry a `security.capability` xattr.
fn with_capabilities(root: &Path) -> String {
    let out = Command::new("python3")
        .arg("-c")
        .arg(
            "import os,sys\n\
             for r,ds,fs in os.walk(sys.argv[1]):\n\
             \x20 for n in ds+fs:\n\
             \x20   p=os.path.join(r,n)\n\
             \x20   if 'security.capability' in os.listxattr(p,follow_symlinks=False): print(p)\n",
        )
        .arg(root)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn run(program: &str, args: &[&str]) {
    let out = Command::new(program).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        describe(&out)
    );
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn rsync_uploads_make_no_node_setuid_file_or_capability() {
    let t = Topology::serve_with(&all_commands()).unwrap();
    let homes = Homes::new();
    let home = homes.home("nod");
    let key = add_user(&t, "nod", &home, (2004, 2004), json!({}));
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    tree(&src);
    // What a hostile client sends (made here as root): a FIFO, a device
    // node, a setuid-root executable with a file capability, a setgid file.
    let p = |name: &str| src.join(name).to_str().unwrap().to_string();
    run("mkfifo", &[&p("fifo")]);
    run("mknod", &[&p("null"), "c", "1", "3"]);
    std::fs::copy("/usr/bin/true", src.join("suid")).unwrap();
    run("setcap", &["cap_net_raw+ep", &p("suid")]);
    std::fs::set_permissions(src.join("suid"), std::fs::Permissions::from_mode(0o4755)).unwrap();
    std::fs::write(src.join("sgid"), "x").unwrap();
    std::fs::set_permissions(src.join("sgid"), std::fs::Permissions::from_mode(0o2755)).unwrap();
    assert!(
        with_capabilities(&src).contains("suid"),
        "the source holds a capability"
    );

    let upload = || {
        Command::new("rsync")
            .args(["-a", "-D", "-o", "-g", "-p", "-X", "-e", &rsh(&t, &key)])
            .arg(format!("{}/", src.display()))
            .arg("nod@127.0.0.1:dst/")
            .output()
            .unwrap()
    };
    let out = upload();
    // The special file is skipped (--no-specials), the device is skipped by
    // rsync's non-root receiver: no protocol error, the rest arrives.
    assert!(out.status.success(), "{}\n{}", describe(&out), t.logs());
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("skipping non-regular file \"fifo\"")
            && said.contains("skipping non-regular file \"null\""),
        "{}",
        describe(&out)
    );
    assert_eq!(
        sha256_file(&src.join("a.bin")),
        sha256_file(&home.join("dst/a.bin"))
    );
    let check = || {
        for (path, m) in walk(&home) {
            let kind = m.file_type();
            assert!(
                !(kind.is_fifo()
                    || kind.is_socket()
                    || kind.is_char_device()
                    || kind.is_block_device()),
                "{} is a {kind:?}",
                path.display()
            );
            assert_eq!(
                m.mode() & 0o6000,
                0,
                "{} keeps {:o}",
                path.display(),
                m.mode()
            );
            assert_eq!((m.uid(), m.gid()), (2004, 2004), "{}", path.display());
        }
        assert_eq!(with_capabilities(&home), "");
    };
    check();
    assert!(home.join("dst/suid").exists() && home.join("dst/sgid").exists());

    // A file already there gets no setuid bit back either.
    std::fs::set_permissions(
        home.join("dst/suid"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    let out = upload();
    assert!(out.status.success(), "{}", describe(&out));
    check();
}

#[test]
fn rsync_follows_no_link_out_of_the_home() {
    let t = Topology::serve_with(&all_commands()).unwrap();
    let homes = Homes::new();
    let home = homes.home("lnk");
    // Outside the home, readable and writable by anyone: only the sandbox
    // keeps the user's uid out.
    let outside = tempfile::tempdir().unwrap();
    std::fs::set_permissions(outside.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let secret = format!("ferry-secret-{}", rand::random::<u64>());
    std::fs::write(outside.path().join("secret.txt"), &secret).unwrap();
    std::fs::set_permissions(
        outside.path().join("secret.txt"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let shadow = std::fs::read_to_string("/etc/shadow").unwrap();
    // Links an admin (or a race) could leave in a home.
    let dl = home.join("dl");
    std::fs::create_dir_all(&dl).unwrap();
    std::fs::write(dl.join("plain.txt"), "plain\n").unwrap();
    std::os::unix::fs::symlink("/etc/shadow", dl.join("shadow")).unwrap();
    std::os::unix::fs::symlink(outside.path().join("secret.txt"), dl.join("secret")).unwrap();
    std::os::unix::fs::symlink(outside.path(), dl.join("outdir")).unwrap();
    std::os::unix::fs::symlink(outside.path(), home.join("up")).unwrap();
    chown_r(&home, (2005, 2005));
    let key = add_user(&t, "lnk", &home, (2005, 2005), json!({}));
    let work = tempfile::tempdir().unwrap();

    for (i, flags) in [&["-a", "-L"][..], &["-a", "-k"], &["-a", "-L", "-k"]]
        .into_iter()
        .enumerate()
    {
        let back = work.path().join(format!("back{i}"));
        let out = Command::new("rsync")
            .args(flags)
            .args(["-e", &rsh(&t, &key)])
            .arg("lnk@127.0.0.1:dl/")
            .arg(format!("{}/", back.display()))
            .output()
            .unwrap();
        // What the links point to cannot be opened in the sandbox.
        assert!(
            stderr(&out).contains("Permission denied (13)"),
            "{flags:?}: {}",
            describe(&out)
        );
        assert_eq!(
            std::fs::read_to_string(back.join("plain.txt")).unwrap(),
            "plain\n"
        );
        for (path, m) in walk(&back) {
            if m.is_file() {
                let data = std::fs::read_to_string(&path).unwrap_or_default();
                assert!(
                    !data.contains(&secret) && (shadow.is_empty() || !data.contains(&shadow)),
                    "{flags:?}: {} holds what a link points to",
                    path.display()
                );
            }
        }
    }

    // Upload through the planted directory link, kept as a directory (-K).
    let src = work.path().join("src");
    std::fs::create_dir_all(src.join("up")).unwrap();
    std::fs::write(src.join("up/planted.txt"), "x").unwrap();
    let out = Command::new("rsync")
        .args(["-a", "-K", "-e", &rsh(&t, &key)])
        .arg(format!("{}/", src.display()))
        .arg("lnk@127.0.0.1:./")
        .output()
        .unwrap();
    assert!(!out.status.success(), "{}", describe(&out));
    assert!(!outside.path().join("planted.txt").exists());
}

#[test]
fn rsync_through_a_separate_edge() {
    let t = Topology::split_full(1, &[], &[("FERRY_SFTPD__ENABLED_SSH_COMMANDS", "*")]).unwrap();
    let homes = Homes::new();
    let home = homes.home("edgy");
    let key = add_user(&t, "edgy", &home, (2010, 2010), json!({}));
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    tree(&src);
    let out = Command::new("rsync")
        .args(["-a", "-e", &rsh(&t, &key)])
        .arg(format!("{}/", src.display()))
        .arg("edgy@127.0.0.1:dst/")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}\n{}", describe(&out), t.logs());
    let d = diff(&src, &home.join("dst"));
    assert!(d.status.success(), "{}", describe(&d));
}

#[test]
fn git_push_runs_no_uploaded_hook() {
    let t = Topology::serve_with(&all_commands()).unwrap();
    let homes = Homes::new();
    let home = homes.home("hooky");
    let key = add_user(&t, "hooky", &home, (2006, 2006), json!({}));
    bare_repo(&home, "repo.git", (2006, 2006));
    let work = tempfile::tempdir().unwrap();
    let canaries = [
        home.join("canary"),
        std::env::temp_dir().join(format!("ferry-hook-canary-{}", rand::random::<u64>())),
    ];
    let hook = work.path().join("hook");
    std::fs::write(
        &hook,
        format!(
            "#!/bin/sh\necho ran > {}\necho ran > {}\n",
            canaries[0].display(),
            canaries[1].display()
        ),
    )
    .unwrap();
    let cred = Cred::Key(key.clone());
    let mut batch = String::new();
    for name in ["pre-receive", "post-receive", "update", "post-update"] {
        batch += &format!(
            "put {} repo.git/hooks/{name}\nchmod 755 repo.git/hooks/{name}\n",
            hook.display()
        );
    }
    let out = sftp_batch(t.sftp_port(), "hooky", &cred, &batch, &[]);
    assert!(out.status.success(), "{}", describe(&out));
    // The uploaded hook is a working program: run by hand, it leaves both.
    run(
        home.join("repo.git/hooks/pre-receive").to_str().unwrap(),
        &[],
    );
    for c in &canaries {
        assert!(c.exists(), "{}", c.display());
        std::fs::remove_file(c).unwrap();
    }

    let local = local_repo(&t, &key, work.path());
    let url = "ssh://hooky@127.0.0.1/repo.git";
    let out = git_cmd(&t, &key, &local, &["push", "-q", url, "main"]);
    assert!(out.status.success(), "{}\n{}", describe(&out), t.logs());
    for c in &canaries {
        assert!(!c.exists(), "a hook ran: {}", c.display());
    }
    let out = git_cmd(
        &t,
        &key,
        work.path(),
        &["clone", "-q", "-b", "main", url, "copy"],
    );
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(
        std::fs::read_to_string(work.path().join("copy/README")).unwrap(),
        "pushed through ferry\n"
    );
}

#[test]
fn git_refuses_repository_config_that_names_programs() {
    let t = Topology::serve_with(&all_commands()).unwrap();
    let homes = Homes::new();
    let home = homes.home("arc");
    let key = add_user(&t, "arc", &home, (2007, 2007), json!({}));
    let repo = bare_repo(&home, "repo.git", (2007, 2007));
    let work = tempfile::tempdir().unwrap();
    let local = local_repo(&t, &key, work.path());
    let url = "ssh://arc@127.0.0.1/repo.git";
    let out = git_cmd(&t, &key, &local, &["push", "-q", url, "main"]);
    assert!(out.status.success(), "{}", describe(&out));
    // Archives of the built-in formats work in the sandbox.
    let remote = format!("--remote={url}");
    let out = git_cmd(
        &t,
        &key,
        work.path(),
        &["archive", &remote, "--format=tar.gz", "-o", "a.tgz", "main"],
    );
    assert!(out.status.success(), "{}\n{}", describe(&out), t.logs());
    run("tar", &["tzf", work.path().join("a.tgz").to_str().unwrap()]);

    let canary = std::env::temp_dir().join(format!("ferry-tar-canary-{}", rand::random::<u64>()));
    let base = std::fs::read_to_string(repo.join("config")).unwrap();
    let cred = Cred::Key(key.clone());
    for (section, key_name) in [
        (
            format!(
                "[tar \"x\"]\n\tcommand = \"touch {}; cat\"\n\tremote = true\n",
                canary.display()
            ),
            "tar.x.command",
        ),
        (
            format!("[tar \"tgz\"]\n\tcommand = touch {}\n", canary.display()),
            "tar.tgz.command",
        ),
        (
            format!("[filter \"f\"]\n\tsmudge = touch {}\n", canary.display()),
            "filter.f.smudge",
        ),
        (
            "[include]\n\tpath = /etc/gitconfig\n".to_string(),
            "include.path",
        ),
        (
            format!(
                "[core]\n\talternateRefsCommand = touch {}\n",
                canary.display()
            ),
            "core.alternaterefscommand",
        ),
    ] {
        // The user rewrites the config over SFTP.
        let config = work.path().join("config");
        std::fs::write(&config, format!("{base}{section}")).unwrap();
        let out = sftp_batch(
            t.sftp_port(),
            "arc",
            &cred,
            &format!("put {} repo.git/config\n", config.display()),
            &[],
        );
        assert!(out.status.success(), "{}", describe(&out));
        let format = if key_name == "tar.x.command" {
            "--format=x"
        } else {
            "--format=tgz"
        };
        let out = git_cmd(&t, &key, work.path(), &["archive", &remote, format, "main"]);
        assert!(!out.status.success(), "{key_name}: {}", describe(&out));
        let expected = format!("refused: the repository's config sets {key_name}");
        assert!(
            stderr(&out).contains(&expected),
            "{key_name}: {}",
            describe(&out)
        );
        // Every git command checks it.
        let out = git_cmd(&t, &key, work.path(), &["ls-remote", url]);
        assert!(
            stderr(&out).contains(&expected),
            "{key_name}: {}",
            describe(&out)
        );
        assert!(!canary.exists(), "{key_name}: the command ran");
    }
}

#[test]
fn rsync_and_git_never_run_as_root() {
    let t = Topology::serve_with(&all_commands()).unwrap();
    let homes = Homes::new();
    for (name, ids) in [("zero", (0, 0)), ("gzero", (2008, 0))] {
        let key = add_user(&t, name, &homes.home(name), ids, json!({}));
        let cred = Cred::Key(key);
        for cmd in [
            "rsync --server -vlogDtpre.iLsfxCIvu . dst/",
            "git-upload-pack repo.git",
        ] {
            let out = ssh_exec(t.sftp_port(), name, &cred, cmd, b"");
            assert_eq!(out.status.code(), Some(1), "{cmd}: {}", describe(&out));
            let expected = format!(
                "refused: it would run as root (uid {}, gid {}); the account needs a uid and gid other than 0",
                ids.0, ids.1
            );
            assert!(
                stderr(&out).contains(&expected),
                "{cmd}: {}",
                describe(&out)
            );
        }
    }
    assert!(t.logs().contains("system command refused"), "{}", t.logs());
}

#[test]
fn rsync_and_git_are_refused_where_the_kernel_cannot_sandbox() {
    let mut env = all_commands();
    env.push(("FERRY_SANDBOX_UNAVAILABLE".to_string(), "1".to_string()));
    let t = Topology::serve_with(&env).unwrap();
    assert!(
        t.logs()
            .contains("need a sandbox this kernel cannot provide"),
        "{}",
        t.logs()
    );
    let homes = Homes::new();
    let key = add_user(&t, "nobox", &homes.home("nobox"), (2009, 2009), json!({}));
    let cred = Cred::Key(key);
    for cmd in [
        "rsync --server -vlogDtpre.iLsfxCIvu . dst/",
        "git-receive-pack repo.git",
    ] {
        let out = ssh_exec(t.sftp_port(), "nobox", &cred, cmd, b"");
        assert_eq!(out.status.code(), Some(1), "{cmd}: {}", describe(&out));
        assert!(
            stderr(&out).contains("refused: this server cannot run it in a sandbox"),
            "{cmd}: {}",
            describe(&out)
        );
    }
}
