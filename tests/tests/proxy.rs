//! PROXY protocol v1/v2 behind a real HAProxy: the edge sees the client's
//! address (clients bind 127.0.0.2 / 127.0.0.3), login filters apply to it,
//! the connection list shows it; connections without an allowed header are
//! refused in mode 2, and a header sent to a listener with PROXY off fails.

use std::time::Duration;

use ferry_tests::*;
use serde_json::json;

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn login_via(port: u16, from: &str, cred: &Cred) -> bool {
    let bind = format!("-oBindAddress={from}");
    sftp_batch(port, "wade", cred, "pwd\n", &[&bind])
        .status
        .success()
}

#[test]
fn real_client_addresses_through_haproxy() {
    let t = Topology::serve_with(&env(&[
        ("FERRY_COMMON__PROXY_PROTOCOL", "2"),
        ("FERRY_COMMON__PROXY_ALLOWED", "127.0.0.1"),
    ]))
    .unwrap();
    let hap = Haproxy::start(t.dir.path(), t.sftp_port()).unwrap();
    let api = t.api();
    let mut user = user_json("wade", "wade-pw", &t.home("wade"));
    user["filters"] = json!({"allowed_ip": ["127.0.0.2"]});
    api.add_user(user);
    let cred = Cred::Password("wade-pw".into());

    assert!(
        login_via(hap.v1_port, "127.0.0.2", &cred),
        "v1 header carries 127.0.0.2:\n{}",
        t.logs()
    );
    assert!(
        login_via(hap.v2_port, "127.0.0.2", &cred),
        "v2 header carries 127.0.0.2"
    );
    assert!(
        !login_via(hap.v2_port, "127.0.0.3", &cred),
        "127.0.0.3 is not in allowed_ip"
    );
    // Mode 2: a direct connection without a header is refused.
    assert!(
        !login_via(t.sftp_port(), "127.0.0.2", &cred),
        "no header, no login"
    );

    let mut s = OpenSftp::start_with(hap.v2_port, "wade", &cred, &["-oBindAddress=127.0.0.2"]);
    assert!(s.run_until("pwd", "Remote working directory", Duration::from_secs(30)));
    let conn = wait_for(Duration::from_secs(15), || {
        api.connections()
            .into_iter()
            .find(|c| c["username"] == "wade")
    })
    .expect("listed");
    let remote = conn["remote_address"].as_str().unwrap().to_string();
    assert!(
        remote.starts_with("127.0.0.2:"),
        "the connection list shows the real client: {remote}"
    );
    drop(s);
    let logs = t.logs();
    assert!(
        logs.contains("\"remote_address\":\"127.0.0.2:"),
        "logs carry the real client address:\n{logs}"
    );
    assert!(
        logs.contains("\"remote_address\":\"127.0.0.3:"),
        "refused logins too"
    );
}

#[test]
fn untrusted_upstreams_and_disabled_proxy_support_are_refused() {
    // Mode 2, but HAProxy's address is not allowed.
    let t = Topology::serve_with(&env(&[
        ("FERRY_COMMON__PROXY_PROTOCOL", "2"),
        ("FERRY_COMMON__PROXY_ALLOWED", "10.1.2.3"),
        ("FERRY_COMMON__PROXY_SKIPPED", "127.0.0.9"),
    ]))
    .unwrap();
    let hap = Haproxy::start(t.dir.path(), t.sftp_port()).unwrap();
    t.api()
        .add_user(user_json("wade", "wade-pw", &t.home("wade")));
    let cred = Cred::Password("wade-pw".into());
    assert!(!login_via(hap.v2_port, "127.0.0.2", &cred));
    assert!(!login_via(t.sftp_port(), "127.0.0.1", &cred));
    // A skipped source connects without a header.
    assert!(login_via(t.sftp_port(), "127.0.0.9", &cred), "{}", t.logs());

    // PROXY support off: a header is not SSH, the connection fails.
    let off = Topology::serve().unwrap();
    let hap_off = Haproxy::start(off.dir.path(), off.sftp_port()).unwrap();
    off.api()
        .add_user(user_json("wade", "wade-pw", &off.home("wade")));
    assert!(!login_via(hap_off.v1_port, "127.0.0.1", &cred));
    assert!(login_via(off.sftp_port(), "127.0.0.1", &cred));
}

/// Two edges behind HAProxy (v1 in front of one, v2 in front of the other):
/// the fleet-wide connection list and the control plane's login lines carry
/// each client's own address.
#[test]
fn two_edges_behind_haproxy_report_real_addresses() {
    let t = Topology::split_full(
        2,
        &[],
        &[
            ("FERRY_COMMON__PROXY_PROTOCOL", "2"),
            ("FERRY_COMMON__PROXY_ALLOWED", "127.0.0.1"),
        ],
    )
    .unwrap();
    let hap0 = Haproxy::start(t.dir.path(), t.sftp_ports[0]).unwrap();
    let hap1 = Haproxy::start(t.dir.path(), t.sftp_ports[1]).unwrap();
    let api = t.api();
    api.add_user(user_json("wade", "wade-pw", &t.home("wade")));
    let cred = Cred::Password("wade-pw".into());
    let mut a = OpenSftp::start_with(hap0.v1_port, "wade", &cred, &["-oBindAddress=127.0.0.2"]);
    let mut b = OpenSftp::start_with(hap1.v2_port, "wade", &cred, &["-oBindAddress=127.0.0.3"]);
    assert!(a.run_until("pwd", "Remote working directory", Duration::from_secs(30)));
    assert!(b.run_until("pwd", "Remote working directory", Duration::from_secs(30)));
    let conns = wait_for(Duration::from_secs(15), || {
        let c = api.connections();
        (c.len() == 2).then_some(c)
    })
    .expect("both connections listed");
    let mut remotes: Vec<String> = conns
        .iter()
        .map(|c| {
            let r = c["remote_address"].as_str().unwrap_or_default();
            r.split(':').next().unwrap_or_default().to_string()
        })
        .collect();
    remotes.sort();
    assert_eq!(remotes, ["127.0.0.2", "127.0.0.3"], "{conns:?}");
    // Direct connections without a header are refused on both edges.
    for port in &t.sftp_ports {
        assert!(!login_via(*port, "127.0.0.2", &cred));
    }
    drop((a, b));
    let logs = t.logs();
    let logins: Vec<serde_json::Value> = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|l| l["sender"] == "login")
        .collect();
    for (ip, edge) in [("127.0.0.2", "edge-0"), ("127.0.0.3", "edge-1")] {
        assert!(
            logins.iter().any(|l| l["ip"] == ip && l["edge_id"] == edge),
            "login line for {ip} on {edge}:\n{logs}"
        );
    }
}
