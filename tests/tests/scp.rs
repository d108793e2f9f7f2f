//! The legacy SCP protocol (`scp -O`) against a real `ferry serve`.

use std::path::Path;

use ferry_tests::*;
use serde_json::json;

fn tree_files(root: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(root).unwrap().display().to_string();
                out.push((rel, sha256_file(&p)));
            }
        }
    }
    out.sort();
    out
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

#[test]
fn scp_legacy_protocol_end_to_end() {
    let t = Topology::serve().unwrap();
    let api = t.api();
    let key = t.keypair("pat");
    let home = t.home("pat");
    let mut user = user_json("pat", "pat-pw", &home);
    user["public_keys"] = json!([public_key(&key)]);
    user["permissions"] = json!({"/": ["*"], "/ro": ["list", "download"]});
    api.add_user(user);
    let cred = Cred::Key(key);
    let port = t.sftp_port();
    let remote = |p: &str| format!("pat@127.0.0.1:{p}");

    let work = tempfile::tempdir().unwrap();
    let big = work.path().join("big.bin");
    random_file(&big, 9 * 1024 * 1024 + 3);
    // Single file up and down.
    let out = scp(
        port,
        &cred,
        &args(&["-O", big.to_str().unwrap(), &remote("big.bin")]),
    );
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(sha256_file(&home.join("big.bin")), sha256_file(&big));
    let back = work.path().join("back.bin");
    let out = scp(
        port,
        &cred,
        &args(&["-O", &remote("big.bin"), back.to_str().unwrap()]),
    );
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(sha256_file(&back), sha256_file(&big));

    // A tree with -r and -p, up and down.
    let tree = work.path().join("tree");
    std::fs::create_dir_all(tree.join("a/b c")).unwrap();
    std::fs::create_dir_all(tree.join("empty")).unwrap();
    std::fs::write(tree.join("one.txt"), b"one").unwrap();
    random_file(&tree.join("a/b c/data.bin"), 700_000);
    let old = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_234_567_890);
    std::fs::File::options()
        .write(true)
        .open(tree.join("one.txt"))
        .unwrap()
        .set_modified(old)
        .unwrap();
    let out = scp(
        port,
        &cred,
        &args(&["-O", "-r", "-p", tree.to_str().unwrap(), &remote("")]),
    );
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(tree_files(&home.join("tree")), tree_files(&tree));
    assert!(home.join("tree/empty").is_dir());
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        std::fs::metadata(home.join("tree/one.txt"))
            .unwrap()
            .mtime(),
        1_234_567_890,
        "-p kept mtime"
    );
    let down = work.path().join("down");
    let out = scp(
        port,
        &cred,
        &args(&["-O", "-r", "-p", &remote("tree"), down.to_str().unwrap()]),
    );
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(tree_files(&down), tree_files(&tree));
    assert_eq!(
        std::fs::metadata(down.join("one.txt")).unwrap().mtime(),
        1_234_567_890
    );

    // Remote to remote through the client (-3).
    let out = scp(
        port,
        &cred,
        &args(&["-O", "-3", &remote("big.bin"), &remote("copy.bin")]),
    );
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(sha256_file(&home.join("copy.bin")), sha256_file(&big));

    // Refusals: the client prints the server's message and exits non-zero.
    std::fs::create_dir_all(home.join("ro")).unwrap();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            args(&["-O", big.to_str().unwrap(), &remote("ro/x.bin")]),
            "permission denied",
        ),
        (
            args(&[
                "-O",
                &remote("tree"),
                work.path().join("x").to_str().unwrap(),
            ]),
            "not a regular file",
        ),
        (
            args(&["-O", big.to_str().unwrap(), &remote("missing/x.bin")]),
            "no such file",
        ),
        (
            args(&[
                "-O",
                &remote("nothing.bin"),
                work.path().join("y").to_str().unwrap(),
            ]),
            "no such file",
        ),
    ];
    for (a, needle) in cases {
        let out = scp(port, &cred, &a);
        assert!(!out.status.success(), "{a:?} must fail: {}", describe(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{a:?}: {err}");
    }
    assert!(!home.join("ro/x.bin").exists());

    // Paths stay inside home, also through a planted symlink.
    let outside = t.dir.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("secret"), b"secret").unwrap();
    std::os::unix::fs::symlink(&outside, home.join("escape")).unwrap();
    let got = work.path().join("stolen");
    let out = scp(
        port,
        &cred,
        &args(&["-O", &remote("escape/secret"), got.to_str().unwrap()]),
    );
    assert!(!out.status.success() && !got.exists(), "{}", describe(&out));
    let out = scp(
        port,
        &cred,
        &args(&["-O", big.to_str().unwrap(), &remote("escape/planted")]),
    );
    assert!(!out.status.success(), "{}", describe(&out));
    assert!(!outside.join("planted").exists());
    let out = scp(
        port,
        &cred,
        &args(&["-O", big.to_str().unwrap(), &remote("../../up.bin")]),
    );
    assert!(out.status.success(), "{}", describe(&out));
    assert!(
        home.join("up.bin").exists(),
        "../../ is clamped to the home"
    );
}
