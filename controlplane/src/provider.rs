//! Data provider settings with SFTPGo's names (`data_provider.driver`,
//! `name`, `host`, `port`, `username`, `password`, `sslmode`,
//! `connection_string`, `pool_size`; also `FERRY_DATA_PROVIDER__<KEY>`) and
//! the connection target they describe.

use std::path::{Path, PathBuf};

/// Which database a store talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgresql,
    Mysql,
    /// SQLite in memory: nothing is kept across restarts.
    Memory,
    /// redb, an embedded key/value file (the role bbolt plays for SFTPGo).
    Redb,
}

impl Backend {
    /// The `data_provider.driver` value naming this backend.
    pub fn driver(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgresql => "postgresql",
            Backend::Mysql => "mysql",
            Backend::Memory => "memory",
            Backend::Redb => "redb",
        }
    }
}

/// `data_provider`: the database holding users, folders, admins.
#[derive(
    Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema,
)]
#[serde(deny_unknown_fields, default)]
pub struct DataProviderConfig {
    /// `sqlite` (default), `postgresql`, `mysql` (MySQL and MariaDB),
    /// `redb` (embedded key/value file) or `memory` (nothing kept across
    /// restarts).
    pub driver: String,
    /// SQLite/redb: database file, relative to the data directory (default
    /// `ferry.db` / `ferry.redb`). PostgreSQL/MySQL: database name (default
    /// `ferry`).
    /// Memory: an optional backup file loaded at start and on SIGHUP.
    pub name: String,
    /// Server host (default 127.0.0.1).
    pub host: String,
    /// Server port (0: the backend's default, 5432 or 3306).
    pub port: u16,
    /// Database user.
    pub username: String,
    /// Database password.
    pub password: String,
    /// TLS to the server: 0 off, 1 required, 2 verify the CA, 3 verify CA
    /// and host name (SFTPGo's values).
    pub sslmode: u8,
    /// Full connection URL; when set, host/port/name/credentials are ignored.
    pub connection_string: String,
    /// Connections in the pool (0: 8).
    pub pool_size: u32,
    /// External authentication: an absolute program path or an http:// URL
    /// that decides logins and returns the user (SFTPGo's protocol).
    pub external_auth_hook: String,
    /// Methods the external hook decides: 0 all, 1 password, 2 public key
    /// (bits may be combined).
    pub external_auth_scope: u8,
    /// Runs before each login and may create, change or disable the user
    /// (partial JSON merged over the stored user).
    pub pre_login_hook: String,
    /// Checks passwords first: status 1 accepts, 0 refuses, 2 verifies
    /// `to_verify` against the stored hash.
    pub check_password_hook: String,
    /// Protocols the check-password hook applies to: 0 all, 1 SSH.
    pub check_password_scope: u8,
    /// Notified after each login (in the background).
    pub post_login_hook: String,
    /// Which logins notify it: 0 all, 1 failed, 2 successful.
    pub post_login_scope: u8,
    /// Where `dumpdata` writes backup files (relative paths are under the
    /// data directory; default `backups`).
    pub backups_path: PathBuf,
    /// Absolute directory under which a user without a `home_dir` gets
    /// `<users_base_dir>/<username>` (SFTPGo's setting; empty: `home_dir`
    /// is mandatory).
    pub users_base_dir: String,
    /// How new password hashes are made.
    pub password_hashing: crate::passwords::HashingConfig,
}

impl Default for DataProviderConfig {
    fn default() -> Self {
        Self {
            driver: "sqlite".into(),
            name: String::new(),
            host: String::new(),
            port: 0,
            username: String::new(),
            password: String::new(),
            sslmode: 0,
            connection_string: String::new(),
            pool_size: 0,
            external_auth_hook: String::new(),
            external_auth_scope: 0,
            pre_login_hook: String::new(),
            check_password_hook: String::new(),
            check_password_scope: 0,
            post_login_hook: String::new(),
            post_login_scope: 0,
            backups_path: PathBuf::from("backups"),
            users_base_dir: String::new(),
            password_hashing: Default::default(),
        }
    }
}

/// Where to connect, ready for diesel; `describe` is safe to log (no password).
pub struct Target {
    pub backend: Backend,
    pub url: String,
    pub describe: String,
    pub pool_size: u32,
}

impl DataProviderConfig {
    pub fn backend(&self) -> anyhow::Result<Backend> {
        match self.driver.trim().to_ascii_lowercase().as_str() {
            "" | "sqlite" => Ok(Backend::Sqlite),
            "postgresql" | "postgres" => Ok(Backend::Postgresql),
            "mysql" | "mariadb" => Ok(Backend::Mysql),
            "memory" => Ok(Backend::Memory),
            "redb" => Ok(Backend::Redb),
            "bolt" => anyhow::bail!(
                "data_provider.driver \"bolt\": ferry cannot read bbolt files; use driver \"redb\" \
                 (ferry's embedded store) and move the data with SFTPGo's dumpdata and `ferry loaddata`"
            ),
            other => anyhow::bail!(
                "data_provider.driver {other:?} is not supported: use sqlite, postgresql, mysql, redb or memory"
            ),
        }
    }

    /// The memory provider's backup file, when one is set.
    pub fn memory_backup(&self, data_dir: &Path) -> Option<PathBuf> {
        (self.backend().ok() == Some(Backend::Memory) && !self.name.is_empty())
            .then(|| data_dir.join(&self.name))
    }

    /// The directory backups are written to.
    pub fn backups_dir(&self, data_dir: &Path) -> PathBuf {
        data_dir.join(&self.backups_path)
    }

    /// The connection target for this configuration.
    pub fn target(&self, data_dir: &Path) -> anyhow::Result<Target> {
        let backend = self.backend()?;
        anyhow::ensure!(
            self.sslmode <= 3,
            "data_provider.sslmode must be 0, 1, 2 or 3, got {}",
            self.sslmode
        );
        let pool_size = if self.pool_size == 0 {
            8
        } else {
            self.pool_size
        };
        if backend == Backend::Memory {
            // One connection at a time: shared-cache tables lock instead of
            // waiting, and the pool serialises access for us.
            return Ok(Target {
                backend,
                url: format!(
                    "file:ferry-memory-{}?mode=memory&cache=shared",
                    crate::random_token(8)
                ),
                describe: "memory provider".into(),
                pool_size: 1,
            });
        }
        if matches!(backend, Backend::Sqlite | Backend::Redb) {
            let name = match (self.name.is_empty(), backend) {
                (false, _) => &self.name,
                (true, Backend::Sqlite) => "ferry.db",
                (true, _) => "ferry.redb",
            };
            let path = if Path::new(name).is_absolute() {
                Path::new(name).to_path_buf()
            } else {
                data_dir.join(name)
            };
            let url = path
                .to_str()
                .ok_or_else(|| anyhow::anyhow!("database path {} is not UTF-8", path.display()))?
                .to_string();
            return Ok(Target {
                backend,
                describe: format!("{} database {url}", backend.driver()),
                url,
                pool_size,
            });
        }
        let (scheme, default_port, label) = match backend {
            Backend::Postgresql => ("postgres", 5432, "postgresql"),
            _ => ("mysql", 3306, "mysql"),
        };
        if !self.connection_string.is_empty() {
            return Ok(Target {
                backend,
                url: self.connection_string.clone(),
                describe: format!("{label} database (from connection_string)"),
                pool_size,
            });
        }
        let host = if self.host.is_empty() {
            "127.0.0.1"
        } else {
            &self.host
        };
        let port = if self.port == 0 {
            default_port
        } else {
            self.port
        };
        let name = if self.name.is_empty() {
            "ferry"
        } else {
            &self.name
        };
        let auth = match (self.username.is_empty(), self.password.is_empty()) {
            (true, _) => String::new(),
            (false, true) => format!("{}@", encode(&self.username)),
            (false, false) => format!("{}:{}@", encode(&self.username), encode(&self.password)),
        };
        let tls = match (backend, self.sslmode) {
            (_, 0) => match backend {
                Backend::Postgresql => "?sslmode=disable",
                _ => "",
            },
            (Backend::Postgresql, 1) => "?sslmode=require",
            (Backend::Postgresql, 2) => "?sslmode=verify-ca",
            (Backend::Postgresql, _) => "?sslmode=verify-full",
            (_, 1) => "?ssl_mode=REQUIRED",
            (_, 2) => "?ssl_mode=VERIFY_CA",
            (_, _) => "?ssl_mode=VERIFY_IDENTITY",
        };
        Ok(Target {
            backend,
            url: format!("{scheme}://{auth}{host}:{port}/{}{tls}", encode(name)),
            describe: format!("{label} database {name:?} on {host}:{port}"),
            pool_size,
        })
    }
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(pairs: &[(&str, &str)]) -> anyhow::Result<DataProviderConfig> {
        #[derive(Default, serde::Serialize, serde::Deserialize)]
        #[serde(default)]
        struct Only {
            data_provider: DataProviderConfig,
        }
        let vars = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        Ok(ferry_dataplane::config::load::<Only>(None, vars)?.data_provider)
    }

    #[test]
    fn env_settings_build_urls_without_leaking_passwords() {
        let pg = cfg(&[
            ("FERRY_DATA_PROVIDER__DRIVER", "postgresql"),
            ("FERRY_DATA_PROVIDER__NAME", "db"),
            ("FERRY_DATA_PROVIDER__USERNAME", "u"),
            ("FERRY_DATA_PROVIDER__PASSWORD", "p@ss:w/rd"),
            ("FERRY_DATA_PROVIDER__PORT", "6543"),
            ("FERRY_DATA_PROVIDER__SSLMODE", "1"),
            ("UNRELATED", "x"),
        ])
        .unwrap();
        let t = pg.target(Path::new("/d")).unwrap();
        assert_eq!(
            t.url,
            "postgres://u:p%40ss%3Aw%2Frd@127.0.0.1:6543/db?sslmode=require"
        );
        assert!(!t.describe.contains("p@ss"));
        let t = DataProviderConfig::default()
            .target(Path::new("/d"))
            .unwrap();
        assert_eq!(
            (t.backend, t.url.as_str()),
            (Backend::Sqlite, "/d/ferry.db")
        );
        let my = cfg(&[("FERRY_DATA_PROVIDER__DRIVER", "mysql")]).unwrap();
        assert_eq!(
            my.target(Path::new("/d")).unwrap().url,
            "mysql://127.0.0.1:3306/ferry"
        );
    }

    #[test]
    fn bad_settings_name_the_variable() {
        let err = |pairs: &[(&str, &str)]| format!("{:#}", cfg(pairs).unwrap_err());
        assert!(
            err(&[("FERRY_DATA_PROVIDER__PORT", "http")]).contains("FERRY_DATA_PROVIDER__PORT")
        );
        assert!(err(&[("FERRY_DATA_PROVIDER__PORT", "70000")]).contains("data_provider.port"));
        assert!(
            err(&[("FERRY_DATA_PROVIDER__COLOUR", "blue")])
                .contains("unknown setting \"data_provider.colour\"")
        );
        let seven = cfg(&[("FERRY_DATA_PROVIDER__SSLMODE", "7")]).unwrap();
        assert!(format!("{:#}", seven.target(Path::new("/d")).err().unwrap()).contains("sslmode"));
        let bad = cfg(&[("FERRY_DATA_PROVIDER__DRIVER", "oracle")]).unwrap();
        assert!(bad.target(Path::new("/d")).is_err());
        let bolt = cfg(&[("FERRY_DATA_PROVIDER__DRIVER", "bolt")]).unwrap();
        let msg = format!("{:#}", bolt.target(Path::new("/d")).err().unwrap());
        assert!(msg.contains("redb") && msg.contains("loaddata"), "{msg}");
        let redb = cfg(&[("FERRY_DATA_PROVIDER__DRIVER", "redb")]).unwrap();
        let t = redb.target(Path::new("/d")).unwrap();
        assert_eq!(
            (t.backend, t.url.as_str()),
            (Backend::Redb, "/d/ferry.redb")
        );
    }
}
