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
    let mut t = Topology::split_with(2, &["--lease-ttl", "4"]).unwrap();
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
