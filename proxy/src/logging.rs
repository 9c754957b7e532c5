//! Where the `proxy` binary's logs go: two logs, as nginx has.
//!
//! - The **error log** is everything the proxy says about itself (start-up,
//!   reloads, upstreams going down, failed requests), through `tracing`, with
//!   levels, to stderr; `RUST_LOG` chooses the level (`info` by default,
//!   `RUST_LOG=debug` or `RUST_LOG=proxy=debug` for more).
//! - The **access log** is one line per request (see [`crate::access_log`]),
//!   as is, with nothing added, to stdout (the default), stderr, or a file.
//!
//! **Rotation.** A log file grows forever unless something rotates it:
//! `logrotate` renames `access.log` to `access.log.1`, then tells the proxy,
//! with SIGUSR1 (as for nginx), to open `access.log` again. Until then the
//! proxy keeps writing to the renamed file, so no line is lost.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, MakeWriter};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;

use crate::access_log::{AccessLogSettings, LogTarget, TARGET};

/// Installs the error log and the access log; returns the access-log file,
/// when there is one, for [`LogFile::reopen`] on SIGUSR1.
pub fn init(access: &AccessLogSettings) -> io::Result<Option<Arc<LogFile>>> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"))
        // Access lines have their own log, whatever RUST_LOG says.
        .add_directive(
            format!("{TARGET}=off")
                .parse()
                .map_err(|e| io::Error::other(format!("{e}")))?,
        );
    let errors = tracing_subscriber::fmt::layer()
        .with_writer(io::stderr)
        .with_ansi(io::IsTerminal::is_terminal(&io::stderr()))
        .with_filter(filter);
    let only_access = || filter_fn(|meta| meta.target() == TARGET);
    let mut file = None;
    let access_layer = match &access.target {
        LogTarget::Off => None,
        LogTarget::Stdout => Some(
            tracing_subscriber::fmt::layer()
                .event_format(LineOnly)
                .with_writer(io::stdout)
                .with_filter(only_access())
                .boxed(),
        ),
        LogTarget::Stderr => Some(
            tracing_subscriber::fmt::layer()
                .event_format(LineOnly)
                .with_writer(io::stderr)
                .with_filter(only_access())
                .boxed(),
        ),
        LogTarget::File(path) => {
            let log = Arc::new(LogFile::open(path)?);
            file = Some(log.clone());
            Some(
                tracing_subscriber::fmt::layer()
                    .event_format(LineOnly)
                    .with_writer(Shared(log))
                    .with_filter(only_access())
                    .boxed(),
            )
        }
    };
    tracing_subscriber::registry()
        .with(errors)
        .with(access_layer)
        .try_init()
        .map_err(|e| io::Error::other(e.to_string()))?;
    Ok(file)
}

/// Writes an event's message and nothing else: the access line is already
/// complete.
struct LineOnly;

impl<S, N> FormatEvent<S, N> for LineOnly
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        let mut message = Message(&mut writer, Ok(()));
        event.record(&mut message);
        message.1?;
        writeln!(writer)
    }
}

struct Message<'w, 'a>(&'w mut Writer<'a>, std::fmt::Result);

impl Visit for Message<'_, '_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.1 = write!(self.0, "{value:?}");
        }
    }
}

/// An append-only log file that can be opened again under its name.
#[derive(Debug)]
pub struct LogFile {
    path: PathBuf,
    file: Mutex<File>,
}

impl LogFile {
    /// Opens (or creates) `path` for appending.
    pub fn open(path: &Path) -> io::Result<LogFile> {
        Ok(LogFile {
            path: path.to_owned(),
            file: Mutex::new(append(path)?),
        })
    }

    /// Opens the file under its name again: after a rotation renamed the old
    /// one, lines go to a new file. If that fails, lines go on to the old one.
    pub fn reopen(&self) -> io::Result<()> {
        let fresh = append(&self.path)?;
        let mut file = self
            .file
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        *file = fresh;
        Ok(())
    }

    /// Where it is.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn append(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot open {}: {e}", path.display())))
}

impl<'a> MakeWriter<'a> for LogFile {
    type Writer = LogFileWriter<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        LogFileWriter(
            self.file
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        )
    }
}

/// The log file as the access layer holds it, shared with the SIGUSR1 task.
struct Shared(Arc<LogFile>);

impl<'a> MakeWriter<'a> for Shared {
    type Writer = LogFileWriter<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        self.0.make_writer()
    }
}

/// The file, locked for one line (written whole with one `write_all`).
pub struct LogFileWriter<'a>(MutexGuard<'a, File>);

impl Write for LogFileWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reopened_file_starts_anew_after_a_rotation() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("access.log");
        let log = LogFile::open(&path).expect("open");
        log.make_writer().write_all(b"one\n").expect("write");
        std::fs::rename(&path, dir.path().join("access.log.1")).expect("rotate");
        log.make_writer().write_all(b"two\n").expect("write");
        log.reopen().expect("reopen");
        log.make_writer().write_all(b"three\n").expect("write");
        let read = |name: &str| std::fs::read_to_string(dir.path().join(name)).expect("read");
        assert_eq!(read("access.log.1"), "one\ntwo\n");
        assert_eq!(read("access.log"), "three\n");
    }
}
