//! The SQLite backend, driving the real binary against real database files in temporary
//! directories (no server needed): applying and re-running, the refusals (gap, changed file), a
//! failing migration rolled back with its file and line, the wall-clock limit and SIGTERM
//! interrupting a statement, a no-transaction migration stopping part-way, backups that open as
//! the database they copy, drift, `status`, `schema`, concurrent replicas on one file, `baseline
//! --from` another tool's table, and the errors an operator meets first (missing directory,
//! `sqlite::memory:`). Each test asserts what an operator would look at: the exit status, the
//! message, the history rows, the tables.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{Running, block_on, log_messages, startgate};
use sqlx::{Connection, Row};

const LIMIT: Duration = Duration::from_secs(120);

/// A database file in a directory of its own, with a migrations directory and a backup
/// directory beside it.
struct Db {
    dir: tempfile::TempDir,
    path: PathBuf,
    url: String,
}

impl Db {
    fn new() -> Db {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("migrations")).expect("migrations dir");
        let path = dir.path().join("app.db");
        let url = format!("sqlite://{}", path.display());
        Db { dir, path, url }
    }

    fn migrations(&self) -> PathBuf {
        self.dir.path().join("migrations")
    }

    fn backups(&self) -> PathBuf {
        self.dir.path().join("backups")
    }

    /// Writes (or rewrites) one migration file.
    fn write(&self, name: &str, text: &str) {
        std::fs::write(self.migrations().join(name), text).expect("write migration");
    }

    /// `startgate ARGS` on this database, with `extra` settings.
    fn startgate(&self, args: &[&str], extra: &[(&str, &str)]) -> common::Output {
        let migrations = self.migrations().display().to_string();
        let backups = self.backups().display().to_string();
        let mut env = vec![
            ("DATABASE_URL", self.url.as_str()),
            ("STARTGATE_MIGRATIONS", migrations.as_str()),
            ("STARTGATE_BACKUP_DIR", backups.as_str()),
            ("STARTGATE_DB_WAIT_TIMEOUT", "5s"),
        ];
        env.extend_from_slice(extra);
        startgate(args, &env, LIMIT)
    }

    fn init(&self, extra: &[(&str, &str)]) -> common::Output {
        self.startgate(&["init"], extra)
    }

    /// Runs a query through sqlx and returns every row as text (NULL as `None`); the query
    /// casts what is not text.
    fn query(&self, sql: &str) -> Vec<Vec<Option<String>>> {
        query_file(&self.path, sql)
    }

    fn scalar(&self, sql: &str) -> Option<String> {
        self.query(sql)
            .into_iter()
            .next()
            .and_then(|row| row.into_iter().next().flatten())
    }

    /// Runs SQL (several statements allowed), creating the file if it does not exist yet.
    fn exec(&self, sql: &str) {
        let url = format!("sqlite://{}?mode=rwc", self.path.display());
        let sql = sql.to_string();
        block_on(async move {
            let mut conn = sqlx::SqliteConnection::connect(&url).await?;
            sqlx::raw_sql(&sql).execute(&mut conn).await?;
            conn.close().await
        })
        .unwrap_or_else(|e| panic!("test SQL failed: {e}"));
    }

    fn has_table(&self, name: &str) -> bool {
        self.scalar(&format!(
            "SELECT CAST(count(*) AS TEXT) FROM sqlite_master WHERE type = 'table' AND name = '{name}'"
        ))
        .as_deref()
            == Some("1")
    }

    /// `version:state` of every history row, in version order.
    fn history(&self) -> String {
        self.query("SELECT version || ':' || state FROM startgate_migrations ORDER BY version")
            .into_iter()
            .filter_map(|row| row.into_iter().next().flatten())
            .collect::<Vec<_>>()
            .join(" ")
    }
}

fn query_file(path: &Path, sql: &str) -> Vec<Vec<Option<String>>> {
    let url = format!("sqlite://{}", path.display());
    let sql = sql.to_string();
    block_on(async move {
        let mut conn = sqlx::SqliteConnection::connect(&url).await?;
        let rows = sqlx::query(&sql).fetch_all(&mut conn).await?;
        conn.close().await?;
        rows.iter()
            .map(|row| {
                (0..row.len())
                    .map(|i| row.try_get::<Option<String>, _>(i))
                    .collect::<Result<Vec<_>, _>>()
            })
            .collect::<Result<Vec<_>, _>>()
    })
    .unwrap_or_else(|e| panic!("test query failed: {e}"))
}

/// The three migrations most tests start from: tables with a foreign key, an index, a view and
/// a trigger whose body holds `;` (kept whole by the splitter).
fn write_base(db: &Db) {
    db.write(
        "0001_users.sql",
        "CREATE TABLE users (\n  id INTEGER PRIMARY KEY,\n  email TEXT NOT NULL UNIQUE,\n  \
         created_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP\n);\n\
         CREATE INDEX users_created_idx ON users (created_at);\n",
    );
    db.write(
        "0002_orders.sql",
        "CREATE TABLE orders (\n  id INTEGER PRIMARY KEY,\n  \
         user_id INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,\n  total INTEGER\n);\n\
         CREATE VIEW big_orders AS SELECT * FROM orders WHERE total > 100;\n",
    );
    db.write(
        "0003_audit.sql",
        "CREATE TABLE audit (note TEXT);\n\
         CREATE TRIGGER orders_audit AFTER INSERT ON orders\nBEGIN\n  \
         INSERT INTO audit VALUES ('order ' || NEW.id);\n  \
         INSERT INTO audit VALUES (CASE WHEN NEW.total > 100 THEN 'big' ELSE 'small' END);\nEND;\n\
         INSERT INTO users (email) VALUES ('first@example.com');\n",
    );
}

#[test]
fn applies_every_migration_then_a_rerun_applies_nothing() {
    let db = Db::new();
    write_base(&db);
    assert!(!db.path.exists(), "the file does not exist yet");
    let out = db.init(&[]);
    assert_eq!(out.code, 0, "stderr: {}", out.stderr);
    let log = log_messages(&out.stderr);
    assert!(log.contains("applied 3 migrations in"), "{log}");
    assert!(log.contains("now at version 0003"), "{log}");
    assert!(
        log.contains("connected to sqlite://") && log.contains("(SQLite 3."),
        "{log}"
    );
    assert!(
        log.contains("backing_up skipped") && log.contains("the database holds no objects yet"),
        "{log}"
    );
    assert!(db.path.exists(), "the database file was created");
    assert_eq!(db.history(), "0001:applied 0002:applied 0003:applied");
    for table in ["users", "orders", "audit"] {
        assert!(db.has_table(table), "{table} was created");
    }
    // The recovery point is the time before each migration, with no WAL position.
    assert_eq!(
        db.scalar(
            "SELECT CAST(count(*) AS TEXT) FROM startgate_migrations WHERE recovery_time LIKE '____-__-__T__:__:__.___Z' \
             AND recovery_lsn IS NULL AND applied_at LIKE '____-__-__T__:__:__.___Z' \
             AND applied_by IS NOT NULL AND startgate_version IS NOT NULL AND execution_ms >= 0"
        )
        .as_deref(),
        Some("3")
    );
    // The trigger works as written.
    db.exec("INSERT INTO orders (user_id, total) VALUES (1, 500)");
    assert_eq!(
        db.scalar("SELECT group_concat(note, ',') FROM audit")
            .as_deref(),
        Some("order 1,big")
    );

    let before = db.query("SELECT version, applied_at FROM startgate_migrations ORDER BY 1");
    let again = db.init(&[]);
    assert_eq!(again.code, 0, "stderr: {}", again.stderr);
    let log = log_messages(&again.stderr);
    assert!(log.contains("nothing to apply"), "{log}");
    assert!(log.contains("no lock needed"), "{log}");
    let after = db.query("SELECT version, applied_at FROM startgate_migrations ORDER BY 1");
    assert_eq!(before, after, "a re-run leaves the history untouched");

    // `status` says it is up to date, in text and JSON.
    let status = db.startgate(&["status"], &[]);
    assert_eq!(status.code, 0, "stderr: {}", status.stderr);
    assert!(
        status
            .stdout
            .contains("status: up-to-date (3 applied, 0 pending)"),
        "{}",
        status.stdout
    );
    let json = db.startgate(&["status", "--json"], &[]);
    assert_eq!(json.code, 0, "stderr: {}", json.stderr);
    let value: serde_json::Value = serde_json::from_str(&json.stdout).expect("status JSON");
    assert_eq!(value["exit_code"], 0, "{value}");
    let text = json.stdout;
    assert!(text.contains("\"sqlite\""), "{text}");
}

#[test]
fn the_schema_snapshot_lists_what_the_migrations_made_and_not_the_history() {
    let db = Db::new();
    write_base(&db);
    assert_eq!(db.init(&[]).code, 0);
    let out = db.startgate(&["schema", "--json"], &[]);
    assert_eq!(out.code, 0, "stderr: {}", out.stderr);
    let snapshot: serde_json::Value = serde_json::from_str(&out.stdout).expect("snapshot JSON");
    assert_eq!(snapshot["engine"], "sqlite");
    assert_eq!(snapshot["schemas"], serde_json::json!(["main"]));
    let tables: Vec<&str> = snapshot["tables"]
        .as_array()
        .expect("tables")
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert_eq!(tables, ["audit", "orders", "users"], "no history table");
    let users = &snapshot["tables"][2];
    assert_eq!(
        users["columns"][1],
        serde_json::json!({"name": "email", "data_type": "TEXT", "nullable": false,
            "default": null, "identity": null, "generated": null})
    );
    assert_eq!(users["columns"][2]["default"], "CURRENT_TIMESTAMP");
    assert_eq!(
        users["constraints"],
        serde_json::json!([
            {"name": "users_email_key", "kind": "unique", "definition": "UNIQUE (email)"},
            {"name": "users_pkey", "kind": "primary key", "definition": "PRIMARY KEY (id)"}
        ])
    );
    assert_eq!(users["indexes"][0]["name"], "users_created_idx");
    assert_eq!(users["indexes"][0]["unique"], false);
    let orders = &snapshot["tables"][1];
    assert_eq!(
        orders["constraints"][1]["definition"],
        "FOREIGN KEY (user_id) REFERENCES users(id) ON DELETE CASCADE"
    );
    assert_eq!(orders["triggers"][0]["name"], "orders_audit");
    assert_eq!(snapshot["views"][0]["name"], "big_orders");

    // The text form names the same objects, and both are stable.
    let text = db.startgate(&["schema"], &[]);
    assert_eq!(text.code, 0, "stderr: {}", text.stderr);
    for line in [
        "table main.users",
        "    email TEXT not null",
        "    users_created_idx: CREATE INDEX users_created_idx ON users (created_at)",
        "view main.big_orders",
    ] {
        assert!(
            text.stdout.lines().any(|l| l == line),
            "no {line:?} in\n{}",
            text.stdout
        );
    }
    assert_eq!(db.startgate(&["schema", "--json"], &[]).stdout, out.stdout);
}

#[test]
fn the_gap_is_refused_and_nothing_is_applied() {
    let db = Db::new();
    for v in [1, 2, 4] {
        db.write(
            &format!("{v:04}_t{v}.sql"),
            &format!("CREATE TABLE t{v} (id int);\n"),
        );
    }
    assert_eq!(db.init(&[]).code, 0);
    db.write("0003_t3.sql", "CREATE TABLE t3 (id int);\n");
    db.write("0005_t5.sql", "CREATE TABLE t5 (id int);\n");
    let out = db.init(&[]);
    assert_eq!(out.code, 7, "stderr: {}", out.stderr);
    let log = log_messages(&out.stderr);
    assert!(
        log.contains(
            "0003_t3.sql is pending but 0004 is applied: set STARTGATE_OUT_OF_ORDER=true to apply it, or renumber it"
        ),
        "{log}"
    );
    assert!(!db.has_table("t3"), "nothing was applied");
    assert!(
        !db.has_table("t5"),
        "not even the pending migration after the gap"
    );
    assert_eq!(db.history(), "0001:applied 0002:applied 0004:applied");
}

#[test]
fn a_changed_applied_file_is_refused_by_name() {
    let db = Db::new();
    db.write("0001_a.sql", "CREATE TABLE a (id int);\n");
    db.write("0002_b.sql", "CREATE TABLE b (id int);\n");
    assert_eq!(db.init(&[]).code, 0);
    db.write("0002_b.sql", "CREATE TABLE b (id bigint);\n");
    db.write("0003_c.sql", "CREATE TABLE c (id int);\n");
    let out = db.init(&[]);
    assert_eq!(out.code, 7, "stderr: {}", out.stderr);
    let log = log_messages(&out.stderr);
    assert!(
        log.contains("0002_b.sql was changed after it was applied"),
        "{log}"
    );
    assert!(!db.has_table("c"));
}

#[test]
fn a_failing_migration_is_rolled_back_and_named_with_its_line() {
    let db = Db::new();
    db.write("0001_a.sql", "CREATE TABLE a (id int);\n");
    db.write(
        "0002_b.sql",
        "CREATE TABLE b (id int);\nINSERT INTO b VALUES (1);\n\nINSERT INTO b\n  SELECT id FROM missing_table;\nCREATE TABLE c (id int);\n",
    );
    db.write("0003_d.sql", "CREATE TABLE d (id int);\n");
    let out = db.init(&[]);
    assert_eq!(out.code, 6, "stderr: {}", out.stderr);
    let log = log_messages(&out.stderr);
    assert!(
        log.contains(
            "0002_b.sql:4: statement 3 failed (SQLITE_ERROR): no such table: missing_table; \
             the migration was rolled back"
        ),
        "{log}"
    );
    assert!(db.has_table("a"), "the earlier migration stays applied");
    assert!(
        !db.has_table("b"),
        "the failing migration is rolled back whole"
    );
    assert!(!db.has_table("d"), "later migrations are not attempted");
    assert_eq!(db.history(), "0001:applied");
    // The lock was released on the way out.
    let unlock = db.startgate(&["unlock"], &[]);
    assert_eq!(unlock.code, 0, "stderr: {}", unlock.stderr);
    assert!(unlock.stdout.contains("is free"), "{}", unlock.stdout);

    // Fixed, it applies, and the rest after it.
    db.write(
        "0002_b.sql",
        "CREATE TABLE b (id int);\nINSERT INTO b VALUES (1);\n",
    );
    let fixed = db.init(&[]);
    assert_eq!(fixed.code, 0, "stderr: {}", fixed.stderr);
    assert_eq!(db.history(), "0001:applied 0002:applied 0003:applied");
}

/// A statement that runs for a long time: counting rows of a recursive CTE, `n` of them.
fn slow_statement(n: u64) -> String {
    format!(
        "INSERT INTO counted WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c \
         WHERE x < {n}) SELECT count(*) FROM c"
    )
}

#[test]
fn the_wall_clock_limit_interrupts_a_statement_and_rolls_back() {
    let db = Db::new();
    db.write(
        "0001_slow.sql",
        &format!(
            "-- startgate:timeout 500ms\nCREATE TABLE counted (n int);\n{};\n",
            slow_statement(10_000_000_000)
        ),
    );
    let out = db.init(&[]);
    assert_eq!(out.code, 6, "stderr: {}", out.stderr);
    let log = log_messages(&out.stderr);
    assert!(
        log.contains("0001_slow.sql:3: statement 2 did not finish within 500ms"),
        "{log}"
    );
    assert!(log.contains("the migration was rolled back"), "{log}");
    assert!(!db.has_table("counted"));
    assert!(!db.has_table("startgate_migrations") || db.history().is_empty());
}

#[test]
fn sigterm_interrupts_the_running_statement_rolls_back_and_exits_143() {
    let db = Db::new();
    db.write(
        "0001_slow.sql",
        &format!(
            "CREATE TABLE counted (n int);\n{};\n",
            slow_statement(10_000_000_000)
        ),
    );
    let migrations = db.migrations().display().to_string();
    let mut running = Running::start(
        &["init"],
        &[
            ("DATABASE_URL", db.url.as_str()),
            ("STARTGATE_MIGRATIONS", migrations.as_str()),
        ],
    );
    running.wait_for_line("applying 0001_slow.sql");
    // The rollback journal appears once the migration's transaction has written (its first
    // statement ran); the slow one comes next. A signal even before it starts names it too.
    let journal = db.dir.path().join("app.db-journal");
    let deadline = std::time::Instant::now() + common::RUNNING_LIMIT;
    while !journal.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the migration never wrote"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    running.signal(libc::SIGTERM);
    let (code, stderr) = running.finish();
    assert_eq!(code, 143, "stderr: {stderr}");
    let log = log_messages(&stderr);
    assert!(
        log.contains("statement 2 was interrupted by SIGTERM"),
        "{log}"
    );
    assert!(!db.has_table("counted"), "rolled back");
    let unlock = db.startgate(&["unlock"], &[]);
    assert!(unlock.stdout.contains("is free"), "{}", unlock.stdout);
}

#[test]
fn a_no_transaction_migration_keeps_what_ran_and_is_refused_until_repaired() {
    let db = Db::new();
    db.write(
        "0001_nt.sql",
        "-- startgate:no-transaction\nCREATE TABLE nt (id int PRIMARY KEY);\n\
         INSERT INTO nt VALUES (1);\nINSERT INTO nt VALUES (1);\nCREATE TABLE after (id int);\n",
    );
    let out = db.init(&[]);
    assert_eq!(out.code, 6, "stderr: {}", out.stderr);
    let log = log_messages(&out.stderr);
    assert!(
        log.contains(
            "0001_nt.sql:4: statement 3 failed (SQLITE_CONSTRAINT_PRIMARYKEY): UNIQUE constraint \
             failed: nt.id; its first 2 of 4 statements stay applied"
        ),
        "{log}"
    );
    assert_eq!(
        db.query(
            "SELECT state, CAST(statements_done AS TEXT), error_sqlstate, error \
             FROM startgate_migrations"
        ),
        [[
            Some("failed".to_string()),
            Some("2".to_string()),
            Some("SQLITE_CONSTRAINT_PRIMARYKEY".to_string()),
            Some("UNIQUE constraint failed: nt.id".to_string()),
        ]]
    );
    assert!(db.has_table("nt") && !db.has_table("after"));

    let status = db.startgate(&["status"], &[]);
    assert_eq!(status.code, 7, "stderr: {}", status.stderr);
    assert!(
        status.stdout.contains("startgate repair 0001"),
        "{}",
        status.stdout
    );

    // The operator skips the failed statement; the rest runs.
    let repair = db.startgate(&["repair", "0001", "--skip"], &[]);
    assert_eq!(repair.code, 0, "stderr: {}", repair.stderr);
    let resumed = db.init(&[]);
    assert_eq!(resumed.code, 0, "stderr: {}", resumed.stderr);
    assert!(db.has_table("after"));
    assert_eq!(db.history(), "0001:applied");
    assert_eq!(
        db.scalar("SELECT CAST(count(*) AS TEXT) FROM nt")
            .as_deref(),
        Some("1")
    );
}

#[test]
fn a_backup_is_a_private_copy_that_opens_as_the_same_database() {
    let db = Db::new();
    db.write(
        "0001_users.sql",
        "CREATE TABLE users (id INTEGER PRIMARY KEY, email TEXT NOT NULL UNIQUE);\n\
         CREATE INDEX users_email_idx ON users (lower(email));\n\
         INSERT INTO users (email) VALUES ('kept@example.com');\n",
    );
    assert_eq!(db.init(&[]).code, 0);
    db.write("0002_drop.sql", "DROP TABLE users;\n");
    let out = db.init(&[]);
    assert_eq!(out.code, 0, "stderr: {}", out.stderr);
    assert!(!db.has_table("users"));

    let backups: Vec<PathBuf> = std::fs::read_dir(db.backups())
        .expect("backup dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "sqlite"))
        .collect();
    let [backup] = backups.as_slice() else {
        panic!("one backup, found {backups:?}");
    };
    let name = backup
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    assert!(
        name.starts_with("app.db-") && name.ends_with("-v0001.sqlite"),
        "{name}"
    );
    let log = log_messages(&out.stderr);
    assert!(
        log.contains(&format!("backup {}", backup.display())),
        "{log}"
    );
    let mode = std::fs::metadata(backup)
        .expect("backup")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600, "the backup is private");

    // Restored (copied into place), it is the database as it was before 0002: the data too.
    let restored = db.dir.path().join("restored.db");
    std::fs::copy(backup, &restored).expect("restore");
    assert_eq!(
        query_file(&restored, "SELECT email FROM users"),
        [[Some("kept@example.com".to_string())]]
    );
    assert_eq!(
        query_file(&restored, "PRAGMA integrity_check"),
        [[Some("ok".to_string())]]
    );
    let restored_url = format!("sqlite://{}", restored.display());
    let snapshot_beside = backup.with_extension("json");
    let expect = snapshot_beside.display().to_string();
    let verified = db.startgate(
        &["verify"],
        &[
            ("DATABASE_URL", restored_url.as_str()),
            ("STARTGATE_EXPECT_SCHEMA", expect.as_str()),
            ("STARTGATE_VERIFY", "exact"),
        ],
    );
    assert_eq!(verified.code, 0, "stderr: {}", verified.stderr);
    let schema = db.startgate(
        &["schema", "--json"],
        &[("DATABASE_URL", restored_url.as_str())],
    );
    assert_eq!(
        schema.stdout,
        std::fs::read_to_string(&snapshot_beside).expect("snapshot beside the backup"),
        "the restored copy has the schema recorded beside the backup"
    );
    let status = db.startgate(&["status"], &[("DATABASE_URL", restored_url.as_str())]);
    assert_eq!(
        status.code, 9,
        "its history says 0002 is pending: {}",
        status.stdout
    );

    // `startgate backup` writes another one, and the backup command gets its path.
    let listed = db.dir.path().join("listed");
    let command = format!("echo {{file}} > {}", listed.display());
    let again = db.startgate(
        &["backup"],
        &[("STARTGATE_BACKUP_COMMAND", command.as_str())],
    );
    assert_eq!(again.code, 0, "stderr: {}", again.stderr);
    let file = std::fs::read_to_string(&listed).expect("the backup command ran");
    assert!(file.trim().ends_with("-v0002.sqlite"), "{file}");
}

#[test]
fn drift_is_detected_by_verify() {
    let db = Db::new();
    write_base(&db);
    assert_eq!(db.init(&[]).code, 0);

    let out = db.startgate(&["verify"], &[("STARTGATE_REQUIRE", "users.email,orders")]);
    assert_eq!(out.code, 0, "stderr: {}", out.stderr);
    assert!(out.stdout.contains("schema verified"), "{}", out.stdout);

    let out = db.startgate(
        &["verify"],
        &[("STARTGATE_REQUIRE", "missing_table,users.nickname")],
    );
    assert_eq!(out.code, 8, "stderr: {}", out.stderr);
    let log = log_messages(&out.stderr);
    assert!(log.contains("missing table missing_table"), "{log}");
    assert!(log.contains("missing column main.users.nickname"), "{log}");

    // Against a snapshot taken now, a hand-made change is drift.
    let snapshot = db.dir.path().join("expected.json");
    let schema = db.startgate(&["schema", "--json"], &[]);
    std::fs::write(&snapshot, &schema.stdout).expect("write snapshot");
    let expect = snapshot.display().to_string();
    let same = db.startgate(&["verify"], &[("STARTGATE_EXPECT_SCHEMA", expect.as_str())]);
    assert_eq!(same.code, 0, "stderr: {}", same.stderr);
    db.exec("DROP VIEW big_orders; DROP INDEX users_created_idx;");
    let drifted = db.startgate(&["verify"], &[("STARTGATE_EXPECT_SCHEMA", expect.as_str())]);
    assert_eq!(drifted.code, 8, "stderr: {}", drifted.stderr);
    let log = log_messages(&drifted.stderr);
    assert!(log.contains("missing view main.big_orders"), "{log}");
    assert!(
        log.contains("missing index main.users_created_idx"),
        "{log}"
    );
}

#[test]
fn concurrent_inits_on_one_file_apply_each_migration_once() {
    let db = Db::new();
    db.write(
        "0001_deploys.sql",
        "CREATE TABLE deploys (note TEXT);\nCREATE TABLE counted (n int);\n",
    );
    db.write(
        "0002_first.sql",
        "INSERT INTO deploys VALUES ('applied once');\n",
    );
    db.write("0003_slow.sql", &format!("{};\n", slow_statement(300_000)));
    db.write(
        "0004_second.sql",
        "INSERT INTO deploys VALUES ('also once');\n",
    );
    let runs: Vec<_> = (0..4)
        .map(|i| {
            let url = db.url.clone();
            let migrations = db.migrations().display().to_string();
            let backups = db.backups().display().to_string();
            std::thread::spawn(move || {
                let host = format!("replica-{i}");
                startgate(
                    &["init"],
                    &[
                        ("DATABASE_URL", url.as_str()),
                        ("STARTGATE_MIGRATIONS", migrations.as_str()),
                        ("STARTGATE_BACKUP_DIR", backups.as_str()),
                        ("HOSTNAME", host.as_str()),
                    ],
                    LIMIT,
                )
            })
        })
        .collect();
    for run in runs {
        let out = run.join().expect("replica thread");
        assert_eq!(out.code, 0, "every replica exits 0: {}", out.stderr);
    }
    assert_eq!(
        db.scalar("SELECT CAST(count(*) AS TEXT) FROM deploys")
            .as_deref(),
        Some("2")
    );
    assert_eq!(
        db.scalar("SELECT CAST(count(*) AS TEXT) FROM counted")
            .as_deref(),
        Some("1")
    );
    assert_eq!(
        db.history(),
        "0001:applied 0002:applied 0003:applied 0004:applied"
    );
}

#[test]
fn a_replica_waits_for_the_lock_and_names_its_holder() {
    let db = Db::new();
    db.write("0001_counted.sql", "CREATE TABLE counted (n int);\n");
    assert_eq!(db.init(&[]).code, 0);
    db.write(
        "0002_slow.sql",
        &format!("{};\n", slow_statement(10_000_000_000)),
    );
    let migrations = db.migrations().display().to_string();
    let mut first = Running::start(
        &["init"],
        &[
            ("DATABASE_URL", db.url.as_str()),
            ("STARTGATE_MIGRATIONS", migrations.as_str()),
            ("STARTGATE_BACKUP", "never"),
            ("HOSTNAME", "first-replica"),
        ],
    );
    first.wait_for_line("applying 0002_slow.sql");

    let unlock = db.startgate(&["unlock"], &[]);
    assert_eq!(unlock.code, 0, "stderr: {}", unlock.stderr);
    let pid = first.child.id();
    assert!(
        unlock.stdout.contains(&format!(
            "is held by pid {pid} (startgate@first-replica, client local"
        )),
        "{}",
        unlock.stdout
    );
    let forced = db.startgate(&["unlock", "--force"], &[]);
    assert_eq!(forced.code, 1, "stdout: {}", forced.stdout);
    assert!(
        log_messages(&forced.stderr).contains("SQLite has no server sessions to terminate"),
        "{}",
        forced.stderr
    );

    let second = db.init(&[
        ("STARTGATE_LOCK_WAIT_TIMEOUT", "1s"),
        ("STARTGATE_BACKUP", "never"),
    ]);
    assert_eq!(second.code, 4, "stderr: {}", second.stderr);
    let log = log_messages(&second.stderr);
    assert!(
        log.contains(&format!(
            "migration lock not acquired within 1s; it is held by pid {pid} (startgate@first-replica"
        )),
        "{log}"
    );
    first.signal(libc::SIGTERM);
    let (code, stderr) = first.finish();
    assert_eq!(code, 143, "{stderr}");
    assert_eq!(db.history(), "0001:applied");
}

#[test]
fn the_first_errors_an_operator_meets_are_clear() {
    let db = Db::new();
    db.write("0001_a.sql", "CREATE TABLE a (id int);\n");
    let missing = db.dir.path().join("no/such/dir/app.db");
    let url = format!("sqlite://{}", missing.display());
    let out = db.startgate(&["init"], &[("DATABASE_URL", url.as_str())]);
    assert_eq!(out.code, 2, "stderr: {}", out.stderr);
    let log = log_messages(&out.stderr);
    assert!(
        log.contains(&format!(
            "the directory {} of the SQLite database {} does not exist",
            db.dir.path().join("no/such/dir").display(),
            missing.display()
        )),
        "{log}"
    );

    let out = db.startgate(&["status"], &[("DATABASE_URL", "sqlite::memory:")]);
    assert_eq!(out.code, 2, "stderr: {}", out.stderr);
    assert!(
        log_messages(&out.stderr).contains("use sqlite://PATH"),
        "{}",
        out.stderr
    );

    let out = db.startgate(&["status"], &[("STARTGATE_HISTORY_TABLE", "ops.history")]);
    assert_eq!(out.code, 2, "stderr: {}", out.stderr);
    assert!(
        log_messages(&out.stderr).contains("SQLite has no schemas"),
        "{}",
        out.stderr
    );

    let not_a_database = db.dir.path().join("notes.txt");
    std::fs::write(
        &not_a_database,
        "these are not the pages of a SQLite database\n".repeat(20),
    )
    .expect("write");
    let url = format!("sqlite://{}", not_a_database.display());
    let out = db.startgate(
        &["status"],
        &[
            ("DATABASE_URL", url.as_str()),
            ("STARTGATE_DB_WAIT_TIMEOUT", "0s"),
        ],
    );
    assert_eq!(out.code, 3, "stderr: {}", out.stderr);
    assert!(
        log_messages(&out.stderr).contains("file is not a database (SQLITE_NOTADB)"),
        "{}",
        out.stderr
    );
}

#[test]
fn a_relative_path_and_a_named_history_table_work() {
    let db = Db::new();
    std::fs::create_dir(db.dir.path().join("data")).expect("data dir");
    db.write("0001_a.sql", "CREATE TABLE a (id int);\n");
    let migrations = db.migrations().display().to_string();
    let out = common::startgate_in(
        db.dir.path(),
        &["init"],
        &[
            ("DATABASE_URL", "sqlite://data/app.db"),
            ("STARTGATE_MIGRATIONS", migrations.as_str()),
            ("STARTGATE_HISTORY_TABLE", "main.schema_history"),
        ],
        LIMIT,
    );
    assert_eq!(out.code, 0, "stderr: {}", out.stderr);
    let file = db.dir.path().join("data/app.db");
    assert_eq!(
        query_file(&file, "SELECT version || ':' || state FROM schema_history"),
        [[Some("0001:applied".to_string())]]
    );
    assert!(db.dir.path().join("data/app.db.startgate-lock").exists());
}

#[test]
fn baseline_reads_sqlx_and_golang_migrate_histories_in_the_file() {
    let db = Db::new();
    for v in 1..=3 {
        db.write(
            &format!("{v:04}_t{v}.sql"),
            &format!("CREATE TABLE t{v} (id int);\n"),
        );
    }
    // sqlx's own table, as its SQLite driver creates it.
    db.exec(
        "CREATE TABLE _sqlx_migrations (version BIGINT PRIMARY KEY, description TEXT NOT NULL, \
         installed_on TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP, success BOOLEAN NOT NULL, \
         checksum BLOB NOT NULL, execution_time BIGINT NOT NULL); \
         INSERT INTO _sqlx_migrations VALUES (1, 't1', CURRENT_TIMESTAMP, TRUE, x'00', 1), \
         (2, 't2', CURRENT_TIMESTAMP, TRUE, x'00', 1);",
    );
    let out = db.startgate(&["baseline", "--from", "sqlx"], &[]);
    assert_eq!(out.code, 0, "stderr: {}", out.stderr);
    assert!(
        out.stdout.contains(
            "recorded 2 migrations as applied without running them (0001–0002), from sqlx's \
             _sqlx_migrations; 1 pending"
        ),
        "{}",
        out.stdout
    );
    assert_eq!(db.history(), "0001:applied 0002:applied");
    assert!(!db.has_table("t1"), "recorded, not run");

    // golang-migrate's table is told from dbmate's by its dirty column.
    let other = Db::new();
    other.write("0001_a.sql", "CREATE TABLE a (id int);\n");
    other.exec("CREATE TABLE schema_migrations (version varchar(128) PRIMARY KEY);");
    let out = other.startgate(&["baseline", "--from", "golang-migrate"], &[]);
    assert_eq!(out.code, 2, "stderr: {}", out.stderr);
    assert!(
        log_messages(&out.stderr).contains("is --from dbmate right?"),
        "{}",
        out.stderr
    );
    let out = other.startgate(&["baseline", "--from", "flyway"], &[]);
    assert_eq!(out.code, 2, "stderr: {}", out.stderr);
    assert!(
        log_messages(&out.stderr).contains("there is no flyway_schema_history table"),
        "{}",
        out.stderr
    );
}

#[test]
fn run_migrates_then_starts_the_app_and_exits_with_its_status() {
    let db = Db::new();
    db.write("0001_a.sql", "CREATE TABLE a (id int);\n");
    // The app sees the migrated database, and its exit status is startgate's.
    let script = format!("test -s {} && exit 3", db.path.display());
    let out = db.startgate(&["run", "--", "sh", "-c", script.as_str()], &[]);
    assert_eq!(out.code, 3, "stderr: {}", out.stderr);
    assert_eq!(db.history(), "0001:applied");
    let log = log_messages(&out.stderr);
    assert!(log.contains("applied 1 migration in"), "{log}");
}

/// The README's first command, in short: `startgate run` on a fresh SQLite file with the
/// demo's migrations and the demo app reaches `ready`, then stops cleanly on SIGTERM.
#[test]
fn the_demo_runs_on_sqlite_to_ready() {
    let db = Db::new();
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/migrations");
    let app = common::demo_app();
    let port = common::free_port().to_string();
    let probe = format!("http://127.0.0.1:{port}/health");
    let backups = db.backups().display().to_string();
    let mut sg = Running::start(
        &["run", "--", app.as_str()],
        &[
            ("DATABASE_URL", db.url.as_str()),
            (
                "STARTGATE_MIGRATIONS",
                examples.to_str().expect("utf-8 path"),
            ),
            ("STARTGATE_BACKUP_DIR", backups.as_str()),
            ("PORT", port.as_str()),
            ("STARTGATE_PROBE", probe.as_str()),
        ],
    );
    let endpoint = sg.endpoint();
    common::wait_for_code(endpoint, "/readyz", 200, Duration::from_secs(30));
    let (_, status) = common::get(endpoint, "/status", None);
    let status: serde_json::Value = serde_json::from_str(&status).expect("json");
    assert_eq!(status["phase"], "ready");
    assert_eq!(status["migrations"]["applied"], 3);
    assert_eq!(status["database"]["backend"], "sqlite");
    sg.signal(libc::SIGTERM);
    let (code, _) = sg.finish();
    assert_eq!(code, 143);
    assert_eq!(db.history(), "0001:applied 0002:applied 0003:applied");
    assert_eq!(
        db.scalar("SELECT name FROM feature_flags WHERE enabled")
            .as_deref(),
        Some("new_checkout")
    );
}

#[test]
fn a_migration_that_leaves_a_dangling_foreign_key_is_rolled_back() {
    let db = Db::new();
    db.write(
        "0001_tables.sql",
        "CREATE TABLE parent (id INTEGER PRIMARY KEY);\n\
         CREATE TABLE child (id INTEGER PRIMARY KEY, parent_id INTEGER NOT NULL REFERENCES parent (id));",
    );
    db.write(
        "0002_orphan.sql",
        "INSERT INTO parent (id) VALUES (1);\nINSERT INTO child (id, parent_id) VALUES (1, 42);",
    );
    let out = db.init(&[]);
    assert_eq!(out.code, 6, "{}", out.stderr);
    let log = log_messages(&out.stderr);
    assert!(log.contains("foreign_key_check"), "{log}");
    assert!(
        log.contains("child row 1 references a missing parent row"),
        "{log}"
    );
    assert_eq!(db.history(), "0001:applied");
    assert_eq!(
        db.scalar("SELECT CAST(count(*) AS TEXT) FROM parent")
            .as_deref(),
        Some("0")
    );
}

#[test]
fn status_on_a_missing_file_names_it_and_creates_nothing() {
    let db = Db::new();
    write_base(&db);
    let out = db.startgate(&["status"], &[]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        log_messages(&out.stderr).contains(&format!("{} does not exist", db.path.display())),
        "{}",
        out.stderr
    );
    assert!(!db.path.exists(), "status created the file");
}
