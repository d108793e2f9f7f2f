//! Secrets at rest. The fleet secrets Ferry stores — the private host keys
//! and the token signing key — are always sealed with AES-256-GCM under a
//! key derived (HKDF-SHA256) from a master key, each bound to its name. The
//! master key is `kms.secrets.master_key` or `master_key_path` (SFTPGo's
//! names); without one, Ferry generates one into `DATA_DIR/master-key`
//! (mode 0600) at first start and uses it. Values stored in the clear (a
//! database from before) are sealed at the next start; values sealed with
//! the generated key are re-sealed with a configured key once one is set; a
//! sealed value no key opens stops the start with a message.

use std::path::{Path, PathBuf};

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Prefix of a sealed value.
const SEALED: &str = "$aes-256-gcm$v1$";

/// `kms`: where secrets are protected.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct KmsConfig {
    /// Secrets stored in the database.
    pub secrets: SecretsConfig,
}

/// `kms.secrets`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct SecretsConfig {
    /// External KMS URL (SFTPGo's gocloud URLs): not supported; leave empty.
    pub url: String,
    /// Master key (at least 32 characters); prefer master_key_path or the
    /// FERRY_KMS__SECRETS__MASTER_KEY variable to keeping it in a file.
    pub master_key: String,
    /// File holding the master key (trailing whitespace ignored).
    pub master_key_path: PathBuf,
}

/// The key secrets are sealed with (derived from the master key).
#[derive(Clone)]
pub struct MasterKey([u8; 32]);

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(..)")
    }
}

impl SecretsConfig {
    /// The master key, if one is configured.
    pub fn master_key(&self) -> anyhow::Result<Option<MasterKey>> {
        anyhow::ensure!(
            self.url.is_empty(),
            "kms.secrets.url: external KMS services are not supported; set kms.secrets.master_key or master_key_path"
        );
        let from_file = !self.master_key_path.as_os_str().is_empty();
        anyhow::ensure!(
            !from_file || self.master_key.is_empty(),
            "kms.secrets: set master_key or master_key_path, not both"
        );
        let text = if from_file {
            std::fs::read_to_string(&self.master_key_path).map_err(|e| {
                anyhow::anyhow!(
                    "kms.secrets.master_key_path: cannot read {}: {e}",
                    self.master_key_path.display()
                )
            })?
        } else {
            self.master_key.clone()
        };
        let text = text.trim_end();
        if text.is_empty() {
            return Ok(None);
        }
        anyhow::ensure!(
            text.chars().count() >= 32,
            "kms.secrets: the master key must be at least 32 characters long"
        );
        derive(text).map(Some)
    }
}

fn derive(text: &str) -> anyhow::Result<MasterKey> {
    let mut key = [0u8; 32];
    hkdf::Hkdf::<sha2::Sha256>::new(Some(b"ferry kms"), text.as_bytes())
        .expand(b"ferry secrets v1", &mut key)
        .map_err(|_| anyhow::anyhow!("cannot derive the secrets key"))?;
    Ok(MasterKey(key))
}

/// The master key Ferry generates when none is configured, in the data
/// directory.
pub const GENERATED_KEY_FILE: &str = "master-key";

/// The keys of this process: `primary` seals; `previous` (the generated key,
/// once a configured one replaces it) only opens what it sealed, which is
/// then sealed again with `primary`.
#[derive(Debug, Clone)]
pub struct KeyRing {
    pub primary: MasterKey,
    pub previous: Option<MasterKey>,
    /// Set when `primary` is the generated key (for messages).
    pub generated: Option<PathBuf>,
}

impl KeyRing {
    /// Opens a sealed value with whichever key sealed it; `Ok((plain,
    /// true))` when it was the previous key.
    pub fn open(&self, stored: &str, name: &str) -> Result<(String, bool), String> {
        match open(Some(&self.primary), stored, name) {
            Ok(plain) => Ok((plain, false)),
            Err(e) => match &self.previous {
                Some(prev) => open(Some(prev), stored, name)
                    .map(|p| (p, true))
                    .map_err(|_| e),
                None => Err(match &self.generated {
                    Some(file) => format!(
                        "{e} (no kms.secrets.master_key is set, so Ferry used the key it generated in {}: \
                         set the master key this database was sealed with, or copy {GENERATED_KEY_FILE} \
                         from the data directory of the control plane that sealed it)",
                        file.display()
                    ),
                    None => e,
                }),
            },
        }
    }
}

/// The key ring for `configured` (from the settings) and `data_dir`: the
/// configured key, else the generated one (created 0600 when missing).
pub fn key_ring(configured: Option<MasterKey>, data_dir: &Path) -> anyhow::Result<KeyRing> {
    let file = data_dir.join(GENERATED_KEY_FILE);
    match configured {
        Some(primary) => {
            let previous = match std::fs::read_to_string(&file) {
                Ok(text) => Some(derive(text.trim_end())?),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(e) => anyhow::bail!("cannot read {}: {e}", file.display()),
            };
            Ok(KeyRing {
                primary,
                previous,
                generated: None,
            })
        }
        None => Ok(KeyRing {
            primary: generated_key(&file)?,
            previous: None,
            generated: Some(file),
        }),
    }
}

/// Reads the generated master key, creating it (32 random bytes, hex, mode
/// 0600, never replaced) on first use.
fn generated_key(file: &Path) -> anyhow::Result<MasterKey> {
    let (text, created) = crate::secret_file(file, 32)?;
    if created {
        tracing::info!(
            file = %file.display(),
            "master key generated: secrets are sealed with it (set kms.secrets.master_key to use your own)"
        );
    }
    derive(&text)
}

/// True when a stored value is sealed.
pub fn is_sealed(stored: &str) -> bool {
    stored.starts_with(SEALED)
}

/// Seals `plain`, bound to `name`.
pub fn seal(key: &MasterKey, plain: &str, name: &str) -> String {
    let cipher = Aes256Gcm::new(&key.0.into());
    let mut nonce_bytes = [0u8; 12];
    rand::Rng::fill_bytes(&mut rand::rng(), &mut nonce_bytes);
    let nonce = Nonce::from(nonce_bytes);
    let sealed = cipher
        .encrypt(
            &nonce,
            Payload {
                msg: plain.as_bytes(),
                aad: name.as_bytes(),
            },
        )
        .expect("AES-GCM encryption of a short value cannot fail");
    let mut out = nonce_bytes.to_vec();
    out.extend_from_slice(&sealed);
    format!(
        "{SEALED}{}",
        base64::engine::general_purpose::STANDARD.encode(out)
    )
}

/// Opens a sealed value stored under `name`.
pub fn open(key: Option<&MasterKey>, stored: &str, name: &str) -> Result<String, String> {
    let key = key.ok_or_else(|| {
        format!("{name} is stored encrypted: set kms.secrets.master_key or master_key_path")
    })?;
    let raw = stored
        .strip_prefix(SEALED)
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .filter(|r| r.len() > 12)
        .ok_or_else(|| format!("{name}: the sealed value is damaged"))?;
    let (nonce, sealed) = raw.split_at(12);
    let nonce: [u8; 12] = nonce.try_into().expect("split at 12");
    let plain = Aes256Gcm::new(&key.0.into())
        .decrypt(
            &Nonce::from(nonce),
            Payload {
                msg: sealed,
                aad: name.as_bytes(),
            },
        )
        .map_err(|_| {
            format!("{name} cannot be decrypted: the master key is not the one it was sealed with")
        })?;
    String::from_utf8(plain).map_err(|_| format!("{name}: the sealed value is not text"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(text: &str) -> MasterKey {
        SecretsConfig {
            master_key: text.into(),
            ..Default::default()
        }
        .master_key()
        .unwrap()
        .unwrap()
    }

    #[test]
    fn seal_and_open() {
        let k = key("0123456789abcdef0123456789abcdef");
        let sealed = seal(&k, "secret value", "host_key_rsa");
        assert!(is_sealed(&sealed) && !sealed.contains("secret"));
        assert_ne!(
            sealed,
            seal(&k, "secret value", "host_key_rsa"),
            "fresh nonce"
        );
        assert_eq!(
            open(Some(&k), &sealed, "host_key_rsa").unwrap(),
            "secret value"
        );
        assert!(
            open(Some(&k), &sealed, "jwt_signing_key").is_err(),
            "bound to its name"
        );
        let other = key("another master key, long enough!!");
        assert!(
            open(Some(&other), &sealed, "host_key_rsa")
                .unwrap_err()
                .contains("master key")
        );
        assert!(
            open(None, &sealed, "host_key_rsa")
                .unwrap_err()
                .contains("master_key")
        );
    }

    #[test]
    fn settings() {
        let cfg = |k: &str| SecretsConfig {
            master_key: k.into(),
            ..Default::default()
        };
        assert!(cfg("").master_key().unwrap().is_none());
        assert!(cfg("short").master_key().is_err());
        let url = SecretsConfig {
            url: "hashivault://x".into(),
            ..Default::default()
        };
        assert!(url.master_key().unwrap_err().to_string().contains("url"));
    }
}
