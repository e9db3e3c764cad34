//! Taking a backup before anything changes: the file, its name, its permissions, retention and
//! the backup command. Engine-neutral; the dump itself is the backend's
//! ([`Backend::dump_schema`]).
//!
//! - `STARTGATE_BACKUP_DIR` is created with mode 0700 when missing; every backup file is 0600.
//! - The dump is written to a hidden temporary name in that directory and renamed into place
//!   only when complete (and synced), so a failed, killed or disk-full dump never leaves a
//!   partial file under a backup's name.
//! - The name is `<database>-<UTC timestamp>-v<current version>.<ext>`; names sort by time.
//! - Only the newest `STARTGATE_BACKUP_KEEP` backups are kept.
//! - `STARTGATE_BACKUP_COMMAND` runs last, `{file}` replaced by the path (shell-quoted); its
//!   failure is a failed backup.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, SystemTime};

use crate::backend::{Backend, DumpError, DumpLimits};
use crate::config::Settings;
use crate::migrate::Version;
use crate::supervise::process::{RunError, run_bounded};
use crate::supervise::signals::StopToken;

/// Why a backup failed (exit 5; nothing was applied).
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("backup directory {path}: {source}")]
    Directory {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("backup failed: {0}")]
    Dump(#[from] DumpError),
    #[error("backup failed: cannot finish {path}: {source}")]
    Finish {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("STARTGATE_BACKUP_COMMAND failed for {file}: {reason}")]
    Command { file: String, reason: String },
}

/// A backup that was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backup {
    pub path: PathBuf,
    pub size: u64,
    /// Older backups removed by retention.
    pub removed: Vec<PathBuf>,
}

/// `<database>-<UTC timestamp>-v<version>.<ext>`: the database name with anything but letters,
/// digits, `_`, `-` and `.` replaced, the time to the millisecond (two backups in one second
/// must not overwrite each other), `v0` before the first migration.
pub fn file_name(database: &str, at: SystemTime, version: Option<&Version>, ext: &str) -> String {
    // 2026-11-21T06:01:02.123Z → 20261121T060102.123Z
    let stamp: String = humantime::format_rfc3339_millis(at)
        .to_string()
        .chars()
        .filter(|c| *c != '-' && *c != ':')
        .collect();
    let version = version.map_or("0".to_string(), |v| v.to_string());
    format!("{}-{stamp}-v{version}.{ext}", database_part(database))
}

/// The database name as it appears in backup file names: letters, digits, `_`, `-` and `.` as
/// they are, every other byte percent-encoded, so that two databases (`app db`, `app_db`) never
/// share a name, and retention never removes another database's backups.
fn database_part(database: &str) -> String {
    let mut part = String::with_capacity(database.len());
    for byte in database.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'_' | b'-' | b'.') {
            part.push(char::from(byte));
        } else {
            part.push_str(&format!("%{byte:02X}"));
        }
    }
    if part.is_empty() {
        "database".to_string()
    } else {
        part
    }
}

/// This database's backups in `dir`, newest first: `<database>-` followed by a timestamp, with
/// the engine's extension. Another database's backups (even `app-staging` beside `app`) never
/// match.
fn backups_of(dir: &Path, database: &str, ext: &str) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let prefix = format!("{}-", database_part(database));
    let suffix = format!(".{ext}");
    let is_backup = |name: &str| {
        name.ends_with(&suffix)
            && name.strip_prefix(&prefix).is_some_and(|rest| {
                let stamp = rest.as_bytes();
                stamp.len() > 9 && stamp[..8].iter().all(u8::is_ascii_digit) && stamp[8] == b'T'
            })
    };
    let mut found: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(is_backup)
        })
        .collect();
    found.sort();
    found.reverse();
    found
}

/// Takes a backup of `db` now, under the lock the caller holds.
pub async fn take<B: Backend>(
    db: &mut B,
    settings: &Settings,
    version: Option<&Version>,
    stop: &StopToken,
) -> Result<Backup, BackupError> {
    let dir = &settings.backup_dir;
    ensure_dir(dir)?;
    let database = db.info().name.clone().unwrap_or_default();
    let ext = db.backup_extension();
    let name = file_name(&database, SystemTime::now(), version, ext);
    let path = dir.join(&name);
    let partial = dir.join(format!(".{name}.partial"));
    let limits = DumpLimits {
        timeout: settings.backup_timeout,
        lock_wait: if settings.lock_timeout.is_zero() {
            settings.backup_timeout
        } else {
            settings.lock_timeout
        },
        kill_grace: settings.kill_grace,
    };
    tracing::info!(event = "backup.start", file = %path.display(), "backing up the schema to {}", path.display());
    let finished = async {
        create_private(&partial)?;
        db.dump_schema(&partial, &limits, stop).await?;
        finish(&partial, &path)
    }
    .await;
    if let Err(e) = finished {
        let _ = std::fs::remove_file(&partial);
        return Err(e);
    }
    let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);

    // The snapshot beside it, so that the backup can be checked after a restore (`verify`
    // with STARTGATE_EXPECT_SCHEMA pointing at it).
    let snapshot_path = path.with_extension("json");
    match db.snapshot(&settings.history_table).await {
        Ok(mut snapshot) => {
            crate::schema::normalise(&mut snapshot);
            if let Err(e) =
                write_private(&snapshot_path, crate::schema::to_json(&snapshot).as_bytes())
            {
                // A backup without its snapshot is not reported as taken.
                let _ = std::fs::remove_file(&path);
                return Err(e);
            }
        }
        Err(e) => {
            let _ = std::fs::remove_file(&path);
            return Err(BackupError::Dump(DumpError::Query(format!(
                "taking the schema snapshot beside the backup: {e}"
            ))));
        }
    }

    // Retention: the newest `keep` backups of this database stay.
    let mut removed = Vec::new();
    for old in backups_of(dir, &database, ext)
        .into_iter()
        .skip(settings.backup_keep as usize)
    {
        let _ = std::fs::remove_file(old.with_extension("json"));
        match std::fs::remove_file(&old) {
            Ok(()) => removed.push(old),
            Err(e) => {
                tracing::warn!(file = %old.display(), error = %e, "could not remove an old backup")
            }
        }
    }

    if let Some(template) = &settings.backup_command {
        run_command(template, &path, settings, stop).await?;
    }
    Ok(Backup {
        path,
        size,
        removed,
    })
}

/// Creates the directory if it is missing: it, and every parent it creates, mode 0700.
fn ensure_dir(dir: &Path) -> Result<(), BackupError> {
    use std::os::unix::fs::DirBuilderExt;
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        // The umask filters DirBuilder's mode; the directory holding the dumps gets exactly
        // 0700 whatever the umask.
        .and_then(|()| std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)))
        .map_err(|source| BackupError::Directory {
            path: dir.display().to_string(),
            source,
        })
}

/// Syncs the finished dump, renames it into place, and syncs the directory, so that the backup
/// survives a crash right after startgate reported it.
fn finish(partial: &Path, path: &Path) -> Result<(), BackupError> {
    let fail = |source| BackupError::Finish {
        path: path.display().to_string(),
        source,
    };
    std::fs::File::open(partial)
        .and_then(|f| f.sync_all())
        .map_err(fail)?;
    std::fs::rename(partial, path).map_err(fail)?;
    if let Some(parent) = path.parent() {
        // Not every filesystem can sync a directory; the rename itself has happened.
        let _ = std::fs::File::open(parent).and_then(|d| d.sync_all());
    }
    Ok(())
}

/// Creates `path` empty with mode 0600 (it must not exist): the file every engine writes its
/// dump into, never readable by others, whatever the umask.
fn create_private(path: &Path) -> Result<(), DumpError> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map(|_| ())
        .map_err(|source| DumpError::Io {
            path: path.display().to_string(),
            source,
        })
}

/// Writes `bytes` to `path` with mode 0600, through a temporary name and a rename.
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), BackupError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let partial = path.with_extension("json.partial");
    let result = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&partial)
        .and_then(|mut f| f.write_all(bytes).and_then(|()| f.sync_all()))
        .and_then(|()| std::fs::rename(&partial, path));
    result.map_err(|source| {
        let _ = std::fs::remove_file(&partial);
        BackupError::Finish {
            path: path.display().to_string(),
            source,
        }
    })
}

/// Quotes a path for `sh`: `'…'`, with `'` written as `'\''`.
fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "'\\''"))
}

async fn run_command(
    template: &str,
    path: &Path,
    settings: &Settings,
    stop: &StopToken,
) -> Result<(), BackupError> {
    let file = path.display().to_string();
    let script = template.replace("{file}", &shell_quote(&file));
    let mut command = tokio::process::Command::new("sh");
    command.arg("-c").arg(&script);
    let failed = |reason: String| BackupError::Command {
        file: file.clone(),
        reason,
    };
    match run_bounded(
        "STARTGATE_BACKUP_COMMAND",
        command,
        Stdio::null(),
        settings.backup_timeout,
        settings.kill_grace,
        stop,
    )
    .await
    {
        Ok(finished) if finished.status.success() => Ok(()),
        Ok(finished) => Err(failed(format!(
            "{}{}",
            finished.status,
            if finished.stderr_tail.is_empty() {
                String::new()
            } else {
                format!(": {}", finished.stderr_summary())
            }
        ))),
        Err(RunError::TimedOut { limit, .. }) => Err(failed(format!(
            "did not finish within {}",
            crate::duration::HumanDuration(limit)
        ))),
        Err(e) => Err(failed(e.to_string())),
    }
}

/// Human size: `812 B`, `12.4 KiB`, `3.1 MiB`.
pub fn human_size(bytes: u64) -> String {
    const KIB: f64 = 1024.0;
    let b = bytes as f64;
    if b < KIB {
        format!("{bytes} B")
    } else if b < KIB * KIB {
        format!("{:.1} KiB", b / KIB)
    } else {
        format!("{:.1} MiB", b / KIB / KIB)
    }
}

/// How long a backup may take, for messages.
pub fn limit_text(limit: Duration) -> String {
    crate::duration::HumanDuration(limit).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_sort_by_time_and_carry_the_version() {
        let at = SystemTime::UNIX_EPOCH + Duration::from_millis(1_763_704_862_123);
        let v = Version::parse("0007").unwrap();
        assert_eq!(
            file_name("app", at, Some(&v), "sql"),
            "app-20251121T060102.123Z-v0007.sql"
        );
        assert_eq!(
            file_name("my app/prod", at, None, "sql"),
            "my%20app%2Fprod-20251121T060102.123Z-v0.sql"
        );
        assert_ne!(
            file_name("app db", at, None, "sql"),
            file_name("app_db", at, None, "sql")
        );
        let later = at + Duration::from_millis(1);
        assert!(file_name("app", at, None, "sql") < file_name("app", later, None, "sql"));
    }

    #[test]
    fn retention_sees_only_this_databases_backups() {
        let dir = tempfile::tempdir().unwrap();
        for name in [
            "app-20251121T060102.123Z-v1.sql",
            "app-20251121T070102.123Z-v2.sql",
            "app-staging-20251121T080102.123Z-v2.sql",
            "app-notes.sql",
            ".app-20251121T090102.123Z-v3.sql.partial",
        ] {
            std::fs::write(dir.path().join(name), "").unwrap();
        }
        let found: Vec<String> = backups_of(dir.path(), "app", "sql")
            .iter()
            .filter_map(|p| p.file_name()?.to_str().map(str::to_string))
            .collect();
        assert_eq!(
            found,
            [
                "app-20251121T070102.123Z-v2.sql",
                "app-20251121T060102.123Z-v1.sql"
            ]
        );
    }

    #[test]
    fn creates_missing_directories_private() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("a/b/backups");
        ensure_dir(&dir).unwrap();
        for path in [root.path().join("a"), root.path().join("a/b"), dir] {
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o700, "{}", path.display());
        }
    }

    #[test]
    fn quotes_paths_for_the_shell() {
        assert_eq!(shell_quote("/b/app.sql"), "'/b/app.sql'");
        assert_eq!(shell_quote("/b/it's.sql"), "'/b/it'\\''s.sql'");
    }

    #[test]
    fn sizes_read_well() {
        assert_eq!(human_size(812), "812 B");
        assert_eq!(human_size(12_700), "12.4 KiB");
        assert_eq!(human_size(3_250_000), "3.1 MiB");
    }
}
