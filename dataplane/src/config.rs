//! Configuration files and environment overrides, shared by both binaries.
//!
//! Each binary has one serde struct (sections with SFTPGo's names: `common`,
//! `sftpd`, `data_provider`, …). Its `Default` is the built-in settings; a file
//! (`--config-file`, format by extension: `.toml`, `.json`, `.yaml`/`.yml`,
//! `.hcl`, `.env`) is laid over them, then environment variables
//! `FERRY_<SECTION>__<KEY>` (nested with `__`, list items by index, simple
//! lists also comma separated). Command-line flags win over both.
//!
//! Layers are merged as JSON trees, so an unknown key is reported with its
//! full name and the file or variable it came from, and a bad value with the
//! key's path, before the process does anything else.
// Settings files are the edge's own, not user storage.
#![allow(clippy::disallowed_methods)]

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use schemars::JsonSchema;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// Prefix of the environment variables that override settings.
pub const ENV_PREFIX: &str = "FERRY_";

/// Sections some Ferry binary reads: variables naming one of them that the
/// running binary does not have are ignored (one environment can serve both
/// binaries); other `FERRY_X__…` variables are errors (a typo).
pub const ALL_SECTIONS: &[&str] = &[
    "common",
    "sftpd",
    "data_provider",
    "httpd",
    "grpc",
    "kms",
    "http",
    "edge",
    "telemetry",
];

/// The file formats `--config-file` accepts, chosen by extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Toml,
    Json,
    Yaml,
    Hcl,
    /// Lines of `FERRY_<SECTION>__<KEY>=value`, as an environment file.
    Env,
}

impl Format {
    pub fn of(path: &Path) -> anyhow::Result<Self> {
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or_default()
            .to_ascii_lowercase();
        Ok(match ext.as_str() {
            "toml" => Self::Toml,
            "json" => Self::Json,
            "yaml" | "yml" => Self::Yaml,
            "hcl" => Self::Hcl,
            "env" => Self::Env,
            _ => bail!(
                "config file {}: unknown format {ext:?}; use .toml, .json, .yaml, .yml, .hcl or .env",
                path.display()
            ),
        })
    }
}

/// Loads `T`: defaults, then `file`, then the `FERRY_` variables of `vars`.
pub fn load<T>(
    file: Option<&Path>,
    vars: impl IntoIterator<Item = (String, String)>,
) -> anyhow::Result<T>
where
    T: Serialize + DeserializeOwned + Default,
{
    let defaults = serde_json::to_value(T::default()).context("default settings")?;
    let mut tree = defaults.clone();
    if let Some(path) = file {
        let source = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {source}"))?;
        match Format::of(path)? {
            Format::Env => {
                for (key, value) in parse_envfile(&text, &source)? {
                    apply_var(&mut tree, &defaults, &key, &value, &source)?;
                }
            }
            format => {
                let overlay = parse_file(&text, format)
                    .with_context(|| format!("config file {source} does not parse"))?;
                merge(&mut tree, overlay, "", &source)?;
            }
        }
        // Type errors are reported against the file before the
        // environment can hide or cause them.
        decode::<T>(tree.clone()).with_context(|| format!("config file {source}"))?;
    }
    for (key, value) in vars {
        if key.starts_with(ENV_PREFIX) && key.contains("__") {
            apply_var(&mut tree, &defaults, &key, &value, "environment")?;
        }
    }
    decode(tree).context("settings")
}

/// Loads `T` from the given file and the process environment.
pub fn load_from_env<T>(file: Option<&PathBuf>) -> anyhow::Result<T>
where
    T: Serialize + DeserializeOwned + Default,
{
    load(file.map(PathBuf::as_path), std::env::vars())
}

fn decode<T: DeserializeOwned>(tree: Value) -> anyhow::Result<T> {
    serde_path_to_error::deserialize(tree).map_err(|e| {
        let path = e.path().to_string();
        anyhow::anyhow!("{path}: {}", e.into_inner())
    })
}

fn parse_file(text: &str, format: Format) -> anyhow::Result<Value> {
    Ok(match format {
        Format::Toml => toml::from_str(text)?,
        Format::Json => serde_json::from_str(text)?,
        Format::Yaml => serde_yaml_ng::from_str(text)?,
        Format::Hcl => hcl::from_str(text)?,
        Format::Env => unreachable!("env files are applied as variables"),
    })
}

/// `KEY=value` lines; `#` comments, blank lines, `export ` and surrounding
/// quotes are allowed. Every key must be a `FERRY_<SECTION>__<KEY>` name.
fn parse_envfile(text: &str, source: &str) -> anyhow::Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line).trim_start();
        let Some((key, value)) = line.split_once('=') else {
            bail!("{source}:{}: expected KEY=value", n + 1);
        };
        let key = key.trim();
        if !(key.starts_with(ENV_PREFIX) && key.contains("__")) {
            bail!(
                "{source}:{}: {key:?} is not a setting; names look like FERRY_SFTPD__MAX_AUTH_TRIES",
                n + 1
            );
        }
        let value = value.trim();
        let value = ['"', '\'']
            .iter()
            .find_map(|q| {
                value
                    .strip_prefix(*q)
                    .and_then(|v| v.strip_suffix(*q))
                    .map(str::to_string)
            })
            .unwrap_or_else(|| value.to_string());
        out.push((key.to_string(), value));
    }
    Ok(out)
}

/// Lays `overlay` (from a file) over `base`; keys must exist in `base`.
fn merge(base: &mut Value, overlay: Value, path: &str, source: &str) -> anyhow::Result<()> {
    match (base, overlay) {
        (_, Value::Null) => Ok(()),
        (Value::Object(base), Value::Object(overlay)) => {
            for (key, value) in overlay {
                let key = key.to_ascii_lowercase();
                let full = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                let Some(slot) = base.get_mut(&key) else {
                    let known: Vec<&str> = base.keys().map(String::as_str).collect();
                    bail!(
                        "{source}: unknown setting {full:?} (known here: {})",
                        known.join(", ")
                    );
                };
                merge(slot, value, &full, source)?;
            }
            Ok(())
        }
        (slot, value) => {
            *slot = value;
            Ok(())
        }
    }
}

/// Sets the value `FERRY_A__B__C` names, converting the text to the type the
/// setting has.
fn apply_var(
    tree: &mut Value,
    defaults: &Value,
    key: &str,
    raw: &str,
    source: &str,
) -> anyhow::Result<()> {
    let name = key.strip_prefix(ENV_PREFIX).unwrap_or(key);
    let segments: Vec<String> = name.split("__").map(|s| s.to_ascii_lowercase()).collect();
    let section = &segments[0];
    if tree.get(section.as_str()).is_none() {
        if ALL_SECTIONS.contains(&section.as_str()) {
            return Ok(()); // another binary's section
        }
        bail!(
            "{source}: {key}: unknown section {section:?} (known: {})",
            ALL_SECTIONS.join(", ")
        );
    }
    let mut node = tree;
    let mut template = Some(defaults);
    let mut path = String::new();
    for segment in &segments {
        if segment.is_empty() {
            bail!("{source}: {key}: empty name part");
        }
        match node {
            Value::Object(map) => {
                if !map.contains_key(segment) {
                    let known: Vec<&str> = map.keys().map(String::as_str).collect();
                    bail!(
                        "{source}: {key}: unknown setting {:?} (known here: {})",
                        join(&path, segment),
                        known.join(", ")
                    );
                }
                template = template.and_then(|t| t.get(segment.as_str()));
                path = join(&path, segment);
                node = map.get_mut(segment).expect("checked above");
            }
            Value::Array(items) => {
                let Ok(index) = segment.parse::<usize>() else {
                    bail!("{source}: {key}: {path} is a list; expected an index, got {segment:?}");
                };
                // New items start from the first default item.
                let first = template.and_then(|t| t.get(0));
                if index == items.len() {
                    items.push(first.cloned().unwrap_or(Value::Null));
                } else if index > items.len() {
                    bail!(
                        "{source}: {key}: {path} has {} items; add index {} first",
                        items.len(),
                        items.len()
                    );
                }
                template = first;
                path = format!("{path}[{index}]");
                node = &mut items[index];
            }
            _ => bail!("{source}: {key}: {path} has no settings under it"),
        }
    }
    *node = convert(node, raw).with_context(|| format!("{source}: {key}"))?;
    Ok(())
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// Text from a variable as the JSON type `current` has.
fn convert(current: &Value, raw: &str) -> anyhow::Result<Value> {
    let text = raw.trim();
    Ok(match current {
        Value::String(_) => Value::String(raw.to_string()),
        Value::Bool(_) => match text.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => Value::Bool(true),
            "false" | "0" | "no" | "off" | "" => Value::Bool(false),
            _ => bail!("{raw:?} is not a boolean (true or false)"),
        },
        Value::Number(_) => {
            let n: serde_json::Number = text
                .parse()
                .map_err(|_| anyhow::anyhow!("{raw:?} is not a number"))?;
            Value::Number(n)
        }
        Value::Array(items) if !text.starts_with('[') => {
            let element = items
                .first()
                .cloned()
                .unwrap_or(Value::String(String::new()));
            Value::Array(
                text.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(|s| convert(&element, s))
                    .collect::<anyhow::Result<_>>()?,
            )
        }
        Value::Array(_) | Value::Object(_) => serde_json::from_str(text)
            .map_err(|e| anyhow::anyhow!("{raw:?} is not a JSON value: {e}"))?,
        Value::Null => serde_json::from_str(text).unwrap_or(Value::String(raw.to_string())),
    })
}

/// A commented example of `T`'s settings in TOML: its defaults, each key
/// preceded by the doc comment of its field (from the JSON schema).
pub fn example<T: Serialize + Default + JsonSchema>() -> String {
    let schema = serde_json::to_value(schemars::schema_for!(T)).expect("schema serializes");
    let mut docs = Vec::new();
    collect_docs(&schema, &schema, "", &mut docs);
    let docs: Vec<(&str, &str)> = docs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let docs = docs.as_slice();
    let tree = serde_json::to_value(T::default()).expect("settings serialize");
    let mut out = String::from(
        "# Ferry configuration (TOML; JSON, YAML, HCL and .env files hold the same keys).\n\
         # Every key can also be set as FERRY_<SECTION>__<KEY>, e.g. FERRY_SFTPD__MAX_AUTH_TRIES=3.\n",
    );
    if let Value::Object(sections) = tree {
        for (section, value) in sections {
            out.push('\n');
            if let Some((_, doc)) = docs.iter().find(|(k, _)| *k == section) {
                out.push_str(&comment(doc));
            }
            example_table(&mut out, &section, &value, docs);
        }
    }
    out
}

fn comment(doc: &str) -> String {
    doc.lines().map(|l| format!("# {}\n", l.trim())).collect()
}

/// Follows a `$ref` to its definition.
fn resolve<'a>(root: &'a Value, node: &'a Value) -> &'a Value {
    match node.get("$ref").and_then(Value::as_str) {
        Some(r) => r
            .strip_prefix("#/")
            .map(|p| p.split('/').fold(root, |v, k| &v[k]))
            .unwrap_or(node),
        None => node,
    }
}

/// (key path, description) of every property under `node`; list items use
/// the list's path.
fn collect_docs(root: &Value, node: &Value, path: &str, out: &mut Vec<(String, String)>) {
    let node = resolve(root, node);
    let Some(props) = node.get("properties").and_then(Value::as_object) else {
        return;
    };
    for (key, prop) in props {
        let full = join(path, key);
        let target = resolve(root, prop);
        let doc = prop
            .get("description")
            .or_else(|| target.get("description"))
            .and_then(Value::as_str);
        if let Some(doc) = doc {
            out.push((full.clone(), doc.to_string()));
        }
        match target.get("items") {
            Some(items) => collect_docs(root, items, &full, out),
            None => collect_docs(root, target, &full, out),
        }
    }
}

fn example_table(out: &mut String, path: &str, value: &Value, docs: &[(&str, &str)]) {
    let Value::Object(map) = value else { return };
    out.push_str(&format!("[{path}]\n"));
    let mut nested = Vec::new();
    for (key, v) in map {
        let full = format!("{path}.{key}");
        let is_table_list =
            matches!(v, Value::Array(items) if items.first().is_some_and(Value::is_object));
        if v.is_object() || is_table_list {
            nested.push((full, v));
            continue;
        }
        if let Some((_, doc)) = docs.iter().find(|(k, _)| *k == full) {
            out.push_str(&comment(doc));
        }
        let rendered = toml::Value::try_from(v)
            .map(|t| t.to_string())
            .unwrap_or_else(|_| "\"\"".into());
        out.push_str(&format!("{key} = {rendered}\n"));
    }
    for (full, v) in nested {
        out.push('\n');
        if let Some((_, doc)) = docs.iter().find(|(k, _)| *k == full) {
            out.push_str(&comment(doc));
        }
        match v {
            Value::Array(items) => {
                for item in items {
                    let mut table = String::new();
                    example_table(&mut table, &full, item, docs);
                    out.push_str(&table.replacen(&format!("[{full}]"), &format!("[[{full}]]"), 1));
                }
            }
            _ => example_table(out, &full, v, docs),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Serialize, Deserialize, PartialEq, JsonSchema)]
    #[serde(deny_unknown_fields, default)]
    struct Cfg {
        sftpd: Sftpd,
        common: Common,
    }
    impl Default for Cfg {
        fn default() -> Self {
            Self {
                sftpd: Sftpd {
                    bindings: vec![Binding {
                        address: String::new(),
                        port: 2022,
                    }],
                    max_auth_tries: 0,
                    enabled_ssh_commands: vec!["md5sum".into()],
                    password_authentication: true,
                },
                common: Common { umask: "".into() },
            }
        }
    }
    #[derive(Debug, Serialize, Deserialize, PartialEq, JsonSchema)]
    #[serde(deny_unknown_fields)]
    struct Sftpd {
        /// Listeners.
        bindings: Vec<Binding>,
        /// Attempts per connection.
        max_auth_tries: u32,
        enabled_ssh_commands: Vec<String>,
        password_authentication: bool,
    }
    #[derive(Debug, Serialize, Deserialize, PartialEq, Clone, JsonSchema)]
    #[serde(deny_unknown_fields)]
    struct Binding {
        /// Where to listen.
        address: String,
        port: u16,
    }
    #[derive(Debug, Serialize, Deserialize, PartialEq, JsonSchema)]
    #[serde(deny_unknown_fields)]
    struct Common {
        umask: String,
    }

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn env_sets_scalars_lists_and_list_items_by_index() {
        let cfg: Cfg = load(
            None,
            vars(&[
                ("FERRY_SFTPD__MAX_AUTH_TRIES", "3"),
                ("FERRY_SFTPD__ENABLED_SSH_COMMANDS", "scp, pwd"),
                ("FERRY_SFTPD__PASSWORD_AUTHENTICATION", "false"),
                ("FERRY_SFTPD__BINDINGS__0__PORT", "2200"),
                ("FERRY_SFTPD__BINDINGS__1__ADDRESS", "127.0.0.1"),
                ("FERRY_COMMON__UMASK", "022"),
                ("FERRY_DATA_PROVIDER__DRIVER", "mysql"), // another binary's
                ("FERRY_SFTP_BIND", "ignored: not a section key"),
            ]),
        )
        .unwrap();
        assert_eq!(cfg.sftpd.max_auth_tries, 3);
        assert_eq!(cfg.sftpd.enabled_ssh_commands, ["scp", "pwd"]);
        assert!(!cfg.sftpd.password_authentication);
        assert_eq!(cfg.sftpd.bindings.len(), 2);
        assert_eq!(cfg.sftpd.bindings[0].port, 2200);
        assert_eq!(cfg.sftpd.bindings[1].address, "127.0.0.1");
        assert_eq!(
            cfg.sftpd.bindings[1].port, 2022,
            "new items start from the default"
        );
        assert_eq!(cfg.common.umask, "022");
    }

    #[test]
    fn env_errors_name_the_variable() {
        let err =
            |pairs: &[(&str, &str)]| format!("{:#}", load::<Cfg>(None, vars(pairs)).unwrap_err());
        let e = err(&[("FERRY_SFTPD__MAX_AUTH_TRIE", "3")]);
        assert!(
            e.contains("FERRY_SFTPD__MAX_AUTH_TRIE") && e.contains("sftpd.max_auth_trie"),
            "{e}"
        );
        let e = err(&[("FERRY_SFTPD__MAX_AUTH_TRIES", "three")]);
        assert!(
            e.contains("FERRY_SFTPD__MAX_AUTH_TRIES") && e.contains("not a number"),
            "{e}"
        );
        let e = err(&[("FERRY_SFTPD__BINDINGS__0__PORT", "70000")]);
        assert!(e.contains("sftpd.bindings[0].port"), "{e}");
        let e = err(&[("FERRY_SFTPD__BINDINGS__5__PORT", "1")]);
        assert!(e.contains("add index 1 first"), "{e}");
        let e = err(&[("FERRY_SFTPDX__PORT", "1")]);
        assert!(e.contains("unknown section"), "{e}");
    }

    #[test]
    fn files_in_every_format_give_the_same_settings() {
        let dir = tempfile::tempdir().unwrap();
        let files = [
            (
                "c.toml",
                "[sftpd]\nmax_auth_tries = 4\nenabled_ssh_commands = [\"scp\"]\n\
                 [[sftpd.bindings]]\naddress = \"127.0.0.1\"\nport = 2201\n\
                 [common]\numask = \"077\"\n",
            ),
            (
                "c.json",
                r#"{"sftpd": {"max_auth_tries": 4, "enabled_ssh_commands": ["scp"],
                    "bindings": [{"address": "127.0.0.1", "port": 2201}]},
                    "common": {"umask": "077"}}"#,
            ),
            (
                "c.yaml",
                "sftpd:\n  max_auth_tries: 4\n  enabled_ssh_commands: [scp]\n  bindings:\n    - address: 127.0.0.1\n      port: 2201\ncommon:\n  umask: \"077\"\n",
            ),
            (
                "c.hcl",
                "sftpd {\n  max_auth_tries = 4\n  enabled_ssh_commands = [\"scp\"]\n  bindings = [{ address = \"127.0.0.1\", port = 2201 }]\n}\ncommon {\n  umask = \"077\"\n}\n",
            ),
            (
                "c.env",
                "# comment\nFERRY_SFTPD__MAX_AUTH_TRIES=4\nexport FERRY_SFTPD__ENABLED_SSH_COMMANDS=scp\n\
                 FERRY_SFTPD__BINDINGS__0__ADDRESS=\"127.0.0.1\"\nFERRY_SFTPD__BINDINGS__0__PORT=2201\nFERRY_COMMON__UMASK='077'\n",
            ),
        ];
        let mut loaded = Vec::new();
        for (name, text) in files {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            let cfg: Cfg = load(Some(&path), vec![]).unwrap_or_else(|e| panic!("{name}: {e:#}"));
            loaded.push((name, cfg));
        }
        let expected = Cfg {
            sftpd: Sftpd {
                bindings: vec![Binding {
                    address: "127.0.0.1".into(),
                    port: 2201,
                }],
                max_auth_tries: 4,
                enabled_ssh_commands: vec!["scp".into()],
                password_authentication: true,
            },
            common: Common {
                umask: "077".into(),
            },
        };
        for (name, cfg) in loaded {
            assert_eq!(cfg, expected, "{name}");
        }
        // The environment wins over the file.
        let path = dir.path().join("c.toml");
        let cfg: Cfg = load(Some(&path), vars(&[("FERRY_SFTPD__MAX_AUTH_TRIES", "9")])).unwrap();
        assert_eq!(cfg.sftpd.max_auth_tries, 9);
    }

    #[test]
    fn file_errors_name_the_key_and_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.toml");
        std::fs::write(
            &path,
            "[sftpd]\nmax_auth_tries = 3\npassword_auth = false\n",
        )
        .unwrap();
        let e = format!("{:#}", load::<Cfg>(Some(&path), vec![]).unwrap_err());
        assert!(
            e.contains("bad.toml") && e.contains("sftpd.password_auth"),
            "{e}"
        );
        std::fs::write(&path, "[sftpd]\nmax_auth_tries = \"x\"\n").unwrap();
        let e = format!("{:#}", load::<Cfg>(Some(&path), vec![]).unwrap_err());
        assert!(
            e.contains("bad.toml") && e.contains("sftpd.max_auth_tries"),
            "{e}"
        );
        std::fs::write(&path, "[sftpd\n").unwrap();
        let e = format!("{:#}", load::<Cfg>(Some(&path), vec![]).unwrap_err());
        assert!(e.contains("does not parse"), "{e}");
        let other = dir.path().join("c.ini");
        std::fs::write(&other, "").unwrap();
        let e = format!("{:#}", load::<Cfg>(Some(&other), vec![]).unwrap_err());
        assert!(e.contains("unknown format"), "{e}");
    }

    #[test]
    fn the_example_loads_back_to_the_defaults() {
        let text = example::<Cfg>();
        assert!(
            text.contains("# Attempts per connection.\nmax_auth_tries = 0"),
            "{text}"
        );
        assert!(
            text.contains("[[sftpd.bindings]]\n# Where to listen.\naddress = \"\""),
            "{text}"
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("example.toml");
        std::fs::write(&path, &text).unwrap();
        let cfg: Cfg = load(Some(&path), vec![]).unwrap();
        assert_eq!(cfg, Cfg::default());
    }
}
