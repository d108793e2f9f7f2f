//! What one client controls on an edge is bounded and freed (issue 16,
//! items 0–3): pipelined writes with barriers under a small client window,
//! rclone's parallel transfers, prefetching downloads of clients that die,
//! channels per connection and handles per connection and per user. Real
//! server process; paramiko (raw SFTP packets on its channel API) and
//! rclone as the clients.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use ferry_tests::*;
use serde_json::{Value, json};

fn flow(port: u16, user: &str, password: &str, args: &[&str]) -> Value {
    let out = Command::new("python3")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("py/flow.py"))
        .args([args[0], &port.to_string(), user, password])
        .args(&args[1..])
        .output()
        .expect("python3 with paramiko");
    assert!(out.status.success(), "flow.py {args:?}: {}", describe(&out));
    let last = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap_or_default()
        .to_string();
    serde_json::from_str(&last).unwrap_or_else(|e| panic!("{e}: {}", describe(&out)))
}

fn sha256(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}

/// Resident memory of `pid` in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[test]
fn pipelined_writes_with_barriers_under_a_small_client_window() {
    let t = Topology::serve().unwrap();
    let home = t.home("piper");
    t.api().add_user(user_json("piper", "piper-pw", &home));
    // 256 bytes of window: every reply waits for this client to read. 320
    // WRITEs (10 MiB) are all sent before it reads one reply; the old edge
    // stopped reading the socket and never answered.
    let report = flow(
        t.sftp_port(),
        "piper",
        "piper-pw",
        &["pipeline", "256", "320"],
    );
    eprintln!("pipeline report: {report}");
    assert_eq!(report["bad"], json!({}), "{report}");
    assert_eq!(report["replies"], report["expected"], "{report}");
    assert_eq!(report["in_order"], json!(true), "{report}");
    assert_eq!(
        report["kinds"],
        json!({"stat": "attrs", "open": "handle"}),
        "{report}"
    );
    let data = std::fs::read(home.join("piped")).unwrap();
    assert_eq!(data.len() as u64, report["size"].as_u64().unwrap());
    assert_eq!(sha256(&data), report["sha256"].as_str().unwrap());
    assert!(home.join("other").exists());
}

#[test]
fn rclone_copies_with_eight_transfers() {
    let t = Topology::serve().unwrap();
    let home = t.home("rc");
    t.api().add_user(user_json("rc", "rc-pw", &home));
    let src = t.dir.path().join("rclone-src");
    std::fs::create_dir_all(&src).unwrap();
    for i in 0..50 {
        // 64 KiB to 1.5 MiB: several transfers' WRITEs interleave with the
        // STATs and OPENs of the others.
        random_file(&src.join(format!("f{i:02}.bin")), 65536 + i * 30_000);
    }
    let out = rclone(
        &t,
        "rc",
        "rc-pw",
        &[
            "copy",
            src.to_str().unwrap(),
            ":sftp:dst",
            "--transfers",
            "8",
            "--checkers",
            "8",
            "--timeout",
            "60s",
            "--sftp-disable-hashcheck",
        ],
    );
    assert!(out.status.success(), "{}\n{}", describe(&out), t.logs());
    for i in 0..50 {
        let name = format!("f{i:02}.bin");
        assert_eq!(
            sha256_file(&home.join("dst").join(&name)),
            sha256_file(&src.join(&name)),
            "{name}"
        );
    }
}

#[test]
fn prefetching_downloads_of_dead_clients_are_freed() {
    let t = Topology::serve().unwrap();
    let pid = t.procs[0].pid();
    let home = t.home("quitter");
    std::fs::create_dir_all(&home).unwrap();
    random_file(&home.join("big.bin"), 48 << 20);
    t.api().add_user(user_json("quitter", "quitter-pw", &home));
    // A first login and transfer, so the baseline includes what any
    // session warms up (thread pools, the database connection).
    let (ok, text) = sftp1(t.sftp_port(), "quitter", &pw("quitter-pw"), "ls -l");
    assert!(ok, "{text}");
    let fds_before = open_fds(pid);
    let rss_before = rss_kib(pid);
    let mut peak = rss_before;
    // 20 is max_per_host_connections: had any of them stayed, the last
    // login below would be refused.
    for _ in 0..20 {
        let report = flow(
            t.sftp_port(),
            "quitter",
            "quitter-pw",
            &["prefetch", "/big.bin"],
        );
        assert!(report["buffered"].as_u64().unwrap() >= 1 << 20, "{report}");
        peak = peak.max(rss_kib(pid));
    }
    let freed = wait_for(Duration::from_secs(20), || {
        (t.api().connections().is_empty() && open_fds(pid) <= fds_before).then_some(())
    });
    assert!(
        freed.is_some(),
        "connections {:?}, fds {} (before {fds_before})\n{}",
        t.api().connections(),
        open_fds(pid),
        t.logs()
    );
    let (ok, text) = sftp1(t.sftp_port(), "quitter", &pw("quitter-pw"), "ls -l");
    assert!(ok, "the address can still log in: {text}");
    let rss_after = rss_kib(pid);
    eprintln!("RSS KiB: before {rss_before}, peak {peak}, after {rss_after}");
    // Each dead session held at most its queued-reply budget (16 MiB)
    // while it lived; none of it is kept (allocator slack aside).
    assert!(
        rss_after < rss_before + 64 * 1024,
        "RSS before {rss_before} KiB, after {rss_after} KiB"
    );
}

#[test]
fn a_connection_is_held_at_its_channel_limit() {
    let t = Topology::serve().unwrap();
    let pid = t.procs[0].pid();
    let home = t.home("opener");
    t.api().add_user(user_json("opener", "opener-pw", &home));
    let rss_before = rss_kib(pid);
    let report = flow(t.sftp_port(), "opener", "opener-pw", &["channels", "200"]);
    eprintln!("channels report: {report}");
    // OpenSSH's MaxSessions: 10, then SSH_OPEN_RESOURCE_SHORTAGE (4).
    assert_eq!(report["opened"], json!(10), "{report}");
    assert_eq!(report["refused"]["code"], json!(4), "{report}");
    assert_eq!(report["reopened"], json!(true), "{report}");
    assert_eq!(report["alive"], json!(true), "{report}");
    assert!(
        t.logs().contains("sftpd.max_channels_per_connection"),
        "the refusal is logged with its setting"
    );
    assert!(rss_kib(pid) < rss_before + 64 * 1024);
}

#[test]
fn handles_are_refused_at_the_caps_and_other_users_are_unaffected() {
    let t = Topology::serve_with(&[
        ("FERRY_SFTPD__MAX_HANDLES_PER_CONNECTION".into(), "8".into()),
        ("FERRY_SFTPD__MAX_HANDLES_PER_USER".into(), "12".into()),
    ])
    .unwrap();
    let port = t.sftp_port();
    for name in ["hog", "bystander"] {
        let home = t.home(name);
        std::fs::create_dir_all(&home).unwrap();
        std::fs::write(home.join("f"), b"x").unwrap();
        t.api()
            .add_user(user_json(name, &format!("{name}-pw"), &home));
    }
    // Holds its handles open until its stdin closes.
    let hold = |user: &str, n: &str| {
        let mut child = Command::new("python3")
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("py/flow.py"))
            .args(["handles", &port.to_string(), user, &format!("{user}-pw")])
            .args(["/f", n])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        let v: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
        (child, v)
    };
    let (c1, first) = hold("hog", "100");
    assert_eq!(first["opened"], json!(8), "{first}");
    assert!(
        first["refused"]
            .as_str()
            .unwrap()
            .contains("sftpd.max_handles_per_connection"),
        "{first}"
    );
    let (c2, second) = hold("hog", "100");
    assert_eq!(second["opened"], json!(4), "{second}");
    assert!(
        second["refused"]
            .as_str()
            .unwrap()
            .contains("sftpd.max_handles_per_user"),
        "{second}"
    );
    let (c3, other) = hold("bystander", "5");
    assert_eq!(other["opened"], json!(5), "{other}");
    assert_eq!(other["refused"], Value::Null, "{other}");
    for mut c in [c1, c2, c3] {
        drop(c.stdin.take());
        assert!(c.wait().unwrap().success());
    }
    // Closed handles come back: the user opens as many as before.
    let (mut c4, again) = hold("hog", "8");
    assert_eq!(again["opened"], json!(8), "{again}");
    drop(c4.stdin.take());
    assert!(c4.wait().unwrap().success());
}

#[test]
fn session_limits_below_their_minimum_stop_the_start() {
    let out = serve_with_setting("FERRY_SFTPD__MAX_CHANNELS_PER_CONNECTION", "0");
    assert!(!out.status.success());
    let text = describe(&out);
    assert!(
        text.contains("sftpd.max_channels_per_connection: 0 is below the minimum of 1"),
        "{text}"
    );
}

/// An edge out of file descriptors closes each waiting client at once
/// (one descriptor is kept spare for that) instead of leaving it hanging in
/// the backlog, and logs in again once descriptors are free.
#[test]
fn out_of_descriptors_the_ssh_listener_sheds_clients_and_recovers() {
    use std::io::Read;
    use std::net::TcpStream;
    let t = Topology::serve_with(&[("FERRY_COMMON__MAX_PER_HOST_CONNECTIONS".into(), "0".into())])
        .unwrap();
    let pid = t.procs[0].pid();
    let home = t.home("fd");
    t.api().add_user(user_json("fd", "fd-pw", &home));
    let limit = open_fds(pid) + 40;
    let out = Command::new("prlimit")
        .args([
            "--pid",
            &pid.to_string(),
            &format!("--nofile={limit}:{limit}"),
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    let addr = format!("127.0.0.1:{}", t.sftp_port());
    // Each connection waiting for its SSH handshake holds a descriptor.
    let mut held = Vec::new();
    let (mut closed, mut hung) = (0, 0);
    for _ in 0..80 {
        let mut s = TcpStream::connect(&addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut first = [0u8; 4];
        match s.read(&mut first) {
            Ok(n) if n > 0 => {}
            Ok(_) => closed += 1,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => closed += 1,
            Err(_) => hung += 1,
        }
        held.push(s);
    }
    assert!(closed > 0, "no client was shed at the descriptor limit");
    assert_eq!(hung, 0, "clients left hanging in the backlog");
    assert!(
        t.logs()
            .contains("connection refused: out of file descriptors"),
        "{}",
        t.logs()
    );
    drop(held);
    let back = wait_for(Duration::from_secs(30), || {
        sftp1(t.sftp_port(), "fd", &pw("fd-pw"), "ls")
            .0
            .then_some(())
    });
    assert!(
        back.is_some(),
        "no login after descriptors were freed:\n{}",
        t.logs()
    );
}
