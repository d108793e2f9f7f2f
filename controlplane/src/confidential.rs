//! Secrets inside objects (SFTPGo's `Secret`: `{"status", "payload", "key",
//! "additional_data", "mode"}`, e.g. `filters.totp_config.secret` or a
//! storage backend's credentials). Plain secrets sent by clients are sealed
//! with the master key before they are stored; replies show them as
//! `{"status": "Redacted"}` unless an admin with `*` asks for
//! `confidential_data=1`; a redacted secret sent back (GET-modify-PUT) keeps
//! the stored one.

use serde_json::{Map, Value};

/// Status of a secret in a reply that hides it.
pub const REDACTED: &str = "Redacted";
/// Status of a secret sealed with Ferry's master key.
pub const SEALED_STATUS: &str = "AES-256-GCM";
/// Status of a secret sent in the clear.
pub const PLAIN: &str = "Plain";
/// Associated data of sealed object secrets.
const AAD: &str = "ferry object secret";

static KEYS: std::sync::OnceLock<crate::secrets::KeyRing> = std::sync::OnceLock::new();

/// Makes `keys` the process's keys for object secrets (first call wins).
pub fn install(keys: crate::secrets::KeyRing) {
    let _ = KEYS.set(keys);
}

/// Installs a fixed key for unit tests (every test that needs one calls
/// this, so whichever runs first installs the same key).
#[cfg(test)]
pub fn install_test_keys() {
    let primary = crate::secrets::SecretsConfig {
        master_key: "unit tests' master key, 32+ characters".into(),
        ..Default::default()
    }
    .master_key()
    .expect("a valid test key")
    .expect("a key");
    install(crate::secrets::KeyRing {
        primary,
        previous: None,
        generated: None,
    });
}

fn master_key() -> Option<&'static crate::secrets::MasterKey> {
    KEYS.get().map(|k| &k.primary)
}

/// True for an object shaped like SFTPGo's `Secret`.
pub fn is_secret(m: &Map<String, Value>) -> bool {
    m.get("status").is_some_and(Value::is_string)
        && m.keys().all(|k| {
            matches!(
                k.as_str(),
                "status" | "payload" | "key" | "additional_data" | "mode"
            )
        })
}

fn status(m: &Map<String, Value>) -> &str {
    m.get("status").and_then(Value::as_str).unwrap_or("")
}

fn payload(m: &Map<String, Value>) -> &str {
    m.get("payload").and_then(Value::as_str).unwrap_or("")
}

/// Calls `f` on every secret in `v` with its JSON pointer.
fn walk(v: &mut Value, path: &mut String, f: &mut dyn FnMut(&str, &mut Map<String, Value>)) {
    match v {
        Value::Object(m) if is_secret(m) => f(path, m),
        Value::Object(m) => {
            for (k, child) in m.iter_mut() {
                let len = path.len();
                path.push('/');
                path.push_str(&k.replace('~', "~0").replace('/', "~1"));
                walk(child, path, f);
                path.truncate(len);
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter_mut().enumerate() {
                let len = path.len();
                path.push_str(&format!("/{i}"));
                walk(child, path, f);
                path.truncate(len);
            }
        }
        _ => {}
    }
}

/// Hides every secret with a payload.
pub fn redact(v: &mut Value) {
    walk(v, &mut String::new(), &mut |_, m| {
        if !payload(m).is_empty() || status(m) == SEALED_STATUS {
            m.clear();
            m.insert("status".into(), Value::String(REDACTED.into()));
        }
    });
}

/// Shows secrets sealed with Ferry's key as `Plain` (for
/// `confidential_data=1`); others stay as stored.
pub fn reveal(v: &mut Value) {
    let Some(keys) = KEYS.get() else { return };
    walk(v, &mut String::new(), &mut |_, m| {
        if status(m) == SEALED_STATUS
            && crate::secrets::is_sealed(payload(m))
            && let Ok((plain, _)) = keys.open(payload(m), AAD)
        {
            m.insert("status".into(), Value::String(PLAIN.into()));
            m.insert("payload".into(), Value::String(plain));
        }
    });
}

/// The clear value of one stored secret (`field` names it in errors), for
/// what an edge must be given: None when absent or empty. A secret sealed by
/// another KMS (an SFTPGo backup's `Secretbox`, `AWS`, … or SFTPGo's own
/// `AES-256-GCM` with its `key`) cannot be opened here and is refused, as is
/// a redacted one (never stored: [`prepare`] replaces it).
pub fn open_secret(v: &Value, field: &str) -> Result<Option<String>, String> {
    let m = match v {
        Value::Null => return Ok(None),
        Value::String(s) if s.is_empty() => return Ok(None),
        Value::Object(m) if m.is_empty() => return Ok(None),
        Value::Object(m) if is_secret(m) => m,
        _ => {
            return Err(format!(
                "{field} must be a secret: {{\"status\": \"Plain\", \"payload\": \"…\"}}"
            ));
        }
    };
    match status(m) {
        "" if payload(m).is_empty() => Ok(None),
        PLAIN => Ok(Some(payload(m).to_string()).filter(|p| !p.is_empty())),
        SEALED_STATUS if crate::secrets::is_sealed(payload(m)) => {
            let keys = KEYS
                .get()
                .ok_or_else(|| format!("{field} is sealed and no master key is loaded"))?;
            keys.open(payload(m), AAD)
                .map(|(plain, _)| Some(plain))
                .map_err(|_| {
                    format!("{field} cannot be opened: it was sealed with another master key")
                })
        }
        REDACTED => Err(format!(
            "{field} is redacted: send the secret as {{\"status\": \"Plain\", \"payload\": \"…\"}}"
        )),
        other => Err(format!(
            "{field} is encrypted by another key management service (status {other:?}, e.g. \
             SFTPGo's), which Ferry cannot open: send it as {{\"status\": \"Plain\", \
             \"payload\": \"…\"}} (SFTPGo shows it in the clear with confidential_data=1)"
        )),
    }
}

/// Readies secrets sent by a client for storage: a redacted one takes the
/// stored value at the same place (`old`), a plain one is sealed with the
/// master key when there is one.
pub fn prepare(new: &mut Value, old: Option<&Value>, field: &str) -> Result<(), String> {
    let mut err = None;
    walk(new, &mut String::new(), &mut |path, m| {
        if status(m) == REDACTED {
            match old.and_then(|o| o.pointer(path)).and_then(Value::as_object) {
                Some(stored) if is_secret(stored) && status(stored) != REDACTED => {
                    *m = stored.clone();
                }
                _ => {
                    err = Some(format!(
                        "{field}{path}: a redacted secret can only be sent back where one is stored"
                    ));
                }
            }
        } else if status(m) == PLAIN
            && !payload(m).is_empty()
            && let Some(key) = master_key()
        {
            let sealed = crate::secrets::seal(key, payload(m), AAD);
            m.clear();
            m.insert("status".into(), Value::String(SEALED_STATUS.into()));
            m.insert("payload".into(), Value::String(sealed));
        }
    });
    err.map_or(Ok(()), Err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn redact_keep_and_refuse() {
        let stored = json!({"totp_config": {"enabled": true,
                             "secret": {"status": "Plain", "payload": "JBSWY3DP"}},
                            "allowed_ip": ["10.0.0.0/8"]});
        let mut view = stored.clone();
        redact(&mut view);
        assert_eq!(view["totp_config"]["secret"], json!({"status": "Redacted"}));
        assert_eq!(
            view["allowed_ip"], stored["allowed_ip"],
            "only secrets change"
        );
        let mut back = view.clone();
        prepare(&mut back, Some(&stored), "filters").unwrap();
        assert_eq!(back, stored, "a redacted secret keeps the stored one");
        let err = prepare(&mut view.clone(), None, "filters").unwrap_err();
        assert!(err.contains("filters/totp_config/secret"), "{err}");
        // Not secrets: objects with other keys, empty payloads.
        let mut other =
            json!({"x": {"status": "Plain", "note": "n"}, "y": {"status": "", "payload": ""}});
        let before = other.clone();
        redact(&mut other);
        assert_eq!(other, before);
    }
}
