//! Logging setup: tracing events to stderr, as JSON lines when stderr is not a terminal
//! (containers, platforms, log shippers) and as readable text when it is
//! (`STARTGATE_LOG_FORMAT=auto`), filtered by `STARTGATE_LOG`.
//!
//! stdout is left to command output (`status --json`, `schema --json`) and, under `run`, to the
//! app itself, so that nothing of ours is mixed into what a script or a log shipper parses.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

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
        .with_writer(std::io::stderr)
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
