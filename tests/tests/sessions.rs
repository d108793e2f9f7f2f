//! `max_sessions` holds for the whole fleet: the control plane grants one
//! lease per login, whichever edge the client reaches.

use std::time::{Duration, Instant};

use ferry_tests::*;
use serde_json::json;

fn can_login(port: u16, user: &str, cred: &Cred) -> bool {
    sftp_batch(port, user, cred, "pwd\n", &[]).status.success()
}

#[test]
fn max_sessions_is_enforced_across_edges_and_freed_when_an_edge_dies() {
    max_sessions_across_edges(Topology::split_with(2, &["--lease-ttl", "4"]).unwrap());
}

#[test]
fn max_sessions_is_enforced_across_edges_on_postgresql() {
    let db = TempDatabase::postgres();
    max_sessions_across_edges(Topology::split_on(&db, 2, &["--lease-ttl", "4"]).unwrap());
}

fn max_sessions_across_edges(mut t: Topology) {
    let api = t.api();
    let mut user = user_json("quinn", "quinn-pw", &t.home("quinn"));
    user["max_sessions"] = json!(1);
    api.add_user(user);
    let cred = Cred::Password("quinn-pw".into());
    let (edge0, edge1) = (t.sftp_ports[0], t.sftp_ports[1]);

    // Nobody logged in: a session through either edge works (and ends).
    assert!(can_login(edge0, "quinn", &cred));
    assert!(can_login(edge1, "quinn", &cred));

    // One open session on edge 0 blocks a second one on edge 1 ...
    let mut first = OpenSftp::start(edge0, "quinn", &cred);
    assert!(first.run_until("pwd", "Remote working directory", Duration::from_secs(30)));
    assert!(
        !can_login(edge1, "quinn", &cred),
        "second session through another edge refused"
    );
    assert!(
        !can_login(edge0, "quinn", &cred),
        "and through the same edge"
    );
    // ... until it closes.
    first.send("bye");
    assert!(first.wait_exit(Duration::from_secs(15)).is_some());
    let freed = wait_for(Duration::from_secs(15), || {
        can_login(edge1, "quinn", &cred).then_some(())
    });
    assert!(freed.is_some(), "the slot is free once the session ended");

    // A session on an edge that dies holds its slot until the lease expires.
    let mut held = OpenSftp::start(edge1, "quinn", &cred);
    assert!(held.run_until("pwd", "Remote working directory", Duration::from_secs(30)));
    let killed_at = Instant::now();
    t.kill_edge(1);
    assert!(
        !can_login(edge0, "quinn", &cred),
        "the dead edge's lease still counts"
    );
    let freed = wait_for(Duration::from_secs(30), || {
        can_login(edge0, "quinn", &cred).then_some(())
    });
    assert!(
        freed.is_some(),
        "the lease expired after its TTL:\n{}",
        t.logs()
    );
    assert!(
        killed_at.elapsed() >= Duration::from_secs(3),
        "not before the TTL"
    );
    drop(held);
}

/// `common.idle_timeout` (minutes): a session without requests is closed
/// even while the client sends SSH keepalives; a session in use stays.
#[test]
fn idle_sessions_are_closed_and_keepalives_do_not_count() {
    let env = [("FERRY_COMMON__IDLE_TIMEOUT".to_string(), "1".to_string())];
    let t = Topology::serve_with(&env).unwrap();
    let api = t.api();
    api.add_user(user_json("ida", "ida-pw", &t.home("ida")));
    let cred = Cred::Password("ida-pw".into());
    let port = t.sftp_port();

    let mut idle = OpenSftp::start_with(port, "ida", &cred, &["-oServerAliveInterval=5"]);
    assert!(idle.run_until("pwd", "Remote working directory", Duration::from_secs(30)));
    let mut busy = OpenSftp::start(port, "ida", &cred);
    assert!(busy.run_until("pwd", "Remote working directory", Duration::from_secs(30)));
    let busy_id = {
        let conns = api.connections();
        assert_eq!(conns.len(), 2);
        // The busy session's connection opened second.
        conns
            .iter()
            .max_by_key(|c| c["connection_time"].as_i64())
            .unwrap()["connection_id"]
            .clone()
    };
    let start = Instant::now();
    // `ls` sends requests (sftp's `pwd` is answered by the client itself).
    let closed = wait_for(Duration::from_secs(150), || {
        busy.send("ls");
        std::thread::sleep(Duration::from_secs(1));
        (api.connections().len() < 2).then_some(())
    });
    assert!(
        closed.is_some(),
        "the idle session was not closed:\n{}",
        t.logs()
    );
    assert!(
        start.elapsed() >= Duration::from_secs(55),
        "closed after {:?}, before the timeout",
        start.elapsed()
    );
    let left = api.connections();
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(left[0]["connection_id"], busy_id, "the busy session stays");
    assert!(busy.wait_exit(Duration::from_millis(100)).is_none());
    assert!(t.logs().contains("closing idle sessions"));
    // The idle client notices at its next command.
    idle.send("ls");
    assert!(idle.wait_exit(Duration::from_secs(15)).is_some());
}

/// Fencing: an edge that cannot reach the control plane for longer than
/// the lease TTL ends its sessions (their leases have expired there).
#[test]
fn an_edge_cut_off_from_the_control_plane_ends_its_sessions() {
    let mut t = Topology::split_with(1, &["--lease-ttl", "3"]).unwrap();
    t.api().add_user(user_json("fen", "fen-pw", &t.home("fen")));
    let cred = Cred::Password("fen-pw".into());
    let mut s = OpenSftp::start(t.sftp_ports[0], "fen", &cred);
    assert!(s.run_until("pwd", "Remote working directory", Duration::from_secs(30)));
    let cut = Instant::now();
    t.procs[0].kill();
    let fenced = wait_for(Duration::from_secs(30), || {
        t.procs[1]
            .log_text()
            .contains("control plane unreachable for longer than the lease TTL")
            .then_some(())
    });
    assert!(fenced.is_some(), "{}", t.logs());
    assert!(
        cut.elapsed() >= Duration::from_secs(3),
        "not before the TTL"
    );
    s.send("ls");
    assert!(
        s.wait_exit(Duration::from_secs(15)).is_some(),
        "the session ended"
    );
}
