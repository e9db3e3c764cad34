//! Schema backups, snapshots and verification against a real PostgreSQL, with the real
//! `pg_dump` and `psql`, driving the real binary: a backup taken before a migration restores
//! into an empty database whose snapshot equals the one taken before the migration; file
//! modes, names and retention; `auto`, `always` and `never`; the backup command; every way
//! `pg_dump` can fail (absent, too old, failing, hanging, blocked on a lock, killed, out of
//! space) and an unusable backup directory, each exit 5 with nothing applied; drift through
//! `verify`, `init` and `status`; bad expectation files. Each test asserts what an operator
//! would look at: the exit status, the message, the files and the catalog.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use common::{Blocker, Output, TestDb, fixture, log_messages, run_bounded, startgate};

const LIMIT: Duration = Duration::from_secs(120);

/// A database, a migrations directory holding some of a fixture's files, and a scratch
/// directory of the test's own (backups, expectation files, fake tools).
struct Project {
    db: TestDb,
    migrations: tempfile::TempDir,
    scratch: tempfile::TempDir,
}

impl Project {
    /// A fresh database and a migrations directory with `files` of `tests/fixtures/<from>`.
    fn new(label: &str, from: &str, files: &[&str]) -> Project {
        let project = Project {
            db: TestDb::new(label),
            migrations: tempfile::tempdir().expect("tempdir"),
            scratch: tempfile::tempdir().expect("tempdir"),
        };
        for file in files {
            project.add(from, file);
        }
        project
    }

    /// Copies one more migration file from a fixture.
    fn add(&self, from: &str, file: &str) {
        let source = Path::new(&fixture(from)).join(file);
        std::fs::copy(&source, self.migrations.path().join(file))
            .unwrap_or_else(|e| panic!("copy {}: {e}", source.display()));
    }

    /// The backup directory of this test (not created: startgate creates it).
    fn backups(&self) -> PathBuf {
        self.scratch.path().join("backups")
    }

    /// A path in the scratch directory.
    fn path(&self, name: &str) -> PathBuf {
        self.scratch.path().join(name)
    }

    /// Runs `startgate ARGS` on this project's database, migrations and backup directory, with
    /// `extra` settings on top.
    fn run(&self, args: &[&str], extra: &[(&str, &str)]) -> Output {
        let migrations = self.migrations.path().display().to_string();
        let backups = self.backups().display().to_string();
        let mut env = vec![
            ("DATABASE_URL", self.db.url.as_str()),
            ("STARTGATE_MIGRATIONS", migrations.as_str()),
            ("STARTGATE_BACKUP_DIR", backups.as_str()),
            ("STARTGATE_DB_WAIT_TIMEOUT", "10s"),
        ];
        env.extend_from_slice(extra);
        startgate(args, &env, LIMIT)
    }

    fn init(&self, extra: &[(&str, &str)]) -> Output {
        self.run(&["init"], extra)
    }

    /// `startgate schema --json`, which must succeed.
    fn snapshot(&self) -> String {
        let out = self.run(&["schema", "--json"], &[]);
        assert_eq!(out.code, 0, "schema --json failed: {}", out.stderr);
        assert!(out.stdout.starts_with('{'), "{}", out.stdout);
        out.stdout
    }

    /// Writes the live snapshot to `name` in the scratch directory and returns its path.
    fn expectation(&self, name: &str) -> String {
        let path = self.path(name);
        std::fs::write(&path, self.snapshot()).expect("write the expectation");
        path.display().to_string()
    }

    fn scalar(&self, sql: &str) -> Option<String> {
        self.db
            .query(sql)
            .into_iter()
            .next()
            .and_then(|row| row.into_iter().next().flatten())
    }

    fn exists(&self, relation: &str) -> bool {
        self.scalar(&format!(
            "SELECT (to_regclass('{relation}') IS NOT NULL)::text"
        ))
        .as_deref()
            == Some("true")
    }

    /// `version:state` of every history row in version order; empty without a history table.
    fn history(&self) -> String {
        if !self.exists("public.startgate_migrations") {
            return String::new();
        }
        self.db
            .query("SELECT version || ':' || state FROM startgate_migrations ORDER BY version")
            .into_iter()
            .filter_map(|row| row.into_iter().next().flatten())
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// The server's version as startgate names it (`15.20`) and its major version.
    fn server_version(&self) -> (String, u32) {
        let full = self
            .scalar("SELECT current_setting('server_version')")
            .expect("server_version");
        let number = full
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_string();
        let num: u32 = self
            .scalar("SELECT current_setting('server_version_num')")
            .and_then(|v| v.parse().ok())
            .expect("server_version_num");
        (number, num / 10_000)
    }
}

/// The names in a directory, sorted; nothing when it does not exist.
fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .filter_map(|e| e.file_name().to_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

fn with_extension(dir: &Path, ext: &str) -> Vec<String> {
    names_in(dir)
        .into_iter()
        .filter(|n| n.ends_with(&format!(".{ext}")))
        .collect()
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

/// Every log message and the JSON stdout/stderr, for assertion messages.
fn shown(out: &Output) -> String {
    format!(
        "exit {}\nstdout:\n{}\nlog:\n{}",
        out.code,
        out.stdout,
        log_messages(&out.stderr)
    )
}

/// The differences listed by the `schema verification failed:` error, in order.
fn failures(out: &Output) -> Vec<String> {
    let messages = log_messages(&out.stderr);
    let Some(at) = messages.rfind("schema verification failed:") else {
        return Vec::new();
    };
    messages[at..]
        .lines()
        .skip(1)
        .map_while(|line| line.strip_prefix("  - "))
        .map(str::to_string)
        .collect()
}

/// The messages of the `verify.warning` events.
fn warnings(out: &Output) -> Vec<String> {
    out.stderr
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|event| event["event"] == "verify.warning")
        .filter_map(|event| event["message"].as_str().map(str::to_string))
        .collect()
}

/// Runs `psql -X -q -v ON_ERROR_STOP=1 -d URL ARGS`.
fn psql(url: &str, args: &[&str]) -> Output {
    let mut cmd = Command::new("psql");
    cmd.args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", url])
        .args(args);
    run_bounded(cmd, LIMIT)
}

/// Writes an executable file through a child process, so that no thread of this test process
/// holds it open for writing when a sibling test forks (which would make running it fail with
/// ETXTBSY).
fn write_executable(path: &Path, text: &str) {
    let status = Command::new("sh")
        .args([
            "-c",
            "printf '%s' \"$2\" > \"$1\" && chmod 755 \"$1\"",
            "sh",
        ])
        .arg(path)
        .arg(text)
        .stdin(Stdio::null())
        .status()
        .expect("run sh");
    assert!(status.success(), "writing {}", path.display());
}

/// The real `pg_dump` on this process's PATH.
fn real_pg_dump() -> PathBuf {
    std::env::var_os("PATH")
        .and_then(|path| {
            std::env::split_paths(&path)
                .map(|d| d.join("pg_dump"))
                .find(|p| p.is_file())
        })
        .expect("these tests need pg_dump on PATH (the PostgreSQL client tools)")
}

/// A directory holding a fake `pg_dump` with `body` as its script, and a PATH that finds it
/// first and everything else where it was.
fn fake_pg_dump(project: &Project, body: &str) -> String {
    let dir = project.path("fake-bin");
    std::fs::create_dir_all(&dir).expect("mkdir");
    write_executable(&dir.join("pg_dump"), &format!("#!/bin/sh\n{body}\n"));
    format!(
        "{}:{}",
        dir.display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

/// A `pg_dump` that answers `--version` as the real one does, then runs `body` for the dump.
fn fake_dump_step(project: &Project, body: &str) -> String {
    fake_pg_dump(
        project,
        &format!(
            "if [ \"$1\" = --version ]; then exec '{}' --version; fi\n{body}",
            real_pg_dump().display()
        ),
    )
}

/// The verify_app fixture with 0001 applied (no backup) and 0002 (`orders`) pending.
fn one_pending(label: &str) -> Project {
    let project = Project::new(label, "verify_app", &["0001_schema.sql"]);
    let out = project.init(&[("STARTGATE_BACKUP", "never")]);
    assert_eq!(out.code, 0, "{}", shown(&out));
    project.add("verify_app", "0002_orders.sql");
    project
}

/// Asserts that the pending 0002 was not applied: no `orders` table, the history unchanged.
#[track_caller]
fn assert_nothing_applied(project: &Project) {
    assert!(
        !project.exists("orders"),
        "the pending migration was applied"
    );
    assert_eq!(project.history(), "0001:applied", "the history changed");
}

/// Asserts that no backup, and no partial file of one, is left in the backup directory.
#[track_caller]
fn assert_no_backup_files(project: &Project) {
    let left = names_in(&project.backups());
    assert!(
        left.iter()
            .all(|n| !n.ends_with(".sql") && !n.ends_with(".json") && !n.contains("partial")),
        "left in the backup directory: {left:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Backups

#[test]
fn a_backup_taken_before_a_migration_restores_to_the_schema_before_it() {
    let project = Project::new(
        "backup_restore",
        "backup_app",
        &["0001_accounts.sql", "0002_orders.sql"],
    );
    let out = project.init(&[("STARTGATE_BACKUP", "never")]);
    assert_eq!(out.code, 0, "{}", shown(&out));
    let before = project.snapshot();
    // The snapshot really holds what the restore must bring back.
    for needle in [
        "\"tenant_isolation\"",
        "\"monitor_reads_cheerful\"",
        "\"rls_forced\": true",
        "\"happy_accounts\"",
        "\"order_totals\"",
        "\"account_total\"",
        "\"close_account\"",
        "\"orders_touch\"",
        "\"orders_id_seq\"",
        "\"accounts_email_idx\"",
        "\"citext\"",
        "\"happy\"",
    ] {
        assert!(before.contains(needle), "{needle} in {before}");
    }

    project.add("backup_app", "0003_feature_flags.sql");
    let out = project.init(&[]);
    assert_eq!(out.code, 0, "{}", shown(&out));
    assert!(project.exists("app.feature_flags"), "0003 was applied");
    assert_ne!(project.snapshot(), before, "0003 changed the schema");

    let sql = with_extension(&project.backups(), "sql");
    assert_eq!(sql.len(), 1, "one backup: {sql:?}");
    let backup = project.backups().join(&sql[0]);
    assert!(
        sql[0].ends_with("-v0002.sql"),
        "named after the version before the migration: {}",
        sql[0]
    );
    // The log and the summary name the file, its size and the recovery point.
    let messages = log_messages(&out.stderr);
    let summary = messages
        .lines()
        .find(|l| l.starts_with("applied 1 migration in"))
        .unwrap_or_else(|| panic!("no summary in {messages}"));
    let size = std::fs::metadata(&backup).expect("backup").len();
    assert!(
        summary.contains(&format!("backup {}", backup.display())),
        "{summary}"
    );
    assert!(
        summary.contains(" B)") || summary.contains(" KiB)"),
        "size {size} in {summary}"
    );
    assert!(
        summary.contains("recovery point ") && summary.contains(" at WAL "),
        "{summary}"
    );
    assert_eq!(
        project
            .scalar(
                "SELECT (recovery_time IS NOT NULL AND recovery_lsn IS NOT NULL)::text \
                 FROM startgate_migrations WHERE version = '0003'"
            )
            .as_deref(),
        Some("true"),
        "the history row records the recovery point"
    );

    // The snapshot beside the backup is the schema before the migration.
    let beside = std::fs::read_to_string(backup.with_extension("json")).expect("json beside");
    assert_eq!(beside, before, "the JSON beside the backup");

    // Restored into an empty database with psql, the snapshot is the one before the migration,
    // byte for byte, policies included.
    let restored = TestDb::new("backup_restored");
    let restore = psql(&restored.url, &["-f", &backup.display().to_string()]);
    assert_eq!(restore.code, 0, "psql restore: {}", restore.stderr);
    let restored_project = Project {
        db: restored,
        migrations: tempfile::tempdir().expect("tempdir"),
        scratch: tempfile::tempdir().expect("tempdir"),
    };
    let after = restored_project.snapshot();
    assert_eq!(after, before, "the restored schema");
    assert_eq!(
        restored_project.scalar(
            "SELECT count(*)::text FROM pg_policies WHERE schemaname = 'app' AND tablename = 'accounts'"
        )
        .as_deref(),
        Some("2")
    );

    // And `verify` against the JSON beside the backup passes on the restored database, even
    // exactly.
    let json = backup.with_extension("json").display().to_string();
    let out = restored_project.run(
        &["verify"],
        &[
            ("STARTGATE_EXPECT_SCHEMA", json.as_str()),
            ("STARTGATE_VERIFY", "exact"),
        ],
    );
    assert_eq!(out.code, 0, "{}", shown(&out));
}

/// `<db>-<YYYYMMDD>T<HHMMSS.mmm>Z-v<version>.sql` → the timestamp part, or why not.
fn backup_stamp<'a>(name: &'a str, database: &str, version: &str) -> Result<&'a str, String> {
    let rest = name
        .strip_prefix(&format!("{database}-"))
        .ok_or("no database prefix")?;
    let stamp = rest
        .strip_suffix(&format!("-v{version}.sql"))
        .ok_or("no version suffix")?;
    let b = stamp.as_bytes();
    let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    if b.len() == 20
        && digits(0..8)
        && b[8] == b'T'
        && digits(9..15)
        && b[15] == b'.'
        && digits(16..19)
        && b[19] == b'Z'
    {
        Ok(stamp)
    } else {
        Err(format!("timestamp {stamp:?} is not YYYYMMDDTHHMMSS.mmmZ"))
    }
}

/// Now in the file names' form: `20261121T060102.123Z`.
fn compact_now() -> String {
    humantime::format_rfc3339_millis(SystemTime::now())
        .to_string()
        .chars()
        .filter(|c| *c != '-' && *c != ':')
        .collect()
}

#[test]
fn a_backup_is_private_named_by_database_time_and_version_in_a_directory_created_0700() {
    let project = one_pending("backup_modes");
    let nested = project.path("not/yet/there");
    let nested_s = nested.display().to_string();
    let start = compact_now();
    let out = project.run(&["backup"], &[("STARTGATE_BACKUP_DIR", nested_s.as_str())]);
    let end = compact_now();
    assert_eq!(out.code, 0, "{}", shown(&out));

    assert_eq!(mode(&nested), 0o700, "the directory it created");
    let names = names_in(&nested);
    let sql: Vec<&String> = names.iter().filter(|n| n.ends_with(".sql")).collect();
    assert_eq!(sql.len(), 1, "{names:?}");
    assert_eq!(
        names.len(),
        2,
        "the backup and its JSON, nothing else: {names:?}"
    );
    let file = nested.join(sql[0]);
    assert_eq!(
        out.stdout.trim(),
        file.display().to_string(),
        "backup prints the path"
    );
    let stamp = backup_stamp(sql[0], &project.db.name, "0001")
        .unwrap_or_else(|e| panic!("{}: {e}", sql[0]));
    assert!(
        start.as_str() <= stamp && stamp <= end.as_str(),
        "{stamp} is UTC and between {start} and {end}"
    );
    assert_eq!(mode(&file), 0o600, "the backup");
    assert_eq!(
        mode(&file.with_extension("json")),
        0o600,
        "the JSON beside it"
    );
    let text = std::fs::read_to_string(&file).expect("backup");
    assert!(
        text.contains("CREATE TABLE public.users")
            && text.contains("CREATE POLICY tenant_isolation"),
        "a schema dump: {text}"
    );
    assert!(
        !text.contains("COPY public.") && !text.contains("a@example.com"),
        "schema only, no data"
    );
    let messages = log_messages(&out.stderr);
    assert!(
        messages.contains(&format!("backup {}", file.display())),
        "{messages}"
    );

    // An existing directory keeps its mode; the backup is still private.
    let open = project.path("open");
    std::fs::create_dir(&open).expect("mkdir");
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let open_s = open.display().to_string();
    let out = project.run(&["backup"], &[("STARTGATE_BACKUP_DIR", open_s.as_str())]);
    assert_eq!(out.code, 0, "{}", shown(&out));
    let file = PathBuf::from(out.stdout.trim());
    assert_eq!(mode(&file), 0o600);
}

#[test]
fn retention_keeps_exactly_the_newest_n_backups_of_this_database() {
    let project = one_pending("backup_keep");
    std::fs::create_dir(project.backups()).expect("mkdir");
    // Files that are not this database's backups are never removed.
    let strangers = [
        "other_db-20200101T000000.000Z-v1.sql".to_string(),
        format!("{}-notes.sql", project.db.name),
        "README.txt".to_string(),
    ];
    for name in &strangers {
        std::fs::write(project.backups().join(name), "keep me").expect("write");
    }
    let mut made = Vec::new();
    for _ in 0..4 {
        let out = project.run(&["backup"], &[("STARTGATE_BACKUP_KEEP", "2")]);
        assert_eq!(out.code, 0, "{}", shown(&out));
        made.push(
            Path::new(out.stdout.trim())
                .file_name()
                .and_then(|n| n.to_str())
                .expect("a path")
                .to_string(),
        );
    }
    let mut distinct = made.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), 4, "four distinct names: {made:?}");

    let newest: Vec<String> = made[2..].to_vec();
    let mine = |ext: &str| -> Vec<String> {
        with_extension(&project.backups(), ext)
            .into_iter()
            .filter(|n| n.starts_with(&format!("{}-2", project.db.name)))
            .collect()
    };
    assert_eq!(mine("sql"), newest, "the two newest backups");
    let json: Vec<String> = newest.iter().map(|n| n.replace(".sql", ".json")).collect();
    assert_eq!(mine("json"), json, "and their snapshots");
    for name in &strangers {
        assert!(project.backups().join(name).exists(), "{name} was removed");
    }
}

#[test]
fn auto_backs_up_only_when_something_is_pending_never_never_always_always() {
    let project = Project::new("backup_auto", "backup_app", &["0001_accounts.sql"]);
    let first = project.init(&[]);
    assert_eq!(first.code, 0, "{}", shown(&first));
    assert!(project.exists("app.accounts"), "applied");
    assert_eq!(
        with_extension(&project.backups(), "sql").len(),
        0,
        "auto, first deploy into an empty database: nothing to back up"
    );
    let messages = log_messages(&first.stderr);
    assert!(
        messages.contains("backing_up skipped") && messages.contains("holds no objects yet"),
        "{messages}"
    );

    let again = project.init(&[]);
    assert_eq!(again.code, 0, "{}", shown(&again));
    let messages = log_messages(&again.stderr);
    assert!(
        messages.contains("backing_up skipped") && messages.contains("nothing to apply"),
        "{messages}"
    );

    project.add("backup_app", "0002_orders.sql");
    let pending = project.init(&[]);
    assert_eq!(pending.code, 0, "{}", shown(&pending));
    let sql = with_extension(&project.backups(), "sql");
    assert_eq!(sql.len(), 1, "auto, pending: {sql:?}");
    assert!(sql[0].ends_with("-v0001.sql"), "{sql:?}");

    project.add("backup_app", "0003_feature_flags.sql");
    let never = project.init(&[("STARTGATE_BACKUP", "never")]);
    assert_eq!(never.code, 0, "{}", shown(&never));
    assert!(
        project.exists("app.feature_flags"),
        "applied without a backup"
    );
    assert_eq!(
        with_extension(&project.backups(), "sql").len(),
        1,
        "never: no new backup"
    );
    assert!(
        log_messages(&never.stderr).contains("STARTGATE_BACKUP=never"),
        "{}",
        shown(&never)
    );

    let always = project.init(&[("STARTGATE_BACKUP", "always")]);
    assert_eq!(always.code, 0, "{}", shown(&always));
    let sql = with_extension(&project.backups(), "sql");
    assert_eq!(sql.len(), 2, "always, even with nothing pending: {sql:?}");
    assert!(sql[1].ends_with("-v0003.sql"), "{sql:?}");
}

#[test]
fn a_first_deploy_into_a_database_that_holds_objects_is_backed_up() {
    // Adopting startgate on a database another tool (or a hand) already filled: no history
    // rows, but something to lose, so auto takes the backup. Each kind of object counts.
    for (label, setup) in [
        ("backup_adopt_table", "CREATE TABLE legacy (id int)"),
        (
            "backup_adopt_func",
            "CREATE FUNCTION legacy() RETURNS int LANGUAGE sql AS 'SELECT 1'",
        ),
        ("backup_adopt_type", "CREATE TYPE legacy AS ENUM ('a')"),
        ("backup_adopt_schema", "CREATE SCHEMA legacy"),
    ] {
        let project = Project::new(label, "backup_app", &["0001_accounts.sql"]);
        project.db.exec(setup);
        let out = project.init(&[]);
        assert_eq!(out.code, 0, "{label}: {}", shown(&out));
        let sql = with_extension(&project.backups(), "sql");
        assert_eq!(sql.len(), 1, "{label}: backed up: {sql:?}");
    }
}

#[test]
fn the_backup_command_receives_the_file_and_its_failure_stops_the_run() {
    let project = one_pending("backup_command");
    // A directory name that needs quoting in a shell.
    let dir = project.path("it's backups");
    let dir_s = dir.display().to_string();
    let copies = project.path("copies");
    std::fs::create_dir(&copies).expect("mkdir");
    let command = format!("cp {{file}} '{}'/", copies.display());
    let out = project.run(
        &["backup"],
        &[
            ("STARTGATE_BACKUP_DIR", dir_s.as_str()),
            ("STARTGATE_BACKUP_COMMAND", command.as_str()),
        ],
    );
    assert_eq!(out.code, 0, "{}", shown(&out));
    let file = PathBuf::from(out.stdout.trim());
    let name = file.file_name().expect("name");
    assert_eq!(names_in(&copies), [name.to_string_lossy().to_string()]);
    assert_eq!(
        std::fs::read(copies.join(name)).expect("copy"),
        std::fs::read(&file).expect("backup"),
        "the command got the finished backup"
    );

    // In init, a failing command is a failed backup: exit 5, nothing applied.
    let out = project.init(&[(
        "STARTGATE_BACKUP_COMMAND",
        "echo upload refused >&2; exit 3",
    )]);
    assert_eq!(out.code, 5, "{}", shown(&out));
    let messages = log_messages(&out.stderr);
    assert!(
        messages.contains("STARTGATE_BACKUP_COMMAND failed for")
            && messages.contains("upload refused")
            && messages.contains('3'),
        "{messages}"
    );
    assert_nothing_applied(&project);

    // With a working command, the same init applies.
    let marker = project.path("marker");
    let command = format!("echo {{file}} > '{}'", marker.display());
    let out = project.init(&[("STARTGATE_BACKUP_COMMAND", command.as_str())]);
    assert_eq!(out.code, 0, "{}", shown(&out));
    let named = std::fs::read_to_string(&marker).expect("marker");
    assert!(
        named
            .trim()
            .starts_with(&project.backups().display().to_string())
            && named.trim().ends_with("-v0001.sql"),
        "{named}"
    );
    assert!(Path::new(named.trim()).is_file());
    assert!(project.exists("orders"));
}

#[test]
fn pg_dump_absent_from_path_fails_with_the_fix_and_applies_nothing() {
    let project = one_pending("backup_no_pg_dump");
    // A PATH with a shell and nothing else.
    let bin = project.path("bin-without-pg-dump");
    std::fs::create_dir(&bin).expect("mkdir");
    std::os::unix::fs::symlink("/bin/sh", bin.join("sh")).expect("symlink");
    let path = bin.display().to_string();
    let out = project.init(&[("PATH", path.as_str())]);
    assert_eq!(out.code, 5, "{}", shown(&out));
    let messages = log_messages(&out.stderr);
    assert!(
        messages.contains("pg_dump not found on PATH")
            && messages.contains("install the PostgreSQL client tools")
            && messages.contains("STARTGATE_BACKUP=never"),
        "{messages}"
    );
    assert_nothing_applied(&project);
    assert_no_backup_files(&project);

    // `startgate backup` says the same.
    let out = project.run(&["backup"], &[("PATH", path.as_str())]);
    assert_eq!(out.code, 5, "{}", shown(&out));
    assert!(log_messages(&out.stderr).contains("pg_dump not found on PATH"));
}

#[test]
fn a_pg_dump_older_than_the_server_is_refused_naming_both_versions() {
    let project = one_pending("backup_old_pg_dump");
    let (server, major) = project.server_version();
    let marker = project.path("dumped");
    let path = fake_pg_dump(
        &project,
        &format!(
            "if [ \"$1\" = --version ]; then echo 'pg_dump (PostgreSQL) 9.6.24'; exit 0; fi\n\
             touch '{}'; exit 0",
            marker.display()
        ),
    );
    let out = project.init(&[("PATH", path.as_str())]);
    assert_eq!(out.code, 5, "{}", shown(&out));
    let messages = log_messages(&out.stderr);
    assert!(
        messages.contains("9.6.24")
            && messages.contains(&format!("PostgreSQL {server}"))
            && messages.contains(&format!("major version {major} or newer"))
            && messages.contains("install the PostgreSQL client tools"),
        "{messages}"
    );
    assert!(!marker.exists(), "the version is checked before dumping");
    assert_nothing_applied(&project);
    assert_no_backup_files(&project);
}

#[test]
fn a_dump_that_exits_zero_but_is_truncated_is_not_a_backup() {
    // pg_dump exits 0 when its last buffered write fails on a full disk: the dump then lacks
    // its closing line, and must not be kept under a backup's name.
    let project = one_pending("backup_truncated_dump");
    let path = fake_dump_step(
        &project,
        "echo '-- PostgreSQL database dump'\necho 'CREATE TABLE half ('\nexit 0",
    );
    let out = project.init(&[("PATH", path.as_str())]);
    assert_eq!(out.code, 5, "{}", shown(&out));
    let messages = log_messages(&out.stderr);
    assert!(
        messages.contains("is incomplete (it lacks pg_dump's closing line; is the disk full?)"),
        "{messages}"
    );
    assert_nothing_applied(&project);
    assert_no_backup_files(&project);
}

#[test]
fn a_failing_pg_dump_is_reported_with_its_error_line() {
    let project = one_pending("backup_failing_pg_dump");
    let path = fake_dump_step(
        &project,
        "echo 'pg_dump: partial output' \necho 'pg_dump: error: query failed: ERROR:  permission denied for table secrets' >&2\nexit 1",
    );
    let out = project.init(&[("PATH", path.as_str())]);
    assert_eq!(out.code, 5, "{}", shown(&out));
    let messages = log_messages(&out.stderr);
    assert!(
        messages.contains(
            "pg_dump failed (exit 1): pg_dump: error: query failed: ERROR:  permission denied for table secrets"
        ),
        "{messages}"
    );
    assert_nothing_applied(&project);
    assert_no_backup_files(&project);

    // Killed by a signal (the OOM killer, an operator).
    let path = fake_dump_step(&project, "echo 'pg_dump: started' >&2\nkill -9 $$");
    let out = project.init(&[("PATH", path.as_str())]);
    assert_eq!(out.code, 5, "{}", shown(&out));
    let messages = log_messages(&out.stderr);
    assert!(
        messages.contains("pg_dump failed (killed by signal 9)"),
        "{messages}"
    );
    assert_nothing_applied(&project);
    assert_no_backup_files(&project);
}

#[test]
fn a_hanging_pg_dump_is_stopped_at_the_backup_timeout_leaving_no_file() {
    let project = one_pending("backup_hanging_pg_dump");
    let pids = project.path("pids");
    let path = fake_dump_step(
        &project,
        &format!(
            "echo 'pg_dump: partial' \necho $$ >> '{}'\nexec sleep 60",
            pids.display()
        ),
    );
    let started = Instant::now();
    let out = project.init(&[("PATH", path.as_str()), ("STARTGATE_BACKUP_TIMEOUT", "1s")]);
    let took = started.elapsed();
    assert_eq!(out.code, 5, "{}", shown(&out));
    assert!(took < Duration::from_secs(8), "took {took:?}");
    let messages = log_messages(&out.stderr);
    assert!(
        messages.contains("pg_dump did not finish within 1s"),
        "{messages}"
    );
    assert_nothing_applied(&project);
    assert_no_backup_files(&project);
    // The fake pg_dump is gone, not left sleeping.
    let pid = std::fs::read_to_string(&pids).expect("the fake ran");
    let pid = pid.trim();
    let alive = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| {
            let state = stat.rsplit(')').next().unwrap_or("").trim_start();
            !state.starts_with('Z') && !state.starts_with('X')
        })
        .unwrap_or(false);
    assert!(!alive, "pg_dump {pid} outlived startgate");
}

#[test]
fn sigterm_during_the_backup_stops_pg_dump_and_leaves_no_file() {
    let project = one_pending("backup_sigterm");
    let path = fake_dump_step(&project, "echo 'pg_dump: partial'\nexec sleep 60");
    let migrations = project.migrations.path().display().to_string();
    let backups = project.backups().display().to_string();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_startgate"));
    cmd.arg("init")
        .env_clear()
        .envs([
            ("PATH", path.as_str()),
            ("STARTGATE_LOG_FORMAT", "json"),
            ("STARTGATE_LISTEN", "127.0.0.1:0"),
            ("DATABASE_URL", project.db.url.as_str()),
            ("STARTGATE_MIGRATIONS", migrations.as_str()),
            ("STARTGATE_BACKUP_DIR", backups.as_str()),
            ("STARTGATE_DB_WAIT_TIMEOUT", "10s"),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn startgate");
    let stderr = child.stderr.take().expect("stderr");
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut { stderr }, &mut text);
        text
    });
    // Wait until the dump is under way: its temporary file exists.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !names_in(&project.backups())
        .iter()
        .any(|n| n.ends_with(".partial"))
    {
        assert!(Instant::now() < deadline, "the dump never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    let pid = i32::try_from(child.id()).expect("pid");
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("startgate did not stop within 15 s of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stderr = reader.join().unwrap_or_default();
    assert_eq!(status.code(), Some(143), "{}", log_messages(&stderr));
    let messages = log_messages(&stderr);
    assert!(
        messages.contains("pg_dump was stopped by SIGTERM"),
        "{messages}"
    );
    assert_nothing_applied(&project);
    assert_no_backup_files(&project);
}

#[test]
fn pg_dump_blocked_on_a_lock_gives_up_at_the_lock_timeout() {
    let project = one_pending("backup_locked");
    // Another session holds an exclusive lock on a table pg_dump must read.
    let mut blocker = Blocker::hold(
        &project.db,
        "long-ddl",
        "BEGIN; LOCK TABLE users IN ACCESS EXCLUSIVE MODE",
    );
    let started = Instant::now();
    let out = project.init(&[
        ("STARTGATE_LOCK_TIMEOUT", "1s"),
        ("STARTGATE_BACKUP_TIMEOUT", "60s"),
    ]);
    let took = started.elapsed();
    blocker.release();
    assert_eq!(out.code, 5, "{}", shown(&out));
    assert!(took < Duration::from_secs(30), "took {took:?}");
    let messages = log_messages(&out.stderr);
    assert!(
        messages.contains("pg_dump failed (exit 1)")
            && messages.contains("LOCK TABLE public.users IN ACCESS SHARE MODE"),
        "{messages}"
    );
    assert_nothing_applied(&project);
    assert_no_backup_files(&project);
}

#[test]
fn a_disk_full_during_the_dump_leaves_no_partial_file() {
    let project = one_pending("backup_disk_full");
    let migrations = project.migrations.path().display().to_string();
    let backups = project.backups().display().to_string();
    // A file size limit of 1 KiB for startgate and its children stands in for a full disk:
    // pg_dump's writes beyond it fail with EFBIG (SIGXFSZ is ignored, as writes to a full disk
    // fail with ENOSPC rather than kill).
    let mut cmd = Command::new("sh");
    cmd.args([
        "-c",
        "trap '' XFSZ; ulimit -f 2 && exec \"$0\" \"$@\"",
        env!("CARGO_BIN_EXE_startgate"),
        "init",
    ])
    .env_clear();
    for key in ["PATH", "HOME", "LANG"] {
        if let Some(value) = std::env::var_os(key) {
            cmd.env(key, value);
        }
    }
    cmd.envs([
        ("STARTGATE_LOG_FORMAT", "json"),
        ("STARTGATE_LISTEN", "127.0.0.1:0"),
        ("DATABASE_URL", project.db.url.as_str()),
        ("STARTGATE_MIGRATIONS", migrations.as_str()),
        ("STARTGATE_BACKUP_DIR", backups.as_str()),
        ("STARTGATE_DB_WAIT_TIMEOUT", "10s"),
    ]);
    let out = run_bounded(cmd, LIMIT);
    assert_eq!(out.code, 5, "{}", shown(&out));
    let messages = log_messages(&out.stderr);
    assert!(
        messages.contains("pg_dump failed (exit 1)")
            && messages.contains("could not write to output file"),
        "{messages}"
    );
    assert_nothing_applied(&project);
    assert_no_backup_files(&project);
}

#[test]
fn the_password_reaches_pg_dump_through_its_environment_only() {
    let project = one_pending("backup_password");
    let seen = project.path("seen");
    let path = fake_dump_step(
        &project,
        &format!(
            "printf 'args=%s\\npassword=%s\\n' \"$*\" \"$PGPASSWORD\" > '{}'\nexec '{}' \"$@\"",
            seen.display(),
            real_pg_dump().display()
        ),
    );
    // Trust authentication ignores the password; startgate must still keep it secret.
    let url = project.db.url_with_password("s3cret-pw");
    let out = project.init(&[("PATH", path.as_str()), ("DATABASE_URL", url.as_str())]);
    assert_eq!(out.code, 0, "{}", shown(&out));
    let seen = std::fs::read_to_string(&seen).expect("the fake ran");
    let args = seen
        .lines()
        .find_map(|l| l.strip_prefix("args="))
        .unwrap_or_default();
    assert!(
        !args.contains("s3cret-pw"),
        "password in the arguments: {args}"
    );
    assert!(
        args.contains("--schema-only") && args.contains("--lock-wait-timeout="),
        "{args}"
    );
    assert!(seen.contains("password=s3cret-pw\n"), "{seen}");
    assert!(!out.stderr.contains("s3cret-pw"), "password in the log");
    assert!(project.exists("orders"));
}

#[test]
fn an_unusable_backup_directory_fails_naming_it() {
    let project = one_pending("backup_bad_dir");
    // Root ignores permissions, so: a regular file where the directory should be, a path
    // beneath a regular file, and a path under /proc.
    let file = project.path("a-file");
    std::fs::write(&file, "not a directory").expect("write");
    let beneath = file.join("backups");
    for dir in [
        file.clone(),
        beneath,
        PathBuf::from("/proc/startgate-backups"),
    ] {
        let dir_s = dir.display().to_string();
        let out = project.init(&[("STARTGATE_BACKUP_DIR", dir_s.as_str())]);
        assert_eq!(out.code, 5, "{dir_s}: {}", shown(&out));
        let messages = log_messages(&out.stderr);
        assert!(
            messages.contains(&format!("backup directory {dir_s}")),
            "{dir_s}: {messages}"
        );
        assert_nothing_applied(&project);
    }
    assert_eq!(
        std::fs::read_to_string(&file).expect("read"),
        "not a directory",
        "the file in the way is untouched"
    );
}

// ---------------------------------------------------------------------------------------------
// Snapshots and drift

/// The verify_app fixture applied, its snapshot written as the expectation, then `change`
/// done by hand on the live database.
fn drifted(label: &str, change: &str) -> (Project, String) {
    let project = Project::new(label, "verify_app", &["0001_schema.sql", "0002_orders.sql"]);
    let out = project.init(&[("STARTGATE_BACKUP", "never")]);
    assert_eq!(out.code, 0, "{}", shown(&out));
    let expected = project.expectation("expected.json");
    if !change.is_empty() {
        project.db.exec(change);
    }
    (project, expected)
}

fn verify(project: &Project, expected: &str, extra: &[(&str, &str)]) -> Output {
    let mut env = vec![("STARTGATE_EXPECT_SCHEMA", expected)];
    env.extend_from_slice(extra);
    project.run(&["verify"], &env)
}

/// Verifies in both modes and asserts exit 8 with exactly `want` listed.
#[track_caller]
fn assert_fails_with(project: &Project, expected: &str, want: &[&str]) {
    for mode in ["subset", "exact"] {
        let out = verify(project, expected, &[("STARTGATE_VERIFY", mode)]);
        assert_eq!(out.code, 8, "{mode}: {}", shown(&out));
        assert_eq!(failures(&out), want, "{mode}: {}", shown(&out));
        assert!(!out.stdout.contains("schema verified"), "{}", out.stdout);
    }
}

#[test]
fn drift_a_dropped_column() {
    let (project, expected) = drifted(
        "drift_column",
        "ALTER TABLE analytics_modules DROP COLUMN description",
    );
    assert_fails_with(
        &project,
        &expected,
        &["missing column analytics_modules.description (text)"],
    );
}

#[test]
fn drift_a_dropped_table() {
    let (project, expected) = drifted("drift_table", "DROP TABLE feature_flags");
    assert_fails_with(&project, &expected, &["missing table feature_flags"]);
}

#[test]
fn drift_an_extra_index_warns_in_subset_and_fails_in_exact() {
    let (project, expected) = drifted(
        "drift_extra_index",
        "CREATE INDEX users_email_idx ON users (email)",
    );
    let out = verify(&project, &expected, &[]);
    assert_eq!(out.code, 0, "{}", shown(&out));
    assert_eq!(out.stdout, "schema verified\n");
    assert_eq!(warnings(&out), ["extra index users_email_idx"]);
    assert!(
        log_messages(&out.stderr).contains("1 warning"),
        "{}",
        shown(&out)
    );

    let out = verify(&project, &expected, &[("STARTGATE_VERIFY", "exact")]);
    assert_eq!(out.code, 8, "{}", shown(&out));
    assert_eq!(failures(&out), ["extra index users_email_idx"]);
}

#[test]
fn drift_a_changed_check_constraint() {
    let (project, expected) = drifted(
        "drift_check",
        "ALTER TABLE products DROP CONSTRAINT price_positive, \
         ADD CONSTRAINT price_positive CHECK (price >= 0)",
    );
    assert_fails_with(
        &project,
        &expected,
        &[
            "check constraint price_positive on products differs: expected CHECK ((price > 0)), \
           found CHECK ((price >= 0))",
        ],
    );
}

#[test]
fn drift_row_level_security_disabled() {
    let (project, expected) = drifted("drift_rls", "ALTER TABLE users DISABLE ROW LEVEL SECURITY");
    assert_fails_with(
        &project,
        &expected,
        &["row-level security disabled on users"],
    );
}

#[test]
fn drift_a_policy_changed_or_dropped() {
    let (project, expected) = drifted(
        "drift_policy",
        "ALTER POLICY tenant_isolation ON users USING (true)",
    );
    assert_fails_with(
        &project,
        &expected,
        &["policy tenant_isolation on users: USING differs"],
    );
    project.db.exec("DROP POLICY tenant_isolation ON users");
    assert_fails_with(
        &project,
        &expected,
        &["missing policy tenant_isolation on users"],
    );
}

#[test]
fn drift_an_enum_label_added_warns_in_subset_and_fails_in_exact() {
    let (project, expected) = drifted("drift_enum", "ALTER TYPE mood ADD VALUE 'angry'");
    let out = verify(&project, &expected, &[]);
    assert_eq!(out.code, 0, "{}", shown(&out));
    assert_eq!(warnings(&out), ["enum mood: extra label 'angry'"]);
    let out = verify(&project, &expected, &[("STARTGATE_VERIFY", "exact")]);
    assert_eq!(out.code, 8, "{}", shown(&out));
    assert_eq!(failures(&out), ["enum mood: extra label 'angry'"]);
}

#[test]
fn an_invalid_index_fails_verification_even_without_an_expectation() {
    let (project, expected) = drifted("drift_invalid", "");
    // A unique index built concurrently on a column with duplicates fails and stays INVALID.
    let cic = psql(
        &project.db.url,
        &[
            "-c",
            "CREATE UNIQUE INDEX CONCURRENTLY orders_user_uniq ON orders (user_id)",
        ],
    );
    assert_ne!(cic.code, 0, "the build must fail: {}", cic.stderr);
    assert!(
        cic.stderr.contains("could not create unique index"),
        "{}",
        cic.stderr
    );
    assert_eq!(
        project
            .scalar(
                "SELECT indisvalid::text FROM pg_index WHERE indexrelid = 'orders_user_uniq'::regclass"
            )
            .as_deref(),
        Some("false")
    );

    for mode in ["subset", "exact"] {
        let out = project.run(&["verify"], &[("STARTGATE_VERIFY", mode)]);
        assert_eq!(out.code, 8, "{mode}: {}", shown(&out));
        assert_eq!(failures(&out), ["index orders_user_uniq is INVALID"]);
    }
    // With an expectation, it is reported once, as INVALID (not also as an extra index).
    assert_fails_with(&project, &expected, &["index orders_user_uniq is INVALID"]);
    // init's verifying phase fails on it too, with nothing to apply.
    let out = project.init(&[]);
    assert_eq!(out.code, 8, "{}", shown(&out));
    assert_eq!(failures(&out), ["index orders_user_uniq is INVALID"]);
    // status lists it.
    let out = project.run(&["status", "--json"], &[]);
    assert_eq!(out.code, 8, "{}", shown(&out));
    let report: serde_json::Value = serde_json::from_str(&out.stdout).expect("status JSON");
    assert_eq!(
        report["drift"],
        serde_json::json!(["index orders_user_uniq is INVALID"])
    );
}

#[test]
fn every_kind_of_drift_is_named_from_the_catalog() {
    let project = Project::new(
        "drift_many",
        "backup_app",
        &["0001_accounts.sql", "0002_orders.sql"],
    );
    let out = project.init(&[("STARTGATE_BACKUP", "never")]);
    assert_eq!(out.code, 0, "{}", shown(&out));
    let expected = project.expectation("expected.json");
    project.db.exec(
        "ALTER POLICY staff ON app.orders TO pg_monitor;
         ALTER TABLE app.accounts NO FORCE ROW LEVEL SECURITY;
         CREATE OR REPLACE VIEW app.happy_accounts AS
             SELECT id, email FROM app.accounts WHERE mood = 'ok';
         CREATE OR REPLACE FUNCTION app.touch() RETURNS trigger LANGUAGE plpgsql
             AS $$ BEGIN RETURN NEW; END $$;
         DROP TRIGGER orders_touch_big ON app.orders;
         ALTER TABLE app.orders ALTER COLUMN updated_at TYPE timestamp;
         ALTER TABLE app.accounts ALTER COLUMN balance SET DEFAULT 1;
         ALTER TABLE app.accounts ALTER COLUMN tenant_id DROP NOT NULL;
         ALTER SEQUENCE app.invoice_numbers INCREMENT 5;
         DROP TABLE app.events_default;
         DROP FUNCTION app.account_total(bigint, timestamptz);
         DROP INDEX app.accounts_tenant_created_idx;
         ALTER TABLE app.orders DROP CONSTRAINT total_positive;
         ALTER TYPE app.mood ADD VALUE 'meh' BEFORE 'ok';
         CREATE TABLE app.scratch (id int);",
    );
    let want = [
        "sequence app.invoice_numbers: increment differs (expected 10, found 5)",
        "column app.accounts.tenant_id: nullability differs (expected not null, found nullable)",
        "column app.accounts.balance: default differs (expected 0, found 1)",
        "missing index app.accounts_tenant_created_idx",
        "row-level security no longer forced on app.accounts",
        "missing table app.events_default",
        "column app.orders.updated_at: type differs (expected timestamp with time zone, \
         found timestamp without time zone)",
        "missing check constraint total_positive on app.orders (CHECK ((total > 0)))",
        "missing trigger orders_touch_big on app.orders",
        "policy staff on app.orders: roles differ",
        "view app.happy_accounts: definition differs",
        "missing function app.account_total(account bigint, since timestamp with time zone)",
        "function app.touch(): body differs",
    ];
    let out = verify(&project, &expected, &[]);
    assert_eq!(out.code, 8, "{}", shown(&out));
    assert_eq!(failures(&out), want, "{}", shown(&out));
    assert_eq!(
        warnings(&out),
        [
            "enum app.mood: extra label 'meh'",
            "extra table app.scratch"
        ]
    );
    let out = verify(&project, &expected, &[("STARTGATE_VERIFY", "exact")]);
    assert_eq!(out.code, 8, "{}", shown(&out));
    let mut exact = failures(&out);
    exact.sort();
    let mut all: Vec<String> = want.iter().map(|s| s.to_string()).collect();
    all.extend([
        "enum app.mood: extra label 'meh'".to_string(),
        "extra table app.scratch".to_string(),
    ]);
    all.sort();
    assert_eq!(exact, all);
}

#[test]
fn required_tables_and_columns_that_are_missing_are_all_named() {
    let (project, _) = drifted("drift_require", "");
    let out = project.run(
        &["verify"],
        &[(
            "STARTGATE_REQUIRE",
            "users.missing_col,missing_table,users.email,orders",
        )],
    );
    assert_eq!(out.code, 8, "{}", shown(&out));
    assert_eq!(
        failures(&out),
        [
            "missing column users.missing_col",
            "missing table missing_table"
        ]
    );
    let out = project.run(&["verify"], &[("STARTGATE_REQUIRE", "users.email,orders")]);
    assert_eq!(out.code, 0, "{}", shown(&out));
}

#[test]
fn a_snapshot_verifies_against_its_own_database_and_is_byte_identical_across_runs() {
    let (project, expected) = drifted("snapshot_stable", "");
    let first = std::fs::read_to_string(&expected).expect("expected");
    let second = project.snapshot();
    assert_eq!(first, second, "two schema --json runs");
    assert!(first.ends_with("}\n"));
    for mode in ["subset", "exact"] {
        let out = verify(&project, &expected, &[("STARTGATE_VERIFY", mode)]);
        assert_eq!(out.code, 0, "{mode}: {}", shown(&out));
        assert_eq!(out.stdout, "schema verified\n");
        assert!(warnings(&out).is_empty(), "{}", shown(&out));
        assert!(
            log_messages(&out.stderr).contains("the schema matches STARTGATE_EXPECT_SCHEMA"),
            "{}",
            shown(&out)
        );
    }
    // The history table is not part of the snapshot.
    assert!(!first.contains("startgate_migrations"), "{first}");
    // The readable form works on the same database.
    let out = project.run(&["schema"], &[]);
    assert_eq!(out.code, 0, "{}", shown(&out));
    assert!(
        out.stdout.lines().any(|l| l == "table users"),
        "{}",
        out.stdout
    );
}

#[test]
fn init_verifies_after_applying() {
    // `reference` owns the directory the expectation is in.
    let (_reference, expected) = drifted("init_verify_reference", "");

    // Applying everything gives the expected schema.
    let full = Project::new(
        "init_verify_full",
        "verify_app",
        &["0001_schema.sql", "0002_orders.sql"],
    );
    let out = full.init(&[
        ("STARTGATE_EXPECT_SCHEMA", expected.as_str()),
        ("STARTGATE_VERIFY", "exact"),
        ("STARTGATE_BACKUP", "never"),
    ]);
    assert_eq!(out.code, 0, "{}", shown(&out));
    assert!(
        log_messages(&out.stderr).contains("verifying ok"),
        "{}",
        shown(&out)
    );

    // A deploy whose migrations fall short of the expectation: applied, then exit 8.
    let short = Project::new("init_verify_short", "verify_app", &["0001_schema.sql"]);
    let out = short.init(&[
        ("STARTGATE_EXPECT_SCHEMA", expected.as_str()),
        ("STARTGATE_BACKUP", "never"),
    ]);
    assert_eq!(out.code, 8, "{}", shown(&out));
    assert_eq!(failures(&out), ["missing table orders"]);
    assert_eq!(short.history(), "0001:applied", "what was applied stays");
}

#[test]
fn a_bad_expectation_file_is_a_usage_error_before_anything_is_touched() {
    let project = Project::new(
        "bad_expectation",
        "verify_app",
        &["0001_schema.sql", "0002_orders.sql"],
    );
    let directory = project.path("a-directory.json");
    std::fs::create_dir(&directory).expect("mkdir");
    let malformed = project.path("malformed.json");
    std::fs::write(&malformed, "{\n  \"format\": 1,\n  \"engine\": \n").expect("write");
    let newer = project.path("newer.json");
    std::fs::write(
        &newer,
        "{\"format\": 2, \"engine\": \"postgres\", \"sharding\": {}}\n",
    )
    .expect("write");
    let cases = [
        (project.path("missing.json"), "cannot read it"),
        (directory, "cannot read it"),
        (malformed, "malformed JSON at line"),
        (newer, "written by a newer startgate (format 2"),
    ];
    for (path, why) in &cases {
        let path_s = path.display().to_string();
        for command in ["init", "verify", "status"] {
            let out = project.run(&[command], &[("STARTGATE_EXPECT_SCHEMA", path_s.as_str())]);
            assert_eq!(out.code, 2, "{command} {path_s}: {}", shown(&out));
            let messages = log_messages(&out.stderr);
            assert!(
                messages.contains(&format!("STARTGATE_EXPECT_SCHEMA={path_s}"))
                    && messages.contains(why),
                "{command} {path_s}: {messages}"
            );
        }
        assert!(!project.exists("users"), "nothing applied");
        assert_eq!(project.history(), "", "no history table created");
    }
    assert_no_backup_files(&project);
}

#[test]
fn status_lists_drift_and_exits_8_when_nothing_is_pending() {
    let (project, expected) = drifted(
        "status_drift",
        "ALTER TABLE analytics_modules DROP COLUMN description; \
         CREATE INDEX users_email_idx ON users (email)",
    );
    let env = [("STARTGATE_EXPECT_SCHEMA", expected.as_str())];
    let out = project.run(&["status", "--json"], &env);
    assert_eq!(out.code, 8, "{}", shown(&out));
    let report: serde_json::Value = serde_json::from_str(&out.stdout).expect("status JSON");
    assert_eq!(report["exit_code"], 8);
    assert_eq!(
        report["drift"],
        serde_json::json!(["missing column analytics_modules.description (text)"])
    );
    assert_eq!(
        report["drift_warnings"],
        serde_json::json!(["extra index users_email_idx"])
    );

    let out = project.run(&["status"], &env);
    assert_eq!(out.code, 8, "{}", shown(&out));
    assert!(
        out.stdout
            .contains("missing column analytics_modules.description (text)"),
        "{}",
        out.stdout
    );

    // Pending migrations decide the status (9): the drift may be nothing but their absence.
    std::fs::write(
        project.migrations.path().join("0003_more.sql"),
        "CREATE TABLE more (id int);\n",
    )
    .expect("write");
    let out = project.run(&["status", "--json"], &env);
    assert_eq!(out.code, 9, "{}", shown(&out));
    let report: serde_json::Value = serde_json::from_str(&out.stdout).expect("status JSON");
    assert_eq!(
        report["drift"],
        serde_json::json!(["missing column analytics_modules.description (text)"])
    );
}
