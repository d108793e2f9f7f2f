//! Password hashes. New passwords become argon2id (SFTPGo's parameters).
//! Every format SFTPGo accepts pre-hashed verifies at login: argon2id,
//! bcrypt, pbkdf2-sha1/256/512 and b64salt, md5crypt `$1$`, Apache `$apr1$`,
//! sha256crypt `$5$` and sha512crypt `$6$`. After a successful login with any
//! format but argon2id the hash is upgraded ([`needs_upgrade`]). A
//! [`VerifiedCache`] spares a repeated login the argon2 work.
//!
//! Hashing and verification are slow on purpose, so the async entry points
//! ([`hash`], [`verify`]) run them on the blocking pool.

use std::collections::HashMap;
use std::sync::Mutex;

use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::{Algorithm, Argon2, Params, Version};
use base64::Engine;
use sha2::Digest;
use subtle::ConstantTimeEq;

use crate::password_slots::{Busy, HashSlots, Refusal};

/// Prefixes of hash formats accepted verbatim from admins.
const PREHASHED_PREFIXES: &[&str] = &[
    "$argon2id$",
    "$2a$",
    "$2y$",
    "$2b$",
    "$pbkdf2-sha1$",
    "$pbkdf2-sha256$",
    "$pbkdf2-sha512$",
    "$pbkdf2-b64salt-sha256$",
    "$1$",
    "$apr1$",
    "$5$",
    "$6$",
    "$y$",
];

/// Upper bound on the memory a yescrypt hash may make one verification use
/// (Debian's default takes 16 MiB).
const MAX_YESCRYPT_BYTES: u128 = 256 * 1024 * 1024;

/// Memory a yescrypt hash makes one verification use.
fn yescrypt_bytes(value: &str) -> Result<u64, String> {
    let params: yescrypt::Params = value
        .split('$')
        .nth(2)
        .ok_or("invalid yescrypt hash")?
        .parse()
        .map_err(|_| "invalid yescrypt hash parameters".to_string())?;
    let bytes = 128 * u128::from(params.r()) * u128::from(params.n()) * u128::from(params.p());
    Ok(u64::try_from(bytes).unwrap_or(u64::MAX))
}

/// Upper bound on the memory an argon2id hash given by an admin may make
/// one verification use (SFTPGo's default takes 64 MiB).
const MAX_ARGON2_BYTES: u64 = 1024 * 1024 * 1024;

/// Checks a yescrypt hash's parameters: parseable, and cheap enough to run.
fn yescrypt_check(value: &str) -> Result<(), String> {
    let bytes = u128::from(yescrypt_bytes(value)?);
    if bytes > MAX_YESCRYPT_BYTES {
        return Err(format!(
            "yescrypt hash needs {} MiB to verify, more than the 256 MiB allowed",
            bytes >> 20
        ));
    }
    if yescrypt::PasswordHashRef::new(value).is_err() {
        return Err("invalid yescrypt hash".into());
    }
    Ok(())
}

/// Upper bound on pbkdf2 iterations we run for one login (an admin-supplied
/// hash must not pin a CPU for minutes).
const MAX_PBKDF2_ITERATIONS: u32 = 10_000_000;

/// `data_provider.password_hashing` (SFTPGo's names): how new hashes are
/// made. Verification accepts every format whatever is set here.
#[derive(
    Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema,
)]
#[serde(deny_unknown_fields, default)]
pub struct HashingConfig {
    /// `argon2id` (default) or `bcrypt`. Logins with a hash of another
    /// algorithm upgrade it to this one.
    pub algo: String,
    /// argon2id parameters.
    pub argon2_options: Argon2Options,
    /// bcrypt parameters.
    pub bcrypt_options: BcryptOptions,
    /// How many password hashes are computed at once (logins of every kind,
    /// REST tokens, API keys, new passwords), each slot sized for one hash
    /// with argon2_options.memory. 0: automatic, one per CPU, lowered so the
    /// slots fit in a quarter of the memory available at start.
    pub max_concurrent: u32,
    /// Milliseconds a password check waits for a free slot before it is
    /// refused as busy (REST 503, SSH login refused).
    pub max_wait_ms: u64,
}

/// argon2id parameters (SFTPGo's defaults: 64 MiB, one pass, two lanes).
#[derive(
    Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema,
)]
#[serde(deny_unknown_fields, default)]
pub struct Argon2Options {
    /// Memory in KiB.
    pub memory: u32,
    /// Passes.
    pub iterations: u32,
    /// Lanes.
    pub parallelism: u32,
}

/// bcrypt parameters.
#[derive(
    Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema,
)]
#[serde(deny_unknown_fields, default)]
pub struct BcryptOptions {
    /// Cost (4 to 31; SFTPGo's default 10).
    pub cost: u32,
}

impl Default for HashingConfig {
    fn default() -> Self {
        Self {
            algo: "argon2id".into(),
            argon2_options: Argon2Options::default(),
            bcrypt_options: BcryptOptions::default(),
            max_concurrent: 0,
            max_wait_ms: 1000,
        }
    }
}

impl Default for Argon2Options {
    fn default() -> Self {
        Self {
            memory: 65536,
            iterations: 1,
            parallelism: 2,
        }
    }
}

impl Default for BcryptOptions {
    fn default() -> Self {
        Self { cost: 10 }
    }
}

/// How new hashes are made, checked.
#[derive(Debug, Clone)]
enum Hashing {
    Argon2id(Params),
    Bcrypt(u32),
}

static HASHING: std::sync::OnceLock<Hashing> = std::sync::OnceLock::new();
static SLOTS: std::sync::OnceLock<HashSlots> = std::sync::OnceLock::new();
/// Refusals are logged once a second at most.
static BUSY_LOG: crate::log_throttle::LogThrottle = crate::log_throttle::LogThrottle::new();

impl HashingConfig {
    fn check(&self) -> Result<Hashing, String> {
        match self.algo.trim().to_ascii_lowercase().as_str() {
            "" | "argon2id" => {
                let o = &self.argon2_options;
                Params::new(o.memory, o.iterations, o.parallelism, None)
                    .map(Hashing::Argon2id)
                    .map_err(|e| {
                        format!(
                            "data_provider.password_hashing.argon2_options: {e} \
                             (memory in KiB ≥ 8 × parallelism, iterations ≥ 1, parallelism ≥ 1)"
                        )
                    })
            }
            "bcrypt" => {
                let cost = self.bcrypt_options.cost;
                if (4..=31).contains(&cost) {
                    Ok(Hashing::Bcrypt(cost))
                } else {
                    Err(format!(
                        "data_provider.password_hashing.bcrypt_options.cost: {cost} is out of range (4 to 31)"
                    ))
                }
            }
            other => Err(format!(
                "data_provider.password_hashing.algo {other:?} is not supported: use argon2id or bcrypt"
            )),
        }
    }

    /// The hashing slots these settings ask for.
    fn slots(&self) -> Result<HashSlots, String> {
        if !(1..=60_000).contains(&self.max_wait_ms) {
            return Err(format!(
                "data_provider.password_hashing.max_wait_ms: {} is out of range (1 to 60000)",
                self.max_wait_ms
            ));
        }
        if self.max_concurrent > 1024 {
            return Err(format!(
                "data_provider.password_hashing.max_concurrent: {} is out of range (0 to 1024)",
                self.max_concurrent
            ));
        }
        let slot_bytes = u64::from(self.argon2_options.memory) * 1024;
        let slots = match self.max_concurrent {
            0 => crate::password_slots::automatic_slots(slot_bytes),
            n => n,
        };
        Ok(HashSlots::new(
            slots,
            slot_bytes,
            std::time::Duration::from_millis(self.max_wait_ms),
        ))
    }

    /// Checks the settings and makes them the process's way to hash. The
    /// first call wins (one control plane per process).
    pub fn install(&self) -> Result<(), String> {
        let h = self.check()?;
        let slots = self.slots()?;
        let _ = HASHING.set(h);
        if SLOTS.set(slots).is_ok() {
            let s = hash_slots();
            crate::metrics::METRICS
                .password_slots
                .set(i64::from(s.slots()));
            tracing::info!(
                slots = s.slots(),
                slot_mib = s.slot_bytes() >> 20,
                max_wait_ms = self.max_wait_ms,
                "password hashing slots"
            );
        }
        Ok(())
    }
}

/// The process's hashing slots (the defaults until settings are installed).
pub fn hash_slots() -> &'static HashSlots {
    SLOTS.get_or_init(|| {
        HashingConfig::default()
            .slots()
            .expect("default hashing settings are valid")
    })
}

fn hashing() -> &'static Hashing {
    HASHING.get_or_init(|| {
        HashingConfig::default()
            .check()
            .expect("default hashing settings are valid")
    })
}

/// argon2id with the configured parameters when argon2id is the algorithm,
/// else SFTPGo's defaults (verification reads the parameters from the hash).
fn argon2() -> Argon2<'static> {
    let params = match hashing() {
        Hashing::Argon2id(p) => p.clone(),
        Hashing::Bcrypt(_) => {
            Params::new(65536, 1, 2, None).expect("static argon2 parameters are valid")
        }
    };
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// True when `value` is a hash in a format we accept as given.
pub fn is_prehashed(value: &str) -> bool {
    PREHASHED_PREFIXES.iter().any(|p| value.starts_with(p))
}

/// True when a hash that just verified should be replaced by one of the
/// configured algorithm.
pub fn needs_upgrade(stored: &str) -> bool {
    match hashing() {
        Hashing::Argon2id(_) => !stored.starts_with("$argon2id$"),
        Hashing::Bcrypt(_) => !stored.starts_with("$2"),
    }
}

/// Checks that a pre-hashed value parses, so a broken hash is refused at
/// input time rather than failing every login later.
pub fn validate_prehashed(value: &str) -> Result<(), String> {
    if value.starts_with("$argon2id$") {
        PasswordHash::new(value).map_err(|e| format!("invalid argon2id hash: {e}"))?;
        let bytes = memory_of(value);
        if bytes > MAX_ARGON2_BYTES {
            return Err(format!(
                "argon2id hash needs {} MiB to verify, more than the {} MiB allowed",
                bytes >> 20,
                MAX_ARGON2_BYTES >> 20
            ));
        }
    } else if value.starts_with("$2") {
        if bcrypt::verify("", value).is_err() {
            return Err("invalid bcrypt hash".into());
        }
    } else if value.starts_with("$pbkdf2") {
        Pbkdf2Hash::parse(value)?;
    } else if value.starts_with("$1$") || value.starts_with("$apr1$") {
        md5_crypt_parts(value).ok_or("invalid md5crypt hash")?;
    } else if (value.starts_with("$5$") || value.starts_with("$6$"))
        && sha_crypt::PasswordHashRef::new(value).is_err()
    {
        return Err("invalid sha-crypt hash".into());
    } else if value.starts_with("$y$") {
        yescrypt_check(value)?;
    }
    Ok(())
}

/// Hashes a plain password with argon2id (blocking).
fn hash_blocking(plain: &str) -> Result<String, String> {
    match hashing() {
        Hashing::Argon2id(_) => argon2()
            .hash_password(plain.as_bytes())
            .map(|h| h.to_string())
            .map_err(|e| format!("cannot hash password: {e}")),
        Hashing::Bcrypt(cost) => {
            bcrypt::hash(plain, *cost).map_err(|e| format!("cannot hash password: {e}"))
        }
    }
}

/// Verifies `plain` against a stored hash of any accepted format (blocking).
/// Unknown or malformed formats never match.
fn verify_blocking(plain: &str, stored: &str) -> bool {
    let pw = plain.as_bytes();
    if stored.starts_with("$argon2id$") {
        PasswordHash::new(stored).is_ok_and(|parsed| argon2().verify_password(pw, &parsed).is_ok())
    } else if stored.starts_with("$2") {
        bcrypt::verify(plain, stored).unwrap_or(false)
    } else if stored.starts_with("$pbkdf2") {
        Pbkdf2Hash::parse(stored).is_ok_and(|h| h.verify(pw))
    } else if stored.starts_with("$1$") || stored.starts_with("$apr1$") {
        md5_crypt_parts(stored).is_some_and(|(magic, salt, _)| {
            let computed = md5_crypt(pw, salt.as_bytes(), magic);
            bool::from(computed.as_bytes().ct_eq(stored.as_bytes()))
        })
    } else if stored.starts_with("$y$") {
        yescrypt_check(stored).is_ok()
            && yescrypt::PasswordVerifier::<str>::verify_password(
                &yescrypt::Yescrypt::default(),
                pw,
                stored,
            )
            .is_ok()
    } else if stored.starts_with("$5$") || stored.starts_with("$6$") {
        let verifier = sha_crypt::ShaCrypt::default();
        sha_crypt::PasswordVerifier::<str>::verify_password(&verifier, pw, stored).is_ok()
    } else {
        false
    }
}

/// `$pbkdf2-<digest>$<iterations>$<salt>$<base64 key>`, as SFTPGo reads it:
/// the salt is taken literally, except in the b64salt variant.
struct Pbkdf2Hash {
    digest: &'static str,
    iterations: u32,
    salt: Vec<u8>,
    key: Vec<u8>,
}

impl Pbkdf2Hash {
    fn parse(value: &str) -> Result<Self, String> {
        let parts: Vec<&str> = value.split('$').collect();
        if parts.len() != 5 {
            return Err(
                "invalid pbkdf2 hash: expected $pbkdf2-<digest>$<iterations>$<salt>$<hash>".into(),
            );
        }
        let b64 = base64::engine::general_purpose::STANDARD;
        let (digest, salt) = match parts[1] {
            "pbkdf2-sha1" => ("sha1", parts[3].as_bytes().to_vec()),
            "pbkdf2-sha256" => ("sha256", parts[3].as_bytes().to_vec()),
            "pbkdf2-sha512" => ("sha512", parts[3].as_bytes().to_vec()),
            "pbkdf2-b64salt-sha256" => (
                "sha256",
                b64.decode(parts[3])
                    .map_err(|_| "invalid pbkdf2 hash: salt is not base64")?,
            ),
            other => return Err(format!("unknown pbkdf2 variant {other:?}")),
        };
        let iterations: u32 = parts[2]
            .parse()
            .map_err(|_| "invalid pbkdf2 hash: iterations is not a number")?;
        if iterations == 0 || iterations > MAX_PBKDF2_ITERATIONS {
            return Err(format!(
                "invalid pbkdf2 hash: iterations must be 1 to {MAX_PBKDF2_ITERATIONS}"
            ));
        }
        let key = b64
            .decode(parts[4])
            .map_err(|_| "invalid pbkdf2 hash: hash is not base64")?;
        if key.is_empty() || key.len() > 128 {
            return Err("invalid pbkdf2 hash: unexpected hash length".into());
        }
        Ok(Self {
            digest,
            iterations,
            salt,
            key,
        })
    }

    fn verify(&self, pw: &[u8]) -> bool {
        let mut out = vec![0u8; self.key.len()];
        match self.digest {
            "sha1" => pbkdf2::pbkdf2_hmac::<sha1::Sha1>(pw, &self.salt, self.iterations, &mut out),
            "sha256" => {
                pbkdf2::pbkdf2_hmac::<sha2::Sha256>(pw, &self.salt, self.iterations, &mut out)
            }
            _ => pbkdf2::pbkdf2_hmac::<sha2::Sha512>(pw, &self.salt, self.iterations, &mut out),
        }
        bool::from(out.ct_eq(&self.key))
    }
}

/// Splits `$1$salt$hash` / `$apr1$salt$hash` into (magic, salt, hash).
fn md5_crypt_parts(value: &str) -> Option<(&'static str, &str, &str)> {
    let (magic, rest) = if let Some(r) = value.strip_prefix("$1$") {
        ("$1$", r)
    } else {
        ("$apr1$", value.strip_prefix("$apr1$")?)
    };
    let (salt, hash) = rest.split_once('$')?;
    (salt.len() <= 8 && hash.len() == 22).then_some((magic, salt, hash))
}

/// md5crypt (Poul-Henning Kamp's algorithm; `$apr1$` is the same with
/// Apache's magic string).
fn md5_crypt(pw: &[u8], salt: &[u8], magic: &str) -> String {
    use md5::Md5;
    let salt = &salt[..salt.len().min(8)];
    let alt = Md5::new()
        .chain_update(pw)
        .chain_update(salt)
        .chain_update(pw)
        .finalize();
    let mut ctx = Md5::new()
        .chain_update(pw)
        .chain_update(magic.as_bytes())
        .chain_update(salt);
    let mut left = pw.len();
    while left > 0 {
        let n = left.min(16);
        ctx.update(&alt[..n]);
        left -= n;
    }
    let mut i = pw.len();
    while i != 0 {
        if i & 1 == 1 {
            ctx.update([0u8]);
        } else {
            ctx.update(&pw[..1]);
        }
        i >>= 1;
    }
    let mut fin = ctx.finalize();
    for round in 0..1000 {
        let mut c = Md5::new();
        if round & 1 == 1 {
            c.update(pw);
        } else {
            c.update(fin);
        }
        if round % 3 != 0 {
            c.update(salt);
        }
        if round % 7 != 0 {
            c.update(pw);
        }
        if round & 1 == 1 {
            c.update(fin);
        } else {
            c.update(pw);
        }
        fin = c.finalize();
    }
    const ITOA64: &[u8] = b"./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut out = String::with_capacity(magic.len() + salt.len() + 23);
    out.push_str(magic);
    out.push_str(&String::from_utf8_lossy(salt));
    out.push('$');
    let mut to64 = |mut v: u32, n: usize| {
        for _ in 0..n {
            out.push(ITOA64[(v & 0x3f) as usize] as char);
            v >>= 6;
        }
    };
    let f = |i: usize| u32::from(fin[i]);
    for (a, b, c) in [(0, 6, 12), (1, 7, 13), (2, 8, 14), (3, 9, 15), (4, 10, 5)] {
        to64((f(a) << 16) | (f(b) << 8) | f(c), 4);
    }
    to64(f(11), 2);
    out
}

/// Memory one computation against `stored` takes (argon2 and yescrypt
/// read theirs from the hash; the others need little).
fn memory_of(stored: &str) -> u64 {
    if stored.starts_with("$argon2") {
        PasswordHash::new(stored)
            .ok()
            .and_then(|h| h.params.get_decimal("m").map(|kib| u64::from(kib) * 1024))
            .unwrap_or(0)
    } else if stored.starts_with("$y$") {
        yescrypt_bytes(stored).unwrap_or(0)
    } else {
        0
    }
}

/// Memory a new hash with the configured algorithm takes.
fn hashing_memory() -> u64 {
    match hashing() {
        Hashing::Argon2id(p) => u64::from(p.m_cost()) * 1024,
        Hashing::Bcrypt(_) => 0,
    }
}

/// Hashes a plain password off the async threads, within the hashing slots
/// (waiting up to [`crate::password_slots::HASH_WAIT`]).
pub async fn hash(plain: String) -> Result<String, String> {
    let permit = match hash_slots()
        .acquire(hashing_memory(), crate::password_slots::HASH_WAIT)
        .await
    {
        Ok(p) => p,
        Err(_) => {
            refused("hash");
            return Err(Busy.to_string());
        }
    };
    tokio::task::spawn_blocking(move || {
        let _slot = permit;
        hash_blocking(&plain)
    })
    .await
    .map_err(|e| format!("hashing task failed: {e}"))?
}

/// Verifies a password off the async threads, within the hashing slots:
/// `Err(Busy)` when none freed up within `max_wait_ms`. A stored hash that
/// needs more memory than all slots together never matches.
pub async fn verify(plain: String, stored: String) -> Result<bool, Busy> {
    let slots = hash_slots();
    let permit = match slots.acquire(memory_of(&stored), slots.max_wait).await {
        Ok(p) => p,
        Err(Refusal::Busy) => {
            refused("verify");
            return Err(Busy);
        }
        Err(Refusal::TooLarge) => {
            tracing::warn!(
                memory_mib = memory_of(&stored) >> 20,
                "password hash refused: it needs more memory than all hashing slots together"
            );
            return Ok(false);
        }
    };
    let m = &crate::metrics::METRICS;
    m.password_checks_running.inc();
    let ok = tokio::task::spawn_blocking(move || {
        let _slot = permit;
        verify_blocking(&plain, &stored)
    })
    .await
    .unwrap_or(false);
    m.password_checks_running.dec();
    Ok(ok)
}

/// Counts (and now and then logs) a computation refused for lack of slots.
fn refused(kind: &'static str) {
    crate::metrics::METRICS
        .password_checks_refused
        .with_label_values(&[kind])
        .inc();
    if let Some(suppressed) = BUSY_LOG.admit() {
        let s = hash_slots();
        tracing::warn!(
            kind,
            slots = s.slots(),
            max_wait_ms = s.max_wait.as_millis() as u64,
            suppressed,
            "password check refused: every hashing slot is busy \
             (data_provider.password_hashing.max_concurrent)"
        );
    }
}

/// Entries kept in the verified-password cache.
const CACHE_ENTRIES: usize = 10_000;

/// Remembers, per user, which password last verified against which stored
/// hash, so a repeated login (every sftp/scp invocation of a script) does not
/// pay argon2 again. It holds a keyed digest of the password, never the
/// password; an entry only matches while the stored hash is unchanged, so a
/// password change invalidates it by construction.
pub struct VerifiedCache {
    key: [u8; 32],
    entries: Mutex<HashMap<String, (String, [u8; 32])>>,
}

impl Default for VerifiedCache {
    fn default() -> Self {
        let mut key = [0u8; 32];
        rand::Rng::fill_bytes(&mut rand::rng(), &mut key);
        Self {
            key,
            entries: Mutex::new(HashMap::new()),
        }
    }
}

impl VerifiedCache {
    fn digest(&self, plain: &str) -> [u8; 32] {
        sha2::Sha256::new()
            .chain_update(self.key)
            .chain_update(plain.as_bytes())
            .finalize()
            .into()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (String, [u8; 32])>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Verifies through the cache (a hit takes no hashing slot); records
    /// successes.
    pub async fn verify(
        &self,
        username: &str,
        plain: String,
        stored: String,
    ) -> Result<bool, Busy> {
        let digest = self.digest(&plain);
        if let Some((hash, d)) = self.lock().get(username)
            && *hash == stored
            && bool::from(d.ct_eq(&digest))
        {
            return Ok(true);
        }
        let ok = verify(plain, stored.clone()).await?;
        if ok {
            let mut entries = self.lock();
            if entries.len() >= CACHE_ENTRIES && !entries.contains_key(username) {
                // Crude but bounded: start over rather than grow.
                entries.clear();
            }
            entries.insert(username.to_string(), (stored, digest));
        }
        Ok(ok)
    }

    /// Forgets a user (deleted or renamed).
    pub fn forget(&self, username: &str) {
        self.lock().remove(username);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(plain: &str, stored: &str, expected: bool) {
        assert_eq!(
            verify_blocking(plain, stored),
            expected,
            "{plain:?} vs {stored}"
        );
    }

    #[test]
    fn argon2id_round_trip() {
        let h = hash_blocking("s3cret").unwrap();
        assert!(h.starts_with("$argon2id$"));
        check("s3cret", &h, true);
        check("wrong", &h, false);
        assert!(!needs_upgrade(&h));
    }

    #[test]
    fn bcrypt_prehashed_is_accepted_and_verifies() {
        let h = bcrypt::hash("pw", 4).unwrap();
        assert!(is_prehashed(&h));
        validate_prehashed(&h).unwrap();
        check("pw", &h, true);
        check("pW", &h, false);
        check("pw", &h.replacen("$2b$", "$2y$", 1), true);
        assert!(needs_upgrade(&h));
    }

    /// Vectors made by independent implementations: OpenSSL (`openssl passwd
    /// -1` / `-apr1`), Python's hashlib.pbkdf2_hmac and glibc crypt(3).
    #[test]
    fn every_sftpgo_format_verifies() {
        let vectors = [
            ("password", "$1$saltsalt$qjXMvbEw8oaL.CzflDtaK/"),
            ("", "$1$x$fwjfZtMwarkdetsjiQreU1"),
            ("Ferry pw!", "$apr1$abcdefgh$5ksy9RcsWI9ZsU1PmFIM3/"),
            (
                "secret-pw",
                "$pbkdf2-sha1$1000$saltysalt$jDJwQjOqyt+QLNx84LWDO1HNwYM=",
            ),
            (
                "secret-pw",
                "$pbkdf2-sha256$1000$saltysalt$IUnN9S6hvi98O3IarBq7AWz/t8QKzNjX3DuhNoax8dc=",
            ),
            (
                "secret-pw",
                "$pbkdf2-sha512$1000$saltysalt$p79S5Pvsa9gGcydF31sM+AUwOqxFUNnihj+ytpwAMCIq4sm86DZIbw/oIK83ztKas7t5CnjYYIpJYE3RwJJyEg==",
            ),
            (
                "secret-pw",
                "$pbkdf2-b64salt-sha256$1000$AQJiaW5hcnn/$nt5DAwjxfX9GEKtrf5omEoFU2DSSC4aakBtFlb2fSC0=",
            ),
            (
                "secret-pw",
                "$5$rounds=5000$abcdefgh$fqmIyWSXGJ2kJUwSST4wdIROm3zDJp0vCX1XUtUgN3.",
            ),
            (
                "secret-pw",
                "$6$abcdefghijkl$7IMl7OhXnRujgAx1Mdsid1NaX07ASDkLvsJoAB3BBLjRjt.fgqRLj/6Fx.UxDqqGjyNqpAX5kZkAHVUPPcQen.",
            ),
            // libxcrypt (Debian 12's default for /etc/shadow).
            (
                "tom-pw",
                "$y$j9T$F5Jx5fExrKuPp53xLKQ..1$Z7xAk5Ismpvhp14D.dW5xF00qGij/7kv3VLVB02Ken9",
            ),
        ];
        for (plain, stored) in vectors {
            assert!(is_prehashed(stored), "{stored}");
            validate_prehashed(stored).unwrap_or_else(|e| panic!("{stored}: {e}"));
            check(plain, stored, true);
            check(&format!("{plain}x"), stored, false);
            assert!(needs_upgrade(stored));
        }
    }

    #[test]
    fn garbage_hashes_are_refused() {
        for bad in [
            "$argon2id$nonsense",
            "$2a$10$short",
            "$pbkdf2-sha256$notanumber$salt$AAAA",
            "$pbkdf2-sha256$0$salt$AAAA",
            "$pbkdf2-sha256$1000$salt$***",
            "$pbkdf2-md4$1000$salt$AAAA",
            "$1$toolongsalt$qjXMvbEw8oaL.CzflDtaK/",
            "$6$",
        ] {
            assert!(validate_prehashed(bad).is_err(), "{bad} must be refused");
            check("", bad, false);
        }
        // Parses, but would take 2 GiB per login.
        let huge = "$argon2id$v=19$m=2097152,t=1,p=1$c29tZXNhbHQ$RdescudvJCsgt3ub+b+dWRWJTmaaJObG";
        assert!(validate_prehashed(huge).unwrap_err().contains("2048 MiB"));
        check("", "plain-text", false);
        check("x", "", false);
    }

    #[tokio::test]
    async fn the_cache_matches_only_the_same_password_and_hash() {
        let cache = VerifiedCache::default();
        let h1 = hash_blocking("one").unwrap();
        let check = |plain: &str, h: &str| cache.verify("u", plain.into(), h.to_string());
        assert!(check("one", &h1).await.unwrap());
        assert!(check("one", &h1).await.unwrap());
        assert!(!check("two", &h1).await.unwrap());
        // A new stored hash (password changed) is verified for real.
        let h2 = hash_blocking("two").unwrap();
        assert!(!check("one", &h2).await.unwrap());
        assert!(check("two", &h2).await.unwrap());
        cache.forget("u");
        assert!(cache.lock().is_empty());
    }
}
