//! Logs as an operator reads them: SFTPGo-style JSON lines in a file
//! (`--log-file-path`), failed logins as `connection_failed` lines that the
//! fail2ban filter in `contrib/` matches (checked with Debian's
//! `fail2ban-regex`), transfer lines, and no secret anywhere.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use ferry_tests::*;
use serde_json::Value;

#[test]
fn json_lines_in_a_file_fail2ban_and_no_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("logs/ferry.log");
    let mut cmd = ferry_serve(&dir.path().join("data"));
    cmd.arg("--log-file-path")
        .arg(&log)
        .env("FERRY_DEFAULT_ADMIN_PASSWORD", ADMIN_PASSWORD);
    let (_p, bound) = start_bound(cmd, dir.path(), "stderr").unwrap();
    let (base, sftp) = (bound.base(), bound.port("sftp"));
    let api = wait_for(Duration::from_secs(60), || {
        Api::login(&base, "admin", ADMIN_PASSWORD).ok()
    })
    .expect("ferry serve starts");
    assert!(wait_for(Duration::from_secs(30), || ssh_ready(sftp).then_some(())).is_some());
    let home = dir.path().join("homes/lena");
    api.add_user(user_json("lena", "lena-secret-pw", &home));
    for guess in ["guess-one-pw", "guess-two-pw", "guess-three-pw"] {
        refused_login(sftp, "lena", &pw(guess));
    }
    let file = dir.path().join("up.bin");
    random_file(&file, 4096);
    let (ok, out) = sftp1(
        sftp,
        "lena",
        &pw("lena-secret-pw"),
        &format!("put {} up.bin", file.display()),
    );
    assert!(ok, "{out}");

    let batch =
        "mkdir docs\nrename up.bin docs/up.bin\nchmod 600 docs/up.bin\nrm docs/up.bin\nrmdir docs";
    let out = sftp_batch(sftp, "lena", &pw("lena-secret-pw"), batch, &[]);
    assert!(out.status.success(), "{}", describe(&out));
    let out = ssh_exec(sftp, "lena", &pw("lena-secret-pw"), "pwd", b"");
    assert!(out.status.success(), "{}", describe(&out));

    let text = wait_for(Duration::from_secs(10), || {
        std::fs::read_to_string(&log).ok().filter(|t| {
            t.contains(r#""sender":"Upload""#) && t.contains(r#""sender":"SSHCommand""#)
        })
    })
    .expect("the transfer is logged in the file");
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    for l in &lines {
        for key in ["level", "time", "sender", "message"] {
            assert!(l.get(key).is_some(), "{key} missing in {l}");
        }
    }
    // The three wrong passwords; the readiness probes (TCP connects that
    // never speak SSH) are failed connections of their own kind.
    let failed: Vec<&Value> = lines
        .iter()
        .filter(|l| l["sender"] == "connection_failed" && l["login_type"] != "no_auth_tried")
        .collect();
    assert_eq!(failed.len(), 3, "{failed:?}");
    for f in &failed {
        assert_eq!(f["client_ip"], "127.0.0.1");
        assert_eq!(f["username"], "lena");
        assert_eq!(f["login_type"], "password");
        assert_eq!(f["error"], "invalid password");
    }
    let upload = lines.iter().find(|l| l["sender"] == "Upload").unwrap();
    assert_eq!(upload["size_bytes"], 4096);
    assert_eq!(upload["username"], "lena");
    assert_eq!(upload["file_path"], "/up.bin");
    assert_eq!(upload["protocol"], "SFTP");
    assert!(upload["elapsed_ms"].is_number() && upload["connection_id"].is_string());
    assert!(
        lines
            .iter()
            .any(|l| l["sender"] == "login" && l["username"] == "lena")
    );

    // No password, typed or stored, reaches the log.
    for secret in [
        "lena-secret-pw",
        "guess-one-pw",
        "guess-two-pw",
        "guess-three-pw",
        ADMIN_PASSWORD,
        "$argon2id$",
    ] {
        assert!(!text.contains(secret), "{secret} appears in the log");
    }

    // The fail2ban filter counts exactly the three failures, for this host.
    let filter =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../contrib/fail2ban/filter.d/ferry.conf");
    match Command::new("fail2ban-regex")
        .arg(&log)
        .arg(&filter)
        .output()
    {
        Ok(out) => {
            let report = String::from_utf8_lossy(&out.stdout).to_string();
            assert!(out.status.success(), "{}", describe(&out));
            assert!(report.contains(" 3 matched"), "{report}");
        }
        Err(e) => panic!("fail2ban-regex: {e} (install fail2ban: see .ci/run)"),
    }
}
