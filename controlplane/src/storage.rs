//! SFTPGo's `filesystem` object of users, group templates and folders, on
//! the control plane's side: what REST input and restores may hold
//! ([`normalize`]: providers 0 to 3 with SFTPGo v2's field names, only the
//! chosen provider's sub-object kept, as SFTPGo does) and the [`Storage`] an
//! edge is given for it, secrets opened ([`storage_of`]). The checks of the
//! values are `ferry_proto::storage`'s, which portable mode shares; running
//! [`storage_of`] on input also proves every secret can be opened at login.

use ferry_proto::edge::v1::Storage;
use ferry_proto::storage::{self as shared, AZURE_BLOB, GCS, MB, S3};
use serde_json::{Map, Value, json};

/// How a field of a provider's sub-object is typed.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Text,
    Int,
    Bool,
    Secret,
}

use Kind::{Bool, Int, Secret, Text};

/// SFTPGo v2's fields of `s3config`; any other key is dropped.
const S3_FIELDS: &[(&str, Kind)] = &[
    ("bucket", Text),
    ("key_prefix", Text),
    ("region", Text),
    ("access_key", Text),
    ("access_secret", Secret),
    ("role_arn", Text),
    ("session_token", Text),
    ("endpoint", Text),
    ("storage_class", Text),
    ("acl", Text),
    ("upload_part_size", Int),
    ("upload_concurrency", Int),
    ("download_part_size", Int),
    ("download_concurrency", Int),
    ("upload_part_max_time", Int),
    ("download_part_max_time", Int),
    ("force_path_style", Bool),
    ("skip_tls_verify", Bool),
    ("sse_customer_key", Secret),
];

/// SFTPGo v2's fields of `gcsconfig`.
const GCS_FIELDS: &[(&str, Kind)] = &[
    ("bucket", Text),
    ("key_prefix", Text),
    ("credentials", Secret),
    ("automatic_credentials", Int),
    ("storage_class", Text),
    ("acl", Text),
    ("upload_part_size", Int),
    ("upload_part_max_time", Int),
];

/// SFTPGo v2's fields of `azblobconfig`.
const AZURE_FIELDS: &[(&str, Kind)] = &[
    ("container", Text),
    ("account_name", Text),
    ("account_key", Secret),
    ("sas_url", Secret),
    ("endpoint", Text),
    ("key_prefix", Text),
    ("upload_part_size", Int),
    ("upload_concurrency", Int),
    ("download_part_size", Int),
    ("download_concurrency", Int),
    ("use_emulator", Bool),
    ("access_tier", Text),
];

fn fields(provider: i32) -> &'static [(&'static str, Kind)] {
    match provider {
        S3 => S3_FIELDS,
        GCS => GCS_FIELDS,
        AZURE_BLOB => AZURE_FIELDS,
        _ => &[],
    }
}

/// The local filesystem, as stored when a client sends none.
pub fn local() -> Value {
    json!({"provider": 0})
}

/// The provider of a `filesystem` object (0 when absent or not a number).
pub fn provider_of(fs: &Value) -> i64 {
    fs.get("provider").and_then(Value::as_i64).unwrap_or(0)
}

/// True when a stored `filesystem` (JSON text) puts the data in an object
/// store: the home or folder path is then only a name, never opened.
pub fn is_object_backed(stored: &str) -> bool {
    serde_json::from_str::<Value>(stored).is_ok_and(|fs| provider_of(&fs) != 0)
}

/// An integer, also written as `5.0` (JSON Schema's integers; the typed
/// REST fields accept it too).
fn integer(v: &Value) -> Option<i64> {
    v.as_i64().or_else(|| {
        v.as_f64()
            .filter(|f| f.fract() == 0.0 && f.abs() < 9.0e15)
            .map(|f| f as i64)
    })
}

/// One field as given, checked against its kind; None drops it (null, or an
/// empty secret).
fn field_value(field: &str, kind: Kind, v: &Value) -> Result<Option<Value>, String> {
    let ok = match kind {
        _ if v.is_null() => return Ok(None),
        Text => v.is_string(),
        Int => match integer(v) {
            Some(n) => return Ok(Some(n.into())),
            None => false,
        },
        Bool => v.is_boolean(),
        Secret => return secret_value(field, v),
    };
    if ok {
        return Ok(Some(v.clone()));
    }
    let want = match kind {
        Text => "a string",
        Int => "an integer",
        _ => "true or false",
    };
    Err(format!("{field} must be {want}"))
}

/// A secret as given: SFTPGo's object (kept for [`crate::confidential`] to
/// seal or to match with the stored one), dropped when empty. SFTPGo 1.x
/// backups hold `$aes$…` strings sealed with that installation's key, which
/// Ferry cannot open.
fn secret_value(field: &str, v: &Value) -> Result<Option<Value>, String> {
    match v {
        Value::String(s) if s.is_empty() => Ok(None),
        Value::String(s) if s.starts_with("$aes$") => Err(format!(
            "{field} is a value SFTPGo 1.x encrypted with its own key, which Ferry cannot \
             decrypt: set it again as {{\"status\": \"Plain\", \"payload\": \"…\"}}"
        )),
        Value::Object(m) if m.is_empty() => Ok(None),
        Value::Object(m) if crate::confidential::is_secret(m) => {
            let empty = |k: &str| m.get(k).and_then(Value::as_str).is_none_or(str::is_empty);
            let status = m.get("status").and_then(Value::as_str).unwrap_or("");
            if empty("payload") && (status.is_empty() || status == crate::confidential::PLAIN) {
                Ok(None)
            } else {
                Ok(Some(v.clone()))
            }
        }
        _ => Err(format!(
            "{field} must be a secret: {{\"status\": \"Plain\", \"payload\": \"…\"}}"
        )),
    }
}

/// Checks a `filesystem` object as a client (or a backup) sent it and gives
/// what to store: `{"provider": N, "<its sub-object>": {…}}`, other
/// sub-objects and unknown keys dropped, key prefixes in SFTPGo's form
/// (`a/b/`). Values are checked by [`storage_of`] once the secrets are
/// prepared.
pub fn normalize(fs: Option<Value>) -> Result<Value, String> {
    let given = match fs {
        None | Some(Value::Null) => return Ok(local()),
        Some(Value::Object(o)) => o,
        Some(_) => return Err("filesystem must be a JSON object".into()),
    };
    let provider = match given.get("provider") {
        None | Some(Value::Null) => 0,
        Some(v) => integer(v).ok_or("filesystem.provider must be an integer")?,
    };
    let provider = shared::check_provider(provider).map_err(|e| e.to_string())?;
    let mut out = Map::new();
    out.insert("provider".into(), provider.into());
    let Some(name) = shared::section(provider) else {
        // The local disk: SFTPGo's buffer sizes are kept as given.
        if let Some(os @ Value::Object(_)) = given.get("osconfig") {
            out.insert("osconfig".into(), os.clone());
        }
        return Ok(Value::Object(out));
    };
    let sub = match given.get(name) {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(m)) => m.clone(),
        Some(_) => return Err(format!("filesystem.{name} must be a JSON object")),
    };
    let mut kept = Map::new();
    for (key, kind) in fields(provider) {
        let field = format!("filesystem.{name}.{key}");
        if let Some(v) = sub.get(*key)
            && let Some(v) = field_value(&field, *kind, v)?
        {
            kept.insert((*key).to_string(), v);
        }
    }
    let field = |key: &str| format!("filesystem.{name}.{key}");
    if let Some(Value::String(p)) = kept.get("key_prefix") {
        let p = shared::normalize_key_prefix(p)
            .map_err(|problem| format!("{} {problem}", field("key_prefix")))?;
        kept.insert("key_prefix".into(), Value::String(p));
    }
    for key in ["storage_class", "acl", "access_tier"] {
        if let Some(Value::String(v)) = kept.get_mut(key) {
            *v = v.trim().to_string();
        }
    }
    for key in ["upload_part_max_time", "download_part_max_time"] {
        if kept.get(key).and_then(Value::as_i64).is_some_and(|n| n < 0) {
            return Err(format!("{} must not be negative", field(key)));
        }
    }
    if kept.contains_key("sse_customer_key") {
        return Err(format!(
            "{} is not supported yet (server-side encryption with a customer key): leave it empty",
            field("sse_customer_key")
        ));
    }
    if provider == GCS {
        match kept.get("automatic_credentials").and_then(Value::as_i64) {
            None | Some(0) => {}
            Some(1) => {
                // SFTPGo drops the key when the environment's credentials
                // are used.
                kept.remove("credentials");
            }
            Some(_) => {
                return Err(format!(
                    "{} must be 0 (the service account key in credentials) or 1 (the \
                     environment's credentials)",
                    field("automatic_credentials")
                ));
            }
        }
    }
    out.insert(name.into(), Value::Object(kept));
    Ok(Value::Object(out))
}

/// The storage an edge is given for a `filesystem` object as stored (or as
/// prepared from input): None for the local disk. Secrets are opened
/// (sealed ones with the master key), part sizes go from SFTPGo's MB to
/// bytes, an Azure endpoint given as a domain becomes the account's URL,
/// and every value is checked as `ferry_proto::storage::validate` says.
pub fn storage_of(fs: &Value) -> Result<Option<Storage>, String> {
    let provider = match fs.get("provider") {
        None | Some(Value::Null) => 0,
        Some(v) => v.as_i64().ok_or("filesystem.provider must be an integer")?,
    };
    let provider = shared::check_provider(provider).map_err(|e| e.to_string())?;
    let Some(name) = shared::section(provider) else {
        return Ok(None);
    };
    let empty = Map::new();
    let sub = fs.get(name).and_then(Value::as_object).unwrap_or(&empty);
    let text = |key: &str| {
        sub.get(key)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    let int = |key: &str| sub.get(key).and_then(Value::as_i64).unwrap_or(0);
    let flag = |key: &str| sub.get(key).and_then(Value::as_bool).unwrap_or(false);
    // Out-of-range values stay out of range, for the checks to name them.
    let bytes = |key: &str| int(key).saturating_mul(MB);
    let count = |key: &str| {
        let n = int(key);
        i32::try_from(n).unwrap_or(if n < 0 { i32::MIN } else { i32::MAX })
    };
    let secret = |key: &str| {
        crate::confidential::open_secret(
            sub.get(key).unwrap_or(&Value::Null),
            &format!("filesystem.{name}.{key}"),
        )
        .map(Option::unwrap_or_default)
    };
    let mut s = Storage {
        provider,
        key_prefix: text("key_prefix"),
        upload_part_size: bytes("upload_part_size"),
        upload_concurrency: count("upload_concurrency"),
        download_part_size: bytes("download_part_size"),
        download_concurrency: count("download_concurrency"),
        ..Default::default()
    };
    match provider {
        S3 => {
            s.bucket = text("bucket");
            s.region = text("region");
            s.endpoint = text("endpoint");
            s.access_key = text("access_key");
            s.secret = secret("access_secret")?;
            s.session_token = text("session_token");
            s.role_arn = text("role_arn");
            s.storage_class = text("storage_class");
            s.acl = text("acl");
            s.force_path_style = flag("force_path_style");
            s.skip_tls_verify = flag("skip_tls_verify");
        }
        GCS => {
            s.bucket = text("bucket");
            s.automatic_credentials = int("automatic_credentials") == 1;
            if !s.automatic_credentials {
                s.secret = secret("credentials")?;
            }
            s.storage_class = text("storage_class");
            s.acl = text("acl");
        }
        _ => {
            s.use_emulator = flag("use_emulator");
            s.access_key = text("account_name");
            s.secret = secret("account_key")?;
            s.sas_url = secret("sas_url")?;
            s.bucket = text("container");
            s.storage_class = text("access_tier");
            s.endpoint = text("endpoint");
            shared::complete_azure(&mut s).map_err(|e| e.to_string())?;
        }
    }
    shared::validate(&s).map_err(|e| e.to_string())?;
    Ok(Some(s))
}

/// [`storage_of`] for a stored `filesystem` column (JSON text).
pub fn stored_storage(stored: &str) -> Result<Option<Storage>, String> {
    let fs: Value = serde_json::from_str(stored)
        .map_err(|e| format!("the stored filesystem is not valid JSON: {e}"))?;
    storage_of(&fs)
}

/// A group template's `filesystem` for one member: `%username%` in the key
/// prefix replaced (SFTPGo's placeholder).
pub fn for_member(fs: &Value, username: &str) -> Value {
    let mut fs = fs.clone();
    let section = shared::section(i32::try_from(provider_of(&fs)).unwrap_or(0));
    if let Some(Value::String(p)) = section
        .and_then(|name| fs.get_mut(name))
        .and_then(|sub| sub.get_mut("key_prefix"))
    {
        *p = p.replace("%username%", username);
    }
    fs
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `filesystem` input → stored JSON, then the storage an edge gets.
    fn check(input: Value) -> Result<Option<Storage>, String> {
        let mut fs = normalize(Some(input))?;
        crate::confidential::prepare(&mut fs, None, "filesystem")?;
        storage_of(&fs)
    }

    fn plain(payload: &str) -> Value {
        json!({"status": "Plain", "payload": payload})
    }

    #[test]
    fn only_the_providers_sub_object_is_kept() {
        let fs = normalize(Some(json!({
            "provider": 1.0,
            "s3config": {"bucket": "b", "region": "r", "key_prefix": "a//b", "colour": "red",
                         "storage_class": " STANDARD ", "endpoint": null},
            "gcsconfig": {"bucket": "other"},
            "osconfig": {"read_buffer_size": 1}
        })))
        .unwrap();
        assert_eq!(
            fs,
            json!({"provider": 1, "s3config": {"bucket": "b", "region": "r",
                   "key_prefix": "a/b/", "storage_class": "STANDARD"}})
        );
        assert_eq!(normalize(None).unwrap(), local());
        assert_eq!(
            normalize(Some(json!({"provider": 0, "s3config": {"bucket": "b"},
                                  "osconfig": {"read_buffer_size": 2}})))
            .unwrap(),
            json!({"provider": 0, "osconfig": {"read_buffer_size": 2}})
        );
    }

    /// Every refusal names its field (or the provider).
    #[test]
    fn refusals_name_the_field() {
        let s3 = |extra: Value| {
            let mut c = json!({"bucket": "b", "region": "r"});
            c.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            json!({"provider": 1, "s3config": c})
        };
        let cases = [
            (json!("s3"), "filesystem must be a JSON object"),
            (
                json!({"provider": "1"}),
                "filesystem.provider must be an integer",
            ),
            (
                json!({"provider": 5}),
                "filesystem.provider 5 (SFTP) is not supported",
            ),
            (
                json!({"provider": 1, "s3config": []}),
                "filesystem.s3config must be a JSON object",
            ),
            (
                json!({"provider": 1}),
                "filesystem.s3config.bucket is required",
            ),
            (
                s3(json!({"bucket": 7})),
                "filesystem.s3config.bucket must be a string",
            ),
            (
                s3(json!({"upload_part_size": "5"})),
                "filesystem.s3config.upload_part_size must be an integer",
            ),
            (
                s3(json!({"upload_part_size": 5.5})),
                "filesystem.s3config.upload_part_size must be an integer",
            ),
            (
                s3(json!({"force_path_style": 1})),
                "filesystem.s3config.force_path_style must be true or false",
            ),
            (
                s3(json!({"key_prefix": "/x/"})),
                "filesystem.s3config.key_prefix must not start with \"/\" and must end with \"/\"",
            ),
            (
                s3(json!({"upload_part_size": 4})),
                "filesystem.s3config.upload_part_size must be at least 5 (MB)",
            ),
            (
                s3(json!({"download_part_size": i64::MAX})),
                "filesystem.s3config.download_part_size must be at most 5000 (MB)",
            ),
            (
                s3(json!({"upload_concurrency": 65})),
                "filesystem.s3config.upload_concurrency must be between 0 (the default) and 64",
            ),
            (
                s3(json!({"upload_concurrency": -1})),
                "filesystem.s3config.upload_concurrency must be between 0 (the default) and 64",
            ),
            (
                s3(json!({"upload_part_max_time": -1})),
                "filesystem.s3config.upload_part_max_time must not be negative",
            ),
            (
                s3(json!({"endpoint": "minio:9000"})),
                "filesystem.s3config.endpoint must be an http:// or https:// URL",
            ),
            (
                s3(json!({"access_key": "AK"})),
                "filesystem.s3config.access_secret is required with access_key",
            ),
            (
                s3(json!({"access_secret": plain("SK")})),
                "filesystem.s3config.access_key is required with access_secret",
            ),
            (
                s3(json!({"access_key": "AK", "access_secret": "$aes$0011"})),
                "filesystem.s3config.access_secret is a value SFTPGo 1.x encrypted",
            ),
            (
                s3(json!({"access_key": "AK", "access_secret": "SK"})),
                "filesystem.s3config.access_secret must be a secret",
            ),
            (
                s3(
                    json!({"access_key": "AK", "access_secret": {"status": "Secretbox",
                          "payload": "x", "key": "y"}}),
                ),
                "filesystem.s3config.access_secret is encrypted by another key management service",
            ),
            (
                s3(json!({"sse_customer_key": plain("k")})),
                "filesystem.s3config.sse_customer_key is not supported yet",
            ),
            (
                json!({"provider": 2, "gcsconfig": {"bucket": "b"}}),
                "filesystem.gcsconfig.credentials is required when automatic_credentials is 0",
            ),
            (
                json!({"provider": 2, "gcsconfig": {"bucket": "b", "automatic_credentials": 2}}),
                "filesystem.gcsconfig.automatic_credentials must be 0",
            ),
            (
                json!({"provider": 2, "gcsconfig": {"bucket": "b", "credentials": plain("x")}}),
                "filesystem.gcsconfig.credentials must be a service account key",
            ),
            (
                json!({"provider": 3, "azblobconfig": {"account_name": "a",
                       "account_key": plain("k")}}),
                "filesystem.azblobconfig.container is required",
            ),
            (
                json!({"provider": 3, "azblobconfig": {"container": "c"}}),
                "filesystem.azblobconfig.account_name is required",
            ),
            (
                json!({"provider": 3, "azblobconfig": {"container": "c", "account_name": "a"}}),
                "filesystem.azblobconfig.account_key is required with account_name",
            ),
            (
                json!({"provider": 3, "azblobconfig": {"container": "c", "use_emulator": true,
                       "access_tier": "Frozen"}}),
                "filesystem.azblobconfig.access_tier must be one of",
            ),
            (
                json!({"provider": 3, "azblobconfig": {"container": "c", "account_name": "a",
                       "account_key": plain("k"), "endpoint": "not a host"}}),
                "filesystem.azblobconfig.endpoint must be a domain",
            ),
            (
                json!({"provider": 3, "azblobconfig": {"container": "c", "use_emulator": true,
                       "endpoint": "127.0.0.1:10000"}}),
                "filesystem.azblobconfig.endpoint must be an http:// or https:// URL",
            ),
            (
                json!({"provider": 3, "azblobconfig": {"sas_url": plain("https://a.blob.core.windows.net/?sv=1")}}),
                "filesystem.azblobconfig.container is required (or a sas_url naming it)",
            ),
        ];
        for (input, want) in cases {
            match check(input.clone()) {
                Ok(_) => panic!("{input} was accepted; expected {want:?}"),
                Err(e) => assert!(e.starts_with(want), "{input}: {e:?} is not {want:?}…"),
            }
        }
    }

    #[test]
    fn storages_an_edge_gets() {
        let s = check(json!({"provider": 1, "s3config": {
            "bucket": "b", "region": "eu-west-1", "endpoint": "http://127.0.0.1:9000",
            "access_key": "AK", "access_secret": plain("SK"), "session_token": "ST",
            "key_prefix": "users/ann", "storage_class": "STANDARD_IA", "acl": "private",
            "upload_part_size": 8.0, "upload_concurrency": 3, "download_part_size": 16,
            "download_concurrency": 4, "force_path_style": true, "skip_tls_verify": true,
            "role_arn": "arn:aws:iam::1:role/r"}}))
        .unwrap()
        .unwrap();
        assert_eq!(
            s,
            Storage {
                provider: 1,
                bucket: "b".into(),
                key_prefix: "users/ann/".into(),
                region: "eu-west-1".into(),
                endpoint: "http://127.0.0.1:9000".into(),
                access_key: "AK".into(),
                secret: "SK".into(),
                session_token: "ST".into(),
                storage_class: "STANDARD_IA".into(),
                acl: "private".into(),
                force_path_style: true,
                skip_tls_verify: true,
                upload_part_size: 8 * MB,
                upload_concurrency: 3,
                download_part_size: 16 * MB,
                download_concurrency: 4,
                role_arn: "arn:aws:iam::1:role/r".into(),
                ..Default::default()
            }
        );
        let key = r#"{"type": "service_account", "project_id": "p"}"#;
        let s = check(json!({"provider": 2, "gcsconfig": {"bucket": "g",
            "credentials": plain(key), "upload_part_size": 16, "storage_class": "NEARLINE"}}))
        .unwrap()
        .unwrap();
        assert_eq!(
            (
                s.bucket.as_str(),
                s.secret.as_str(),
                s.automatic_credentials
            ),
            ("g", key, false)
        );
        assert_eq!(
            (s.upload_part_size, s.storage_class.as_str()),
            (16 * MB, "NEARLINE")
        );
        let auto = check(json!({"provider": 2, "gcsconfig": {"bucket": "g",
            "automatic_credentials": 1, "credentials": plain("ignored")}}))
        .unwrap()
        .unwrap();
        assert!(auto.automatic_credentials && auto.secret.is_empty());
        // Azure: SFTPGo's domain endpoint becomes the account's URL; a SAS
        // URL names the container; the emulator needs no key.
        let s = check(json!({"provider": 3, "azblobconfig": {"container": "c",
            "account_name": "acct", "account_key": plain("K"), "endpoint": "blob.core.usgovcloudapi.net",
            "access_tier": "Cool", "upload_part_size": 4, "upload_concurrency": 2}}))
        .unwrap()
        .unwrap();
        assert_eq!(
            (
                s.bucket.as_str(),
                s.access_key.as_str(),
                s.secret.as_str(),
                s.endpoint.as_str(),
                s.storage_class.as_str(),
                s.upload_part_size
            ),
            (
                "c",
                "acct",
                "K",
                "https://acct.blob.core.usgovcloudapi.net",
                "Cool",
                4 * MB
            )
        );
        let sas = "https://acct.blob.core.windows.net/box?sv=2022&sig=x";
        let s = check(json!({"provider": 3, "azblobconfig": {"sas_url": plain(sas)}}))
            .unwrap()
            .unwrap();
        assert_eq!((s.bucket.as_str(), s.sas_url.as_str()), ("box", sas));
        let s = check(json!({"provider": 3, "azblobconfig": {"container": "c",
            "use_emulator": true, "endpoint": "http://127.0.0.1:10000"}}))
        .unwrap()
        .unwrap();
        assert!(s.use_emulator && s.endpoint == "http://127.0.0.1:10000");
        assert_eq!(check(json!({"provider": 0})).unwrap(), None);
    }

    #[test]
    fn sealed_secrets_open_for_the_edge_only() {
        crate::confidential::install_test_keys();
        let mut fs = normalize(Some(json!({"provider": 1, "s3config": {"bucket": "b",
            "region": "r", "access_key": "AK", "access_secret": plain("the-secret")}})))
        .unwrap();
        crate::confidential::prepare(&mut fs, None, "filesystem").unwrap();
        let stored = &fs["s3config"]["access_secret"];
        assert_eq!(stored["status"], "AES-256-GCM");
        assert!(!fs.to_string().contains("the-secret"), "{fs}");
        assert_eq!(storage_of(&fs).unwrap().unwrap().secret, "the-secret");
        // A placeholder in a group's prefix becomes the member's name.
        let group = normalize(Some(json!({"provider": 1, "s3config": {"bucket": "b",
            "region": "r", "key_prefix": "users/%username%"}})))
        .unwrap();
        let member = for_member(&group, "ann");
        assert_eq!(
            storage_of(&member).unwrap().unwrap().key_prefix,
            "users/ann/"
        );
    }
}
