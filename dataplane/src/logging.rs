//! Logs as SFTPGo writes them: one JSON object per line with `level`, `time`
//! (UTC, milliseconds), `sender` (an explicit `sender` field, else the
//! module), `message`, then the event's fields — on stderr, or in a file
//! rotated by size (`--log-file-path`, `--log-max-size`, `--log-max-backups`).
// The log file is the edge's own, not user storage.
#![allow(clippy::disallowed_methods)]

use std::fmt;
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, MakeWriter};
use tracing_subscriber::registry::LookupSpan;

/// Logging flags shared by both binaries.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct LogArgs {
    /// Write logs to this file instead of stderr, rotated by size.
    #[arg(long, env = "FERRY_LOG_FILE_PATH", global = true)]
    pub log_file_path: Option<PathBuf>,
    /// Megabytes a log file may reach before it is rotated.
    #[arg(long, env = "FERRY_LOG_MAX_SIZE", default_value_t = 10, global = true)]
    pub log_max_size: u64,
    /// Rotated files kept (FILE.1 is the newest).
    #[arg(
        long,
        env = "FERRY_LOG_MAX_BACKUPS",
        default_value_t = 5,
        global = true
    )]
    pub log_max_backups: usize,
}

/// SFTPGo's line format.
pub struct JsonLines;

#[derive(Default)]
struct Fields(Map<String, Value>);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0.insert(
            field.name().to_string(),
            Value::String(format!("{value:?}")),
        );
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0
            .insert(field.name().to_string(), Value::String(value.to_string()));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().to_string(), Value::from(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().to_string(), Value::from(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().to_string(), Value::from(value));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().to_string(), Value::from(value));
    }
}

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let meta = event.metadata();
        let mut line = Map::new();
        line.insert(
            "level".into(),
            Value::String(meta.level().as_str().to_ascii_lowercase()),
        );
        line.insert(
            "time".into(),
            Value::String(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
        );
        let sender = fields
            .0
            .remove("sender")
            .unwrap_or_else(|| Value::String(meta.target().to_string()));
        line.insert("sender".into(), sender);
        let message = fields.0.remove("message").unwrap_or(Value::Null);
        line.insert("message".into(), message);
        line.extend(fields.0);
        let text = serde_json::to_string(&Value::Object(line)).map_err(|_| fmt::Error)?;
        writeln!(writer, "{text}")
    }
}

/// A log file rotated when it would pass `max_bytes`: FILE becomes FILE.1,
/// FILE.1 becomes FILE.2, …, keeping `backups` of them.
pub struct RotatingFile {
    inner: Mutex<Rotating>,
}

struct Rotating {
    path: PathBuf,
    file: std::fs::File,
    size: u64,
    max_bytes: u64,
    backups: usize,
}

impl RotatingFile {
    pub fn open(path: PathBuf, max_bytes: u64, backups: usize) -> std::io::Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)?;
        let size = file.metadata()?.len();
        Ok(Self {
            inner: Mutex::new(Rotating {
                path,
                file,
                size,
                max_bytes: max_bytes.max(1),
                backups,
            }),
        })
    }
}

impl Rotating {
    fn backup(&self, n: usize) -> PathBuf {
        let mut name = self.path.clone().into_os_string();
        name.push(format!(".{n}"));
        PathBuf::from(name)
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        if self.backups == 0 {
            self.file.set_len(0)?;
        } else {
            let _ = std::fs::remove_file(self.backup(self.backups));
            for n in (1..self.backups).rev() {
                let _ = std::fs::rename(self.backup(n), self.backup(n + 1));
            }
            std::fs::rename(&self.path, self.backup(1))?;
            self.file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)?;
        }
        self.size = 0;
        Ok(())
    }
}

/// Writes one formatted line at a time.
pub struct FileWriter<'a>(&'a RotatingFile);

impl Write for FileWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut f = self.0.inner.lock().unwrap_or_else(|e| e.into_inner());
        if f.size > 0 && f.size + buf.len() as u64 > f.max_bytes {
            f.rotate()?;
        }
        f.file.write_all(buf)?;
        f.size += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// `MakeWriter` over a shared rotating file.
#[derive(Clone)]
pub struct SharedFile(pub Arc<RotatingFile>);

impl<'a> MakeWriter<'a> for SharedFile {
    type Writer = FileWriter<'a>;
    fn make_writer(&'a self) -> Self::Writer {
        FileWriter(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_rotate_by_size_and_keep_backups() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ferry.log");
        let f = RotatingFile::open(path.clone(), 100, 2).unwrap();
        let line = [b'x'; 39];
        for _ in 0..10 {
            let mut w = FileWriter(&f);
            w.write_all(&line).unwrap();
            w.write_all(b"\n").unwrap();
        }
        let len = |p: &std::path::Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
        assert!(len(&path) <= 100);
        assert!(len(&dir.path().join("ferry.log.1")) > 0);
        assert!(len(&dir.path().join("ferry.log.2")) > 0);
        assert!(!dir.path().join("ferry.log.3").exists());
    }
}
