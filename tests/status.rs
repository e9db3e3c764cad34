//! `startgate status` against a real PostgreSQL: an empty database, a history with each state
//! (rows inserted by the test), the documented exit statuses 0, 7 and 9, and that `status` only
//! reads (it creates no history table).

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use common::{Blocker, TestDb, fixture, startgate};
use startgate::backend::postgres::history_table_ddl;
use startgate::config::HistoryTable;

const LIMIT: Duration = Duration::from_secs(60);

/// Checksums of the fixture's migrations, by version text, as startgate computes them.
fn checksums(dir: &str) -> BTreeMap<String, String> {
    startgate::migrate::source::load_dir(Path::new(dir))
        .expect("fixture loads")
        .migrations
        .into_iter()
        .map(|m| (m.version.to_string(), m.checksum))
        .collect()
}

fn default_table() -> HistoryTable {
    HistoryTable {
        schema: "public".into(),
        table: "startgate_migrations".into(),
    }
}

/// Creates the history table and inserts rows: (version, state, checksum override,
/// statements_done, sqlstate, error).
struct History<'a> {
    db: &'a TestDb,
    sums: BTreeMap<String, String>,
}

impl<'a> History<'a> {
    fn new(db: &'a TestDb) -> Self {
        db.exec(&history_table_ddl(&default_table()));
        History {
            db,
            sums: checksums(&fixture("status")),
        }
    }

    fn applied(&self, version: &str) -> &Self {
        let sum = self
            .sums
            .get(version)
            .cloned()
            .unwrap_or_else(|| "0".repeat(64));
        self.row(version, "applied", &sum, 0, None, None)
    }

    fn row(
        &self,
        version: &str,
        state: &str,
        checksum: &str,
        done: i32,
        sqlstate: Option<&str>,
        error: Option<&str>,
    ) -> &Self {
        let q = |v: Option<&str>| {
            v.map(|s| format!("'{}'", s.replace('\'', "''")))
                .unwrap_or("NULL".into())
        };
        self.db.exec(&format!(
            "INSERT INTO startgate_migrations (version, name, checksum, state, statements_done, applied_at, \
             execution_ms, applied_by, error_sqlstate, error) VALUES ('{version}', 'm{version}', '{checksum}', \
             '{state}', {done}, CASE WHEN '{state}' = 'applied' THEN now() END, 12, 'test-pod', {}, {})",
            q(sqlstate),
            q(error)
        ));
        self
    }
}

fn status(db: &TestDb, extra: &[(&str, &str)], json: bool) -> common::Output {
    let dir = fixture("status");
    let mut env = vec![
        ("DATABASE_URL", db.url.as_str()),
        ("STARTGATE_MIGRATIONS", dir.as_str()),
        ("STARTGATE_DB_WAIT_TIMEOUT", "5s"),
    ];
    env.extend_from_slice(extra);
    let args: &[&str] = if json {
        &["status", "--json"]
    } else {
        &["status"]
    };
    startgate(args, &env, LIMIT)
}

fn json(out: &common::Output) -> serde_json::Value {
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "status --json printed no JSON ({e}): {}\nstderr: {}",
            out.stdout, out.stderr
        )
    })
}

fn states(doc: &serde_json::Value) -> String {
    doc["migrations"]
        .as_array()
        .expect("migrations array")
        .iter()
        .map(|m| {
            format!(
                "{}:{}",
                m["version"].as_str().unwrap_or("?"),
                m["state"].as_str().unwrap_or("?")
            )
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn empty_database_has_everything_pending_and_status_creates_nothing() {
    let db = TestDb::new("status_empty");
    let out = status(&db, &[], true);
    assert_eq!(out.code, 9, "stderr: {}", out.stderr);
    let doc = json(&out);
    assert_eq!(doc["status"], "pending");
    assert_eq!(doc["exit_code"], 9);
    assert_eq!(
        states(&doc),
        "0001:pending 0002:pending 0003:pending 0004:pending 5:pending"
    );
    assert_eq!(doc["current_version"], serde_json::Value::Null);
    assert_eq!(doc["next"][0], "apply 0001_create_users.sql");
    assert_eq!(doc["database"]["backend"], "postgres");
    assert_eq!(doc["database"]["name"], db.name.as_str());
    // status only reads: no history table appears.
    assert_eq!(
        db.query("SELECT to_regclass('public.startgate_migrations')::text"),
        vec![vec![None]]
    );
}

#[test]
fn up_to_date_exits_zero_and_the_table_shows_every_migration() {
    let db = TestDb::new("status_uptodate");
    let h = History::new(&db);
    for v in ["0001", "0002", "0003", "0004", "5"] {
        h.applied(v);
    }
    let out = status(&db, &[], false);
    assert_eq!(
        out.code, 0,
        "stdout: {}\nstderr: {}",
        out.stdout, out.stderr
    );
    assert!(
        out.stdout
            .contains("status: up-to-date (5 applied, 0 pending)"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("0003     applied  feature_flags"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("version    5"), "{}", out.stdout);
}

#[test]
fn only_pending_exits_nine() {
    let db = TestDb::new("status_pending");
    let h = History::new(&db);
    h.applied("0001").applied("0002");
    let out = status(&db, &[], true);
    assert_eq!(out.code, 9, "stderr: {}", out.stderr);
    let doc = json(&out);
    assert_eq!(
        states(&doc),
        "0001:applied 0002:applied 0003:pending 0004:pending 5:pending"
    );
    assert_eq!(doc["current_version"], "0002");
    assert_eq!(doc["migrations"][0]["applied_by"], "test-pod");
}

#[test]
fn the_gap_is_out_of_order_and_exits_seven_unless_allowed() {
    let db = TestDb::new("status_gap");
    let h = History::new(&db);
    h.applied("0001")
        .applied("0002")
        .applied("0004")
        .applied("5");
    let out = status(&db, &[], false);
    assert_eq!(out.code, 7, "stdout: {}", out.stdout);
    assert!(
        out.stdout.contains(
            "0003_feature_flags.sql is pending but 0004–5 are applied: set STARTGATE_OUT_OF_ORDER=true to apply it, or renumber it"
        ),
        "{}",
        out.stdout
    );
    let allowed = status(&db, &[("STARTGATE_OUT_OF_ORDER", "true")], true);
    assert_eq!(allowed.code, 9, "stdout: {}", allowed.stdout);
    let doc = json(&allowed);
    assert_eq!(
        doc["next"],
        serde_json::json!(["apply 0003_feature_flags.sql"])
    );
    assert_eq!(doc["summary"]["out_of_order"], 1);
}

#[test]
fn a_changed_file_exits_seven_naming_it() {
    let db = TestDb::new("status_changed");
    let h = History::new(&db);
    h.applied("0001");
    h.row("0002", "applied", &"f".repeat(64), 0, None, None);
    let out = status(&db, &[], true);
    assert_eq!(out.code, 7);
    let doc = json(&out);
    assert_eq!(doc["status"], "inconsistent");
    assert_eq!(
        states(&doc),
        "0001:applied 0002:changed 0003:pending 0004:pending 5:pending"
    );
    let problem = doc["problems"][0].as_str().unwrap_or_default();
    assert!(
        problem.starts_with("0002_add_name.up.sql was changed after it was applied"),
        "{problem}"
    );
    // Nothing is planned while the history is inconsistent.
    assert_eq!(doc["next"], serde_json::json!([]));
}

#[test]
fn missing_exits_seven_and_future_only_warns() {
    let db = TestDb::new("status_missing");
    let h = History::new(&db);
    for v in ["0001", "0002", "0003", "0004", "5"] {
        h.applied(v);
    }
    h.applied("0009");
    let out = status(&db, &[], true);
    assert_eq!(out.code, 0, "future rows only warn: {}", out.stdout);
    let doc = json(&out);
    assert_eq!(
        states(&doc),
        "0001:applied 0002:applied 0003:applied 0004:applied 5:applied 0009:future"
    );
    assert!(
        doc["warnings"][0]
            .as_str()
            .unwrap_or_default()
            .starts_with("0009 (m0009) is in the history but newer")
    );

    h.applied("2.5");
    let out = status(&db, &[], true);
    assert_eq!(out.code, 7);
    let doc = json(&out);
    assert!(states(&doc).contains("2.5:missing"), "{}", states(&doc));
    assert!(
        doc["problems"][0]
            .as_str()
            .unwrap_or_default()
            .starts_with("2.5 (m2.5) is applied but has no file")
    );
}

#[test]
fn failed_migrations_resume_or_need_repair() {
    let db = TestDb::new("status_failed");
    let h = History::new(&db);
    for v in ["0001", "0002", "0003", "0004"] {
        h.applied(v);
    }
    let sum = h.sums["5"].clone();
    // A CREATE INDEX CONCURRENTLY that failed: resumes by itself, so only "pending" (9).
    h.row(
        "5",
        "failed",
        &sum,
        0,
        Some("55P03"),
        Some("canceling statement due to lock timeout"),
    );
    let out = status(&db, &[], true);
    assert_eq!(out.code, 9, "stdout: {}", out.stdout);
    let doc = json(&out);
    assert!(states(&doc).ends_with("5:failed"));
    assert_eq!(
        doc["next"],
        serde_json::json!(["resume V5__orders_index.sql at statement 1"])
    );
    assert_eq!(
        doc["migrations"][4]["error"],
        "canceling statement due to lock timeout"
    );
}

#[test]
fn an_interrupted_statement_that_cannot_resume_exits_seven_with_what_to_do() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("0001_backfill.sql"),
        "-- startgate:no-transaction\nUPDATE big SET a = 1;\nVACUUM big;\n",
    )
    .expect("write");
    let sum = checksums(&dir.path().display().to_string())["0001"].clone();
    let db = TestDb::new("status_repair");
    db.exec(&history_table_ddl(&default_table()));
    db.exec(&format!(
        "INSERT INTO startgate_migrations (version, name, checksum, state, statements_done) \
         VALUES ('0001', 'backfill', '{sum}', 'running', 1)"
    ));
    let path = dir.path().display().to_string();
    let out = startgate(
        &["status"],
        &[("DATABASE_URL", &db.url), ("STARTGATE_MIGRATIONS", &path)],
        LIMIT,
    );
    assert_eq!(out.code, 7, "stdout: {}", out.stdout);
    assert!(
        out.stdout.contains(
            "0001_backfill.sql stopped part-way at statement 2 (line 3): startgate was stopped while the statement ran"
        ),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("`startgate repair 0001`"),
        "{}",
        out.stdout
    );
}

#[test]
fn a_schema_qualified_history_table_is_read() {
    let db = TestDb::new("status_schema");
    db.exec("CREATE SCHEMA ops");
    let table = HistoryTable {
        schema: "ops".into(),
        table: "Deploy History".into(),
    };
    db.exec(&history_table_ddl(&table));
    let sums = checksums(&fixture("status"));
    db.exec(&format!(
        "INSERT INTO ops.\"Deploy History\" (version, name, checksum, state) VALUES ('0001', 'x', '{}', 'applied')",
        sums["0001"]
    ));
    let out = status(
        &db,
        &[("STARTGATE_HISTORY_TABLE", "ops.Deploy History")],
        true,
    );
    assert_eq!(out.code, 9, "stderr: {}", out.stderr);
    let doc = json(&out);
    assert_eq!(doc["history_table"], "ops.Deploy History");
    assert!(states(&doc).starts_with("0001:applied 0002:pending"));
}

#[test]
fn reading_the_history_is_bounded_by_the_lock_timeout() {
    let db = TestDb::new("status_locked");
    History::new(&db).applied("0001");
    let _blocker = Blocker::hold(
        &db,
        "table-locker",
        "BEGIN; LOCK TABLE startgate_migrations IN ACCESS EXCLUSIVE MODE;",
    );
    let out = status(&db, &[("STARTGATE_LOCK_TIMEOUT", "500ms")], false);
    assert_eq!(out.code, 1, "stderr: {}", out.stderr);
    assert!(out.elapsed < Duration::from_secs(10), "{:?}", out.elapsed);
    let messages = common::log_messages(&out.stderr);
    assert!(
        messages.contains("reading the history table public.startgate_migrations failed: canceling statement due to lock timeout (SQLSTATE 55P03)"),
        "{messages}"
    );
}

#[test]
fn history_text_cannot_rewrite_the_terminal() {
    let db = TestDb::new("status_escape");
    let h = History::new(&db);
    h.applied("0001");
    db.exec("UPDATE startgate_migrations SET applied_by = E'evil\\x1b[31mred\\nVERSION fake'");
    let out = status(&db, &[], true);
    assert!(!out.stdout.contains('\u{1b}'), "JSON escapes it");
    let out = status(&db, &[], false);
    assert!(!out.stdout.contains('\u{1b}'), "{}", out.stdout);
}
