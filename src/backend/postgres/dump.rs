//! Schema backups with the real `pg_dump` from `PATH`.
//!
//! - Its major version must be at least the server's (an older `pg_dump` refuses a newer server,
//!   or worse, misses what it does not know): checked first, with `pg_dump --version`.
//! - The password reaches it through `PGPASSWORD` in its environment, never its arguments
//!   (arguments are visible to every user of the machine in `ps`).
//! - It writes plain SQL to its standard output, which is a file startgate created with mode
//!   0600, so the dump is never readable by others, not even for a moment.
//! - `--lock-wait-timeout` bounds its wait for each table lock; the whole run is bounded by
//!   `STARTGATE_BACKUP_TIMEOUT`, and the process group is stopped at that limit or on a signal.
//! - Only the URL's parameters libpq knows are passed on (sqlx spells some differently).

use std::path::Path;
use std::process::Stdio;

use tokio::process::Command;

use crate::backend::{DumpError, DumpLimits};
use crate::dburl::DatabaseUrl;
use crate::supervise::process::{RunError, output_of, run_bounded};
use crate::supervise::signals::StopToken;

const TOOL: &str = "pg_dump";
const INSTALL_HINT: &str = "install the PostgreSQL client tools of the server's major version or newer \
     (Debian/Ubuntu: postgresql-client-NN from apt.postgresql.org; Alpine: postgresql-client) \
     or set STARTGATE_BACKUP=never";

/// The major version in `pg_dump --version` output (`pg_dump (PostgreSQL) 15.20 (Debian …)`).
pub fn tool_major(version_output: &str) -> Option<u32> {
    let after = version_output.split(')').nth(1)?.trim_start();
    let number = after.split_whitespace().next()?;
    // The leading digits: `15.20` → 15, and a pre-release such as `18beta1` → 18.
    let digits: String = number.chars().take_while(char::is_ascii_digit).collect();
    let major: u32 = digits.parse().ok()?;
    // Before PostgreSQL 10 the major version had two parts (9.6); those are all older than
    // any server startgate supports, so the first part is enough to compare.
    Some(major)
}

/// libpq's spelling of the connection parameters a URL may carry, with sqlx's aliases mapped.
fn libpq_parameter(key: &str) -> Option<&'static str> {
    Some(match key {
        "sslmode" | "ssl-mode" => "sslmode",
        "sslrootcert" | "ssl-root-cert" | "ssl-ca" => "sslrootcert",
        "sslcert" | "ssl-cert" => "sslcert",
        "sslkey" | "ssl-key" => "sslkey",
        "host" => "host",
        "hostaddr" => "hostaddr",
        "port" => "port",
        "dbname" => "dbname",
        "user" => "user",
        "options" => "options",
        "connect_timeout" => "connect_timeout",
        "target_session_attrs" => "target_session_attrs",
        "channel_binding" => "channel_binding",
        "gssencmode" => "gssencmode",
        _ => return None,
    })
}

/// The URL for `pg_dump`'s `--dbname`: no password anywhere in it, only parameters libpq knows.
fn dump_url(url: &DatabaseUrl) -> Result<String, DumpError> {
    let mut parsed = url::Url::parse(url.expose())
        .map_err(|e| DumpError::Query(format!("bad connection URL {url}: {e}")))?;
    let _ = parsed.set_password(None);
    let kept: Vec<(String, String)> = parsed
        .query_pairs()
        .filter_map(|(k, v)| libpq_parameter(&k).map(|k| (k.to_string(), v.into_owned())))
        .collect();
    if kept.is_empty() {
        parsed.set_query(None);
    } else {
        parsed.query_pairs_mut().clear().extend_pairs(kept);
    }
    Ok(parsed.to_string())
}

/// Writes `pg_dump --schema-only` of `url` to `path`, after checking `pg_dump`'s version against
/// the server's major version.
pub async fn dump(
    url: &DatabaseUrl,
    server_major: u32,
    server_version: &str,
    application_name: &str,
    path: &Path,
    limits: &DumpLimits,
    stop: &StopToken,
) -> Result<(), DumpError> {
    check_version(server_major, server_version, limits, stop).await?;

    // The caller created it, empty and private (mode 0600).
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|source| DumpError::Io {
            path: path.display().to_string(),
            source,
        })?;
    let mut command = Command::new(TOOL);
    command
        .arg("--schema-only")
        .arg("--no-password")
        .arg(format!(
            "--lock-wait-timeout={}",
            limits.lock_wait.as_millis().max(1)
        ))
        .arg("--dbname")
        .arg(dump_url(url)?)
        .env("PGAPPNAME", application_name)
        .env("PGCONNECT_TIMEOUT", "10");
    // A password in the URL wins; otherwise an inherited PGPASSWORD stays, as it does for
    // startgate's own connection.
    if let Some(password) = url.password() {
        command.env("PGPASSWORD", password);
    }
    let finished = run_bounded(
        TOOL,
        command,
        Stdio::from(file),
        limits.timeout,
        limits.kill_grace,
        stop,
    )
    .await
    .map_err(missing_tool)?;
    if !finished.status.success() {
        return Err(DumpError::ToolFailed {
            tool: TOOL.to_string(),
            status: describe_status(&finished.status),
            stderr: finished.stderr_summary(),
        });
    }
    // pg_dump can exit 0 when its last buffered write failed (a full disk): only a dump that
    // ends with its completion trailer is a backup.
    if !ends_with_trailer(path) {
        return Err(DumpError::ToolFailed {
            tool: TOOL.to_string(),
            status: "exit 0".to_string(),
            stderr: format!(
                "the dump in {} is incomplete (it lacks pg_dump's closing line; is the disk full?)",
                path.display()
            ),
        });
    }
    Ok(())
}

/// The line pg_dump writes last in a plain-format dump.
const TRAILER: &[u8] = b"-- PostgreSQL database dump complete";

fn ends_with_trailer(path: &Path) -> bool {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut file) = std::fs::File::open(path) else {
        return false;
    };
    let Ok(len) = file.metadata().map(|m| m.len()) else {
        return false;
    };
    // The trailer sits in the last few hundred bytes (newer versions add an `\unrestrict`).
    let from = len.saturating_sub(512);
    let mut tail = Vec::new();
    if file.seek(SeekFrom::Start(from)).is_err() || file.read_to_end(&mut tail).is_err() {
        return false;
    }
    tail.windows(TRAILER.len()).any(|w| w == TRAILER)
}

async fn check_version(
    server_major: u32,
    server_version: &str,
    limits: &DumpLimits,
    stop: &StopToken,
) -> Result<(), DumpError> {
    let mut command = Command::new(TOOL);
    command.arg("--version");
    let (finished, output) = output_of(
        TOOL,
        command,
        limits.timeout.min(std::time::Duration::from_secs(10)),
        limits.kill_grace,
        stop,
    )
    .await
    .map_err(missing_tool)?;
    if !finished.status.success() {
        return Err(DumpError::ToolFailed {
            tool: format!("{TOOL} --version"),
            status: describe_status(&finished.status),
            stderr: finished.stderr_summary(),
        });
    }
    let version = output.trim().to_string();
    match tool_major(&version) {
        Some(major) if major >= server_major => Ok(()),
        None => Err(DumpError::ToolFailed {
            tool: format!("{TOOL} --version"),
            status: "unreadable version".to_string(),
            stderr: format!(
                "cannot read a major version from {version:?}; pg_dump must be of major version \
                 {server_major} or newer"
            ),
        }),
        Some(_) => Err(DumpError::ToolTooOld {
            tool: TOOL.to_string(),
            tool_version: if version.is_empty() {
                "(no version printed)".to_string()
            } else {
                version
            },
            server_version: format!("PostgreSQL {server_version}"),
            hint: format!(
                "pg_dump must be of major version {server_major} or newer; {INSTALL_HINT}"
            ),
        }),
    }
}

fn missing_tool(e: RunError) -> DumpError {
    match e {
        RunError::NotFound { .. } => DumpError::ToolMissing {
            tool: TOOL.to_string(),
            hint: INSTALL_HINT.to_string(),
        },
        other => DumpError::Run(other),
    }
}

fn describe_status(status: &std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        _ => "unknown status".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_major_version() {
        for (output, major) in [
            (
                "pg_dump (PostgreSQL) 15.20 (Debian 15.20-0+deb12u1)",
                Some(15),
            ),
            ("pg_dump (PostgreSQL) 17.2", Some(17)),
            ("pg_dump (PostgreSQL) 9.6.24", Some(9)),
            ("pg_dump (PostgreSQL) 18beta1", Some(18)),
            ("pg_dump (PostgreSQL) devel", None),
            ("something else", None),
        ] {
            assert_eq!(tool_major(output), major, "{output}");
        }
    }

    #[test]
    fn the_dump_url_has_no_password_and_only_libpq_parameters() {
        let url = DatabaseUrl::parse(
            "postgres://app:s3cret@db:5432/app?ssl-mode=require&statement-cache-capacity=0&password=x&application_name=a",
        )
        .unwrap();
        let dumped = dump_url(&url).unwrap();
        assert_eq!(dumped, "postgres://app@db:5432/app?sslmode=require");
    }
}
