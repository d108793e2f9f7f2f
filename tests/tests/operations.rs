//! What an operator watches and does: the edge's telemetry listener
//! (`/healthz`, `/readyz`, `/metrics`), the control plane's `/metrics`
//! (checked with `promtool` when installed, as CI does), and a graceful
//! drain on SIGTERM that lets a live upload finish.

use std::time::Duration;

use ferry_tests::*;
use serde_json::json;

fn get(url: &str) -> (u16, String) {
    match reqwest::blocking::get(url) {
        Ok(r) => {
            let status = r.status().as_u16();
            (status, r.text().unwrap_or_default())
        }
        Err(_) => (0, String::new()),
    }
}

/// The value of the sample named `name` (with its labels, if any).
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// `promtool check metrics` on `text`, when promtool is installed (CI
/// installs it).
fn promtool_check(text: &str) {
    use std::io::Write;
    let Ok(mut child) = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
    else {
        panic!("promtool is not installed (install prometheus: see .ci/run)");
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "promtool: {}", describe(&out));
}

#[test]
fn telemetry_metrics_and_a_graceful_drain() {
    let mut t = Topology::split(2).unwrap();
    let api = t.api();
    let home = t.home("dana");
    let mut user = user_json("dana", "dana-pw", &home);
    // One session at a time, and slow uploads: the drain has a live
    // transfer to wait for, and must give the session back.
    user["max_sessions"] = json!(1);
    user["upload_bandwidth"] = json!(256);
    api.add_user(user);
    let telemetry = format!("http://127.0.0.1:{}", t.telemetry_ports[0]);
    assert_eq!(get(&format!("{telemetry}/healthz")), (200, "ok".into()));
    assert_eq!(get(&format!("{telemetry}/readyz")).0, 200);
    assert_eq!(
        get(&format!("{telemetry}/debug/pprof/heap")).0,
        404,
        "the profiler is off by default"
    );

    // Counters move with a real transfer.
    let port = t.sftp_ports[0];
    std::fs::create_dir_all(&home).unwrap();
    let small = t.dir.path().join("small.bin");
    random_file(&small, 10_000);
    let (ok, out) = sftp1(
        port,
        "dana",
        &pw("dana-pw"),
        &format!("put {} s.bin", small.display()),
    );
    assert!(ok, "{out}");
    let (ok, out) = sftp1(port, "dana", &pw("dana-pw"), "get s.bin /dev/null");
    assert!(ok, "{out}");
    let (_, edge_metrics) = get(&format!("{telemetry}/metrics"));
    assert_eq!(
        sample(&edge_metrics, "ferry_uploads_total"),
        Some(1.0),
        "{edge_metrics}"
    );
    assert_eq!(sample(&edge_metrics, "ferry_downloads_total"), Some(1.0));
    assert_eq!(
        sample(&edge_metrics, "ferry_upload_bytes_total"),
        Some(10_000.0)
    );
    assert_eq!(
        sample(&edge_metrics, "ferry_control_plane_connected"),
        Some(1.0)
    );
    promtool_check(&edge_metrics);
    let (status, cp_metrics) = get(&format!("{}/metrics", t.base()));
    assert_eq!(status, 200);
    assert!(
        sample(
            &cp_metrics,
            r#"ferry_logins_total{method="password",outcome="ok"}"#
        )
        .is_some_and(|v| v >= 2.0),
        "{cp_metrics}"
    );
    assert_eq!(
        sample(&cp_metrics, "ferry_dataprovider_availability"),
        Some(1.0)
    );
    assert_eq!(sample(&cp_metrics, "ferry_edges_attached"), Some(2.0));
    promtool_check(&cp_metrics);

    // A 2 MiB upload at 256 KB/s takes ~8 s; SIGTERM arrives in the middle.
    let big = t.dir.path().join("big.bin");
    random_file(&big, 2 * 1024 * 1024);
    let put = {
        let big = big.clone();
        std::thread::spawn(move || {
            sftp1(
                port,
                "dana",
                &pw("dana-pw"),
                &format!("put {} big.bin", big.display()),
            )
        })
    };
    let busy = wait_for(Duration::from_secs(10), || {
        api.connections()
            .iter()
            .any(|c| {
                c["active_transfers"]
                    .as_array()
                    .is_some_and(|a| !a.is_empty())
            })
            .then_some(())
    });
    assert!(busy.is_some(), "the upload is under way");
    t.procs[1].terminate();
    let draining = wait_for(Duration::from_secs(5), || {
        (get(&format!("{telemetry}/readyz")).0 == 503).then_some(())
    });
    assert!(draining.is_some(), "/readyz fails at once while draining");
    assert!(!ssh_ready(port), "no new connections while draining");
    let status = t.procs[1]
        .wait_exit(Duration::from_secs(60))
        .expect("the edge exits after the drain");
    assert!(status.success(), "exit status {status:?}");
    let (ok, out) = put.join().unwrap();
    assert!(ok, "the upload finished during the drain: {out}");
    assert_eq!(sha256_file(&home.join("big.bin")), sha256_file(&big));
    // The session's lease went back: max_sessions 1 lets dana in elsewhere
    // at once (not after the lease TTL).
    let (ok, out) = sftp1(t.sftp_ports[1], "dana", &pw("dana-pw"), "ls");
    assert!(ok, "{out}");
    assert!(t.logs().contains("drained, exiting"));
}

#[test]
fn the_profiler_and_per_user_metrics_when_opted_in() {
    let t = Topology::split_full(
        1,
        &[],
        &[
            ("FERRY_TELEMETRY__ENABLE_PROFILER", "true"),
            ("FERRY_TELEMETRY__PER_USER_METRICS", "true"),
            ("FERRY_TELEMETRY__PER_USER_METRICS_LIMIT", "1"),
        ],
    )
    .unwrap();
    let telemetry = format!("http://127.0.0.1:{}", t.telemetry_ports[0]);
    let resp = reqwest::blocking::Client::new()
        .get(format!("{telemetry}/debug/pprof/profile?seconds=1"))
        .timeout(Duration::from_secs(30))
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let body = resp.bytes().unwrap();
    // A pprof Profile message: field 1 (sample_type), length-delimited.
    assert!(body.len() > 10 && body[0] == 0x0a, "{} bytes", body.len());
    let (status, heap) = get(&format!("{telemetry}/debug/pprof/heap"));
    assert_eq!(status, 200);
    assert!(
        heap.contains("VmRSS:") && heap.contains("Threads:"),
        "{heap}"
    );
}
