//! The SQLite migration lock: an advisory `flock(2)` on a sidecar file beside the database,
//! `<database file>.startgate-lock`.
//!
//! Why a sidecar `flock`, and not a lock inside SQLite:
//! - SQLite has one writer at a time, but its write lock lasts one transaction, and `init`
//!   commits once per migration: between two commits another replica could slip in. The
//!   migration lock must span the whole run (re-read the history, back up, apply every file).
//! - Holding a SQLite write transaction open on a second connection for the duration would
//!   block the applying connection itself (it needs the same write lock): a deadlock.
//! - The kernel drops a `flock` when the process dies (`-9`, OOM, a lost container), so a dead
//!   replica never leaves the lock behind; there is nothing to expire or clean up.
//! - The database file itself is never opened by anything but SQLite: SQLite's own locks are
//!   POSIX `fcntl` locks, which the process loses when *any* descriptor of that file is closed
//!   (<https://www.sqlite.org/howtocorrupt.html#_posix_advisory_locks_canceled_by_a_separate_thread_doing_close_>).
//!
//! The holder writes its pid, application name and the time into the file, so that a waiting
//! replica (and `startgate unlock`) can say who holds the lock. The file is left in place after
//! use: removing it would race with a replica that has just opened it and is about to lock it.
//!
//! Limits: `flock` works between processes of one host (containers included, when they share
//! the file through a volume); on network filesystems its behaviour depends on the filesystem,
//! as does SQLite's own locking, which is why SQLite advises against them.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::backend::LockHolder;

/// The suffix of the sidecar lock file.
pub const SUFFIX: &str = ".startgate-lock";

/// The sidecar lock file of the database at `database`.
pub fn lock_path(database: &Path) -> PathBuf {
    let mut name = database.as_os_str().to_owned();
    name.push(SUFFIX);
    PathBuf::from(name)
}

/// The migration lock of one database file, held by this process while `held` is `Some`.
#[derive(Debug)]
pub struct FileLock {
    path: PathBuf,
    /// The open lock file while the lock is held; closing it (or the process ending) releases it.
    held: Option<File>,
}

impl FileLock {
    pub fn new(database: &Path) -> FileLock {
        FileLock {
            path: lock_path(database),
            held: None,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// One attempt to take the lock without waiting. On success, records `holder_line` in the
    /// file for whoever waits.
    pub fn try_lock(&mut self, application_name: &str) -> std::io::Result<bool> {
        if self.held.is_some() {
            return Ok(true);
        }
        let (mut file, writable) = open(&self.path, true)?;
        if !flock(&file, libc::LOCK_EX | libc::LOCK_NB)? {
            return Ok(false);
        }
        if writable {
            // Informative only: a failure to write it leaves the lock held and the holder
            // unnamed.
            let text = holder_text(std::process::id(), application_name, SystemTime::now());
            let written = file
                .set_len(0)
                .and_then(|()| file.rewind())
                .and_then(|()| file.write_all(text.as_bytes()));
            if let Err(e) = written {
                tracing::debug!(file = %self.path.display(), error = %e, "could not record the lock holder");
            }
        }
        self.held = Some(file);
        Ok(true)
    }

    /// Releases the lock (a no-op when it is not held).
    pub fn unlock(&mut self) -> std::io::Result<()> {
        if let Some(file) = self.held.take() {
            // Closing the descriptor releases the lock too; unlocking first says so explicitly
            // and reports a failure.
            flock(&file, libc::LOCK_UN)?;
        }
        Ok(())
    }

    pub fn is_held(&self) -> bool {
        self.held.is_some()
    }

    /// Who holds the lock: `None` when nobody does (or the lock file does not exist yet).
    pub fn holder(&self) -> std::io::Result<Option<LockHolder>> {
        if self.held.is_some() {
            return Ok(Some(own_holder()));
        }
        let file = match open(&self.path, false) {
            Ok((file, _)) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        // A shared lock is granted only when nobody holds the exclusive one.
        if flock(&file, libc::LOCK_SH | libc::LOCK_NB)? {
            flock(&file, libc::LOCK_UN)?;
            return Ok(None);
        }
        let mut text = String::new();
        // Bounded: the file holds three short lines; anything longer is not ours.
        (&file).take(4096).read_to_string(&mut text)?;
        Ok(Some(parse_holder(&text).unwrap_or_else(unknown_holder)))
    }
}

/// Opens the lock file, creating it when `create`. Read-write when permitted; read-only
/// otherwise (a lock file created by another user: `flock` needs no write access, only the
/// holder's name is then not recorded). Returns the file and whether it is writable.
fn open(path: &Path, create: bool) -> std::io::Result<(File, bool)> {
    match OpenOptions::new()
        .read(true)
        .write(true)
        .create(create)
        .mode(0o644)
        .open(path)
    {
        Ok(file) => Ok((file, true)),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            Ok((OpenOptions::new().read(true).open(path)?, false))
        }
        Err(e) => Err(e),
    }
}

/// `flock(2)`: `Ok(false)` when a non-blocking request would have to wait.
fn flock(file: &File, operation: libc::c_int) -> std::io::Result<bool> {
    loop {
        // SAFETY: the descriptor stays open for the duration of the call (`file` is borrowed);
        // flock takes no pointers.
        if unsafe { libc::flock(file.as_raw_fd(), operation) } == 0 {
            return Ok(true);
        }
        let error = std::io::Error::last_os_error();
        match error.raw_os_error() {
            Some(libc::EWOULDBLOCK) => return Ok(false),
            Some(libc::EINTR) => continue,
            _ => return Err(error),
        }
    }
}

/// What the holder writes into the lock file.
pub fn holder_text(pid: u32, application_name: &str, since: SystemTime) -> String {
    let name: String = application_name
        .chars()
        .filter(|c| !c.is_control())
        .collect();
    format!(
        "pid {pid}\napplication_name {name}\nsince {}\n",
        humantime::format_rfc3339_millis(since)
    )
}

/// Reads what [`holder_text`] wrote; `None` when there is no pid (the holder has not written
/// it yet, or the file is not ours).
pub fn parse_holder(text: &str) -> Option<LockHolder> {
    let mut pid = None;
    let mut application_name = String::new();
    let mut since = None;
    for line in text.lines() {
        let (key, value) = line.split_once(' ').unwrap_or((line, ""));
        match key {
            "pid" => pid = value.trim().parse::<i64>().ok(),
            "application_name" => application_name = value.to_string(),
            "since" => since = Some(value.trim().to_string()).filter(|s| !s.is_empty()),
            _ => {}
        }
    }
    Some(LockHolder {
        pid: pid?,
        application_name,
        client: "local".to_string(),
        connected_at: since,
        state: None,
        query_start: None,
        query: None,
    })
}

/// A holder that has not written its name yet: the lock is held, by a process we cannot name.
fn unknown_holder() -> LockHolder {
    LockHolder {
        pid: 0,
        application_name: String::new(),
        client: "local".to_string(),
        connected_at: None,
        state: None,
        query_start: None,
        query: None,
    }
}

/// This process, as a holder.
fn own_holder() -> LockHolder {
    LockHolder {
        pid: i64::from(std::process::id()),
        ..unknown_holder()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_lock_file_sits_beside_the_database() {
        assert_eq!(
            lock_path(Path::new("data/app.db")),
            PathBuf::from("data/app.db.startgate-lock")
        );
        assert_eq!(
            lock_path(Path::new("/var/lib/app")),
            PathBuf::from("/var/lib/app.startgate-lock")
        );
    }

    #[test]
    fn the_holder_round_trips_through_the_file() {
        let since = SystemTime::UNIX_EPOCH + Duration::from_millis(1_763_704_862_123);
        let text = holder_text(4242, "startgate@web-1\n", since);
        assert_eq!(
            text,
            "pid 4242\napplication_name startgate@web-1\nsince 2025-11-21T06:01:02.123Z\n"
        );
        let holder = parse_holder(&text).unwrap();
        assert_eq!(holder.pid, 4242);
        assert_eq!(holder.application_name, "startgate@web-1");
        assert_eq!(
            holder.connected_at.as_deref(),
            Some("2025-11-21T06:01:02.123Z")
        );
        assert_eq!(
            holder.to_string(),
            "pid 4242 (startgate@web-1, client local, connected 2025-11-21T06:01:02.123Z)"
        );
        assert_eq!(parse_holder(""), None);
        assert_eq!(parse_holder("pid x\n"), None);
    }

    #[test]
    fn one_holder_at_a_time_and_free_after_unlock() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("app.db");
        let mut first = FileLock::new(&db);
        let mut second = FileLock::new(&db);
        assert_eq!(second.holder().unwrap(), None, "no lock file yet");
        assert!(first.try_lock("startgate@one").unwrap());
        assert!(!second.try_lock("startgate@two").unwrap());
        let holder = second.holder().unwrap().unwrap();
        assert_eq!(holder.pid, i64::from(std::process::id()));
        assert_eq!(holder.application_name, "startgate@one");
        first.unlock().unwrap();
        assert_eq!(second.holder().unwrap(), None);
        assert!(second.try_lock("startgate@two").unwrap());
        assert!(second.is_held());
        drop(second);
        assert!(
            first.try_lock("startgate@one").unwrap(),
            "dropping releases"
        );
    }
}
