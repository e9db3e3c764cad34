//! Logging setup: tracing events to stderr, as JSON lines when stderr is not a terminal
//! (containers, platforms, log shippers) and as readable text when it is
//! (`STARTGATE_LOG_FORMAT=auto`), filtered by `STARTGATE_LOG`.
//!
//! stdout is left to command output (`status --json`, `schema --json`) and, under `run`, to the
//! app itself, so that nothing of ours is mixed into what a script or a log shipper parses.
//!
//! Every formatted event passes through [`crate::redact::mask`] on its way to stderr
//! ([`MaskingStderr`]), whoever emitted it (startgate, or the database driver): secrets are
//! masked in the log as a whole, not only where a call site remembered to.

use std::io::{IsTerminal, Write};

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

use crate::config::LogFormat;
use crate::redact;

/// Collects one formatted event and writes it to stderr, masked, when dropped.
pub struct MaskingStderr {
    buffer: Vec<u8>,
}

impl Write for MaskingStderr {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.buffer.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for MaskingStderr {
    fn drop(&mut self) {
        let text = String::from_utf8_lossy(&self.buffer);
        // A log line that cannot be written (stderr closed) is lost; nothing better to do.
        let _ = std::io::stderr()
            .lock()
            .write_all(redact::mask(&text).as_bytes());
    }
}

/// The writer factory: one [`MaskingStderr`] per event.
#[derive(Debug, Clone, Copy, Default)]
pub struct MakeMaskingStderr;

impl<'a> MakeWriter<'a> for MakeMaskingStderr {
    type Writer = MaskingStderr;

    fn make_writer(&'a self) -> Self::Writer {
        MaskingStderr {
            buffer: Vec::with_capacity(256),
        }
    }
}

/// Installs the global subscriber. `filter` was validated with the settings; should it still
/// fail to parse, `info` is used rather than losing the log.
pub fn init(filter: &str, format: LogFormat) {
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let json = match format {
        LogFormat::Json => true,
        LogFormat::Text => false,
        LogFormat::Auto => !std::io::stderr().is_terminal(),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(MakeMaskingStderr)
        .with_target(false);
    // A second initialisation (tests calling in twice) keeps the first subscriber.
    let _ = if json {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init()
    } else {
        builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init()
    };
}
