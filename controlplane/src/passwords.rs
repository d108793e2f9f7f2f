//! Password hashes: new passwords become argon2id; argon2id and bcrypt hashes
//! given pre-hashed are stored as they are. Hashing and verification are slow
//! on purpose, so callers run them on the blocking pool ([`hash`], [`verify`]).

use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::{Algorithm, Argon2, Params, Version};

/// Prefixes of hash formats accepted verbatim from admins.
const PREHASHED_PREFIXES: &[&str] = &["$argon2id$", "$2a$", "$2y$", "$2b$"];

fn argon2() -> Argon2<'static> {
    // SFTPGo's defaults: 64 MiB, one pass, two lanes.
    let params = Params::new(65536, 1, 2, None).expect("static argon2 parameters are valid");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// True when `value` is a hash in a format we accept as given.
pub fn is_prehashed(value: &str) -> bool {
    PREHASHED_PREFIXES.iter().any(|p| value.starts_with(p))
}

/// Checks that a pre-hashed value parses, so a broken hash is refused at
/// input time rather than failing every login later.
pub fn validate_prehashed(value: &str) -> Result<(), String> {
    if value.starts_with("$argon2id$") {
        PasswordHash::new(value).map_err(|e| format!("invalid argon2id hash: {e}"))?;
    } else if bcrypt::verify("", value).is_err() {
        return Err("invalid bcrypt hash".into());
    }
    Ok(())
}

/// Hashes a plain password with argon2id (blocking).
fn hash_blocking(plain: &str) -> Result<String, String> {
    argon2()
        .hash_password(plain.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| format!("cannot hash password: {e}"))
}

/// Verifies `plain` against a stored hash of any accepted format (blocking).
/// Unknown formats never match.
fn verify_blocking(plain: &str, stored: &str) -> bool {
    if stored.starts_with("$argon2id$") {
        match PasswordHash::new(stored) {
            Ok(parsed) => argon2().verify_password(plain.as_bytes(), &parsed).is_ok(),
            Err(_) => false,
        }
    } else if stored.starts_with("$2") {
        bcrypt::verify(plain, stored).unwrap_or(false)
    } else {
        false
    }
}

/// Hashes a plain password off the async threads.
pub async fn hash(plain: String) -> Result<String, String> {
    tokio::task::spawn_blocking(move || hash_blocking(&plain))
        .await
        .map_err(|e| format!("hashing task failed: {e}"))?
}

/// Verifies a password off the async threads.
pub async fn verify(plain: String, stored: String) -> bool {
    tokio::task::spawn_blocking(move || verify_blocking(&plain, &stored))
        .await
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argon2id_round_trip() {
        let h = hash_blocking("s3cret").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_blocking("s3cret", &h));
        assert!(!verify_blocking("wrong", &h));
    }

    #[test]
    fn bcrypt_prehashed_is_accepted_and_verifies() {
        let h = bcrypt::hash("pw", 4).unwrap();
        assert!(is_prehashed(&h));
        validate_prehashed(&h).unwrap();
        assert!(verify_blocking("pw", &h));
        assert!(!verify_blocking("pW", &h));
        let y = h.replacen("$2b$", "$2y$", 1);
        assert!(verify_blocking("pw", &y));
    }

    #[test]
    fn garbage_hashes_are_refused() {
        assert!(validate_prehashed("$argon2id$nonsense").is_err());
        assert!(validate_prehashed("$2a$10$short").is_err());
        assert!(!verify_blocking("", "plain-text"));
        assert!(!verify_blocking("x", ""));
    }
}
