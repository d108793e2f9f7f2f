//! The OpenAPI document: served, complete, browsable, and held to by the
//! running control plane under schemathesis with every check on.

use std::path::PathBuf;
use std::process::Command;

use ferry_tests::*;

/// Every route the REST API serves, as the document must list it.
const ROUTES: &[(&str, &str)] = &[
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/metrics"),
    ("get", "/api/v2/version"),
    ("get", "/api/v2/token"),
    ("get", "/api/v2/logout"),
    ("get", "/api/v2/apikeys"),
    ("post", "/api/v2/apikeys"),
    ("get", "/api/v2/apikeys/{id}"),
    ("put", "/api/v2/apikeys/{id}"),
    ("delete", "/api/v2/apikeys/{id}"),
    ("get", "/api/v2/users"),
    ("post", "/api/v2/users"),
    ("get", "/api/v2/users/{username}"),
    ("put", "/api/v2/users/{username}"),
    ("delete", "/api/v2/users/{username}"),
    ("get", "/api/v2/groups"),
    ("post", "/api/v2/groups"),
    ("get", "/api/v2/groups/{name}"),
    ("put", "/api/v2/groups/{name}"),
    ("delete", "/api/v2/groups/{name}"),
    ("get", "/api/v2/folders"),
    ("post", "/api/v2/folders"),
    ("get", "/api/v2/folders/{name}"),
    ("put", "/api/v2/folders/{name}"),
    ("delete", "/api/v2/folders/{name}"),
    ("get", "/api/v2/admins"),
    ("post", "/api/v2/admins"),
    ("get", "/api/v2/admins/{username}"),
    ("put", "/api/v2/admins/{username}"),
    ("delete", "/api/v2/admins/{username}"),
    ("put", "/api/v2/admin/changepwd"),
    ("put", "/api/v2/quotas/users/{username}/usage"),
    ("put", "/api/v2/quotas/folders/{name}/usage"),
    ("post", "/api/v2/quotas/users/{username}/scan"),
    ("post", "/api/v2/quotas/folders/{name}/scan"),
    ("get", "/api/v2/quotas/users/scans"),
    ("get", "/api/v2/quotas/folders/scans"),
    ("get", "/api/v2/dumpdata"),
    ("post", "/api/v2/loaddata"),
    ("get", "/api/v2/loaddata"),
    ("get", "/api/v2/status"),
    ("get", "/api/v2/connections"),
    ("delete", "/api/v2/connections/{connection_id}"),
    ("get", "/api/v2/defender/hosts"),
    ("get", "/api/v2/defender/hosts/{id}"),
    ("delete", "/api/v2/defender/hosts/{id}"),
];

#[test]
fn the_document_lists_every_route_and_the_page_loads() {
    let t = Topology::serve().unwrap();
    let doc: serde_json::Value = reqwest::blocking::get(format!("{}/openapi.json", t.base()))
        .unwrap()
        .json()
        .unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let paths = doc["paths"].as_object().unwrap();
    let listed: usize = paths.values().map(|p| p.as_object().unwrap().len()).sum();
    assert_eq!(listed, ROUTES.len(), "no route more, none less");
    for (method, path) in ROUTES {
        let op = &doc["paths"][path][method];
        assert!(op.is_object(), "{method} {path} is documented");
        let responses = op["responses"].as_object().unwrap();
        assert!(
            responses.keys().any(|c| c.starts_with('2')),
            "{method} {path}: a success response"
        );
        let open = ["/healthz", "/readyz", "/metrics", "/api/v2/version"].contains(path);
        let security = op.get("security").and_then(|s| s.as_array());
        if open {
            assert!(
                security.is_some_and(|s| s.iter().all(|r| r.as_object().unwrap().is_empty())),
                "{method} {path} needs no credentials: {op}"
            );
        } else {
            assert!(
                security.is_some_and(|s| s.iter().any(|r| !r.as_object().unwrap().is_empty())),
                "{method} {path} states its credentials"
            );
            assert!(responses.contains_key("401"), "{method} {path}: 401");
        }
        if path.starts_with("/api/v2/") && !open && *path != "/api/v2/token" {
            for code in ["400", "403", "404"] {
                assert_eq!(
                    op["responses"][code]["content"]["application/json"]["schema"]["$ref"],
                    "#/components/schemas/ErrorBody",
                    "{method} {path}: {code} has the error body"
                );
            }
        }
    }
    // API keys are managed with a token only.
    assert_eq!(
        doc["paths"]["/api/v2/apikeys"]["get"]["security"],
        serde_json::json!([{"BearerAuth": []}])
    );
    let schemes = doc["components"]["securitySchemes"].as_object().unwrap();
    assert_eq!(schemes["APIKeyAuth"]["name"], "X-SFTPGO-API-KEY");
    // The browsable page.
    let page = reqwest::blocking::get(format!("{}/openapi/", t.base())).unwrap();
    assert_eq!(page.status().as_u16(), 200);
    let html = page.text().unwrap();
    assert!(html.contains("swagger-ui"), "{html}");
    // The document is served without credentials; the API is not.
    let r = reqwest::blocking::get(format!("{}/api/v2/users", t.base())).unwrap();
    assert_eq!(r.status().as_u16(), 401);
}

/// schemathesis' `st`, from the Python that `.ci/run` installs it into.
fn schemathesis() -> PathBuf {
    let out = Command::new("python3")
        .args([
            "-c",
            "import sysconfig; print(sysconfig.get_path('scripts'))",
        ])
        .output()
        .expect("python3 runs");
    let dir = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let st = PathBuf::from(dir).join("st");
    assert!(
        st.exists(),
        "schemathesis is not installed ({}): pip install schemathesis",
        st.display()
    );
    st
}

#[test]
fn schemathesis_finds_no_server_error_and_no_schema_violation() {
    let t = Topology::serve().unwrap();
    let api = t.api();
    // Something to find, so the stateful phase reaches past 404s.
    let r = api.call(
        "POST",
        "/api/v2/folders",
        Some(&serde_json::json!({"name": "seed", "mapped_path": t.dir.path().join("seed")})),
    );
    assert_eq!(r.status, 201, "{:?}", r.body);
    api.add_user(user_json("seeduser", "pw", &t.home("seeduser")));
    let config = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("schemathesis/schemathesis.toml");
    let out = Command::new(schemathesis())
        .arg("--config-file")
        .arg(&config)
        .arg("run")
        .arg(format!("{}/openapi.json", t.base()))
        .args(["--url", &t.base()])
        .args(["-H", &format!("Authorization: Bearer {}", api.token())])
        .args(["--checks", "all"])
        // Logging out would revoke the token the run uses; tests/rest.rs
        // covers it.
        .args(["--exclude-path", "/api/v2/logout"])
        .args(["--max-examples", "30", "--seed", "20261125", "--no-color"])
        .current_dir(t.dir.path())
        .output()
        .expect("schemathesis runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}\n{}", t.logs());
    assert!(
        text.contains("Tested: 46"),
        "every operation was tested:\n{text}"
    );
    assert!(!t.logs().contains("panicked"), "{}", t.logs());
}
