//! Per-user policy at the edge, driven by OpenSSH's sftp and scp: file
//! filters, `max_upload_file_size`, quota (exact, also across two edges),
//! bandwidth limits, and the extensions OpenSSH's client uses (`df`, `ln`,
//! `cp`).

use std::path::Path;
use std::time::{Duration, Instant};

use ferry_tests::*;
use serde_json::json;

fn local(dir: &Path, name: &str, len: usize) -> String {
    let p = dir.join(name);
    random_file(&p, len);
    p.display().to_string()
}

#[test]
fn file_patterns_deny_hide_and_limit_size() {
    let t = Topology::serve().unwrap();
    let api = t.api();
    let home = t.home("fay");
    std::fs::create_dir_all(home.join("docs/private")).unwrap();
    for f in ["tool.exe", "docs/a.txt", "docs/b.pdf", "docs/private/c.txt"] {
        std::fs::write(home.join(f), f).unwrap();
    }
    let mut u = user_json("fay", "fay-pw", &home);
    u["filters"] = json!({
        "file_patterns": [
            {"path": "/", "denied_patterns": ["*.exe"]},
            {"path": "/docs", "allowed_patterns": ["*.txt"], "denied_patterns": ["private"], "deny_policy": 1}
        ],
        "max_upload_file_size": 4000
    });
    api.add_user(u);
    let (port, c) = (t.sftp_port(), pw("fay-pw"));
    let src = tempfile::tempdir().unwrap();

    // Denied with policy 0: listed, but neither readable nor writable.
    let (ok, out) = sftp1(port, "fay", &c, "ls -1");
    assert!(ok && out.contains("tool.exe"), "{out}");
    let (ok, out) = sftp1(
        port,
        "fay",
        &c,
        &format!("get tool.exe {}/t", src.path().display()),
    );
    assert!(!ok && out.contains("ermission denied"), "{out}");
    let exe = local(src.path(), "new.exe", 10);
    let (ok, out) = sftp1(port, "fay", &c, &format!("put {exe}"));
    assert!(!ok, "{out}");
    assert!(!home.join("new.exe").exists());

    // Hidden with policy 1: not listed, and absent when named.
    let (ok, out) = sftp1(port, "fay", &c, "ls -1 docs");
    assert!(ok, "{out}");
    assert!(out.contains("a.txt"), "{out}");
    assert!(!out.contains("b.pdf") && !out.contains("private"), "{out}");
    let (ok, out) = sftp1(
        port,
        "fay",
        &c,
        &format!("get docs/b.pdf {}/b", src.path().display()),
    );
    assert!(!ok && out.contains("not found"), "{out}");
    let (ok, out) = sftp1(port, "fay", &c, "ls docs/private/c.txt");
    assert!(!ok && out.contains("not found"), "{out}");
    let (ok, _) = sftp1(
        port,
        "fay",
        &c,
        &format!("get docs/a.txt {}/a", src.path().display()),
    );
    assert!(ok);
    let pdf = local(src.path(), "up.pdf", 10);
    let (ok, _) = sftp1(port, "fay", &c, &format!("put {pdf} docs/up.pdf"));
    assert!(!ok);
    assert!(!home.join("docs/up.pdf").exists());
    // SCP goes through the same filters.
    let out = scp(
        port,
        &c,
        &[
            "-O".into(),
            "fay@127.0.0.1:docs/b.pdf".to_string(),
            src.path().join("b2").display().to_string(),
        ],
    );
    assert!(!out.status.success(), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no such file"),
        "{}",
        describe(&out)
    );

    // max_upload_file_size: a bigger upload fails and leaves nothing.
    let small = local(src.path(), "small.bin", 4000);
    let big = local(src.path(), "big.bin", 4001);
    assert!(sftp1(port, "fay", &c, &format!("put {small}")).0);
    let (ok, out) = sftp1(port, "fay", &c, &format!("put {big}"));
    assert!(!ok, "{out}");
    assert!(!home.join("big.bin").exists());
    let out = scp(
        port,
        &c,
        &["-O".into(), big.clone(), "fay@127.0.0.1:big2.bin".into()],
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("denying write due to space limit"),
        "{}",
        describe(&out)
    );
    assert!(!home.join("big2.bin").exists());

    // Invalid filters are refused with the field named; nothing stored.
    for (filters, needle) in [
        (
            json!({"file_patterns": [{"path": "/", "denied_patterns": ["[a-"]}]}),
            "invalid pattern",
        ),
        (
            json!({"file_patterns": [{"path": "docs", "denied_patterns": ["*"]}]}),
            "must be absolute",
        ),
        (
            json!({"file_patterns": [{"path": "/", "denied_patterns": ["*"], "deny_policy": 3}]}),
            "deny_policy",
        ),
        (
            json!({"max_upload_file_size": "big"}),
            "max_upload_file_size",
        ),
    ] {
        let mut u = user_json("gus", "gus-pw", &t.home("gus"));
        u["filters"] = filters;
        let r = api.call("POST", "/api/v2/users", Some(&u));
        assert_eq!(r.status, 400, "{r:?}");
        assert!(
            r.body["message"].as_str().unwrap().contains(needle),
            "{r:?}"
        );
        assert_eq!(api.call("GET", "/api/v2/users/gus", None).status, 404);
    }
}

#[test]
fn quota_is_exact_over_sftp_and_scp() {
    let t = Topology::serve().unwrap();
    let api = t.api();
    let home = t.home("quinn");
    let mut u = user_json("quinn", "quinn-pw", &home);
    u["quota_size"] = json!(100_000);
    u["quota_files"] = json!(3);
    api.add_user(u);
    let (port, c) = (t.sftp_port(), pw("quinn-pw"));
    let src = tempfile::tempdir().unwrap();
    let f60 = local(src.path(), "f60", 60_000);
    let f50 = local(src.path(), "f50", 50_000);
    let f1 = local(src.path(), "f1", 1_000);

    assert!(sftp1(port, "quinn", &c, &format!("put {f60} a")).0);
    assert_eq!(api.usage("quinn"), (60_000, 1));
    // 60 000 + 50 000 > 100 000: refused, and the partial file removed.
    let (ok, out) = sftp1(port, "quinn", &c, &format!("put {f50} b"));
    assert!(!ok, "{out}");
    assert!(!home.join("b").exists(), "partial upload left behind");
    let out = scp(
        port,
        &c,
        &["-O".into(), f50.clone(), "quinn@127.0.0.1:c".into()],
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("denying write due to space limit"),
        "{}",
        describe(&out)
    );
    assert!(!home.join("c").exists());
    assert_eq!(api.usage("quinn"), (60_000, 1));

    // statvfs (sftp's df) reports what the quota leaves, in 4 KiB blocks:
    // 100 000 bytes = 24 blocks = 96 KiB; 40 000 free = 9 blocks = 36 KiB.
    let (ok, out) = sftp1(port, "quinn", &c, "df");
    assert!(ok, "{out}");
    let line = out.lines().last().unwrap_or_default().to_string();
    let nums: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(nums.first(), Some(&"96"), "{out}");
    assert_eq!(nums.get(2), Some(&"36"), "{out}");

    // Files: two more fit, the fourth does not.
    assert!(sftp1(port, "quinn", &c, &format!("put {f1} d")).0);
    let out = scp(
        port,
        &c,
        &["-O".into(), f1.clone(), "quinn@127.0.0.1:e".into()],
    );
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(api.usage("quinn"), (62_000, 3));
    let (ok, _) = sftp1(port, "quinn", &c, &format!("put {f1} f"));
    assert!(!ok);
    assert!(!home.join("f").exists());

    // Overwrite counts the difference; delete and rename-over free quota.
    assert!(sftp1(port, "quinn", &c, &format!("put {f1} a")).0);
    assert_eq!(api.usage("quinn"), (3_000, 3));
    assert!(sftp1(port, "quinn", &c, "rm d").0);
    assert_eq!(api.usage("quinn"), (2_000, 2));
    assert!(sftp1(port, "quinn", &c, "rename e a").0);
    assert_eq!(api.usage("quinn"), (1_000, 1));
    // Now the 50 000 bytes fit: exactly up to the limit works.
    let f99 = local(src.path(), "f99", 99_000);
    assert!(sftp1(port, "quinn", &c, &format!("put {f99} big")).0);
    assert_eq!(api.usage("quinn"), (100_000, 2));
    assert_eq!(
        disk_usage(&home),
        api.usage("quinn"),
        "ledger equals a disk scan"
    );
}

#[test]
fn usage_of_users_without_limits_arrives_in_batches() {
    let t = Topology::serve().unwrap();
    let api = t.api();
    let home = t.home("una");
    api.add_user(user_json("una", "una-pw", &home));
    let (port, c) = (t.sftp_port(), pw("una-pw"));
    let src = tempfile::tempdir().unwrap();
    let f = local(src.path(), "f", 12_345);
    let batch = format!("put {f} a\nput {f} b\nmkdir d\nput {f} d/c\nrm b\n");
    let out = sftp_batch(port, "una", &c, &batch, &[]);
    assert!(out.status.success(), "{}", describe(&out));
    let expected = disk_usage(&home);
    assert_eq!(expected, (24_690, 2));
    let settled = wait_for(Duration::from_secs(30), || {
        (api.usage("una") == expected).then_some(())
    });
    assert!(
        settled.is_some(),
        "usage {:?} != disk {:?}",
        api.usage("una"),
        expected
    );
}

#[test]
fn quota_holds_across_two_edges() {
    quota_across_edges(Topology::split(2).unwrap());
}

#[test]
fn quota_holds_across_two_edges_on_postgresql() {
    let db = TempDatabase::postgres();
    quota_across_edges(Topology::split_on(&db, 2, &[]).unwrap());
}

fn quota_across_edges(t: Topology) {
    let api = t.api();
    let home = t.home("fleet");
    let mut u = user_json("fleet", "fleet-pw", &home);
    let quota: i64 = 5 << 20;
    u["quota_size"] = json!(quota);
    api.add_user(u);
    let c = pw("fleet-pw");
    let src = tempfile::tempdir().unwrap();
    let f = local(src.path(), "f", 3 << 20);
    // Two concurrent 3 MiB uploads through different edges into 5 MiB.
    let handles: Vec<_> = t
        .sftp_ports
        .iter()
        .enumerate()
        .map(|(i, &port)| {
            let (c, f) = (c.clone(), f.clone());
            std::thread::spawn(move || sftp1(port, "fleet", &c, &format!("put {f} up{i}")).0)
        })
        .collect();
    let results: Vec<bool> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert!(
        !results.iter().all(|ok| *ok),
        "both uploads fit into the quota?"
    );
    let (used, files) = disk_usage(&home);
    assert!(used <= quota, "{used} bytes stored over a {quota} quota");
    for (i, ok) in results.iter().enumerate() {
        let p = home.join(format!("up{i}"));
        assert_eq!(
            *ok,
            p.exists(),
            "upload {i}: success must mean a complete file"
        );
        if *ok {
            assert_eq!(std::fs::metadata(&p).unwrap().len(), 3 << 20);
        }
    }
    assert_eq!(
        api.usage("fleet"),
        (used, files),
        "ledger equals a disk scan"
    );
    // What is left can be filled exactly, through either edge.
    let rest = local(src.path(), "rest", (quota - used) as usize);
    assert!(sftp1(t.sftp_ports[1], "fleet", &c, &format!("put {rest} rest")).0);
    assert_eq!(api.usage("fleet").0, quota);
    let one = local(src.path(), "one", 1);
    assert!(!sftp1(t.sftp_ports[0], "fleet", &c, &format!("put {one} one")).0);
}

#[test]
fn bandwidth_limits_pace_transfers() {
    let t = Topology::serve().unwrap();
    let api = t.api();
    let home = t.home("bea");
    std::fs::create_dir_all(&home).unwrap();
    random_file(&home.join("down.bin"), 1 << 20);
    let mut u = user_json("bea", "bea-pw", &home);
    u["upload_bandwidth"] = json!(100);
    // From 127.0.0.2 downloads are limited too (a per-source override).
    u["filters"] = json!({"bandwidth_limits": [
        {"sources": ["127.0.0.2/32"], "upload_bandwidth": 100, "download_bandwidth": 100}
    ]});
    api.add_user(u);
    let (port, c) = (t.sftp_port(), pw("bea-pw"));
    let src = tempfile::tempdir().unwrap();
    let f = local(src.path(), "f", 1 << 20);

    let start = Instant::now();
    assert!(sftp1(port, "bea", &c, &format!("put {f} up.bin")).0);
    let took = start.elapsed();
    assert!(
        took >= Duration::from_secs(10),
        "1 MiB at 100 KB/s took {took:?}"
    );
    assert_eq!(
        sha256_file(&home.join("up.bin")),
        sha256_file(Path::new(&f))
    );

    let start = Instant::now();
    let out = sftp_batch(
        port,
        "bea",
        &c,
        &format!("get down.bin {}/d\n", src.path().display()),
        &["-oBindAddress=127.0.0.2"],
    );
    assert!(out.status.success(), "{}", describe(&out));
    let took = start.elapsed();
    assert!(
        took >= Duration::from_secs(10),
        "download from 127.0.0.2 took {took:?}"
    );
}

#[test]
fn openssh_extensions_df_ln_and_cp() {
    let t = Topology::serve().unwrap();
    let api = t.api();
    let home = t.home("eve");
    std::fs::create_dir_all(home.join("ro")).unwrap();
    random_file(&home.join("a"), 5_000);
    std::fs::write(home.join("ro/locked"), b"x").unwrap();
    let mut u = user_json("eve", "eve-pw", &home);
    u["permissions"] = json!({"/": ["*"], "/ro": ["list", "download"]});
    u["quota_files"] = json!(10);
    api.add_user(u);
    let (port, c) = (t.sftp_port(), pw("eve-pw"));
    // The ledger counts changes: the files put on disk above are not in it.

    // ln: a hard link (same inode), counted as a new file.
    let (ok, out) = sftp1(port, "eve", &c, "ln a b");
    assert!(ok, "{out}");
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        std::fs::metadata(home.join("a")).unwrap().ino(),
        std::fs::metadata(home.join("b")).unwrap().ino()
    );
    assert_eq!(api.usage("eve"), (5_000, 1));
    // Linking a read-only file into a writable place would let it be
    // changed through the link: refused.
    let (ok, _) = sftp1(port, "eve", &c, "ln ro/locked mine");
    assert!(!ok);
    assert!(!home.join("mine").exists());
    // cp: server-side copy-data.
    let (ok, out) = sftp1(port, "eve", &c, "cp a copy");
    assert!(ok, "{out}");
    assert_eq!(
        sha256_file(&home.join("copy")),
        sha256_file(&home.join("a"))
    );
    assert_eq!(api.usage("eve"), (10_000, 2));
    let (ok, _) = sftp1(port, "eve", &c, "cp a ro/copy");
    assert!(!ok);
    // df without a size limit shows the disk, with the files limit applied.
    let (ok, out) = sftp1(port, "eve", &c, "df -i");
    assert!(ok, "{out}");
    let nums: Vec<&str> = out
        .lines()
        .last()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(nums.first(), Some(&"10"), "{out}");
}

fn temp_uploads(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(".ferry-upload."))
                .collect()
        })
        .unwrap_or_default()
}

/// An edge killed with SIGKILL in the middle of an atomic upload: within
/// the lease TTL its session slot and quota reservation are free again, the
/// control plane has another edge remove the temporary file, and the ledger
/// still equals the disk.
#[test]
fn a_killed_edge_frees_its_lease_and_reservation_and_leaves_no_partial_file() {
    let mut t = Topology::split_full(
        2,
        &["--lease-ttl", "3"],
        &[("FERRY_COMMON__UPLOAD_MODE", "1")],
    )
    .unwrap();
    let api = t.api();
    let home = t.home("kim");
    let quota: i64 = 3 << 20;
    let mut u = user_json("kim", "kim-pw", &home);
    u["quota_size"] = json!(quota);
    u["max_sessions"] = json!(1);
    // Slow enough to be killed mid-way: 1 MiB at 100 KB/s.
    u["upload_bandwidth"] = json!(100);
    api.add_user(u);
    let c = pw("kim-pw");
    let (edge0, edge1) = (t.sftp_ports[0], t.sftp_ports[1]);
    let src = tempfile::tempdir().unwrap();
    let f = local(src.path(), "f", 1 << 20);

    let uploader = {
        let (c, f) = (c.clone(), f.clone());
        std::thread::spawn(move || sftp1(edge0, "kim", &c, &format!("put {f} big")).0)
    };
    // Wait until the upload is under way and the control plane heard of its
    // bytes (a heartbeat carried them, with the upload's recovery data).
    let seen = wait_for(Duration::from_secs(20), || {
        let written = api
            .connections()
            .iter()
            .flat_map(|c| {
                c["active_transfers"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
            })
            .any(|t| t["size"].as_i64() > Some(0));
        (written && !temp_uploads(&home).is_empty()).then_some(())
    });
    assert!(seen.is_some(), "upload not seen:\n{}", t.logs());
    // max_sessions=1 holds across edges.
    refused_login(edge1, "kim", &c);
    let logged = wait_for(Duration::from_secs(10), || {
        refusal_logged(&t.logs(), "kim", "too many open sessions").then_some(())
    });
    assert!(logged.is_some(), "{}", t.logs());
    let killed = Instant::now();
    t.kill_edge(0);
    assert!(!uploader.join().unwrap(), "the upload died with its edge");
    assert!(
        !home.join("big").exists(),
        "atomic: the target never appeared"
    );

    // The session slot comes back after the TTL.
    let back = wait_for(Duration::from_secs(30), || {
        sftp1(edge1, "kim", &c, "pwd").0.then_some(())
    });
    assert!(back.is_some(), "lease not freed:\n{}", t.logs());
    assert!(
        killed.elapsed() >= Duration::from_secs(2),
        "not before the TTL"
    );
    // The temporary file is removed by the surviving edge.
    let cleaned = wait_for(Duration::from_secs(30), || {
        temp_uploads(&home).is_empty().then_some(())
    });
    assert!(cleaned.is_some(), "temporary upload left:\n{}", t.logs());
    // The edge removes the file, then settles and logs: wait for the log.
    let settled = wait_for(Duration::from_secs(15), || {
        t.logs()
            .contains("upload of a vanished edge recovered")
            .then_some(())
    });
    assert!(settled.is_some(), "{}", t.logs());
    assert_eq!(api.usage("kim"), (0, 0));
    assert_eq!(disk_usage(&home), (0, 0));

    // The dead upload's reservation is gone too: the whole quota fits.
    let r = api.call(
        "PUT",
        "/api/v2/users/kim",
        Some(&json!({"home_dir": home, "permissions": {"/": ["*"]}, "quota_size": quota, "max_sessions": 1})),
    );
    assert_eq!(r.status, 200, "{r:?}");
    let full = local(src.path(), "full", quota as usize);
    let (ok, out) = sftp1(edge1, "kim", &c, &format!("put {full} full"));
    assert!(ok, "{out}\n{}", t.logs());
    assert_eq!(api.usage("kim"), (quota, 1));
    assert_eq!(disk_usage(&home), (quota, 1));
}

/// `common.setstat_mode` 1 accepts chmod/chtimes and ignores them;
/// `common.umask` shapes the mode of what SFTP and SCP create.
#[test]
fn setstat_mode_and_umask() {
    let env = [
        ("FERRY_COMMON__SETSTAT_MODE".to_string(), "1".to_string()),
        ("FERRY_COMMON__UMASK".to_string(), "027".to_string()),
    ];
    let t = Topology::serve_with(&env).unwrap();
    let home = t.home("sue");
    t.api().add_user(user_json("sue", "sue-pw", &home));
    let (port, c) = (t.sftp_port(), pw("sue-pw"));
    let src = tempfile::tempdir().unwrap();
    let f = local(src.path(), "f", 100);
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o666)).unwrap();
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;

    let out = sftp_batch(
        port,
        "sue",
        &c,
        &format!("put {f} f\nmkdir d\nchmod 777 f\n"),
        &[],
    );
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(
        mode(&home.join("f")),
        0o640,
        "umask 027 on a new file; chmod ignored"
    );
    assert_eq!(mode(&home.join("d")), 0o750, "umask 027 on a new directory");
    let out = scp(
        port,
        &c,
        &[
            "-O".into(),
            "-p".into(),
            f.clone(),
            "sue@127.0.0.1:g".into(),
        ],
    );
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(mode(&home.join("g")), 0o640);
    let mtime = |p: &Path| std::fs::metadata(p).unwrap().modified().unwrap();
    std::fs::File::options()
        .write(true)
        .open(&f)
        .unwrap()
        .set_modified(std::time::UNIX_EPOCH + Duration::from_secs(1_000_000))
        .unwrap();
    let out = sftp_batch(port, "sue", &c, &format!("put -p {f} h\n"), &[]);
    assert!(out.status.success(), "{}", describe(&out));
    assert_ne!(
        mtime(&home.join("h")),
        mtime(Path::new(&f)),
        "times ignored"
    );

    // Bad values stop the start with the setting named.
    for (key, value, needle) in [
        ("FERRY_COMMON__UMASK", "999", "umask"),
        ("FERRY_COMMON__SETSTAT_MODE", "5", "setstat_mode"),
    ] {
        let out = serve_with_setting(key, value);
        assert!(!out.status.success());
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(needle),
            "{}",
            describe(&out)
        );
    }
}

/// Admins set or adjust the ledger (`PUT /api/v2/quotas/.../usage`), e.g.
/// for files that were there before Ferry; enforcement follows at once.
#[test]
fn admins_set_quota_usage() {
    let t = Topology::serve().unwrap();
    let api = t.api();
    let home = t.home("uli");
    let mut u = user_json("uli", "uli-pw", &home);
    u["quota_size"] = json!(10_000);
    api.add_user(u);
    let (port, c) = (t.sftp_port(), pw("uli-pw"));
    assert!(sftp1(port, "uli", &c, "pwd").0);
    random_file(&home.join("old.bin"), 8_000);
    let src = tempfile::tempdir().unwrap();
    let f = local(src.path(), "f", 3_000);

    let put = |path: &str, body: serde_json::Value| api.call("PUT", path, Some(&body));
    let r = put(
        "/api/v2/quotas/users/uli/usage",
        json!({"used_quota_size": 8_000, "used_quota_files": 1}),
    );
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(api.usage("uli"), (8_000, 1));
    assert!(
        !sftp1(port, "uli", &c, &format!("put {f} new")).0,
        "8 000 + 3 000 > 10 000"
    );
    let r = put(
        "/api/v2/quotas/users/uli/usage?mode=add",
        json!({"used_quota_size": -8_000, "used_quota_files": -1}),
    );
    assert_eq!(r.status, 200, "{r:?}");
    assert!(sftp1(port, "uli", &c, &format!("put {f} new")).0);
    assert_eq!(api.usage("uli"), (3_000, 1));

    // Folders too.
    let r = api.call(
        "POST",
        "/api/v2/folders",
        Some(&json!({"name": "fo", "mapped_path": t.dir.path().join("fo")})),
    );
    assert_eq!(r.status, 201, "{r:?}");
    let r = put(
        "/api/v2/quotas/folders/fo/usage",
        json!({"used_quota_size": 5, "used_quota_files": 1}),
    );
    assert_eq!(r.status, 200, "{r:?}");
    let r = api.call("GET", "/api/v2/folders/fo", None);
    assert_eq!(
        (
            r.body["used_quota_size"].as_i64(),
            r.body["used_quota_files"].as_i64()
        ),
        (Some(5), Some(1))
    );

    // Errors: bad mode, negative reset, unknown user, missing permission.
    let body = json!({"used_quota_size": 1, "used_quota_files": 1});
    assert_eq!(
        put("/api/v2/quotas/users/uli/usage?mode=swap", body.clone()).status,
        400
    );
    assert_eq!(
        put(
            "/api/v2/quotas/users/uli/usage",
            json!({"used_quota_size": -1})
        )
        .status,
        400
    );
    assert_eq!(
        put("/api/v2/quotas/users/nobody/usage", body.clone()).status,
        404
    );
    let r = api.call(
        "POST",
        "/api/v2/admins",
        Some(
            &json!({"username": "viewer", "password": "viewer-pw", "permissions": ["view_users"]}),
        ),
    );
    assert_eq!(r.status, 201, "{r:?}");
    let viewer = Api::login(&t.base(), "viewer", "viewer-pw").unwrap();
    let r = viewer.call("PUT", "/api/v2/quotas/users/uli/usage", Some(&body));
    assert_eq!(r.status, 403, "{r:?}");
    assert!(
        r.body["message"].as_str().unwrap().contains("quota_scans"),
        "{r:?}"
    );
    assert_eq!(
        api.usage("uli"),
        (3_000, 1),
        "nothing changed by refused calls"
    );
}

/// Quota scans walk the storage through an edge (the control plane never
/// reads user files) and set the counters to what is there.
#[test]
fn quota_scans_walk_through_an_edge() {
    let t = Topology::serve().unwrap();
    let api = t.api();
    let home = t.home("sid");
    let inc = t.dir.path().join("sid-inc");
    let own = t.dir.path().join("sid-own");
    let mut u = user_json("sid", "sid-pw", &home);
    u["virtual_folders"] = json!([
        {"name": "inc", "mapped_path": inc, "virtual_path": "/inc"},
        {"name": "own", "mapped_path": own, "virtual_path": "/own", "quota_size": 0, "quota_files": 0}
    ]);
    api.add_user(u);
    assert!(sftp1(t.sftp_port(), "sid", &pw("sid-pw"), "pwd").0);
    std::fs::create_dir_all(home.join("d")).unwrap();
    random_file(&home.join("d/a"), 1_000);
    random_file(&home.join("b"), 2_000);
    // A file named like a temporary upload counts: only the temporary files
    // of uploads in progress on an edge are left out (else a user could hide
    // data from the quota by naming it so).
    random_file(&home.join(".ferry-upload.0000.c"), 5_000);
    random_file(&inc.join("i"), 300);
    random_file(&own.join("o"), 40);

    let scan = |path: &str, list: &str| {
        let r = api.call("POST", path, None);
        assert_eq!(r.status, 202, "{r:?}");
        let done = wait_for(Duration::from_secs(20), || {
            let r = api.call("GET", list, None);
            assert_eq!(r.status, 200, "{r:?}");
            r.body.as_array().unwrap().is_empty().then_some(())
        });
        assert!(done.is_some(), "scan did not finish:\n{}", t.logs());
    };
    scan(
        "/api/v2/quotas/users/sid/scan",
        "/api/v2/quotas/users/scans",
    );
    assert_eq!(
        api.usage("sid"),
        (8_300, 4),
        "home and the folder counted in the user's quota"
    );
    scan(
        "/api/v2/quotas/folders/own/scan",
        "/api/v2/quotas/folders/scans",
    );
    let r = api.call("GET", "/api/v2/folders/own", None);
    assert_eq!(r.body["used_quota_size"], 40);
    assert_eq!(r.body["used_quota_files"], 1);
    assert_eq!(
        api.call("POST", "/api/v2/quotas/users/nobody/scan", None)
            .status,
        404
    );
    assert_eq!(
        api.call("POST", "/api/v2/quotas/folders/nothing/scan", None)
            .status,
        404
    );
}
