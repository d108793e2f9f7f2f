//! Object storage settings ([`Storage`]): the checks both planes make before
//! an edge is given one — the control plane on REST input and restores
//! (SFTPGo's `filesystem` object), portable mode on its flags. Errors name
//! the field in SFTPGo's terms (`filesystem.s3config.bucket`), so a REST
//! client and a portable-mode operator read the same message.
//!
//! Part sizes here are bytes (the wire's unit); limits are stated in SFTPGo's
//! unit, MB (MiB), because that is what users type.

use crate::edge::v1::Storage;

/// `filesystem.provider` values (SFTPGo's numbering).
pub const LOCAL: i32 = 0;
pub const S3: i32 = 1;
pub const GCS: i32 = 2;
pub const AZURE_BLOB: i32 = 3;

/// SFTPGo's part-size unit, in bytes (its "MB" is a MiB).
pub const MB: i64 = 1024 * 1024;
/// S3 refuses multipart parts below 5 MiB (but the last); SFTPGo's bounds.
pub const S3_MIN_PART_MB: i64 = 5;
/// Each part in flight is buffered in memory: SFTPGo's cap for S3 and ours
/// for GCS's resumable-upload chunks.
pub const MAX_PART_MB: i64 = 5000;
/// SFTPGo's cap for Azure blocks (buffered in memory the same way).
pub const AZURE_MAX_PART_MB: i64 = 100;
/// Parts or ranged reads in flight per transfer, each with its buffer:
/// SFTPGo's cap.
pub const MAX_CONCURRENCY: i32 = 64;
/// Azure blob access tiers SFTPGo accepts (`""`: the account's default).
pub const AZURE_ACCESS_TIERS: [&str; 4] = ["", "Archive", "Hot", "Cool"];

/// A storage setting that cannot be used, with its field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidStorage {
    /// The provider's sub-object (`s3config`, `gcsconfig`, `azblobconfig`);
    /// None for `provider` itself.
    pub section: Option<&'static str>,
    /// SFTPGo's key inside it (`bucket`, `key_prefix`, …).
    pub key: &'static str,
    pub problem: String,
}

impl std::fmt::Display for InvalidStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.section {
            Some(section) => write!(f, "filesystem.{section}.{} {}", self.key, self.problem),
            None => write!(f, "filesystem.{} {}", self.key, self.problem),
        }
    }
}

impl std::error::Error for InvalidStorage {}

/// SFTPGo's name for a provider's sub-object of `filesystem`.
pub fn section(provider: i32) -> Option<&'static str> {
    match provider {
        S3 => Some("s3config"),
        GCS => Some("gcsconfig"),
        AZURE_BLOB => Some("azblobconfig"),
        _ => None,
    }
}

/// A provider's name for messages.
pub fn provider_name(provider: i64) -> &'static str {
    match provider {
        0 => "local",
        1 => "S3",
        2 => "Google Cloud Storage",
        3 => "Azure Blob",
        4 => "local encrypted",
        5 => "SFTP",
        6 => "HTTP",
        _ => "unknown",
    }
}

/// Refuses providers Ferry does not serve: SFTPGo's 4 to 6 by name, anything
/// else as unknown.
pub fn check_provider(provider: i64) -> Result<i32, InvalidStorage> {
    if let Ok(p @ LOCAL..=AZURE_BLOB) = i32::try_from(provider) {
        return Ok(p);
    }
    let problem = match provider {
        4..=6 => format!(
            "{provider} ({}) is not supported: Ferry stores files on the local disk (0), \
             S3 (1), Google Cloud Storage (2) or Azure Blob (3)",
            provider_name(provider)
        ),
        _ => format!(
            "{provider} is not a filesystem provider: use 0 (local), 1 (S3), \
             2 (Google Cloud Storage) or 3 (Azure Blob)"
        ),
    };
    Err(InvalidStorage {
        section: None,
        key: "provider",
        problem,
    })
}

const KEY_PREFIX_SHAPE: &str = "must not start with \"/\" and must end with \"/\"";
const KEY_PREFIX_PARTS: &str = "must not hold \".\" or \"..\" parts";

/// A key prefix as SFTPGo stores it: without a leading `/`, empty parts
/// dropped, ending with `/` (`"a//b"` becomes `"a/b/"`). `.` and `..` parts
/// are refused: keys are names, not paths, and a prefix that seems to climb
/// would not.
pub fn normalize_key_prefix(prefix: &str) -> Result<String, String> {
    if prefix.is_empty() {
        return Ok(String::new());
    }
    if prefix.starts_with('/') {
        return Err(KEY_PREFIX_SHAPE.into());
    }
    let parts: Vec<&str> = prefix.split('/').filter(|p| !p.is_empty()).collect();
    if parts.iter().any(|p| *p == "." || *p == "..") {
        return Err(KEY_PREFIX_PARTS.into());
    }
    Ok(format!("{}/", parts.join("/")))
}

/// True for `http://HOST…` or `https://HOST…` without blanks or controls.
pub fn is_http_url(s: &str) -> bool {
    let lower = s.to_ascii_lowercase();
    let rest = lower
        .strip_prefix("https://")
        .or_else(|| lower.strip_prefix("http://"));
    let Some(rest) = rest else { return false };
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    !host.is_empty() && !s.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// Whether `s` is a bare domain (SFTPGo's Azure endpoint form,
/// `blob.core.windows.net`).
fn is_domain(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with(['.', '-'])
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
}

/// The container a SAS URL names: its first path part (the emulator's URLs
/// start with the account).
fn container_in_sas_url(url: &str, emulator: bool) -> String {
    let rest = url.split_once("://").map_or("", |(_, r)| r);
    let path = rest.split(['?', '#']).next().unwrap_or("");
    let mut parts = path.split('/').skip(1).filter(|p| !p.is_empty());
    if emulator {
        parts.next();
    }
    parts.next().unwrap_or("").to_string()
}

/// Turns an Azure storage written with SFTPGo's settings into the wire's
/// form: an endpoint given as a domain (SFTPGo's `blob.core.windows.net`
/// form, meaning `https://ACCOUNT.DOMAIN`) becomes that URL (dropped with a
/// SAS URL, which carries its own host); a missing container is the one the
/// SAS URL names. The emulator's endpoint stays a base URL.
pub fn complete_azure(s: &mut Storage) -> Result<(), InvalidStorage> {
    if s.provider != AZURE_BLOB {
        return Ok(());
    }
    if s.bucket.is_empty() {
        s.bucket = container_in_sas_url(&s.sas_url, s.use_emulator);
    }
    let e = &s.endpoint;
    if s.use_emulator || e.is_empty() || is_http_url(e) {
        return Ok(());
    }
    if !is_domain(e) {
        return Err(InvalidStorage {
            section: section(AZURE_BLOB),
            key: "endpoint",
            problem: "must be a domain (such as blob.core.windows.net) or an http:// or \
                      https:// URL"
                .into(),
        });
    }
    s.endpoint = if s.access_key.is_empty() {
        String::new()
    } else {
        format!("https://{}.{e}", s.access_key)
    };
    Ok(())
}

struct Check<'a> {
    section: &'static str,
    s: &'a Storage,
}

impl Check<'_> {
    fn fail(&self, key: &'static str, problem: impl Into<String>) -> Result<(), InvalidStorage> {
        Err(InvalidStorage {
            section: Some(self.section),
            key,
            problem: problem.into(),
        })
    }

    fn required(&self, key: &'static str, value: &str, why: &str) -> Result<(), InvalidStorage> {
        if value.is_empty() {
            return self.fail(key, format!("is required{why}"));
        }
        Ok(())
    }

    fn key_prefix(&self) -> Result<(), InvalidStorage> {
        let p = &self.s.key_prefix;
        if p.is_empty() {
            return Ok(());
        }
        if p.starts_with('/') || !p.ends_with('/') {
            return self.fail("key_prefix", KEY_PREFIX_SHAPE);
        }
        if p[..p.len() - 1]
            .split('/')
            .any(|part| part.is_empty() || part == "." || part == "..")
        {
            return self.fail("key_prefix", KEY_PREFIX_PARTS);
        }
        Ok(())
    }

    fn endpoint(&self, key: &'static str) -> Result<(), InvalidStorage> {
        if !self.s.endpoint.is_empty() && !is_http_url(&self.s.endpoint) {
            return self.fail(key, "must be an http:// or https:// URL");
        }
        Ok(())
    }

    /// A part size in bytes against SFTPGo's bounds in MB.
    fn part_size(
        &self,
        key: &'static str,
        bytes: i64,
        min_mb: i64,
        max_mb: i64,
    ) -> Result<(), InvalidStorage> {
        if bytes < 0 {
            return self.fail(key, "must not be negative");
        }
        if bytes != 0 && bytes < min_mb * MB {
            return self.fail(key, format!("must be at least {min_mb} (MB)"));
        }
        if bytes > max_mb * MB {
            return self.fail(key, format!("must be at most {max_mb} (MB)"));
        }
        Ok(())
    }

    fn concurrency(&self, key: &'static str, n: i32) -> Result<(), InvalidStorage> {
        if !(0..=MAX_CONCURRENCY).contains(&n) {
            return self.fail(
                key,
                format!("must be between 0 (the default) and {MAX_CONCURRENCY}"),
            );
        }
        Ok(())
    }

    fn transfers(&self, min_mb: i64, max_mb: i64) -> Result<(), InvalidStorage> {
        let s = self.s;
        self.part_size("upload_part_size", s.upload_part_size, min_mb, max_mb)?;
        self.concurrency("upload_concurrency", s.upload_concurrency)?;
        self.part_size("download_part_size", s.download_part_size, min_mb, max_mb)?;
        self.concurrency("download_concurrency", s.download_concurrency)
    }

    fn s3(&self) -> Result<(), InvalidStorage> {
        let s = self.s;
        self.required("bucket", &s.bucket, "")?;
        if s.endpoint.is_empty() {
            self.required("region", &s.region, " (unless an endpoint is set)")?;
        }
        self.endpoint("endpoint")?;
        if !s.access_key.is_empty() {
            self.required("access_secret", &s.secret, " with access_key")?;
        }
        if !s.secret.is_empty() {
            self.required("access_key", &s.access_key, " with access_secret")?;
        }
        self.key_prefix()?;
        self.transfers(S3_MIN_PART_MB, MAX_PART_MB)
    }

    fn gcs(&self) -> Result<(), InvalidStorage> {
        let s = self.s;
        self.required("bucket", &s.bucket, "")?;
        self.key_prefix()?;
        self.endpoint("endpoint")?;
        if !s.automatic_credentials {
            self.required("credentials", &s.secret, " when automatic_credentials is 0")?;
            let json = s.secret.trim();
            if !(json.starts_with('{') && json.ends_with('}')) {
                return self.fail(
                    "credentials",
                    "must be a service account key (a JSON object)",
                );
            }
        }
        self.transfers(0, MAX_PART_MB)
    }

    fn azure(&self) -> Result<(), InvalidStorage> {
        let s = self.s;
        self.required("container", &s.bucket, " (or a sas_url naming it)")?;
        if !s.sas_url.is_empty() {
            if !is_http_url(&s.sas_url) || !s.sas_url.contains('?') {
                return self.fail(
                    "sas_url",
                    "must be an http:// or https:// URL with a SAS token (…?sv=…&sig=…)",
                );
            }
        } else if !s.use_emulator || !s.access_key.is_empty() {
            self.required(
                "account_name",
                &s.access_key,
                " (or a sas_url, or use_emulator)",
            )?;
            self.required("account_key", &s.secret, " with account_name")?;
        }
        if !AZURE_ACCESS_TIERS.contains(&s.storage_class.as_str()) {
            return self.fail(
                "access_tier",
                "must be one of \"\", \"Archive\", \"Hot\" or \"Cool\"",
            );
        }
        self.endpoint("endpoint")?;
        self.key_prefix()?;
        self.transfers(0, AZURE_MAX_PART_MB)
    }
}

/// Checks a storage an edge is about to be given. Provider 0 (the local
/// disk) has nothing to check here.
pub fn validate(s: &Storage) -> Result<(), InvalidStorage> {
    let provider = check_provider(i64::from(s.provider))?;
    let Some(section) = section(provider) else {
        return Ok(());
    };
    let check = Check { section, s };
    match provider {
        S3 => check.s3(),
        GCS => check.gcs(),
        _ => check.azure(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s3() -> Storage {
        Storage {
            provider: S3,
            bucket: "b".into(),
            region: "eu-west-1".into(),
            ..Default::default()
        }
    }

    #[test]
    fn key_prefixes_are_normalized_as_sftpgo_does() {
        assert_eq!(normalize_key_prefix("").unwrap(), "");
        assert_eq!(normalize_key_prefix("a").unwrap(), "a/");
        assert_eq!(normalize_key_prefix("a//b/").unwrap(), "a/b/");
        assert_eq!(normalize_key_prefix("/a/").unwrap_err(), KEY_PREFIX_SHAPE);
        assert_eq!(
            normalize_key_prefix("a/../b").unwrap_err(),
            KEY_PREFIX_PARTS
        );
        assert_eq!(normalize_key_prefix("./b").unwrap_err(), KEY_PREFIX_PARTS);
    }

    #[test]
    fn urls() {
        for ok in ["http://127.0.0.1:9000", "https://s3.example.com/x?y"] {
            assert!(is_http_url(ok), "{ok}");
        }
        for bad in [
            "127.0.0.1:9000",
            "ftp://h",
            "http://",
            "http:///x",
            "http://a b",
        ] {
            assert!(!is_http_url(bad), "{bad}");
        }
    }

    /// Each broken field gives its own message, naming it.
    #[test]
    fn every_field_is_named() {
        let gcs = || Storage {
            provider: GCS,
            bucket: "b".into(),
            secret: r#"{"type": "service_account"}"#.into(),
            ..Default::default()
        };
        let az = || Storage {
            provider: AZURE_BLOB,
            bucket: "c".into(),
            access_key: "acct".into(),
            secret: "key".into(),
            ..Default::default()
        };
        let cases: Vec<(Storage, &str)> = vec![
            (
                Storage {
                    bucket: String::new(),
                    ..s3()
                },
                "filesystem.s3config.bucket is required",
            ),
            (
                Storage {
                    region: String::new(),
                    ..s3()
                },
                "filesystem.s3config.region is required (unless an endpoint is set)",
            ),
            (
                Storage {
                    endpoint: "minio:9000".into(),
                    ..s3()
                },
                "filesystem.s3config.endpoint must be an http:// or https:// URL",
            ),
            (
                Storage {
                    access_key: "AK".into(),
                    ..s3()
                },
                "filesystem.s3config.access_secret is required with access_key",
            ),
            (
                Storage {
                    secret: "SK".into(),
                    ..s3()
                },
                "filesystem.s3config.access_key is required with access_secret",
            ),
            (
                Storage {
                    key_prefix: "/a/".into(),
                    ..s3()
                },
                "filesystem.s3config.key_prefix must not start with \"/\" and must end with \"/\"",
            ),
            (
                Storage {
                    key_prefix: "a".into(),
                    ..s3()
                },
                "filesystem.s3config.key_prefix must not start with \"/\" and must end with \"/\"",
            ),
            (
                Storage {
                    key_prefix: "a/../".into(),
                    ..s3()
                },
                "filesystem.s3config.key_prefix must not hold \".\" or \"..\" parts",
            ),
            (
                Storage {
                    upload_part_size: 4 * MB,
                    ..s3()
                },
                "filesystem.s3config.upload_part_size must be at least 5 (MB)",
            ),
            (
                Storage {
                    upload_part_size: 5001 * MB,
                    ..s3()
                },
                "filesystem.s3config.upload_part_size must be at most 5000 (MB)",
            ),
            (
                Storage {
                    download_part_size: -1,
                    ..s3()
                },
                "filesystem.s3config.download_part_size must not be negative",
            ),
            (
                Storage {
                    upload_concurrency: 65,
                    ..s3()
                },
                "filesystem.s3config.upload_concurrency must be between 0 (the default) and 64",
            ),
            (
                Storage {
                    download_concurrency: -1,
                    ..s3()
                },
                "filesystem.s3config.download_concurrency must be between 0 (the default) and 64",
            ),
            (
                Storage {
                    bucket: String::new(),
                    ..gcs()
                },
                "filesystem.gcsconfig.bucket is required",
            ),
            (
                Storage {
                    secret: String::new(),
                    ..gcs()
                },
                "filesystem.gcsconfig.credentials is required when automatic_credentials is 0",
            ),
            (
                Storage {
                    secret: "not json".into(),
                    ..gcs()
                },
                "filesystem.gcsconfig.credentials must be a service account key (a JSON object)",
            ),
            (
                Storage {
                    bucket: String::new(),
                    ..az()
                },
                "filesystem.azblobconfig.container is required (or a sas_url naming it)",
            ),
            (
                Storage {
                    access_key: String::new(),
                    ..az()
                },
                "filesystem.azblobconfig.account_name is required (or a sas_url, or use_emulator)",
            ),
            (
                Storage {
                    secret: String::new(),
                    ..az()
                },
                "filesystem.azblobconfig.account_key is required with account_name",
            ),
            (
                Storage {
                    sas_url: "https://a.blob.core.windows.net/c".into(),
                    ..az()
                },
                "filesystem.azblobconfig.sas_url must be an http:// or https:// URL with a SAS token (…?sv=…&sig=…)",
            ),
            (
                Storage {
                    storage_class: "Frozen".into(),
                    ..az()
                },
                "filesystem.azblobconfig.access_tier must be one of \"\", \"Archive\", \"Hot\" or \"Cool\"",
            ),
            (
                Storage {
                    upload_part_size: 101 * MB,
                    ..az()
                },
                "filesystem.azblobconfig.upload_part_size must be at most 100 (MB)",
            ),
            (
                Storage {
                    provider: 4,
                    ..s3()
                },
                "filesystem.provider 4 (local encrypted) is not supported: Ferry stores files on \
                 the local disk (0), S3 (1), Google Cloud Storage (2) or Azure Blob (3)",
            ),
            (
                Storage {
                    provider: 7,
                    ..s3()
                },
                "filesystem.provider 7 is not a filesystem provider: use 0 (local), 1 (S3), \
                 2 (Google Cloud Storage) or 3 (Azure Blob)",
            ),
        ];
        for (storage, want) in cases {
            assert_eq!(validate(&storage).unwrap_err().to_string(), want);
        }
    }

    #[test]
    fn azure_settings_in_sftpgo_form() {
        let az = |endpoint: &str, sas_url: &str, emulator: bool| {
            let mut s = Storage {
                provider: AZURE_BLOB,
                access_key: "acct".into(),
                endpoint: endpoint.into(),
                sas_url: sas_url.into(),
                use_emulator: emulator,
                ..Default::default()
            };
            complete_azure(&mut s).map(|()| (s.endpoint, s.bucket))
        };
        assert_eq!(
            az("blob.core.usgovcloudapi.net", "", false).unwrap().0,
            "https://acct.blob.core.usgovcloudapi.net"
        );
        assert_eq!(
            az("http://127.0.0.1:10000", "", true).unwrap().0,
            "http://127.0.0.1:10000"
        );
        assert_eq!(
            az(
                "",
                "https://acct.blob.core.windows.net/box?sv=1&sig=x",
                false
            )
            .unwrap()
            .1,
            "box"
        );
        assert_eq!(
            az("", "http://127.0.0.1:10000/devstoreaccount1/box?sv=1", true)
                .unwrap()
                .1,
            "box"
        );
        assert_eq!(
            az("", "https://acct.blob.core.windows.net/?sv=1", false)
                .unwrap()
                .1,
            ""
        );
        assert_eq!(
            az("not a host", "", false).unwrap_err().to_string(),
            "filesystem.azblobconfig.endpoint must be a domain (such as blob.core.windows.net) \
             or an http:// or https:// URL"
        );
    }

    #[test]
    fn valid_storages_pass() {
        let ok = [
            s3(),
            Storage {
                region: String::new(),
                endpoint: "http://127.0.0.1:9000".into(),
                access_key: "AK".into(),
                secret: "SK".into(),
                key_prefix: "users/ann/".into(),
                upload_part_size: 5 * MB,
                upload_concurrency: 64,
                ..s3()
            },
            Storage {
                provider: GCS,
                bucket: "b".into(),
                automatic_credentials: true,
                ..Default::default()
            },
            Storage {
                provider: AZURE_BLOB,
                bucket: "c".into(),
                use_emulator: true,
                storage_class: "Hot".into(),
                ..Default::default()
            },
            Storage {
                provider: AZURE_BLOB,
                bucket: "c".into(),
                sas_url: "https://a.blob.core.windows.net/c?sv=1&sig=x".into(),
                ..Default::default()
            },
            Storage::default(),
        ];
        for s in ok {
            assert_eq!(validate(&s), Ok(()), "{s:?}");
        }
    }
}
