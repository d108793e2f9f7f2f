//! Users whose home (or a folder) lives in S3, served to real clients
//! (OpenSSH `sftp`/`scp`, rclone's sftp backend): round trips with hashes,
//! directories as prefixes and markers, quota and disconnects that leave no
//! object and no pending multipart upload, a folder on S3 inside a local
//! home, signature-checked credentials, and two edges on one bucket.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use ferry_tests::stores::{S3Kind, S3Server};
use ferry_tests::*;
use serde_json::{Value, json};

const BUCKET: &str = "ferry-data";

/// SFTPGo's `filesystem` for a prefix of `s3`'s bucket.
fn s3_filesystem(s3: &S3Server, prefix: &str) -> Value {
    json!({
        "provider": 1,
        "s3config": {
            "bucket": BUCKET,
            "region": s3.region,
            "endpoint": s3.endpoint,
            "access_key": s3.access_key,
            "access_secret": {"status": "Plain", "payload": s3.secret_key},
            "key_prefix": prefix,
            "force_path_style": true,
        }
    })
}

fn s3_user(t: &Topology, s3: &S3Server, name: &str, password: &str) -> Value {
    let mut u = user_json(name, password, &t.home(name));
    u["filesystem"] = s3_filesystem(s3, &format!("{name}/"));
    u
}

fn sftp_ok(port: u16, user: &str, password: &str, commands: &str) -> String {
    let out = sftp_batch(port, user, &pw(password), commands, &[]);
    assert!(out.status.success(), "{}", describe(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs one SSH command (as `ssh user@host cmd`) and returns its stdout.
fn ssh_command(port: u16, user: &str, password: &str, command: &str) -> String {
    let out = Command::new("sshpass")
        .args(["-p", password, "ssh"])
        .args([
            "-oStrictHostKeyChecking=no",
            "-oUserKnownHostsFile=/dev/null",
        ])
        .args(["-oLogLevel=ERROR", "-p", &port.to_string()])
        .arg(format!("{user}@127.0.0.1"))
        .arg(command)
        .output()
        .unwrap();
    assert!(out.status.success(), "{command}: {}", describe(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn keys(s3: &S3Server, prefix: &str) -> Vec<(String, u64)> {
    s3.list(BUCKET, prefix)
}

#[test]
fn openssh_and_rclone_round_trip_files_and_directories_on_s3() {
    let s3 = S3Server::start(S3Kind::Moto).unwrap();
    s3.create_bucket(BUCKET);
    let t = Topology::serve().unwrap();
    let api = t.api();
    api.add_user(s3_user(&t, &s3, "sam", "sam-pw"));
    let port = t.sftp_port();
    let dir = tempfile::tempdir().unwrap();
    let (empty, one, big) = (
        dir.path().join("empty"),
        dir.path().join("one"),
        dir.path().join("big"),
    );
    random_file(&empty, 0);
    random_file(&one, 1);
    random_file(&big, 100 << 20);
    let back = dir.path().join("back");
    std::fs::create_dir(&back).unwrap();

    // Up and down with OpenSSH's sftp: 0 B, 1 B and 100 MiB.
    sftp_ok(
        port,
        "sam",
        "sam-pw",
        &format!(
            "mkdir docs\nput {} docs/empty\nput {} docs/one\nput {} docs/big\n\
             get docs/empty {}\nget docs/one {}\nget docs/big {}\n",
            empty.display(),
            one.display(),
            big.display(),
            back.join("empty").display(),
            back.join("one").display(),
            back.join("big").display(),
        ),
    );
    for name in ["empty", "one", "big"] {
        assert_eq!(
            sha256_file(&back.join(name)),
            sha256_file(&dir.path().join(name)),
            "{name}"
        );
    }
    // In the bucket: the marker and three objects, nothing pending.
    assert_eq!(
        keys(&s3, "sam/"),
        vec![
            ("sam/docs/".to_string(), 0),
            ("sam/docs/big".to_string(), 100 << 20),
            ("sam/docs/empty".to_string(), 0),
            ("sam/docs/one".to_string(), 1),
        ]
    );
    assert!(s3.multipart_uploads(BUCKET).is_empty());
    // Nothing was written to the local home.
    assert!(!t.home("sam").join("docs").exists());

    // Hash commands stream from the store; a quota scan lists the prefix.
    let out = ssh_command(port, "sam", "sam-pw", "sha256sum docs/big");
    assert!(
        out.starts_with(&sha256_file(&big)),
        "{out} (expected {})",
        sha256_file(&big)
    );
    // (An object written behind Ferry's back is found by the scan.)
    s3.put(BUCKET, "sam/docs/extra", b"12345");
    assert_eq!(api.usage("sam"), ((100 << 20) + 1, 3));
    let r = api.call("POST", "/api/v2/quotas/users/sam/scan", None);
    assert_eq!(r.status, 202, "{r:?}");
    let scanned = wait_for(Duration::from_secs(30), || {
        (api.usage("sam") == ((100 << 20) + 6, 4)).then_some(())
    });
    assert!(scanned.is_some(), "{:?}\n{}", api.usage("sam"), t.logs());

    // Rename, remove, rmdir (refused while not empty, with the reason: a
    // client that prints the server's message says why).
    let out = sftp_batch(port, "sam", &pw("sam-pw"), "rmdir docs\n", &[]);
    assert!(!out.status.success(), "{}", describe(&out));
    let out = rclone(&t, "sam", "sam-pw", &["rmdir", ":sftp:docs"]);
    assert!(!out.status.success(), "{}", describe(&out));
    assert!(
        describe(&out).contains("directory not empty"),
        "{}",
        describe(&out)
    );
    assert_eq!(keys(&s3, "sam/docs/").len(), 5);
    let listing = sftp_ok(
        port,
        "sam",
        "sam-pw",
        "rename docs/one docs/uno\nrm docs/empty\nrm docs/big\nrm docs/extra\nls -l docs\n",
    );
    assert!(listing.contains("uno"), "{listing}");
    sftp_ok(port, "sam", "sam-pw", "rm docs/uno\nrmdir docs\n");
    assert!(keys(&s3, "sam/").is_empty());

    // scp (SFTP mode and the legacy protocol) lands in the bucket too.
    for (flag, name) in [("-s", "by-sftp"), ("-O", "by-scp")] {
        let out = Command::new("sshpass")
            .args(["-p", "sam-pw", "scp", flag, "-q"])
            .args([
                "-oStrictHostKeyChecking=no",
                "-oUserKnownHostsFile=/dev/null",
            ])
            .args(["-P", &port.to_string()])
            .arg(&one)
            .arg(format!("sam@127.0.0.1:{name}"))
            .output()
            .unwrap();
        assert!(out.status.success(), "{name}: {}", describe(&out));
        assert_eq!(
            s3.get(BUCKET, &format!("sam/{name}")).unwrap(),
            std::fs::read(&one).unwrap()
        );
    }

    // rclone's sftp backend: a tree up, checked by hash, and back.
    let tree = dir.path().join("tree");
    std::fs::create_dir_all(tree.join("sub")).unwrap();
    for i in 0..5 {
        random_file(&tree.join(format!("f{i}")), 1000 * i + 1);
        random_file(&tree.join(format!("sub/g{i}")), 70_000 * i + 7);
    }
    let out = rclone(
        &t,
        "sam",
        "sam-pw",
        &[
            "copy",
            tree.to_str().unwrap(),
            ":sftp:tree",
            "--transfers",
            "4",
        ],
    );
    assert!(out.status.success(), "{}", describe(&out));
    let out = rclone(
        &t,
        "sam",
        "sam-pw",
        &["check", tree.to_str().unwrap(), ":sftp:tree", "--download"],
    );
    assert!(out.status.success(), "{}", describe(&out));
    // Ten objects, and the markers of the two directories rclone made.
    let stored = keys(&s3, "sam/tree/");
    assert_eq!(
        stored.iter().filter(|(k, _)| !k.ends_with('/')).count(),
        10,
        "{stored:?}"
    );
    assert!(
        stored.contains(&("sam/tree/sub/".to_string(), 0)),
        "{stored:?}"
    );
}

#[test]
fn a_directory_of_5000_objects_lists_completely() {
    let s3 = S3Server::start(S3Kind::Moto).unwrap();
    s3.create_bucket(BUCKET);
    // Seeded directly in the store (as another tool would have written
    // them), in one client process.
    let out = Command::new("python3")
        .arg("-c")
        .arg(
            r#"
import sys, boto3
from concurrent.futures import ThreadPoolExecutor
s3 = boto3.client("s3", endpoint_url=sys.argv[1], aws_access_key_id="k",
                  aws_secret_access_key="s", region_name="us-east-1")
def put(i):
    s3.put_object(Bucket=sys.argv[2], Key="lis/many/f%05d" % i, Body=b"x" * (i % 7))
with ThreadPoolExecutor(8) as pool:
    list(pool.map(put, range(5000)))
"#,
        )
        .args([&s3.endpoint, BUCKET])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    let t = Topology::serve().unwrap();
    t.api().add_user(s3_user(&t, &s3, "lis", "lis-pw"));
    let listing = sftp_ok(t.sftp_port(), "lis", "lis-pw", "ls -1 many\n");
    let names: Vec<&str> = listing.lines().filter(|l| l.contains("/f")).collect();
    assert_eq!(names.len(), 5000, "{}", &listing[..listing.len().min(500)]);
    assert!(names.iter().any(|n| n.ends_with("f04999")));
}

#[test]
fn over_quota_and_interrupted_uploads_leave_no_object_and_no_pending_upload() {
    let s3 = S3Server::start(S3Kind::Moto).unwrap();
    s3.create_bucket(BUCKET);
    let t = Topology::serve().unwrap();
    let api = t.api();
    let mut u = s3_user(&t, &s3, "qin", "qin-pw");
    u["quota_size"] = json!(3 << 20);
    api.add_user(u);
    let mut slow = s3_user(&t, &s3, "cut", "cut-pw");
    // 20 MiB at 2 MB/s: killed well before the end.
    slow["upload_bandwidth"] = json!(2000);
    api.add_user(slow);
    let port = t.sftp_port();
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big");
    random_file(&big, 20 << 20);

    // Over the quota mid-way: refused with SFTPGo's message, nothing stays.
    let out = sftp_batch(
        port,
        "qin",
        &pw("qin-pw"),
        &format!("put {} big\n", big.display()),
        &[],
    );
    assert!(!out.status.success(), "{}", describe(&out));
    assert!(
        describe(&out).contains("denying write due to space limit")
            || describe(&out).contains("Failure"),
        "{}",
        describe(&out)
    );
    let gone = wait_for(Duration::from_secs(15), || {
        (keys(&s3, "qin/").is_empty() && s3.multipart_uploads(BUCKET).is_empty()).then_some(())
    });
    assert!(
        gone.is_some(),
        "{:?} {:?}",
        keys(&s3, "qin/"),
        s3.multipart_uploads(BUCKET)
    );
    assert_eq!(api.usage("qin"), (0, 0));

    // A client killed mid-upload: the multipart upload is aborted.
    let mut client = OpenSftp::start(port, "cut", &pw("cut-pw"));
    client.send(&format!("put {} big", big.display()));
    let started = wait_for(Duration::from_secs(30), || {
        (!s3.multipart_uploads(BUCKET).is_empty()).then_some(())
    });
    assert!(started.is_some(), "the upload never started:\n{}", t.logs());
    drop(client);
    let aborted = wait_for(Duration::from_secs(30), || {
        s3.multipart_uploads(BUCKET).is_empty().then_some(())
    });
    assert!(aborted.is_some(), "{:?}", s3.multipart_uploads(BUCKET));
    assert!(keys(&s3, "cut/").is_empty());
}

#[test]
fn a_folder_on_s3_inside_a_local_home() {
    let s3 = S3Server::start(S3Kind::Moto).unwrap();
    s3.create_bucket(BUCKET);
    let t = Topology::serve().unwrap();
    let api = t.api();
    let r = api.call(
        "POST",
        "/api/v2/folders",
        Some(&json!({
            "name": "archive",
            "mapped_path": t.home("unused-archive"),
            "filesystem": s3_filesystem(&s3, "archive/"),
        })),
    );
    assert_eq!(r.status, 201, "{r:?}");
    let mut u = user_json("loc", "loc-pw", &t.home("loc"));
    u["virtual_folders"] = json!([{"name": "archive", "virtual_path": "/archive"}]);
    api.add_user(u);
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("f");
    random_file(&f, 70_000);
    let port = t.sftp_port();
    let listing = sftp_ok(
        port,
        "loc",
        "loc-pw",
        &format!("put {0} here\nput {0} archive/there\nls -1\n", f.display()),
    );
    assert!(listing.contains("archive"), "mount point listed: {listing}");
    assert_eq!(sha256_file(&t.home("loc").join("here")), sha256_file(&f));
    assert!(!t.home("loc").join("archive/there").exists());
    assert_eq!(
        s3.get(BUCKET, "archive/there").unwrap(),
        std::fs::read(&f).unwrap()
    );
    // Moving between the disk and the bucket is not a rename.
    let out = sftp_batch(
        port,
        "loc",
        &pw("loc-pw"),
        "rename here archive/here\n",
        &[],
    );
    assert!(!out.status.success(), "{}", describe(&out));
}

#[test]
fn wrong_credentials_fail_with_a_message_and_a_log_line_naming_the_bucket() {
    let s3 = S3Server::start(S3Kind::S3sFs).unwrap();
    s3.create_bucket(BUCKET);
    let t = Topology::serve().unwrap();
    let api = t.api();
    api.add_user(s3_user(&t, &s3, "ok", "ok-pw"));
    let mut bad = s3_user(&t, &s3, "bad", "bad-pw");
    bad["filesystem"]["s3config"]["access_secret"] =
        json!({"status": "Plain", "payload": "not-the-secret"});
    api.add_user(bad);
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("f");
    random_file(&f, 5000);
    let port = t.sftp_port();
    // The right secret works (s3s-fs checks every signature).
    sftp_ok(port, "ok", "ok-pw", &format!("put {} f\nls\n", f.display()));
    assert_eq!(s3.get(BUCKET, "ok/f").unwrap(), std::fs::read(&f).unwrap());
    // The wrong one fails (OpenSSH's sftp prints only the status), a client
    // that prints the server's message says why, and the log names the user
    // and the bucket.
    let out = sftp_batch(
        port,
        "bad",
        &pw("bad-pw"),
        &format!("put {} f\n", f.display()),
        &[],
    );
    assert!(!out.status.success(), "{}", describe(&out));
    let out = rclone(
        &t,
        "bad",
        "bad-pw",
        &["copyto", f.to_str().unwrap(), ":sftp:f"],
    );
    assert!(!out.status.success(), "{}", describe(&out));
    assert!(
        describe(&out).contains("refused the credentials"),
        "{}",
        describe(&out)
    );
    let logged = wait_for(Duration::from_secs(10), || {
        t.logs()
            .lines()
            .any(|l| {
                l.contains("object storage refused")
                    && l.contains(&format!("s3://{BUCKET}/bad/"))
                    && l.contains("\"user\":\"bad\"")
            })
            .then_some(())
    });
    assert!(logged.is_some(), "{}", t.logs());
    assert!(s3.get(BUCKET, "bad/f").is_none());
}

#[test]
fn two_edges_share_one_bucket() {
    let s3 = S3Server::start(S3Kind::Moto).unwrap();
    s3.create_bucket(BUCKET);
    let t = Topology::split(2).unwrap();
    t.api().add_user(s3_user(&t, &s3, "flo", "flo-pw"));
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("f");
    random_file(&f, 9 << 20);
    sftp_ok(
        t.sftp_ports[0],
        "flo",
        "flo-pw",
        &format!("put {} shared\n", f.display()),
    );
    let got = dir.path().join("got");
    let listing = sftp_ok(
        t.sftp_ports[1],
        "flo",
        "flo-pw",
        &format!("ls -l\nget shared {}\n", got.display()),
    );
    assert!(listing.contains("shared"), "{listing}");
    assert_eq!(sha256_file(&got), sha256_file(&f));
}

#[allow(dead_code)]
fn exists(p: &Path) -> bool {
    p.exists()
}

#[test]
fn an_azure_blob_user_round_trips_with_openssh() {
    let az = ferry_tests::stores::AzuriteServer::start().unwrap();
    az.create_container("ferry-box");
    let t = Topology::serve().unwrap();
    let mut u = user_json("azu", "azu-pw", &t.home("azu"));
    u["filesystem"] = json!({
        "provider": 3,
        "azblobconfig": {
            "container": "ferry-box",
            "account_name": az.account,
            "account_key": {"status": "Plain", "payload": az.key},
            "endpoint": az.endpoint,
            "use_emulator": true,
            "key_prefix": "azu/",
        }
    });
    t.api().add_user(u);
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("f");
    random_file(&f, 6 << 20);
    let got = dir.path().join("got");
    let port = t.sftp_port();
    let listing = sftp_ok(
        port,
        "azu",
        "azu-pw",
        &format!(
            "mkdir d\nput {} d/f\nls -l d\nget d/f {}\n",
            f.display(),
            got.display()
        ),
    );
    assert!(listing.contains(" f"), "{listing}");
    assert_eq!(sha256_file(&got), sha256_file(&f));
    let mut blobs = az.list("ferry-box", "azu/");
    blobs.sort();
    assert_eq!(
        blobs,
        vec![("azu/d/".to_string(), 0), ("azu/d/f".to_string(), 6 << 20)]
    );
    sftp_ok(port, "azu", "azu-pw", "rm d/f\nrmdir d\n");
    assert!(az.list("ferry-box", "azu/").is_empty());
}
