//! The walking skeleton end to end: real `ferry` processes (all-in-one and
//! split into control plane + edges), real OpenSSH clients.

use std::time::Duration;

use ferry_tests::*;
use serde_json::json;

const BIG: usize = 33 * 1024 * 1024 + 12345;

/// Upload and download of a file larger than 32 MiB with `sftp -R 64` and
/// with `scp`, then the everyday commands; checked against the disk.
fn transfer_cycle(t: &Topology, upload_port: u16, download_port: u16) {
    let api = t.api();
    let home = t.home("alice");
    api.add_user(user_json("alice", "alice-pw", &home));
    let cred = Cred::Password("alice-pw".into());
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("big.bin");
    random_file(&src, BIG);
    let back = work.path().join("back.bin");

    let out = sftp_batch(
        upload_port,
        "alice",
        &cred,
        &format!("put {} big.bin\n", src.display()),
        &["-R", "64", "-B", "261120"],
    );
    assert!(
        out.status.success(),
        "sftp put: {}\n{}",
        describe(&out),
        t.logs()
    );
    assert_eq!(sha256_file(&home.join("big.bin")), sha256_file(&src));

    let out = sftp_batch(
        download_port,
        "alice",
        &cred,
        &format!("get big.bin {}\n", back.display()),
        &["-R", "64", "-B", "261120"],
    );
    assert!(out.status.success(), "sftp get: {}", describe(&out));
    assert_eq!(sha256_file(&back), sha256_file(&src));

    // scp (SFTP protocol) both ways; it exits 0 only with an exit-status.
    let out = scp(
        upload_port,
        &cred,
        &[
            src.display().to_string(),
            "alice@127.0.0.1:viascp.bin".into(),
        ],
    );
    assert!(out.status.success(), "scp upload: {}", describe(&out));
    assert_eq!(sha256_file(&home.join("viascp.bin")), sha256_file(&src));
    let back2 = work.path().join("back2.bin");
    let out = scp(
        download_port,
        &cred,
        &[
            "alice@127.0.0.1:viascp.bin".into(),
            back2.display().to_string(),
        ],
    );
    assert!(out.status.success(), "scp download: {}", describe(&out));
    assert_eq!(sha256_file(&back2), sha256_file(&src));

    // ls, mkdir, rename, chmod, rm, rmdir.
    let out = sftp_batch(
        upload_port,
        "alice",
        &cred,
        "mkdir docs\nmkdir docs/old\nrename viascp.bin docs/moved.bin\nchmod 640 docs/moved.bin\nls -l docs\nrmdir docs/old\nrm big.bin\nls\n",
        &[],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "commands: {}", describe(&out));
    assert!(
        stdout.contains("-rw-r-----") && stdout.contains("moved.bin"),
        "ls -l shows the chmod: {stdout}"
    );
    assert!(home.join("docs/moved.bin").is_file());
    assert!(!home.join("viascp.bin").exists());
    assert!(!home.join("docs/old").exists());
    assert!(!home.join("big.bin").exists());
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(home.join("docs/moved.bin"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o640);

    // rmdir of a non-empty directory and rm of a missing file fail.
    let out = sftp_batch(upload_port, "alice", &cred, "rmdir docs\n", &[]);
    assert!(!out.status.success(), "rmdir of non-empty dir must fail");
    let out = sftp_batch(upload_port, "alice", &cred, "rm nothing-here\n", &[]);
    assert!(!out.status.success(), "rm of a missing file must fail");
}

#[test]
fn serve_transfers_and_file_commands() {
    let t = Topology::serve().unwrap();
    transfer_cycle(&t, t.sftp_port(), t.sftp_port());
}

#[test]
fn split_mode_edges_share_host_keys_and_serve_the_same_users() {
    let t = Topology::split(2).unwrap();
    // Both edges present the same host keys, which came from the control plane.
    let scan = |port: u16| {
        let out = std::process::Command::new("ssh-keyscan")
            .args([
                "-p",
                &port.to_string(),
                "-t",
                "ed25519,rsa,ecdsa",
                "127.0.0.1",
            ])
            .output()
            .unwrap();
        let mut keys: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| l.split_whitespace().skip(1).collect::<Vec<_>>().join(" "))
            .collect();
        keys.sort();
        keys
    };
    let (a, b) = (scan(t.sftp_ports[0]), scan(t.sftp_ports[1]));
    assert_eq!(a.len(), 3, "ed25519, rsa and ecdsa host keys: {a:?}");
    assert_eq!(a, b);
    // Upload through one edge, download through the other.
    transfer_cycle(&t, t.sftp_ports[0], t.sftp_ports[1]);
}

#[test]
fn password_and_key_logins() {
    logins(&Topology::serve().unwrap());
}

#[test]
fn password_and_key_logins_through_separate_edges() {
    logins(&Topology::split(1).unwrap());
}

fn logins(t: &Topology) {
    let api = t.api();
    let key = t.keypair("bob");
    let other_key = t.keypair("mallory");
    let mut user = user_json("bob", "bob-pw", &t.home("bob"));
    user["public_keys"] = json!([public_key(&key)]);
    api.add_user(user);
    let port = t.sftp_port();

    let out = sftp_batch(port, "bob", &Cred::Password("bob-pw".into()), "pwd\n", &[]);
    assert!(out.status.success(), "password login: {}", describe(&out));
    let out = sftp_batch(port, "bob", &Cred::Key(key.clone()), "pwd\n", &[]);
    assert!(out.status.success(), "key login: {}", describe(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("Remote working directory: /"));

    let out = sftp_batch(port, "bob", &Cred::Password("wrong".into()), "pwd\n", &[]);
    assert!(!out.status.success(), "wrong password must be refused");
    let out = sftp_batch(port, "bob", &Cred::Key(other_key), "pwd\n", &[]);
    assert!(!out.status.success(), "unknown key must be refused");
    let out = sftp_batch(
        port,
        "nobody",
        &Cred::Password("bob-pw".into()),
        "pwd\n",
        &[],
    );
    assert!(!out.status.success(), "unknown user must be refused");

    // Pre-hashed bcrypt ($2y$, as htpasswd writes) and argon2id passwords
    // are stored as given and verify at login.
    let bcrypt_hash = bcrypt::hash_with_result("hashed-pw", 4)
        .unwrap()
        .format_for_version(bcrypt::Version::TwoY);
    let mut u = user_json("hashed", &bcrypt_hash, &t.home("hashed"));
    u["password"] = json!(bcrypt_hash);
    api.add_user(u);
    let out = sftp_batch(
        port,
        "hashed",
        &Cred::Password("hashed-pw".into()),
        "pwd\n",
        &[],
    );
    assert!(
        out.status.success(),
        "bcrypt pre-hashed login: {}",
        describe(&out)
    );
    let out = sftp_batch(
        port,
        "hashed",
        &Cred::Password(bcrypt_hash.clone()),
        "pwd\n",
        &[],
    );
    assert!(!out.status.success(), "the hash itself is not the password");
    let r = api.call(
        "POST",
        "/api/v2/users",
        Some(&json!({"username": "badhash", "password": "$2y$10$tooshort", "home_dir": t.home("badhash"), "permissions": {"/": ["*"]}})),
    );
    assert_eq!(r.status, 400, "malformed hash refused: {r:?}");
}

#[test]
fn disabled_and_expired_users_are_refused() {
    let t = Topology::serve().unwrap();
    let api = t.api();
    let mut disabled = user_json("off", "pw-off", &t.home("off"));
    disabled["status"] = json!(0);
    api.add_user(disabled);
    let mut expired = user_json("old", "pw-old", &t.home("old"));
    expired["expiration_date"] = json!(1_000_000_000_000i64);
    api.add_user(expired);
    let port = t.sftp_port();
    for (u, p, reason) in [
        ("off", "pw-off", "user disabled"),
        ("old", "pw-old", "user expired"),
    ] {
        let out = sftp_batch(port, u, &Cred::Password(p.into()), "pwd\n", &[]);
        assert!(
            !out.status.success(),
            "{u} must be refused: {}",
            describe(&out)
        );
        // Refused at login (the client says so), for the user's status.
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("Permission denied"),
            "{}",
            describe(&out)
        );
        let logged = t.logs().lines().any(|l| {
            l.contains("login failed")
                && l.contains(&format!("\"user\":\"{u}\""))
                && l.contains(reason)
        });
        assert!(
            logged,
            "no `login failed` line for {u} with {reason:?}:\n{}",
            t.logs()
        );
    }
    // Enabling the user lets it in.
    let r = api.call(
        "PUT",
        "/api/v2/users/off",
        Some(&json!({"status": 1, "home_dir": t.home("off"), "permissions": {"/": ["*"]}})),
    );
    assert_eq!(r.status, 200, "{r:?}");
    let out = sftp_batch(port, "off", &Cred::Password("pw-off".into()), "pwd\n", &[]);
    assert!(out.status.success(), "re-enabled user: {}", describe(&out));
}

#[test]
fn paths_stay_inside_home_even_through_symlinks() {
    let t = Topology::serve().unwrap();
    let api = t.api();
    let home = t.home("carol");
    api.add_user(user_json("carol", "carol-pw", &home));
    let cred = Cred::Password("carol-pw".into());
    let port = t.sftp_port();
    // First login creates the home.
    let out = sftp_batch(port, "carol", &cred, "pwd\n", &[]);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(home.is_dir(), "home created at first login");

    let work = tempfile::tempdir().unwrap();
    let f = work.path().join("f.txt");
    std::fs::write(&f, b"hello").unwrap();
    // ../../etc/passwd is clamped to /etc/passwd inside home.
    let out = sftp_batch(
        port,
        "carol",
        &cred,
        &format!("mkdir etc\nput {} ../../etc/passwd\n", f.display()),
        &[],
    );
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(std::fs::read(home.join("etc/passwd")).unwrap(), b"hello");
    assert_ne!(std::fs::read("/etc/passwd").unwrap(), b"hello");

    // A symlink planted in home pointing outside cannot be followed.
    let outside = t.dir.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("secret"), b"top secret").unwrap();
    std::os::unix::fs::symlink(&outside, home.join("escape")).unwrap();
    std::os::unix::fs::symlink(outside.join("secret"), home.join("secret-link")).unwrap();
    let dl = work.path().join("dl");
    for cmd in [
        "cd escape".to_string(),
        "ls escape/*".to_string(),
        "ls escape/secret".to_string(),
        format!("get escape/secret {}", dl.display()),
        format!("get secret-link {}", dl.display()),
        format!("put {} escape/planted", f.display()),
        format!("put {} secret-link", f.display()),
        "chmod 777 secret-link".to_string(),
        "mkdir escape/newdir".to_string(),
        "rename etc/passwd escape/moved".to_string(),
    ] {
        let out = sftp_batch(port, "carol", &cred, &format!("{cmd}\n"), &[]);
        assert!(
            !out.status.success(),
            "{cmd:?} must fail: {}",
            describe(&out)
        );
    }
    assert!(!dl.exists(), "nothing was downloaded from outside");
    assert_eq!(
        std::fs::read(outside.join("secret")).unwrap(),
        b"top secret"
    );
    assert!(!outside.join("planted").exists());
    assert!(!outside.join("newdir").exists());
    assert!(!outside.join("moved").exists());
    use std::os::unix::fs::PermissionsExt;
    assert_ne!(
        std::fs::metadata(outside.join("secret"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o777
    );

    // Symlinks created through SFTP stay inside and work.
    let out = sftp_batch(
        port,
        "carol",
        &cred,
        &format!(
            "ln -s etc/passwd inside-link\nget inside-link {}\n",
            dl.display()
        ),
        &[],
    );
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(std::fs::read(&dl).unwrap(), b"hello");
}

#[test]
fn admin_closes_a_live_connection() {
    close_connection(&Topology::serve().unwrap());
}

#[test]
fn admin_closes_a_live_connection_on_a_separate_edge() {
    close_connection(&Topology::split(2).unwrap());
}

#[test]
fn admin_closes_a_live_connection_on_a_separate_edge_on_postgresql() {
    let db = TempDatabase::postgres();
    close_connection(&Topology::split_on(&db, 2, &[]).unwrap());
}

fn close_connection(t: &Topology) {
    let api = t.api();
    api.add_user(user_json("dave", "dave-pw", &t.home("dave")));
    // On a split topology, use the last edge: the command must reach it.
    let port = *t.sftp_ports.last().unwrap();
    let mut session = OpenSftp::start(port, "dave", &Cred::Password("dave-pw".into()));
    assert!(session.run_until("pwd", "Remote working directory", Duration::from_secs(30)));
    let conn = wait_for(Duration::from_secs(15), || {
        api.connections()
            .into_iter()
            .find(|c| c["username"] == "dave")
    })
    .expect("connection listed");
    assert_eq!(conn["protocol"], "SFTP");
    assert!(
        conn["remote_address"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:")
    );
    let id = conn["connection_id"].as_str().unwrap().to_string();

    let r = api.call("DELETE", &format!("/api/v2/connections/{id}"), None);
    assert_eq!(r.status, 200, "{r:?}");
    // The interactive client notices at its next command and exits.
    let gone_first = wait_for(Duration::from_secs(15), || {
        api.connections()
            .iter()
            .all(|c| c["connection_id"] != id.as_str())
            .then_some(())
    });
    assert!(gone_first.is_some(), "the edge closed the connection");
    session.send("ls");
    let status = session
        .wait_exit(Duration::from_secs(15))
        .expect("client exited");
    assert!(!status.success(), "the session was cut, not ended normally");
    let gone = wait_for(Duration::from_secs(15), || {
        api.connections()
            .iter()
            .all(|c| c["connection_id"] != id.as_str())
            .then_some(())
    });
    assert!(gone.is_some(), "connection no longer listed");
    let r = api.call("DELETE", &format!("/api/v2/connections/{id}"), None);
    assert_eq!(r.status, 404);
    assert_eq!(r.body["error"], "Not Found");
}

#[test]
fn password_change_takes_effect_at_next_login() {
    password_change(&Topology::serve().unwrap());
}

#[test]
fn password_change_takes_effect_on_every_edge() {
    password_change(&Topology::split(2).unwrap());
}

fn password_change(t: &Topology) {
    let api = t.api();
    api.add_user(user_json("erin", "old-pw", &t.home("erin")));
    let out = sftp_batch(
        t.sftp_port(),
        "erin",
        &Cred::Password("old-pw".into()),
        "pwd\n",
        &[],
    );
    assert!(out.status.success(), "{}", describe(&out));
    // Later logins go through the last edge (another process when split).
    let port = *t.sftp_ports.last().unwrap();
    let r = api.call(
        "PUT",
        "/api/v2/users/erin",
        Some(&user_json("erin", "new-pw", &t.home("erin"))),
    );
    assert_eq!(r.status, 200, "{r:?}");
    let out = sftp_batch(port, "erin", &Cred::Password("old-pw".into()), "pwd\n", &[]);
    assert!(!out.status.success(), "old password must fail");
    let out = sftp_batch(port, "erin", &Cred::Password("new-pw".into()), "pwd\n", &[]);
    assert!(out.status.success(), "new password: {}", describe(&out));
    // An update without a password keeps the current one.
    let r = api.call(
        "PUT",
        "/api/v2/users/erin",
        Some(&json!({"home_dir": t.home("erin"), "permissions": {"/": ["*"]}, "description": "kept"})),
    );
    assert_eq!(r.status, 200, "{r:?}");
    let out = sftp_batch(port, "erin", &Cred::Password("new-pw".into()), "pwd\n", &[]);
    assert!(out.status.success(), "password kept: {}", describe(&out));
}

#[test]
fn sftp_limits_extension_advertises_large_writes() {
    let t = Topology::serve().unwrap();
    t.api()
        .add_user(user_json("frank", "frank-pw", &t.home("frank")));
    let out = sftp_batch(
        t.sftp_port(),
        "frank",
        &Cred::Password("frank-pw".into()),
        "pwd\n",
        &["-vvv"],
    );
    assert!(out.status.success(), "{}", describe(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    let line = err
        .lines()
        .find(|l| l.contains("server upload/download buffer sizes"))
        .unwrap_or_else(|| panic!("no limits reply in:\n{err}"));
    let sizes: Vec<u64> = line
        .split("sizes")
        .nth(1)
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .split('/')
        .map(|s| s.trim().parse().unwrap())
        .collect();
    assert!(sizes.iter().all(|s| *s >= 261_120), "{line}");
}

#[test]
fn updating_with_disconnect_or_deleting_a_user_ends_their_sessions() {
    disconnect_by_update_and_delete(&Topology::serve().unwrap());
}

#[test]
fn updating_with_disconnect_or_deleting_a_user_ends_sessions_on_a_separate_edge() {
    disconnect_by_update_and_delete(&Topology::split(2).unwrap());
}

#[test]
fn updating_with_disconnect_or_deleting_a_user_ends_sessions_on_postgresql() {
    let db = TempDatabase::postgres();
    disconnect_by_update_and_delete(&Topology::split_on(&db, 2, &[]).unwrap());
}

fn disconnect_by_update_and_delete(t: &Topology) {
    let api = t.api();
    // On a split topology, the last edge: the command must reach it.
    let port = *t.sftp_ports.last().unwrap();
    let home = t.home("ivan");
    api.add_user(user_json("ivan", "ivan-pw", &home));
    let cred = Cred::Password("ivan-pw".into());
    let live = |api: &Api| {
        api.connections()
            .iter()
            .filter(|c| c["username"] == "ivan")
            .count()
    };

    let mut s = OpenSftp::start(port, "ivan", &cred);
    assert!(s.run_until("pwd", "Remote working directory", Duration::from_secs(30)));
    assert!(wait_for(Duration::from_secs(15), || (live(&api) == 1).then_some(())).is_some());
    // An update without disconnect leaves the session alone.
    let body = json!({"home_dir": home, "permissions": {"/": ["*"]}, "description": "v2"});
    assert_eq!(
        api.call("PUT", "/api/v2/users/ivan", Some(&body)).status,
        200
    );
    // The session still answers requests after the update (`df` asks the
    // server; `pwd` is answered by the client).
    assert!(s.run_until("df", "Capacity", Duration::from_secs(30)));
    assert_eq!(live(&api), 1);
    assert_eq!(
        api.call("PUT", "/api/v2/users/ivan?disconnect=1", Some(&body))
            .status,
        200
    );
    // The edge closes the session asynchronously: wait for it, then the
    // interactive client notices at its next command.
    assert!(wait_for(Duration::from_secs(15), || (live(&api) == 0).then_some(())).is_some());
    s.send("ls");
    assert!(
        s.wait_exit(Duration::from_secs(15)).is_some(),
        "disconnected by the update"
    );

    let mut s = OpenSftp::start(port, "ivan", &cred);
    assert!(s.run_until("pwd", "Remote working directory", Duration::from_secs(30)));
    assert!(wait_for(Duration::from_secs(15), || (live(&api) == 1).then_some(())).is_some());
    assert_eq!(api.call("DELETE", "/api/v2/users/ivan", None).status, 200);
    // The edge closes the session asynchronously: wait for it, then the
    // interactive client notices at its next command.
    assert!(wait_for(Duration::from_secs(15), || (live(&api) == 0).then_some(())).is_some());
    s.send("ls");
    assert!(
        s.wait_exit(Duration::from_secs(15)).is_some(),
        "disconnected by the delete"
    );
    let out = sftp_batch(port, "ivan", &cred, "pwd\n", &[]);
    assert!(!out.status.success(), "a deleted user cannot log in");
}

#[test]
fn offered_algorithms_exclude_sha1_and_include_the_fast_ciphers() {
    let t = Topology::serve().unwrap();
    t.api()
        .add_user(user_json("judy", "judy-pw", &t.home("judy")));
    let cred = Cred::Password("judy-pw".into());
    let port = t.sftp_port();
    for ok in [
        "-oCiphers=aes128-gcm@openssh.com",
        "-oCiphers=aes256-gcm@openssh.com",
        "-oCiphers=chacha20-poly1305@openssh.com",
        "-oCiphers=aes128-ctr",
        "-oCiphers=aes256-ctr",
        "-oKexAlgorithms=curve25519-sha256",
        "-oHostKeyAlgorithms=ssh-ed25519",
        "-oHostKeyAlgorithms=rsa-sha2-512",
        "-oHostKeyAlgorithms=rsa-sha2-256",
        "-oHostKeyAlgorithms=ecdsa-sha2-nistp256",
    ] {
        let out = sftp_batch(port, "judy", &cred, "pwd\n", &[ok]);
        assert!(out.status.success(), "{ok} must work: {}", describe(&out));
    }
    for refused in [
        "-oHostKeyAlgorithms=ssh-rsa",
        "-oKexAlgorithms=diffie-hellman-group14-sha1",
        "-oCiphers=aes128-cbc",
        "-oMACs=hmac-sha1",
    ] {
        // hmac-sha1 alone cannot be negotiated with a non-AEAD cipher.
        let extra: Vec<&str> = if refused.starts_with("-oMACs") {
            vec![refused, "-oCiphers=aes128-ctr"]
        } else {
            vec![refused]
        };
        let out = sftp_batch(port, "judy", &cred, "pwd\n", &extra);
        assert!(
            !out.status.success(),
            "{refused} must be refused: {}",
            describe(&out)
        );
    }
}

#[test]
fn times_and_ownership_of_uploads() {
    let t = Topology::serve().unwrap();
    let api = t.api();
    let home = t.home("kate");
    let mut user = user_json("kate", "kate-pw", &home);
    user["uid"] = json!(4321);
    user["gid"] = json!(4322);
    api.add_user(user);
    let work = tempfile::tempdir().unwrap();
    let f = work.path().join("old.txt");
    std::fs::write(&f, b"old times").unwrap();
    let when = std::time::UNIX_EPOCH + Duration::from_secs(1_500_000_000);
    std::fs::File::options()
        .write(true)
        .open(&f)
        .unwrap()
        .set_modified(when)
        .unwrap();
    let out = sftp_batch(
        t.sftp_port(),
        "kate",
        &Cred::Password("kate-pw".into()),
        &format!(
            "put -p {} old.txt\nmkdir made\nchmod 6755 made\n",
            f.display()
        ),
        &[],
    );
    assert!(out.status.success(), "{}", describe(&out));
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(home.join("old.txt")).unwrap();
    assert_eq!(
        meta.mtime(),
        1_500_000_000,
        "put -p preserved the modification time"
    );
    // setuid/setgid bits are never set on behalf of a client.
    let dir_mode = std::fs::metadata(home.join("made")).unwrap().mode();
    assert_eq!(dir_mode & 0o7777, 0o755, "got {dir_mode:o}");
    let as_root = std::fs::metadata("/proc/self").unwrap().uid() == 0;
    let dir_meta = std::fs::metadata(home.join("made")).unwrap();
    let home_meta = std::fs::metadata(&home).unwrap();
    if as_root {
        // Running as root: new files, directories and the home belong to the user.
        for m in [&meta, &dir_meta, &home_meta] {
            assert_eq!((m.uid(), m.gid()), (4321, 4322));
        }
    } else {
        let me = std::fs::metadata("/proc/self").unwrap().uid();
        assert_eq!(meta.uid(), me, "without root nothing is chowned");
    }
}

/// A user's password column in a serve topology's SQLite database.
fn stored_password(db: &std::path::Path, name: &str) -> String {
    use diesel::prelude::*;
    use ferry_schema::users;
    let mut c = SqliteConnection::establish(db.to_str().unwrap()).unwrap();
    users::table
        .filter(users::username.eq(name))
        .select(users::password)
        .first::<Option<String>>(&mut c)
        .unwrap()
        .unwrap_or_default()
}

#[test]
fn legacy_hashes_log_in_and_are_upgraded_to_argon2id() {
    let t = Topology::serve().unwrap();
    let api = t.api();
    // sha512crypt from glibc, md5crypt from OpenSSL, pbkdf2 from Python.
    let cases = [
        (
            "lena",
            "secret-pw",
            "$6$abcdefghijkl$7IMl7OhXnRujgAx1Mdsid1NaX07ASDkLvsJoAB3BBLjRjt.fgqRLj/6Fx.UxDqqGjyNqpAX5kZkAHVUPPcQen.",
        ),
        ("mona", "password", "$1$saltsalt$qjXMvbEw8oaL.CzflDtaK/"),
        (
            "nina",
            "secret-pw",
            "$pbkdf2-sha256$1000$saltysalt$IUnN9S6hvi98O3IarBq7AWz/t8QKzNjX3DuhNoax8dc=",
        ),
    ];
    let db = t.dir.path().join("data/ferry.db");
    let stored = |name: &str| stored_password(&db, name);
    for (name, plain, hash) in cases {
        let mut u = user_json(name, plain, &t.home(name));
        u["password"] = json!(hash);
        api.add_user(u);
        assert_eq!(stored(name), hash, "stored as given");
        let out = sftp_batch(
            t.sftp_port(),
            name,
            &Cred::Password(format!("{plain}!")),
            "pwd\n",
            &[],
        );
        assert!(!out.status.success(), "{name}: wrong password refused");
        assert_eq!(stored(name), hash, "a failed login changes nothing");
        let out = sftp_batch(
            t.sftp_port(),
            name,
            &Cred::Password(plain.into()),
            "pwd\n",
            &[],
        );
        assert!(out.status.success(), "{name}: {}", describe(&out));
        let upgraded = wait_for(Duration::from_secs(15), || {
            let h = stored(name);
            h.starts_with("$argon2id$").then_some(h)
        });
        assert!(
            upgraded.is_some(),
            "{name}: hash upgraded, still {}",
            stored(name)
        );
        let out = sftp_batch(
            t.sftp_port(),
            name,
            &Cred::Password(plain.into()),
            "pwd\n",
            &[],
        );
        assert!(
            out.status.success(),
            "{name} after upgrade: {}",
            describe(&out)
        );
    }
}

#[test]
fn bcrypt_can_be_the_preferred_hash_and_argon2_parameters_are_checked() {
    let t = Topology::serve_with(&[
        (
            "FERRY_DATA_PROVIDER__PASSWORD_HASHING__ALGO".into(),
            "bcrypt".into(),
        ),
        (
            "FERRY_DATA_PROVIDER__PASSWORD_HASHING__BCRYPT_OPTIONS__COST".into(),
            "5".into(),
        ),
    ])
    .unwrap();
    let api = t.api();
    let db = t.dir.path().join("data/ferry.db");
    let stored = |name: &str| stored_password(&db, name);
    api.add_user(user_json("bea", "bea-pw", &t.home("bea")));
    assert!(stored("bea").starts_with("$2b$05$"), "{}", stored("bea"));
    let (ok, out) = sftp1(t.sftp_port(), "bea", &pw("bea-pw"), "pwd");
    assert!(ok, "{out}");
    // An argon2id hash (the default elsewhere) verifies and becomes bcrypt.
    let mut u = user_json("ari", "x", &t.home("ari"));
    u["password"] = json!(
        "$argon2id$v=19$m=65536,t=1,p=2$QQOuy5ZZn5hWr65Q5OidYw$l7l5Dh/w5BNqrLJcXMN0q4unU0ZT2xVkPWE4/s7dMdE"
    );
    api.add_user(u);
    let (ok, out) = sftp1(t.sftp_port(), "ari", &pw("sftpgokeysecret0001"), "pwd");
    assert!(ok, "{out}");
    let upgraded = wait_for(Duration::from_secs(15), || {
        stored("ari").starts_with("$2b$05$").then_some(())
    });
    assert!(upgraded.is_some(), "still {}", stored("ari"));

    for (key, value, expected) in [
        ("FERRY_DATA_PROVIDER__PASSWORD_HASHING__ALGO", "md5", "algo"),
        (
            "FERRY_DATA_PROVIDER__PASSWORD_HASHING__ARGON2_OPTIONS__MEMORY",
            "1",
            "argon2_options",
        ),
    ] {
        let out = serve_with_setting(key, value);
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(expected), "{key}={value}: {err}");
    }
}

/// A home whose path has spaces and non-ASCII letters works end to end; a
/// file renamed onto an existing directory is refused and both stay as they
/// were; two SFTP channels on one SSH connection work side by side.
#[test]
fn odd_homes_renames_onto_directories_and_two_sftp_channels() {
    let t = Topology::serve().unwrap();
    let home = t.dir.path().join("homes").join("dóra with spaces");
    t.api().add_user(user_json("dora", "dora-pw", &home));
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("f.txt");
    std::fs::write(&src, "hello").unwrap();
    let out = sftp_batch(
        t.sftp_port(),
        "dora",
        &pw("dora-pw"),
        &format!("put {} f.txt\nmkdir d\n-rename f.txt d\n", src.display()),
        &[],
    );
    assert!(out.status.success(), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("remote rename \"/f.txt\" to \"/d\": Failure"),
        "{}",
        describe(&out)
    );
    assert_eq!(
        std::fs::read_to_string(home.join("f.txt")).unwrap(),
        "hello"
    );
    assert!(home.join("d").is_dir());
    assert_eq!(std::fs::read_dir(home.join("d")).unwrap().count(), 0);

    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(
            r#"
import sys, paramiko
t = paramiko.Transport(("127.0.0.1", int(sys.argv[1])))
t.connect(username="dora", password="dora-pw")
a = paramiko.SFTPClient.from_transport(t)
b = paramiko.SFTPClient.from_transport(t)
with a.open("a.txt", "w") as f:
    f.write("from a")
with b.open("b.txt", "w") as f:
    f.write("from b")
print(sorted(b.listdir(".")), b.open("a.txt").read().decode(), a.open("b.txt").read().decode())
"#,
        )
        .arg(t.sftp_port().to_string())
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "['a.txt', 'b.txt', 'd', 'f.txt'] from a from b",
        "{}",
        describe(&out)
    );
}

/// `filters.start_directory`: relative paths of SFTP, SCP (both protocols)
/// and `pwd` start there; absolute paths still reach the whole home; a
/// relative start directory is refused.
#[test]
fn start_directory_is_where_relative_paths_begin() {
    let t = Topology::serve().unwrap();
    let api = t.api();
    let home = t.home("stella");
    let mut u = user_json("stella", "stella-pw", &home);
    u["filters"] = json!({"start_directory": "/inbox"});
    api.add_user(u);
    let cred = pw("stella-pw");
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("f.txt");
    std::fs::write(&src, "hello").unwrap();
    let out = sftp_batch(
        t.sftp_port(),
        "stella",
        &cred,
        &format!("mkdir /inbox\npwd\nput {} f.txt\ncd /\nls\n", src.display()),
        &[],
    );
    assert!(out.status.success(), "{}", describe(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Remote working directory: /inbox"), "{text}");
    assert_eq!(
        std::fs::read_to_string(home.join("inbox/f.txt")).unwrap(),
        "hello"
    );
    for (name, extra) in [("sftp-scp.txt", None), ("legacy-scp.txt", Some("-O"))] {
        let mut args: Vec<String> = extra.map(String::from).into_iter().collect();
        args.push(src.display().to_string());
        args.push(format!("stella@127.0.0.1:{name}"));
        let out = scp(t.sftp_port(), &cred, &args);
        assert!(out.status.success(), "{name}: {}", describe(&out));
        assert!(home.join("inbox").join(name).is_file(), "{name}");
    }
    let out = ssh_exec(t.sftp_port(), "stella", &cred, "pwd", b"");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "/inbox\n");

    let mut bad = user_json("stan", "stan-pw", &t.home("stan"));
    bad["filters"] = json!({"start_directory": "inbox"});
    let r = api.call("POST", "/api/v2/users", Some(&bad));
    assert_eq!(r.status, 400, "{:?}", r.body);
    assert!(
        r.body.to_string().contains("start_directory"),
        "{:?}",
        r.body
    );
}

/// Listings start with `.` and `..` (not `..` at `/`), as OpenSSH's and
/// SFTPGo's do; `ls -la` shows them, plain `ls` hides them.
#[test]
fn listings_include_dot_and_dot_dot() {
    let t = Topology::serve().unwrap();
    let home = t.home("dotty");
    std::fs::create_dir_all(home.join("sub")).unwrap();
    std::fs::write(home.join("sub/f"), b"x").unwrap();
    t.api().add_user(user_json("dotty", "dotty-pw", &home));
    let names = |dir: &str| -> Vec<String> {
        let (ok, text) = sftp1(
            t.sftp_port(),
            "dotty",
            &pw("dotty-pw"),
            &format!("ls -la {dir}"),
        );
        assert!(ok, "{text}");
        text.lines()
            .filter(|l| l.starts_with('d') || l.starts_with('-'))
            .map(|l| {
                l.rsplit(' ')
                    .next()
                    .unwrap()
                    .rsplit('/')
                    .next()
                    .unwrap()
                    .to_string()
            })
            .collect()
    };
    let mut sub = names("/sub");
    sub.sort();
    assert_eq!(sub, [".", "..", "f"]);
    let mut root = names("/");
    root.sort();
    assert_eq!(root, [".", "sub"]);
    let (ok, text) = sftp1(t.sftp_port(), "dotty", &pw("dotty-pw"), "ls /sub");
    assert!(ok && !text.contains(" .\n") && text.contains('f'), "{text}");
}
