//! First-start work: fleet host keys, the token signing key and the first
//! admin. Each is created once and stored, so every replica and every edge
//! sees the same values.

use std::io::Write;
use std::path::Path;

use russh::keys::ssh_key::LineEnding;
use russh::keys::ssh_key::private::{EcdsaKeypair, KeypairData, RsaKeypair};
use russh::keys::{Algorithm, EcdsaCurve, PrivateKey};
use tracing::info;

use crate::secrets::KeyRing;
use crate::store::{AdminData, Store, StoreError, now_ms};

/// Admin created on first start unless the environment names another.
const DEFAULT_ADMIN: &str = "admin";
const RSA_BITS: usize = 3072;

fn encode(key: PrivateKey) -> Result<String, StoreError> {
    key.to_openssh(LineEnding::LF)
        .map(|s| s.to_string())
        .map_err(|e| StoreError::Internal(format!("cannot encode host key: {e}")))
}

fn generate(kind: &str) -> Result<String, StoreError> {
    let mut rng = rand::rng();
    let fail = |e: russh::keys::ssh_key::Error| {
        StoreError::Internal(format!("cannot generate {kind} host key: {e}"))
    };
    let key = match kind {
        "ed25519" => PrivateKey::random(&mut rng, Algorithm::Ed25519).map_err(fail)?,
        "rsa" => PrivateKey::try_from(KeypairData::from(
            RsaKeypair::random(&mut rng, RSA_BITS).map_err(fail)?,
        ))
        .map_err(fail)?,
        _ => PrivateKey::try_from(KeypairData::from(
            EcdsaKeypair::random(&mut rng, EcdsaCurve::NistP256).map_err(fail)?,
        ))
        .map_err(fail)?,
    };
    encode(key)
}

/// A fleet secret from `configs`, made by `make` on first start; always
/// stored sealed with the key ring's primary key (a clear value stored
/// before, or one sealed with the previous key, is sealed again now), opened
/// for use.
async fn secret<F>(
    store: &Store,
    name: &'static str,
    keys: &KeyRing,
    make: F,
) -> anyhow::Result<String>
where
    F: FnOnce() -> Result<String, StoreError> + Send + 'static,
{
    let sealer = keys.primary.clone();
    let stored = store
        .config_or_insert(name, move || {
            let plain = make()?;
            Ok(crate::secrets::seal(&sealer, &plain, name))
        })
        .await?;
    let (plain, reseal) = if crate::secrets::is_sealed(&stored) {
        let (plain, by_previous) = keys.open(&stored, name).map_err(anyhow::Error::msg)?;
        (plain, by_previous)
    } else {
        (stored.clone(), true)
    };
    if reseal {
        let sealed = crate::secrets::seal(&keys.primary, &plain, name);
        if store.replace_config(name, stored, sealed).await? {
            store.checkpoint().await?;
            info!(name, "secret sealed with the master key");
        } else {
            // Another replica sealed it first: read theirs.
            let again = store
                .config_or_insert(name, || Err(StoreError::NotFound))
                .await?;
            return keys
                .open(&again, name)
                .map(|(p, _)| p)
                .map_err(anyhow::Error::msg);
        }
    }
    Ok(plain)
}

/// Host keys from files (`sftpd.host_keys`), checked.
fn host_key_files(files: &[std::path::PathBuf], data_dir: &Path) -> anyhow::Result<Vec<String>> {
    files
        .iter()
        .map(|f| {
            let path = data_dir.join(f);
            let pem = std::fs::read_to_string(&path).map_err(|e| {
                anyhow::anyhow!("sftpd.host_keys: cannot read {}: {e}", path.display())
            })?;
            let key = crate::openssh_key::parse(&pem).map_err(|e| {
                anyhow::anyhow!(
                    "sftpd.host_keys: {} is not an unencrypted OpenSSH private key: {e}",
                    path.display()
                )
            })?;
            anyhow::ensure!(
                !key.is_encrypted(),
                "sftpd.host_keys: {} is encrypted with a passphrase",
                path.display()
            );
            info!(
                algorithm = %key.algorithm(),
                fingerprint = %key.public_key().fingerprint(Default::default()),
                file = %path.display(),
                "host key"
            );
            // Re-encoded: what edges parse is what ssh-key writes (a short
            // ECDSA scalar as OpenSSH writes it is padded).
            key.to_openssh(LineEnding::LF)
                .map(|s| s.to_string())
                .map_err(|e| anyhow::anyhow!("sftpd.host_keys: {}: {e}", path.display()))
        })
        .collect()
}

/// The fleet's host keys: from `sftpd.host_keys` files when set, else
/// ed25519, RSA 3072 and ECDSA P-256 keys generated on first start and kept
/// in the database.
pub async fn host_keys(
    store: &Store,
    keys: &KeyRing,
    files: &[std::path::PathBuf],
    data_dir: &Path,
) -> anyhow::Result<Vec<String>> {
    if !files.is_empty() {
        return host_key_files(files, data_dir);
    }
    let mut pems = Vec::new();
    for (name, kind) in [
        ("host_key_ed25519", "ed25519"),
        ("host_key_rsa", "rsa"),
        ("host_key_ecdsa", "ecdsa"),
    ] {
        let pem = secret(store, name, keys, move || generate(kind)).await?;
        let key = PrivateKey::from_openssh(&pem)
            .map_err(|e| anyhow::anyhow!("stored host key {name} is not valid: {e}"))?;
        info!(
            algorithm = %key.algorithm(),
            fingerprint = %key.public_key().fingerprint(Default::default()),
            "host key"
        );
        pems.push(pem);
    }
    Ok(pems)
}

/// The shared HS256 key for REST tokens.
pub async fn jwt_key(store: &Store, keys: &KeyRing) -> anyhow::Result<Vec<u8>> {
    let hex_key = secret(store, "jwt_signing_key", keys, || {
        Ok(crate::random_token(32))
    })
    .await?;
    hex::decode(hex_key).map_err(|e| anyhow::anyhow!("stored token signing key is not valid: {e}"))
}

/// Creates the first admin when there is none: from
/// `FERRY_DEFAULT_ADMIN_USERNAME`/`_PASSWORD`, else `admin` with a random
/// password printed once and saved to `DATA_DIR/initial-admin-password`.
pub async fn first_admin(store: &Store, data_dir: &Path) -> anyhow::Result<()> {
    if store.count_admins().await? > 0 {
        return Ok(());
    }
    let username = std::env::var("FERRY_DEFAULT_ADMIN_USERNAME")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| DEFAULT_ADMIN.to_string());
    let (password, generated) = match std::env::var("FERRY_DEFAULT_ADMIN_PASSWORD") {
        Ok(p) if !p.is_empty() => (p, false),
        _ => (crate::random_token(12), true),
    };
    let hash = crate::passwords::hash(password.clone())
        .await
        .map_err(|e| anyhow::anyhow!(e))?;
    let now = now_ms();
    match store
        .add_admin(AdminData {
            username: username.clone(),
            status: 1,
            password: hash,
            permissions: "[\"*\"]".into(),
            filters: "{}".into(),
            email: String::new(),
            description: "created at first start".into(),
            additional_info: String::new(),
            created_at: now,
            updated_at: now,
            last_login: 0,
        })
        .await
    {
        Ok(()) => {}
        // Another replica created it first.
        Err(StoreError::AlreadyExists(_)) => return Ok(()),
        Err(e) => return Err(e.into()),
    }
    if generated {
        let path = data_dir.join("initial-admin-password");
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        let mut f = opts.open(&path)?;
        writeln!(f, "{password}")?;
        // Shown once on a terminal; never in a log (stdout of a service is
        // usually one), where only the file is named.
        use std::io::IsTerminal;
        if std::io::stdout().is_terminal() {
            println!(
                "created admin {username:?} with password {password} (also saved to {})",
                path.display()
            );
        } else {
            info!(
                username,
                file = %path.display(),
                "created admin with a generated password: read it from the file"
            );
        }
    } else {
        info!(
            username,
            "created admin from FERRY_DEFAULT_ADMIN_USERNAME/PASSWORD"
        );
    }
    Ok(())
}
