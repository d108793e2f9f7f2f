//! Limits of the control plane's REST side, against a real `ferry serve`:
//! password hashing bounded by its slots (memory measured by the kernel).

use std::time::Duration;

use ferry_tests::*;

/// A field of `/proc/<pid>/status` in bytes (`VmRSS`, `VmHWM`).
fn proc_status_bytes(pid: u32, field: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with(&format!("{field}:")))
        .unwrap_or_else(|| panic!("{field} missing in /proc/{pid}/status"));
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap();
    kib * 1024
}

/// A sample of the control plane's `/metrics` (0 when absent).
fn metric(base: &str, line_start: &str) -> f64 {
    let text = reqwest::blocking::get(format!("{base}/metrics"))
        .unwrap()
        .text()
        .unwrap();
    text.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

const MIB: u64 = 1024 * 1024;

#[test]
fn concurrent_bad_token_requests_stay_within_the_hashing_slots() {
    const SLOTS: u64 = 2;
    const ARGON2_MIB: u64 = 64;
    const REQUESTS: usize = 64;
    let env = [
        (
            "FERRY_DATA_PROVIDER__PASSWORD_HASHING__MAX_CONCURRENT",
            SLOTS.to_string(),
        ),
        (
            "FERRY_DATA_PROVIDER__PASSWORD_HASHING__MAX_WAIT_MS",
            "100".to_string(),
        ),
        // 64 clients from one address: above the default per-address cap.
        ("FERRY_HTTPD__MAX_CONNECTIONS_PER_HOST", "100".to_string()),
        (
            "FERRY_DATA_PROVIDER__PASSWORD_HASHING__ARGON2_OPTIONS__MEMORY",
            (ARGON2_MIB * 1024).to_string(),
        ),
    ]
    .map(|(k, v)| (k.to_string(), v));
    let t = Topology::serve_with(&env).unwrap();
    let pid = t.procs[0].pid();
    let base = t.base();
    assert_eq!(metric(&base, "ferry_password_hash_slots "), SLOTS as f64);
    // Warm every path once (a good login, a bad one, an unknown name), then
    // take the resident size at rest as the baseline.
    t.api();
    let http = reqwest::blocking::Client::new();
    let token = |user: &str, pw: &str| {
        let r = http
            .get(format!("{base}/api/v2/token"))
            .basic_auth(user, Some(pw))
            .send()
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json::<serde_json::Value>().unwrap_or_default())
    };
    assert_eq!(token("admin", "wrong").0, 401);
    assert_eq!(token("nobody", "wrong").0, 401);
    let baseline = proc_status_bytes(pid, "VmRSS");

    // Half for the admin, half for unknown names (the dummy check).
    let barrier = std::sync::Barrier::new(REQUESTS);
    let replies: Vec<(u16, serde_json::Value)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..REQUESTS)
            .map(|i| {
                let (barrier, token) = (&barrier, &token);
                s.spawn(move || {
                    barrier.wait();
                    let user = if i % 2 == 0 {
                        "admin".to_string()
                    } else {
                        format!("ghost{i}")
                    };
                    token(&user, &format!("guess-{i}"))
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let peak = proc_status_bytes(pid, "VmHWM");

    let busy = replies.iter().filter(|(s, _)| *s == 503).count();
    for (status, body) in &replies {
        match status {
            401 => {}
            503 => assert!(
                body["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("too many password checks")),
                "{body}"
            ),
            other => panic!("unexpected status {other}: {body}"),
        }
    }
    assert!(
        busy > 0,
        "64 checks through 2 slots waiting 100 ms: some are refused"
    );
    assert_eq!(
        metric(
            &base,
            "ferry_password_checks_refused_total{kind=\"verify\"}"
        ),
        busy as f64
    );
    assert!(t.logs().contains("password check refused"), "{}", t.logs());
    // The arithmetic: at most SLOTS hashes of ARGON2_MIB live at once, plus
    // what 64 connections and their tasks take (generously 32 MiB). Without
    // the slots, 64 × 64 MiB = 4 GiB.
    let allowed = baseline + SLOTS * ARGON2_MIB * MIB + 32 * MIB;
    eprintln!(
        "baseline RSS {} MiB, peak (VmHWM) {} MiB, allowed {} MiB, refused {busy}/{REQUESTS}",
        baseline / MIB,
        peak / MIB,
        allowed / MIB
    );
    assert!(
        peak <= allowed,
        "peak {} MiB above the {} MiB the slots allow",
        peak / MIB,
        allowed / MIB
    );
    // Still serving: a good login works once the flood is over.
    assert_eq!(token("admin", ADMIN_PASSWORD).0, 200);
}

/// `ferry serve` started under `prlimit` with the given open-files limits,
/// extra environment and a log file; returns (process, http, sftp, log).
fn serve_limited(
    dir: &std::path::Path,
    nofile: (u64, u64),
    env: &[(&str, &str)],
) -> (Proc, u16, u16, std::path::PathBuf) {
    let log = dir.join("ferry.log");
    let mut cmd = std::process::Command::new("prlimit");
    cmd.arg(format!("--nofile={}:{}", nofile.0, nofile.1))
        .arg(bin("ferry"))
        .arg("serve")
        .arg("--data-dir")
        .arg(dir.join("data"))
        .args(["--http-bind", "127.0.0.1:0"])
        .args(["--grpc-bind", "127.0.0.1:0"])
        .args(["--sftp-bind", "127.0.0.1:0"])
        .arg("--log-file-path")
        .arg(&log)
        .env("FERRY_DEFAULT_ADMIN_PASSWORD", ADMIN_PASSWORD)
        .env_remove("FERRY_EDGE_TOKEN")
        .envs(env.iter().copied());
    let (p, addrs) = start_bound(cmd, dir, "stderr").unwrap();
    let (http, sftp) = (addrs.port("http"), addrs.port("sftp"));
    let base = addrs.base();
    let up = wait_for(Duration::from_secs(60), || {
        Api::login(&base, "admin", ADMIN_PASSWORD).ok()
    });
    assert!(up.is_some(), "{}", p.log_text());
    assert!(wait_for(Duration::from_secs(30), || ssh_ready(sftp).then_some(())).is_some());
    (p, http, sftp, log)
}

/// A REST client whose connections come from `source` (another loopback
/// address than the test's other traffic).
fn client_from(source: &str) -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .local_address(source.parse::<std::net::IpAddr>().unwrap())
        .build()
        .unwrap()
}

/// True when the server has closed `c` (reads end); a read that times out
/// means it is still open.
fn is_closed(c: &mut std::net::TcpStream) -> bool {
    use std::io::Read;
    let mut buf = [0u8; 512];
    loop {
        match c.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) => {
                return !matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                );
            }
        }
    }
}

#[test]
fn half_open_http_connections_starve_neither_ssh_nor_rest() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    // Started with a soft limit of 256 open files (hard 1024): Ferry raises
    // it to 1024; 2,000 connections held open would still exhaust it.
    let (p, http, sftp, log) = serve_limited(
        dir.path(),
        (256, 1024),
        &[
            ("FERRY_HTTPD__READ_HEADER_TIMEOUT", "8"),
            ("FERRY_HTTPD__IDLE_TIMEOUT", "5"),
        ],
    );
    let pid = p.pid();
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let nofile = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    assert_eq!(
        nofile.split_whitespace().nth(3),
        Some("1024"),
        "soft limit raised to the hard one: {nofile}"
    );
    let base = format!("http://127.0.0.1:{http}");
    {
        let api = Api::login(&base, "admin", ADMIN_PASSWORD).unwrap();
        api.add_user(user_json("hal", "hal-pw", &dir.path().join("homes/hal")));
    }
    // The admin client's kept-alive connection is closed before counting.
    let quiet = wait_for(Duration::from_secs(15), || {
        (open_tcp_on(http) == 0).then_some(())
    });
    assert!(quiet.is_some(), "the admin client's connection stays open");
    let fds_before = open_fds(pid);

    // 2,000 connections that never send a request, from 127.0.0.1.
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], http));
    let flood = std::time::Instant::now();
    // The most descriptors the server holds while it happens.
    let done = std::sync::atomic::AtomicBool::new(false);
    let peak_fds = std::sync::atomic::AtomicUsize::new(0);
    let (mut conns, refused) = std::thread::scope(|s| {
        s.spawn(|| {
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                peak_fds.fetch_max(open_fds(pid), std::sync::atomic::Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        let mut conns: Vec<std::net::TcpStream> = (0..2000)
            .map(|_| std::net::TcpStream::connect(addr).unwrap())
            .collect();
        // The server answers all but its per-address cap (50) with a 429
        // and closes them.
        let mut refused = 0;
        for c in &mut conns {
            c.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
            let mut buf = [0u8; 512];
            if let Ok(n) = c.read(&mut buf)
                && buf[..n].starts_with(b"HTTP/1.1 429")
            {
                refused += 1;
            }
        }
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        (conns, refused)
    });
    let peak = peak_fds.into_inner();
    eprintln!(
        "server fds: {fds_before} at rest, at most {peak} with 2,000 half-open connections; \
         {refused} refused in {:?}",
        flood.elapsed()
    );
    // All but the 50 of max_connections_per_host (more get in when the
    // first ones reach the idle timeout while the flood is still going on).
    assert!(refused >= 1500, "{refused} refused");
    assert!(peak <= fds_before + 55, "{peak} fds held");

    // Meanwhile REST (from another address) and SSH logins work.
    let other = client_from("127.0.0.3");
    let r = other.get(format!("{base}/healthz")).send().unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let r = other
        .get(format!("{base}/api/v2/token"))
        .basic_auth("admin", Some(ADMIN_PASSWORD))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let (ok, out) = sftp1(sftp, "hal", &pw("hal-pw"), "pwd");
    assert!(ok, "{out}");

    // The silent ones are closed once idle.
    let closed = wait_for(Duration::from_secs(10), || {
        conns.iter_mut().all(is_closed).then_some(())
    });
    assert!(closed.is_some(), "idle connections are closed");
    assert!(open_fds(pid) <= fds_before + 5);

    // A slow client that keeps sending header bytes is not idle: it is cut
    // off at the header timeout.
    let mut slow = std::net::TcpStream::connect(addr).unwrap();
    let start = std::time::Instant::now();
    let mut cut = false;
    while start.elapsed() < Duration::from_secs(15) {
        if slow.write_all(b"X").is_err() {
            cut = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(cut, "the slow client was never cut off");
    assert!(
        start.elapsed() >= Duration::from_secs(6),
        "{:?}",
        start.elapsed()
    );

    let text = wait_for(Duration::from_secs(10), || {
        std::fs::read_to_string(&log)
            .ok()
            .filter(|t| t.contains("httpd.read_header_timeout"))
    })
    .expect("the header timeout is logged");
    for limit in ["httpd.max_connections_per_host", "httpd.idle_timeout"] {
        assert!(text.contains(limit), "{limit} not logged");
    }
    let m = |l: &str| metric(&base, &format!("ferry_http_limits_total{{limit=\"{l}\"}}"));
    assert_eq!(m("max_connections_per_host"), refused as f64);
    assert!(m("idle_timeout") >= 50.0, "{}", m("idle_timeout"));
    assert!(m("read_header_timeout") >= 1.0);
}

#[test]
fn a_rest_brute_force_is_banned_and_logged_for_fail2ban() {
    let dir = tempfile::tempdir().unwrap();
    let (_p, http, sftp, log) = serve_limited(
        dir.path(),
        (20000, 20000),
        &[
            ("FERRY_COMMON__DEFENDER__ENABLED", "true"),
            ("FERRY_COMMON__DEFENDER__THRESHOLD", "8"),
            ("FERRY_COMMON__DEFENDER__BAN_TIME", "5"),
        ],
    );
    let base = format!("http://127.0.0.1:{http}");
    let api = Api::login(&base, "admin", ADMIN_PASSWORD).unwrap();
    api.add_user(user_json("bea", "bea-pw", &dir.path().join("homes/bea")));
    let attacker = client_from("127.0.0.5");
    let token = |user: &str, pw: &str| {
        let r = attacker
            .get(format!("{base}/api/v2/token"))
            .basic_auth(user, Some(pw))
            .send()
            .unwrap();
        (
            r.status().as_u16(),
            r.json::<serde_json::Value>().unwrap_or_default(),
        )
    };
    // Wrong passwords (score 1 each) and unknown names (2 each), SFTPGo's
    // defaults, against a threshold of 8.
    let mut tries = Vec::new();
    for i in 0..10 {
        let user = if i % 2 == 0 {
            "admin".to_string()
        } else {
            format!("ghost{i}")
        };
        let (status, body) = token(&user, &format!("guess-{i}"));
        tries.push(status);
        if status == 403 {
            assert!(
                body["message"]
                    .as_str()
                    .unwrap()
                    .contains("banned by the defender"),
                "{body}"
            );
            break;
        }
    }
    // 1+2+1+2+1 = 7 after five tries, 9 after six: the seventh is refused.
    assert_eq!(tries, [401, 401, 401, 401, 401, 401, 403], "{tries:?}");
    // Banned: even the right password, and an API key, from that address.
    assert_eq!(token("admin", ADMIN_PASSWORD).0, 403);
    let r = attacker
        .get(format!("{base}/api/v2/users"))
        .header("X-SFTPGO-API-KEY", "abc.def")
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 403);
    // The ban reaches the edge: no SSH from that address either.
    let out = sftp_batch(
        sftp,
        "bea",
        &pw("bea-pw"),
        "pwd\n",
        &["-oBindAddress=127.0.0.5"],
    );
    assert!(!out.status.success(), "{}", describe(&out));
    // Others are not affected; the host is listed with its ban.
    let (ok, out) = sftp1(sftp, "bea", &pw("bea-pw"), "pwd");
    assert!(ok, "{out}");
    let hosts = api.call("GET", "/api/v2/defender/hosts", None);
    let host = hosts
        .body
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["ip"] == "127.0.0.5")
        .cloned()
        .unwrap_or_else(|| panic!("{:?}", hosts.body));
    assert!(
        host["ban_time"].as_str().is_some_and(|t| !t.is_empty()),
        "{host}"
    );

    // Guessed API keys score too (from another address), and are logged.
    let guesser = client_from("127.0.0.6");
    for key in ["nokey.secret", "nokey.secret.admin"] {
        let r = guesser
            .get(format!("{base}/api/v2/users"))
            .header("X-SFTPGO-API-KEY", key)
            .send()
            .unwrap();
        assert_eq!(r.status().as_u16(), 401);
    }

    // SFTPGo's connection_failed lines, unknown names included, protocol HTTP.
    let text = wait_for(Duration::from_secs(10), || {
        std::fs::read_to_string(&log)
            .ok()
            .filter(|t| t.matches("\"login_type\":\"api_key\"").count() == 2)
    })
    .expect("the failures are logged");
    let failed: Vec<serde_json::Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|l| l["sender"] == "connection_failed" && l["protocol"] == "HTTP")
        .collect();
    assert_eq!(failed.len(), 8, "{failed:?}");
    let ghosts = failed
        .iter()
        .filter(|l| l["username"].as_str().unwrap().starts_with("ghost"));
    assert_eq!(ghosts.count(), 3);
    assert!(
        failed
            .iter()
            .take(6)
            .all(|l| l["client_ip"] == "127.0.0.5" && l["login_type"] == "password"),
        "{failed:?}"
    );
    for secret in [ADMIN_PASSWORD, "guess-0", "guess-1"] {
        assert!(!text.contains(secret), "{secret} is in the log");
    }
    // fail2ban's own tool matches exactly those eight lines.
    let filter = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../contrib/fail2ban/filter.d/ferry.conf");
    let out = std::process::Command::new("fail2ban-regex")
        .arg(&log)
        .arg(&filter)
        .output()
        .expect("fail2ban-regex is installed (.ci/run installs it)");
    let report = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{}", describe(&out));
    assert!(report.contains(" 8 matched"), "{report}");
}
