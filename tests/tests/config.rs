//! Configuration files and environment overrides, as an operator uses them:
//! `ferry serve --config-file`, `FERRY_<SECTION>__<KEY>`, `config-example`.

use ferry_tests::*;
use serde_json::json;

/// Every address and an edge setting come from a YAML file; both SFTP
/// listeners of `sftpd.bindings` serve.
#[test]
fn serve_takes_listeners_and_settings_from_a_yaml_file() {
    let t = Topology::serve_config("ferry.yaml", |http, grpc, sftp, sftp2| {
        format!(
            "httpd:\n  bindings:\n    - address: 127.0.0.1\n      port: {http}\n\
             grpc:\n  address: 127.0.0.1\n  port: {grpc}\n\
             sftpd:\n  enabled_ssh_commands: [sha256sum]\n  bindings:\n\
             \x20   - address: 127.0.0.1\n      port: {sftp}\n\
             \x20   - address: 127.0.0.1\n      port: {sftp2}\n"
        )
    })
    .unwrap();
    let api = t.api();
    let home = t.home("yara");
    let mut user = user_json("yara", "yara-pw", &home);
    user["permissions"] = json!({"/": ["*"]});
    api.add_user(user);
    std::fs::create_dir_all(&home).unwrap();
    std::fs::write(home.join("f.txt"), b"hello\n").unwrap();
    for port in &t.sftp_ports {
        let (ok, out) = sftp1(*port, "yara", &pw("yara-pw"), "ls");
        assert!(ok && out.contains("f.txt"), "port {port}: {out}");
    }
    // The file's command list replaced the default one.
    let port = t.sftp_ports[0];
    let sum = ssh_exec(port, "yara", &pw("yara-pw"), "sha256sum f.txt", b"");
    assert!(
        String::from_utf8_lossy(&sum.stdout)
            .starts_with("5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03"),
        "{}",
        describe(&sum)
    );
    let md5 = ssh_exec(port, "yara", &pw("yara-pw"), "md5sum f.txt", b"");
    assert!(!md5.status.success(), "md5sum is not enabled by the file");
}

fn start_with_file(name: &str, text: &str, env: &[(&str, &str)]) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join(name);
    std::fs::write(&file, text).unwrap();
    std::process::Command::new(bin("ferry"))
        .args(["serve", "--data-dir"])
        .arg(dir.path().join("data"))
        .arg("--config-file")
        .arg(&file)
        .args([
            "--http-bind",
            "127.0.0.1:0",
            "--grpc-bind",
            "127.0.0.1:0",
            "--sftp-bind",
            "127.0.0.1:0",
        ])
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

/// Unknown keys and bad values stop the start, naming the key and where it
/// came from; nothing is created.
#[test]
fn bad_settings_stop_the_start_naming_key_and_source() {
    type Case<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)], &'a [&'a str]);
    let cases: &[Case] = &[
        (
            "ferry.toml",
            "[sftpd]\nenabled_ssh_command = [\"scp\"]\n",
            &[],
            &["ferry.toml", "sftpd.enabled_ssh_command"],
        ),
        (
            "ferry.json",
            r#"{"common": {"upload_mode": "atomic"}}"#,
            &[],
            &["ferry.json", "common.upload_mode"],
        ),
        (
            "ferry.hcl",
            "common {\n  upload_mode = 7\n}\n",
            &[],
            &["common.upload_mode must be 0, 1 or 2"],
        ),
        (
            "ferry.env",
            "FERRY_DATA_PROVIDER__DRIVER=oracle\n",
            &[],
            &["data_provider.driver \"oracle\" is not supported"],
        ),
        (
            "ferry.yaml",
            "common:\n  idle_timeout: 5\n",
            &[("FERRY_COMMON__IDLE_TIMEOUT", "soon")],
            &["FERRY_COMMON__IDLE_TIMEOUT", "not a number"],
        ),
        ("ferry.ini", "", &[], &["unknown format"]),
    ];
    for (name, text, env, wanted) in cases {
        let out = start_with_file(name, text, env);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{name} started: {}", describe(&out));
        for w in *wanted {
            assert!(stderr.contains(w), "{name}: {w:?} not in {stderr}");
        }
    }
}

/// `config-example` prints a file both binaries accept as it is.
#[test]
fn config_examples_are_complete_and_accepted() {
    for binary in ["ferry", "ferry-edge"] {
        let out = std::process::Command::new(bin(binary))
            .arg("config-example")
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", describe(&out));
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(text.contains("[[sftpd.bindings]]") && text.contains("upload_mode = 0"));
        if binary == "ferry" {
            assert!(text.contains("[data_provider]"), "{text}");
            // The example as written is accepted (initprovider reads it).
            let dir = tempfile::tempdir().unwrap();
            let file = dir.path().join("example.toml");
            std::fs::write(&file, &text).unwrap();
            let out = std::process::Command::new(bin("ferry"))
                .args(["initprovider", "--data-dir"])
                .arg(dir.path().join("data"))
                .arg("--config-file")
                .arg(&file)
                .output()
                .unwrap();
            assert!(out.status.success(), "{}", describe(&out));
        } else {
            assert!(
                text.contains("control_plane = \"http://127.0.0.1:50051\""),
                "{text}"
            );
        }
    }
}

/// The listener kinds of an address file, in order, and its addresses.
fn addr_file(path: &std::path::Path) -> (Vec<String>, BoundAddrs) {
    let text = std::fs::read_to_string(path).unwrap();
    let kinds = text
        .lines()
        .filter_map(|l| l.split(' ').next())
        .map(String::from)
        .collect();
    (kinds, BoundAddrs::parse(&text).unwrap())
}

/// The (listener, addr) pairs of a JSON log's `listening` lines.
fn logged_listeners(path: &std::path::Path) -> Vec<(String, String)> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["message"] == "listening")
        .map(|v| {
            (
                v["listener"].as_str().unwrap().to_string(),
                v["addr"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Every listener of a process started with port 0 is reported with the port
/// it bound: one line each in `--addr-file` and one `listening` log line each
/// with the same address; each answers. `ferry serve`'s edge attaches to the
/// gRPC port the kernel picked.
#[test]
fn port_zero_listeners_are_reported_in_the_addr_file_and_the_log() {
    let t = Topology::split(1).unwrap();
    for (name, expected) in [
        ("controlplane", &["http", "grpc"][..]),
        ("edge-0", &["sftp", "telemetry"][..]),
    ] {
        let (kinds, bound) = addr_file(&t.dir.path().join(format!("{name}.addrs")));
        assert_eq!(kinds, expected);
        let mut pairs: Vec<(String, String)> = kinds
            .iter()
            .map(|k| (k.clone(), bound.addr(k).to_string()))
            .collect();
        let mut logged = logged_listeners(&t.dir.path().join(format!("{name}.log")));
        pairs.sort();
        logged.sort();
        assert_eq!(logged, pairs);
        for k in &kinds {
            let addr = bound.addr(k);
            assert_ne!(addr.port(), 0);
            assert!(std::net::TcpStream::connect(addr).is_ok(), "{k} {addr}");
        }
    }
    let telemetry = format!("http://127.0.0.1:{}/readyz", t.telemetry_ports[0]);
    assert_eq!(reqwest::blocking::get(telemetry).unwrap().status(), 200);

    // `ferry serve`: HTTP, gRPC, then the embedded edge's SFTP listener,
    // attached to the gRPC port the kernel picked.
    let serve = Topology::serve().unwrap();
    let (kinds, bound) = addr_file(&serve.dir.path().join("ferry.addrs"));
    assert_eq!(kinds, ["http", "grpc", "sftp"]);
    assert_eq!(bound.port("grpc"), serve.grpc_port);
    assert!(ssh_ready(serve.sftp_port()), "the edge got its host keys");
    let attached = format!("\"control_plane\":\"http://127.0.0.1:{}\"", serve.grpc_port);
    assert!(serve.logs().contains(&attached), "{}", serve.logs());
}
